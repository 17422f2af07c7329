//! Inter-compartment IPC: the vsock connection protocol, run in ring 3
//! (docs/IPC.md).
//!
//! The kernel only moves packets (`VSOCK_ATTACH`, `VSOCK_RECV`,
//! `VSOCK_SEND`); everything else happens here, at native speed: ports,
//! connection states, credit-based flow control, the call handshake with
//! the router (`CALL <to> <service>\n` answered by `OK\n` or
//! `ERR <code> <message>\n`) and the `FROM <caller> <service>\n` line a
//! served call starts with.
//!
//! Received packets are read in the kernel's read-only receive buffers; a
//! packet's payload is copied into its connection's buffer (bounded by the
//! credit we advertise, [`BUF_ALLOC`]) and the receive buffer goes back to
//! the device with the next receive call, so at most one is held.
//!
//! Two ways to use it, freely mixed:
//! - blocking: [`Ipc::connect`], [`Ipc::accept`], [`Ipc::send`],
//!   [`Ipc::recv`];
//! - poll-style, for a program that serves calls while it makes its own:
//!   [`Ipc::poll`] pumps packets and reports [`Event`]s, [`Ipc::try_send`]
//!   sends what the peer's credit allows, [`Ipc::try_recv`] takes what has
//!   arrived, [`Ipc::try_accept`] takes a served call.
//!
//! Every packet is untrusted: one with a wrong source, type, operation or
//! length is dropped and counted ([`Stats`]), never trusted or panicked on.
//! The protocol is written against [`Transport`], so host tests run it
//! against a fake router.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use ward_abi::width::{low_u32, u64_from};

use zerocopy::{FromBytes, IntoBytes};

use ward_abi::syscall::Error;
use ward_abi::vsock::{
    CALL_PORT, FIRST_LOCAL_PORT, FIRST_SERVICE_PORT, HEADER_SIZE, Header, MAX_LINE, MAX_PAYLOAD, ROUTER_CID,
    TYPE_STREAM, op, service_port, shutdown,
};

/// Receive buffer each connection advertises (its credit to the peer).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Most connections open at once (calls and served calls), as the router
/// allows.
pub const MAX_CONNECTIONS: usize = 64;
/// Most events kept for [`Ipc::poll`]; events are hints (the state calls
/// are authoritative), so the oldest are dropped beyond this.
const MAX_EVENTS: usize = 1024;

/// Moves packets: the vsock device, or a fake in tests.
pub trait Transport {
    /// Sends one packet (header and payload).
    fn send(&mut self, packet: &[u8]) -> Result<(), Error>;
    /// The next received packet, waiting at most `timeout_ns` (`None`:
    /// forever; `Some(0)`: not at all, [`Error::TimedOut`] if none). The
    /// bytes stay valid until the next call.
    fn recv(&mut self, timeout_ns: Option<u64>) -> Result<Received<'_>, Error>;
    /// Whether the last [`Transport::recv`] said more packets were already
    /// waiting; when not, [`Ipc::pump`] stops without asking again.
    fn more(&self) -> bool {
        true
    }
}

/// What [`Transport::recv`] got.
#[derive(Debug)]
pub enum Received<'a> {
    /// A packet: header and payload, as long as the device says it wrote.
    Packet(&'a [u8]),
    /// The device dropped every connection (the router restarted).
    TransportReset,
}

/// A connection, as [`Ipc`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u32);

/// Why an IPC operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpcError {
    /// The compartment has no vsock device.
    NoDevice,
    /// Another process owns the vsock device.
    DeviceBusy,
    /// A system call failed.
    Sys(Error),
    /// The router answered the call with `ERR <code> <message>`.
    Call {
        /// The reply code (`ward_abi::vsock::reply`).
        code: String,
        /// The router's explanation.
        message: String,
    },
    /// The peer refused or aborted the connection (`RST`), or the
    /// transport was reset.
    Reset,
    /// The connection ended before the operation could finish (the peer
    /// shut it down, or it was closed).
    Closed,
    /// No such connection (never opened, or closed).
    NoConnection,
    /// [`MAX_CONNECTIONS`] are open.
    TooManyConnections,
    /// Something listens on that service's port already.
    AlreadyListening,
    /// A name or argument is empty, too long or has spaces or control
    /// characters.
    BadName,
    /// The peer broke the protocol (a line too long or malformed, more data
    /// than its credit).
    Protocol(&'static str),
    /// Nothing to do yet (the poll-style calls).
    WouldBlock,
    /// The wait timed out.
    TimedOut,
}

impl IpcError {
    /// A short code: the router's reply code, else one word.
    pub fn code(&self) -> &str {
        match self {
            Self::NoDevice => "no-device",
            Self::DeviceBusy => "device-busy",
            Self::Sys(_) => "system",
            Self::Call { code, .. } => code,
            Self::Reset => "reset",
            Self::Closed => "closed",
            Self::NoConnection => "no-connection",
            Self::TooManyConnections => "too-many-connections",
            Self::AlreadyListening => "already-listening",
            Self::BadName => "bad-name",
            Self::Protocol(_) => "protocol",
            Self::WouldBlock => "would-block",
            Self::TimedOut => "timed-out",
        }
    }

    /// A human explanation.
    pub fn message(&self) -> &str {
        match self {
            Self::NoDevice => "no vsock device",
            Self::DeviceBusy => "another process owns the vsock device",
            Self::Sys(e) => e.as_str(),
            Self::Call { message, .. } => message,
            Self::Reset => "connection reset",
            Self::Closed => "connection closed",
            Self::NoConnection => "no such connection",
            Self::TooManyConnections => "too many connections",
            Self::AlreadyListening => "the service's port is taken",
            Self::BadName => "bad name",
            Self::Protocol(what) => what,
            Self::WouldBlock => "nothing yet",
            Self::TimedOut => "timed out",
        }
    }
}

impl From<Error> for IpcError {
    fn from(e: Error) -> Self {
        match e {
            Error::TimedOut => Self::TimedOut,
            Error::NoSuchDevice => Self::NoDevice,
            e => Self::Sys(e),
        }
    }
}

/// Something [`Ipc::poll`] saw happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An outgoing call got `OK`: the connection is open.
    Connected(ConnId),
    /// A served call arrived: [`Ipc::try_accept`] takes it.
    Accepted(ConnId),
    /// Data (or the end of it) can be read.
    Readable(ConnId),
    /// The peer gave credit to a connection that was waiting for it.
    Writable(ConnId),
    /// The peer will send no more (read what is left, then 0).
    Closed(ConnId),
    /// The connection failed (refused, `ERR`, reset): its calls now fail.
    Failed(ConnId, IpcError),
}

/// A served call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its connection.
    pub conn: ConnId,
    /// Who called (a compartment name, from the router).
    pub caller: String,
    /// The service called, with `+argument` if any.
    pub service: String,
}

/// Where a connection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Our `REQUEST` is out; waiting for `RESPONSE`.
    Connecting,
    /// The call line is out; waiting for the router's reply line.
    Calling,
    /// Served: waiting for the router's `FROM` line.
    Accepting,
    /// Open: data flows.
    Open,
    /// It failed; every call on it returns this error.
    Failed(IpcError),
}

/// Counters of what was dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets dropped as malformed (length, type, operation, source).
    pub bad_packets: u64,
    /// Packets for connections we do not have (answered with `RST`).
    pub unknown_connection: u64,
    /// `RST`s for connections we do not have (dropped).
    pub stray_rst: u64,
    /// Connections refused because [`MAX_CONNECTIONS`] were open.
    pub refused: u64,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    local_port: u32,
    peer_port: u32,
    state: ConnState,
    /// Received bytes not yet read (at most [`BUF_ALLOC`]).
    rx: VecDeque<u8>,
    /// Bytes we consumed (wrapping), and its value in the last header sent.
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    /// The peer's buffer and consumed count, from its last header.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes we sent (wrapping).
    tx_cnt: u32,
    /// The peer sent `SHUTDOWN` with `SEND`: no more data will come.
    peer_eof: bool,
    /// The peer will receive no more.
    peer_no_rcv: bool,
    /// The peer forgot the connection after a clean close (its `RST`
    /// came after its `SHUTDOWN`): what arrived stays readable.
    peer_gone: bool,
    /// A served call the program has not been given yet (its `FROM` line
    /// has not come): if it fails now, nobody would ever close it.
    unseen: bool,
    /// We sent `SHUTDOWN` with `SEND`.
    shut_send: bool,
    /// A `try_send` found no credit: report [`Event::Writable`] later.
    wants_credit: bool,
    credit_requested: bool,
    /// The call line to send once connected (outgoing calls).
    call_line: Vec<u8>,
    /// Served calls: who and what, once the `FROM` line came.
    caller: String,
    service: String,
}

impl Conn {
    fn new(id: ConnId, local_port: u32, peer_port: u32, state: ConnState) -> Self {
        Self {
            id,
            local_port,
            peer_port,
            state,
            rx: VecDeque::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            peer_eof: false,
            peer_no_rcv: false,
            peer_gone: false,
            unseen: false,
            shut_send: false,
            wants_credit: false,
            credit_requested: false,
            call_line: Vec::new(),
            caller: String::new(),
            service: String::new(),
        }
    }

    fn alive(&self) -> bool {
        !matches!(self.state, ConnState::Failed(_))
    }

    /// Bytes the peer can take now.
    fn credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }
}

/// The IPC endpoint of a program: owns the vsock device (or a test's
/// transport) and every connection.
#[derive(Debug)]
pub struct Ipc<T: Transport> {
    transport: T,
    cid: u64,
    conns: Vec<Conn>,
    /// Listening ports and their service names.
    listeners: Vec<(u32, String)>,
    accepts: VecDeque<ConnId>,
    events: VecDeque<Event>,
    /// Header-only packets to send once the packet being read is done.
    control: VecDeque<Header>,
    /// A packet being built (header and payload).
    packet: Vec<u8>,
    next_id: u32,
    next_port: u32,
    stats: Stats,
}

impl<T: Transport> Ipc<T> {
    /// An endpoint with CID `cid` over `transport`.
    pub fn new(transport: T, cid: u64) -> Self {
        Self {
            transport,
            cid,
            conns: Vec::new(),
            listeners: Vec::new(),
            accepts: VecDeque::new(),
            events: VecDeque::new(),
            control: VecDeque::new(),
            packet: Vec::with_capacity(HEADER_SIZE + MAX_PAYLOAD),
            next_id: 1,
            next_port: FIRST_LOCAL_PORT,
            stats: Stats::default(),
        }
    }

    /// This compartment's CID.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// What was dropped so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The transport (tests look at their fakes through it).
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Connections open (or opening, or failed and not closed yet).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Serves `service` (without argument): calls to it arrive as
    /// [`Event::Accepted`] / [`Ipc::accept`].
    pub fn listen(&mut self, service: &str) -> Result<(), IpcError> {
        check_name(service.as_bytes())?;
        let port = service_port(service.as_bytes());
        if self.listeners.iter().any(|(p, _)| *p == port) {
            return Err(IpcError::AlreadyListening);
        }
        self.listeners.push((port, String::from(service)));
        Ok(())
    }

    /// Starts a call to `service` (`name` or `name+argument`) of
    /// compartment `to`; it completes with [`Event::Connected`] or
    /// [`Event::Failed`].
    pub fn connect_start(&mut self, to: &str, service: &str) -> Result<ConnId, IpcError> {
        check_name(to.as_bytes())?;
        let (name, arg) = service.split_once('+').map_or((service, None), |(n, a)| (n, Some(a)));
        check_name(name.as_bytes())?;
        if let Some(arg) = arg {
            check_name(arg.as_bytes())?;
        }
        let mut line = Vec::with_capacity(MAX_LINE);
        line.extend_from_slice(b"CALL ");
        line.extend_from_slice(to.as_bytes());
        line.push(b' ');
        line.extend_from_slice(service.as_bytes());
        line.push(b'\n');
        if line.len() > MAX_LINE {
            return Err(IpcError::BadName);
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            return Err(IpcError::TooManyConnections);
        }
        let port = self.free_port();
        let id = self.new_id();
        let mut conn = Conn::new(id, port, CALL_PORT, ConnState::Connecting);
        conn.call_line = line;
        self.conns.push(conn);
        self.send_control(id, op::REQUEST, 0)?;
        Ok(id)
    }

    /// Calls `service` of `to` and waits for the router's answer.
    pub fn connect(&mut self, to: &str, service: &str) -> Result<ConnId, IpcError> {
        let id = self.connect_start(to, service)?;
        loop {
            match self.state(id) {
                Some(ConnState::Open) => return Ok(id),
                Some(ConnState::Failed(e)) => {
                    self.close(id);
                    return Err(e);
                }
                None => return Err(IpcError::NoConnection),
                Some(_) => self.pump(None)?,
            }
        }
    }

    /// Raw `REQUEST` to the router's call port with no call line: the
    /// connection stays in [`ConnState::Calling`] once the router answers
    /// (for tests of the router's limits).
    pub fn open_raw(&mut self) -> Result<ConnId, IpcError> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return Err(IpcError::TooManyConnections);
        }
        let port = self.free_port();
        let id = self.new_id();
        self.conns.push(Conn::new(id, port, CALL_PORT, ConnState::Connecting));
        self.send_control(id, op::REQUEST, 0)?;
        Ok(id)
    }

    /// A served call that arrived, if any.
    pub fn try_accept(&mut self) -> Option<Accepted> {
        while let Some(id) = self.accepts.pop_front() {
            if let Some(c) = self.conn(id) {
                return Some(Accepted { conn: id, caller: c.caller.clone(), service: c.service.clone() });
            }
        }
        None
    }

    /// Waits for a served call.
    pub fn accept(&mut self) -> Result<Accepted, IpcError> {
        loop {
            if let Some(a) = self.try_accept() {
                return Ok(a);
            }
            self.pump(None)?;
        }
    }

    /// Where connection `id` is (`None`: no such connection).
    pub fn state(&self, id: ConnId) -> Option<ConnState> {
        self.conn(id).map(|c| c.state.clone())
    }

    /// Sends what the peer's credit allows of `data` now; returns how many
    /// bytes went (0: no credit yet, wait for [`Event::Writable`]).
    pub fn try_send(&mut self, id: ConnId, data: &[u8]) -> Result<usize, IpcError> {
        let c = self.conn(id).ok_or(IpcError::NoConnection)?;
        match &c.state {
            ConnState::Open => {}
            ConnState::Failed(e) => return Err(e.clone()),
            _ => return Ok(0),
        }
        if c.shut_send || c.peer_no_rcv {
            return Err(IpcError::Closed);
        }
        let mut sent = 0;
        while sent < data.len() {
            let credit = self.conn(id).map_or(0, Conn::credit) as usize;
            if credit == 0 {
                break;
            }
            let n = credit.min(MAX_PAYLOAD).min(data.len() - sent);
            self.send_data(id, &data[sent..sent + n])?;
            sent += n;
        }
        if sent < data.len()
            && let Some(c) = self.conn_mut(id)
        {
            c.wants_credit = true;
            if !c.credit_requested {
                c.credit_requested = true;
                self.send_control(id, op::CREDIT_REQUEST, 0)?;
            }
        }
        Ok(sent)
    }

    /// Sends all of `data`, waiting for credit as needed.
    pub fn send(&mut self, id: ConnId, data: &[u8]) -> Result<(), IpcError> {
        let mut sent = 0;
        while sent < data.len() {
            let n = self.try_send(id, &data[sent..])?;
            sent += n;
            if sent < data.len() {
                self.pump(None)?;
            }
        }
        Ok(())
    }

    /// Reads what has arrived on `id` into `buf`: `Ok(0)` once the peer
    /// has shut down its sending side and everything was read,
    /// [`IpcError::WouldBlock`] if nothing is there yet.
    pub fn try_recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, IpcError> {
        let c = self.conn_mut(id).ok_or(IpcError::NoConnection)?;
        if c.rx.is_empty() {
            return match &c.state {
                ConnState::Failed(e) => Err(e.clone()),
                ConnState::Open if c.peer_eof => Ok(0),
                _ if buf.is_empty() => Ok(0),
                _ => Err(IpcError::WouldBlock),
            };
        }
        let n = buf.len().min(c.rx.len());
        let (a, b) = c.rx.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        c.rx.drain(..n);
        // Credit counts are wrapping 32-bit counters (virtio-vsock).
        self.consumed(id, low_u32(u64_from(n)))?;
        Ok(n)
    }

    /// Waits until something arrives on `id`, then reads it (0: end).
    pub fn recv(&mut self, id: ConnId, buf: &mut [u8]) -> Result<usize, IpcError> {
        loop {
            match self.try_recv(id, buf) {
                Err(IpcError::WouldBlock) => self.pump(None)?,
                other => return other,
            }
        }
    }

    /// Says we will send no more on `id` (the peer reads the end).
    pub fn shutdown_send(&mut self, id: ConnId) -> Result<(), IpcError> {
        let c = self.conn_mut(id).ok_or(IpcError::NoConnection)?;
        if let ConnState::Failed(e) = &c.state {
            return Err(e.clone());
        }
        if c.shut_send {
            return Ok(());
        }
        c.shut_send = true;
        self.send_control(id, op::SHUTDOWN, shutdown::SEND)
    }

    /// Closes `id`: the peer is told (unless it is gone) and the connection
    /// forgotten. Unread data is dropped.
    pub fn close(&mut self, id: ConnId) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else { return };
        let c = &self.conns[i];
        let both_done = c.shut_send && c.peer_eof;
        if c.alive() && !both_done && !c.peer_gone {
            let _ = self.send_control(id, op::SHUTDOWN, shutdown::SEND | shutdown::RCV);
        }
        self.conns.swap_remove(i);
        self.accepts.retain(|&a| a != id);
    }

    /// Waits up to `timeout_ns` (`None`: forever) for packets, handles
    /// every one that arrived, and appends what happened to `events`
    /// (without waiting if events were pending). Times out with no events
    /// rather than an error.
    pub fn poll(&mut self, timeout_ns: Option<u64>, events: &mut Vec<Event>) -> Result<(), IpcError> {
        let wait = if self.events.is_empty() { timeout_ns } else { Some(0) };
        match self.pump(wait) {
            Ok(()) | Err(IpcError::TimedOut) => {}
            Err(e) => return Err(e),
        }
        events.extend(self.events.drain(..));
        Ok(())
    }

    /// Handles one packet, waiting at most `timeout_ns` for it, then every
    /// packet already there.
    pub fn pump(&mut self, timeout_ns: Option<u64>) -> Result<(), IpcError> {
        let mut wait = timeout_ns;
        loop {
            match self.receive_one(wait) {
                Ok(()) => {}
                Err(IpcError::TimedOut) if wait != timeout_ns || timeout_ns == Some(0) => return Ok(()),
                Err(e) => return Err(e),
            }
            self.flush_control()?;
            if !self.transport.more() {
                return Ok(());
            }
            wait = Some(0);
        }
    }

    /// Sends a packet as is (for tests of the router's checks).
    pub fn send_raw(&mut self, packet: &[u8]) -> Result<(), IpcError> {
        self.transport.send(packet).map_err(IpcError::from)
    }

    fn receive_one(&mut self, timeout_ns: Option<u64>) -> Result<(), IpcError> {
        let Self { transport, conns, listeners, accepts, events, control, next_id, stats, cid, .. } = self;
        let mut state = Proto { conns, listeners, accepts, events, control, next_id, stats, cid: *cid };
        match transport.recv(timeout_ns)? {
            Received::TransportReset => state.transport_reset(),
            Received::Packet(bytes) => state.packet(bytes),
        }
        // A served call that failed before the program saw it is dropped
        // here: else each would hold one of the connections for good.
        conns.retain(|c| !c.unseen || c.alive());
        Ok(())
    }

    fn flush_control(&mut self) -> Result<(), IpcError> {
        while let Some(h) = self.control.pop_front() {
            self.transport.send(h.as_bytes())?;
        }
        // Calls whose `RESPONSE` came send their call line now.
        let ready: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.state == ConnState::Calling && !c.call_line.is_empty() && c.credit() > 0)
            .map(|c| c.id)
            .collect();
        for id in ready {
            let line = self.conn_mut(id).map(|c| core::mem::take(&mut c.call_line)).unwrap_or_default();
            if let Some(c) = self.conn(id)
                && (c.credit() as usize) < line.len()
            {
                // The router gives far more credit than a line; a peer that
                // does not is broken.
                self.fail(id, IpcError::Protocol("no credit for the call line"));
                continue;
            }
            self.send_data(id, &line)?;
        }
        Ok(())
    }

    fn fail(&mut self, id: ConnId, e: IpcError) {
        if let Some(c) = self.conn_mut(id) {
            c.state = ConnState::Failed(e.clone());
        }
        let _ = self.send_control(id, op::RST, 0);
        push_event(&mut self.events, Event::Failed(id, e));
    }

    /// Bytes of `id` read by the program: a credit update once half the
    /// buffer was consumed since the peer last heard.
    fn consumed(&mut self, id: ConnId, n: u32) -> Result<(), IpcError> {
        let Some(c) = self.conn_mut(id) else { return Ok(()) };
        c.fwd_cnt = c.fwd_cnt.wrapping_add(n);
        if c.fwd_cnt.wrapping_sub(c.fwd_cnt_sent) >= BUF_ALLOC / 2 && !c.peer_eof && c.alive() {
            self.send_control(id, op::CREDIT_UPDATE, 0)?;
        }
        Ok(())
    }

    fn send_data(&mut self, id: ConnId, data: &[u8]) -> Result<(), IpcError> {
        let cid = self.cid;
        let Some(c) = self.conn_mut(id) else { return Err(IpcError::NoConnection) };
        // At most MAX_PAYLOAD bytes; the counter wraps (virtio-vsock).
        let len = low_u32(u64_from(data.len()));
        let h = header_for(cid, c, op::RW, 0, len);
        c.tx_cnt = c.tx_cnt.wrapping_add(len);
        c.fwd_cnt_sent = c.fwd_cnt;
        self.packet.clear();
        self.packet.extend_from_slice(h.as_bytes());
        self.packet.extend_from_slice(data);
        self.transport.send(&self.packet).map_err(IpcError::from)
    }

    fn send_control(&mut self, id: ConnId, operation: u16, flags: u32) -> Result<(), IpcError> {
        let cid = self.cid;
        let Some(c) = self.conn_mut(id) else { return Err(IpcError::NoConnection) };
        let h = header_for(cid, c, operation, flags, 0);
        c.fwd_cnt_sent = c.fwd_cnt;
        self.transport.send(h.as_bytes()).map_err(IpcError::from)
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn new_id(&mut self) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// A local port no connection uses, from [`FIRST_LOCAL_PORT`] up,
    /// wrapping below the service ports.
    fn free_port(&mut self) -> u32 {
        loop {
            let port = self.next_port;
            self.next_port = if port + 1 >= FIRST_SERVICE_PORT { FIRST_LOCAL_PORT } else { port + 1 };
            if !self.conns.iter().any(|c| c.local_port == port) {
                return port;
            }
        }
    }
}

/// The parts of [`Ipc`] that handling a received packet changes, borrowed
/// apart from the transport (whose buffer holds the packet meanwhile).
struct Proto<'a> {
    conns: &'a mut Vec<Conn>,
    listeners: &'a [(u32, String)],
    accepts: &'a mut VecDeque<ConnId>,
    events: &'a mut VecDeque<Event>,
    control: &'a mut VecDeque<Header>,
    next_id: &'a mut u32,
    stats: &'a mut Stats,
    cid: u64,
}

impl Proto<'_> {
    fn transport_reset(&mut self) {
        for c in self.conns.iter_mut().filter(|c| c.alive()) {
            c.state = ConnState::Failed(IpcError::Reset);
            push_event(self.events, Event::Failed(c.id, IpcError::Reset));
        }
    }

    fn packet(&mut self, bytes: &[u8]) {
        let Ok((h, payload)) = Header::read_from_prefix(bytes) else {
            self.stats.bad_packets += 1;
            return;
        };
        let (operation, len) = (h.op, h.len as usize);
        let valid = h.src_cid == ROUTER_CID
            && h.dst_cid == self.cid
            && h.kind == TYPE_STREAM
            && (op::REQUEST..=op::CREDIT_REQUEST).contains(&operation)
            && len <= MAX_PAYLOAD
            && len == payload.len()
            && (operation == op::RW || len == 0);
        if !valid {
            self.stats.bad_packets += 1;
            return;
        }
        let (local, peer) = (h.dst_port, h.src_port);
        let ports = |c: &Conn| c.local_port == local && c.peer_port == peer;
        let Some(i) = self.conns.iter().position(|c| c.alive() && ports(c)) else {
            // Late packets of a failed connection the program has not
            // closed yet are dropped quietly; a new `REQUEST` may reuse
            // its ports (after a transport reset).
            if operation == op::REQUEST || !self.conns.iter().any(ports) {
                self.new_connection(&h);
            }
            return;
        };
        let c = &mut self.conns[i];
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        c.credit_requested = false;
        match operation {
            op::RESPONSE if c.state == ConnState::Connecting => {
                // Outgoing calls send their line next (`flush_control`);
                // raw connections just stay there.
                c.state = ConnState::Calling;
            }
            op::RST if c.state == ConnState::Open && c.peer_eof => {
                // The end of a clean close (virtio 5.10.6.6: SHUTDOWN, then
                // RST from the peer): not an error; unread data stays.
                c.peer_gone = true;
                c.peer_no_rcv = true;
                return;
            }
            op::RST => {
                let e = IpcError::Reset;
                c.state = ConnState::Failed(e.clone());
                push_event(self.events, Event::Failed(c.id, e));
                return;
            }
            op::SHUTDOWN => {
                let eof = h.flags & shutdown::SEND != 0 && !c.peer_eof;
                c.peer_eof |= h.flags & shutdown::SEND != 0;
                c.peer_no_rcv |= h.flags & shutdown::RCV != 0;
                if c.state != ConnState::Open && c.peer_eof {
                    // The router shut the call before it opened (after an
                    // `ERR` line, which was handled as it came).
                    let e = IpcError::Closed;
                    c.state = ConnState::Failed(e.clone());
                    push_event(self.events, Event::Failed(c.id, e));
                    return;
                }
                if eof {
                    push_event(self.events, Event::Closed(c.id));
                }
            }
            op::RW => {
                if c.peer_eof || c.rx.len() + len > BUF_ALLOC as usize {
                    let id = c.id;
                    let e = IpcError::Protocol("data beyond the credit we gave, or after the end");
                    c.state = ConnState::Failed(e.clone());
                    self.control.push_back(header_for(self.cid, c, op::RST, 0, 0));
                    push_event(self.events, Event::Failed(id, e));
                    return;
                }
                c.rx.extend(payload);
                match c.state {
                    ConnState::Calling => self.reply_line(i),
                    ConnState::Accepting => self.caller_line(i),
                    ConnState::Open if len > 0 => push_event(self.events, Event::Readable(c.id)),
                    _ => {}
                }
                return;
            }
            op::CREDIT_REQUEST => {
                let h = header_for(self.cid, c, op::CREDIT_UPDATE, 0, 0);
                c.fwd_cnt_sent = c.fwd_cnt;
                self.control.push_back(h);
            }
            _ => {}
        }
        let c = &mut self.conns[i];
        if c.wants_credit && c.credit() > 0 {
            c.wants_credit = false;
            push_event(self.events, Event::Writable(c.id));
        }
    }

    /// A packet for no connection we have: a `REQUEST` to a service we
    /// serve opens one; anything else but `RST` is answered with `RST`.
    fn new_connection(&mut self, h: &Header) {
        let (local, peer) = (h.dst_port, h.src_port);
        if h.op == op::RST {
            self.stats.stray_rst += 1;
            return;
        }
        let listening = self.listeners.iter().any(|(p, _)| *p == local);
        if h.op != op::REQUEST || !listening || self.conns.len() >= MAX_CONNECTIONS {
            if h.op == op::REQUEST {
                self.stats.refused += 1;
            } else {
                self.stats.unknown_connection += 1;
            }
            self.control.push_back(reply_header(self.cid, local, peer, op::RST));
            return;
        }
        let id = ConnId(*self.next_id);
        *self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut c = Conn::new(id, local, peer, ConnState::Accepting);
        c.unseen = true;
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        self.control.push_back(header_for(self.cid, &c, op::RESPONSE, 0, 0));
        self.conns.push(c);
    }

    /// Takes the first line of connection `i`'s data, if complete; fails
    /// the connection if it is too long.
    fn take_line(&mut self, i: usize) -> Option<Vec<u8>> {
        let c = &mut self.conns[i];
        let Some(end) = c.rx.iter().take(MAX_LINE).position(|&b| b == b'\n') else {
            if c.rx.len() >= MAX_LINE {
                let e = IpcError::Protocol("line too long");
                c.state = ConnState::Failed(e.clone());
                self.control.push_back(header_for(self.cid, c, op::RST, 0, 0));
                push_event(self.events, Event::Failed(c.id, e));
            }
            return None;
        };
        let line: Vec<u8> = c.rx.drain(..=end).take(end).collect();
        c.fwd_cnt = c.fwd_cnt.wrapping_add(low_u32(u64_from(end)) + 1);
        Some(line)
    }

    fn reply_line(&mut self, i: usize) {
        let Some(line) = self.take_line(i) else { return };
        let c = &mut self.conns[i];
        if line == b"OK" {
            c.state = ConnState::Open;
            push_event(self.events, Event::Connected(c.id));
            if !c.rx.is_empty() {
                push_event(self.events, Event::Readable(c.id));
            }
            return;
        }
        let text = String::from_utf8_lossy(&line);
        let e = match text.strip_prefix("ERR ") {
            Some(rest) => {
                let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
                IpcError::Call { code: String::from(code), message: String::from(message) }
            }
            None => IpcError::Protocol("bad reply line"),
        };
        // The router forgets the call after `ERR`: nothing to tell it.
        c.state = ConnState::Failed(e.clone());
        push_event(self.events, Event::Failed(c.id, e));
    }

    fn caller_line(&mut self, i: usize) {
        let Some(line) = self.take_line(i) else { return };
        let c = &mut self.conns[i];
        let text = String::from_utf8_lossy(&line);
        let mut words = text.strip_prefix("FROM ").unwrap_or("").split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some(caller), Some(service), None) if !caller.is_empty() && !service.is_empty() => {
                c.caller = String::from(caller);
                c.service = String::from(service);
                c.state = ConnState::Open;
                c.unseen = false;
                self.accepts.push_back(c.id);
                push_event(self.events, Event::Accepted(c.id));
                if !c.rx.is_empty() {
                    push_event(self.events, Event::Readable(c.id));
                }
            }
            _ => {
                let e = IpcError::Protocol("bad FROM line");
                c.state = ConnState::Failed(e.clone());
                self.control.push_back(header_for(self.cid, c, op::RST, 0, 0));
            }
        }
    }
}

fn push_event(events: &mut VecDeque<Event>, e: Event) {
    if events.len() >= MAX_EVENTS {
        events.pop_front();
    }
    events.push_back(e);
}

/// A header from us on connection `c`, carrying our credit.
fn header_for(cid: u64, c: &Conn, operation: u16, flags: u32, len: u32) -> Header {
    Header {
        src_cid: cid,
        dst_cid: ROUTER_CID,
        src_port: c.local_port,
        dst_port: c.peer_port,
        len,
        kind: TYPE_STREAM,
        op: operation,
        flags,
        buf_alloc: BUF_ALLOC,
        fwd_cnt: c.fwd_cnt,
    }
}

/// A header answering a packet for no connection.
fn reply_header(cid: u64, local: u32, peer: u32, operation: u16) -> Header {
    Header {
        src_cid: cid,
        dst_cid: ROUTER_CID,
        src_port: local,
        dst_port: peer,
        len: 0,
        kind: TYPE_STREAM,
        op: operation,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

/// Names (compartments, services, arguments): 1 to 64 printable ASCII
/// bytes without spaces or `+`; the router checks them again.
fn check_name(name: &[u8]) -> Result<(), IpcError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.iter().all(|&b| b.is_ascii_graphic() && b != b'+');
    if ok { Ok(()) } else { Err(IpcError::BadName) }
}

/// The vsock device as a [`Transport`].
#[derive(Debug)]
pub struct Device {
    info: ward_abi::vsock::VsockInfo,
    /// The receive buffer we hold, given back with the next receive.
    held: Option<u32>,
    /// The kernel said more packets wait.
    more: bool,
}

impl Device {
    /// Attaches the device (this process becomes its owner).
    pub fn attach() -> Result<Self, IpcError> {
        match crate::sys::vsock_attach() {
            Ok(info) => Ok(Self { info, held: None, more: true }),
            Err(Error::Busy) => Err(IpcError::DeviceBusy),
            Err(e) => Err(e.into()),
        }
    }

    /// What the kernel said at attach.
    pub fn info(&self) -> ward_abi::vsock::VsockInfo {
        self.info
    }
}

impl Transport for Device {
    fn send(&mut self, packet: &[u8]) -> Result<(), Error> {
        crate::sys::vsock_send(packet).map(|_| ())
    }

    fn more(&self) -> bool {
        self.more
    }

    fn recv(&mut self, timeout_ns: Option<u64>) -> Result<Received<'_>, Error> {
        let done = self.held.take();
        // Unknown after a reset: ask again.
        self.more = true;
        match crate::sys::vsock_recv(done, timeout_ns)? {
            crate::sys::VsockRecv::TransportReset => Ok(Received::TransportReset),
            crate::sys::VsockRecv::Packet { index, len, more } => {
                self.more = more;
                if index >= self.info.buffers {
                    // Not a buffer of ours: nothing to read or give back.
                    return Ok(Received::Packet(&[]));
                }
                self.held = Some(index);
                let len = len.min(self.info.buffer_size) as usize;
                let addr = self.info.area + u64::from(index) * u64::from(self.info.buffer_size);
                // SAFETY: the kernel mapped the receive area read-only into
                // this process for its lifetime; buffer `index` is ours (the
                // device does not write it) until we give it back with the
                // next receive, after this slice is gone (it borrows `self`).
                Ok(Received::Packet(unsafe { core::slice::from_raw_parts(addr as *const u8, len) }))
            }
        }
    }
}

impl Ipc<Device> {
    /// Attaches this process to the vsock device.
    pub fn attach() -> Result<Self, IpcError> {
        let device = Device::attach()?;
        let cid = device.info().guest_cid;
        Ok(Self::new(device, cid))
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test values are small")]
mod tests;
