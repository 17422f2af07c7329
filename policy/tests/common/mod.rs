//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, reason = "each test file uses some of the helpers")]
#![allow(clippy::unwrap_used, clippy::panic, reason = "test code")]

use ward_policy::{Policy, ServiceCall};

/// A small valid base: an identity, a storage, a communication compartment
/// and the app template.
pub const BASE: &str = r#"
[compartment.vault]
role = "identity"
image = "vault.img"
tags = ["personal"]
offers = ["sign"]

[compartment.storage]
role = "storage"
image = "storage.img"
tags = ["personal", "work"]
offers = ["storage.get", "storage.put"]

[compartment.mail]
role = "communication"
image = "mail.img"
tags = ["work"]
offers = ["mail.send"]

[template.app]
image = "app.img"
tags = ["untrusted"]
"#;

/// Loads one file, failing the test with the errors if it is not valid.
pub fn load(text: &str) -> Policy {
    match Policy::from_text("p.toml", text) {
        Ok(policy) => policy,
        Err(errors) => panic!("policy should be valid, but:\n{errors}"),
    }
}

/// Loads `BASE` followed by `rules`.
pub fn with_base(rules: &str) -> Policy {
    load(&format!("{BASE}\n{rules}"))
}

/// The error lines for one file, which must be invalid.
pub fn errors(text: &str) -> Vec<String> {
    match Policy::from_text("p.toml", text) {
        Ok(_) => panic!("policy should be invalid:\n{text}"),
        Err(errors) => errors.errors().iter().map(ToString::to_string).collect(),
    }
}

/// The error lines for `BASE` followed by `rules`.
pub fn base_errors(rules: &str) -> Vec<String> {
    errors(&format!("{BASE}\n{rules}"))
}

/// Asserts that exactly one error line contains every fragment.
pub fn assert_one_error(errors: &[String], fragments: &[&str]) {
    let matching: Vec<_> = errors.iter().filter(|line| fragments.iter().all(|f| line.contains(f))).collect();
    assert_eq!(matching.len(), 1, "expected one error with {fragments:?}, got:\n{}", errors.join("\n"));
}

/// The action word for a call.
pub fn action(policy: &Policy, from: &str, to: &str, call: &str) -> &'static str {
    let call = ServiceCall::parse(call).unwrap();
    policy.decide(from, to, &call).action.as_str()
}

/// A `[[rule]]` table.
pub fn rule(service: &str, from: &str, to: &str, action: &str) -> String {
    format!("[[rule]]\nservice = {service:?}\nfrom = {from:?}\nto = {to:?}\naction = {action:?}\n\n")
}
