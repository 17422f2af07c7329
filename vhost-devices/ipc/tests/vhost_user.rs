//! The router end to end over the real vhost-user protocol, without KVM:
//! the test is `wardd` (control socket, one-connection listeners) and two
//! VMMs with their guests (a vhost-user frontend each, memfd-backed guest
//! memory with the three vsock queues laid out in it, and a driver that
//! posts buffers and kicks), and pushes real vsock packets through the
//! router: an allowed call carries bytes both ways, a call with no rule is
//! denied, and both are audited.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
#![allow(clippy::cast_possible_truncation, reason = "test sizes are small")]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;
use ward_abi::vsock::{CALL_PORT, HEADER_SIZE, Header, ROUTER_CID, TYPE_STREAM, op, service_port, shutdown};
use ward_sandbox::sockets::{one_connection, seqpacket_pair};
use zerocopy::{FromBytes, IntoBytes};

const POLICY: &str = r#"
[compartment.mail]
role = "communication"
image = "mail.img"
devices = { vsock = true }

[compartment.vault]
role = "identity"
image = "vault.img"
offers = ["sign"]
devices = { vsock = true }

[[rule]]
service = "sign"
from = "mail"
to = "vault"
action = "allow"
"#;

const MEM_SIZE: usize = 1 << 20;
/// Where the frontend pretends guest memory is mapped.
const USER_BASE: u64 = 0x7f00_0000_0000;
const QUEUE_SIZE: u16 = 16;
const BUF_SIZE: u32 = 4096;

fn send(control: &UnixDatagram, json: &str, fd: Option<RawFd>) {
    let sent = match fd {
        Some(fd) => control.send_with_fd(json.as_bytes(), fd).unwrap(),
        None => control.send(json.as_bytes()).unwrap(),
    };
    assert_eq!(sent, json.len());
}

fn recv_json(control: &UnixDatagram) -> serde_json::Value {
    let mut buf = vec![0u8; 1 << 16];
    let mut pollfd = libc::pollfd { fd: control.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pollfd, 1, 10_000) }, 1, "no control message");
    // SAFETY: reads into `buf`.
    let n = unsafe { libc::recv(control.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert!(n > 0);
    serde_json::from_slice(&buf[..n as usize]).unwrap()
}

/// One split virtqueue in guest memory.
struct Queue {
    base: u64,
    kick: EventFd,
    call: EventFd,
    next_avail: u16,
    last_used: u16,
}

impl Queue {
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail(&self) -> u64 {
        self.base + 0x1000
    }
    fn used(&self) -> u64 {
        self.base + 0x2000
    }
}

/// A fake guest: its memory, queues and the frontend that set them up.
struct Guest {
    cid: u64,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    _frontend: Frontend,
    tx_next: u16,
}

impl Guest {
    fn new(cid: u64, stream: UnixStream) -> Self {
        // SAFETY: memfd_create with a constant name; checked.
        let fd = unsafe { libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor we own.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(MEM_SIZE as u64).unwrap();
        let mem = GuestMemoryMmap::from_ranges_with_files(&[(
            GuestAddress(0),
            MEM_SIZE,
            Some(FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let mut frontend = Frontend::from_stream(stream, 3);
        frontend.set_owner().unwrap();
        let features = frontend.get_features().unwrap();
        frontend.set_features(features).unwrap();
        frontend.get_protocol_features().unwrap();
        frontend.set_protocol_features(VhostUserProtocolFeatures::empty()).unwrap();
        frontend
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: MEM_SIZE as u64,
                userspace_addr: USER_BASE,
                mmap_offset: 0,
                mmap_handle: file.as_raw_fd(),
            }])
            .unwrap();
        let mut queues = Vec::new();
        for index in 0..3 {
            let queue = Queue {
                base: 0x10000 * (index as u64 + 1),
                kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                call: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                next_avail: 0,
                last_used: 0,
            };
            frontend.set_vring_num(index, QUEUE_SIZE).unwrap();
            let config = VringConfigData {
                queue_max_size: 256,
                queue_size: QUEUE_SIZE,
                flags: 0,
                desc_table_addr: USER_BASE + queue.desc(),
                used_ring_addr: USER_BASE + queue.used(),
                avail_ring_addr: USER_BASE + queue.avail(),
                log_addr: None,
            };
            frontend.set_vring_addr(index, &config).unwrap();
            frontend.set_vring_base(index, 0).unwrap();
            frontend.set_vring_call(index, &queue.call).unwrap();
            frontend.set_vring_kick(index, &queue.kick).unwrap();
            queues.push(queue);
        }
        for index in 0..3 {
            frontend.set_vring_enable(index, true).unwrap();
        }
        let mut guest = Self { cid, mem, queues, _frontend: frontend, tx_next: 0 };
        // Receive buffers (descriptors 0..16 of queue 0) and one event buffer.
        for k in 0..QUEUE_SIZE {
            guest.post(0, k, Self::rx_buf(k), BUF_SIZE, true);
        }
        guest.post(2, 0, 0xf0000, 8, true);
        guest
    }

    fn rx_buf(k: u16) -> u64 {
        0x40000 + u64::from(k) * u64::from(BUF_SIZE)
    }

    fn tx_buf(k: u16) -> u64 {
        0x80000 + u64::from(k) * u64::from(BUF_SIZE)
    }

    /// Puts descriptor `k` (one buffer) on queue `q`'s available ring and kicks.
    fn post(&mut self, q: usize, k: u16, addr: u64, len: u32, writable: bool) {
        let queue = &mut self.queues[q];
        let desc = queue.desc() + 16 * u64::from(k);
        self.mem.write_obj(addr, GuestAddress(desc)).unwrap();
        self.mem.write_obj(len, GuestAddress(desc + 8)).unwrap();
        self.mem.write_obj(if writable { 2u16 } else { 0u16 }, GuestAddress(desc + 12)).unwrap();
        let slot = queue.avail() + 4 + 2 * u64::from(queue.next_avail % QUEUE_SIZE);
        self.mem.write_obj(k, GuestAddress(slot)).unwrap();
        queue.next_avail = queue.next_avail.wrapping_add(1);
        self.mem.write_obj(queue.next_avail, GuestAddress(queue.avail() + 2)).unwrap();
        queue.kick.write(1).unwrap();
    }

    fn send(&mut self, src_port: u32, dst_port: u32, operation: u16, payload: &[u8]) {
        let header = Header {
            src_cid: self.cid,
            dst_cid: ROUTER_CID,
            src_port,
            dst_port,
            len: payload.len() as u32,
            kind: TYPE_STREAM,
            op: operation,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 0,
        };
        let k = self.tx_next % QUEUE_SIZE;
        self.tx_next += 1;
        let addr = Self::tx_buf(k);
        self.mem.write_slice(header.as_bytes(), GuestAddress(addr)).unwrap();
        self.mem.write_slice(payload, GuestAddress(addr + HEADER_SIZE as u64)).unwrap();
        self.post(1, k, addr, (HEADER_SIZE + payload.len()) as u32, false);
    }

    /// The packets the router put in the receive queue since the last
    /// call, waiting until `done` says enough came (10 s at most).
    fn receive_until(&mut self, mut done: impl FnMut(&[(Header, Vec<u8>)]) -> bool) -> Vec<(Header, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while !done(&got) {
            assert!(Instant::now() < deadline, "guest {} waited in vain; got {got:?}", self.cid);
            let used_idx: u16 = self.mem.read_obj(GuestAddress(self.queues[0].used() + 2)).unwrap();
            if used_idx == self.queues[0].last_used {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let slot = self.queues[0].used() + 4 + 8 * u64::from(self.queues[0].last_used % QUEUE_SIZE);
            self.queues[0].last_used = self.queues[0].last_used.wrapping_add(1);
            let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
            let k = id as u16;
            let mut bytes = vec![0u8; len as usize];
            self.mem.read_slice(&mut bytes, GuestAddress(Self::rx_buf(k))).unwrap();
            let header = Header::read_from_bytes(&bytes[..HEADER_SIZE]).unwrap();
            got.push((header, bytes[HEADER_SIZE..].to_vec()));
            self.post(0, k, Self::rx_buf(k), BUF_SIZE, true);
        }
        got
    }
}

fn data(packets: &[(Header, Vec<u8>)]) -> Vec<u8> {
    packets.iter().filter(|(h, _)| h.op == op::RW).flat_map(|(_, p)| p.clone()).collect()
}

fn attach(control: &UnixDatagram, dir: &std::path::Path, name: &str, cid: u64) -> Guest {
    let (listener, stream) = one_connection(&dir.join(format!("{name}.sock"))).unwrap();
    send(
        control,
        &format!(r#"{{"op":"attach","name":"{name}","cid":{cid},"fresh":true}}"#),
        Some(listener.as_raw_fd()),
    );
    drop(listener);
    Guest::new(cid, stream)
}

#[test]
fn calls_go_through_the_vhost_user_backend() {
    ward_ipc::init_logging();
    let (ours, theirs) = seqpacket_pair().unwrap();
    let router =
        std::thread::spawn(move || ward_ipc::serve_with(OwnedFd::from(theirs), ward_ipc::Options { seccomp: true }));
    let policy = serde_json::json!({"op": "policy", "files": [["/p/00.toml", POLICY]]}).to_string();
    send(&ours, &policy, None);
    assert_eq!(recv_json(&ours), serde_json::json!({"op": "ready"}));

    let dir = std::env::temp_dir().join(format!("ward-ipc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut mail = attach(&ours, &dir, "mail", 3);
    let mut vault = attach(&ours, &dir, "vault", 4);

    // An allowed call: both hops, bytes both ways.
    mail.send(1024, CALL_PORT, op::REQUEST, &[]);
    let got = mail.receive_until(|got| !got.is_empty());
    assert_eq!({ got[0].0.op }, op::RESPONSE);
    mail.send(1024, CALL_PORT, op::RW, b"CALL vault sign\nhello");
    let got = vault.receive_until(|got| !got.is_empty());
    let request = got[0].0;
    assert_eq!(({ request.op }, { request.dst_port }), (op::REQUEST, service_port(b"sign")));
    vault.send(request.dst_port, request.src_port, op::RESPONSE, &[]);
    let got = vault.receive_until(|got| data(got).len() >= 20);
    assert_eq!(data(&got), b"FROM mail sign\nhello");
    vault.send(request.dst_port, request.src_port, op::RW, b"signed");
    let got = mail.receive_until(|got| data(got).len() >= 9);
    assert_eq!(data(&got), b"OK\nsigned");
    assert_eq!(recv_json(&ours)["line"], "allow mail -> vault sign: rule #1 at /p/00.toml:13");

    // A call no rule allows.
    mail.send(1025, CALL_PORT, op::REQUEST, &[]);
    mail.receive_until(|got| !got.is_empty());
    mail.send(1025, CALL_PORT, op::RW, b"CALL vault secret\n");
    let got = mail.receive_until(|got| got.iter().any(|(h, _)| h.op == op::SHUTDOWN));
    assert_eq!(data(&got), b"ERR denied by policy\n");
    let shut = got.iter().find(|(h, _)| h.op == op::SHUTDOWN).unwrap().0;
    assert_eq!({ shut.flags }, shutdown::SEND | shutdown::RCV);
    assert_eq!(recv_json(&ours)["line"], "deny mail -> vault secret: no rule");

    // wardd goes away: the router ends.
    drop(ours);
    router.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
