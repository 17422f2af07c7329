//! `ward-vmm`: one compartment's VMM process, as `wardd` starts it.
//!
//! `ward-vmm --spec FILE` reads the compartment's resolved spec (see
//! `ward_compartments::vmm_spec`), sends the console to its capped history
//! file, runs the VM to the end, and records how it ended in the spec's
//! exit file (which `wardd` reads even if it was restarted meanwhile). It
//! exits with the guest's exit code, 125 if the guest crashed, 1 if the VM
//! could not start.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use ward_compartments::console_log::{CappedLog, spawn_writer};
use ward_compartments::run::{EXIT_CRASHED, exit_code};
use ward_compartments::vmm_spec::{ExitRecord, VmmSpec};
use ward_vmm::boot::ModuleSpec;
use ward_vmm::{ConsoleConfig, SeccompMode, VirtioConfig, VmConfig};

fn main() -> ExitCode {
    let started = Instant::now();
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
    let (record, code) = run(&spec, started);
    if let Err(e) = write_exit(&spec, &record) {
        eprintln!("ward-vmm: compartment {}: cannot write {}: {e}", spec.name, spec.exit_file.display());
    }
    ExitCode::from(code)
}

fn run(spec: &VmmSpec, started: Instant) -> (ExitRecord, u8) {
    let fail = |reason: String| {
        eprintln!("ward-vmm: compartment {}: {reason}", spec.name);
        (ExitRecord { exit_code: None, reason }, 1)
    };
    let Some(image) = ward_images::image(&spec.image) else {
        return fail(format!("no image called {:?}", spec.image));
    };
    let (console, writer) = match CappedLog::open(&spec.console_log, spec.log_cap).and_then(spawn_writer) {
        Ok(pair) => pair,
        Err(e) => return fail(format!("cannot open console log {}: {e}", spec.console_log.display())),
    };
    let config = VmConfig {
        name: spec.name.clone(),
        memory_mib: spec.memory_mib,
        cmdline: spec.cmdline.clone(),
        kernel: ward_images::KERNEL.into(),
        kvm_path: ward_vmm::kvm::DEFAULT_KVM_PATH.into(),
        virtio: VirtioConfig {
            console: spec.console.then(|| ConsoleConfig { input: None }),
            rng: spec.rng,
            disks: Vec::new(),
        },
        // This thread writes the exit record after the run: only the VMM's
        // own threads are filtered.
        seccomp: SeccompMode::VmmThreads,
        modules: image
            .programs()
            .map(|(p, start_at_boot)| ModuleSpec { name: p.name.to_owned(), image: p.elf.into(), start_at_boot })
            .collect(),
    };
    let result = ward_vmm::vm::run(&config, Box::new(console), started);
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

/// Writes the exit record atomically (a crash leaves the old one or none).
fn write_exit(spec: &VmmSpec, record: &ExitRecord) -> std::io::Result<()> {
    let tmp = spec.exit_file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(record).unwrap_or_default())?;
    std::fs::rename(tmp, &spec.exit_file)
}
