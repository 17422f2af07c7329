//! The `ward-vmm` process on its own, as wardd starts it: a spec in, a
//! guest run on real KVM, its console in the history and how it ended in
//! the exit record; a spec it cannot use is refused, naming the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ward_vmm_process::console_log::read_history;
use ward_vmm_process::spec::{ExitRecord, VmmSpec};

fn dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ward-vmm-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec(dir: &Path, image: &str, cmdline: &str) -> VmmSpec {
    VmmSpec {
        name: "lone".into(),
        image: image.into(),
        memory_mib: 16,
        cmdline: cmdline.into(),
        console_log: dir.join("console.log"),
        log_cap: 1 << 20,
        exit_file: dir.join("exit.json"),
        jail: false,
        console: false,
        console_input: false,
        rng: false,
        disks: Vec::new(),
        uid: None,
        vsock: None,
        started_fd: None,
    }
}

fn ward_vmm(spec_file: &Path) -> Output {
    assert!(Path::new("/dev/kvm").exists(), "/dev/kvm is missing: this test needs it and never skips");
    Command::new(env!("CARGO_BIN_EXE_ward-vmm")).arg("--spec").arg(spec_file).output().unwrap()
}

fn run(test: &str, image: &str, cmdline: &str) -> (Output, String, ExitRecord) {
    let dir = dir(test);
    let spec = spec(&dir, image, cmdline);
    let spec_file = dir.join("spec.json");
    std::fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = ward_vmm(&spec_file);
    let console = String::from_utf8_lossy(&read_history(&spec.console_log).unwrap()).into_owned();
    let record = serde_json::from_slice(&std::fs::read(&spec.exit_file).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (out, console, record)
}

#[test]
fn a_guest_that_powers_off_leaves_its_console_and_its_exit_code() {
    let (out, console, record) = run("hello", "hello", "");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(console.contains("hello from ring 3: process 1"), "{console}");
    assert_eq!(record.exit_code, Some(0), "{record:?}");
}

#[test]
fn a_kernel_panic_is_exit_code_101_in_the_process_and_the_record() {
    let (out, console, record) = run("panic", "hello", "ward.panic");
    assert_eq!(out.status.code(), Some(101), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(console.contains("panic"), "{console}");
    assert_eq!(record.exit_code, Some(101), "{record:?}");
}

#[test]
fn a_spec_with_an_unknown_field_is_refused_naming_the_file() {
    let dir = dir("unknown-field");
    let spec_file = dir.join("spec.json");
    let mut json = serde_json::to_value(spec(&dir, "hello", "")).unwrap();
    json["memory"] = 64.into();
    std::fs::write(&spec_file, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = ward_vmm(&spec_file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*spec_file.to_string_lossy()) && stderr.contains("unknown field `memory`"), "{stderr}");
    assert!(!dir.join("exit.json").exists(), "nothing ran, so there is no exit record");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_spec_it_prints_its_usage_and_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_ward-vmm")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: ward-vmm --spec FILE"));
}

#[test]
fn it_says_it_started_on_the_socket_its_starter_gave_it() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let dir = dir("started");
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut spec = spec(&dir, "hello", "");
    spec.started_fd = Some(theirs.as_raw_fd());
    let spec_file = dir.join("spec.json");
    std::fs::write(&spec_file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ward-vmm"));
    command.arg("--spec").arg(&spec_file);
    ward_sandbox::process::inherit_fds(&mut command, vec![theirs.as_raw_fd()]);
    let out = command.output().unwrap();
    drop(theirs);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut said = Vec::new();
    ours.read_to_end(&mut said).unwrap();
    assert_eq!(said, b"s", "one byte, then the socket is closed");
    let _ = std::fs::remove_dir_all(&dir);
}
