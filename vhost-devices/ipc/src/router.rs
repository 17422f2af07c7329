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
}

mod audit;
mod calls;
mod legs;
mod receive;
mod transmit;

#[cfg(test)]
mod tests;
