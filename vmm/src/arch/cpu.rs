//! The boot state of a vCPU: CPUID, MSRs, LAPIC, FPU, and the registers of
//! 64-bit mode at the kernel's entry point.

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_sregs};
use kvm_ioctls::{Kvm, VcpuFd};

use super::gdt::{BOOT_GDT, CODE_SELECTOR, DATA_SELECTOR, segment_from_entry};
use ward_abi::layout::{BOOT_GDT_ADDR, PHYS_MAP_BASE};

/// Setting up a vCPU failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("cannot get the CPUID KVM supports: {0}")]
    GetSupportedCpuid(kvm_ioctls::Error),
    /// KVM_SET_CPUID2 failed.
    #[error("cannot set the vCPU's CPUID: {0}")]
    SetCpuid(kvm_ioctls::Error),
    /// Building the MSR list failed.
    #[error("cannot build the MSR list: {0}")]
    MsrList(vmm_sys_util::fam::Error),
    /// KVM_SET_MSRS failed or set fewer MSRs than asked.
    #[error("cannot set the vCPU's MSRs (set {set} of {wanted})")]
    SetMsrs {
        /// How many were set.
        set: usize,
        /// How many were asked for.
        wanted: usize,
    },
    /// KVM_SET_MSRS failed.
    #[error("cannot set the vCPU's MSRs: {0}")]
    SetMsrsIoctl(kvm_ioctls::Error),
    /// KVM_GET_LAPIC / KVM_SET_LAPIC failed.
    #[error("cannot configure the local APIC: {0}")]
    Lapic(kvm_ioctls::Error),
    /// KVM_SET_FPU failed.
    #[error("cannot set the FPU state: {0}")]
    Fpu(kvm_ioctls::Error),
    /// KVM_GET_SREGS / KVM_SET_SREGS failed.
    #[error("cannot set the special registers: {0}")]
    Sregs(kvm_ioctls::Error),
    /// KVM_SET_REGS failed.
    #[error("cannot set the registers: {0}")]
    Regs(kvm_ioctls::Error),
}

// Control register and EFER bits (Intel SDM vol. 3, 2.5).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_PGE: u64 = 1 << 7;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// CR0 at entry: protected mode, paging, write protection in ring 0, native
/// FPU errors.
pub const BOOT_CR0: u64 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
/// CR4 at entry: PAE paging, global pages, and `fxsave`/SSE enabled for the
/// user programs (the kernel itself never uses SSE).
pub const BOOT_CR4: u64 = CR4_PAE | CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT;
/// EFER at entry: long mode active, `syscall` enabled, no-execute pages.
pub const BOOT_EFER: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

// MSR numbers.
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MISC_ENABLE.FAST_STRING: `rep movs`/`rep stos` run as fast strings.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled, default memory type write-back.
const MTRR_ENABLE_WRITE_BACK: u64 = (1 << 11) | 6;

/// The MSRs a vCPU boots with, as (index, value).
pub const BOOT_MSRS: [(u32, u64); 11] = [
    (MSR_IA32_SYSENTER_CS, 0),
    (MSR_IA32_SYSENTER_ESP, 0),
    (MSR_IA32_SYSENTER_EIP, 0),
    (MSR_STAR, 0),
    (MSR_CSTAR, 0),
    (MSR_KERNEL_GS_BASE, 0),
    (MSR_SYSCALL_MASK, 0),
    (MSR_LSTAR, 0),
    (MSR_IA32_TSC, 0),
    (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITE_BACK),
];

/// CPUID leaf 1, ECX bit 31: running under a hypervisor.
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID leaf 1, ECX bit 24: the LAPIC timer has TSC-deadline mode. KVM
/// emulates it (KVM_CAP_TSC_DEADLINE_TIMER, checked at open) but leaves
/// announcing it to the VMM.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

/// The CPUID a vCPU sees: what KVM supports, with this vCPU's APIC ID and
/// the hypervisor bit set.
pub fn cpuid(kvm: &Kvm, vcpu_id: u8) -> Result<CpuId, CpuError> {
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(CpuError::GetSupportedCpuid)?;
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(vcpu_id) << 24);
            entry.ecx |= CPUID_1_ECX_HYPERVISOR | CPUID_1_ECX_TSC_DEADLINE;
        }
    }
    Ok(cpuid)
}

/// The GDT limit (size - 1) of the boot GDT's three entries.
const BOOT_GDT_LIMIT: u16 = 3 * 8 - 1;
const _: () = assert!(BOOT_GDT.len() * 8 - 1 == BOOT_GDT_LIMIT as usize);

/// Special registers for 64-bit mode with the boot GDT and page tables.
pub fn boot_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let code = segment_from_entry(BOOT_GDT[1], CODE_SELECTOR);
    let data = segment_from_entry(BOOT_GDT[2], DATA_SELECTOR);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    // Nothing is identity mapped: the CPU finds the GDT through the direct
    // map until the kernel loads its own.
    sregs.gdt.base = PHYS_MAP_BASE + BOOT_GDT_ADDR;
    sregs.gdt.limit = BOOT_GDT_LIMIT;
    // No IDT until the kernel loads its own: an early fault triple-faults,
    // which the VMM reports.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = BOOT_CR0;
    sregs.cr3 = cr3;
    sregs.cr4 = BOOT_CR4;
    sregs.efer = BOOT_EFER;
    sregs
}

/// General registers at the kernel's entry point: `rdi` holds the boot
/// info's guest-physical address (the SysV first argument).
pub fn boot_regs(entry: u64, boot_info: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rdi: boot_info,
        // Bit 1 of RFLAGS is reserved and always set; interrupts are off.
        rflags: 0x2,
        ..Default::default()
    }
}

/// Sets up `vcpu` to enter the kernel at `entry`.
pub fn configure_vcpu(kvm: &Kvm, vcpu: &VcpuFd, entry: u64, boot_info: u64, cr3: u64) -> Result<(), CpuError> {
    vcpu.set_cpuid2(&cpuid(kvm, 0)?).map_err(CpuError::SetCpuid)?;

    let entries: Vec<kvm_msr_entry> =
        BOOT_MSRS.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    let msrs = Msrs::from_entries(&entries).map_err(CpuError::MsrList)?;
    let set = vcpu.set_msrs(&msrs).map_err(CpuError::SetMsrsIoctl)?;
    if set != entries.len() {
        return Err(CpuError::SetMsrs { set, wanted: entries.len() });
    }

    configure_lapic(vcpu)?;

    let fpu = kvm_fpu {
        // x87 default control word; all SSE exceptions masked.
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(CpuError::Fpu)?;

    let sregs = vcpu.get_sregs().map_err(CpuError::Sregs)?;
    vcpu.set_sregs(&boot_sregs(sregs, cr3)).map_err(CpuError::Sregs)?;
    vcpu.set_regs(&boot_regs(entry, boot_info)).map_err(CpuError::Regs)?;
    Ok(())
}

// Local APIC register offsets and delivery modes.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LINT0 delivers external interrupts, LINT1 NMIs, as on a PC.
fn configure_lapic(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let mut lapic = vcpu.get_lapic().map_err(CpuError::Lapic)?;
    for (reg, mode) in [(APIC_LVT_LINT0, APIC_MODE_EXTINT), (APIC_LVT_LINT1, APIC_MODE_NMI)] {
        let value = read_lapic_reg(&lapic.regs, reg);
        write_lapic_reg(&mut lapic.regs, reg, set_delivery_mode(value, mode));
    }
    vcpu.set_lapic(&lapic).map_err(CpuError::Lapic)
}

/// Replaces the delivery mode (bits 8..11) of an LVT entry.
pub const fn set_delivery_mode(lvt: u32, mode: u32) -> u32 {
    (lvt & !0x700) | (mode << 8)
}

fn read_lapic_reg(regs: &[std::os::raw::c_char; 1024], offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(&regs[offset..offset + 4]) {
        *b = *r as u8;
    }
    u32::from_le_bytes(bytes)
}

fn write_lapic_reg(regs: &mut [std::os::raw::c_char; 1024], offset: usize, value: u32) {
    for (r, b) in regs[offset..offset + 4].iter_mut().zip(value.to_le_bytes()) {
        *r = b as std::os::raw::c_char;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_registers_enter_long_mode_with_paging() {
        assert_eq!(BOOT_CR0, 0x8001_0033);
        assert_eq!(BOOT_CR4, 0x6a0);
        assert_eq!(BOOT_EFER, 0xd01);
    }

    #[test]
    fn boot_sregs_load_the_boot_gdt_and_tables() {
        let sregs = boot_sregs(kvm_sregs::default(), 0x9000);
        assert_eq!((sregs.cs.selector, sregs.cs.l, sregs.ss.selector), (0x08, 1, 0x10));
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0xffff_8000_0000_0500, 23));
        assert_eq!(sregs.cr3, 0x9000);
    }

    #[test]
    fn boot_regs_pass_the_boot_info_in_rdi() {
        let regs = boot_regs(0xffff_ffff_8010_0000, 0x1000);
        assert_eq!((regs.rip, regs.rdi, regs.rflags, regs.rsp), (0xffff_ffff_8010_0000, 0x1000, 2, 0));
    }

    #[test]
    fn delivery_mode_replaces_only_bits_8_to_10() {
        assert_eq!(set_delivery_mode(0x0001_0700, APIC_MODE_NMI), 0x0001_0400);
        assert_eq!(set_delivery_mode(0, APIC_MODE_EXTINT), 0x700);
    }

    #[test]
    fn lapic_registers_are_little_endian() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        write_lapic_reg(&mut regs, APIC_LVT_LINT1, 0x1234_5678);
        assert_eq!(regs[APIC_LVT_LINT1] as u8, 0x78);
        assert_eq!(read_lapic_reg(&regs, APIC_LVT_LINT1), 0x1234_5678);
    }
}
