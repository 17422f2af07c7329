//! The `ward` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::name::CompartmentName;

/// Default compartment memory, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 32;

/// Ward: a secure compartment host. Each part of your digital life runs in
/// its own KVM micro-VM, on Ward's own kernel.
#[derive(Debug, Parser)]
#[command(name = "ward", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The `ward` commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a compartment and attach its console to this terminal.
    ///
    /// The compartment boots Ward's built-in guest kernel (or --kernel) in its
    /// own KVM micro-VM. Its console is printed here, and `ward run` exits
    /// with the compartment's exit code; 125 if the compartment crashed, 1 if
    /// it could not be started.
    Run(RunArgs),

    /// List the built-in images `ward run --image` can boot.
    Images,

    /// Measure Ward: print figures for docs/BENCHMARKS.md.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// The `ward bench` measurements.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot a compartment N times, each in a fresh `ward run --timing`
    /// process, and print the median and spread of each boot milestone.
    Boot(BenchBootArgs),
}

/// Arguments of `ward bench boot`.
#[derive(Debug, Args)]
pub struct BenchBootArgs {
    /// How many boots to measure.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,

    /// Guest memory in MiB.
    #[arg(long, short = 'm', value_name = "MiB", default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u64,
}

/// Arguments of `ward run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the compartment: 1-63 characters of a-z, 0-9 and '-'.
    pub name: CompartmentName,

    /// Guest memory in MiB (8 to 3328).
    #[arg(long, short = 'm', value_name = "MiB", default_value_t = DEFAULT_MEMORY_MIB)]
    pub memory: u64,

    /// Command line for the guest kernel, e.g. "ward.panic".
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub cmdline: String,

    /// The image to boot: which programs the compartment carries and starts
    /// (see `ward images`).
    #[arg(long, value_name = "NAME", default_value = ward_images::DEFAULT_IMAGE)]
    pub image: String,

    /// Boot this kernel ELF instead of the built-in Ward kernel.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// When the compartment stops, print host-side boot timings (from
    /// process start) to stderr.
    #[arg(long)]
    pub timing: bool,

    /// The KVM device to use.
    #[arg(long, value_name = "PATH", default_value = ward_vmm::kvm::DEFAULT_KVM_PATH)]
    pub kvm: PathBuf,
}
