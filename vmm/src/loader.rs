//! Checking and loading the guest kernel ELF.
//!
//! linux-loader copies the `PT_LOAD` segments into guest memory; before that
//! we check everything it does not: that the file is a whole, static x86_64
//! executable, that its segments lie inside the file, inside guest RAM and
//! above the boot area, that they do not overlap, that the boot page tables
//! map each one's virtual address to its physical address, and that the
//! entry point is in an executable segment. A bad kernel file is refused
//! with the reason, before anything is written to guest memory.
//!
//! A kernel is read through `Read + Seek`, never whole: the check reads the
//! ELF header and the program header table (at most 64 KiB entries of 56
//! bytes), and the load reads each segment's bytes straight into guest
//! memory, so what is read is bounded by the guest's memory whatever the
//! file's size.

use std::borrow::Cow;
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::sync::Arc;

use linux_loader::loader::{Elf, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryMmap, ReadVolatile};

use ward_abi::layout::{KERNEL_BASE, KERNEL_LOAD_MIN, KERNEL_WINDOW_SIZE, PAGE_SIZE};

use crate::arch::paging::KernelSegment;

/// Why a kernel image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoaderError {
    /// Shorter than an ELF header, or its program headers run past the end.
    #[error("the file is truncated: {0}")]
    Truncated(&'static str),
    /// No ELF magic.
    #[error("not an ELF file (no \\x7fELF magic)")]
    NotElf,
    /// 32-bit ELF.
    #[error("not a 64-bit ELF (class {0})")]
    Not64Bit(u8),
    /// Big-endian ELF.
    #[error("not a little-endian ELF")]
    NotLittleEndian,
    /// Another architecture.
    #[error("not an x86_64 ELF (machine {0})")]
    WrongArchitecture(u16),
    /// Not `ET_EXEC`.
    #[error("not a static executable (ELF type {0}); the kernel must be linked at fixed addresses")]
    NotExecutable(u16),
    /// A program header size we do not know.
    #[error("program header entries are {0} bytes, expected 56")]
    BadProgramHeaderSize(u16),
    /// No `PT_LOAD` segment.
    #[error("no loadable segment")]
    NoLoadableSegment,
    /// A segment's bytes run past the end of the file.
    #[error("segment {index} (file offset {offset:#x}, {size:#x} bytes) lies outside the file")]
    SegmentOutsideFile {
        /// Program header index.
        index: usize,
        /// File offset.
        offset: u64,
        /// File size.
        size: u64,
    },
    /// `p_filesz > p_memsz`.
    #[error("segment {0} has more file bytes than memory bytes")]
    SegmentFileLargerThanMemory(usize),
    /// A segment reaches below the end of the boot area.
    #[error("segment {index} at physical {addr:#x} overlaps the boot area (kernels load at or above {min:#x})")]
    SegmentInBootArea {
        /// Program header index.
        index: usize,
        /// Physical address.
        addr: u64,
        /// Lowest allowed address.
        min: u64,
    },
    /// A segment does not fit in guest RAM.
    #[error(
        "segment {index} at physical {addr:#x} ({size:#x} bytes) does not fit in {memory:#x} bytes of guest memory"
    )]
    SegmentOutsideMemory {
        /// Program header index.
        index: usize,
        /// Physical address.
        addr: u64,
        /// Memory size.
        size: u64,
        /// Guest RAM size.
        memory: u64,
    },
    /// Two segments overlap in physical memory.
    #[error("segments {0} and {1} overlap in physical memory")]
    SegmentsOverlap(usize, usize),
    /// A segment is not linked in the kernel window (virtual = physical +
    /// 0xffffffff80000000), page aligned.
    #[error(
        "segment {index}: virtual {vaddr:#x} is not the kernel window address of physical {paddr:#x} \
         (kernels are linked at 0xffffffff80000000 + physical, page aligned)"
    )]
    SegmentNotMapped {
        /// Program header index.
        index: usize,
        /// Virtual address.
        vaddr: u64,
        /// Physical address.
        paddr: u64,
    },
    /// The entry point is not inside an executable segment.
    #[error("entry point {0:#x} is not inside an executable segment")]
    EntryNotInCode(u64),
    /// A segment is both writable and executable: the boot page tables
    /// map every page either writable or executable, never both (W^X).
    #[error("segment {0} is writable and executable; Ward maps kernel pages W^X (link code and data apart)")]
    WritableAndExecutable(usize),
    /// The file could not be read.
    #[error("cannot read the kernel file: {0}")]
    Read(String),
    /// linux-loader refused it.
    #[error("cannot load the kernel: {0}")]
    Load(String),
}

/// A loaded kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// Virtual entry point.
    pub entry: u64,
    /// Lowest physical address of any segment.
    pub phys_start: u64,
    /// One past the highest physical byte, `.bss` included.
    pub phys_end: u64,
    /// The segments, with their permissions.
    pub segments: Vec<KernelSegment>,
}

const ELF_HEADER_SIZE: usize = 64;
const PROGRAM_HEADER_SIZE: usize = 56;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index among all program headers.
    pub index: usize,
    /// `p_flags`.
    pub flags: u32,
    /// `p_offset`.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`.
    pub file_size: u64,
    /// `p_memsz`.
    pub mem_size: u64,
}

/// Where a kernel image comes from: bytes (the built-in kernel, tests) or
/// an open file, read in place.
#[derive(Clone, Debug)]
pub enum KernelSource {
    /// The image in memory.
    Bytes(Cow<'static, [u8]>),
    /// A regular file, read through the descriptor (never whole).
    File(Arc<File>),
}

impl From<Cow<'static, [u8]>> for KernelSource {
    fn from(bytes: Cow<'static, [u8]>) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<&'static [u8]> for KernelSource {
    fn from(bytes: &'static [u8]) -> Self {
        Self::Bytes(Cow::Borrowed(bytes))
    }
}

impl From<Vec<u8>> for KernelSource {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(Cow::Owned(bytes))
    }
}

impl KernelSource {
    /// Parses and checks the image for a guest of `memory_size` bytes.
    pub fn check(&self, memory_size: u64) -> Result<KernelImage, LoaderError> {
        match self {
            Self::Bytes(bytes) => check(&mut Cursor::new(&bytes[..]), memory_size),
            Self::File(file) => check(&mut &**file, memory_size),
        }
    }

    /// Checks the image and loads it into `mem`.
    pub fn load(&self, mem: &GuestMemoryMmap, memory_size: u64) -> Result<LoadedKernel, LoaderError> {
        match self {
            Self::Bytes(bytes) => load(mem, &mut Cursor::new(&bytes[..]), memory_size),
            Self::File(file) => load(mem, &mut &**file, memory_size),
        }
    }
}

/// A checked kernel image: its entry point and loadable segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// Virtual entry point.
    pub entry: u64,
    /// The `PT_LOAD` segments.
    pub segments: Vec<Segment>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Parses and checks a kernel image for a guest of `memory_size` bytes,
/// reading only its ELF header and program headers.
pub fn check<R: Read + Seek>(image: &mut R, memory_size: u64) -> Result<KernelImage, LoaderError> {
    let read_error = |e: std::io::Error| LoaderError::Read(e.to_string());
    let file_len = image.seek(SeekFrom::End(0)).map_err(read_error)?;
    let mut header = [0u8; ELF_HEADER_SIZE];
    let got = read_at(image, 0, &mut header).map_err(read_error)?;
    let header = &header[..got];
    if header.len() < 4 || header[..4] != *b"\x7fELF" {
        return Err(if header.len() < 4 && b"\x7fELF".starts_with(header) {
            LoaderError::Truncated("shorter than the ELF magic")
        } else {
            LoaderError::NotElf
        });
    }
    if header.len() < ELF_HEADER_SIZE {
        return Err(LoaderError::Truncated("shorter than an ELF header"));
    }
    if header[4] != ELFCLASS64 {
        return Err(LoaderError::Not64Bit(header[4]));
    }
    if header[5] != ELFDATA2LSB {
        return Err(LoaderError::NotLittleEndian);
    }
    let e_type = u16_at(header, 16);
    let machine = u16_at(header, 18);
    if machine != EM_X86_64 {
        return Err(LoaderError::WrongArchitecture(machine));
    }
    if e_type != ET_EXEC {
        return Err(LoaderError::NotExecutable(e_type));
    }
    let entry = u64_at(header, 24);
    let phoff = u64_at(header, 32);
    let phentsize = u16_at(header, 54);
    let phnum = usize::from(u16_at(header, 56));
    if usize::from(phentsize) != PROGRAM_HEADER_SIZE {
        return Err(LoaderError::BadProgramHeaderSize(phentsize));
    }
    // At most 65,535 entries of 56 bytes: 3.5 MiB, whatever the file.
    let table_len = phnum * PROGRAM_HEADER_SIZE;
    if phoff.checked_add(table_len as u64).is_none_or(|end| end > file_len) {
        return Err(LoaderError::Truncated("program headers run past the end"));
    }
    let mut table = vec![0u8; table_len];
    if read_at(image, phoff, &mut table).map_err(read_error)? < table_len {
        return Err(LoaderError::Truncated("program headers run past the end"));
    }

    let mut segments = Vec::new();
    for (index, ph) in table.chunks_exact(PROGRAM_HEADER_SIZE).enumerate() {
        if u32_at(ph, 0) != PT_LOAD {
            continue;
        }
        let seg = Segment {
            index,
            flags: u32_at(ph, 4),
            offset: u64_at(ph, 8),
            vaddr: u64_at(ph, 16),
            paddr: u64_at(ph, 24),
            file_size: u64_at(ph, 32),
            mem_size: u64_at(ph, 40),
        };
        check_segment(&seg, file_len, memory_size)?;
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err(LoaderError::NoLoadableSegment);
    }
    for (i, a) in segments.iter().enumerate() {
        for b in &segments[i + 1..] {
            if a.paddr < b.paddr + b.mem_size && b.paddr < a.paddr + a.mem_size {
                return Err(LoaderError::SegmentsOverlap(a.index, b.index));
            }
        }
    }
    let in_code = segments.iter().any(|s| s.flags & PF_X != 0 && entry >= s.vaddr && entry - s.vaddr < s.mem_size);
    if !in_code {
        return Err(LoaderError::EntryNotInCode(entry));
    }
    Ok(KernelImage { entry, segments })
}

fn check_segment(seg: &Segment, file_len: u64, memory_size: u64) -> Result<(), LoaderError> {
    let index = seg.index;
    if seg.offset.checked_add(seg.file_size).is_none_or(|end| end > file_len) {
        return Err(LoaderError::SegmentOutsideFile { index, offset: seg.offset, size: seg.file_size });
    }
    if seg.file_size > seg.mem_size {
        return Err(LoaderError::SegmentFileLargerThanMemory(index));
    }
    if seg.flags & PF_W != 0 && seg.flags & PF_X != 0 {
        return Err(LoaderError::WritableAndExecutable(index));
    }
    if seg.paddr < KERNEL_LOAD_MIN {
        return Err(LoaderError::SegmentInBootArea { index, addr: seg.paddr, min: KERNEL_LOAD_MIN });
    }
    if seg.paddr.checked_add(seg.mem_size).is_none_or(|end| end > memory_size) {
        return Err(LoaderError::SegmentOutsideMemory {
            index,
            addr: seg.paddr,
            size: seg.mem_size,
            memory: memory_size,
        });
    }
    if !in_kernel_window(seg.vaddr, seg.paddr, seg.mem_size) {
        return Err(LoaderError::SegmentNotMapped { index, vaddr: seg.vaddr, paddr: seg.paddr });
    }
    Ok(())
}

/// Whether `size` bytes at `vaddr` are the kernel-window image of `paddr`,
/// page aligned (each page gets its segment's permissions).
pub fn in_kernel_window(vaddr: u64, paddr: u64, size: u64) -> bool {
    vaddr.is_multiple_of(PAGE_SIZE)
        && vaddr.checked_sub(KERNEL_BASE) == Some(paddr)
        && paddr.checked_add(size).is_some_and(|end| end <= KERNEL_WINDOW_SIZE)
}

impl KernelImage {
    /// The segments as the page tables map them.
    pub fn kernel_segments(&self) -> Vec<KernelSegment> {
        self.segments
            .iter()
            .map(|s| KernelSegment {
                vaddr: s.vaddr,
                paddr: s.paddr,
                size: s.mem_size,
                writable: s.flags & PF_W != 0,
                executable: s.flags & PF_X != 0,
            })
            .collect()
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends;
/// returns how many bytes were read.
fn read_at<R: Read + Seek>(image: &mut R, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    image.seek(SeekFrom::Start(offset))?;
    let mut got = 0;
    while got < buf.len() {
        match image.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Checks `image` and loads it into `mem`: only the segments' bytes are
/// read, straight into guest memory.
pub fn load<R: Read + ReadVolatile + Seek>(
    mem: &GuestMemoryMmap,
    image: &mut R,
    memory_size: u64,
) -> Result<LoadedKernel, LoaderError> {
    let checked = check(image, memory_size)?;
    let result = Elf::load(mem, None, image, None).map_err(|e| LoaderError::Load(e.to_string()))?;
    let phys_start = checked.segments.iter().map(|s| s.paddr).min().unwrap_or(KERNEL_LOAD_MIN);
    let phys_end = checked.segments.iter().map(|s| s.paddr + s.mem_size).max().unwrap_or(phys_start);
    debug_assert_eq!(result.kernel_load, GuestAddress(checked.entry));
    Ok(LoadedKernel { entry: checked.entry, phys_start, phys_end, segments: checked.kernel_segments() })
}

/// Builds ELF images for tests: a header and `PT_LOAD` segments.
#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test images are tiny")]
pub(crate) mod test_elf {
    use super::*;

    /// A segment to put in a test image: (vaddr, paddr, flags, contents, mem_size).
    pub(crate) type TestSegment<'a> = (u64, u64, u32, &'a [u8], u64);

    pub(crate) fn build(entry: u64, segments: &[TestSegment<'_>]) -> Vec<u8> {
        let phoff = ELF_HEADER_SIZE;
        let data_start = phoff + segments.len() * PROGRAM_HEADER_SIZE;
        let mut out = vec![0u8; data_start];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = ELFCLASS64;
        out[5] = ELFDATA2LSB;
        out[6] = 1;
        out[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        out[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[24..32].copy_from_slice(&entry.to_le_bytes());
        out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        out[52..54].copy_from_slice(&(ELF_HEADER_SIZE as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PROGRAM_HEADER_SIZE as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, &(vaddr, paddr, flags, contents, mem_size)) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            out.extend_from_slice(contents);
            let ph = phoff + i * PROGRAM_HEADER_SIZE;
            out[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
            out[ph + 4..ph + 8].copy_from_slice(&flags.to_le_bytes());
            out[ph + 8..ph + 16].copy_from_slice(&offset.to_le_bytes());
            out[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            out[ph + 32..ph + 40].copy_from_slice(&(contents.len() as u64).to_le_bytes());
            out[ph + 40..ph + 48].copy_from_slice(&mem_size.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test images are tiny")]
mod tests {
    use super::test_elf::build;
    use super::*;
    use vm_memory::Bytes;

    const MEM: u64 = 16 << 20;
    const RX: u32 = 5;
    const RW: u32 = 6;

    fn check_bytes(image: &[u8], memory_size: u64) -> Result<KernelImage, LoaderError> {
        check(&mut Cursor::new(image), memory_size)
    }

    fn good() -> Vec<u8> {
        build(
            KERNEL_BASE + 0x10_0000,
            &[
                (KERNEL_BASE + 0x10_0000, 0x10_0000, RX, &[0xf4; 16], 16),
                (KERNEL_BASE + 0x10_1000, 0x10_1000, RW, &[1, 2, 3], 0x2000),
            ],
        )
    }

    #[test]
    fn good_image_loads_segments_and_reports_bounds() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let loaded = KernelSource::from(good()).load(&mem, MEM).unwrap();
        assert_eq!((loaded.entry, loaded.phys_start, loaded.phys_end), (KERNEL_BASE + 0x10_0000, 0x10_0000, 0x10_3000));
        let perms: Vec<(bool, bool)> = loaded.segments.iter().map(|s| (s.writable, s.executable)).collect();
        assert_eq!(perms, [(false, true), (true, false)]);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x10_000f)).unwrap(), 0xf4);
        assert_eq!(mem.read_obj::<[u8; 3]>(GuestAddress(0x10_1000)).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn truncated_file_is_refused() {
        let image = good();
        assert_eq!(check_bytes(&image[..40], MEM), Err(LoaderError::Truncated("shorter than an ELF header")));
        assert_eq!(check_bytes(&image[..2], MEM), Err(LoaderError::Truncated("shorter than the ELF magic")));
        // Header intact, segment bytes cut off.
        let cut = &image[..image.len() - 2];
        assert!(matches!(check_bytes(cut, MEM), Err(LoaderError::SegmentOutsideFile { index: 1, .. })));
    }

    #[test]
    fn program_headers_past_the_end_are_truncation() {
        let mut image = good();
        image[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::Truncated("program headers run past the end")));
    }

    #[test]
    fn non_elf_is_refused() {
        assert_eq!(check_bytes(b"#!/bin/sh\necho hello\n", MEM), Err(LoaderError::NotElf));
        assert_eq!(check_bytes(&[0u8; 128], MEM), Err(LoaderError::NotElf));
    }

    #[test]
    fn wrong_architecture_is_refused() {
        let mut image = good();
        image[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::WrongArchitecture(183)));
        let mut image = good();
        image[4] = 1; // ELFCLASS32
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::Not64Bit(1)));
        let mut image = good();
        image[5] = 2; // big endian
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::NotLittleEndian));
    }

    #[test]
    fn shared_object_is_refused() {
        let mut image = good();
        image[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::NotExecutable(3)));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let image = build(
            KERNEL_BASE + 0x10_0000,
            &[
                (KERNEL_BASE + 0x10_0000, 0x10_0000, RX, &[0; 16], 0x2000),
                (KERNEL_BASE + 0x10_1000, 0x10_1000, RW, &[0; 16], 0x1000),
            ],
        );
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::SegmentsOverlap(0, 1)));
    }

    #[test]
    fn segment_in_boot_area_or_beyond_memory_is_refused() {
        let low = build(0x1000, &[(0x1000, 0x1000, RX, &[0; 4], 4)]);
        assert!(matches!(check_bytes(&low, MEM), Err(LoaderError::SegmentInBootArea { index: 0, addr: 0x1000, .. })));
        let high = build(KERNEL_BASE + 0x10_0000, &[(KERNEL_BASE + 0x10_0000, 0x10_0000, RX, &[0; 4], MEM)]);
        assert!(matches!(check_bytes(&high, MEM), Err(LoaderError::SegmentOutsideMemory { index: 0, .. })));
    }

    #[test]
    fn unmapped_virtual_address_is_refused() {
        let image = build(0x4000_0000_0000, &[(0x4000_0000_0000, 0x10_0000, RX, &[0; 4], 4)]);
        assert!(matches!(check_bytes(&image, MEM), Err(LoaderError::SegmentNotMapped { index: 0, .. })));
    }

    #[test]
    fn identity_linked_or_misaligned_kernel_is_refused() {
        let identity = build(0x10_0000, &[(0x10_0000, 0x10_0000, RX, &[0xf4], 1)]);
        assert!(matches!(check_bytes(&identity, MEM), Err(LoaderError::SegmentNotMapped { index: 0, .. })));
        let skewed = build(KERNEL_BASE + 0x10_0010, &[(KERNEL_BASE + 0x10_0010, 0x10_0010, RX, &[0xf4], 1)]);
        assert!(matches!(check_bytes(&skewed, MEM), Err(LoaderError::SegmentNotMapped { index: 0, .. })));
    }

    #[test]
    fn entry_outside_code_is_refused() {
        let image = build(
            KERNEL_BASE + 0x10_1000,
            &[
                (KERNEL_BASE + 0x10_0000, 0x10_0000, RX, &[0; 16], 16),
                (KERNEL_BASE + 0x10_1000, 0x10_1000, RW, &[0; 16], 16),
            ],
        );
        assert_eq!(check_bytes(&image, MEM), Err(LoaderError::EntryNotInCode(KERNEL_BASE + 0x10_1000)));
    }

    #[test]
    fn no_loadable_segment_is_refused() {
        assert_eq!(check_bytes(&build(0, &[]), MEM), Err(LoaderError::NoLoadableSegment));
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test images are tiny")]
mod file_tests {
    use super::test_elf::build;
    use super::*;
    use vm_memory::Bytes;

    const MEM: u64 = 16 << 20;

    fn temp_file(name: &str, contents: &[u8]) -> (std::path::PathBuf, Arc<File>) {
        let path = std::env::temp_dir().join(format!("ward-loader-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        (path, file)
    }

    #[test]
    fn writable_and_executable_segment_is_refused() {
        let image = build(KERNEL_BASE + 0x10_0000, &[(KERNEL_BASE + 0x10_0000, 0x10_0000, 7, &[0xf4; 16], 16)]);
        assert_eq!(KernelSource::from(image).check(MEM), Err(LoaderError::WritableAndExecutable(0)));
    }

    #[test]
    fn a_kernel_file_is_loaded_through_its_descriptor() {
        let image = build(KERNEL_BASE + 0x10_0000, &[(KERNEL_BASE + 0x10_0000, 0x10_0000, 5, &[0xf4, 0x90, 7], 16)]);
        let (path, file) = temp_file("good", &image);
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
        let loaded = KernelSource::File(file).load(&mem, MEM).unwrap();
        assert_eq!(loaded.entry, KERNEL_BASE + 0x10_0000);
        assert_eq!(mem.read_obj::<[u8; 3]>(GuestAddress(0x10_0000)).unwrap(), [0xf4, 0x90, 7]);
        std::fs::remove_file(path).unwrap();
    }

    /// A reader that counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn a_huge_sparse_file_is_refused_from_its_header_alone() {
        let (path, _) = temp_file("sparse", b"");
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(2 << 30).unwrap();
        let mut file = Counting { inner: File::open(&path).unwrap(), read: 0 };
        assert_eq!(check(&mut file, MEM), Err(LoaderError::NotElf));
        assert_eq!(file.read, ELF_HEADER_SIZE as u64);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn checking_reads_the_headers_only() {
        let image = build(KERNEL_BASE + 0x10_0000, &[(KERNEL_BASE + 0x10_0000, 0x10_0000, 5, &[0xf4; 4096], 4096)]);
        let mut reader = Counting { inner: Cursor::new(&image[..]), read: 0 };
        check(&mut reader, MEM).unwrap();
        assert_eq!(reader.read, (ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE) as u64);
    }

    #[test]
    fn program_headers_past_the_end_of_a_file_are_truncation() {
        let mut image = build(KERNEL_BASE + 0x10_0000, &[(KERNEL_BASE + 0x10_0000, 0x10_0000, 5, &[0xf4], 1)]);
        image[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        let (path, file) = temp_file("phnum", &image);
        assert_eq!(
            KernelSource::File(file).check(MEM),
            Err(LoaderError::Truncated("program headers run past the end"))
        );
        std::fs::remove_file(path).unwrap();
    }
}
