//! Boot: from the VMM's hand-off to the first program.

use alloc::vec::Vec;
use ward_abi::width::usize_from;

use ward_abi::boot::{DeviceKind, MODULE_START_AT_BOOT};
use ward_abi::debug_console::{EXIT_BAD_BOOT_INFO, EXIT_BOOT_PROGRAM_FAILED};
use ward_abi::layout::{IOAPIC_BASE, KERNEL_BASE, PAGE_SIZE};
use ward_abi::syscall::PRIORITY_DEFAULT;

use crate::arch::{self, gdt, lapic};
use crate::boot::BootInfoView;
use crate::console::{Bytes, Hex};
use crate::kernel::{KERNEL, Kernel, Module};
use crate::mem::aspace;
use crate::mem::frame::FrameAllocator;
use crate::mem::heap;
use crate::mem::paging;
use crate::mem::phys::DirectMap;
use crate::proc::sched::{RunQueues, Sleepers};
use crate::{VERSION, kprintln, power, traps};

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static ward_boot_stack_guard: u8;
    static ward_df_stack_guard: u8;
    static ward_df_stack_top: u8;
}

/// MSR numbers of the `syscall` instruction.
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SFMASK: u32 = 0xc000_0084;
/// RFLAGS bits `syscall` clears: TF, IF, DF, NT, AC.
const SFMASK: u64 = 0x0004_4700;

fn symbol(s: &u8) -> u64 {
    core::ptr::from_ref(s) as u64
}

/// Boots the kernel and runs the first program; never returns.
///
/// # Safety
/// As [`crate::kmain`].
pub(crate) unsafe fn start(boot_info_phys: u64) -> ! {
    let start = arch::rdtsc();
    // SAFETY: the VMM's boot tables map low memory at the direct map; only
    // we read the boot info.
    let Some(boot) = (unsafe { BootInfoView::from_phys(boot_info_phys) }) else {
        kprintln!("ward-kernel: no valid boot info at ", Hex(boot_info_phys));
        power::power_off(EXIT_BAD_BOOT_INFO);
    };
    let info = boot.info();
    let cmdline = boot.cmdline();
    kprintln!(
        "Ward kernel ",
        VERSION,
        " | memory ",
        info.memory_size >> 20,
        " MiB | cmdline \"",
        Bytes(cmdline.raw()),
        "\""
    );
    kprintln!(
        "[boot] boot info: version ",
        info.version,
        ", ",
        info.memory_regions().len(),
        " memory regions, ",
        info.devices().len(),
        " devices, ",
        info.modules().len(),
        " modules"
    );

    let mut mem = DirectMap;
    let Some(mut frames) = FrameAllocator::new(info.memory_regions(), &mut mem) else {
        fail("no usable memory for the frame allocator");
    };
    let usable = boot.usable_memory();
    kprintln!(
        "[boot] memory: ",
        usable.bytes >> 10,
        " KiB usable in ",
        usable.regions,
        " regions; ",
        frames.free_frames(),
        " frames free"
    );

    let heap_size = heap::heap_size(info.memory_size);
    let Some(heap_phys) = frames.bump_contiguous(heap_size / PAGE_SIZE) else {
        fail("no memory for the kernel heap");
    };
    // SAFETY: the frames were never handed out and are now the heap's; the
    // direct map covers them (boot tables now, ours later).
    unsafe { heap::init(crate::addr::phys_to_virt(heap_phys), heap_size) };
    frames.reserve_clean_pool();
    kprintln!("[boot] heap: ", heap_size >> 10, " KiB");

    // Our GDT and IDT live in the kernel image.
    // SAFETY: taking linker symbols' addresses only.
    let df_stack_top = unsafe { symbol(&ward_df_stack_top) };
    gdt::init(df_stack_top);
    traps::init();
    // SAFETY: the GDT selectors STAR names exist; LSTAR is our entry stub;
    // SFMASK clears IF so the stub runs with interrupts off.
    unsafe {
        arch::wrmsr(MSR_STAR, gdt::STAR);
        arch::wrmsr(MSR_LSTAR, traps::syscall_entry_addr());
        arch::wrmsr(MSR_SFMASK, SFMASK);
    }
    kprintln!(
        "[boot] traps: IDT loaded, ",
        traps::EXCEPTION_VECTORS,
        " exception vectors, timer, syscall; GDT and TSS"
    );

    if cmdline.has_flag("ward.panic") {
        requested_panic();
    }
    if cmdline.has_flag("ward.fault") {
        kprintln!("[boot] ward.fault: reading an unmapped address");
        arch::touch_unmapped();
    }

    // The VMM built our page tables; finish them: no guard page mapped,
    // the syscall entry executable from ring 3.
    let kernel_root = arch::read_cr3() & paging::ADDR_MASK;
    // SAFETY: taking linker symbols' addresses only.
    let guards = unsafe { [symbol(&ward_boot_stack_guard), symbol(&ward_df_stack_guard)] };
    let entry = traps::syscall_entry_page();
    if !aspace::finish_kernel_tables(&mut mem, kernel_root, &guards, entry) {
        fail("the VMM's page tables do not map the kernel image as expected");
    }
    for page in guards.into_iter().chain((entry.0..entry.1).step_by(usize_from(PAGE_SIZE))) {
        arch::invlpg(page);
    }
    // SAFETY: as above, for the image bounds.
    let (text, rodata) = unsafe { (symbol(&__kernel_start), symbol(&__text_end)) };
    kprintln!(
        "[boot] paging: W^X kernel tables from the VMM, guard pages unmapped; direct map of ",
        info.memory_size >> 20,
        " MiB; text ",
        (rodata - text) >> 10,
        " KiB at ",
        Hex(text - KERNEL_BASE)
    );

    // The I/O APIC routes device lines; the VMM does not map it for us.
    let ioapic = paging::WRITABLE | paging::NO_EXECUTE | paging::CACHE_DISABLE | paging::WRITE_THROUGH | paging::GLOBAL;
    let ioapic_virt = crate::addr::phys_to_virt(IOAPIC_BASE);
    if paging::map_page(&mut mem, &mut frames, kernel_root, ioapic_virt, IOAPIC_BASE, ioapic).is_err() {
        fail("cannot map the I/O APIC");
    }
    lapic::init();
    // The debug console's line is the power button (ward_abi::debug_console).
    let power_button = info.devices().iter().find(|d| d.kind == DeviceKind::DebugConsole as u32).map(|d| d.irq);
    if let Some(gsi) = power_button.filter(|&gsi| gsi != 0) {
        crate::arch::ioapic::route(gsi, ward_abi::debug_console::POWER_BUTTON_VECTOR);
    }
    kprintln!("[boot] timer: LAPIC in TSC-deadline mode, TSC ", info.tsc_khz, " kHz");

    let modules: Vec<Module> = info
        .modules()
        .iter()
        .filter(|m| m.base % PAGE_SIZE == 0 && m.base.checked_add(m.size).is_some_and(|end| end <= info.memory_size))
        .map(|m| Module { name: m.name, phys: m.base, size: m.size, program: None })
        .collect();
    let boot_programs: Vec<Module> = info
        .modules()
        .iter()
        .zip(&modules)
        .filter(|(m, _)| m.flags & MODULE_START_AT_BOOT != 0)
        .map(|(_, module)| *module)
        .collect();

    let devices = crate::virtio::Devices::probe(&mut mem, &mut frames, info.devices());
    kprintln!(
        "[boot] devices: ",
        if devices.console.is_some() { "virtio console, " } else { "" },
        if devices.rng.is_some() { "virtio rng, " } else { "" },
        devices.blocks.len(),
        " virtio block",
        if devices.vsock.is_some() { ", virtio vsock" } else { "" }
    );
    if let Some(v) = &devices.vsock {
        kprintln!("[boot]   vsock: cid ", v.guest_cid);
    }
    for (i, b) in devices.blocks.iter().enumerate() {
        kprintln!("[boot]   block ", i, ": ", b.sectors, " sectors", if b.read_only { ", read-only" } else { "" });
    }

    let kernel = Kernel {
        mem,
        frames,
        kernel_root,
        modules,
        procs: Default::default(),
        next_pid: 1,
        kstack_used: Vec::new(),
        dead_kstacks: Vec::new(),
        spare_kstacks: Vec::new(),
        sched_dirty: true,
        run: RunQueues::default(),
        sleepers: Sleepers::default(),
        current: None,
        resched: false,
        slice_end: 0,
        fpu_owner: None,
        tsc_khz: info.tsc_khz.max(1),
        boot_tsc: start,
        last_charge: start,
        init: 1,
        init_status: None,
        user_output_marked: false,
        stats: cmdline.has_flag("ward.stats"),
        armed: 0,
        cr3: kernel_root,
        stack_owner: None,
        devices,
        stopping: false,
    };
    // SAFETY: boot, interrupts off: nothing else can reach the kernel state.
    unsafe { KERNEL.set(kernel) };
    // SAFETY: as above; this is the only reference until we leave boot.
    let Some(k) = (unsafe { KERNEL.get() }) else { fail("kernel state missing") };

    // A stop asked for before the line was routed left no interrupt.
    if power_button.is_some_and(|gsi| gsi != 0) && power::stop_requested() {
        k.request_stop();
    }
    kprintln!("[boot] programs: ", k.modules.len(), " modules, ", boot_programs.len(), " to start at boot");
    // Like Linux's init, boot programs get the words after ` -- `.
    let args = cmdline.program_args();
    for module in &boot_programs {
        match crate::proc::spawn::spawn(k, module.name(), args, PRIORITY_DEFAULT, 0) {
            Ok(pid) => kprintln!("[boot] started ", Bytes(module.name()), " as process ", pid),
            Err(e) => {
                kprintln!("ward-kernel: cannot start boot program ", Bytes(module.name()), ": ", e.as_str());
                power::power_off(EXIT_BOOT_PROGRAM_FAILED);
            }
        }
    }
    let cycles = arch::rdtsc().wrapping_sub(start);
    kprintln!("[boot] ready after ", cycles, " TSC cycles in the kernel");
    if boot_programs.is_empty() {
        kprintln!("[boot] no programs to start; powering off");
        power::power_off(0);
    }
    traps::enter(k.schedule(core::ptr::null_mut()))
}

fn fail(what: &str) -> ! {
    kprintln!("kernel panic: ", what);
    power::power_off(ward_abi::debug_console::EXIT_PANIC)
}

/// Panics on purpose: `ward.panic` on the command line tests the panic path.
#[allow(clippy::panic, reason = "a deliberate panic, to test the panic path")]
fn requested_panic() -> ! {
    panic!("panic requested by ward.panic on the command line");
}
