//! Writes the seed corpora to `fuzz/seeds/<target>/` (replacing what is
//! there), the hand-made regression inputs to `fuzz/regressions/<target>/`
//! (beside those found by fuzzing) and the router's dictionary to `fuzz/ipc_router.dict`: `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.
//! Run it after changing a target's input format or a seed in
//! `src/seeds.rs`; `tests/seeds.rs` fails while the files are out of date.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (target, seeds) in ward_fuzz::seeds::all() {
        let dir = root.join(target);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        for seed in &seeds {
            std::fs::write(dir.join(&seed.name), &seed.bytes)?;
        }
        println!("{}: {} seeds", dir.display(), seeds.len());
    }
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    for (target, inputs) in ward_fuzz::seeds::regressions() {
        let dir = regressions.join(target);
        std::fs::create_dir_all(&dir)?;
        for input in &inputs {
            std::fs::write(dir.join(&input.name), &input.bytes)?;
        }
        println!("{}: {} made by hand", dir.display(), inputs.len());
    }
    let dict = Path::new(env!("CARGO_MANIFEST_DIR")).join("ipc_router.dict");
    std::fs::write(&dict, ward_fuzz::seeds::router_dict())?;
    println!("{}", dict.display());
    Ok(())
}
