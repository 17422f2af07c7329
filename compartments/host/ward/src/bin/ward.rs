//! `ward`: the command line of the Ward compartment host.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use ward_host::cli::{AuditFilterArgs, BenchCommand, Cli, Command};
use ward_host::daemon::paths::default_socket;
use ward_host::daemon::proto::{CreateArgs, LogsArgs, Request};
use ward_host::daemon::state::now_ms;
use ward_host::grant::DiskRequest;
use ward_host::lifecycle::{self, Verb};
use ward_host::policy_source::PolicySource;
use ward_host::{bench, fleet, manage, policy_cmd, run};
use ward_policy::display::escape;

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("WARD_LOG", "warn"))
        .format(|buf, record| writeln!(buf, "ward: {}: {}", record.level().as_str().to_lowercase(), record.args()))
        .init();

    let socket = cli.socket.clone().unwrap_or_else(default_socket);
    match cli.command {
        Command::Run(args)
            if !args.foreground && !args.timing && args.kernel.is_none() && manage::daemon_available(&socket) =>
        {
            match run_in_daemon(&socket, &args) {
                Ok(Some(code)) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
                Ok(None) => ExitCode::from(run::EXIT_CRASHED),
                Err(e) => fail(&e),
            }
        }
        Command::Run(args) => {
            match run::run(&args, &PolicySource::resolve(cli.policy.as_deref()), Box::new(std::io::stdout()), started) {
                Ok(outcome) => {
                    if args.timing {
                        eprint!("{}", run::timing_report(&outcome.timings));
                    }
                    if outcome.exit.exit_code().is_none() {
                        eprintln!("ward: compartment {} {}", args.name, outcome.exit);
                    }
                    ExitCode::from(run::exit_code(&outcome.exit))
                }
                Err(e) => fail(&e),
            }
        }
        Command::Policy(command) => policy_cmd::main(&command, cli.policy.as_deref()),
        Command::Create { name, image, memory, cmdline, disks, disposable, restart } => {
            let request = Request::Create(CreateArgs {
                name: name.to_string(),
                image,
                memory_mib: memory,
                cmdline,
                disks: absolute(disks),
                disposable,
                restart,
            });
            done(manage::simple(&socket, &request).map(|()| String::new()))
        }
        Command::Start(which) => lifecycle::each(&socket, &which, Verb::Start),
        Command::Stop { which, timeout } => lifecycle::each(&socket, &which, Verb::Stop { timeout_s: timeout }),
        Command::Restart { which, timeout } => lifecycle::each(&socket, &which, Verb::Restart { timeout_s: timeout }),
        Command::Kill(which) => lifecycle::each(&socket, &which, Verb::Kill),
        Command::Rm { which, force } => lifecycle::each(&socket, &which, Verb::Remove { force }),
        Command::Wait { names } => lifecycle::wait(&socket, &names),
        Command::Ls { quiet, json } => done(manage::statuses(&socket).and_then(|list| {
            Ok(if json {
                to_json(&list)?
            } else if quiet {
                list.iter().map(|s| format!("{}\n", s.name)).collect()
            } else {
                manage::render_list(&list)
            })
        })),
        Command::Inspect { name, json } => done(manage::inspect(&socket, &name).and_then(|details| {
            if json { to_json(&details) } else { Ok(manage::render_inspection(&details, now_ms())) }
        })),
        Command::Stats { names, no_stream, json, interval } => {
            let options = ward_host::stats::StatsOptions {
                names,
                once: no_stream,
                json,
                interval: std::time::Duration::from_secs_f64(interval),
            };
            match ward_host::stats::stats(&socket, &options, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Audit { limit, filter, follow } => audit(&socket, limit, &filter, follow),
        Command::Events { filter } => audit(&socket, 0, &filter, true),
        Command::Pending { json } => done(
            manage::pending(&socket)
                .and_then(|asks| if json { to_json(&asks) } else { Ok(manage::render_pending(&asks)) }),
        ),
        Command::Allow { id } => {
            done(manage::simple(&socket, &Request::Answer { id, allow: true }).map(|()| format!("call {id} allowed\n")))
        }
        Command::Deny { id } => {
            done(manage::simple(&socket, &Request::Answer { id, allow: false }).map(|()| format!("call {id} denied\n")))
        }
        Command::Logs { name, follow, tail, since, timestamps } => {
            let since_ms = match since.map(|s| ward_host::output::parse_since(&s, now_ms())).transpose() {
                Ok(since_ms) => since_ms,
                Err(e) => {
                    eprintln!("ward: error: {e}");
                    return ExitCode::from(2);
                }
            };
            let args = LogsArgs { name, follow, tail, since_ms, timestamps, ..LogsArgs::default() };
            // As `docker logs -f`: 0 when the run ends (`ward wait` gives
            // its exit code).
            match manage::logs(&socket, &args, &mut std::io::stdout()) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Doctor { json } => {
            let capabilities = ward_sandbox::jail::doctor();
            done(if json {
                to_json(&run::doctor_json(&capabilities))
            } else {
                Ok(ward_sandbox::jail::render_doctor(&capabilities))
            })
        }
        Command::Images { json } => done(if json { to_json(&run::images_json()) } else { Ok(run::images_report()) }),
        Command::Completions { shell } => {
            ward_host::manpages::completions(shell, &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => done(
            ward_host::manpages::write_man_pages(&dir)
                .map(|pages| pages.iter().map(|p| format!("{}\n", p.display())).collect::<String>()),
        ),
        Command::Bench(BenchCommand::Fleet(args)) => done(fleet::fleet(&socket, &args)),
        Command::Bench(BenchCommand::Ipc(args)) => done(ward_host::ipc_bench::ipc(&args)),
        Command::Bench(BenchCommand::UnixPeer) => done(ward_host::ipc_bench::unix_peer()),
        Command::Bench(BenchCommand::Boot(args)) => done(bench::boot(&args)),
        Command::Bench(BenchCommand::Disk(args)) => done(bench::disk(&args)),
    }
}

/// `ward run` with wardd: create, start, follow the console to the end;
/// a disposable compartment is removed after.
fn run_in_daemon(socket: &std::path::Path, args: &ward_host::cli::RunArgs) -> Result<Option<i32>, manage::ManageError> {
    let name = args.name.to_string();
    let create = Request::Create(CreateArgs {
        name: name.clone(),
        image: args.image.clone(),
        memory_mib: args.memory,
        cmdline: args.cmdline.clone(),
        disks: absolute(args.disks.clone()),
        disposable: args.disposable,
        restart: None,
    });
    manage::simple(socket, &create)?;
    manage::simple(socket, &Request::Start { name: name.clone() })?;
    // Standard input goes to the compartment's console, as in a run of our
    // own; the thread dies with the process when the compartment ends.
    let (input_socket, input_name) = (socket.to_owned(), name.clone());
    std::thread::spawn(move || manage::forward_input(&input_socket, &input_name, std::io::stdin()));
    let code = manage::logs(socket, &LogsArgs { follow: true, ..LogsArgs::console(&name) }, &mut std::io::stdout())?;
    if args.disposable {
        manage::simple(socket, &Request::Remove { name })?;
    }
    Ok(code)
}

/// `ward audit` and `ward events`: the last `limit` entries the filter
/// keeps, then (following) each new one.
fn audit(socket: &std::path::Path, limit: usize, filter: &AuditFilterArgs, follow: bool) -> ExitCode {
    let request = Request::Audit { limit, follow, compartment: filter.compartment.clone(), kinds: filter.kind.clone() };
    if !follow {
        return done(manage::audit(socket, &request).and_then(|entries| {
            if filter.json { to_json(&entries) } else { Ok(entries.iter().map(manage::render_audit).collect()) }
        }));
    }
    let json = filter.json;
    let result = manage::follow_audit(socket, &request, |entries| {
        let mut out = std::io::stdout().lock();
        for e in entries {
            let line = if json { serde_json::to_string(e).unwrap_or_default() + "\n" } else { manage::render_audit(e) };
            out.write_all(escape_lines(&line).as_bytes())?;
        }
        out.flush()
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `value` as one pretty JSON document, with a newline.
fn to_json(value: &impl serde::Serialize) -> Result<String, manage::ManageError> {
    serde_json::to_string_pretty(value)
        .map(|text| text + "\n")
        .map_err(|e| manage::ManageError::Refused(format!("encoding JSON: {e}")))
}

/// Disk paths made absolute: wardd has a working directory of its own.
fn absolute(disks: Vec<DiskRequest>) -> Vec<DiskRequest> {
    disks
        .into_iter()
        .map(|d| DiskRequest { path: std::path::absolute(&d.path).unwrap_or(d.path), read_only: d.read_only })
        .collect()
}

/// Prints a command's output, or its error. Both may hold text from a
/// policy, a guest or a file (images, services, paths): control and
/// bidirectional characters are printed escaped, line by line.
fn done<E: std::error::Error>(result: Result<String, E>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{}", escape_lines(&text));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// Reports an error and fails.
pub fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("ward: error: {}", escape_lines(&e.to_string()));
    ExitCode::FAILURE
}

/// `text` with each line escaped (`ward_policy::display::escape`), its
/// line breaks kept.
fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}
