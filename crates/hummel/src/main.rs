//! The one `hummel` binary: master, slave, all-in-one server and client commands.
//!
//! # Layout
//! - [`cli`]: the clap definitions, with `--help` text for every flag.
//! - `cmd/*`: one module per command; each turns flags into library options and calls the
//!   library crate that does the work.
//! - [`util`]: size and duration parsing, token resolution, logging, TLS files, listening,
//!   serving (HTTP or HTTPS) and shutdown.
//! - [`capped`]: the listener wrapper that bounds connections open at once.
//!
//! This crate alone prints, initialises logging and decides the exit code: any error becomes
//! one line on stderr and exit status 1 (2 for usage errors, from clap).

mod capped;
mod cli;
mod cmd;
mod datadir;
mod util;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc. glibc keeps freed memory in per-thread arenas, so the
/// master's RSS grew with every parallel build although its live data did not (up to 240 MB in
/// a full benchmark run). Four builds of a 3.2 GB tree plus six index requests peaked at 146 MB
/// with glibc and 100 MB with jemalloc, which also returns idle pages: 51 MB between builds
/// against 100 MB. mimalloc, measured the same way, kept more (213 MB). Not on Windows, where
/// the players' client runs: jemalloc does not build there, and a client needs no arenas tuned.
#[cfg(not(windows))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    util::init_logging(&cli);
    match cli.command {
        Some(command) => run_command(command),
        None => no_command(),
    }
}

/// Runs `command` on a tokio runtime; an error becomes one line and exit status 1.
fn run_command(command: cli::Command) -> ExitCode {
    run_reporting(command).0
}

/// [`run_command`], also saying whether it failed.
fn run_reporting(command: cli::Command) -> (ExitCode, bool) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return (ExitCode::FAILURE, true);
        }
    };
    let result = runtime.block_on(cmd::run(command));
    // Background tasks (e.g. a build thread) must not keep a finished command alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => (code, false),
        Err(err) => {
            eprintln!("error: {}", error_line(&err));
            (ExitCode::FAILURE, true)
        }
    }
}

/// `hummel` alone. On Windows that is a double-click on hummel.exe: the player page. Elsewhere
/// a terminal user typed it: the help, as for a missing command (exit status 2).
fn no_command() -> ExitCode {
    if cfg!(windows) {
        let (code, failed) = run_reporting(cli::Command::Ui(cli::UiArgs::default()));
        if failed {
            // A double-click's console window closes with the process: keep the error readable.
            eprintln!("press Enter to close this window");
            let _ = std::io::stdin().read_line(&mut String::new());
        }
        return code;
    }
    use clap::CommandFactory;
    let _ = cli::Cli::command().print_help();
    ExitCode::from(2)
}

/// The error and its causes on one line, separated by `: `. Library errors often name their
/// source in their own message (`store/packs: Not a directory (os error 20)`) and expose it as
/// their cause as well; a cause whose text the line already holds is not repeated.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Like the libraries' errors: names its source and exposes it as its cause.
    #[derive(Debug)]
    struct PathError {
        path: String,
        source: std::io::Error,
    }

    impl std::fmt::Display for PathError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}: {}", self.path, self.source)
        }
    }

    impl std::error::Error for PathError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    #[test]
    fn an_os_error_is_printed_once() {
        let os = std::io::Error::from_raw_os_error(20);
        let os_text = os.to_string();
        let err = anyhow::Error::new(PathError {
            path: "data/store".into(),
            source: os,
        })
        .context("cannot open the master");
        assert_eq!(
            error_line(&err),
            format!("cannot open the master: data/store: {os_text}")
        );
        // Causes that add something are kept, newlines become spaces.
        let err = anyhow::anyhow!("disk\nfull").context("cannot write x");
        assert_eq!(error_line(&err), "cannot write x: disk full");
    }
}
