//! `ward` as a user runs it: a real process, a real `/dev/kvm`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

fn ward() -> Command {
    assert!(std::path::Path::new("/dev/kvm").exists(), "/dev/kvm is missing: these tests need it and never skip");
    Command::new(env!("CARGO_BIN_EXE_ward"))
}

fn run(args: &[&str]) -> Output {
    ward().args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failure is one clear line on stderr, a non-zero exit, and no panic.
fn assert_one_line_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.starts_with("ward: error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ward-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn run_hello_boots_and_exits_zero() {
    let out = run(&["run", "hello"]);
    let console = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(console.starts_with("Ward kernel "), "{console}");
    assert!(console.contains("[boot] ready after"), "{console}");
}

#[test]
fn memory_and_cmdline_reach_the_guest() {
    let out = run(&["run", "hello", "--memory", "24", "--cmdline", "a=1 b"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("| memory 24 MiB | cmdline \"a=1 b\""), "{}", text(&out.stdout));
}

#[test]
fn guest_exit_code_becomes_ward_exit_code() {
    let out = run(&["run", "hello", "--cmdline", "ward.panic"]);
    assert_eq!(out.status.code(), Some(101));
    assert!(text(&out.stdout).contains("kernel panic: panic requested by ward.panic"));
}

#[test]
fn timing_prints_the_four_milestones() {
    let out = run(&["run", "--timing", "hello"]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    for row in ["VM created", "first guest instruction", "first console line", "power-off"] {
        let line = err.lines().find(|l| l.trim_start().starts_with(row)).unwrap_or_default();
        assert!(line.trim_end().ends_with(" ms"), "no time for {row:?} in:\n{err}");
    }
}

#[test]
fn help_explains_the_options() {
    let top = text(&run(&["--help"]).stdout);
    assert!(top.contains("run") && top.contains("compartment"), "{top}");
    let out = run(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for option in ["--memory", "--cmdline", "--kernel", "--timing", "--kvm"] {
        assert!(help.contains(option), "ward run --help does not mention {option}:\n{help}");
    }
}

#[test]
fn images_and_doctor_say_the_same_in_json() {
    let out = run(&["images", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let images: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hello = images.as_array().unwrap().iter().find(|i| i["name"] == "hello").unwrap();
    assert_eq!(hello["boot"], serde_json::json!(["hello"]), "{images}");
    // Every image the table lists is in the document, and the other way.
    let table = text(&run(&["images"]).stdout);
    let names: Vec<&str> = table.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let json_names: Vec<&str> = images.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, json_names);

    let out = run(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let caps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kvm = caps.as_array().unwrap().iter().find(|c| c["name"] == "/dev/kvm").unwrap_or_else(|| panic!("{caps}"));
    assert_eq!(kvm["available"], true, "{caps}");
    let table = text(&run(&["doctor"]).stdout);
    let available = caps.as_array().unwrap().iter().filter(|c| c["available"] == true).count();
    assert!(table.contains(&format!("{available} of {} available", caps.as_array().unwrap().len())), "{table}");
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish_and_bash_accepts_its_own() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        for word in ["inspect", "restart", "timeout", "explain"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let bash = temp_file("ward.bash", &run(&["completions", "bash"]).stdout);
    let syntax = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", text(&syntax.stderr));
    // Sourced, it registers a completion for `ward`, and completes a verb.
    let script = format!(
        "source {}; complete -p ward; COMP_WORDS=(ward insp); COMP_CWORD=1; COMP_LINE='ward insp'; COMP_POINT=9; \
         _ward ward insp ward; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let sourced = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    let said = text(&sourced.stdout);
    assert!(sourced.status.success(), "{}", text(&sourced.stderr));
    assert!(said.contains("-F _ward ward") && said.lines().any(|l| l == "inspect"), "{said}");
}

#[test]
fn man_pages_are_written_for_every_command_and_man_renders_them() {
    let dir = std::env::temp_dir().join(format!("ward-cli-test-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(&["man", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in ["ward.1", "ward-stop.1", "ward-policy-explain.1", "ward-bench-boot.1", "wardd.1"] {
        assert!(dir.join(page).is_file(), "{page} missing; written: {}", text(&out.stdout));
    }
    assert!(!dir.join("ward-bench-unix-peer.1").exists(), "a hidden command got a page");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(dir.join("ward-stop.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let page = text(&rendered.stdout);
    assert!(rendered.status.success(), "man -l: {}", text(&rendered.stderr));
    assert!(page.contains("ward stop") && page.contains("--timeout") && page.contains("power button"), "{page}");
    let wardd = Command::new("man").arg("-l").arg(dir.join("wardd.1")).env("MANPAGER", "cat").output().unwrap();
    assert!(text(&wardd.stdout).contains("--ask-timeout"), "{}", text(&wardd.stdout));
}

#[test]
fn the_systemd_unit_for_wardd_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/wardd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/wardd\n"), "the README installs wardd there");
    // The same unit, with the wardd this build made; its Documentation= are
    // the pages `ward man` writes, which verify looks up.
    let wardd = std::path::Path::new(env!("CARGO_BIN_EXE_ward")).with_file_name("wardd");
    let dir = std::env::temp_dir().join(format!("ward-cli-test-unit-{}", std::process::id()));
    assert_eq!(run(&["man", dir.join("man1").to_str().unwrap()]).status.code(), Some(0));
    let path = dir.join("wardd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wardd", wardd.to_str().unwrap())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).env("MANPATH", &dir).output().unwrap();
    assert!(out.status.success(), "systemd-analyze verify: {}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "warnings from systemd-analyze verify");
}

#[test]
fn missing_kvm_device_is_one_clear_line() {
    let out = run(&["run", "hello", "--kvm", "/nonexistent/kvm"]);
    assert_one_line_error(&out, "/nonexistent/kvm does not exist");
}

#[test]
fn a_device_that_is_not_kvm_is_refused() {
    let out = run(&["run", "hello", "--kvm", "/dev/null"]);
    assert_one_line_error(&out, "/dev/null is not a KVM device");
}

#[test]
fn no_permission_on_kvm_is_one_clear_line() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    let mut cmd = ward();
    cmd.args(["run", "hello"]);
    if root {
        // Run as nobody: /dev/kvm is root's (mode 0600 here); a user without
        // access must get the permission message.
        cmd.uid(65534).gid(65534);
    }
    let meta = std::fs::metadata("/dev/kvm").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o006, 0, "/dev/kvm is world-accessible: this test cannot deny access");
    let out = cmd.output().unwrap();
    assert_one_line_error(&out, "no permission to open /dev/kvm");
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn kernel_file_that_is_not_elf_is_refused() {
    let path = temp_file("not-elf", b"#!/bin/sh\necho not a kernel\n");
    let out = run(&["run", "hello", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&out, "not an ELF file");
    assert!(text(&out.stderr).contains(path.to_str().unwrap()));
}

#[test]
fn kernel_file_for_another_architecture_is_refused() {
    let mut image = std::fs::read(env!("CARGO_BIN_EXE_ward")).unwrap();
    image[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let path = temp_file("aarch64-elf", &image);
    let out = run(&["run", "hello", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&out, "not an x86_64 ELF");
}

#[test]
fn missing_kernel_file_is_refused() {
    let out = run(&["run", "hello", "--kernel", "/nonexistent/kernel"]);
    assert_one_line_error(&out, "kernel file: cannot read /nonexistent/kernel");
}

/// Runs `ward` and fails the test if it has not ended within 30 s (a
/// `ward` blocked on a file would otherwise hang the suite).
fn run_bounded(args: &[&str]) -> Output {
    let mut child =
        ward().args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ward {args:?} still runs after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn kernel_that_is_a_fifo_a_device_or_a_directory_is_refused_without_blocking() {
    let dir = temp_file("placeholder", b"").parent().unwrap().to_owned();
    let fifo = dir.join("kernel-fifo");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = run_bounded(&["run", "hello", "--kernel", fifo.to_str().unwrap()]);
    assert_one_line_error(&out, "kernel-fifo is a FIFO, not a regular file");
    let out = run_bounded(&["run", "hello", "--kernel", "/dev/zero"]);
    assert_one_line_error(&out, "/dev/zero is a character device, not a regular file");
    let out = run_bounded(&["run", "hello", "--kernel", dir.to_str().unwrap()]);
    assert_one_line_error(&out, "is a directory, not a regular file");
}

#[test]
fn huge_sparse_kernel_file_is_refused_from_its_header() {
    let path = temp_file("sparse-kernel", b"");
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(2 << 30).unwrap();
    let out = run_bounded(&["run", "hello", "--kernel", path.to_str().unwrap()]);
    assert_one_line_error(&out, "not an ELF file");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn memory_too_small_or_too_large_is_refused() {
    assert_one_line_error(&run(&["run", "hello", "--memory", "4"]), "too small");
    assert_one_line_error(&run(&["run", "hello", "--memory", "100000"]), "too large");
}

#[test]
fn invalid_compartment_name_is_a_usage_error() {
    let out = run(&["run", "Bad/Name"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("use a-z, 0-9 and '-'"), "{}", text(&out.stderr));
}

/// A static x86_64 ELF kernel of one read-and-execute segment holding
/// `code`, linked and loaded at 1 MiB in Ward's kernel window.
fn tiny_kernel(code: &[u8]) -> Vec<u8> {
    let entry: u64 = 0xffff_ffff_8000_0000 + 0x10_0000;
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&entry.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // program headers
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = 64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    elf[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // offset
    elf[ph + 16..ph + 24].copy_from_slice(&entry.to_le_bytes());
    elf[ph + 24..ph + 32].copy_from_slice(&0x10_0000u64.to_le_bytes());
    elf[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    elf[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    elf.extend_from_slice(code);
    elf
}

#[test]
fn a_guest_halted_with_interrupts_disabled_ends_as_a_crash_instead_of_hanging() {
    let path = temp_file("cli-hlt-kernel", &tiny_kernel(&[0xfa, 0xf4, 0xeb, 0xfd])); // cli; hlt; jmp back
    let out = run_bounded(&["run", "hello", "--kernel", path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("crashed: halted with interrupts disabled at rip 0xffffffff80100002"), "{err}");
}

/// Starts `ward run` with `args`, waits until its console prints `line`,
/// sends it `signals` (a second after the first), and returns what it
/// printed and its exit code.
fn run_and_signal(args: &[&str], line: &str, signals: &[&str]) -> (String, Option<i32>) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = ward().args(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut console = String::new();
    while !console.contains(line) {
        assert!(stdout.read_line(&mut console).unwrap() > 0, "ended before {line:?}: {console}");
    }
    for (i, signal) in signals.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
        assert!(sent.success());
    }
    stdout.read_to_string(&mut console).unwrap();
    (console, child.wait().unwrap().code())
}

#[test]
fn sigterm_asks_the_guest_to_stop_and_its_program_finishes_its_disk_work() {
    let dir = std::env::temp_dir().join(format!("ward-cli-{}-stop", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("data.img");
    std::fs::File::create(&disk).unwrap().set_len(1 << 20).unwrap();
    let args = ["run", "store", "--image", "stop-marker", "--disk", disk.to_str().unwrap()];
    let (console, code) = run_and_signal(&args, "waiting to be asked to stop", &["TERM"]);
    assert_eq!(code, Some(0), "{console}");
    assert!(console.contains("ward-kernel: asked to stop; telling every program"), "{console}");
    assert!(console.contains("stop-marker: asked to stop; marker written and flushed"), "{console}");
    let bytes = std::fs::read(&disk).unwrap();
    assert!(bytes.starts_with(b"ward stop-marker: stopped cleanly after "), "{:?}", &bytes[..64]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_ctrl_c_ends_ward_run_when_the_guest_does_not_stop() {
    let (console, code) = run_and_signal(&["run", "deaf", "--image", "busy"], "busy: spinning", &["INT", "INT"]);
    assert!(console.contains("ward-kernel: asked to stop"), "the first asked: {console}");
    assert_eq!(code, Some(130), "128 + SIGINT, as a shell reports it: {console}");
}
