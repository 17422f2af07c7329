//! Fuzz target `policy_parser`: the policy parser with one to three files
//! cut from the input at NUL bytes. What it checks: `ward_fuzz::policy`
//! (fuzz/src/policy.rs); seeds: fuzz/seeds/; dictionary: policy.dict; how
//! to run it: docs/FUZZING.md (and docs/POLICY.md, "Fuzzing"), e.g. (in
//! `fuzz/`)
//!
//! ```sh
//! cargo fuzz run --sanitizer none policy_parser corpus/policy_parser seeds/policy_parser -- -dict=policy.dict
//! ```

#![no_main]

ward_fuzz::symbolizer!();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ward_fuzz::policy::run(data);
});
