//! The one `hummel` binary: master, slave, all-in-one server and client commands.
//!
//! # Layout
//! - [`cli`]: the clap definitions, with `--help` text for every flag.
//! - `cmd/*`: one module per command; each turns flags into library options and calls the
//!   library crate that does the work.
//! - [`util`]: size and duration parsing, token resolution, logging, listening and shutdown.
//!
//! This crate alone prints, initialises logging and decides the exit code: any error becomes
//! one line on stderr and exit status 1 (2 for usage errors, from clap).

mod cli;
mod cmd;
mod util;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    util::init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cmd::run(cli));
    // Background tasks (e.g. a build thread) must not keep a finished command alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => code,
        Err(err) => {
            let line = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
