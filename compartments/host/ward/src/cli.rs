//! The `ward` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::name::CompartmentName;

/// Ward: a secure compartment host. Each part of your digital life runs in
/// its own KVM micro-VM, on Ward's own kernel.
#[derive(Debug, Parser)]
#[command(name = "ward", version, propagate_version = true)]
pub struct Cli {
    /// The policy: a TOML file or a directory of them. Default: $WARD_POLICY,
    /// else ~/.config/ward/policy if it exists, else the built-in policy.
    #[arg(long, global = true, value_name = "PATH")]
    pub policy: Option<PathBuf>,

    /// wardd's control socket (default: /run/ward/wardd.sock as root, else
    /// $XDG_RUNTIME_DIR/ward/wardd.sock).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,

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
    Images {
        /// One JSON document (docs/CLI.md lists the fields).
        #[arg(long)]
        json: bool,
    },

    /// What this host supports of Ward's isolation: KVM, namespaces, a
    /// private root, dropping privileges, cgroups, seccomp.
    Doctor {
        /// One JSON document (docs/CLI.md lists the fields).
        #[arg(long)]
        json: bool,
    },

    /// Define a compartment in wardd (from the policy).
    Create {
        /// Its name.
        name: CompartmentName,
        /// Another image (ad-hoc app compartments only).
        #[arg(long, value_name = "NAME")]
        image: Option<String>,
        /// Less memory than the policy grants, MiB.
        #[arg(long, short = 'm', value_name = "MiB")]
        memory: Option<u64>,
        /// Command line for the guest kernel, e.g. "ward.panic".
        #[arg(long, value_name = "TEXT", default_value = "")]
        cmdline: String,
        /// A host file to attach as the next disk, read-only with `:ro`; the
        /// policy's volumes bound how many, how large, and which read-only.
        #[arg(long = "disk", value_name = "PATH[:ro]")]
        disks: Vec<crate::grant::DiskRequest>,
        /// Remove it and its state when it stops.
        #[arg(long)]
        disposable: bool,
        /// What wardd does when its VMM ends (default: the policy's).
        #[arg(long, value_enum, value_name = "WHEN")]
        restart: Option<crate::daemon::state::Restart>,
    },
    /// Start compartments in wardd (one already running is left alone).
    Start(Selection),
    /// Stop compartments: ask each guest to shut down (its power button:
    /// every program is told, and it powers off when they have ended), and
    /// kill its VMM if it has not after the timeout. One that is not
    /// running is left alone.
    Stop {
        #[command(flatten)]
        which: Selection,
        /// Seconds the guest has to shut down before its VMM is killed.
        #[arg(long, short = 't', default_value_t = 5)]
        timeout: u64,
    },
    /// Stop compartments (as `stop` does), then start them again; one that
    /// is not running is started.
    Restart {
        #[command(flatten)]
        which: Selection,
        /// Seconds the guest has to shut down before its VMM is killed.
        #[arg(long, short = 't', default_value_t = 5)]
        timeout: u64,
    },
    /// Stop compartments at once (SIGKILL of the VMM: exit code 137).
    Kill(Selection),
    /// Forget stopped compartments and their state.
    Rm {
        #[command(flatten)]
        which: Selection,
        /// Kill running ones first (with --all: every compartment).
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Wait until each compartment's run has ended, print its exit code, and
    /// exit with the last one's (125 if it is not known).
    Wait {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List compartments: name, role, state, pid, uptime, memory, CPU, exit code.
    Ls {
        /// Names only, one a line.
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
        /// One JSON document (docs/CLI.md lists the fields).
        #[arg(long)]
        json: bool,
    },
    /// What running compartments use of the host, refreshed: CPU (percent
    /// of one core), host memory against the guest memory granted, disk
    /// bytes read and written.
    Stats {
        /// Only these (default: every running compartment).
        names: Vec<String>,
        /// One sample, then exit.
        #[arg(long)]
        no_stream: bool,
        /// JSON lines: an object per compartment per sample (docs/CLI.md
        /// lists the fields).
        #[arg(long)]
        json: bool,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
        interval: f64,
    },
    /// Show a compartment's record: state, last exit and its reason, times,
    /// its VMM's processes, its log and cgroup paths.
    Inspect {
        /// Its name.
        name: String,
        /// One JSON document (docs/CLI.md lists the fields).
        #[arg(long)]
        json: bool,
    },
    /// Show a compartment's console history: every run's, with a marker
    /// line where each run started and ended.
    Logs {
        /// Its name.
        name: String,
        /// Keep printing new output until its run ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines of the history (then, following, what comes).
        #[arg(long, short = 'n', value_name = "N")]
        tail: Option<u64>,
        /// Only lines since then: a duration (`10m`, `1h30m`) or a date and
        /// time (`2026-12-04 21:00`, or RFC 3339).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Each line with the time (UTC) it was written.
        #[arg(long, short = 't')]
        timestamps: bool,
    },
    /// Show wardd's audit log: every lifecycle change and IPC decision.
    Audit {
        /// How many of the latest entries.
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        filter: AuditFilterArgs,
        /// Keep printing new entries as they are written.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Print lifecycle changes and IPC decisions as they happen (the audit
    /// log from now on), until interrupted.
    Events {
        #[command(flatten)]
        filter: AuditFilterArgs,
    },
    /// List the calls between compartments waiting for your answer (the
    /// policy says `ask`).
    Pending {
        /// One JSON document (docs/CLI.md lists the fields).
        #[arg(long)]
        json: bool,
    },
    /// Let a pending call through.
    Allow {
        /// Its id, from `ward pending`.
        id: u64,
    },
    /// Refuse a pending call.
    Deny {
        /// Its id, from `ward pending`.
        id: u64,
    },

    /// Check, show, explain and compare the policy (docs/POLICY.md).
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Measure Ward: print figures for docs/BENCHMARKS.md.
    #[command(subcommand)]
    Bench(BenchCommand),

    /// Print a shell completion script for `ward`, e.g.
    /// `ward completions bash > /etc/bash_completion.d/ward`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages of `ward`, each of its commands, and `wardd`
    /// into a directory, e.g. `ward man /usr/local/share/man/man1`.
    Man {
        /// Where (made if missing).
        dir: PathBuf,
    },
}

/// Which compartments a command is for.
#[derive(Debug, Args)]
pub struct Selection {
    /// Their names.
    #[arg(required_unless_present = "all")]
    pub names: Vec<String>,
    /// Every compartment the command applies to (`start`: those not
    /// running; `stop`, `kill`, `restart`: those running; `rm`: those
    /// stopped, or all with --force).
    #[arg(long, short = 'a', conflicts_with = "names")]
    pub all: bool,
}

/// Which audit entries to show.
#[derive(Debug, Args)]
pub struct AuditFilterArgs {
    /// Only entries about this compartment (also as the callee of a call).
    #[arg(long, short = 'c', value_name = "NAME")]
    pub compartment: Option<String>,
    /// Only entries of this kind (`start`, `exit`, `ipc-deny`, ...; repeat
    /// for more).
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// JSON: one document, or with --follow one entry a line.
    #[arg(long)]
    pub json: bool,
}

/// The `ward policy` commands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy: exit 0, or list its errors with file, line and
    /// column (the first 100, and how many more) and exit 1.
    Check {
        /// The policy file or directory (default: the policy in use).
        path: Option<PathBuf>,
    },
    /// Print the effective policy, normalized.
    Show,
    /// Say what the policy decides for one service call, and which rule
    /// (file and line) decided it.
    Explain {
        /// The calling compartment.
        #[arg(long)]
        from: String,
        /// The called compartment.
        #[arg(long)]
        to: String,
        /// The service, optionally with an argument: `name` or `name+arg`.
        #[arg(long)]
        service: String,
        /// One JSON document (docs/CLI.md lists the fields).
        #[arg(long)]
        json: bool,
    },
    /// What a change of policy would allow or forbid that it did not before.
    /// Exits 0 if the two policies behave the same, 1 if they differ, 2 if
    /// either cannot be read or has errors (as diff(1) does).
    Diff {
        /// The policy now.
        old: PathBuf,
        /// The policy proposed.
        new: PathBuf,
    },
}

/// The `ward bench` measurements.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot a compartment N times, each in a fresh `ward run --timing`
    /// process, and print the median and spread of each boot milestone.
    Boot(BenchBootArgs),
    /// With a running wardd: start idle compartments in waves and report
    /// start-to-first-console-line times and host memory per compartment.
    Fleet(BenchFleetArgs),
    /// Sequential virtio-blk throughput of a guest program (64 KiB and
    /// 1 MiB requests over a fresh disk file) next to a host process doing
    /// the same reads and writes on the same file, as ratios.
    Disk(BenchDiskArgs),
    /// IPC between two compartments (64-byte round trips, a bulk
    /// transfer) next to two host processes over a UNIX socket, as ratios.
    /// Starts a wardd of its own.
    Ipc(BenchIpcArgs),
    /// The host peer of `ward bench ipc` (on its standard input).
    #[command(hide = true)]
    UnixPeer,
}

/// Arguments of `ward bench ipc`.
#[derive(Debug, Args)]
pub struct BenchIpcArgs {
    /// Request/response round trips of 64 bytes.
    #[arg(long, default_value_t = 1000)]
    pub rounds: u64,
    /// Bytes of the one-way bulk transfer.
    #[arg(long, default_value_t = 1 << 30)]
    pub bytes: u64,
    /// Seconds to wait for the compartments' figures.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

/// Arguments of `ward bench disk`.
#[derive(Debug, Args)]
pub struct BenchDiskArgs {
    /// Size of the disk file, MiB.
    #[arg(long, value_name = "MiB", default_value_t = 1024)]
    pub size: u64,

    /// Directory for the disk file (removed afterwards). Default: the
    /// system's temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Arguments of `ward bench fleet`.
#[derive(Debug, Args)]
pub struct BenchFleetArgs {
    /// Fleet sizes to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub sizes: Vec<usize>,

    /// Guest memory of each compartment, MiB.
    #[arg(long, default_value_t = 16)]
    pub memory: u64,
}

/// Arguments of `ward bench boot`.
#[derive(Debug, Args)]
pub struct BenchBootArgs {
    /// How many boots to measure.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,

    /// Guest memory in MiB.
    #[arg(long, short = 'm', value_name = "MiB", default_value_t = 32)]
    pub memory: u64,
}

/// Arguments of `ward run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the compartment: 1-63 characters of a-z, 0-9 and '-'.
    pub name: CompartmentName,

    /// Guest memory in MiB, at most what the policy grants (default: that).
    #[arg(long, short = 'm', value_name = "MiB")]
    pub memory: Option<u64>,

    /// Command line for the guest kernel, e.g. "ward.panic".
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub cmdline: String,

    /// The image to boot: which programs the compartment carries and starts
    /// (see `ward images`). Default: the policy's image for the compartment;
    /// only an ad-hoc app compartment may choose another.
    #[arg(long, value_name = "NAME")]
    pub image: Option<String>,

    /// A disk for the compartment: a host file, `PATH` or `PATH:ro` (repeat
    /// for more). Each must fit a block volume the policy grants, in order.
    #[arg(long = "disk", value_name = "PATH[:ro]")]
    pub disks: Vec<crate::grant::DiskRequest>,

    /// Boot this kernel ELF instead of the built-in Ward kernel.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Remove the compartment and its state when it stops (with wardd).
    #[arg(long)]
    pub disposable: bool,

    /// Run in this process even if wardd is running.
    #[arg(long)]
    pub foreground: bool,

    /// When the compartment stops, print host-side boot timings (from
    /// process start) to stderr.
    #[arg(long)]
    pub timing: bool,

    /// The KVM device to use.
    #[arg(long, value_name = "PATH", default_value = ward_vmm::kvm::DEFAULT_KVM_PATH)]
    pub kvm: PathBuf,
}

/// `--interval`: seconds, from 0.1 to an hour.
fn parse_interval(text: &str) -> Result<f64, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if (0.1..=3600.0).contains(&seconds) { Ok(seconds) } else { Err(format!("{text} s: from 0.1 to 3600 seconds")) }
}
