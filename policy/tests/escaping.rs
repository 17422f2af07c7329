//! Text from a policy file never reaches the terminal raw: control
//! characters and Unicode bidirectional controls are printed escaped by
//! `show`, `check` (errors and their file names), `explain` and `diff`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use ward_policy::{Policy, check, diff, render_check, render_diff, show};

/// Characters that would drive a terminal or reorder what it shows.
const HOSTILE: &[char] = &['\u{1b}', '\u{7}', '\u{7f}', '\u{9b}', '\u{202e}', '\u{2066}', '\u{200f}', '\u{061c}'];

fn assert_clean(text: &str) {
    for c in HOSTILE {
        assert!(!text.contains(*c), "raw U+{:04X} in:\n{text}", u32::from(*c));
    }
}

fn policy_with_image(image: &str) -> String {
    format!("[compartment.mail]\nrole = \"app\"\nimage = \"{image}\"\n")
}

#[test]
fn show_escapes_bidirectional_and_control_characters_and_loads_back() {
    let text = policy_with_image("mail\\u202Egmi.exe\\u001B[31m\\u009B");
    let policy = Policy::from_text("p.toml", &text).unwrap();
    let shown = show(&policy);
    assert_clean(&shown);
    assert!(shown.contains("image = \"mail\\u202Egmi.exe\\u001B[31m\\u009B\"\n"), "{shown}");
    // The escapes are TOML's own: the text loads back to the same image.
    assert_eq!(Policy::from_text("shown.toml", &shown).unwrap(), policy);
}

#[test]
fn errors_escape_the_values_they_quote() {
    let text = "[compartment.mail]\nrole = \"app\\u202E\"\nimage = \"x\"\n[compartment.\"a\\u001Bb\"]\nrole = \"app\"\nimage = \"y\"\n";
    let report = render_check(&check(&[("p.toml", text)]));
    assert_clean(&report);
    assert!(report.contains("role \"app\\u{202e}\" is not valid"), "{report}");
    assert!(report.contains("compartment name \"a\\u{1b}b\" is not valid"), "{report}");
}

#[test]
fn errors_escape_the_file_names_they_name() {
    let report = render_check(&check(&[("pol\u{1b}[2Jicy\u{202e}.toml", "x = ")]));
    assert_clean(&report);
    assert!(report.starts_with("pol\\u{1b}[2Jicy\\u{202e}.toml:1:5: invalid TOML"), "{report}");
}

#[test]
fn diff_escapes_changed_images() {
    let old = Policy::from_text("old.toml", &policy_with_image("mail.img")).unwrap();
    let new = Policy::from_text("new.toml", &policy_with_image("mail\\u202Egmi.exe")).unwrap();
    let out = render_diff(&diff(&old, &new));
    assert_clean(&out);
    assert!(out.contains("image: \"mail.img\" -> \"mail\\u{202e}gmi.exe\""), "{out}");
}
