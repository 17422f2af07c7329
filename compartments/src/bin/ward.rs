//! `ward`: the command line of the Ward compartment host.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use ward_compartments::cli::{BenchCommand, Cli, Command};
use ward_compartments::policy_source::PolicySource;
use ward_compartments::{bench, policy_cmd, run};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("WARD_LOG", "warn"))
        .format(|buf, record| writeln!(buf, "ward: {}: {}", record.level().as_str().to_lowercase(), record.args()))
        .init();

    match cli.command {
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
        Command::Policy(command) => match policy_cmd::run(&command, cli.policy.as_deref()) {
            Ok(report) => {
                print!("{}", report.text);
                if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => fail(&e),
        },
        Command::Images => {
            print!("{}", run::images_report());
            ExitCode::SUCCESS
        }
        Command::Bench(BenchCommand::Boot(args)) => match bench::boot(&args) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

/// Reports an error as one line and fails.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("ward: error: {e}");
    ExitCode::FAILURE
}
