//! The protocol against a fake router: [`Net`] records what the guest
//! sends and, with an [`EchoPeer`], plays the router and an echo service
//! with its own credit accounting (and asserts the guest respects it).

extern crate std;

use alloc::vec;
use std::collections::HashMap;

use super::*;

const GUEST: u64 = 7;
/// The fake router's receive buffer per connection: small, so credit runs
/// out often.
const PEER_BUF: u32 = 100_000;

fn hdr(src_port: u32, dst_port: u32, operation: u16, len: u32) -> Header {
    Header {
        src_cid: ROUTER_CID,
        dst_cid: GUEST,
        src_port,
        dst_port,
        len,
        kind: TYPE_STREAM,
        op: operation,
        flags: 0,
        buf_alloc: PEER_BUF,
        fwd_cnt: 0,
    }
}

fn packet(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut p = h.as_bytes().to_vec();
    p.extend_from_slice(payload);
    p
}

/// A router connection as the fake sees it.
#[derive(Default)]
struct PeerConn {
    line: Vec<u8>,
    open: bool,
    /// Bytes received and not yet echoed (consumed).
    unconsumed: VecDeque<u8>,
    fwd_cnt: u32,
    tx_cnt: u32,
    rx_cnt: u32,
    guest_buf_alloc: u32,
    guest_fwd_cnt: u32,
    guest_eof: bool,
    shut: bool,
}

/// The router and an echo service behind it.
struct EchoPeer {
    reply: Vec<u8>,
    conns: HashMap<u32, PeerConn>,
    echo: bool,
}

impl EchoPeer {
    fn handle(&mut self, h: &Header, payload: &[u8], out: &mut VecDeque<Vec<u8>>) {
        assert_eq!((h.src_cid, h.dst_cid, h.kind), (GUEST, ROUTER_CID, TYPE_STREAM), "guest header");
        assert_eq!({ h.dst_port }, CALL_PORT);
        let port = h.src_port;
        if h.op == op::REQUEST {
            self.conns.insert(port, PeerConn::default());
            out.push_back(packet(&hdr(CALL_PORT, port, op::RESPONSE, 0), &[]));
            return;
        }
        let Some(c) = self.conns.get_mut(&port) else { return };
        c.guest_buf_alloc = h.buf_alloc;
        c.guest_fwd_cnt = h.fwd_cnt;
        match h.op {
            op::RW => {
                c.rx_cnt = c.rx_cnt.wrapping_add(payload.len() as u32);
                // The guest never has more unread by us than we allowed.
                assert!(c.rx_cnt.wrapping_sub(c.fwd_cnt) <= PEER_BUF, "guest exceeded its credit");
                if !c.open {
                    c.line.extend_from_slice(payload);
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(payload.len() as u32);
                    if c.line.ends_with(b"\n") {
                        c.open = true;
                        let mut reply = packet(&hdr(CALL_PORT, port, op::RW, self.reply.len() as u32), &self.reply);
                        set_fwd(&mut reply, c.fwd_cnt);
                        c.tx_cnt = c.tx_cnt.wrapping_add(self.reply.len() as u32);
                        out.push_back(reply);
                    }
                    return;
                }
                c.unconsumed.extend(payload);
            }
            op::SHUTDOWN => c.guest_eof = true,
            op::CREDIT_REQUEST => {
                let mut p = packet(&hdr(CALL_PORT, port, op::CREDIT_UPDATE, 0), &[]);
                set_fwd(&mut p, c.fwd_cnt);
                out.push_back(p);
            }
            _ => {}
        }
        if self.echo {
            Self::pump(port, c, out);
        }
    }

    /// Echoes what the guest's credit allows.
    fn pump(port: u32, c: &mut PeerConn, out: &mut VecDeque<Vec<u8>>) {
        loop {
            let credit = c.guest_buf_alloc.saturating_sub(c.tx_cnt.wrapping_sub(c.guest_fwd_cnt)) as usize;
            let n = credit.min(MAX_PAYLOAD).min(c.unconsumed.len());
            if n == 0 {
                break;
            }
            let data: Vec<u8> = c.unconsumed.drain(..n).collect();
            c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
            c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
            let mut p = packet(&hdr(CALL_PORT, port, op::RW, n as u32), &data);
            set_fwd(&mut p, c.fwd_cnt);
            out.push_back(p);
        }
        if c.guest_eof && c.unconsumed.is_empty() && !c.shut {
            c.shut = true;
            let mut p = packet(&hdr(CALL_PORT, port, op::SHUTDOWN, 0), &[]);
            p[32..36].copy_from_slice(&(shutdown::SEND | shutdown::RCV).to_le_bytes());
            set_fwd(&mut p, c.fwd_cnt);
            out.push_back(p);
        }
    }
}

fn set_fwd(p: &mut [u8], fwd: u32) {
    p[40..44].copy_from_slice(&fwd.to_le_bytes());
}

/// The fake device.
#[derive(Default)]
struct Net {
    inbox: VecDeque<Vec<u8>>,
    sent: Vec<(Header, Vec<u8>)>,
    current: Vec<u8>,
    reset: bool,
    peer: Option<EchoPeer>,
}

impl Transport for Net {
    fn send(&mut self, p: &[u8]) -> Result<(), Error> {
        let (h, payload) = Header::read_from_prefix(p).map_err(|_| Error::BadArgument)?;
        assert_eq!(h.len as usize, payload.len());
        if let Some(peer) = self.peer.as_mut() {
            peer.handle(&h, payload, &mut self.inbox);
        }
        self.sent.push((h, payload.to_vec()));
        Ok(())
    }

    fn recv(&mut self, _timeout_ns: Option<u64>) -> Result<Received<'_>, Error> {
        if core::mem::take(&mut self.reset) {
            return Ok(Received::TransportReset);
        }
        self.current = self.inbox.pop_front().ok_or(Error::TimedOut)?;
        Ok(Received::Packet(&self.current))
    }
}

fn with_peer(reply: &[u8]) -> Ipc<Net> {
    let net =
        Net { peer: Some(EchoPeer { reply: reply.to_vec(), conns: HashMap::new(), echo: true }), ..Net::default() };
    Ipc::new(net, GUEST)
}

fn plain() -> Ipc<Net> {
    Ipc::new(Net::default(), GUEST)
}

fn sent_ops(ipc: &mut Ipc<Net>) -> Vec<u16> {
    ipc.transport_mut().sent.iter().map(|(h, _)| h.op).collect()
}

#[test]
fn a_call_sends_its_line_and_opens_on_ok() {
    let mut ipc = with_peer(b"OK\n");
    let c = ipc.connect("vault", "sign+key1").unwrap();
    assert_eq!(ipc.state(c), Some(ConnState::Open));
    let sent = &ipc.transport_mut().sent;
    assert_eq!({ sent[0].0.op }, op::REQUEST);
    assert_eq!({ sent[0].0.dst_port }, CALL_PORT);
    assert!(sent[0].0.src_port >= FIRST_LOCAL_PORT && sent[0].0.src_port < FIRST_SERVICE_PORT);
    assert_eq!(sent[1].1, b"CALL vault sign+key1\n");
    assert_eq!(ipc.connect("vault", "bad name"), Err(IpcError::BadName));
    assert_eq!(ipc.connect("", "echo"), Err(IpcError::BadName));
}

#[test]
fn an_err_reply_fails_the_call_with_code_and_message() {
    let mut ipc = with_peer(b"ERR denied no rule allows mail -> vault sign\n");
    let e = ipc.connect("vault", "sign").unwrap_err();
    assert_eq!(e, IpcError::Call { code: "denied".into(), message: "no rule allows mail -> vault sign".into() });
    assert_eq!((e.code(), e.message()), ("denied", "no rule allows mail -> vault sign"));
    assert_eq!(ipc.connections(), 0, "a failed connect is closed");
}

#[test]
fn a_refused_call_is_a_reset() {
    let mut ipc = plain();
    let c = ipc.connect_start("vault", "echo").unwrap();
    let port = ipc.transport_mut().sent[0].0.src_port;
    ipc.transport_mut().inbox.push_back(packet(&hdr(CALL_PORT, port, op::RST, 0), &[]));
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    assert_eq!(events, [Event::Failed(c, IpcError::Reset)]);
    assert_eq!(ipc.try_send(c, b"x"), Err(IpcError::Reset));
}

/// FNV-1a 64.
fn fnv(h: u64, data: &[u8]) -> u64 {
    data.iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

#[test]
fn ten_mib_go_through_an_echo_intact_within_credit_both_ways() {
    let mut ipc = with_peer(b"OK\n");
    let c = ipc.connect("vault", "echo").unwrap();
    let total = 10 << 20;
    let data: Vec<u8> = (0..total).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (mut sent, mut got) = (0, 0);
    let (mut h_out, mut h_in) = (0xcbf2_9ce4_8422_2325u64, 0xcbf2_9ce4_8422_2325u64);
    let mut buf = vec![0u8; 48 * 1024];
    let mut events = Vec::new();
    let mut rounds = 0;
    while got < total {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        if sent < total {
            // Never more than the peer's credit: the peer asserts it.
            let n = ipc.try_send(c, &data[sent..(sent + 30_000).min(total)]).unwrap();
            h_out = fnv(h_out, &data[sent..sent + n]);
            sent += n;
            if sent == total {
                ipc.shutdown_send(c).unwrap();
            }
        }
        ipc.poll(Some(0), &mut events).unwrap();
        events.clear();
        loop {
            match ipc.try_recv(c, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    h_in = fnv(h_in, &buf[..n]);
                    got += n;
                }
                Err(IpcError::WouldBlock) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert_eq!(h_in, h_out);
    ipc.poll(Some(0), &mut events).unwrap();
    assert_eq!(ipc.try_recv(c, &mut buf), Ok(0), "the echo ended after our end");
    // Every header the guest sent carried its fwd_cnt, and it never fell
    // half a buffer behind what the guest had read (the peer would have
    // stalled otherwise).
    let sent = &ipc.transport_mut().sent;
    assert!(sent.iter().all(|(h, _)| h.buf_alloc == BUF_ALLOC));
    let last = sent.last().map_or(0, |(h, _)| h.fwd_cnt);
    assert!(total as u32 + 3 - last < BUF_ALLOC / 2, "the data and the OK line, but for the end");
    ipc.close(c);
    assert_eq!(ipc.connections(), 0);
    assert_eq!(ipc.stats(), Stats::default());
}

#[test]
fn send_stops_at_the_peers_credit_and_asks_for_more() {
    let mut ipc = with_peer(b"OK\n");
    if let Some(p) = ipc.transport_mut().peer.as_mut() {
        p.echo = false;
    }
    let c = ipc.connect("vault", "sink").unwrap();
    let data = vec![1u8; 300_000];
    let line = "CALL vault sink\n".len();
    let n = ipc.try_send(c, &data).unwrap();
    // The router's fwd_cnt covers the line it consumed.
    assert_eq!(n, PEER_BUF as usize);
    let _ = line;
    assert_eq!(ipc.try_send(c, &data).unwrap(), 0);
    let ops = sent_ops(&mut ipc);
    assert_eq!(ops.iter().filter(|&&o| o == op::CREDIT_REQUEST).count(), 1, "asked once");
    // The peer's update (in answer) makes it writable again.
    let port = ipc.transport_mut().sent[0].0.src_port;
    let mut update = packet(&hdr(CALL_PORT, port, op::CREDIT_UPDATE, 0), &[]);
    set_fwd(&mut update, PEER_BUF + line as u32);
    ipc.transport_mut().inbox.clear();
    // The peer reads it all (and says so below).
    if let Some(p) = ipc.transport_mut().peer.as_mut() {
        p.conns.values_mut().for_each(|c| c.fwd_cnt = c.rx_cnt);
    }
    ipc.transport_mut().inbox.push_back(update);
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    assert!(events.contains(&Event::Writable(c)));
    assert_eq!(ipc.try_send(c, &data[..10]).unwrap(), 10);
}

#[test]
fn a_credit_request_is_answered_and_half_a_buffer_read_sends_an_update() {
    let mut ipc = plain();
    ipc.listen("echo").unwrap();
    let port = service_port(b"echo");
    let net = ipc.transport_mut();
    net.inbox.push_back(packet(&hdr(5000, port, op::REQUEST, 0), &[]));
    net.inbox.push_back(packet(&hdr(5000, port, op::RW, 19), b"FROM mail echo+abc\n"));
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    let a = ipc.try_accept().unwrap();
    assert_eq!((a.caller.as_str(), a.service.as_str()), ("mail", "echo+abc"));
    assert!(events.contains(&Event::Accepted(a.conn)));
    assert_eq!(sent_ops(&mut ipc), [op::RESPONSE]);
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, port, op::CREDIT_REQUEST, 0), &[]));
    ipc.poll(Some(0), &mut events).unwrap();
    let (h, _) = ipc.transport_mut().sent.last().cloned().unwrap();
    assert_eq!((h.op, h.buf_alloc, h.fwd_cnt), (op::CREDIT_UPDATE, BUF_ALLOC, 19));
    // Three quarters of our buffer arrive; reading half of it sends one
    // update.
    let quarter = BUF_ALLOC as usize / 4;
    let chunk = vec![9u8; quarter];
    for _ in 0..3 {
        ipc.transport_mut().inbox.push_back(packet(&hdr(5000, port, op::RW, quarter as u32), &chunk));
    }
    ipc.poll(Some(0), &mut events).unwrap();
    let before = ipc.transport_mut().sent.len();
    let mut buf = vec![0u8; 2 * quarter];
    assert_eq!(ipc.try_recv(a.conn, &mut buf), Ok(2 * quarter));
    let sent = &ipc.transport_mut().sent;
    assert_eq!(sent.len(), before + 1);
    assert_eq!({ sent[before].0.op }, op::CREDIT_UPDATE);
    assert_eq!({ sent[before].0.fwd_cnt }, 19 + 2 * quarter as u32);
}

#[test]
fn data_beyond_our_credit_resets_the_connection() {
    let mut ipc = plain();
    ipc.listen("sink").unwrap();
    let port = service_port(b"sink");
    ipc.transport_mut().inbox.push_back(packet(&hdr(6000, port, op::REQUEST, 0), &[]));
    ipc.transport_mut().inbox.push_back(packet(&hdr(6000, port, op::RW, 17), b"FROM mail sink\nab"));
    let chunk = vec![0u8; MAX_PAYLOAD];
    for _ in 0..5 {
        ipc.transport_mut().inbox.push_back(packet(&hdr(6000, port, op::RW, MAX_PAYLOAD as u32), &chunk));
    }
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    let a = ipc.try_accept().unwrap();
    assert!(matches!(ipc.state(a.conn), Some(ConnState::Failed(IpcError::Protocol(_)))));
    assert_eq!(sent_ops(&mut ipc).last(), Some(&op::RST));
}

#[test]
fn shutdown_ends_the_stream_after_its_data_and_rst_resets_it() {
    let mut ipc = with_peer(b"OK\n");
    if let Some(p) = ipc.transport_mut().peer.as_mut() {
        p.echo = false;
    }
    let c = ipc.connect("vault", "echo").unwrap();
    let d = ipc.connect("vault", "echo").unwrap();
    let (pc, pd) = {
        let sent = &ipc.transport_mut().sent;
        let ports: Vec<u32> = sent.iter().filter(|(h, _)| h.op == op::REQUEST).map(|(h, _)| h.src_port).collect();
        (ports[0], ports[1])
    };
    let mut shut = packet(&hdr(CALL_PORT, pc, op::SHUTDOWN, 0), &[]);
    shut[32..36].copy_from_slice(&shutdown::SEND.to_le_bytes());
    let net = ipc.transport_mut();
    net.inbox.push_back(packet(&hdr(CALL_PORT, pc, op::RW, 3), b"end"));
    net.inbox.push_back(shut);
    net.inbox.push_back(packet(&hdr(CALL_PORT, pd, op::RST, 0), &[]));
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    events.retain(|e| !matches!(e, Event::Connected(_)));
    assert_eq!(events, [Event::Readable(c), Event::Closed(c), Event::Failed(d, IpcError::Reset)]);
    let mut buf = [0u8; 8];
    assert_eq!(ipc.try_recv(c, &mut buf), Ok(3));
    assert_eq!(ipc.try_recv(c, &mut buf), Ok(0));
    assert_eq!(ipc.try_recv(d, &mut buf), Err(IpcError::Reset));
    assert_eq!(ipc.try_send(d, b"x"), Err(IpcError::Reset));
    // Still writable after the peer's end: it only stopped sending.
    assert_eq!(ipc.try_send(c, b"bye"), Ok(3));
    let before = ipc.transport_mut().sent.len();
    ipc.close(d);
    assert_eq!(ipc.transport_mut().sent.len(), before, "nothing to tell a peer that reset");
    ipc.close(c);
    let (h, _) = ipc.transport_mut().sent.last().cloned().unwrap();
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, shutdown::SEND | shutdown::RCV));
    assert_eq!(ipc.try_send(c, b"x"), Err(IpcError::NoConnection));
}

#[test]
fn an_rst_after_the_peers_shutdown_is_a_clean_close_that_keeps_the_data() {
    // virtio 5.10.6.6: a clean disconnect is SHUTDOWN, then RST from the
    // peer. The router sends exactly that once a call is done.
    let mut ipc = with_peer(b"OK\n");
    if let Some(p) = ipc.transport_mut().peer.as_mut() {
        p.echo = false;
    }
    let c = ipc.connect("vault", "echo").unwrap();
    let port = ipc.transport_mut().sent.iter().find(|(h, _)| h.op == op::REQUEST).map(|(h, _)| h.src_port).unwrap();
    let mut shut = packet(&hdr(CALL_PORT, port, op::SHUTDOWN, 0), &[]);
    shut[32..36].copy_from_slice(&shutdown::SEND.to_le_bytes());
    let net = ipc.transport_mut();
    net.inbox.push_back(packet(&hdr(CALL_PORT, port, op::RW, 4), b"last"));
    net.inbox.push_back(shut);
    net.inbox.push_back(packet(&hdr(CALL_PORT, port, op::RST, 0), &[]));
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    assert!(!events.iter().any(|e| matches!(e, Event::Failed(..))), "{events:?}");
    let mut buf = [0u8; 8];
    assert_eq!(ipc.try_recv(c, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"last");
    assert_eq!(ipc.try_recv(c, &mut buf), Ok(0), "then the end, not an error");
    assert_eq!(ipc.try_send(c, b"x"), Err(IpcError::Closed), "the peer is gone");
    let before = ipc.transport_mut().sent.len();
    ipc.close(c);
    assert_eq!(ipc.transport_mut().sent.len(), before, "nothing to tell a peer that forgot the connection");
}

#[test]
fn a_transport_reset_fails_every_connection_and_new_calls_work() {
    let mut ipc = with_peer(b"OK\n");
    ipc.listen("echo").unwrap();
    let a = ipc.connect("vault", "echo").unwrap();
    let b = ipc.connect("mail", "echo").unwrap();
    ipc.transport_mut().reset = true;
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    events.retain(|e| !matches!(e, Event::Connected(_)));
    assert_eq!(events, [Event::Failed(a, IpcError::Reset), Event::Failed(b, IpcError::Reset)]);
    let mut buf = [0u8; 4];
    assert_eq!(ipc.recv(a, &mut buf), Err(IpcError::Reset));
    assert_eq!(ipc.send(b, b"x"), Err(IpcError::Reset));
    let c = ipc.connect("vault", "echo").unwrap();
    assert_eq!(ipc.state(c), Some(ConnState::Open));
}

#[test]
fn garbage_is_dropped_and_counted_and_unknown_connections_get_rst() {
    let mut ipc = plain();
    ipc.listen("echo").unwrap();
    let port = service_port(b"echo");
    let good = hdr(5000, port, op::REQUEST, 0);
    let mut bad = Vec::new();
    bad.push(vec![1, 2, 3]);
    bad.push(Vec::new());
    let mut h = good;
    h.src_cid = 3;
    bad.push(packet(&h, &[]));
    let mut h = good;
    h.dst_cid = 99;
    bad.push(packet(&h, &[]));
    let mut h = good;
    h.kind = 2;
    bad.push(packet(&h, &[]));
    let mut h = good;
    h.op = 0;
    bad.push(packet(&h, &[]));
    let mut h = good;
    h.op = 8;
    bad.push(packet(&h, &[]));
    let mut h = good;
    h.len = 10; // more than came
    bad.push(packet(&h, b"abc"));
    let mut h = good;
    h.op = op::RW;
    h.len = u32::MAX;
    bad.push(packet(&h, b"abc"));
    let mut h = good;
    h.len = 3; // payload on a REQUEST
    bad.push(packet(&h, b"abc"));
    // Pseudo-random headers.
    let mut x = 0x1234_5678_9abc_def0u64;
    for _ in 0..200 {
        let mut p = vec![0u8; 44 + (x % 64) as usize];
        for b in p.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        bad.push(p);
    }
    let n = bad.len() as u64;
    ipc.transport_mut().inbox.extend(bad);
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    assert!(events.is_empty());
    assert_eq!(ipc.stats().bad_packets, n);
    assert!(ipc.transport_mut().sent.is_empty(), "nothing answers garbage");
    // Well-formed packets for no connection: RST (but never to an RST).
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, 2000, op::RW, 1), b"x"));
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, 2000, op::RST, 0), &[]));
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, service_port(b"other"), op::REQUEST, 0), &[]));
    ipc.poll(Some(0), &mut events).unwrap();
    assert_eq!(sent_ops(&mut ipc), [op::RST, op::RST]);
    assert_eq!(ipc.stats().unknown_connection, 1);
    assert_eq!(ipc.stats().refused, 1);
    // A bad FROM line resets the served call.
    ipc.transport_mut().inbox.push_back(packet(&good, &[]));
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, port, op::RW, 9), b"HELLO x\n\n"));
    ipc.poll(Some(0), &mut events).unwrap();
    assert_eq!(ipc.try_accept(), None);
    assert_eq!(sent_ops(&mut ipc).last(), Some(&op::RST));
}

#[test]
fn listening_twice_and_more_than_64_connections_are_refused() {
    let mut ipc = plain();
    ipc.listen("echo").unwrap();
    assert_eq!(ipc.listen("echo"), Err(IpcError::AlreadyListening));
    assert_eq!(ipc.listen("a b"), Err(IpcError::BadName));
    for _ in 0..MAX_CONNECTIONS {
        ipc.open_raw().unwrap();
    }
    assert_eq!(ipc.open_raw(), Err(IpcError::TooManyConnections));
    assert_eq!(ipc.connect_start("vault", "echo"), Err(IpcError::TooManyConnections));
    // A served call beyond the limit is refused with RST.
    let port = service_port(b"echo");
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, port, op::REQUEST, 0), &[]));
    let mut events = Vec::new();
    ipc.poll(Some(0), &mut events).unwrap();
    assert_eq!(sent_ops(&mut ipc).last(), Some(&op::RST));
    assert_eq!(ipc.stats().refused, 1);
    // Ports are distinct.
    let mut ports: Vec<u32> =
        ipc.transport_mut().sent.iter().filter(|(h, _)| h.op == op::REQUEST).map(|(h, _)| h.src_port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), MAX_CONNECTIONS);
}

#[test]
fn served_calls_that_fail_before_their_from_line_do_not_use_up_connections() {
    // A router that resets calls before their FROM line (a hostile one, or
    // one that restarts) must not leave them holding the 64 connections:
    // the program never saw them, so it could never close them.
    let mut ipc = plain();
    ipc.listen("echo").unwrap();
    let port = service_port(b"echo");
    let mut events = Vec::new();
    for i in 0..2 * MAX_CONNECTIONS as u32 {
        let net = ipc.transport_mut();
        net.inbox.push_back(packet(&hdr(5000 + i, port, op::REQUEST, 0), &[]));
        net.inbox.push_back(packet(&hdr(5000 + i, port, op::RST, 0), &[]));
        ipc.poll(Some(0), &mut events).unwrap();
    }
    assert_eq!(ipc.connections(), 0);
    let net = ipc.transport_mut();
    net.inbox.push_back(packet(&hdr(9000, port, op::REQUEST, 0), &[]));
    net.inbox.push_back(packet(&hdr(9000, port, op::RW, 15), b"FROM mail echo\n"));
    ipc.poll(Some(0), &mut events).unwrap();
    let accepted = ipc.try_accept().expect("a new call is still taken");
    assert_eq!(accepted.caller, "mail");
}

/// A transport that says, as the kernel does, whether more packets wait,
/// and counts the receives.
#[derive(Default)]
struct Counting {
    inbox: VecDeque<Vec<u8>>,
    current: Vec<u8>,
    more: bool,
    recvs: usize,
}

impl Transport for Counting {
    fn send(&mut self, _p: &[u8]) -> Result<(), Error> {
        Ok(())
    }

    fn recv(&mut self, _timeout_ns: Option<u64>) -> Result<Received<'_>, Error> {
        self.recvs += 1;
        self.current = self.inbox.pop_front().ok_or(Error::TimedOut)?;
        self.more = !self.inbox.is_empty();
        Ok(Received::Packet(&self.current))
    }

    fn more(&self) -> bool {
        self.more
    }
}

#[test]
fn pump_asks_the_kernel_again_only_when_it_said_more_packets_wait() {
    let mut ipc = Ipc::new(Counting::default(), GUEST);
    ipc.listen("echo").unwrap();
    let port = service_port(b"echo");
    ipc.transport_mut().inbox.push_back(packet(&hdr(5000, port, op::REQUEST, 0), &[]));
    ipc.pump(Some(0)).unwrap();
    assert_eq!(ipc.transport_mut().recvs, 1, "one packet: one system call, not a second that finds nothing");
    for i in 0..2 {
        ipc.transport_mut().inbox.push_back(packet(&hdr(6000 + i, port, op::REQUEST, 0), &[]));
    }
    ipc.pump(Some(0)).unwrap();
    assert_eq!(ipc.transport_mut().recvs, 3, "both waiting packets are taken in one pump");
    assert_eq!(ipc.connections(), 3);
}
