//! The router with synthetic guests: each fake guest runs a minimal vsock
//! stream stack (credit, credit updates, shutdown) over the router's
//! packets.

#![allow(clippy::cast_possible_truncation, reason = "test lengths are small")]

use std::collections::{BTreeMap, VecDeque};

use super::*;

const POLICY: &str = r#"
[compartment.vault]
role = "identity"
image = "vault.img"
offers = ["sign", "peek"]
devices = { vsock = true }

[compartment.mail]
role = "communication"
image = "mail.img"
devices = { vsock = true }

[compartment.web]
role = "app"
image = "web.img"
devices = { vsock = true }

[[rule]]
service = "sign"
from = "mail"
to = "vault"
action = "allow"

[[rule]]
service = "peek"
from = "mail"
to = "vault"
action = "ask"

[[rule]]
service = "sign"
from = "web"
to = "vault"
action = "deny"
"#;

const MAIL: u64 = 3;
const VAULT: u64 = 4;
const WEB: u64 = 5;

/// One end of a connection inside a fake guest.
#[derive(Debug, Default)]
struct Endpoint {
    buf_alloc: u32,
    /// Bytes consumed, and as last told to the router.
    fwd_cnt: u32,
    fwd_sent: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    open: bool,
    rst: bool,
    shutdown: u32,
    received: Vec<u8>,
    to_send: VecDeque<u8>,
    /// Send SHUTDOWN with these flags once `to_send` is empty.
    close_after: u32,
    closed: bool,
}

impl Endpoint {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc.saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }
}

/// A fake guest: endpoints by (local port, router port).
#[derive(Debug)]
struct Guest {
    cid: u64,
    buf_alloc: u32,
    /// Receive buffer size (payload part).
    rx_payload: usize,
    /// Largest packet it sends.
    tx_payload: usize,
    endpoints: BTreeMap<(u32, u32), Endpoint>,
    /// Service ports it listens on.
    listening: Vec<u32>,
    /// Never answers a `REQUEST` (a hung or hostile callee).
    silent: bool,
    outbox: VecDeque<(Header, Vec<u8>)>,
}

impl Guest {
    fn new(cid: u64) -> Self {
        Self {
            cid,
            buf_alloc: 4096,
            rx_payload: 1500,
            tx_payload: 3000,
            endpoints: BTreeMap::new(),
            listening: Vec::new(),
            silent: false,
            outbox: VecDeque::new(),
        }
    }

    fn header(&self, local: u32, remote: u32, operation: u16, ep: Option<&Endpoint>) -> Header {
        Header {
            src_cid: self.cid,
            dst_cid: ROUTER_CID,
            src_port: local,
            dst_port: remote,
            len: 0,
            kind: TYPE_STREAM,
            op: operation,
            flags: 0,
            buf_alloc: ep.map_or(self.buf_alloc, |ep| ep.buf_alloc),
            fwd_cnt: ep.map_or(0, |ep| ep.fwd_cnt),
        }
    }

    fn send_control(&mut self, local: u32, remote: u32, operation: u16) {
        let ep = self.endpoints.get_mut(&(local, remote));
        let header = match ep {
            Some(ep) => {
                ep.fwd_sent = ep.fwd_cnt;
                let ep: &Endpoint = ep;
                Self::header_of(self.cid, local, remote, operation, Some(ep), self.buf_alloc)
            }
            None => Self::header_of(self.cid, local, remote, operation, None, self.buf_alloc),
        };
        self.outbox.push_back((header, Vec::new()));
    }

    fn header_of(cid: u64, local: u32, remote: u32, operation: u16, ep: Option<&Endpoint>, buf: u32) -> Header {
        Header {
            src_cid: cid,
            dst_cid: ROUTER_CID,
            src_port: local,
            dst_port: remote,
            len: 0,
            kind: TYPE_STREAM,
            op: operation,
            flags: 0,
            buf_alloc: ep.map_or(buf, |ep| ep.buf_alloc),
            fwd_cnt: ep.map_or(0, |ep| ep.fwd_cnt),
        }
    }

    fn connect(&mut self, local: u32) {
        let ep = Endpoint { buf_alloc: self.buf_alloc, ..Endpoint::default() };
        self.endpoints.insert((local, CALL_PORT), ep);
        self.send_control(local, CALL_PORT, op::REQUEST);
    }

    fn ep(&mut self, local: u32, remote: u32) -> &mut Endpoint {
        self.endpoints.get_mut(&(local, remote)).unwrap()
    }

    /// Takes one packet from the router.
    fn deliver(&mut self, packet: &Packet) {
        let h = packet.header;
        assert_eq!({ h.src_cid }, ROUTER_CID);
        assert_eq!({ h.dst_cid }, self.cid);
        assert_eq!(h.len as usize, packet.payload.len());
        assert!(packet.payload.len() <= self.rx_payload, "packet larger than the receive buffer");
        let (local, remote) = (h.dst_port, h.src_port);
        if h.op == op::REQUEST && self.silent {
            return;
        }
        if h.op == op::REQUEST {
            assert!(!self.endpoints.contains_key(&(local, remote)));
            if self.listening.contains(&local) {
                let ep = Endpoint {
                    buf_alloc: self.buf_alloc,
                    peer_buf_alloc: h.buf_alloc,
                    peer_fwd_cnt: h.fwd_cnt,
                    open: true,
                    ..Endpoint::default()
                };
                self.endpoints.insert((local, remote), ep);
                self.send_control(local, remote, op::RESPONSE);
            } else {
                self.outbox.push_back((self.header(local, remote, op::RST, None), Vec::new()));
            }
            return;
        }
        let Some(ep) = self.endpoints.get_mut(&(local, remote)) else {
            // Unknown connection: as Linux, answer RST (but never an RST).
            if h.op != op::RST {
                let header = self.header(local, remote, op::RST, None);
                self.outbox.push_back((header, Vec::new()));
            }
            return;
        };
        ep.peer_buf_alloc = h.buf_alloc;
        ep.peer_fwd_cnt = h.fwd_cnt;
        match h.op {
            op::RESPONSE => ep.open = true,
            op::RST => ep.rst = true,
            op::SHUTDOWN => ep.shutdown |= h.flags,
            op::RW => {
                let unread_by_router_view = (ep.fwd_cnt.wrapping_sub(ep.fwd_sent)) + h.len;
                assert!(unread_by_router_view <= ep.buf_alloc, "router exceeded the guest's credit");
                ep.received.extend_from_slice(&packet.payload);
                ep.fwd_cnt = ep.fwd_cnt.wrapping_add(h.len);
                if ep.fwd_cnt.wrapping_sub(ep.fwd_sent) >= ep.buf_alloc / 2 {
                    self.send_control(local, remote, op::CREDIT_UPDATE);
                }
            }
            op::CREDIT_REQUEST => self.send_control(local, remote, op::CREDIT_UPDATE),
            _ => {}
        }
    }

    /// Sends what credit allows.
    fn flush(&mut self) {
        let keys: Vec<_> = self.endpoints.keys().copied().collect();
        for (local, remote) in keys {
            loop {
                let cid = self.cid;
                let buf = self.buf_alloc;
                let tx_payload = self.tx_payload;
                let ep = self.endpoints.get_mut(&(local, remote)).unwrap();
                if !ep.open || ep.rst || ep.closed {
                    break;
                }
                if ep.to_send.is_empty() {
                    if ep.close_after != 0 {
                        ep.closed = true;
                        let mut header = Self::header_of(cid, local, remote, op::SHUTDOWN, Some(ep), buf);
                        header.flags = ep.close_after;
                        ep.fwd_sent = ep.fwd_cnt;
                        self.outbox.push_back((header, Vec::new()));
                    }
                    break;
                }
                let n = (ep.credit() as usize).min(ep.to_send.len()).min(tx_payload);
                if n == 0 {
                    break;
                }
                let payload: Vec<u8> = ep.to_send.drain(..n).collect();
                let mut header = Self::header_of(cid, local, remote, op::RW, Some(ep), buf);
                header.len = n as u32;
                ep.tx_cnt = ep.tx_cnt.wrapping_add(n as u32);
                ep.fwd_sent = ep.fwd_cnt;
                self.outbox.push_back((header, payload));
            }
        }
    }
}

struct Sim {
    router: Router,
    guests: BTreeMap<u64, Guest>,
    now: Instant,
}

impl Sim {
    fn new() -> Self {
        let mut router = Router::new();
        router.set_policy(Policy::from_text("/p/00.toml", POLICY).unwrap());
        let mut guests = BTreeMap::new();
        for (name, cid) in [("mail", MAIL), ("vault", VAULT), ("web", WEB)] {
            router.attach(name, cid, true).unwrap();
            guests.insert(cid, Guest::new(cid));
        }
        Self { router, guests, now: Instant::now() }
    }

    fn guest(&mut self, cid: u64) -> &mut Guest {
        self.guests.get_mut(&cid).unwrap()
    }

    /// Moves packets until nothing moves.
    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut moved = false;
            for guest in self.guests.values_mut() {
                guest.flush();
                while let Some((header, payload)) = guest.outbox.pop_front() {
                    self.router.receive(guest.cid, &header, &payload, self.now);
                    moved = true;
                }
            }
            for guest in self.guests.values_mut() {
                while let Some(packet) = self.router.next_packet(guest.cid, guest.rx_payload) {
                    guest.deliver(&packet);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the simulation does not settle");
    }

    fn audit(&mut self) -> Vec<String> {
        self.router
            .take_events()
            .into_iter()
            .filter_map(|event| match event {
                Event::Audit(line) => Some(line),
                Event::Ask { .. } | Event::HostCall { .. } => None,
            })
            .collect()
    }

    /// The router takes what guest `cid` sends now, and delivers nothing
    /// yet (to stage what happens in between).
    fn transmit(&mut self, cid: u64) {
        let guest = self.guest(cid);
        guest.flush();
        let sent: Vec<(Header, Vec<u8>)> = guest.outbox.drain(..).collect();
        for (header, payload) in sent {
            self.router.receive(cid, &header, &payload, self.now);
        }
    }

    /// Opens a call from `cid` on local port `port` and writes `line`.
    fn call(&mut self, cid: u64, port: u32, line: &str) {
        self.guest(cid).connect(port);
        self.run();
        assert!(self.guest(cid).ep(port, CALL_PORT).open);
        self.guest(cid).ep(port, CALL_PORT).to_send.extend(line.as_bytes());
        self.run();
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 13) as u8)).collect()
}

/// The callee's endpoint of the only call to `service`.
fn callee_key(sim: &Sim, cid: u64, service: &str) -> (u32, u32) {
    let port = service_port(service.as_bytes());
    *sim.guests[&cid].endpoints.keys().find(|(local, _)| *local == port).unwrap()
}

#[test]
fn allowed_call_carries_10_mib_each_way_through_small_credits() {
    let mut sim = Sim::new();
    let port = service_port(b"sign");
    sim.guest(VAULT).listening.push(port);
    let up = pattern(10 << 20, 1);
    let down = pattern(10 << 20, 7);
    sim.guest(MAIL).connect(1024);
    sim.run();
    let ep = sim.guest(MAIL).ep(1024, CALL_PORT);
    assert!(ep.open);
    ep.to_send.extend(b"CALL vault sign+key-1\n");
    ep.to_send.extend(&up);
    sim.run();
    let key = callee_key(&sim, VAULT, "sign");
    let callee = sim.guest(VAULT).ep(key.0, key.1);
    assert!(callee.received.starts_with(b"FROM mail sign+key-1\n"));
    callee.to_send.extend(&down);
    sim.run();
    let callee = sim.guest(VAULT).ep(key.0, key.1);
    assert_eq!(callee.received.len(), 21 + up.len());
    assert!(callee.received[21..] == up[..], "caller's bytes arrive intact");
    let caller = sim.guest(MAIL).ep(1024, CALL_PORT);
    assert_eq!(&caller.received[..3], b"OK\n");
    assert!(caller.received[3..] == down[..], "callee's bytes arrive intact");
    assert_eq!(sim.audit(), ["allow mail -> vault sign+key-1: rule #1 at /p/00.toml:18"]);

    // The caller closes: the callee sees the shutdown; it closes too and
    // both legs are forgotten.
    sim.guest(MAIL).ep(1024, CALL_PORT).close_after = shutdown::SEND | shutdown::RCV;
    sim.run();
    assert_eq!(sim.guest(VAULT).ep(key.0, key.1).shutdown, shutdown::SEND | shutdown::RCV);
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).rst, "the router ends the caller's leg with RST");
    assert_eq!(sim.router.connections(MAIL), 0);
    assert_eq!(sim.router.connections(VAULT), 0);
}

#[test]
fn a_callee_that_closes_cleanly_at_once_still_delivers_what_it_sent() {
    // virtio 5.10.6.6: SHUTDOWN, then RST. A callee that sends its answer,
    // shuts down and forgets the connection at once must not cost the
    // caller the bytes the router still holds for it.
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"sign"));
    sim.guest(MAIL).buf_alloc = 4096;
    sim.call(MAIL, 1024, "CALL vault sign\n");
    let key = callee_key(&sim, VAULT, "sign");
    let data = pattern(100_000, 3);
    let ep = sim.guest(VAULT).ep(key.0, key.1);
    ep.to_send.extend(&data);
    ep.close_after = shutdown::SEND;
    sim.transmit(VAULT);
    let rst = sim.guest(VAULT).header(key.0, key.1, op::RST, None);
    sim.router.receive(VAULT, &rst, &[], sim.now);
    sim.run();
    let caller = sim.guest(MAIL).ep(1024, CALL_PORT);
    assert_eq!(&caller.received[..3], b"OK\n");
    assert!(caller.received[3..] == data[..], "every byte the callee sent arrives");
    assert_ne!(caller.shutdown & shutdown::SEND, 0, "then the end of the stream");
    assert_eq!(sim.router.connections(VAULT), 0, "the callee's leg is gone once drained");
}

#[test]
fn half_close_passes_on_and_both_legs_end() {
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"sign"));
    sim.call(MAIL, 1024, "CALL vault sign\nhello");
    sim.guest(MAIL).ep(1024, CALL_PORT).close_after = shutdown::SEND;
    sim.run();
    let key = callee_key(&sim, VAULT, "sign");
    let callee = sim.guest(VAULT).ep(key.0, key.1);
    assert_eq!(callee.received, b"FROM mail sign\nhello");
    assert_eq!(callee.shutdown, shutdown::SEND);
    callee.to_send.extend(b"bye");
    callee.close_after = shutdown::SEND;
    sim.run();
    let caller = sim.guest(MAIL).ep(1024, CALL_PORT);
    assert_eq!(caller.received, b"OK\nbye");
    assert_eq!(caller.shutdown, shutdown::SEND);
    assert!(caller.rst);
    assert!(sim.guest(VAULT).ep(key.0, key.1).rst);
    assert_eq!(sim.router.connections(MAIL) + sim.router.connections(VAULT), 0);
}

#[test]
fn denied_call_gets_err_and_an_audit_line() {
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"sign"));
    sim.call(WEB, 2000, "CALL vault sign\n");
    let ep = sim.guest(WEB).ep(2000, CALL_PORT);
    assert_eq!(ep.received, b"ERR denied by policy\n");
    assert_eq!(ep.shutdown, shutdown::SEND | shutdown::RCV);
    assert_eq!(sim.audit(), ["deny web -> vault sign: rule #3 at /p/00.toml:30"]);
    assert!(sim.guest(VAULT).endpoints.is_empty(), "nothing reaches the callee");
    assert_eq!(sim.router.connections(WEB), 0);
}

#[test]
fn no_rule_denies() {
    let mut sim = Sim::new();
    sim.call(WEB, 2000, "CALL mail secret+x\n");
    assert_eq!(sim.guest(WEB).ep(2000, CALL_PORT).received, b"ERR denied by policy\n");
    assert_eq!(sim.audit(), ["deny web -> mail secret+x: no rule"]);
}

#[test]
fn ask_then_allow_connects_and_ask_then_deny_refuses() {
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"peek"));
    sim.call(MAIL, 1024, "CALL vault peek\n");
    let events = sim.router.take_events();
    let [Event::Audit(line), Event::Ask { id, from, to, service }] = &events[..] else { panic!("{events:?}") };
    assert_eq!(line, "ask mail -> vault peek: rule #2 at /p/00.toml:24");
    assert_eq!((from.as_str(), to.as_str(), service.as_str()), ("mail", "vault", "peek"));
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).received.is_empty(), "the call waits");
    sim.router.answer(*id, Answer::Allowed).unwrap();
    sim.run();
    assert_eq!(sim.guest(MAIL).ep(1024, CALL_PORT).received, b"OK\n");
    assert!(sim.audit().is_empty(), "wardd audits the answer");
    assert_eq!(sim.router.answer(*id, Answer::Allowed), Err(UnknownError::Ask(*id)));

    sim.call(MAIL, 1025, "CALL vault peek\n");
    let events = sim.router.take_events();
    let [Event::Audit(_), Event::Ask { id, .. }] = &events[..] else { panic!("{events:?}") };
    sim.router.answer(*id, Answer::Denied).unwrap();
    sim.run();
    assert_eq!(sim.guest(MAIL).ep(1025, CALL_PORT).received, b"ERR denied by the user\n");
}

#[test]
fn unanswered_asks_expire() {
    let mut sim = Sim::new();
    sim.call(MAIL, 1024, "CALL vault peek\n");
    sim.router.take_events();
    sim.router.expire_asks(sim.now + Duration::from_secs(119));
    sim.run();
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).received.is_empty());
    sim.router.expire_asks(sim.now + ASK_EXPIRY);
    sim.run();
    assert_eq!(sim.guest(MAIL).ep(1024, CALL_PORT).received, b"ERR denied no answer\n");
    assert_eq!(sim.audit(), ["deny mail -> vault peek: no answer in 120 s"]);
}

#[test]
fn at_most_four_pending_asks_per_compartment() {
    let mut sim = Sim::new();
    for port in 1024..1028 {
        sim.call(MAIL, port, "CALL vault peek\n");
    }
    sim.call(MAIL, 1028, "CALL vault peek\n");
    assert_eq!(sim.guest(MAIL).ep(1028, CALL_PORT).received, b"ERR busy too many calls waiting for the user\n");
    let asks = sim.router.take_events().iter().filter(|e| matches!(e, Event::Ask { .. })).count();
    assert_eq!(asks, 4);
}

#[test]
fn callee_not_listening_is_reported() {
    let mut sim = Sim::new();
    sim.call(MAIL, 1024, "CALL vault sign\n");
    let ep = sim.guest(MAIL).ep(1024, CALL_PORT);
    assert!(ep.received.starts_with(b"ERR not-listening "), "{:?}", String::from_utf8_lossy(&ep.received));
    assert_eq!(sim.router.connections(VAULT), 0);
}

#[test]
fn a_response_sent_before_the_routers_request_is_refused_and_the_call_fails() {
    let mut sim = Sim::new();
    let port = service_port(b"sign");
    sim.guest(VAULT).listening.push(port);
    sim.guest(MAIL).connect(1024);
    sim.run();
    sim.guest(MAIL).ep(1024, CALL_PORT).to_send.extend(b"CALL vault sign\n");
    // The router takes the call and owes vault its REQUEST; vault, guessing
    // the router's port, answers first.
    sim.transmit(MAIL);
    sim.guest(VAULT).send_control(port, FIRST_LOCAL_PORT, op::RESPONSE);
    sim.transmit(VAULT);
    sim.run();
    let mail = &sim.guest(MAIL).ep(1024, CALL_PORT).received;
    assert_eq!(mail, b"ERR unreachable the callee went away\n", "{:?}", String::from_utf8_lossy(mail));
    assert!(!sim.guests[&VAULT].endpoints.contains_key(&(port, FIRST_LOCAL_PORT)), "vault never got the call");
    assert_eq!(sim.router.connections(VAULT), 0);
    assert_eq!(sim.router.connections(MAIL), 0);
}

#[test]
fn a_callee_that_never_answers_fails_the_call_after_the_timeout() {
    let mut sim = Sim::new();
    let port = service_port(b"sign");
    sim.guest(VAULT).listening.push(port);
    sim.guest(VAULT).silent = true;
    sim.call(MAIL, 1024, "CALL vault sign\n");
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).received.is_empty(), "still waiting");
    assert_eq!(sim.router.connections(VAULT), 1);
    let start = sim.now;
    sim.router.expire(start);
    sim.router.expire(start + ANSWER_TIMEOUT / 2);
    sim.run();
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).received.is_empty(), "not yet");
    sim.router.expire(start + ANSWER_TIMEOUT);
    sim.run();
    assert_eq!(sim.guest(MAIL).ep(1024, CALL_PORT).received, b"ERR unreachable vault did not answer\n");
    assert_eq!(sim.router.connections(VAULT), 0, "the callee's leg is gone");
}

#[test]
fn one_caller_cannot_take_all_of_a_callees_connections() {
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"sign"));
    for port in 0..MAX_CALLS_PER_PAIR as u32 {
        sim.call(MAIL, 1024 + port, "CALL vault sign\n");
        assert_eq!(sim.guest(MAIL).ep(1024 + port, CALL_PORT).received, b"OK\n");
    }
    let next = 1024 + MAX_CALLS_PER_PAIR as u32;
    sim.call(MAIL, next, "CALL vault sign\n");
    assert_eq!(sim.guest(MAIL).ep(next, CALL_PORT).received, b"ERR busy too many calls open from mail to vault\n");
    assert_eq!(sim.router.connections(VAULT), MAX_CALLS_PER_PAIR, "vault keeps the rest of its connections");
}

#[test]
fn a_caller_in_a_loop_cannot_flood_the_audit_log() {
    let mut sim = Sim::new();
    let calls = AUDIT_BURST + 30;
    for i in 0..calls {
        let port = 1024 + i;
        sim.call(MAIL, port, "CALL vault nothing\n");
        assert!(sim.guest(MAIL).ep(port, CALL_PORT).received.starts_with(b"ERR denied"), "every call is still denied");
    }
    let lines = sim.audit();
    assert_eq!(lines.len(), AUDIT_BURST as usize);
    assert!(lines.iter().all(|l| l.starts_with("deny mail -> vault nothing: no rule")), "{lines:?}");
    sim.router.expire(sim.now + AUDIT_WINDOW);
    assert_eq!(sim.audit(), ["limit mail: 30 more decisions on its calls not logged"]);
}

#[test]
fn callee_not_running_is_unreachable() {
    let mut sim = Sim::new();
    sim.router.detach("vault").unwrap();
    sim.call(MAIL, 1024, "CALL vault sign\n");
    assert_eq!(sim.guest(MAIL).ep(1024, CALL_PORT).received, b"ERR unreachable vault is not running\n");
    assert_eq!(sim.audit(), ["allow mail -> vault sign: rule #1 at /p/00.toml:18"]);
}

#[test]
fn bad_call_lines_are_bad_requests() {
    for line in [
        "HELLO\n".to_owned(),
        "CALL vault\n".to_owned(),
        "CALL Vault sign\n".to_owned(),
        "CALL vault sign extra\n".to_owned(),
        "CALL vault sign+a/b\n".to_owned(),
        format!("CALL vault {}\n", "s".repeat(300)),
    ] {
        let mut sim = Sim::new();
        sim.call(MAIL, 1024, &line);
        let received = &sim.guest(MAIL).ep(1024, CALL_PORT).received;
        assert!(received.starts_with(b"ERR bad-request "), "{line:?}: {:?}", String::from_utf8_lossy(received));
        assert!(sim.audit().is_empty(), "no decision for {line:?}");
    }
}

#[test]
fn connections_are_limited_per_compartment() {
    let mut sim = Sim::new();
    for port in 0..MAX_CONNECTIONS as u32 {
        sim.guest(WEB).connect(1024 + port);
    }
    sim.guest(WEB).connect(5000);
    sim.run();
    assert_eq!(sim.router.connections(WEB), MAX_CONNECTIONS);
    assert!(sim.guest(WEB).ep(5000, CALL_PORT).rst);
    assert!(sim.guest(WEB).ep(1024, CALL_PORT).open);
}

#[test]
fn credit_overrun_resets_the_connection() {
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"sign"));
    sim.call(MAIL, 1024, "CALL vault sign\n");
    // The callee gives no credit back: the router's buffer fills.
    let key = callee_key(&sim, VAULT, "sign");
    sim.guest(VAULT).ep(key.0, key.1).buf_alloc = 0;
    let guest = sim.guest(MAIL);
    let ep = guest.ep(1024, CALL_PORT);
    ep.peer_buf_alloc = u32::MAX; // lie about the credit
    ep.to_send.extend(std::iter::repeat_n(0u8, 2 * BUF_ALLOC as usize));
    sim.run();
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).rst, "the caller is reset");
    assert!(sim.guest(VAULT).ep(key.0, key.1).rst, "and so is its peer");
    assert_eq!(sim.router.connections(MAIL) + sim.router.connections(VAULT), 0);
}

#[test]
fn garbage_packets_are_dropped_and_answered_with_rst_where_possible() {
    let mut sim = Sim::new();
    let good = sim.guest(MAIL).header(1024, CALL_PORT, op::REQUEST, None);
    let now = sim.now;
    // Spoofed source CID: dropped, no answer, no connection.
    let mut spoofed = good;
    spoofed.src_cid = VAULT;
    sim.router.receive(MAIL, &spoofed, &[], now);
    // Another destination CID.
    let mut elsewhere = good;
    elsewhere.dst_cid = VAULT;
    sim.router.receive(MAIL, &elsewhere, &[], now);
    // Unknown type and operation, a bad length, data for nothing.
    let mut kind = good;
    kind.kind = 2;
    sim.router.receive(MAIL, &kind, &[], now);
    let mut operation = good;
    operation.op = 99;
    sim.router.receive(MAIL, &operation, &[], now);
    let mut length = good;
    length.len = 10;
    sim.router.receive(MAIL, &length, &[1, 2], now);
    let mut stray = good;
    stray.op = op::RW;
    stray.len = 3;
    sim.router.receive(MAIL, &stray, b"abc", now);
    // Requests for ports nobody listens on.
    let mut port = good;
    port.dst_port = 77;
    sim.router.receive(MAIL, &port, &[], now);
    assert_eq!(sim.router.connections(MAIL), 0);
    let mut answers = Vec::new();
    while let Some(packet) = sim.router.next_packet(MAIL, 4096) {
        answers.push((packet.header.op, packet.header.dst_port, packet.header.src_port));
    }
    assert!(answers.iter().all(|(operation, _, _)| *operation == op::RST), "{answers:?}");
    assert!(answers.contains(&(op::RST, 1024, 77)));
    assert_eq!(sim.router.next_packet(VAULT, 4096), None, "nothing reaches another compartment");
    // The guest still works.
    sim.call(MAIL, 1030, "CALL web x\n");
    assert!(sim.guest(MAIL).ep(1030, CALL_PORT).received.starts_with(b"ERR denied"));
}

#[test]
fn stray_rst_answers_are_bounded() {
    let mut sim = Sim::new();
    let mut stray = sim.guest(MAIL).header(1024, 9, op::CREDIT_UPDATE, None);
    for port in 0..10_000 {
        stray.src_port = 1024 + port;
        sim.router.receive(MAIL, &stray, &[], sim.now);
    }
    let mut count = 0;
    while sim.router.next_packet(MAIL, 4096).is_some() {
        count += 1;
    }
    assert_eq!(count, MAX_LOOSE);
}

#[test]
fn detach_resets_the_peers() {
    let mut sim = Sim::new();
    sim.guest(VAULT).listening.push(service_port(b"sign"));
    sim.call(MAIL, 1024, "CALL vault sign\n");
    assert_eq!(sim.guest(MAIL).ep(1024, CALL_PORT).received, b"OK\n");
    assert_eq!(sim.router.detach("vault"), Ok(VAULT));
    sim.guests.remove(&VAULT);
    sim.run();
    assert!(sim.guest(MAIL).ep(1024, CALL_PORT).rst);
    assert_eq!(sim.router.connections(MAIL), 0);
    assert_eq!(sim.router.detach("vault"), Err(UnknownError::Compartment("vault".into())));
}

#[test]
fn detach_of_a_connecting_callee_makes_the_call_unreachable() {
    let mut sim = Sim::new();
    sim.guest(MAIL).connect(1024);
    sim.run();
    sim.guest(MAIL).ep(1024, CALL_PORT).to_send.extend(b"CALL vault sign\n");
    sim.transmit(MAIL);
    // The REQUEST to the vault is not delivered before it goes away.
    sim.router.detach("vault").unwrap();
    sim.guests.remove(&VAULT);
    sim.run();
    let received = &sim.guest(MAIL).ep(1024, CALL_PORT).received;
    assert!(received.starts_with(b"ERR unreachable "), "{:?}", String::from_utf8_lossy(received));
}

#[test]
fn attach_not_fresh_owes_a_transport_reset() {
    let mut router = Router::new();
    router.attach("mail", MAIL, false).unwrap();
    router.attach("web", WEB, true).unwrap();
    assert!(router.take_wakeups().contains(&MAIL));
    assert!(router.take_transport_reset(MAIL));
    assert!(!router.take_transport_reset(MAIL));
    assert!(!router.take_transport_reset(WEB));
}

#[test]
fn attach_checks_names_and_cids() {
    let mut router = Router::new();
    assert_eq!(router.attach("Mail", 3, true), Err(AttachError::BadName("Mail".into())));
    assert_eq!(router.attach("mail", 2, true), Err(AttachError::ReservedCid(2)));
    router.attach("mail", 3, true).unwrap();
    assert_eq!(router.attach("web", 3, true), Err(AttachError::CidInUse { cid: 3, owner: "mail".into() }));
    // Attaching the same name again replaces it.
    router.attach("mail", 3, false).unwrap();
    assert_eq!(router.cid_of("mail"), Some(3));
}

#[test]
fn redirected_calls_go_to_the_target() {
    let policy = r#"
[compartment.a]
role = "app"
image = "a.img"
[compartment.b]
role = "app"
image = "b.img"
offers = ["x"]
[compartment.c]
role = "storage"
image = "c.img"
offers = ["x"]
[[rule]]
service = "x"
from = "a"
to = "b"
action = "allow"
target = "c"
[[rule]]
service = "x"
from = "a"
to = "c"
action = "allow"
"#;
    let mut sim = Sim::new();
    sim.router = Router::new();
    sim.router.set_policy(Policy::from_text("/p/r.toml", policy).unwrap());
    sim.guests.clear();
    for (name, cid) in [("a", 3), ("b", 4), ("c", 5)] {
        sim.router.attach(name, cid, true).unwrap();
        sim.guests.insert(cid, Guest::new(cid));
    }
    sim.guest(5).listening.push(service_port(b"x"));
    sim.call(3, 1024, "CALL b x\n");
    assert_eq!(sim.guest(3).ep(1024, CALL_PORT).received, b"OK\n");
    let key = callee_key(&sim, 5, "x");
    assert_eq!(sim.guest(5).ep(key.0, key.1).received, b"FROM a x\n");
    assert_eq!(sim.audit(), ["allow a -> b x: rule #1 at /p/r.toml:13, redirected to c"]);
}

#[test]
fn a_redirect_to_a_compartment_the_caller_may_not_call_is_denied() {
    // The shape of Qubes issue 8227: rule 1 denies a -> c, rule 2 would
    // send a's calls to b on to c. The policy's decision refuses it.
    let policy = r#"
[compartment.a]
role = "app"
image = "a.img"
[compartment.b]
role = "app"
image = "b.img"
offers = ["x"]
[compartment.c]
role = "storage"
image = "c.img"
offers = ["x"]
[[rule]]
service = "x"
from = "a"
to = "c"
action = "deny"
[[rule]]
service = "x"
from = "@any"
to = "b"
action = "allow"
target = "c"
[[rule]]
service = "x"
from = "b"
to = "c"
action = "allow"
"#;
    let mut sim = Sim::new();
    sim.router = Router::new();
    sim.router.set_policy(Policy::from_text("/p/r.toml", policy).unwrap());
    sim.guests.clear();
    for (name, cid) in [("a", 3), ("b", 4), ("c", 5)] {
        sim.router.attach(name, cid, true).unwrap();
        sim.guests.insert(cid, Guest::new(cid));
    }
    sim.guest(5).listening.push(service_port(b"x"));
    sim.call(3, 1024, "CALL b x\n");
    assert_eq!(sim.guest(3).ep(1024, CALL_PORT).received, b"ERR denied by policy\n");
    assert_eq!(sim.router.connections(5), 0);
    assert_eq!(sim.audit(), ["deny a -> b x: rule #2 at /p/r.toml:18"]);
}

#[test]
fn data_before_the_callee_answers_resets_nothing_else() {
    let mut sim = Sim::new();
    // A guest sending on the router's REQUEST before its RESPONSE is
    // reset; the caller gets an error.
    sim.guest(MAIL).connect(1024);
    sim.run();
    sim.guest(MAIL).ep(1024, CALL_PORT).to_send.extend(b"CALL vault sign\n");
    sim.transmit(MAIL);
    let request = sim.router.next_packet(VAULT, 4096).unwrap();
    assert_eq!({ request.header.op }, op::REQUEST);
    let mut rw = sim.guest(VAULT).header(request.header.dst_port, request.header.src_port, op::RW, None);
    rw.len = 1;
    sim.router.receive(VAULT, &rw, b"x", sim.now);
    sim.run();
    let received = &sim.guest(MAIL).ep(1024, CALL_PORT).received;
    assert!(received.starts_with(b"ERR unreachable "), "{:?}", String::from_utf8_lossy(received));
    assert_eq!(sim.router.connections(VAULT), 0);
}
