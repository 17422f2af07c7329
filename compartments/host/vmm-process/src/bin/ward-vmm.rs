//! `ward-vmm`: one compartment's VMM process, as `wardd` starts it.
//!
//! `ward-vmm --spec FILE` reads the compartment's resolved spec (see
//! `ward_vmm_process::spec`) and, when the spec asks for a jail:
//! 1. forks into a PID namespace of its own (this process stays as a
//!    waiter that forwards signals and the exit code; the child is PID 1);
//! 2. opens everything it will need: `/dev/kvm`, its console history files,
//!    its exit-record file;
//! 3. enters the jail (`ward_sandbox::jail`): mount, network, IPC and
//!    UTS namespaces, an empty private root, an unprivileged uid/gid,
//!    `no_new_privs`, resource limits, every other descriptor closed; what
//!    the host did not allow is reported once, here, on stderr;
//! 4. only then starts threads, builds the VM from the open descriptors and
//!    runs it (the VMM's own threads add seccomp filters).
//!
//! The console goes to the capped history; how the guest ended goes to the
//! exit record, which `wardd` reads even if it was restarted meanwhile. The
//! process exits with the guest's exit code, 125 if the guest crashed, 1 if
//! the VM could not start.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use ward_sandbox::jail::{self, JailSpec, PidNamespace};
use ward_sandbox::process;
use ward_sandbox::spawner;
use ward_vmm::boot::ModuleSpec;
use ward_vmm::signals::Again;
use ward_vmm::{ConsoleConfig, ConsoleInput, DiskConfig, SeccompMode, VirtioConfig, VmConfig, VsockConfig};
use ward_vmm_process::console_log::{CappedLog, spawn_writer};
use ward_vmm_process::exit::{EXIT_CRASHED, exit_code};
use ward_vmm_process::spec::{ExitRecord, VmmSpec};

fn main() -> ExitCode {
    let started = Instant::now();
    // A VMM outlives the wardd that started it (a restarted one adopts it).
    spawner::outlive_parent();
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("WARD_LOG", "warn"))
        .format(|buf, record| writeln!(buf, "ward-vmm: {}: {}", record.level().as_str().to_lowercase(), record.args()))
        .init();
    let mut args = std::env::args().skip(1);
    let spec_path = match (args.next().as_deref(), args.next()) {
        (Some("--spec"), Some(path)) => path,
        _ => {
            eprintln!("ward-vmm: usage: ward-vmm --spec FILE (it is started by wardd)");
            return ExitCode::from(2);
        }
    };
    let spec: VmmSpec = match std::fs::read(&spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("ward-vmm: cannot read spec {spec_path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // It outlives the daemon from here on: the daemon's `start` may return.
    if let Some(fd) = spec.started_fd {
        match process::adopt_inherited_fd(fd) {
            Some(fd) => drop(File::from(fd).write_all(b"s")),
            None => eprintln!("ward-vmm: compartment {}: the started descriptor {fd} is not open", spec.name),
        }
    }
    if spec.jail {
        match jail::enter_pid_namespace() {
            Ok(PidNamespace::Parent { child }) => jail::wait_and_exit(child),
            Ok(PidNamespace::Child) => {}
            Err(e) => eprintln!("ward-vmm: compartment {}: no PID namespace: {e}", spec.name),
        }
    }
    process::exit_on_stop_signals();
    let opened = match Opened::open(&spec) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ward-vmm: compartment {}: {e}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    record_signal_exits_in(&opened.exit);
    if spec.jail {
        let mut jail = JailSpec::new(&spec.name, spec.memory_mib << 20, opened.keep_fds());
        if let Some(uid) = spec.uid {
            // Its own identity: the task limit counts this compartment only.
            (jail.uid, jail.gid) = (uid, uid);
            jail.limits.processes = jail.limits.processes.min(COMPARTMENT_TASKS);
        }
        match jail::enter(&jail) {
            Ok(report) if report.is_complete() => {}
            Ok(report) => {
                eprintln!("ward-vmm: compartment {}: jailed, except: {}", spec.name, report.missing_summary())
            }
            Err(e) => {
                eprintln!("ward-vmm: compartment {}: cannot enter the jail: {e}", spec.name);
                // The exit file is closed on return; a late signal must not
                // write to whatever reuses its number.
                process::leave_nothing_on_stop();
                return ExitCode::FAILURE;
            }
        }
    }
    let Opened { kvm, log, mut exit, disks, vsock } = opened;
    let (record, code) = run(&spec, kvm, log, disks, vsock, started);
    // From here the run's own record is written; a late signal leaves it.
    process::leave_nothing_on_stop();
    let json = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(e) = exit.write_all(&json) {
        eprintln!("ward-vmm: compartment {}: cannot write its exit record: {e}", spec.name);
    }
    ExitCode::from(code)
}

/// Most tasks (threads) a compartment with its own uid may have: the VMM
/// has four or five.
const COMPARTMENT_TASKS: u64 = 64;

/// Prepares the record a stopping signal leaves in `exit`.
fn record_signal_exits_in(exit: &File) {
    let record = ExitRecord { exit_code: None, reason: "stopped by a signal before the guest powered off".into() };
    process::leave_on_stop(exit, serde_json::to_vec(&record).unwrap_or_default());
}

/// Everything the process needs after the jail closes the world.
struct Opened {
    kvm: OwnedFd,
    log: CappedLog,
    exit: File,
    /// The spec's disks, in order.
    disks: Vec<File>,
    /// The vsock device's sockets (backend, reconnect), inherited.
    vsock: Option<(OwnedFd, OwnedFd)>,
}

impl Opened {
    fn open(spec: &VmmSpec) -> Result<Self, String> {
        let kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ward_vmm::kvm::DEFAULT_KVM_PATH)
            .map_err(|e| format!("cannot open {}: {e}", ward_vmm::kvm::DEFAULT_KVM_PATH))?;
        let log = CappedLog::open(&spec.console_log, spec.log_cap)
            .map_err(|e| format!("cannot open console log {}: {e}", spec.console_log.display()))?;
        let exit = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&spec.exit_file)
            .map_err(|e| format!("cannot open {}: {e}", spec.exit_file.display()))?;
        let disks = spec
            .disks
            .iter()
            .map(|d| {
                // wardd resolved the path; a link put there since is refused.
                OpenOptions::new()
                    .read(true)
                    .write(!d.read_only)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&d.path)
                    .map_err(|e| format!("cannot open disk {}: {e}", d.path.display()))
            })
            .collect::<Result<_, _>>()?;
        let vsock = spec
            .vsock
            .map(|v| {
                // Two descriptors, each with one owner. (Those opened above
                // cannot have their numbers: they were open at exec.)
                if v.backend_fd == v.reconnect_fd {
                    return Err(format!("the vsock descriptors are both {}", v.backend_fd));
                }
                Ok((inherited(v.backend_fd, "vsock backend")?, inherited(v.reconnect_fd, "vsock reconnect")?))
            })
            .transpose()?;
        Ok(Self { kvm: kvm.into(), log, exit, disks, vsock })
    }

    fn keep_fds(&self) -> Vec<std::os::fd::RawFd> {
        let mut fds = vec![self.kvm.as_raw_fd(), self.exit.as_raw_fd()];
        fds.extend(self.log.fds());
        fds.extend(self.disks.iter().map(AsRawFd::as_raw_fd));
        if let Some((backend, reconnect)) = &self.vsock {
            fds.extend([backend.as_raw_fd(), reconnect.as_raw_fd()]);
        }
        fds
    }
}

/// Takes ownership of descriptor `fd` that wardd left open for us.
fn inherited(fd: i32, what: &str) -> Result<OwnedFd, String> {
    process::adopt_inherited_fd(fd).ok_or_else(|| format!("the {what} descriptor {fd} is not open"))
}

fn run(
    spec: &VmmSpec,
    kvm: OwnedFd,
    log: CappedLog,
    disks: Vec<File>,
    vsock: Option<(OwnedFd, OwnedFd)>,
    started: Instant,
) -> (ExitRecord, u8) {
    let fail = |reason: String| {
        eprintln!("ward-vmm: compartment {}: {reason}", spec.name);
        (ExitRecord { exit_code: None, reason }, 1)
    };
    let Some(image) = ward_images::image(&spec.image) else {
        return fail(format!("no image called {:?}", spec.image));
    };
    let (console, writer) = match spawn_writer(log) {
        Ok(pair) => pair,
        Err(e) => return fail(format!("cannot start the console log writer: {e}")),
    };
    let config = VmConfig {
        name: spec.name.clone(),
        memory_mib: spec.memory_mib,
        cmdline: spec.cmdline.clone(),
        kernel: ward_images::KERNEL.into(),
        kvm_path: ward_vmm::kvm::DEFAULT_KVM_PATH.into(),
        kvm_fd: Some(Arc::new(kvm)),
        virtio: VirtioConfig {
            console: spec
                .console
                .then(|| ConsoleConfig { input: spec.console_input.then(ConsoleInput::stdin).and_then(Result::ok) }),
            rng: spec.rng,
            disks: spec
                .disks
                .iter()
                .zip(disks)
                .map(|(d, file)| DiskConfig { opened: Some(Arc::new(file)), ..DiskConfig::at(&d.path, d.read_only) })
                .collect(),
            vsock: spec
                .vsock
                .zip(vsock)
                .map(|(v, (backend, reconnect))| VsockConfig::new(v.cid, backend, Some(reconnect))),
        },
        // This thread writes the exit record after the run: only the VMM's
        // own threads are filtered.
        seccomp: SeccompMode::VmmThreads,
        modules: image
            .programs()
            .map(|(p, start_at_boot)| ModuleSpec { name: p.name.to_owned(), image: p.elf.into(), start_at_boot })
            .collect(),
    };
    // From here a stop signal (wardd's `ward stop`) presses the guest's
    // power button instead of ending the process: the guest's programs
    // finish and it powers off; wardd kills the VMM at the stop's deadline
    // if it does not. Before here, the signal ends the process at once:
    // there is no guest to ask yet.
    let result = ward_vmm::Vm::new(&config, Box::new(console), started).and_then(|vm| {
        if let Err(e) = ward_vmm::signals::press_on_stop_signals(vm.power_button(), Again::Presses) {
            eprintln!("ward-vmm: compartment {}: a stop will not be graceful: {e}", spec.name);
        }
        vm.run()
    });
    // Every console byte is on disk before the exit record says it ended.
    drop(config);
    let _ = writer.join();
    match result {
        Ok(outcome) => {
            let code = exit_code(&outcome.exit);
            let exit_code = outcome.exit.exit_code().and_then(|c| i32::try_from(c).ok());
            let reason = outcome.exit.to_string();
            if code == EXIT_CRASHED {
                eprintln!("ward-vmm: compartment {} {reason}", spec.name);
            }
            (ExitRecord { exit_code, reason }, code)
        }
        Err(e) => fail(e.to_string()),
    }
}
