//! Links each program as a static ELF at 4 MiB with `ward-rt`'s script.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let script = format!("{dir}/../../guest-kernel/rt/user.ld");
    println!("cargo:rerun-if-changed={script}");
    for arg in [
        format!("-Wl,-T,{script}"),
        "-nostartfiles".into(),
        "-nostdlib".into(),
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,max-page-size=4096".into(),
        "-Wl,-z,noexecstack".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
