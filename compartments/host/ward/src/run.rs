//! `ward run`: boot a compartment in the foreground.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ward_vmm::boot::ModuleSpec;
use ward_vmm::loader::LoaderError;
use ward_vmm::signals::Again;
use ward_vmm::{
    BootTimings, ConsoleConfig, ConsoleInput, DiskConfig, KernelSource, SeccompMode, VirtioConfig, VmConfig, VmError,
    VmOutcome,
};

use crate::cli::RunArgs;
use crate::grant::{DiskRequest, GrantError, grant};
use crate::host_file::{self, HostFileError};
use crate::policy_source::{PolicySource, SourceError};

/// `ward run` exits with this code when the compartment crashed.
pub use ward_vmm_process::exit::{EXIT_CRASHED, exit_code};

/// `ward run` could not run the compartment.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The kernel file could not be opened as a regular file.
    #[error("kernel file: {0}")]
    ReadKernel(#[source] HostFileError),
    /// The kernel file is not a kernel Ward can boot.
    #[error("kernel file {path}: {source}")]
    BadKernel {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: LoaderError,
    },
    /// The policy could not be read.
    #[error(transparent)]
    Policy(#[from] SourceError),
    /// The policy does not allow the start as asked.
    #[error(transparent)]
    NotGranted(#[from] GrantError),
    /// No built-in image has that name.
    #[error("no image called {0:?}; `ward images` lists them")]
    UnknownImage(String),
    /// Standard input could not be given to the compartment.
    #[error("cannot pass standard input to the compartment: {0}")]
    Stdin(std::io::Error),
    /// The VMM failed.
    #[error("compartment {name}: {source}")]
    Vm {
        /// Compartment name.
        name: String,
        /// The error.
        source: VmError,
    },
}

/// Boots the compartment `args` describes, within what `policy` grants it,
/// its console on `console`.
pub fn run(
    args: &RunArgs,
    policy: &PolicySource,
    console: Box<dyn Write + Send>,
    started: Instant,
) -> Result<VmOutcome, RunError> {
    let grant = grant(&policy.load()?, &policy.describe(), &args.name, args.memory, args.image.as_deref())?;
    let sized: Vec<(DiskRequest, u64)> = args
        .disks
        .iter()
        // A missing file is reported by the VMM, naming it.
        .map(|d| (d.clone(), std::fs::metadata(&d.path).map_or(0, |m| m.len())))
        .collect();
    grant.check_disks(args.name.as_str(), &sized)?;
    let (kernel, kernel_name) = match &args.kernel {
        // Opened, never read whole: the VMM reads its headers, then only
        // its segments (bounded by guest memory), through the descriptor.
        Some(path) => {
            let (file, _) = host_file::open_regular(path, u64::MAX, "a kernel").map_err(RunError::ReadKernel)?;
            (KernelSource::File(Arc::new(file)), path.display().to_string())
        }
        None => (KernelSource::from(ward_images::KERNEL), "(built-in)".to_owned()),
    };
    let input = ConsoleInput::stdin().map_err(RunError::Stdin)?;
    let image = ward_images::image(&grant.image).ok_or_else(|| RunError::UnknownImage(grant.image.clone()))?;
    let modules = image
        .programs()
        .map(|(program, start_at_boot)| ModuleSpec {
            name: program.name.to_owned(),
            image: program.elf.into(),
            start_at_boot,
        })
        .collect();
    let config = VmConfig {
        name: args.name.to_string(),
        memory_mib: grant.memory_mib,
        cmdline: args.cmdline.clone(),
        kernel,
        kvm_path: args.kvm.clone(),
        kvm_fd: None,
        virtio: VirtioConfig {
            console: grant.console.then(|| ConsoleConfig { input: Some(input) }),
            rng: grant.rng,
            disks: args.disks.iter().map(|d| DiskConfig::at(&d.path, d.read_only)).collect(),
            // IPC goes through wardd's router (docs/IPC.md); a compartment
            // run on its own has no peer to reach.
            vsock: None,
        },
        seccomp: SeccompMode::AllThreads,
        modules,
    };
    // Ctrl-C (or SIGTERM) asks the guest to stop; a second one ends `ward
    // run` at once.
    ward_vmm::Vm::new(&config, console, started)
        .and_then(|vm| {
            if let Err(e) = ward_vmm::signals::press_on_stop_signals(vm.power_button(), Again::Exits) {
                log::warn!("compartment {}: Ctrl-C will not stop the guest gracefully: {e}", config.name);
            }
            vm.run()
        })
        .map_err(|source| match source {
            VmError::Loader(source) => RunError::BadKernel { path: kernel_name, source },
            source => RunError::Vm { name: config.name.clone(), source },
        })
}

/// The `ward images` listing.
pub fn images_report() -> String {
    let mut out = String::new();
    for image in ward_images::IMAGES {
        let boot = if image.boot.is_empty() { "-".to_owned() } else { image.boot.join(", ") };
        out.push_str(&format!("{:<12} {}  [boots: {}]\n", image.name, image.description, boot));
    }
    out
}

/// `ward images --json`: an array of `{name, description, boot, also}`.
pub fn images_json() -> serde_json::Value {
    ward_images::IMAGES
        .iter()
        .map(|image| {
            serde_json::json!({
                "name": image.name,
                "description": image.description,
                "boot": image.boot,
                "also": image.also,
            })
        })
        .collect()
}

/// `ward doctor --json`: an array of `{name, available, detail}`.
pub fn doctor_json(capabilities: &[ward_sandbox::jail::Capability]) -> serde_json::Value {
    capabilities
        .iter()
        .map(|c| serde_json::json!({ "name": c.name, "available": c.available, "detail": c.detail }))
        .collect()
}

/// The `--timing` report.
pub fn timing_report(timings: &BootTimings) -> String {
    let rows = [
        ("VM created", timings.vm_created),
        ("first guest instruction", timings.first_instruction),
        ("first console line", timings.first_console_line),
        ("first program output", timings.first_user_output),
        ("power-off", timings.power_off),
    ];
    let mut out = String::from("boot timing (host clock, from process start):\n");
    for (what, at) in rows {
        let value = at.map_or_else(|| "-".to_owned(), format_ms);
        out.push_str(&format!("  {what:<24} {value:>10}\n"));
    }
    out
}

fn format_ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_report_lists_each_milestone() {
        let report = timing_report(&BootTimings {
            vm_created: Some(Duration::from_micros(1500)),
            first_instruction: Some(Duration::from_millis(3)),
            first_console_line: None,
            first_user_output: None,
            power_off: Some(Duration::from_millis(10)),
        });
        assert!(report.contains("VM created"));
        assert!(report.contains("1.500 ms"));
        assert!(report.contains("first console line"));
        assert!(report.lines().any(|l| l.contains("first console line") && l.trim_end().ends_with('-')));
        assert!(report.contains("10.000 ms"));
    }
}
