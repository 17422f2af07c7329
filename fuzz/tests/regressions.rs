//! Every input in `fuzz/regressions/<target>/` (inputs that once broke a
//! target: found by fuzzing, or made by hand in `src/seeds.rs`) passes its
//! target's checks now; the hand-made ones are current.

use std::path::Path;

use ward_fuzz::{block, mmio, policy, router, seeds};

#[test]
fn regression_inputs_pass_their_targets() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut ran = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions") {
        let dir = dir.expect("entry").path();
        let target = dir.file_name().expect("name").to_string_lossy().into_owned();
        for file in std::fs::read_dir(&dir).expect("a target's regressions") {
            let path = file.expect("entry").path();
            let data = std::fs::read(&path).expect("reading a regression input");
            // Each `run` panics if the target's checks fail.
            match target.as_str() {
                "policy_parser" => drop(policy::run(&data)),
                "virtio_block_request" => drop(block::run(&data)),
                "virtio_mmio_registers" => drop(mmio::run(&data)),
                "ipc_router" => drop(router::run(&data)),
                other => panic!("{}: no target {other}", path.display()),
            }
            ran += 1;
        }
    }
    assert!(ran >= 2, "{ran} regression inputs");
}

#[test]
fn hand_made_regressions_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for (target, inputs) in seeds::regressions() {
        for input in inputs {
            let path = root.join(target).join(&input.name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(bytes == input.bytes, "{}: out of date: cargo run --example seeds", path.display());
        }
    }
}

#[test]
fn the_router_refuses_a_response_sent_before_its_request() {
    // fuzz/regressions/ipc_router/response-before-request (docs/FUZZING.md,
    // "Findings"): vault calls `mail echo`, and mail answers on the
    // router's port before it takes the router's REQUEST. The router
    // refuses that RESPONSE: mail's leg is reset, never asked, and vault
    // hears that the call did not go through.
    let (_, inputs) = seeds::regressions().into_iter().find(|(t, _)| *t == "ipc_router").expect("router inputs");
    let outcome = router::run(&inputs[0].bytes);
    assert_eq!(outcome.requests[0], 0, "mail was never sent the REQUEST");
    assert!(outcome.received[0].is_empty(), "{:?}", String::from_utf8_lossy(&outcome.received[0]));
    assert_eq!(
        outcome.received[1],
        b"ERR unreachable the callee went away\n",
        "{:?}",
        String::from_utf8_lossy(&outcome.received[1])
    );
}
