//! Shell completions and manual pages, generated from the clap definitions
//! of `ward` and `wardd`, so they cannot drift from the commands.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::daemon::args::Args as WarddArgs;

/// Writing the manual pages failed.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    /// The directory or a page could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `ward`'s completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "ward", out);
}

/// Writes `ward.1`, `ward-COMMAND.1` for each command (and
/// `ward-policy-explain.1` and so on for theirs) and `wardd.1` into `dir`;
/// returns the pages written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| ManError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(error(dir))?;
    let mut written = Vec::new();
    for command in [Cli::command(), WarddArgs::command()] {
        let mut pages = Vec::new();
        collect(command, "", &mut pages);
        for (name, command) in pages {
            let path = dir.join(format!("{name}.1"));
            let mut page = Vec::new();
            clap_mangen::Man::new(command).render(&mut page).map_err(error(&path))?;
            std::fs::write(&path, page).map_err(error(&path))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// `command` and its visible subcommands, each named as its page is
/// (`ward-policy-check`), with that name as the page's title.
fn collect(command: clap::Command, prefix: &str, pages: &mut Vec<(String, clap::Command)>) {
    let name =
        if prefix.is_empty() { command.get_name().to_owned() } else { format!("{prefix}-{}", command.get_name()) };
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        collect(sub.clone(), &name, pages);
    }
    let command = command.name(name.clone()).bin_name(name.replace('-', " "));
    pages.push((name, command));
}
