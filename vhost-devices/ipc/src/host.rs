//! The host side: the router's end of calls to host services
//! (docs/IPC.md, "Host services").
//!
//! The router core sees the host as one more guest, [`HOST_CID`] (named
//! `host`, which rules name with `to = "host"`). This side speaks for it:
//! a call the policy allows to the host becomes [`Event::HostCall`]; the
//! control thread asks wardd to connect it (the router is jailed and
//! reaches no socket by path), and wardd hands back a connected socket to
//! the host service, or a refusal. From then on the bytes of the call
//! travel between the router core's leg and that socket, with the same
//! credit a guest would give: the core never sends more than
//! [`HOST_BUF`] unwritten bytes, and the host side never sends the core
//! more than the core's credit. Sockets are read and written without
//! blocking (`MSG_DONTWAIT`), from the control thread's poll loop.
//!
//! [`Event::HostCall`]: crate::router::Event::HostCall

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use ward_abi::vsock::{Header, MAX_PAYLOAD, ROUTER_CID, TYPE_STREAM, op, shutdown};

use crate::router::{HOST_CID, Router};

/// Bytes of the router's that the host side holds for one call at most
/// (its advertised receive buffer).
pub const HOST_BUF: u32 = 256 * 1024;
/// Most calls to host services open at once (wardd is asked for each).
pub const MAX_HOST_CALLS: usize = 256;

/// One call to a host service.
#[derive(Debug)]
struct HostConn {
    service_port: u32,
    router_port: u32,
    /// The host service's socket, once wardd connected it.
    stream: Option<OwnedFd>,
    /// The router's bytes not yet written to the socket.
    out: VecDeque<u8>,
    /// The router sent `SHUTDOWN` with `SEND`: shut the socket's writing
    /// side once `out` is written.
    out_done: bool,
    write_shut: bool,
    /// The service closed its writing side (the router was told).
    in_done: bool,
    /// Bytes written to the socket (our `fwd_cnt`), and as last reported.
    fwd_cnt: u32,
    fwd_reported: u32,
    /// Bytes read from the socket and given to the router.
    tx_cnt: u32,
    /// The router's credit for us.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
}

impl HostConn {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc.saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn header(&self, operation: u16, flags: u32, len: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: ROUTER_CID,
            src_port: self.service_port,
            dst_port: self.router_port,
            len,
            kind: TYPE_STREAM,
            op: operation,
            flags,
            buf_alloc: HOST_BUF,
            fwd_cnt: self.fwd_cnt,
        }
    }
}

/// The host's calls, by the id wardd is told.
#[derive(Debug, Default)]
pub struct HostSide {
    conns: HashMap<u64, HostConn>,
    by_ports: HashMap<(u32, u32), u64>,
    next_id: u64,
    scratch: Vec<u8>,
}

impl HostSide {
    /// No calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// A call the router opened to the host at (`service_port`,
    /// `router_port`): returns the id to ask wardd to connect, or `None`
    /// when too many are open (the router is told `RST`: not listening).
    pub fn begin(&mut self, router: &mut Router, service_port: u32, router_port: u32) -> Option<u64> {
        let conn = HostConn {
            service_port,
            router_port,
            stream: None,
            out: VecDeque::new(),
            out_done: false,
            write_shut: false,
            in_done: false,
            fwd_cnt: 0,
            fwd_reported: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
        };
        if self.conns.len() >= MAX_HOST_CALLS || self.by_ports.contains_key(&(service_port, router_port)) {
            router.receive(HOST_CID, &conn.header(op::RST, 0, 0), &[], Instant::now());
            return None;
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_ports.insert((service_port, router_port), id);
        self.conns.insert(id, conn);
        Some(id)
    }

    /// wardd connected call `id` to its service: the router hears
    /// `RESPONSE` and starts the call.
    pub fn connected(&mut self, router: &mut Router, id: u64, stream: OwnedFd) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.stream = Some(stream);
        router.receive(HOST_CID, &conn.header(op::RESPONSE, 0, 0), &[], Instant::now());
    }

    /// wardd could not connect call `id`: the router hears `RST` (the
    /// caller gets `ERR not-listening`).
    pub fn failed(&mut self, router: &mut Router, id: u64) {
        if let Some(conn) = self.remove(id) {
            router.receive(HOST_CID, &conn.header(op::RST, 0, 0), &[], Instant::now());
        }
    }

    fn remove(&mut self, id: u64) -> Option<HostConn> {
        let conn = self.conns.remove(&id)?;
        self.by_ports.remove(&(conn.service_port, conn.router_port));
        Some(conn)
    }

    /// The sockets to wait on, with what to wait for.
    pub fn poll_fds(&self) -> Vec<libc::pollfd> {
        self.conns
            .values()
            .filter_map(|c| {
                let fd = c.stream.as_ref()?.as_raw_fd();
                let mut events = 0;
                if !c.in_done && c.credit() > 0 {
                    events |= libc::POLLIN;
                }
                if !c.out.is_empty() {
                    events |= libc::POLLOUT;
                }
                (events != 0).then_some(libc::pollfd { fd, events, revents: 0 })
            })
            .collect()
    }

    /// Moves what can move without blocking: the router's packets for the
    /// host into the calls, the calls' bytes into their sockets, and the
    /// sockets' bytes (within the router's credit) into the router.
    /// Returns whether anything moved.
    pub fn pump(&mut self, router: &mut Router) -> bool {
        let mut moved = false;
        let now = Instant::now();
        while let Some(packet) = router.next_packet(HOST_CID, MAX_PAYLOAD) {
            moved = true;
            let h = packet.header;
            let Some(&id) = self.by_ports.get(&(h.dst_port, h.src_port)) else { continue };
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.peer_buf_alloc = h.buf_alloc;
            conn.peer_fwd_cnt = h.fwd_cnt;
            match h.op {
                op::RW => conn.out.extend(&packet.payload),
                op::SHUTDOWN if h.flags & shutdown::SEND != 0 => conn.out_done = true,
                op::RST => {
                    self.remove(id);
                }
                op::CREDIT_REQUEST => {
                    let header = conn.header(op::CREDIT_UPDATE, 0, 0);
                    conn.fwd_reported = conn.fwd_cnt;
                    router.receive(HOST_CID, &header, &[], now);
                }
                // REQUEST: known from the HostCall event; credit updates
                // are taken above.
                _ => {}
            }
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            moved |= self.move_bytes(router, id, now);
        }
        moved
    }

    /// One call's socket I/O.
    fn move_bytes(&mut self, router: &mut Router, id: u64, now: Instant) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else { return false };
        let Some(fd) = conn.stream.as_ref().map(AsRawFd::as_raw_fd) else { return false };
        let mut moved = false;
        // Router to service.
        while !conn.out.is_empty() {
            let (front, _) = conn.out.as_slices();
            match send_nowait(fd, front) {
                Ok(n) if n > 0 => {
                    conn.out.drain(..n);
                    conn.fwd_cnt = conn.fwd_cnt.wrapping_add(u32::try_from(n).unwrap_or(0));
                    moved = true;
                }
                Ok(_) | Err(Nowait::Again) => break,
                Err(Nowait::Failed) => return self.abort(router, id, now),
            }
        }
        if conn.fwd_cnt.wrapping_sub(conn.fwd_reported) >= HOST_BUF / 2
            || (conn.out.is_empty() && conn.fwd_cnt != conn.fwd_reported)
        {
            let header = conn.header(op::CREDIT_UPDATE, 0, 0);
            conn.fwd_reported = conn.fwd_cnt;
            router.receive(HOST_CID, &header, &[], now);
        }
        if conn.out_done && conn.out.is_empty() && !conn.write_shut {
            conn.write_shut = true;
            // SAFETY: shutdown on the call's own socket; the result only
            // matters to the service, which sees the end of its input.
            unsafe { libc::shutdown(fd, libc::SHUT_WR) };
        }
        // Service to router.
        let scratch = &mut self.scratch;
        while !conn.in_done {
            let room = usize::try_from(conn.credit()).unwrap_or(0).min(MAX_PAYLOAD);
            if room == 0 {
                break;
            }
            scratch.resize(room, 0);
            match recv_nowait(fd, scratch) {
                Ok(0) => {
                    conn.in_done = true;
                    router.receive(HOST_CID, &conn.header(op::SHUTDOWN, shutdown::SEND, 0), &[], now);
                    moved = true;
                }
                Ok(n) => {
                    let len = u32::try_from(n).unwrap_or(0);
                    router.receive(HOST_CID, &conn.header(op::RW, 0, len), &scratch[..n], now);
                    conn.tx_cnt = conn.tx_cnt.wrapping_add(len);
                    moved = true;
                }
                Err(Nowait::Again) => break,
                Err(Nowait::Failed) => return self.abort(router, id, now),
            }
        }
        moved
    }

    /// The service's socket failed: the router hears `RST`.
    fn abort(&mut self, router: &mut Router, id: u64, now: Instant) -> bool {
        if let Some(conn) = self.remove(id) {
            router.receive(HOST_CID, &conn.header(op::RST, 0, 0), &[], now);
        }
        true
    }
}

/// Why a non-blocking send or receive did not move bytes.
enum Nowait {
    /// Not now.
    Again,
    /// The socket failed (the service went away).
    Failed,
}

fn nowait_error() -> Nowait {
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Nowait::Again,
        _ => Nowait::Failed,
    }
}

fn send_nowait(fd: RawFd, bytes: &[u8]) -> Result<usize, Nowait> {
    // SAFETY: sends from `bytes`, valid for its length, on our socket.
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| nowait_error())
}

fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> Result<usize, Nowait> {
    // SAFETY: receives into `buf`, valid and writable for its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    usize::try_from(n).map_err(|_| nowait_error())
}
