//! One module per command. Each maps flags to a library's options, runs it and prints.

mod build;
mod remove_slave;
mod serve;
mod slave;
mod status;
mod sync;

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use hummel_proto::ApiErrorBody;
use hummel_tls::ClientTls;

use crate::cli::{Cli, Command};

/// Runs the chosen command.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(a) => serve::serve(a).await,
        Command::Master(a) => serve::master(a).await,
        Command::Slave(a) => slave::slave(a).await,
        Command::Build(a) => build::build(a).await,
        Command::Sync(a) => sync::sync(a).await,
        Command::Verify(a) => sync::verify(a).await,
        Command::Status(a) => status::status(a).await,
        Command::RemoveSlave(a) => remove_slave::remove_slave(a).await,
    }
}

/// An HTTP client for the short admin calls (build, status).
pub(crate) fn http(tls: &ClientTls) -> Result<reqwest::Client> {
    Ok(tls
        .client_builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

/// A request to the master that got no answer, as one line: what is wrong with its certificate
/// if that was it, else reqwest's causes.
pub(crate) fn no_answer(master: &str, e: reqwest::Error) -> anyhow::Error {
    match hummel_tls::certificate_problem(&e) {
        Some(problem) => anyhow!("master {master}: {problem}"),
        None => anyhow::Error::new(e).context(format!("master {master}")),
    }
}

/// Turns a non-2xx response into a one-line error, using the API's `{code, message}` body.
pub(crate) async fn api_error(what: &str, resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let detail = match serde_json::from_str::<ApiErrorBody>(&text) {
        Ok(b) => b.message,
        Err(_) => text
            .chars()
            .take(200)
            .collect::<String>()
            .replace('\n', " "),
    };
    match status.as_u16() {
        401 => anyhow!("{what}: the master wants a token ({detail})"),
        403 => anyhow!("{what}: the master refused the token ({detail})"),
        _ => anyhow!("{what}: HTTP {status}: {detail}"),
    }
}
