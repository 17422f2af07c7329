//! The guest images Ward boots, embedded in the host binaries.
//!
//! `build.rs` builds the guest kernel with the guest's codegen flags (see its
//! documentation); this crate hands the result to the host side, so `ward`
//! boots a compartment without the user naming a kernel file.

/// The guest kernel ELF (`ward-kernel`), built by `build.rs`.
pub static KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ward-kernel"));

/// Where `build.rs` left the kernel ELF, for tools that inspect it.
pub const KERNEL_PATH: &str = concat!(env!("OUT_DIR"), "/ward-kernel");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_kernel_is_an_x86_64_executable() {
        assert_eq!(&KERNEL[..4], b"\x7fELF");
        // e_machine at offset 18: EM_X86_64.
        assert_eq!(u16::from_le_bytes([KERNEL[18], KERNEL[19]]), 62);
        assert_eq!(std::fs::read(KERNEL_PATH).unwrap(), KERNEL);
    }
}
