//! One compartment's VM, from `/dev/kvm` to power-off.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use ward_abi::boot::{DeviceInfo, DeviceKind};
use ward_abi::layout::{LAPIC_BASE, PAGE_SIZE};
use ward_abi::{debug_console, pages};

use crate::arch::{cpu, gdt, paging};
use crate::boot::{self, BootError, ModuleSpec};
use crate::devices::debug_console::{BootClock, DebugConsole, PowerButton, PowerControl};
use crate::devices::page_service::PageService;
use crate::devices::virtio::console::SharedSink;
use crate::devices::virtio::event_loop::{EventLoop, EventLoopError, StopHandle};
use crate::devices::virtio::setup::{self, VirtioConfig, VirtioError};
use crate::devices::{BusError, MmioBus};
use crate::kvm::{self, KvmError};
use crate::loader::{KernelSource, LoaderError};
use crate::memory::{self, MemoryError};
use crate::seccomp::{self, SeccompError, SeccompMode, ThreadRole};
use crate::vcpu::{self, VcpuError};

pub use crate::vcpu::GuestExit;

/// Where KVM may put the TSS it needs on Intel (three pages below 4 GiB,
/// above the LAPIC and outside guest RAM and the MMIO window).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// What to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Compartment name, for logs and errors.
    pub name: String,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Kernel command line.
    pub cmdline: String,
    /// The kernel ELF image.
    pub kernel: KernelSource,
    /// Programs placed in guest memory for the kernel to run.
    pub modules: Vec<ModuleSpec>,
    /// The KVM device.
    pub kvm_path: PathBuf,
    /// `/dev/kvm` already open (a jailed process cannot open it); `None`:
    /// open `kvm_path`.
    pub kvm_fd: Option<Arc<std::os::fd::OwnedFd>>,
    /// The virtio devices (console, entropy, disks); none by default.
    pub virtio: VirtioConfig,
    /// Which threads get a seccomp filter: [`SeccompMode::AllThreads`] for
    /// a process that only runs this VM, [`SeccompMode::VmmThreads`] for a
    /// jailed one with work after the run, [`SeccompMode::Off`] inside a
    /// test harness.
    pub seccomp: SeccompMode,
}

/// Building or running the VM failed on the host side.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Opening KVM failed.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// KVM_CREATE_VM failed.
    #[error("cannot create the VM: {0}")]
    CreateVm(kvm_ioctls::Error),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("cannot create the in-kernel interrupt controller: {0}")]
    Irqchip(kvm_ioctls::Error),
    /// The power button's line could not be made or wired.
    #[error("cannot wire the power button's interrupt line: {0}")]
    PowerButton(std::io::Error),
    /// KVM_SET_TSS_ADDR failed.
    #[error("cannot set the TSS address: {0}")]
    TssAddress(kvm_ioctls::Error),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// More memory regions than KVM slots.
    #[error("guest memory has more regions than KVM has slots")]
    TooManyMemorySlots,
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("cannot give guest memory to KVM: {0}")]
    RegisterMemory(kvm_ioctls::Error),
    /// The kernel image was refused.
    #[error("kernel image: {0}")]
    Loader(#[from] LoaderError),
    /// The boot info could not be written.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The GDT or page tables could not be written.
    #[error("cannot write boot structures into guest memory: {0}")]
    BootStructures(#[from] vm_memory::GuestMemoryError),
    /// The kernel's page tables could not be built.
    #[error(transparent)]
    Paging(#[from] paging::PagingError),
    /// KVM_GET_TSC_KHZ failed.
    #[error("cannot read the vCPU's TSC frequency: {0}")]
    TscFrequency(kvm_ioctls::Error),
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create the vCPU: {0}")]
    CreateVcpu(kvm_ioctls::Error),
    /// The vCPU could not be set up.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// A device could not be placed on the bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The vCPU thread could not start.
    #[error("cannot start the vCPU thread: {0}")]
    SpawnVcpu(std::io::Error),
    /// The handler of the vCPU kick (`signals`) could not be installed.
    #[error("cannot install the vCPU kick's signal handler: {0}")]
    KickHandler(std::io::Error),
    /// The vCPU thread panicked (a VMM bug, never the guest's doing).
    #[error("the vCPU thread panicked")]
    VcpuPanicked,
    /// Running the vCPU failed.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// The virtio devices could not be set up.
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    /// The device loop could not be set up or failed.
    #[error(transparent)]
    DeviceLoop(#[from] EventLoopError),
    /// The device thread could not start.
    #[error("cannot start the virtio device thread: {0}")]
    SpawnDeviceThread(std::io::Error),
    /// The device thread panicked (a VMM bug, never the guest's doing).
    #[error("the virtio device thread panicked")]
    DeviceThreadPanicked,
    /// A seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// Host-side durations from process start to each boot milestone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootTimings {
    /// The VM exists: KVM opened, VM and irqchip created, memory registered.
    pub vm_created: Option<Duration>,
    /// The kernel's first instruction ran (its first boot mark reached us).
    pub first_instruction: Option<Duration>,
    /// The kernel's first console line reached us.
    pub first_console_line: Option<Duration>,
    /// A guest program's first output reached us.
    pub first_user_output: Option<Duration>,
    /// The guest asked to power off.
    pub power_off: Option<Duration>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmOutcome {
    /// Why the guest stopped.
    pub exit: GuestExit,
    /// Boot timings.
    pub timings: BootTimings,
}

/// A compartment's VM, ready to run.
pub struct Vm {
    // Field order is drop order: the vCPU and VM go before the memory
    // KVM maps.
    vcpu: VcpuFd,
    _vm: VmFd,
    _kvm: Kvm,
    bus: MmioBus,
    console: Arc<Mutex<DebugConsole>>,
    power: Arc<PowerControl>,
    power_button: Arc<PowerButton>,
    clock: Arc<BootClock>,
    started: Instant,
    vm_created: Duration,
    name: String,
    devices: Option<(EventLoop, StopHandle)>,
    seccomp: SeccompMode,
    _memory: GuestMemoryMmap,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("name", &self.name).field("bus", &self.bus).finish_non_exhaustive()
    }
}

impl Vm {
    /// Builds the VM of `config`, with the guest's console going to
    /// `console`. `started` is when the process started, for timings.
    pub fn new(config: &VmConfig, console: Box<dyn Write + Send>, started: Instant) -> Result<Self, VmError> {
        // Check what the user gave before touching KVM.
        let memory_size = memory::checked_size(config.memory_mib)?;
        boot::check_cmdline(config.cmdline.as_bytes())?;
        config.kernel.check(memory_size)?;
        // The debug console and the virtio console share the sink; without
        // a virtio console the debug console has it to itself, as before.
        let (console, virtio_sink) = if config.virtio.console.is_some() {
            let shared = SharedSink::new(console);
            (Box::new(shared.clone()) as Box<dyn Write + Send>, Some(shared))
        } else {
            (console, None)
        };
        // Disk files are opened and checked before KVM is touched.
        let mut virtio_devices = setup::build(&config.name, &config.virtio, virtio_sink.as_ref())?;

        let kvm = match &config.kvm_fd {
            Some(fd) => kvm::from_fd(fd, &config.kvm_path)?,
            None => kvm::open(&config.kvm_path)?,
        };
        let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
        vm.set_tss_address(KVM_TSS_ADDRESS).map_err(VmError::TssAddress)?;
        vm.create_irq_chip().map_err(VmError::Irqchip)?;
        // A vhost-user backend maps guest memory too: then it is a memfd.
        let mem = if config.virtio.vsock.is_some() {
            memory::create_shared(&config.name, config.memory_mib)?
        } else {
            memory::create(config.memory_mib)?
        };
        register_memory(&vm, &mem)?;
        virtio_devices.extend(setup::build_vsock(&config.name, &config.virtio, &mem)?);
        let vm_created = started.elapsed();

        let kernel = config.kernel.load(&mem, memory_size)?;
        gdt::write_boot_gdt(&mem)?;

        let power = Arc::new(PowerControl::default());
        let line = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::PowerButton)?;
        vm.register_irqfd(&line, debug_console::POWER_BUTTON_GSI)
            .map_err(|e| VmError::PowerButton(std::io::Error::from_raw_os_error(e.errno())))?;
        let power_button = Arc::new(PowerButton::new(power.clone(), line));
        let clock = Arc::new(BootClock::default());
        let mut bus = MmioBus::new();
        let console =
            Arc::new(Mutex::new(DebugConsole::new(&config.name, mem.clone(), console, power.clone(), clock.clone())));
        bus.insert(debug_console::BASE, debug_console::SIZE, console.clone())?;
        let page_service = PageService::new(&config.name, mem.clone());
        bus.insert(pages::BASE, pages::SIZE, Arc::new(Mutex::new(page_service)))?;
        let mut devices = vec![
            DeviceInfo {
                kind: DeviceKind::DebugConsole as u32,
                irq: debug_console::POWER_BUTTON_GSI,
                mmio_base: debug_console::BASE,
                mmio_size: debug_console::SIZE,
            },
            DeviceInfo { kind: DeviceKind::PageService as u32, irq: 0, mmio_base: pages::BASE, mmio_size: pages::SIZE },
        ];
        let attached = setup::attach(&vm, &mut bus, &mem, &config.name, virtio_devices)?;
        devices.extend(attached.infos);
        let device_loop = if attached.workers.is_empty() { None } else { Some(EventLoop::new(attached.workers)?) };

        let modules = boot::place_modules(&mem, memory_size, &kernel, &config.modules)?;
        let mut mmio: Vec<(u64, u64)> = devices.iter().map(|d| (d.mmio_base, d.mmio_size)).collect();
        mmio.push((LAPIC_BASE, PAGE_SIZE));
        let cr3 = paging::write_kernel_tables(&mem, memory_size, &mmio, &kernel.segments)?;

        let vcpu = vm.create_vcpu(0).map_err(VmError::CreateVcpu)?;
        let tsc_khz = vcpu.get_tsc_khz().map_err(VmError::TscFrequency)?;
        let info = boot::build_boot_info(
            memory_size,
            u64::from(tsc_khz),
            &kernel,
            config.cmdline.as_bytes(),
            &devices,
            &modules,
        )?;
        let boot_info = boot::write(&mem, &info, config.cmdline.as_bytes())?;
        cpu::configure_vcpu(&kvm, &vcpu, kernel.entry, boot_info, cr3)?;

        Ok(Self {
            vcpu,
            _vm: vm,
            _kvm: kvm,
            bus,
            console,
            power,
            power_button,
            clock,
            started,
            vm_created,
            name: config.name.clone(),
            devices: device_loop,
            seccomp: config.seccomp,
            _memory: mem,
        })
    }

    /// The VM's power button: pressing it asks the guest to stop (see
    /// [`PowerButton`]); [`crate::signals::press_on_stop_signals`] lets
    /// SIGTERM and SIGINT press it.
    pub fn power_button(&self) -> Arc<PowerButton> {
        self.power_button.clone()
    }

    /// Runs the guest on a vCPU thread, and its virtio devices on a device
    /// thread, until it stops. With seccomp on, each thread installs its
    /// filter before it does the guest's work; with
    /// [`SeccompMode::AllThreads`] the calling thread installs the main
    /// filter once the others run, and keeps it.
    pub fn run(self) -> Result<VmOutcome, VmError> {
        let Self {
            mut vcpu,
            _vm,
            _kvm,
            bus,
            console,
            power,
            // Kept until the run ends: its line is wired to the guest.
            power_button: _power_button,
            clock,
            started,
            vm_created,
            name,
            devices,
            seccomp,
            _memory,
        } = self;
        let filtered = seccomp != SeccompMode::Off;
        crate::signals::install_kick_handler().map_err(VmError::KickHandler)?;
        let (exit, devices_result) = std::thread::scope(|scope| {
            let (device_thread, stop) = match devices {
                Some((event_loop, stop)) => {
                    let thread = std::thread::Builder::new()
                        .name(format!("virtio-{name}"))
                        .spawn_scoped(scope, move || {
                            crate::signals::leave_stop_signals_to_main();
                            if filtered {
                                seccomp::install(ThreadRole::DeviceLoop)?;
                            }
                            event_loop.run().map_err(VmError::from)
                        })
                        .map_err(VmError::SpawnDeviceThread)?;
                    (Some(thread), Some(stop))
                }
                None => (None, None),
            };
            // The vCPU thread says who it is, then runs; this thread kicks
            // it until it ends (`signals::kick`).
            let (me_tx, me_rx) = std::sync::mpsc::channel::<libc::pthread_t>();
            let vcpu_thread = std::thread::Builder::new().name(format!("vcpu0-{name}")).spawn_scoped(scope, || {
                crate::signals::leave_stop_signals_to_main();
                // Dropped when this thread's work ends, which tells the kicker.
                let running = me_tx;
                // SAFETY: pthread_self has no preconditions.
                let _ = running.send(unsafe { libc::pthread_self() });
                if filtered {
                    seccomp::install(ThreadRole::Vcpu)?;
                }
                vcpu::run(&mut vcpu, &bus, &power, &name).map_err(VmError::from)
            });
            let exit = match vcpu_thread {
                Ok(thread) => {
                    if seccomp == SeccompMode::AllThreads
                        && let Err(e) = seccomp::install(ThreadRole::Main)
                    {
                        // The guest runs already; stop it is all we could do,
                        // and the vCPU filter holds: log and go on.
                        log::error!("compartment {name}: {e}");
                    }
                    if let Ok(vcpu_thread) = me_rx.recv() {
                        while let Err(RecvTimeoutError::Timeout) = me_rx.recv_timeout(crate::signals::KICK_INTERVAL) {
                            crate::signals::kick(vcpu_thread);
                        }
                    }
                    thread.join().map_err(|_| VmError::VcpuPanicked).and_then(|exit| exit)
                }
                Err(e) => Err(VmError::SpawnVcpu(e)),
            };
            // The guest stopped: so do its devices.
            if let Some(stop) = stop {
                stop.stop();
            }
            let devices_result = device_thread.map_or(Ok(()), |thread| {
                thread.join().map_err(|_| VmError::DeviceThreadPanicked).and_then(|result| result)
            });
            Ok::<_, VmError>((exit, devices_result))
        })?;
        // Whatever the guest printed last reaches the user, crash or not.
        console.lock().unwrap_or_else(PoisonError::into_inner).flush_line();
        let exit = exit?;
        devices_result?;
        let since = |at: Option<&Instant>| at.map(|t| t.saturating_duration_since(started));
        let timings = BootTimings {
            vm_created: Some(vm_created),
            first_instruction: since(clock.first_instruction.get()),
            first_console_line: since(clock.first_console_line.get()),
            first_user_output: since(clock.first_user_output.get()),
            power_off: since(clock.power_off.get()),
        };
        Ok(VmOutcome { exit, timings })
    }
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
    for (slot, region) in mem.iter().enumerate() {
        let region_desc = kvm_userspace_memory_region {
            slot: u32::try_from(slot).map_err(|_| VmError::TooManyMemorySlots)?,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: mem.get_host_address(region.start_addr()).map_err(VmError::BootStructures)? as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `mem`, which the `Vm`
        // keeps until after the `VmFd` is dropped (field order), so KVM never
        // sees the mapping go away while the VM exists.
        unsafe { vm.set_user_memory_region(region_desc) }.map_err(VmError::RegisterMemory)?;
    }
    Ok(())
}

/// Boots `config` and runs it to the end: [`Vm::new`] then [`Vm::run`].
pub fn run(config: &VmConfig, console: Box<dyn Write + Send>, started: Instant) -> Result<VmOutcome, VmError> {
    Vm::new(config, console, started)?.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::DiskConfig;
    use crate::devices::virtio::console::ConsoleConfig;
    use crate::loader::test_elf::build;
    use vm_memory::{Bytes, GuestAddress};
    use ward_abi::boot::BootInfo;
    use ward_abi::layout::{BOOT_INFO_ADDR, KERNEL_BASE, PHYS_MAP_BASE};
    use ward_abi::virtio::{FIRST_GSI, FIRST_SLOT_BASE};
    use zerocopy::FromBytes;

    /// A kernel whose first instructions power off with exit code 7.
    fn power_off_kernel() -> KernelSource {
        let register = PHYS_MAP_BASE + debug_console::BASE + debug_console::REG_POWER_OFF;
        let mut code = vec![0x48, 0xb8]; // mov rax, imm64
        code.extend_from_slice(&register.to_le_bytes());
        code.extend_from_slice(&[0xc7, 0x00, 7, 0, 0, 0]); // mov dword [rax], 7
        code.extend_from_slice(&[0xeb, 0xfe]); // jmp $
        let entry = KERNEL_BASE + 0x10_0000;
        build(entry, &[(entry, 0x10_0000, 5, &code, code.len() as u64)]).into()
    }

    fn config(virtio: VirtioConfig) -> VmConfig {
        VmConfig {
            name: "vm-test".into(),
            memory_mib: 16,
            cmdline: String::new(),
            kernel: power_off_kernel(),
            modules: Vec::new(),
            kvm_path: PathBuf::from(kvm::DEFAULT_KVM_PATH),
            kvm_fd: None,
            virtio,
            seccomp: SeccompMode::Off,
        }
    }

    #[test]
    fn missing_disk_file_is_refused_by_name_before_kvm_is_opened() {
        let disk = DiskConfig::at("/nonexistent/disk.img", false);
        let mut config = config(VirtioConfig { disks: vec![disk], ..VirtioConfig::default() });
        config.kvm_path = PathBuf::from("/nonexistent/kvm");
        let err = Vm::new(&config, Box::new(std::io::sink()), Instant::now()).unwrap_err();
        assert_eq!(err.to_string(), "disk file /nonexistent/disk.img does not exist");
    }

    #[test]
    fn virtio_devices_follow_the_debug_console_and_page_service_in_the_boot_info() {
        let virtio =
            VirtioConfig { console: Some(ConsoleConfig::default()), rng: true, disks: Vec::new(), vsock: None };
        let vm = Vm::new(&config(virtio), Box::new(std::io::sink()), Instant::now()).unwrap();
        let mut bytes = vec![0u8; std::mem::size_of::<BootInfo>()];
        vm._memory.read_slice(&mut bytes, GuestAddress(BOOT_INFO_ADDR)).unwrap();
        let info = BootInfo::read_from_bytes(&bytes).unwrap();
        let devices: Vec<(u32, u32, u64)> = info.devices().iter().map(|d| (d.kind, d.irq, d.mmio_base)).collect();
        let virtio = DeviceKind::VirtioMmio as u32;
        assert_eq!(
            devices,
            [
                (DeviceKind::DebugConsole as u32, debug_console::POWER_BUTTON_GSI, debug_console::BASE),
                (DeviceKind::PageService as u32, 0, pages::BASE),
                (virtio, FIRST_GSI, FIRST_SLOT_BASE),
                (virtio, FIRST_GSI + 1, FIRST_SLOT_BASE + PAGE_SIZE),
            ]
        );
    }

    #[test]
    fn a_vm_with_devices_runs_and_stops_its_device_thread() {
        let virtio =
            VirtioConfig { console: Some(ConsoleConfig::default()), rng: true, disks: Vec::new(), vsock: None };
        let mut config = config(virtio);
        // The threads Vm::run starts are its own: filter them, not the harness.
        config.seccomp = SeccompMode::VmmThreads;
        let outcome = run(&config, Box::new(std::io::sink()), Instant::now()).unwrap();
        assert_eq!(outcome.exit, GuestExit::PowerOff(7));
    }

    #[test]
    fn a_guest_halted_with_interrupts_disabled_is_ended_as_a_crash() {
        let entry = KERNEL_BASE + 0x10_0000;
        let code = [0xfa, 0xf4, 0xeb, 0xfd]; // cli; hlt; jmp back to the hlt
        let mut config = config(VirtioConfig::default());
        config.kernel = build(entry, &[(entry, 0x10_0000, 5, &code, code.len() as u64)]).into();
        // The vCPU thread's filter must let it look at the vCPU after a kick.
        config.seccomp = SeccompMode::VmmThreads;
        let outcome = run(&config, Box::new(std::io::sink()), Instant::now()).unwrap();
        assert_eq!(outcome.exit, GuestExit::Halted { rip: entry + 2 });
        assert_eq!(outcome.exit.exit_code(), None);
    }

    #[test]
    fn a_vm_without_devices_has_no_device_thread() {
        let vm = Vm::new(&config(VirtioConfig::default()), Box::new(std::io::sink()), Instant::now()).unwrap();
        assert!(vm.devices.is_none());
        assert_eq!(vm.run().unwrap().exit, GuestExit::PowerOff(7));
    }
}
