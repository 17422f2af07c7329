//! Fuzzes the IPC router's core (`ward_ipc::router`) with what two hostile
//! guests can send: a stream of packets (header fields and payloads from
//! the input, ports and operations biased towards the ones that open
//! calls), drained receive queues of any size, user answers and ticks.
//! Whatever they do, the router must not panic, must never send a guest a
//! packet larger than its receive buffer, must never exceed the credit a
//! guest advertised, and must keep each guest's connections within the
//! limit.
//!
//! `cargo fuzz run --sanitizer none ipc_router -- -max_total_time=600`
//! (in `fuzz/`).

#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ward_abi::vsock::{CALL_PORT, Header, MAX_PAYLOAD, ROUTER_CID, TYPE_STREAM, op, service_port};
use ward_ipc::router::{Answer, MAX_CONNECTIONS, Router};
use ward_policy::Policy;

const POLICY: &str = r#"
[compartment.mail]
role = "app"
image = "x"
offers = ["echo"]
devices = { vsock = true }

[compartment.vault]
role = "identity"
image = "x"
offers = ["echo", "sign"]
devices = { vsock = true }

[[rule]]
service = "echo"
from = "@any"
to = "@any"
action = "allow"

[[rule]]
service = "sign"
from = "mail"
to = "vault"
action = "ask"

[host]
offers = ["notify"]

[[rule]]
service = "notify"
from = "@any"
to = "host"
action = "allow"
"#;

const GUESTS: [(u64, &str); 2] = [(3, "mail"), (4, "vault")];

/// Reads the input a few bytes at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the router sent one guest's connection so far, and the credit the
/// guest gave it.
#[derive(Default)]
struct Seen {
    sent: u64,
    buf_alloc: u32,
    fwd_cnt: u32,
}

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = Policy::from_text("p.toml", POLICY) else { return };
    let mut router = Router::new();
    router.set_policy(policy);
    for (cid, name) in GUESTS {
        let _ = router.attach(name, cid, true);
    }
    // Calls to the host reach its side, which this target leaves
    // unanswered (their time-out is exercised by the ticks).
    router.attach_host();
    let mut input = Input(data);
    let mut now = Instant::now();
    // Credit the guests advertised, by (cid, guest port, router port).
    let mut seen: HashMap<(u64, u32, u32), Seen> = HashMap::new();
    while !input.is_empty() {
        let (cid, _) = GUESTS[usize::from(input.byte() & 1)];
        match input.byte() % 8 {
            // A packet, shaped like a real one more often than not.
            0..=4 => {
                let choice = input.byte();
                let dst_port = match choice % 4 {
                    0 => CALL_PORT,
                    1 => input.u32(),
                    _ => 1024 + u32::from(input.byte() % 8),
                };
                let src_port = match choice / 4 % 3 {
                    0 => 1024 + u32::from(input.byte() % 8),
                    1 => service_port(b"echo"),
                    _ => input.u32(),
                };
                let op = match input.byte() {
                    n @ 0..=200 => u16::from(n % 7 + 1),
                    n => u16::from(n),
                };
                let len = usize::from(input.byte()) * usize::from(input.byte() % 4 + 1);
                let payload = input.bytes(len).to_vec();
                let header = Header {
                    src_cid: if choice & 0x80 == 0 { cid } else { u64::from(input.byte()) },
                    dst_cid: if choice & 0x40 == 0 { ROUTER_CID } else { u64::from(input.byte()) },
                    src_port,
                    dst_port,
                    len: if choice & 0x20 == 0 { payload.len() as u32 } else { input.u32() },
                    kind: if choice & 0x10 == 0 { TYPE_STREAM } else { u16::from(input.byte()) },
                    op,
                    flags: u32::from(input.byte() % 4),
                    buf_alloc: u32::from(input.byte()) << 10,
                    fwd_cnt: input.u32() % 4096,
                };
                // The credit the router must honour: that of packets it
                // takes (well-formed ones).
                let well_formed = header.src_cid == cid
                    && header.dst_cid == ROUTER_CID
                    && header.kind == TYPE_STREAM
                    && (op::REQUEST..=op::CREDIT_REQUEST).contains(&{ header.op })
                    && header.len as usize == payload.len()
                    && payload.len() <= MAX_PAYLOAD
                    && (header.op == op::RW || payload.is_empty());
                if well_formed {
                    let entry = seen.entry((cid, header.src_port, header.dst_port)).or_default();
                    if header.op == op::REQUEST {
                        entry.sent = 0;
                    }
                    entry.buf_alloc = header.buf_alloc;
                    entry.fwd_cnt = header.fwd_cnt;
                }
                router.receive(cid, &header, &payload, now);
            }
            // The guest drains its receive queue into buffers of some size.
            5 => {
                let room = 64 + usize::from(input.byte()) * 512;
                for _ in 0..usize::from(input.byte() % 32) {
                    let Some(packet) = router.next_packet(cid, room) else { break };
                    let h = packet.header;
                    assert!(packet.payload.len() <= room.min(MAX_PAYLOAD), "larger than the buffer");
                    assert_eq!(h.len as usize, packet.payload.len());
                    assert_eq!({ h.dst_cid }, cid);
                    assert_eq!({ h.src_cid }, ROUTER_CID);
                    let entry = seen.entry((cid, h.dst_port, h.src_port)).or_default();
                    if h.op == op::REQUEST || h.op == op::RESPONSE {
                        // A new connection on these ports.
                        entry.sent = 0;
                        if h.op == op::REQUEST {
                            entry.buf_alloc = 0;
                            entry.fwd_cnt = 0;
                        }
                    }
                    if h.op == op::RW {
                        entry.sent += packet.payload.len() as u64;
                        // Never beyond the credit: bytes in flight fit the
                        // buffer the guest advertised (counting what it
                        // said it consumed).
                        let in_flight = (entry.sent as u32).wrapping_sub(entry.fwd_cnt);
                        assert!(in_flight <= entry.buf_alloc, "credit exceeded: {in_flight} > {}", entry.buf_alloc);
                    }
                }
            }
            // The user answers an ask.
            6 => {
                let id = u64::from(input.byte() % 8);
                let answer = if input.byte() & 1 == 0 { Answer::Allowed } else { Answer::Denied };
                let _ = router.answer(id, answer);
            }
            // Time passes.
            _ => {
                now += Duration::from_secs(u64::from(input.byte() % 16));
                router.expire(now);
            }
        }
        for (cid, _) in GUESTS {
            assert!(router.connections(cid) <= MAX_CONNECTIONS, "too many connections");
        }
        let _ = router.take_events();
    }
});
