//! Helpers for Ward's end-to-end tests: running the `ward` binary and
//! booting compartments on the real `/dev/kvm`.
//!
//! The tests live in `tests/`. KVM tests never skip: if `/dev/kvm` is
//! missing they fail, saying so.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `ward` binary Cargo built for these tests.
pub fn ward_binary() -> PathBuf {
    let mut dir = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/ward
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("ward")
}

/// Fails the test, loudly, when this machine has no `/dev/kvm`.
pub fn require_kvm() {
    assert!(
        std::path::Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: Ward's KVM tests need it and never skip"
    );
}

/// Runs `ward` with `args` and returns its output.
pub fn ward(args: &[&str]) -> Output {
    require_kvm();
    let binary = ward_binary();
    Command::new(&binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build it with `cargo build --bin ward`)",
                binary.display()
            )
        })
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
