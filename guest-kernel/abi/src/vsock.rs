//! Inter-compartment IPC: the virtio-vsock packet format (virtio 1.x,
//! section 5.10) and Ward's service addressing on top of it.
//!
//! A compartment reaches another only through the `ward-ipc` router, the
//! vhost-user backend of its vsock device, at [`ROUTER_CID`]. A call is a
//! stream connection to the router's [`CALL_PORT`] that starts with one
//! request line, `CALL <to> <service[+arg]>`; the router answers with one reply
//! line (`OK` or `ERR <code> <message>`) and, if allowed, joins the stream
//! to a connection it opens to the callee's [`service_port`], on which the
//! callee first reads one `FROM <caller> <service[+arg]>` line. See
//! `docs/IPC.md` for the whole protocol.
//!
//! Everything in a packet is untrusted on both sides: the router checks the
//! header of every packet a guest sends, and a guest checks those it gets.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Device feature: stream sockets (`VIRTIO_VSOCK_F_STREAM`).
pub const F_STREAM: u64 = 1 << 0;

/// The host's CID: the router answers for it.
pub const ROUTER_CID: u64 = 2;
/// Lowest CID a compartment can have.
pub const FIRST_GUEST_CID: u64 = 3;
/// The router's port that takes calls.
pub const CALL_PORT: u32 = 1;
/// Ports at or above this are service ports ([`service_port`]); a guest's
/// own outgoing connections use ports below it (from [`FIRST_LOCAL_PORT`]).
pub const FIRST_SERVICE_PORT: u32 = 0x4000_0000;
/// First port a guest gives its outgoing connections.
pub const FIRST_LOCAL_PORT: u32 = 1024;

/// Socket type: stream.
pub const TYPE_STREAM: u16 = 1;

/// Packet operations.
pub mod op {
    /// Open a connection.
    pub const REQUEST: u16 = 1;
    /// Accept a connection.
    pub const RESPONSE: u16 = 2;
    /// Refuse or abort a connection.
    pub const RST: u16 = 3;
    /// No more data in one or both directions ([`super::shutdown`]).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// The sender's receive credit changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// [`op::SHUTDOWN`] flags.
pub mod shutdown {
    /// The sender will receive no more data.
    pub const RCV: u32 = 1;
    /// The sender will send no more data.
    pub const SEND: u32 = 2;
}

/// The event queue's only event: the device lost every connection (the
/// router restarted); the driver must drop them all.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// The header in front of every packet (little-endian, packed: 44 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct Header {
    /// Sender's CID.
    pub src_cid: u64,
    /// Receiver's CID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Payload length in bytes (data follows the header for [`op::RW`]).
    pub len: u32,
    /// [`TYPE_STREAM`].
    pub kind: u16,
    /// An [`op`].
    pub op: u16,
    /// [`shutdown`] flags for [`op::SHUTDOWN`].
    pub flags: u32,
    /// Bytes of receive buffer the sender has for this connection.
    pub buf_alloc: u32,
    /// Bytes of this connection the sender has consumed so far (wrapping).
    pub fwd_cnt: u32,
}

/// Size of [`Header`].
pub const HEADER_SIZE: usize = 44;

/// Largest payload of one packet either side sends: large packets
/// amortise the per-packet ring-0 work (a 128 KiB payload moved 33 % more
/// bytes a second than 64 KiB, `ward bench ipc`).
pub const MAX_PAYLOAD: usize = 128 * 1024;

/// Longest call line (`CALL <to> <service[+arg]>\n`), reply line or `FROM`
/// line, newline included.
pub const MAX_LINE: usize = 256;

/// The port a compartment listens on for `service`: [`FIRST_SERVICE_PORT`]
/// plus the 30-bit FNV-1a hash of the service name (without argument).
/// Both the router and the guest runtime compute it, so no registration is
/// needed; two services of one compartment that collide are refused by
/// the runtime's `listen`.
pub const fn service_port(service: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < service.len() {
        hash ^= service[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    FIRST_SERVICE_PORT | (hash & (FIRST_SERVICE_PORT - 1))
}

/// Reply codes after `ERR` on the router's reply line.
pub mod reply {
    /// The call line could not be parsed.
    pub const BAD_REQUEST: &str = "bad-request";
    /// The policy denies the call (or the user did, or nobody answered).
    pub const DENIED: &str = "denied";
    /// The callee is not running or has no IPC device.
    pub const UNREACHABLE: &str = "unreachable";
    /// The callee does not listen for the service.
    pub const NOT_LISTENING: &str = "not-listening";
    /// The caller has too many connections or pending calls.
    pub const BUSY: &str = "busy";
}

/// What [`crate::syscall::VSOCK_ATTACH`] tells the process that owns the
/// vsock device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VsockInfo {
    /// The compartment's CID.
    pub guest_cid: u64,
    /// Where the receive area is mapped in the process (read-only): buffer
    /// `i` starts at `area + i * buffer_size` with a [`Header`].
    pub area: u64,
    /// Receive buffers in the area.
    pub buffers: u32,
    /// Bytes per receive buffer (header included).
    pub buffer_size: u32,
}

/// [`crate::syscall::VSOCK_RECV`]'s result when the device reset every
/// connection (otherwise the buffer index is in the high 32 bits and the
/// length in the low ones). Positive as a signed result, like every
/// success: values with the top bit set are errors
/// ([`crate::syscall::decode`]).
pub const RECV_TRANSPORT_RESET: u64 = 0x7fff_ffff_0000_0000;
/// Set in a packet result of [`crate::syscall::VSOCK_RECV`] when more
/// filled buffers are waiting: without it, another receive right away
/// would find nothing (and cost a system call for it).
pub const RECV_MORE: u64 = 1 << 31;
/// [`crate::syscall::VSOCK_RECV`]'s `done` argument when no buffer is given back.
pub const NO_BUFFER: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_reset_is_a_success_result_and_no_buffer() {
        assert_eq!(crate::syscall::decode(RECV_TRANSPORT_RESET), Ok(RECV_TRANSPORT_RESET));
        // No buffer index reaches it (there are a handful of buffers).
        assert!(RECV_TRANSPORT_RESET >> 32 > u64::from(u16::MAX));
    }

    #[test]
    fn header_is_44_bytes() {
        assert_eq!(core::mem::size_of::<Header>(), HEADER_SIZE);
    }

    #[test]
    fn service_ports_are_above_local_ports_and_stable() {
        let port = service_port(b"echo");
        assert!(port >= FIRST_SERVICE_PORT);
        assert_eq!(port, service_port(b"echo"));
        assert_ne!(port, service_port(b"sign"));
        assert_eq!(service_port(b""), FIRST_SERVICE_PORT | (0x811c_9dc5 & (FIRST_SERVICE_PORT - 1)));
    }
}
