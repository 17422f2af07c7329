//! Virtio devices as a user meets them through `ward run`: the console's
//! input and output, entropy, disks read-write and read-only, and the
//! errors for disk files that cannot be used.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn ward(args: &[&str], stdin: &[u8]) -> Output {
    assert!(std::path::Path::new("/dev/kvm").exists(), "/dev/kvm is missing: these tests need it and never skip");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(args)
        .arg("--foreground")
        .env_remove("WARD_POLICY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn disk(test: &str, size: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("ward-devices-{}-{test}.img", std::process::id()));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    path
}

#[test]
fn standard_input_reaches_the_compartment_console() {
    let out = ward(&["run", "echoer", "--image", "echo"], b"first line\nsecond line\nquit\n");
    let console = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}{}", text(&out.stderr));
    assert!(console.contains("echo: first line\necho: second line\necho: bye"), "{console}");
}

#[test]
fn end_of_input_is_seen_by_the_program() {
    let out = ward(&["run", "echoer", "--image", "echo"], b"only\n");
    assert!(text(&out.stdout).contains("echo: only\necho: input ended"), "{}", text(&out.stdout));
}

#[test]
fn programs_draw_entropy_from_the_host() {
    let out = ward(&["run", "rng-user", "--image", "entropy"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("entropy: looks random"));
}

#[test]
fn a_disk_is_written_flushed_and_read_back_and_the_host_file_changes() {
    let path = disk("rw", 8 << 20);
    let out = ward(&["run", "disk-user", "--image", "disk", "--disk", path.to_str().unwrap()], b"");
    let console = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{console}{}", text(&out.stderr));
    assert!(console.contains("disk: 16384 sectors (8192 KiB), read-write, id \"ward-disk-0\""), "{console}");
    assert!(console.contains("read back 64 KiB at sector 16256: identical"), "{console}");
    // The guest's pattern is in the host file, at the sectors it wrote.
    let bytes = std::fs::read(&path).unwrap();
    let at = 16256 * 512;
    assert!(bytes[at..at + 64 * 1024].iter().enumerate().all(|(i, &b)| b == (i * 31 % 251).to_le_bytes()[0]));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_read_only_disk_refuses_writes_and_stays_unchanged() {
    let path = disk("ro", 1 << 20);
    let before = std::fs::read(&path).unwrap();
    let arg = format!("{}:ro", path.display());
    let out = ward(&["run", "disk-user", "--image", "disk", "--disk", &arg], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("disk: writing is refused: read-only"), "{}", text(&out.stdout));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn disk_files_that_cannot_be_used_are_one_clear_line() {
    let odd = disk("odd", 1000);
    for (arg, needle) in [
        (odd.to_str().unwrap().to_owned(), "is 1000 bytes, not a multiple of the 512-byte sector size"),
        ("/nonexistent/disk.img".to_owned(), "disk file /nonexistent/disk.img does not exist"),
    ] {
        let out = ward(&["run", "disk-user", "--image", "disk", "--disk", &arg], b"");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    std::fs::remove_file(odd).unwrap();
}

#[test]
fn the_policy_decides_which_disks_a_compartment_gets() {
    let path = disk("policy", 1 << 20);
    let p = path.to_str().unwrap();
    // The built-in policy's second volume is read-only.
    let out = ward(&["run", "disk-user", "--image", "disk", "--disk", &format!("{p}:ro"), "--disk", p], b"");
    assert!(text(&out.stderr).contains("is read-only by policy"), "{}", text(&out.stderr));
    // `hello` has no volumes at all.
    let out = ward(&["run", "hello", "--disk", p], b"");
    assert!(text(&out.stderr).contains("may have 0 disk(s) by its policy"), "{}", text(&out.stderr));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_disk_benchmark_reports_guest_and_host_figures_and_removes_its_file() {
    let dir = std::env::temp_dir().join(format!("ward-devices-{}-bench", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["bench", "disk", "--size", "4", "--dir", dir.to_str().unwrap()])
        .env_remove("WARD_POLICY")
        .output()
        .unwrap();
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}{}", text(&out.stderr));
    for row in ["64 KiB write", "64 KiB read", "1024 KiB write", "1024 KiB read"] {
        let line = report.lines().find(|l| l.trim_start().starts_with(row)).unwrap_or_else(|| panic!("{report}"));
        let figures: Vec<f64> =
            line.split_whitespace().skip(3).map(|f| f.trim_end_matches('x').parse().unwrap()).collect();
        assert_eq!(figures.len(), 3, "{line}");
        assert!(figures.iter().all(|f| *f > 0.0), "every figure is a measured rate: {line}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the disk file is removed");
    std::fs::remove_dir(&dir).unwrap();
}
