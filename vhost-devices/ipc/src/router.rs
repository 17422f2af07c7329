//! The router core: compartments, connections, calls and their bytes, with
//! no I/O. The device layer hands it each packet a guest sends
//! ([`Router::receive`]) and asks it for the next packet a guest should get
//! ([`Router::next_packet`]); the control side hands it the policy, the
//! attached compartments and the user's answers, and takes asks and audit
//! lines ([`Router::take_events`]).
//!
//! Each vsock connection between the router and one guest is a **leg**.
//! A call is two legs: the caller's, opened by the guest to
//! ([`ROUTER_CID`], [`CALL_PORT`]), and the callee's, opened by the router
//! from one of its ports to the callee's [`service_port`]. Bytes a guest
//! sends on a leg wait in that leg's receive buffer ([`BUF_ALLOC`] bytes,
//! the credit the router gives) until the other leg's guest has credit for
//! them, so a call holds at most `2 * BUF_ALLOC` bytes whatever the guests
//! do, and each hop has its own credit (docs/IPC.md, "Flow control").
//!
//! Nothing is queued per packet: a leg with something to send is put on
//! its compartment's ready list once, and the packet is made when the
//! guest has a receive buffer for it. The only queued packets are `RST`
//! answers to packets for unknown connections, at most [`MAX_LOOSE`] per
//! compartment.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use ward_abi::vsock::{
    CALL_PORT, FIRST_GUEST_CID, FIRST_LOCAL_PORT, FIRST_SERVICE_PORT, HEADER_SIZE, Header, MAX_LINE, MAX_PAYLOAD,
    ROUTER_CID, TYPE_STREAM, op, reply, service_port, shutdown,
};
use ward_policy::{Action, Policy, ServiceCall};

/// The receive buffer the router gives each leg (its `buf_alloc`).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Most open connections (legs) a compartment may have.
pub const MAX_CONNECTIONS: usize = 64;
/// Most calls of one compartment waiting for the user's answer.
pub const MAX_PENDING_ASKS: usize = 4;
/// How long the router keeps an ask before it denies it itself (`wardd`
/// answers first, after its own time-out).
pub const ASK_EXPIRY: Duration = Duration::from_secs(120);
/// How long a callee has to answer the router's `REQUEST` for a call.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most calls one compartment may have open to another at once, so no
/// caller takes all of a callee's [`MAX_CONNECTIONS`].
pub const MAX_CALLS_PER_PAIR: usize = 16;
/// Most audit lines one caller's decisions make per [`AUDIT_WINDOW`]; the
/// rest are counted and reported in one line, so a guest calling in a loop
/// cannot flood the audit log.
pub const AUDIT_BURST: u32 = 50;
/// See [`AUDIT_BURST`].
pub const AUDIT_WINDOW: Duration = Duration::from_secs(10);
/// Most queued `RST` answers to stray packets per compartment (more are
/// dropped).
pub const MAX_LOOSE: usize = 64;
/// Most asks and audit lines waiting for the control side (more are
/// dropped, and the drop is logged).
pub const MAX_EVENTS: usize = 10_000;

/// Longest compartment name (POLICY.md).
const MAX_NAME: usize = 63;
/// Highest router port given to callee legs.
const LAST_ROUTER_PORT: u32 = FIRST_SERVICE_PORT - 1;

/// A packet for a guest: a header and, for [`op::RW`], its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The header (`len` is the payload's length).
    pub header: Header,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What the router tells the control side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Ask the user about a call.
    Ask {
        /// The ask's number, for the answer.
        id: u64,
        /// The caller.
        from: String,
        /// The compartment the caller asked for.
        to: String,
        /// `service[+argument]`.
        service: String,
    },
    /// One audit line, without the `ipc ` prefix.
    Audit(String),
    /// A call to a host service: wardd is to connect the host side's
    /// connection (guest port `service_port`, router port `router_port` of
    /// [`HOST_CID`]) to the service's socket.
    HostCall {
        /// The connection, as the host side knows it.
        service_port: u32,
        /// See `service_port`.
        router_port: u32,
        /// The caller.
        from: String,
        /// `service[+argument]`.
        service: String,
    },
}

/// The CID the router gives the host's services ([`Router::attach_host`]):
/// the host side (`host.rs`) speaks for it as a guest would, its
/// "connections" being sockets wardd connects to host services.
pub const HOST_CID: u64 = 1;
/// The name rules use for the host (`to = "host"`, docs/POLICY.md).
pub const HOST_NAME: &str = "host";

/// Why a guest's packet was dropped. Each kind is logged once per
/// compartment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPacket {
    /// The header's source CID is not the compartment's.
    SourceCid,
    /// The header's destination CID is not the router's.
    DestinationCid,
    /// The socket type is not stream.
    Type,
    /// The operation is not one of [`op`].
    Operation,
    /// The header's length does not match the buffer, or is over
    /// [`MAX_PAYLOAD`], or a packet other than `RW` carries bytes.
    Length,
    /// The descriptor chain could not be read (the device layer reports it).
    Chain,
    /// The packet is for a connection that does not exist.
    NoConnection,
    /// The packet does not fit the connection's state (data before the
    /// connection is open, a second `REQUEST`...).
    Protocol,
    /// The guest sent more than its credit.
    Credit,
    /// A receive or event buffer is too small or unwritable (the device
    /// layer reports it).
    RxBuffer,
}

impl BadPacket {
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for BadPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SourceCid => "a packet with a source CID not its own",
            Self::DestinationCid => "a packet for a CID other than the router's",
            Self::Type => "a packet of an unknown socket type",
            Self::Operation => "a packet with an unknown operation",
            Self::Length => "a packet whose length does not match its buffer",
            Self::Chain => "an unreadable transmit descriptor chain",
            Self::NoConnection => "a packet for a connection that does not exist",
            Self::Protocol => "a packet out of order for its connection",
            Self::Credit => "more bytes than its credit allows",
            Self::RxBuffer => "a receive or event buffer that is too small or unwritable",
        })
    }
}

/// An attach the router refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachError {
    /// The name is not a compartment name.
    #[error("{0:?} is not a valid compartment name")]
    BadName(String),
    /// The CID is reserved.
    #[error("CID {0} is reserved (compartments have CID 3 and up)")]
    ReservedCid(u64),
    /// Another compartment has the CID.
    #[error("CID {cid} already belongs to compartment {owner:?}")]
    CidInUse {
        /// The CID.
        cid: u64,
        /// Its compartment.
        owner: String,
    },
}

/// A control request about something the router does not know.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnknownError {
    /// No compartment of that name is attached.
    #[error("compartment {0:?} is not attached")]
    Compartment(String),
    /// No ask of that number is pending (answered, expired, or its caller
    /// went away).
    #[error("no pending ask {0}")]
    Ask(u64),
}

/// How an ask ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The user allowed the call.
    Allowed,
    /// The user denied it.
    Denied,
    /// Nobody answered within this many seconds: denied (and audited by
    /// the router).
    NoAnswer(u64),
}

/// A leg: one connection between the router and a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct LegKey {
    cid: u64,
    guest_port: u32,
    router_port: u32,
}

/// Where a caller's call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the call line.
    Line,
    /// Waiting for the user's answer to ask `id`.
    Asking(u64),
    /// Waiting for the callee's `RESPONSE`.
    Connecting,
    /// Joined to the callee: bytes flow.
    Joined,
    /// Refused: the `ERR` line and the shutdown are on their way.
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Caller(Phase),
    /// The router opened this leg; `connected` once the guest answered.
    Callee {
        connected: bool,
    },
}

#[derive(Debug)]
struct Leg {
    side: Side,
    peer: Option<LegKey>,
    /// Bytes from the guest not yet forwarded (at most [`BUF_ALLOC`]).
    rx: VecDeque<u8>,
    /// Bytes of the guest's consumed so far (wrapping).
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the guest.
    fwd_reported: u32,
    credit_update_due: bool,
    /// The guest's receive buffer and how much of it it consumed.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Bytes sent to the guest so far (wrapping).
    tx_cnt: u32,
    credit_request_sent: bool,
    /// The router's own bytes for the guest (reply or from line), sent
    /// before any forwarded byte.
    line_out: VecDeque<u8>,
    request_due: bool,
    response_due: bool,
    /// No more bytes are taken from the guest.
    in_done: bool,
    /// No more bytes go to the guest (after what is queued).
    out_done: bool,
    /// Shutdown flags owed to the guest, and those sent.
    shut_owed: u32,
    shut_sent: u32,
    rst_due: bool,
    queued: bool,
    /// For a callee leg that has not answered: when a tick first saw it
    /// waiting ([`Router::expire`]).
    waiting_since: Option<Instant>,
    /// Its guest closed cleanly and forgot it: only the bytes it sent
    /// before, still in `rx`, remain, for the peer.
    gone: bool,
}

impl Leg {
    fn new(side: Side, header: Option<&Header>) -> Self {
        Self {
            side,
            peer: None,
            rx: VecDeque::new(),
            fwd_cnt: 0,
            fwd_reported: 0,
            credit_update_due: false,
            peer_buf_alloc: header.map_or(0, |h| h.buf_alloc),
            peer_fwd_cnt: header.map_or(0, |h| h.fwd_cnt),
            tx_cnt: 0,
            credit_request_sent: false,
            line_out: VecDeque::new(),
            request_due: false,
            response_due: false,
            in_done: false,
            out_done: false,
            shut_owed: 0,
            shut_sent: 0,
            rst_due: false,
            queued: false,
            waiting_since: None,
            gone: false,
        }
    }

    /// Bytes the guest can still take.
    fn credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn connected(&self) -> bool {
        !matches!(self.side, Side::Callee { connected: false })
    }

    /// Counts `n` bytes of the guest's as consumed.
    fn consume(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n);
        if self.fwd_cnt.wrapping_sub(self.fwd_reported) >= BUF_ALLOC / 2 {
            self.credit_update_due = true;
        }
    }
}

#[derive(Debug)]
struct Compartment {
    name: String,
    legs: usize,
    asks: usize,
    ready: VecDeque<LegKey>,
    loose: VecDeque<Header>,
    logged: u32,
    transport_reset: bool,
    /// Audit lines of this caller's decisions in the current window, when
    /// it began, and the lines left out.
    audited: u32,
    audit_window: Option<Instant>,
    audit_skipped: u64,
}

#[derive(Debug)]
struct PendingAsk {
    caller: LegKey,
    to: String,
    target: Option<String>,
    call: ServiceCall,
    since: Instant,
}

/// The router: see the module documentation.
#[derive(Debug, Default)]
pub struct Router {
    policy: Option<Policy>,
    compartments: HashMap<u64, Compartment>,
    by_name: HashMap<String, u64>,
    legs: HashMap<LegKey, Leg>,
    asks: BTreeMap<u64, PendingAsk>,
    next_ask: u64,
    next_router_port: u32,
    events: VecDeque<Event>,
    events_dropped: u64,
    wakeups: HashSet<u64>,
}

/// Whether `name` is a compartment name (POLICY.md: 1 to 63 of `a-z`,
/// `0-9`, `-`, not starting or ending with `-`).
pub fn is_compartment_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// A parsed call line.
#[derive(Debug)]
struct CallLine {
    to: String,
    call: ServiceCall,
}

/// Parses `CALL <to> <service>[+<argument>]` (without the newline).
fn parse_call_line(line: &[u8]) -> Option<CallLine> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let (Some("CALL"), Some(to), Some(service), None) = (words.next(), words.next(), words.next(), words.next()) else {
        return None;
    };
    if !is_compartment_name(to) {
        return None;
    }
    let call = ServiceCall::parse(service).ok()?;
    Some(CallLine { to: to.to_owned(), call })
}

fn router_header(key: LegKey, operation: u16) -> Header {
    Header {
        src_cid: ROUTER_CID,
        dst_cid: key.cid,
        src_port: key.router_port,
        dst_port: key.guest_port,
        len: 0,
        kind: TYPE_STREAM,
        op: operation,
        flags: 0,
        buf_alloc: BUF_ALLOC,
        fwd_cnt: 0,
    }
}

impl Router {
    /// A router with no policy (every call is denied) and no compartment.
    pub fn new() -> Self {
        Self { next_ask: 1, next_router_port: FIRST_LOCAL_PORT, ..Self::default() }
    }

    /// Uses `policy` for the calls decided from now on.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = Some(policy);
    }

    /// Whether a policy was loaded.
    pub fn has_policy(&self) -> bool {
        self.policy.is_some()
    }

    /// The policy in use.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Serves compartment `name` with CID `cid`. A compartment of that name
    /// already attached is detached first (its connections reset). With
    /// `fresh == false` the guest is owed a transport reset
    /// ([`Router::take_transport_reset`]).
    pub fn attach(&mut self, name: &str, cid: u64, fresh: bool) -> Result<(), AttachError> {
        if !is_compartment_name(name) || name == HOST_NAME {
            return Err(AttachError::BadName(name.to_owned()));
        }
        if cid < FIRST_GUEST_CID || cid > u64::from(u32::MAX) {
            return Err(AttachError::ReservedCid(cid));
        }
        if let Some(owner) = self.compartments.get(&cid).filter(|c| c.name != name) {
            return Err(AttachError::CidInUse { cid, owner: owner.name.clone() });
        }
        if self.by_name.contains_key(name) {
            let _ = self.detach(name);
        }
        self.compartments.insert(
            cid,
            Compartment {
                name: name.to_owned(),
                legs: 0,
                asks: 0,
                ready: VecDeque::new(),
                loose: VecDeque::new(),
                logged: 0,
                transport_reset: !fresh,
                audited: 0,
                audit_window: None,
                audit_skipped: 0,
            },
        );
        self.by_name.insert(name.to_owned(), cid);
        if !fresh {
            self.wakeups.insert(cid);
        }
        Ok(())
    }

    /// Makes the host's services reachable: calls the policy sends to
    /// `host` go to [`HOST_CID`], whose packets the host side exchanges.
    pub fn attach_host(&mut self) {
        if self.compartments.contains_key(&HOST_CID) {
            return;
        }
        self.compartments.insert(
            HOST_CID,
            Compartment {
                name: HOST_NAME.to_owned(),
                legs: 0,
                asks: 0,
                ready: VecDeque::new(),
                loose: VecDeque::new(),
                logged: 0,
                transport_reset: false,
                audited: 0,
                audit_window: None,
                audit_skipped: 0,
            },
        );
        self.by_name.insert(HOST_NAME.to_owned(), HOST_CID);
    }

    /// Stops serving `name`: its connections are forgotten and their peers
    /// get `RST`; its pending asks are dropped. Returns its CID.
    pub fn detach(&mut self, name: &str) -> Result<u64, UnknownError> {
        let cid = self.by_name.remove(name).ok_or_else(|| UnknownError::Compartment(name.to_owned()))?;
        let keys: Vec<LegKey> = self.legs.keys().filter(|key| key.cid == cid).copied().collect();
        for key in keys {
            self.drop_leg(key);
        }
        self.compartments.remove(&cid);
        self.wakeups.remove(&cid);
        Ok(cid)
    }

    /// The CID of compartment `name`, if attached.
    pub fn cid_of(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).copied()
    }

    /// Whether the guest of `cid` is owed a transport reset; clears it.
    pub fn take_transport_reset(&mut self, cid: u64) -> bool {
        self.compartments.get_mut(&cid).is_some_and(|c| std::mem::take(&mut c.transport_reset))
    }

    /// Whether the guest of `cid` is owed a transport reset.
    pub fn transport_reset_pending(&self, cid: u64) -> bool {
        self.compartments.get(&cid).is_some_and(|c| c.transport_reset)
    }

    /// The compartments that got something to receive since the last
    /// call.
    pub fn take_wakeups(&mut self) -> Vec<u64> {
        self.wakeups.drain().collect()
    }

    /// Asks and audit lines for the control side, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Whether there are events for the control side.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Open connections of `cid` (for tests and diagnostics).
    pub fn connections(&self, cid: u64) -> usize {
        self.compartments.get(&cid).map_or(0, |c| c.legs)
    }

    /// Notes a bad packet of the guest of `cid`; logs the first of each kind.
    pub fn bad_packet(&mut self, cid: u64, kind: BadPacket) {
        if let Some(compartment) = self.compartments.get_mut(&cid)
            && compartment.logged & kind.bit() == 0
        {
            compartment.logged |= kind.bit();
            log::warn!(
                "compartment {:?} (CID {cid}) sent {kind}; dropped (further ones are not logged)",
                compartment.name
            );
        }
    }

    fn emit(&mut self, event: Event) {
        // Asks are never dropped: they are few (MAX_PENDING_ASKS per
        // compartment), and a lost one would leave its caller waiting.
        if self.events.len() >= MAX_EVENTS && !matches!(event, Event::Ask { .. }) {
            self.events_dropped += 1;
            if self.events_dropped.is_power_of_two() {
                log::error!("the control side is not reading: {} asks or audit lines dropped", self.events_dropped);
            }
            return;
        }
        self.events.push_back(event);
    }

    fn audit(&mut self, line: String) {
        self.emit(Event::Audit(line));
    }

    /// Audits a decision on a call from `cid`, within its rate.
    fn audit_decision(&mut self, cid: u64, line: String, now: Instant) {
        self.close_audit_window(cid, now);
        let Some(compartment) = self.compartments.get_mut(&cid) else { return };
        compartment.audit_window.get_or_insert(now);
        if compartment.audited < AUDIT_BURST {
            compartment.audited += 1;
            self.audit(line);
        } else {
            compartment.audit_skipped += 1;
        }
    }

    /// Ends `cid`'s audit window once it is over, reporting what it left
    /// out.
    fn close_audit_window(&mut self, cid: u64, now: Instant) {
        let Some(compartment) = self.compartments.get_mut(&cid) else { return };
        let over = compartment.audit_window.is_some_and(|at| now.saturating_duration_since(at) >= AUDIT_WINDOW);
        if !over {
            return;
        }
        let skipped = std::mem::take(&mut compartment.audit_skipped);
        compartment.audited = 0;
        compartment.audit_window = None;
        if skipped > 0 {
            let name = compartment.name.clone();
            self.audit(format!("limit {name}: {skipped} more decisions on its calls not logged"));
        }
    }

    fn mark(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if leg.queued {
            return;
        }
        let Some(compartment) = self.compartments.get_mut(&key.cid) else { return };
        leg.queued = true;
        compartment.ready.push_back(key);
        self.wakeups.insert(key.cid);
    }

    fn answer_rst(&mut self, cid: u64, header: &Header) {
        let Some(compartment) = self.compartments.get_mut(&cid) else { return };
        if compartment.loose.len() >= MAX_LOOSE {
            return;
        }
        let key = LegKey { cid, guest_port: header.src_port, router_port: header.dst_port };
        compartment.loose.push_back(router_header(key, op::RST));
        self.wakeups.insert(cid);
    }

    fn add_leg(&mut self, key: LegKey, leg: Leg) -> bool {
        let Some(compartment) = self.compartments.get_mut(&key.cid) else { return false };
        if compartment.legs >= MAX_CONNECTIONS || self.legs.contains_key(&key) {
            return false;
        }
        compartment.legs += 1;
        self.legs.insert(key, leg);
        true
    }

    /// Forgets `key` without telling its guest; its peer is reset.
    fn drop_leg(&mut self, key: LegKey) {
        let Some(leg) = self.forget(key) else { return };
        if let Some(peer) = leg.peer {
            self.peer_gone(peer, leg.side);
        }
    }

    /// Forgets the gone leg `key` once its bytes reached `peer`.
    fn forget_gone(&mut self, key: LegKey, peer: LegKey) {
        self.forget(key);
        if let Some(peer_leg) = self.legs.get_mut(&peer) {
            peer_leg.peer = None;
        }
    }

    /// Removes `key` from the tables; returns it.
    fn forget(&mut self, key: LegKey) -> Option<Leg> {
        let leg = self.legs.remove(&key)?;
        if let Some(compartment) = self.compartments.get_mut(&key.cid) {
            compartment.legs = compartment.legs.saturating_sub(1);
        }
        if let Side::Caller(Phase::Asking(id)) = leg.side {
            self.remove_ask(id);
        }
        Some(leg)
    }

    fn remove_ask(&mut self, id: u64) -> Option<PendingAsk> {
        let ask = self.asks.remove(&id)?;
        if let Some(compartment) = self.compartments.get_mut(&ask.caller.cid) {
            compartment.asks = compartment.asks.saturating_sub(1);
        }
        Some(ask)
    }

    /// The other leg of `key`'s call went away abruptly (`gone_side` was its
    /// side).
    fn peer_gone(&mut self, key: LegKey, gone_side: Side) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.peer = None;
        if let (Side::Caller(Phase::Connecting), Side::Callee { connected: false }) = (leg.side, gone_side) {
            self.fail_call(key, reply::UNREACHABLE, "the callee went away");
        } else {
            self.reset(key);
        }
    }

    /// Resets `key`: the guest gets `RST`, nothing else.
    fn reset(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.rst_due = true;
        leg.rx.clear();
        leg.line_out.clear();
        leg.in_done = true;
        leg.out_done = true;
        let peer = leg.peer.take();
        self.mark(key);
        if let Some(peer) = peer {
            let side = self.legs.get(&key).map(|leg| leg.side);
            if let Some(side) = side {
                self.peer_gone(peer, side);
            }
        }
    }

    /// Ends a call that did not go through: `ERR code message`, then
    /// `SHUTDOWN` both ways, then the caller's leg is forgotten.
    fn fail_call(&mut self, key: LegKey, code: &str, message: &str) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if let Side::Caller(Phase::Asking(id)) = leg.side {
            leg.side = Side::Caller(Phase::Finished);
            self.remove_ask(id);
        }
        let Some(leg) = self.legs.get_mut(&key) else { return };
        leg.side = Side::Caller(Phase::Finished);
        leg.line_out = format!("ERR {code} {message}\n").into_bytes().into();
        let dropped = leg.rx.len();
        leg.rx.clear();
        leg.consume(dropped);
        leg.in_done = true;
        leg.out_done = true;
        leg.shut_owed |= shutdown::SEND | shutdown::RCV;
        leg.peer = None;
        self.mark(key);
    }

    /// Takes one packet the guest of `cid` sent. Never fails: whatever is
    /// wrong with it is the guest's problem, dropped and logged once.
    pub fn receive(&mut self, cid: u64, header: &Header, payload: &[u8], now: Instant) {
        if !self.compartments.contains_key(&cid) {
            return;
        }
        if header.src_cid != cid {
            return self.bad_packet(cid, BadPacket::SourceCid);
        }
        if header.dst_cid != ROUTER_CID {
            return self.bad_packet(cid, BadPacket::DestinationCid);
        }
        let key = LegKey { cid, guest_port: header.src_port, router_port: header.dst_port };
        let known = self.legs.contains_key(&key);
        if header.kind != TYPE_STREAM {
            self.bad_packet(cid, BadPacket::Type);
            return self.abort(key, header);
        }
        if !(op::REQUEST..=op::CREDIT_REQUEST).contains(&{ header.op }) {
            self.bad_packet(cid, BadPacket::Operation);
            return self.abort(key, header);
        }
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        if len != payload.len() || len > MAX_PAYLOAD || (header.op != op::RW && len != 0) {
            self.bad_packet(cid, BadPacket::Length);
            return self.abort(key, header);
        }
        if header.op == op::REQUEST {
            return self.on_request(key, header);
        }
        if !known {
            if header.op != op::RST {
                self.bad_packet(cid, BadPacket::NoConnection);
                self.answer_rst(cid, header);
            }
            return;
        }
        // Every header carries the guest's credit.
        if let Some(leg) = self.legs.get_mut(&key) {
            let more = header.fwd_cnt != leg.peer_fwd_cnt || header.buf_alloc != leg.peer_buf_alloc;
            leg.peer_buf_alloc = header.buf_alloc;
            leg.peer_fwd_cnt = header.fwd_cnt;
            if more {
                leg.credit_request_sent = false;
                self.mark(key);
            }
        }
        match header.op {
            op::RESPONSE => self.on_response(key),
            op::RST => self.on_rst(key),
            op::SHUTDOWN => self.on_shutdown(key, header.flags),
            op::RW => self.on_data(key, payload, now),
            op::CREDIT_REQUEST => {
                if let Some(leg) = self.legs.get_mut(&key) {
                    leg.credit_update_due = true;
                }
                self.mark(key);
            }
            // CREDIT_UPDATE: taken above.
            _ => {}
        }
    }

    /// A bad packet: reset its connection if it has one.
    fn abort(&mut self, key: LegKey, header: &Header) {
        if self.legs.contains_key(&key) {
            self.reset(key);
        } else if header.op != op::RST {
            self.answer_rst(key.cid, header);
        }
    }

    fn on_request(&mut self, key: LegKey, header: &Header) {
        if self.legs.contains_key(&key) {
            self.bad_packet(key.cid, BadPacket::Protocol);
            return self.reset(key);
        }
        if key.router_port != CALL_PORT {
            // Nobody listens there.
            return self.answer_rst(key.cid, header);
        }
        let mut leg = Leg::new(Side::Caller(Phase::Line), Some(header));
        leg.response_due = true;
        if self.add_leg(key, leg) {
            self.mark(key);
        } else {
            self.answer_rst(key.cid, header);
        }
    }

    fn on_response(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        let Side::Callee { connected: false } = leg.side else {
            self.bad_packet(key.cid, BadPacket::Protocol);
            return self.reset(key);
        };
        leg.side = Side::Callee { connected: true };
        let caller = leg.peer;
        self.mark(key);
        if let Some(caller) = caller
            && let Some(caller_leg) = self.legs.get_mut(&caller)
        {
            caller_leg.side = Side::Caller(Phase::Joined);
            caller_leg.line_out.extend(b"OK\n");
            self.mark(caller);
            // Bytes the caller sent after its call line go on now.
            self.mark(key);
        }
    }

    fn on_rst(&mut self, key: LegKey) {
        let refused = self.legs.get(&key).is_some_and(|leg| leg.side == Side::Callee { connected: false });
        if !refused {
            // After its SHUTDOWN(SEND), a guest's RST is the end of a
            // clean close (virtio 5.10.6.6): it forgot the connection, but
            // the bytes it sent before still go to its peer, then the end.
            if let Some(leg) = self.legs.get_mut(&key)
                && leg.in_done
                && let Some(peer) = leg.peer
            {
                leg.gone = true;
                leg.out_done = true;
                leg.line_out.clear();
                leg.credit_update_due = false;
                if leg.rx.is_empty() {
                    self.forget_gone(key, peer);
                }
                self.mark(peer);
                return;
            }
            return self.drop_leg(key);
        }
        let Some(leg) = self.forget(key) else { return };
        if let Some(caller) = leg.peer {
            let callee = self.compartments.get(&key.cid).map(|c| c.name.clone()).unwrap_or_default();
            self.fail_call(caller, reply::NOT_LISTENING, &format!("{callee} does not listen for the service"));
        }
    }

    fn on_shutdown(&mut self, key: LegKey, flags: u32) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        let peer = leg.peer;
        if flags & shutdown::SEND != 0 {
            leg.in_done = true;
        }
        if flags & shutdown::RCV != 0 {
            leg.out_done = true;
            leg.line_out.clear();
        }
        let line_phase = leg.side == Side::Caller(Phase::Line);
        if line_phase && flags & shutdown::SEND != 0 {
            // The call line can no longer be completed.
            return self.fail_call(key, reply::BAD_REQUEST, "no call line");
        }
        if let Some(peer) = peer
            && let Some(peer_leg) = self.legs.get_mut(&peer)
        {
            if flags & shutdown::SEND != 0 {
                peer_leg.out_done = true;
                peer_leg.shut_owed |= shutdown::SEND;
            }
            if flags & shutdown::RCV != 0 {
                // Bytes for this guest are dropped; the peer sends no more.
                let dropped = peer_leg.rx.len();
                peer_leg.rx.clear();
                peer_leg.consume(dropped);
                peer_leg.in_done = true;
                peer_leg.shut_owed |= shutdown::RCV;
            }
            self.mark(peer);
        }
        self.mark(key);
    }

    fn on_data(&mut self, key: LegKey, payload: &[u8], now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        if payload.is_empty() {
            return;
        }
        if !leg.connected() {
            self.bad_packet(key.cid, BadPacket::Protocol);
            return self.reset(key);
        }
        if leg.in_done {
            // Sent before the guest saw our shutdown: dropped, but counted.
            leg.consume(payload.len());
            return self.mark(key);
        }
        let room = usize::try_from(BUF_ALLOC).unwrap_or(usize::MAX).saturating_sub(leg.rx.len());
        if payload.len() > room {
            self.bad_packet(key.cid, BadPacket::Credit);
            return self.reset(key);
        }
        leg.rx.extend(payload);
        match (leg.side, leg.peer) {
            (Side::Caller(Phase::Line), _) => self.try_call_line(key, now),
            (_, Some(peer)) => self.mark(peer),
            _ => {}
        }
    }

    fn try_call_line(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else { return };
        let newline = leg.rx.iter().take(MAX_LINE).position(|&b| b == b'\n');
        let Some(newline) = newline else {
            if leg.rx.len() >= MAX_LINE {
                self.fail_call(key, reply::BAD_REQUEST, "call line too long");
            }
            return;
        };
        let line: Vec<u8> = leg.rx.drain(..=newline).collect();
        leg.consume(line.len());
        self.mark(key);
        let Some(call) = line.strip_suffix(b"\n").and_then(parse_call_line) else {
            return self.fail_call(key, reply::BAD_REQUEST, "expected CALL <to> <service>[+<argument>]");
        };
        self.decide(key, call, now);
    }

    fn decide(&mut self, key: LegKey, line: CallLine, now: Instant) {
        let Some(from) = self.compartments.get(&key.cid).map(|c| c.name.clone()) else { return };
        let what = format!("{from} -> {} {}", line.to, line.call);
        let Some(policy) = &self.policy else {
            self.audit_decision(key.cid, format!("deny {what}: no policy"), now);
            return self.fail_call(key, reply::DENIED, "no policy");
        };
        let decision = policy.decide(&from, &line.to, &line.call);
        let how = match decision.rule {
            Some(index) => match policy.rule_location(index) {
                Some(at) => format!("rule #{} at {}:{}", index + 1, at.file, at.line),
                None => format!("rule #{}", index + 1),
            },
            None => "no rule".to_owned(),
        };
        let target = decision.target.map(str::to_owned);
        let redirect = target.as_ref().map(|t| format!(", redirected to {t}")).unwrap_or_default();
        match decision.action {
            Action::Deny => {
                self.audit_decision(key.cid, format!("deny {what}: {how}"), now);
                self.fail_call(key, reply::DENIED, "by policy");
            }
            Action::Allow => {
                self.audit_decision(key.cid, format!("allow {what}: {how}{redirect}"), now);
                let callee = target.unwrap_or_else(|| line.to.clone());
                self.connect(key, &from, &callee, &line.call);
            }
            Action::Ask => {
                let Some(compartment) = self.compartments.get_mut(&key.cid) else { return };
                if compartment.asks >= MAX_PENDING_ASKS {
                    return self.fail_call(key, reply::BUSY, "too many calls waiting for the user");
                }
                compartment.asks += 1;
                // The decision to ask is audited here (always: asks are
                // few); wardd audits the user's answer.
                self.audit(format!("ask {what}: {how}{redirect}"));
                let id = self.next_ask;
                self.next_ask += 1;
                if let Some(leg) = self.legs.get_mut(&key) {
                    leg.side = Side::Caller(Phase::Asking(id));
                }
                self.emit(Event::Ask { id, from, to: line.to.clone(), service: line.call.to_string() });
                self.asks.insert(id, PendingAsk { caller: key, to: line.to, target, call: line.call, since: now });
            }
        }
    }

    fn connect(&mut self, caller: LegKey, from: &str, callee: &str, call: &ServiceCall) {
        let Some(callee_cid) = self.by_name.get(callee).copied() else {
            return self.fail_call(caller, reply::UNREACHABLE, &format!("{callee} is not running"));
        };
        if self.compartments.get(&callee_cid).is_none_or(|c| c.legs >= MAX_CONNECTIONS) {
            return self.fail_call(caller, reply::BUSY, &format!("{callee} has too many connections"));
        }
        let open = self.legs.iter().filter(|(k, l)| k.cid == callee_cid && l.peer.is_some_and(|p| p.cid == caller.cid));
        if open.count() >= MAX_CALLS_PER_PAIR {
            return self.fail_call(caller, reply::BUSY, &format!("too many calls open from {from} to {callee}"));
        }
        let guest_port = service_port(call.name().as_bytes());
        let Some(router_port) = self.free_router_port(callee_cid, guest_port) else {
            return self.fail_call(caller, reply::BUSY, "no free port");
        };
        let key = LegKey { cid: callee_cid, guest_port, router_port };
        let mut leg = Leg::new(Side::Callee { connected: false }, None);
        leg.request_due = true;
        leg.peer = Some(caller);
        leg.line_out = format!("FROM {from} {call}\n").into_bytes().into();
        if !self.add_leg(key, leg) {
            return self.fail_call(caller, reply::BUSY, &format!("{callee} has too many connections"));
        }
        if let Some(caller_leg) = self.legs.get_mut(&caller) {
            caller_leg.side = Side::Caller(Phase::Connecting);
            caller_leg.peer = Some(key);
        }
        if callee_cid == HOST_CID {
            // The host side needs to know what to connect its end to.
            self.emit(Event::HostCall {
                service_port: guest_port,
                router_port,
                from: from.to_owned(),
                service: call.to_string(),
            });
        }
        self.mark(key);
    }

    fn free_router_port(&mut self, cid: u64, guest_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_router_port;
            self.next_router_port = if port >= LAST_ROUTER_PORT { FIRST_LOCAL_PORT } else { port + 1 };
            if !self.legs.contains_key(&LegKey { cid, guest_port, router_port: port }) {
                return Some(port);
            }
        }
        None
    }

    /// The user's answer to ask `id`: the call goes on or is denied.
    pub fn answer(&mut self, id: u64, answer: Answer) -> Result<(), UnknownError> {
        let ask = self.remove_ask(id).ok_or(UnknownError::Ask(id))?;
        let Some(from) = self.compartments.get(&ask.caller.cid).map(|c| c.name.clone()) else {
            return Ok(());
        };
        let what = format!("{from} -> {} {}", ask.to, ask.call);
        let waiting = match self.legs.get_mut(&ask.caller) {
            Some(leg) if leg.side == Side::Caller(Phase::Asking(id)) && !leg.rst_due => {
                leg.side = Side::Caller(Phase::Line);
                true
            }
            _ => false,
        };
        if !waiting {
            // The caller went away meanwhile: nothing to continue.
            return Ok(());
        }
        // wardd audits the answers it sends; the router only those it
        // makes itself.
        match answer {
            Answer::Allowed => {
                let callee = ask.target.unwrap_or(ask.to);
                self.connect(ask.caller, &from, &callee, &ask.call);
            }
            Answer::Denied => self.fail_call(ask.caller, reply::DENIED, "by the user"),
            Answer::NoAnswer(seconds) => {
                self.audit(format!("deny {what}: no answer in {seconds} s"));
                self.fail_call(ask.caller, reply::DENIED, "no answer");
            }
        }
        Ok(())
    }

    /// Denies the asks older than [`ASK_EXPIRY`].
    /// The periodic tick (about once a second): expires asks nobody
    /// answered and calls whose callee never answered the router's
    /// `REQUEST` within [`ANSWER_TIMEOUT`] (a hostile or hung callee cannot
    /// hold its callers' connections for good).
    pub fn expire(&mut self, now: Instant) {
        self.expire_asks(now);
        let cids: Vec<u64> = self.compartments.keys().copied().collect();
        for cid in cids {
            self.close_audit_window(cid, now);
        }
        let mut silent = Vec::new();
        for (key, leg) in &mut self.legs {
            if leg.connected() {
                continue;
            }
            let since = *leg.waiting_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= ANSWER_TIMEOUT {
                silent.push(*key);
            }
        }
        for key in silent {
            let Some(leg) = self.forget(key) else { continue };
            // Tell the callee we gave up, should it answer late.
            if let Some(compartment) = self.compartments.get_mut(&key.cid)
                && compartment.loose.len() < MAX_LOOSE
            {
                compartment.loose.push_back(router_header(key, op::RST));
                self.wakeups.insert(key.cid);
            }
            if let Some(caller) = leg.peer {
                let callee = self.compartments.get(&key.cid).map(|c| c.name.clone()).unwrap_or_default();
                self.fail_call(caller, reply::UNREACHABLE, &format!("{callee} did not answer"));
            }
        }
    }

    /// Expires asks nobody answered in [`ASK_EXPIRY`].
    pub fn expire_asks(&mut self, now: Instant) {
        let old: Vec<u64> = self
            .asks
            .iter()
            .filter(|(_, ask)| now.saturating_duration_since(ask.since) >= ASK_EXPIRY)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            let _ = self.answer(id, Answer::NoAnswer(ASK_EXPIRY.as_secs()));
        }
    }

    /// The next packet for the guest of `cid`, whose receive buffer takes
    /// `max_payload` bytes after the header; `None` when there is nothing
    /// to send (or nothing that fits the guest's credit).
    pub fn next_packet(&mut self, cid: u64, max_payload: usize) -> Option<Packet> {
        let max_payload = max_payload.min(MAX_PAYLOAD);
        loop {
            let compartment = self.compartments.get_mut(&cid)?;
            if let Some(header) = compartment.loose.pop_front() {
                return Some(Packet { header, payload: Vec::new() });
            }
            let key = compartment.ready.pop_front()?;
            let Some(leg) = self.legs.get_mut(&key) else { continue };
            leg.queued = false;
            if let Some(packet) = self.produce(key, max_payload) {
                // It may have more: back of the line.
                self.mark(key);
                return Some(packet);
            }
        }
    }

    /// The next packet of leg `key`, if it has one.
    fn produce(&mut self, key: LegKey, max_payload: usize) -> Option<Packet> {
        let leg = self.legs.get(&key)?;
        if leg.gone {
            // Its guest forgot it: nothing goes there any more.
            if leg.rst_due {
                self.forget(key);
            }
            return None;
        }
        if leg.rst_due {
            self.forget(key);
            return Some(Packet { header: router_header(key, op::RST), payload: Vec::new() });
        }
        if leg.request_due || leg.response_due {
            let leg = self.legs.get_mut(&key)?;
            let operation = if leg.request_due { op::REQUEST } else { op::RESPONSE };
            leg.request_due = false;
            leg.response_due = false;
            return Some(self.stamp(key, router_header(key, operation), Vec::new()));
        }
        if !leg.connected() {
            return None;
        }
        let credit = usize::try_from(leg.credit()).unwrap_or(usize::MAX).min(max_payload);
        let peer_bytes = leg.peer.and_then(|peer| self.legs.get(&peer)).map_or(0, |peer| peer.rx.len());
        let forwarding = matches!(leg.side, Side::Callee { .. } | Side::Caller(Phase::Joined));
        let waiting = !leg.line_out.is_empty() || (forwarding && peer_bytes > 0);
        if waiting {
            if credit > 0 {
                let leg = self.legs.get_mut(&key)?;
                let payload: Vec<u8> = if leg.line_out.is_empty() {
                    let peer = leg.peer?;
                    let peer_leg = self.legs.get_mut(&peer)?;
                    let n = credit.min(peer_leg.rx.len());
                    let bytes: Vec<u8> = peer_leg.rx.drain(..n).collect();
                    peer_leg.consume(n);
                    if peer_leg.gone {
                        if peer_leg.rx.is_empty() {
                            self.forget_gone(peer, key);
                        }
                    } else if peer_leg.credit_update_due {
                        self.mark(peer);
                    }
                    bytes
                } else {
                    let n = credit.min(leg.line_out.len());
                    leg.line_out.drain(..n).collect()
                };
                let mut header = router_header(key, op::RW);
                header.len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
                let leg = self.legs.get_mut(&key)?;
                leg.tx_cnt = leg.tx_cnt.wrapping_add(header.len);
                return Some(self.stamp(key, header, payload));
            }
            let leg = self.legs.get_mut(&key)?;
            if !leg.credit_request_sent {
                leg.credit_request_sent = true;
                return Some(self.stamp(key, router_header(key, op::CREDIT_REQUEST), Vec::new()));
            }
        }
        let leg = self.legs.get(&key)?;
        let drained = leg.line_out.is_empty() && (peer_bytes == 0 || !forwarding);
        let mut flags = leg.shut_owed & !leg.shut_sent;
        if !drained {
            flags &= !shutdown::SEND;
        }
        if flags != 0 {
            let leg = self.legs.get_mut(&key)?;
            leg.shut_sent |= flags;
            let mut header = router_header(key, op::SHUTDOWN);
            header.flags = leg.shut_sent;
            let packet = self.stamp(key, header, Vec::new());
            self.finish_if_done(key);
            return Some(packet);
        }
        if leg.credit_update_due {
            return Some(self.stamp(key, router_header(key, op::CREDIT_UPDATE), Vec::new()));
        }
        self.finish_if_done(key);
        None
    }

    /// Fills in the leg's credit and notes what the guest was told.
    fn stamp(&mut self, key: LegKey, mut header: Header, payload: Vec<u8>) -> Packet {
        if let Some(leg) = self.legs.get_mut(&key) {
            header.fwd_cnt = leg.fwd_cnt;
            leg.fwd_reported = leg.fwd_cnt;
            leg.credit_update_due = false;
        }
        debug_assert!(payload.len() <= MAX_PAYLOAD && HEADER_SIZE == 44);
        Packet { header, payload }
    }

    /// A leg closed both ways with nothing left to send is forgotten: after
    /// our `SHUTDOWN` of both directions quietly, otherwise with an `RST`.
    fn finish_if_done(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get(&key) else { return };
        let peer_bytes = leg.peer.and_then(|peer| self.legs.get(&peer)).map_or(0, |peer| peer.rx.len());
        // Nothing left for the guest, and nothing of the guest's left for
        // its peer.
        let idle = leg.line_out.is_empty() && peer_bytes == 0 && leg.rx.is_empty();
        if !(leg.in_done && leg.out_done && idle && leg.shut_owed & !leg.shut_sent == 0) {
            return;
        }
        if leg.shut_sent == shutdown::SEND | shutdown::RCV {
            let peer = leg.peer;
            self.forget(key);
            if let Some(peer) = peer
                && let Some(peer_leg) = self.legs.get_mut(&peer)
            {
                peer_leg.peer = None;
                self.mark(peer);
            }
        } else if let Some(leg) = self.legs.get_mut(&key) {
            leg.rst_due = true;
            self.mark(key);
        }
    }
}

#[cfg(test)]
mod tests;
