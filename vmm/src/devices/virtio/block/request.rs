//! Parsing a virtio-blk request out of a checked descriptor chain.
//!
//! A request is a 16-byte header the device reads (type, reserved,
//! sector), data buffers, and one status byte the device writes last. The
//! specification lets a driver cut this into descriptors however it likes,
//! so the parser works on bytes: the first 16 readable bytes are the
//! header, the last writable byte is the status. Everything the guest wrote
//! is checked here, once; the device then only moves data.

use vm_memory::{GuestAddress, GuestMemoryMmap};
use ward_abi::virtio::blk;

use crate::devices::virtio::queue::{ChainError, GuestChain, GuestRange, gather, split_ranges};

/// Bytes of a request header.
pub const HEADER_LEN: u64 = 16;
/// Bytes of the answer to a get-id request.
pub const ID_LEN: usize = 20;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the data buffers.
    Read,
    /// Write the data buffers to sectors.
    Write,
    /// Make earlier writes durable.
    Flush,
    /// Write the device id into the data buffer.
    GetId,
}

/// A request whose every buffer lies in guest memory and whose sectors lie
/// on the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What it asks for.
    pub kind: RequestKind,
    /// First sector (read and write).
    pub sector: u64,
    /// The data buffers, in order.
    pub data: Vec<GuestRange>,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

impl Request {
    /// Total bytes of the data buffers.
    pub fn data_len(&self) -> u64 {
        self.data.iter().map(|range| u64::from(range.len())).sum()
    }
}

/// Why a request cannot be carried out (the guest's doing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No device-writable byte for the status: the request cannot even be
    /// answered.
    #[error("request from descriptor {head} has no device-writable status byte")]
    NoStatus {
        /// The chain's head.
        head: u16,
    },
    /// A buffer lies outside guest memory.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Fewer than 16 readable bytes.
    #[error("request from descriptor {head} has a header of {len} bytes; it needs {HEADER_LEN}")]
    ShortHeader {
        /// The chain's head.
        head: u16,
        /// Readable bytes.
        len: u64,
    },
    /// A type this device does not know.
    #[error("request from descriptor {head} has unknown type {kind}")]
    Unsupported {
        /// The chain's head.
        head: u16,
        /// The type.
        kind: u32,
    },
    /// Data buffers the device would read where it must write, or the other
    /// way round, or data on a request that has none.
    #[error("request from descriptor {head} (type {kind}) has data buffers in the wrong direction")]
    WrongDirection {
        /// The chain's head.
        head: u16,
        /// The type.
        kind: u32,
    },
    /// Data that is not whole sectors.
    #[error("request from descriptor {head} moves {len} bytes, not a whole number of 512-byte sectors")]
    PartialSector {
        /// The chain's head.
        head: u16,
        /// Data bytes.
        len: u64,
    },
    /// Sectors past the end of the disk (or past any disk at all).
    #[error("request from descriptor {head} reaches sectors {sector}+{count}, past the disk's {capacity}")]
    PastEnd {
        /// The chain's head.
        head: u16,
        /// First sector.
        sector: u64,
        /// Sectors asked for.
        count: u64,
        /// Sectors the disk has.
        capacity: u64,
    },
}

impl RequestError {
    /// A short name per kind, for logging each kind once.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoStatus { .. } => "no-status",
            Self::Chain(error) => error.kind(),
            Self::ShortHeader { .. } => "short-header",
            Self::Unsupported { .. } => "unsupported-type",
            Self::WrongDirection { .. } => "wrong-direction",
            Self::PartialSector { .. } => "partial-sector",
            Self::PastEnd { .. } => "past-end",
        }
    }

    /// The status the guest gets for it.
    pub fn status(&self) -> u8 {
        match self {
            Self::Unsupported { .. } => blk::S_UNSUPP,
            _ => blk::S_IOERR,
        }
    }
}

/// A request that could not be parsed, and where to answer it (none: the
/// status byte itself is missing or outside memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Where the status byte goes, if anywhere.
    pub status: Option<GuestAddress>,
    /// What is wrong.
    pub error: RequestError,
}

/// Parses `chain` as a request on a disk of `capacity` sectors.
pub fn parse(chain: &GuestChain, mem: &GuestMemoryMmap, capacity: u64) -> Result<Request, Refusal> {
    let head = chain.head();
    let status = status_byte(chain).map_err(|error| Refusal { status: None, error })?;
    let refuse = |error: RequestError| Refusal { status: Some(status), error };

    let (header_ranges, readable_data) = split_ranges(chain.readable(), HEADER_LEN)
        .ok_or_else(|| refuse(RequestError::ShortHeader { head, len: chain.readable_len() }))?;
    let mut header = [0u8; 16];
    if gather(&header_ranges, mem, &mut header) != header.len() {
        return Err(refuse(ChainError::OutsideMemory { head, addr: 0, len: 16 }.into()));
    }
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let sector = u64::from_le_bytes([
        header[8], header[9], header[10], header[11], header[12], header[13], header[14], header[15],
    ]);
    // The writable bytes before the status byte.
    let writable_len = chain.writable_len() - 1;
    let (writable_data, _) =
        split_ranges(chain.writable(), writable_len).ok_or_else(|| refuse(RequestError::NoStatus { head }))?;

    let wrong_direction = RequestError::WrongDirection { head, kind };
    let (kind, data) = match kind {
        blk::T_IN if readable_data.is_empty() => (RequestKind::Read, writable_data),
        blk::T_OUT if writable_data.is_empty() => (RequestKind::Write, readable_data),
        blk::T_FLUSH if readable_data.is_empty() && writable_data.is_empty() => (RequestKind::Flush, Vec::new()),
        blk::T_GET_ID if readable_data.is_empty() => (RequestKind::GetId, writable_data),
        blk::T_IN | blk::T_OUT | blk::T_FLUSH | blk::T_GET_ID => return Err(refuse(wrong_direction)),
        other => return Err(refuse(RequestError::Unsupported { head, kind: other })),
    };
    // Every range was checked against guest memory with the chain.
    let request = Request { kind, sector, data, status };

    if matches!(kind, RequestKind::Read | RequestKind::Write) {
        let len = request.data_len();
        if !len.is_multiple_of(blk::SECTOR_SIZE) {
            return Err(refuse(RequestError::PartialSector { head, len }));
        }
        let count = len / blk::SECTOR_SIZE;
        if sector.checked_add(count).is_none_or(|end| end > capacity) {
            return Err(refuse(RequestError::PastEnd { head, sector, count, capacity }));
        }
    }
    Ok(request)
}

/// The last writable byte of the chain (inside guest memory, as every
/// byte of a chain is).
fn status_byte(chain: &GuestChain) -> Result<GuestAddress, RequestError> {
    let head = chain.head();
    let last = chain.writable().iter().rev().find(|range| !range.is_empty()).ok_or(RequestError::NoStatus { head })?;
    let (_, byte) = last.split_at(last.len() - 1).ok_or(RequestError::NoStatus { head })?;
    Ok(byte.addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::memory;
    use vm_memory::Bytes;

    fn range(addr: u64, len: u32) -> GuestRange {
        GuestRange::new(&memory(), GuestAddress(addr), len).expect("a test range inside memory")
    }

    fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&bytes, GuestAddress(at)).unwrap();
    }

    fn chain(readable: Vec<GuestRange>, writable: Vec<GuestRange>) -> GuestChain {
        GuestChain::from_ranges(0, readable, writable)
    }

    #[test]
    fn read_request_takes_writable_data_before_the_status() {
        let mem = memory();
        header(&mem, 0x8_0000, blk::T_IN, 7);
        let c = chain(vec![range(0x8_0000, 16)], vec![range(0x9_0000, 1024), range(0xa_0000, 1)]);
        let req = parse(&c, &mem, 100).unwrap();
        assert_eq!(req.kind, RequestKind::Read);
        assert_eq!(req.sector, 7);
        assert_eq!(req.data, [range(0x9_0000, 1024)]);
        assert_eq!(req.status, GuestAddress(0xa_0000));
    }

    #[test]
    fn header_data_and_status_may_share_descriptors() {
        let mem = memory();
        header(&mem, 0x8_0000, blk::T_OUT, 1);
        // Header and data in one readable descriptor; status alone.
        let c = chain(vec![range(0x8_0000, 16 + 512)], vec![range(0x9_0000, 1)]);
        let req = parse(&c, &mem, 100).unwrap();
        assert_eq!((req.kind, req.data), (RequestKind::Write, vec![range(0x8_0010, 512)]));
        // Read data and status in one writable descriptor.
        header(&mem, 0x8_0000, blk::T_IN, 1);
        let c = chain(vec![range(0x8_0000, 8), range(0x8_0008, 8)], vec![range(0x9_0000, 513)]);
        let req = parse(&c, &mem, 100).unwrap();
        assert_eq!((req.data, req.status), (vec![range(0x9_0000, 512)], GuestAddress(0x9_0200)));
    }

    #[test]
    fn unknown_type_is_unsupported() {
        let mem = memory();
        header(&mem, 0x8_0000, 99, 0);
        let refusal = parse(&chain(vec![range(0x8_0000, 16)], vec![range(0x9_0000, 1)]), &mem, 8).unwrap_err();
        assert_eq!(refusal.status, Some(GuestAddress(0x9_0000)));
        assert_eq!(refusal.error.status(), blk::S_UNSUPP);
    }

    #[test]
    fn a_missing_status_cannot_be_answered() {
        let mem = memory();
        header(&mem, 0x8_0000, blk::T_IN, 0);
        let no_writable = parse(&chain(vec![range(0x8_0000, 16)], vec![]), &mem, 8).unwrap_err();
        assert_eq!(no_writable, Refusal { status: None, error: RequestError::NoStatus { head: 0 } });
        // (A status or data byte outside guest memory never reaches `parse`:
        // such a chain is refused where it is popped; ward-virtq's tests.)
    }

    #[test]
    fn short_header_partial_sector_and_wrong_direction_are_io_errors() {
        let mem = memory();
        let status = vec![range(0x9_0000, 1)];
        let short = parse(&chain(vec![range(0x8_0000, 15)], status.clone()), &mem, 8).unwrap_err();
        assert_eq!(short.error, RequestError::ShortHeader { head: 0, len: 15 });
        header(&mem, 0x8_0000, blk::T_OUT, 0);
        let partial = parse(&chain(vec![range(0x8_0000, 16), range(0xa_0000, 100)], status.clone()), &mem, 8);
        assert_eq!(partial.unwrap_err().error, RequestError::PartialSector { head: 0, len: 100 });
        let backwards =
            parse(&chain(vec![range(0x8_0000, 16)], vec![range(0xa_0000, 512), range(0x9_0000, 1)]), &mem, 8);
        assert_eq!(backwards.unwrap_err().error.status(), blk::S_IOERR);
    }

    #[test]
    fn sectors_past_the_end_or_overflowing_are_refused() {
        let mem = memory();
        let writable = vec![range(0x9_0000, 1024), range(0xa_0000, 1)];
        header(&mem, 0x8_0000, blk::T_IN, 7);
        let past = parse(&chain(vec![range(0x8_0000, 16)], writable.clone()), &mem, 8).unwrap_err();
        assert_eq!(past.error, RequestError::PastEnd { head: 0, sector: 7, count: 2, capacity: 8 });
        header(&mem, 0x8_0000, blk::T_IN, u64::MAX);
        let wraps = parse(&chain(vec![range(0x8_0000, 16)], writable), &mem, u64::MAX).unwrap_err();
        assert!(matches!(wraps.error, RequestError::PastEnd { .. }));
    }
}
