//! Builds the guest kernel and the guest programs as freestanding x86_64
//! ELFs and embeds them.
//!
//! The guest cannot be built with the host's flags: ring-0 code must not use
//! SSE (docs/PLATFORM.md), needs no red zone and the kernel code model, and links
//! with its own linker script. Cargo has no per-package target features on
//! stable, so this script runs a nested `cargo build` of `ward-kernel` (with
//! its `guest` feature) in a target directory of its own, with exactly those
//! flags in `CARGO_ENCODED_RUSTFLAGS`. The explicit `--target` keeps the
//! flags off build scripts and proc macros. The nested build always uses the
//! release profile: every ring-0 instruction is emulated on our hosts.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Codegen flags of the ring-0 kernel.
const KERNEL_RUSTFLAGS: &[&str] = &[
    "-Ctarget-feature=-mmx,-sse,-sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2,-fma",
    "-Cno-redzone=yes",
    "-Ccode-model=kernel",
    "-Crelocation-model=static",
];

/// Codegen flags of ring-3 programs: SSE is fine there (ring 3 runs
/// natively); they are static executables at fixed addresses.
const PROGRAM_RUSTFLAGS: &[&str] = &["-Crelocation-model=static"];

/// Environment the nested cargo keeps; everything else (the outer build's
/// RUSTFLAGS, wrappers such as clippy-driver, CARGO_* of this package) is
/// dropped so it cannot leak into the guest build.
fn keep_env(name: &str) -> bool {
    matches!(
        name,
        "PATH"
            | "HOME"
            | "TMPDIR"
            | "CARGO_HOME"
            | "RUSTUP_HOME"
            | "RUSTUP_TOOLCHAIN"
            | "RUSTC"
            | "CARGO_MAKEFLAGS"
            | "MAKEFLAGS"
            | "MFLAGS"
            | "SSL_CERT_FILE"
            | "SSL_CERT_DIR"
            | "NO_PROXY"
            | "no_proxy"
    ) || name.starts_with("CARGO_HTTP_")
        || name.starts_with("CARGO_NET_")
        || name.starts_with("CARGO_REGISTRIES_")
        || name.to_ascii_lowercase().ends_with("_proxy")
}

fn main() {
    if let Err(e) = build() {
        eprintln!("error: building the guest kernel failed: {e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.parent().ok_or("images/ has no parent")?.to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let guest_dir = guest_target_dir(&out_dir);

    for path in
        ["guest-kernel/kernel", "guest-kernel/abi", "guest-kernel/rt", "images/programs", "Cargo.lock", "Cargo.toml"]
    {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    let kernel_dir = guest_dir.join("kernel");
    cargo_build_guest(&root, &kernel_dir, "ward-kernel", &["--bin", "ward-kernel"], KERNEL_RUSTFLAGS)?;
    copy(&kernel_dir.join(GUEST_TARGET).join("release").join("ward-kernel"), &out_dir.join("ward-kernel"))?;

    let programs_dir = guest_dir.join("programs");
    cargo_build_guest(&root, &programs_dir, "ward-programs", &["--bins"], PROGRAM_RUSTFLAGS)?;
    let names = program_names(&root.join("images/programs/Cargo.toml"))?;
    let mut table = String::from("/// Every guest program, by name.\npub static PROGRAMS: &[Program] = &[\n");
    for name in &names {
        let dst = out_dir.join("programs").join(name);
        std::fs::create_dir_all(out_dir.join("programs"))
            .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
        copy(&programs_dir.join(GUEST_TARGET).join("release").join(name), &dst)?;
        table.push_str(&format!(
            "    Program {{ name: {name:?}, elf: include_bytes!({:?}) }},\n",
            dst.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("programs.rs"), table).map_err(|e| format!("writing programs.rs: {e}"))?;
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map(|_| ()).map_err(|e| format!("copying {}: {e}", from.display()))
}

/// The `[[bin]]` names of the programs package.
fn program_names(manifest: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(manifest).map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name = ") {
            names.push(value.trim_matches('"').to_owned());
        }
    }
    if names.is_empty() {
        return Err(format!("no [[bin]] in {}", manifest.display()));
    }
    Ok(names)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// `<target>/ward-guest`, shared by the debug and release builds of the host
/// so the guest is built once; `OUT_DIR` is `<target>/<profile>/build/<pkg>/out`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    let mut ancestors = out_dir.ancestors();
    match (ancestors.nth(2), ancestors.nth(1)) {
        (Some(build), Some(target)) if build.file_name().is_some_and(|n| n == "build") => target.join("ward-guest"),
        _ => out_dir.join("ward-guest"),
    }
}

fn cargo_build_guest(
    root: &Path,
    target_dir: &Path,
    package: &str,
    targets: &[&str],
    rustflags: &[&str],
) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.env_clear()
        .envs(std::env::vars().filter(|(k, _)| keep_env(k)))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .current_dir(root)
        .args(["build", "--release", "--package", package, "--features", "guest"])
        .args(targets)
        .args(["--target", GUEST_TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        .args([
            "--config",
            "profile.release.panic=\"abort\"",
            "--config",
            "profile.release.opt-level=2",
            "--config",
            "profile.release.codegen-units=1",
            "--config",
            "profile.release.lto=false",
            "--config",
            "profile.release.debug=\"line-tables-only\"",
        ]);
    let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build of {package} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}
