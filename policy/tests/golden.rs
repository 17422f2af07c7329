//! Golden tests of error messages: each folder under `tests/golden/` is a
//! policy directory; what `check` prints for it must equal its
//! `expected.txt` exactly. Run with `WARD_BLESS=1` to rewrite the expected
//! files after an intended change of wording, then review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::fs;
use std::path::{Path, PathBuf};

use ward_policy::{check, order_files, render_check};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The case's files as a directory listing, with paths relative to the
/// golden folder so messages do not depend on where the repository is.
fn listing(case: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in fs::read_dir(case).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "expected.txt" {
            continue;
        }
        let case_name = case.file_name().unwrap().to_string_lossy();
        files.push((format!("{case_name}/{name}"), fs::read_to_string(&path).unwrap()));
    }
    files
}

#[test]
fn error_messages_match_the_golden_files() {
    let bless = std::env::var_os("WARD_BLESS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_dir()).unwrap().map(|entry| entry.unwrap().path()).collect();
    cases.sort();
    assert!(cases.len() >= 6, "golden cases are missing");
    let mut mismatches = Vec::new();
    for case in &cases {
        let actual = render_check(&check(&order_files(listing(case))));
        let expected_path = case.join("expected.txt");
        if bless {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            mismatches.push(format!("{}:\n--- expected\n{expected}--- actual\n{actual}", case.display()));
        }
    }
    assert!(mismatches.is_empty(), "golden mismatches (WARD_BLESS=1 rewrites them):\n{}", mismatches.join("\n"));
}
