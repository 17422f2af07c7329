//! virtio-blk (device type 2) backed by a host file: read, write, flush
//! and get-id, optionally read-only.
//!
//! Data moves between the file and guest memory in one `preadv`/`pwritev`
//! per request, straight into or out of the guest's buffers: no bounce
//! buffer. The file's size must be whole 512-byte sectors; it is checked
//! when the compartment starts, and the capacity in configuration space
//! never changes. Requests are parsed and checked in [`request`]; a bad one
//! is answered with `VIRTIO_BLK_S_IOERR` or `VIRTIO_BLK_S_UNSUPP`, and only
//! a request with no status byte to answer through makes the device need a
//! reset.

pub mod request;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_memory::{Bytes, GuestMemoryMmap, VolatileSlice};
use ward_abi::virtio::{blk, device_id, feature};

use self::request::{ID_LEN, Refusal, Request, RequestKind, parse};
use super::queue::{GuestChain, GuestRange};
use super::{ActiveQueues, VirtioDevice, refuse_chain};
use crate::devices::WarnOnce;

/// The request queue.
pub const REQUESTQ: usize = 0;

/// Bytes of the configuration space we answer (`struct virtio_blk_config`
/// up to `blk_size` and the topology; only `capacity` is meaningful).
const CONFIG_LEN: u64 = 0x3c;

/// A disk the guest asked for.
#[derive(Clone, Debug)]
pub struct DiskConfig {
    /// The host file holding it.
    pub path: PathBuf,
    /// The guest may only read it.
    pub read_only: bool,
    /// The file, already open (read-write unless `read_only`): a jailed VMM
    /// opens its disks before the jail hides the host's files, and `path`
    /// then only names the disk in messages.
    pub opened: Option<Arc<File>>,
}

impl DiskConfig {
    /// A disk opened from `path` when the VM is built.
    pub fn at(path: impl Into<PathBuf>, read_only: bool) -> Self {
        Self { path: path.into(), read_only, opened: None }
    }
}

/// A disk file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file does not exist.
    #[error("disk file {0} does not exist")]
    Missing(PathBuf),
    /// Opening it failed.
    #[error("cannot open disk file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Its size could not be read.
    #[error("cannot read the size of disk file {path}: {source}")]
    Size {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Its size is not whole sectors.
    #[error("disk file {path} is {size} bytes, not a multiple of the {sector}-byte sector size", sector = blk::SECTOR_SIZE)]
    PartialSector {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// The block device.
#[derive(Debug)]
pub struct Block {
    who: String,
    file: File,
    read_only: bool,
    capacity: u64,
    id: [u8; ID_LEN],
    write_through: bool,
    warned: WarnOnce,
}

impl Block {
    /// Opens the disk `config` for `compartment`; `index` numbers the
    /// compartment's disks (the guest sees it in the device id).
    pub fn open(compartment: &str, index: usize, config: &DiskConfig) -> Result<Self, DiskError> {
        let path = &config.path;
        let opened = match &config.opened {
            Some(file) => file.try_clone(),
            None => OpenOptions::new().read(true).write(!config.read_only).open(path),
        };
        let mut file = opened.map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DiskError::Missing(path.clone())
            } else {
                DiskError::Open { path: path.clone(), source }
            }
        })?;
        // Seeking to the end also measures block devices, whose metadata
        // says 0.
        let size = file.seek(SeekFrom::End(0)).map_err(|source| DiskError::Size { path: path.clone(), source })?;
        if size % blk::SECTOR_SIZE != 0 {
            return Err(DiskError::PartialSector { path: path.clone(), size });
        }
        Ok(Self::new(compartment, index, file, size / blk::SECTOR_SIZE, config.read_only, path))
    }

    /// A device over an open `file` of `capacity` sectors.
    pub fn new(compartment: &str, index: usize, file: File, capacity: u64, read_only: bool, path: &Path) -> Self {
        let mut id = [0u8; ID_LEN];
        let name = format!("ward-disk-{index}");
        let len = name.len().min(ID_LEN);
        id[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self {
            who: format!("compartment {compartment}: virtio block {}", path.display()),
            file,
            read_only,
            capacity,
            id,
            write_through: true,
            warned: WarnOnce::default(),
        }
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Carries out a checked request; the status byte to answer.
    fn execute(&mut self, request: &Request, mem: &GuestMemoryMmap) -> (u8, u32) {
        let data_len = request.data_len();
        let result = match request.kind {
            RequestKind::Read => {
                transfer(&self.file, mem, &request.data, request.sector * blk::SECTOR_SIZE, Direction::FileToGuest)
                    .map(|()| u32::try_from(data_len).unwrap_or(u32::MAX))
            }
            RequestKind::Write if self.read_only => {
                let who = &self.who;
                self.warned.warn("write-read-only", || format!("{who}: the guest wrote to a read-only disk; refused"));
                return (blk::S_IOERR, 0);
            }
            RequestKind::Write => {
                transfer(&self.file, mem, &request.data, request.sector * blk::SECTOR_SIZE, Direction::GuestToFile)
                    .and_then(|()| if self.write_through { self.file.sync_data() } else { Ok(()) })
                    .map(|()| 0)
            }
            RequestKind::Flush if self.read_only => Ok(0),
            RequestKind::Flush => self.file.sync_data().map(|()| 0),
            RequestKind::GetId => {
                let mut written = 0usize;
                for range in &request.data {
                    let take = range.len_usize().min(ID_LEN - written);
                    if take == 0 || mem.write_slice(&self.id[written..written + take], range.addr()).is_err() {
                        break;
                    }
                    written += take;
                }
                Ok(u32::try_from(written).unwrap_or(0))
            }
        };
        match result {
            Ok(written) => (blk::S_OK, written),
            Err(e) => {
                // The host failed, not the guest; still logged once.
                let who = &self.who;
                self.warned.warn("host-io-error", || format!("{who}: host I/O failed: {e}"));
                (blk::S_IOERR, 0)
            }
        }
    }

    fn answer(&mut self, queues: &mut ActiveQueues, chain: &GuestChain) {
        match parse(chain, queues.mem(), self.capacity) {
            Ok(request) => {
                let (status, written) = self.execute(&request, queues.mem());
                let status_written = queues.mem().write_obj(status, request.status).is_ok();
                queues.complete(REQUESTQ, chain.head(), written.saturating_add(u32::from(status_written)));
            }
            Err(Refusal { status: Some(at), error }) => {
                let who = &self.who;
                self.warned.warn(error.kind(), || format!("{who}: {error}; answered with status {}", error.status()));
                let written = queues.mem().write_obj(error.status(), at).is_ok();
                queues.complete(REQUESTQ, chain.head(), u32::from(written));
            }
            Err(Refusal { status: None, error }) => {
                let who = &self.who;
                self.warned.warn(error.kind(), || format!("{who}: {error}; the device needs a reset"));
                queues.complete(REQUESTQ, chain.head(), 0);
                queues.report_error();
            }
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_id::BLOCK
    }

    fn features(&self) -> u64 {
        feature::BLK_FLUSH | if self.read_only { feature::BLK_RO } else { 0 }
    }

    fn queue_count(&self) -> usize {
        1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) -> bool {
        data.fill(0);
        let Some(end) = offset.checked_add(data.len() as u64).filter(|&end| end <= CONFIG_LEN) else { return false };
        // `capacity` (le64) at offset 0; everything else reads as zero.
        let capacity = self.capacity.to_le_bytes();
        for (at, byte) in (offset..end).zip(data.iter_mut()) {
            if let Some(&value) = usize::try_from(at).ok().and_then(|at| capacity.get(at)) {
                *byte = value;
            }
        }
        true
    }

    fn activate(&mut self, queues: &ActiveQueues) {
        // Without VIRTIO_BLK_F_FLUSH the driver cannot flush, so every write
        // must be durable when it completes.
        self.write_through = queues.features() & feature::BLK_FLUSH == 0;
    }

    fn process_queue(&mut self, index: usize, queues: &mut ActiveQueues) {
        if index != REQUESTQ {
            return;
        }
        while let Some(popped) = queues.pop(REQUESTQ) {
            match popped {
                Ok(chain) => self.answer(queues, &chain),
                Err(error) => {
                    refuse_chain(queues, &mut self.warned, &self.who, REQUESTQ, error.returnable_head(), &error);
                    return;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    FileToGuest,
    GuestToFile,
}

/// Moves `ranges` of guest memory from or to `file` at `offset`, in as
/// few `preadv`/`pwritev` calls as the kernel allows.
fn transfer(
    file: &File,
    mem: &GuestMemoryMmap,
    ranges: &[GuestRange],
    offset: u64,
    direction: Direction,
) -> std::io::Result<()> {
    let outside = || std::io::Error::other("buffer outside guest memory");
    let slices: Vec<VolatileSlice<'_>> =
        ranges.iter().map(|range| range.slice(mem)).collect::<Option<_>>().ok_or_else(outside)?;
    let guards: Vec<_> = slices.iter().map(VolatileSlice::ptr_guard_mut).collect();
    let mut iovecs: Vec<libc::iovec> = guards
        .iter()
        .zip(&slices)
        .map(|(guard, slice)| libc::iovec { iov_base: guard.as_ptr().cast(), iov_len: slice.len() })
        .filter(|iovec| iovec.iov_len > 0)
        .collect();
    let mut offset = i64::try_from(offset).map_err(|_| std::io::Error::other("offset past the largest file"))?;
    let mut first = 0;
    while first < iovecs.len() {
        let batch = &iovecs[first..];
        let count = libc::c_int::try_from(batch.len().min(1024)).unwrap_or(1024);
        // SAFETY: every iovec points into a `VolatileSlice` of mapped guest
        // memory checked by `GuestRange::slice` and kept alive by `slices`
        // and `guards` for the call; the kernel reads or writes at most
        // `iov_len` bytes of each. Guest memory holds no Rust references.
        let moved = unsafe {
            match direction {
                Direction::FileToGuest => libc::preadv(file.as_raw_fd(), batch.as_ptr(), count, offset),
                Direction::GuestToFile => libc::pwritev(file.as_raw_fd(), batch.as_ptr(), count, offset),
            }
        };
        let mut moved = match usize::try_from(moved) {
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
            Ok(moved) => moved,
            Err(_) => {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
        };
        offset = offset.saturating_add(i64::try_from(moved).unwrap_or(i64::MAX));
        // Skip what was done; a partly done iovec continues where it stopped.
        while moved > 0 && first < iovecs.len() {
            let iovec = &mut iovecs[first];
            if moved >= iovec.iov_len {
                moved -= iovec.iov_len;
                first += 1;
            } else {
                // SAFETY: `moved < iov_len`, so the new base stays inside the
                // same guest buffer.
                iovec.iov_base = unsafe { iovec.iov_base.cast::<u8>().add(moved).cast() };
                iovec.iov_len -= moved;
                moved = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use std::io::{Read, Write};
    use vm_memory::GuestAddress;

    /// A disk of `sectors` sectors whose sector `n` is filled with byte `n`.
    fn disk(sectors: u8, read_only: bool) -> (Block, tempfile_path::TempFile) {
        let temp = tempfile_path::TempFile::new();
        let mut file = File::create(&temp.0).unwrap();
        for n in 0..sectors {
            file.write_all(&[n; 512]).unwrap();
        }
        drop(file);
        let dev = Block::open("test", 0, &DiskConfig::at(temp.0.clone(), read_only)).unwrap();
        (dev, temp)
    }

    mod tempfile_path {
        /// A file name under the system's temporary directory, removed on drop.
        pub(super) struct TempFile(pub(super) std::path::PathBuf);

        impl TempFile {
            pub(super) fn new() -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let n = NEXT.fetch_add(1, Ordering::SeqCst);
                Self(std::env::temp_dir().join(format!("ward-vmm-disk-{}-{n}", std::process::id())))
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&kind.to_le_bytes());
        bytes[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&bytes, GuestAddress(at)).unwrap();
    }

    fn status(mem: &GuestMemoryMmap) -> u8 {
        mem.read_obj(GuestAddress(0xc_0000)).unwrap()
    }

    #[test]
    fn read_fills_guest_buffers_from_the_file() {
        let (mut dev, _temp) = disk(8, false);
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, feature::BLK_FLUSH);
        header(&mem, 0x8_0000, blk::T_IN, 2);
        // Two sectors across two buffers, the second split mid-sector.
        offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0x9_0000, 700, true), (0xa_0000, 324, true), (0xc_0000, 1, true)]);
        dev.process_queue(REQUESTQ, &mut queues);
        queues.signal_used();
        assert_eq!(status(&mem), blk::S_OK);
        assert_eq!(used_entry(&mem, 0, 0), (0, 1025));
        let mut a = [0u8; 700];
        mem.read_slice(&mut a, GuestAddress(0x9_0000)).unwrap();
        assert!(a[..512].iter().all(|&b| b == 2) && a[512..].iter().all(|&b| b == 3));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0xa_0000 + 323)).unwrap(), 3);
        assert_eq!(irq.used(), 1);
    }

    #[test]
    fn write_then_flush_reach_the_file() {
        let (mut dev, temp) = disk(4, false);
        let mem = memory();
        let (mut queues, _) = active_queues(&mem, 1, feature::BLK_FLUSH);
        dev.activate(&queues);
        header(&mem, 0x8_0000, blk::T_OUT, 3);
        mem.write_slice(&[0xee; 512], GuestAddress(0x9_0000)).unwrap();
        offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0x9_0000, 512, false), (0xc_0000, 1, true)]);
        dev.process_queue(REQUESTQ, &mut queues);
        assert_eq!(status(&mem), blk::S_OK);
        header(&mem, 0x8_1000, blk::T_FLUSH, 0);
        offer(&mem, 0, 4, &[(0x8_1000, 16, false), (0xc_0000, 1, true)]);
        mem.write_obj(0xffu8, GuestAddress(0xc_0000)).unwrap();
        dev.process_queue(REQUESTQ, &mut queues);
        assert_eq!(status(&mem), blk::S_OK);
        let mut contents = Vec::new();
        File::open(&temp.0).unwrap().read_to_end(&mut contents).unwrap();
        assert!(contents[3 * 512..].iter().all(|&b| b == 0xee));
        assert!(contents[2 * 512..3 * 512].iter().all(|&b| b == 2));
    }

    #[test]
    fn get_id_writes_twenty_bytes() {
        let (mut dev, _temp) = disk(1, true);
        let mem = memory();
        let (mut queues, _) = active_queues(&mem, 1, 0);
        header(&mem, 0x8_0000, blk::T_GET_ID, 0);
        offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0x9_0000, 20, true), (0xc_0000, 1, true)]);
        dev.process_queue(REQUESTQ, &mut queues);
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(0x9_0000)).unwrap();
        assert!(id.starts_with(b"ward-disk-0\0"));
        assert_eq!(used_entry(&mem, 0, 0), (0, 21));
    }

    #[test]
    fn read_only_disk_refuses_writes_and_says_so() {
        let (mut dev, temp) = disk(2, true);
        assert_ne!(dev.features() & feature::BLK_RO, 0);
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        header(&mem, 0x8_0000, blk::T_OUT, 0);
        offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0x9_0000, 512, false), (0xc_0000, 1, true)]);
        dev.process_queue(REQUESTQ, &mut queues);
        assert_eq!(status(&mem), blk::S_IOERR);
        assert_eq!(irq.resets(), 0, "an answered error needs no reset");
        let mut contents = Vec::new();
        File::open(&temp.0).unwrap().read_to_end(&mut contents).unwrap();
        assert!(contents[..512].iter().all(|&b| b == 0));
    }

    #[test]
    fn unknown_type_and_past_end_are_answered() {
        let (mut dev, _temp) = disk(2, false);
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        for (kind, sector, expected) in [(77, 0, blk::S_UNSUPP), (blk::T_IN, 2, blk::S_IOERR)] {
            header(&mem, 0x8_0000, kind, sector);
            offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0x9_0000, 512, true), (0xc_0000, 1, true)]);
            dev.process_queue(REQUESTQ, &mut queues);
            assert_eq!(status(&mem), expected, "type {kind} sector {sector}");
        }
        assert_eq!(used_count(&mem, 0), 2);
        assert_eq!(irq.resets(), 0);
    }

    #[test]
    fn data_outside_guest_memory_is_a_broken_driver() {
        // As for every device: a chain naming memory the guest does not
        // have is refused where it is popped, before the device sees it,
        // and the device needs a reset.
        let (mut dev, temp) = disk(2, false);
        let before = std::fs::read(&temp.0).unwrap();
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        header(&mem, 0x8_0000, blk::T_OUT, 0);
        offer(&mem, 0, 0, &[(0x8_0000, 16, false), (0xf_ff00, 512, false), (0xc_0000, 1, true)]);
        dev.process_queue(REQUESTQ, &mut queues);
        assert_eq!(used_count(&mem, 0), 1, "the chain goes back");
        assert_eq!(irq.resets(), 1);
        assert_eq!(std::fs::read(&temp.0).unwrap(), before, "nothing reached the disk");
    }

    #[test]
    fn repeated_bad_requests_are_logged_once_and_all_answered() {
        use crate::devices::virtio::testing::logged;
        let temp = tempfile_path::TempFile::new();
        std::fs::write(&temp.0, [0u8; 1024]).unwrap();
        let mut dev = Block::open("blk-log-once", 0, &DiskConfig::at(temp.0.clone(), false)).unwrap();
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        logged("compartment blk-log-once");
        for round in 0..8u16 {
            header(&mem, 0x8_0000, 1234, 0);
            offer(&mem, 0, round * 2, &[(0x8_0000, 16, false), (0xc_0000, 1, true)]);
            dev.process_queue(REQUESTQ, &mut queues);
        }
        assert_eq!(used_count(&mem, 0), 8);
        assert_eq!(status(&mem), blk::S_UNSUPP);
        assert_eq!(logged("compartment blk-log-once"), 1);
        assert_eq!(irq.resets(), 0);
    }

    #[test]
    fn unterminated_chain_or_missing_status_needs_reset() {
        let (mut dev, _temp) = disk(2, false);
        let mem = memory();
        let (mut queues, irq) = active_queues(&mem, 1, 0);
        header(&mem, 0x8_0000, blk::T_IN, 0);
        offer(&mem, 0, 0, &[(0x8_0000, 16, false)]);
        dev.process_queue(REQUESTQ, &mut queues);
        assert_eq!(irq.resets(), 1);
        assert_eq!(used_entry(&mem, 0, 0), (0, 0));

        let (mut queues, irq) = active_queues(&mem, 1, 0);
        write_desc(&mem, 0, 5, raw_desc(0x8_0000, 16, ward_abi::virtio::desc::NEXT, 5));
        make_available(&mem, 0, 5);
        dev.process_queue(REQUESTQ, &mut queues);
        assert_eq!(irq.resets(), 1);
    }

    #[test]
    fn disk_files_of_partial_sectors_or_missing_are_refused_by_name() {
        let temp = tempfile_path::TempFile::new();
        std::fs::write(&temp.0, [0u8; 1000]).unwrap();
        let err = Block::open("test", 0, &DiskConfig::at(temp.0.clone(), false)).unwrap_err();
        assert!(matches!(err, DiskError::PartialSector { size: 1000, .. }));
        assert!(err.to_string().contains(&temp.0.display().to_string()), "{err}");
        let missing = std::path::PathBuf::from("/nonexistent/ward-disk.img");
        let err = Block::open("test", 0, &DiskConfig::at(missing.clone(), true)).unwrap_err();
        assert!(matches!(&err, DiskError::Missing(p) if *p == missing));
        assert_eq!(err.to_string(), "disk file /nonexistent/ward-disk.img does not exist");
    }

    #[test]
    fn an_already_open_file_is_used_whatever_its_path_says() {
        let temp = tempfile_path::TempFile::new();
        std::fs::write(&temp.0, [0u8; 2048]).unwrap();
        let file = OpenOptions::new().read(true).write(true).open(&temp.0).unwrap();
        let config = DiskConfig { opened: Some(Arc::new(file)), ..DiskConfig::at("/jailed/away/disk.img", false) };
        let dev = Block::open("test", 0, &config).unwrap();
        assert_eq!(dev.capacity(), 4);
    }

    #[test]
    fn config_space_holds_the_capacity() {
        let (dev, _temp) = disk(3, false);
        let mut low = [0u8; 4];
        assert!(dev.read_config(0, &mut low));
        assert_eq!(u32::from_le_bytes(low), 3);
        let mut high = [0xffu8; 4];
        assert!(dev.read_config(4, &mut high));
        assert_eq!(high, [0; 4]);
        assert!(!dev.read_config(CONFIG_LEN, &mut [0u8; 1]));
    }
}
