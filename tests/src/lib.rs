//! Helpers for Ward's end-to-end tests, which boot real compartments on
//! `/dev/kvm` through `ward-vmm` and inspect the guest images.
//!
//! The tests live in `tests/`. KVM tests never skip: without `/dev/kvm`
//! they fail and say so. Tests of the `ward` command line as a process live
//! next to it, in `compartments/tests/`.

#![allow(clippy::panic, reason = "test helpers fail the test by panicking")]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ward_vmm::{VmConfig, VmOutcome};

/// Fails the test, loudly, when this machine has no `/dev/kvm`.
pub fn require_kvm() {
    assert!(std::path::Path::new("/dev/kvm").exists(), "/dev/kvm is missing: Ward's KVM tests need it and never skip");
}

/// A console sink the test can read back.
#[derive(Clone, Debug, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A config for compartment `name` on the built-in kernel.
pub fn config(name: &str, memory_mib: u64, cmdline: &str) -> VmConfig {
    VmConfig {
        name: name.to_owned(),
        memory_mib,
        cmdline: cmdline.to_owned(),
        kernel: ward_images::KERNEL.into(),
        kvm_path: PathBuf::from("/dev/kvm"),
        kvm_fd: None,
        virtio: ward_vmm::VirtioConfig::default(),
        seccomp: ward_vmm::SeccompMode::Off,
        modules: Vec::new(),
    }
}

/// A config for compartment `name` booting the built-in image `image`.
pub fn config_with_image(name: &str, image: &str, memory_mib: u64, cmdline: &str) -> VmConfig {
    let image = ward_images::image(image).unwrap_or_else(|| panic!("no built-in image {image}"));
    let mut config = config(name, memory_mib, cmdline);
    config.modules = image
        .programs()
        .map(|(program, start_at_boot)| ward_vmm::boot::ModuleSpec {
            name: program.name.to_owned(),
            image: program.elf.into(),
            start_at_boot,
        })
        .collect();
    config
}

/// Boots `config` on `/dev/kvm` and returns how it ended and its console.
pub fn boot(config: &VmConfig) -> (VmOutcome, String) {
    require_kvm();
    let console = Capture::default();
    let outcome = ward_vmm::vm::run(config, Box::new(console.clone()), Instant::now())
        .unwrap_or_else(|e| panic!("compartment {} failed to run: {e}", config.name));
    (outcome, console.text())
}
