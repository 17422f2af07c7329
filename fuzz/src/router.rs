//! `ipc_router`: the IPC router's core (`ward_ipc::router`) against what
//! two hostile guests can send: a stream of packets (header fields and
//! payloads from the input, ports and operations biased towards the ones
//! that open calls), drained receive queues of any size, user answers and
//! ticks. Whatever they do, the router must not panic, must never send a
//! guest a packet larger than its receive buffer, must never exceed the
//! credit a guest advertised, and must keep each guest's connections
//! within the limit.
//!
//! The policy ([`POLICY`]) has two compartments, `mail` (CID 3) and
//! `vault` (CID 4), and the host: `echo` is allowed between any two,
//! `sign` from mail to vault is asked, `wipe` to vault is denied,
//! `notify` to the host is allowed, anything else has no rule (denied).
//!
//! Input: a sequence of steps, each `[guest, step]` (`guest & 1`: mail or
//! vault; `step % 8`: [`Step`]) and then the step's own bytes, in the
//! order [`run`] reads them (the seed generator's `RouterScript` writes
//! them the same way). Once the input runs out, zeros are read.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ward_abi::vsock::{CALL_PORT, Header, MAX_PAYLOAD, ROUTER_CID, TYPE_STREAM, op, service_port};
use ward_ipc::router::{Answer, Event, MAX_CONNECTIONS, Router};
use ward_policy::Policy;

/// The router's policy.
pub const POLICY: &str = r#"
[compartment.mail]
role = "app"
image = "x"
offers = ["echo"]
devices = { vsock = true }

[compartment.vault]
role = "identity"
image = "x"
offers = ["echo", "sign", "wipe"]
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

[[rule]]
service = "wipe"
from = "@any"
to = "vault"
action = "deny"

[host]
offers = ["notify"]

[[rule]]
service = "notify"
from = "@any"
to = "host"
action = "allow"
"#;

/// The guests: CID and name.
pub const GUESTS: [(u64, &str); 2] = [(3, "mail"), (4, "vault")];

/// The steps, by `step % 8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// A packet from the guest (steps 0 to 4).
    Packet = 0,
    /// The guest drains its receive queue: `[room, count]`, up to
    /// `count % 32` packets into buffers of `64 + room * 512` bytes.
    Drain = 5,
    /// The user answers an ask: `[id, answer]`, ask `id % 8`, allowed if
    /// `answer` is even.
    Answer = 6,
    /// Time passes: `[seconds]`, `seconds % 16`, then the tick.
    Tick = 7,
}

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

/// What an input did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Audit lines of decisions: allowed, denied (by a rule, for want of
    /// one, or for want of an answer), asked.
    pub allowed: usize,
    /// See `allowed`.
    pub denied: usize,
    /// See `allowed`.
    pub asked: usize,
    /// Answers the router took (of an ask it had).
    pub answered: usize,
    /// Calls to the host service side.
    pub host_calls: usize,
    /// Per guest (by index in [`GUESTS`]): connections the router opened to
    /// it (REQUESTs it sent: a call it was connected to).
    pub requests: [usize; 2],
    /// Per guest: the bytes of every RW packet it received, in order (the
    /// first 64 KiB).
    pub received: [Vec<u8>; 2],
}

fn policy() -> Policy {
    static POLICY_LOADED: OnceLock<Policy> = OnceLock::new();
    POLICY_LOADED.get_or_init(|| Policy::from_text("p.toml", POLICY).expect("the target's policy loads")).clone()
}

/// Runs one input.
pub fn run(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut router = Router::new();
    router.set_policy(policy());
    for (cid, name) in GUESTS {
        router.attach(name, cid, true).expect("attaching a guest");
    }
    // Calls to the host reach its side, which this target leaves
    // unanswered (their time-out is exercised by the ticks).
    router.attach_host();
    let mut input = Input(data);
    let mut now = Instant::now();
    // Credit the guests advertised, by (cid, guest port, router port).
    let mut seen: HashMap<(u64, u32, u32), Seen> = HashMap::new();
    while !input.is_empty() {
        let guest = usize::from(input.byte() & 1);
        let (cid, _) = GUESTS[guest];
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
                    }
                    if h.op == op::REQUEST {
                        outcome.requests[guest] += 1;
                        // A connection starts with no credit from the
                        // guest: a RESPONSE it sent before this REQUEST
                        // answered nothing, and the router refuses it
                        // (docs/FUZZING.md, "Findings").
                        entry.buf_alloc = 0;
                        entry.fwd_cnt = 0;
                    }
                    if h.op == op::RW {
                        entry.sent += packet.payload.len() as u64;
                        // Never beyond the credit: bytes in flight fit the
                        // buffer the guest advertised (counting what it
                        // said it consumed).
                        let in_flight = (entry.sent as u32).wrapping_sub(entry.fwd_cnt);
                        assert!(in_flight <= entry.buf_alloc, "credit exceeded: {in_flight} > {}", entry.buf_alloc);
                        let kept = &mut outcome.received[guest];
                        let room = (64 * 1024usize).saturating_sub(kept.len());
                        kept.extend_from_slice(&packet.payload[..packet.payload.len().min(room)]);
                    }
                }
            }
            // The user answers an ask.
            6 => {
                let id = u64::from(input.byte() % 8);
                let answer = if input.byte() & 1 == 0 { Answer::Allowed } else { Answer::Denied };
                outcome.answered += usize::from(router.answer(id, answer).is_ok());
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
        for event in router.take_events() {
            match event {
                Event::Audit(line) if line.starts_with("allow ") => outcome.allowed += 1,
                Event::Audit(line) if line.starts_with("deny ") => outcome.denied += 1,
                Event::Audit(line) if line.starts_with("ask ") => outcome.asked += 1,
                Event::HostCall { .. } => outcome.host_calls += 1,
                _ => {}
            }
        }
    }
    outcome
}
