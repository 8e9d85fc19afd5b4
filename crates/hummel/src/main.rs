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
mod datadir;
mod util;

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc. glibc keeps freed memory in per-thread arenas, so the
/// master's RSS grew with every parallel build although its live data did not (up to 240 MB in
/// a full benchmark run). Four builds of a 3.2 GB tree plus six index requests peaked at 146 MB
/// with glibc and 100 MB with jemalloc, which also returns idle pages: 51 MB between builds
/// against 100 MB. mimalloc, measured the same way, kept more (213 MB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
