//! One module per command. Each maps flags to a library's options, runs it and prints.

mod build;
mod drain_slave;
mod history;
mod push;
mod remove_slave;
mod serve;
mod slave;
mod status;
mod sync;
mod ui;

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use hummel_net::{HttpClient, MasterApi, NetError};
use hummel_tls::ClientTls;

use crate::cli::Command;

/// Runs the chosen command.
pub async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve(a) => serve::serve(a).await,
        Command::Master(a) => serve::master(a).await,
        Command::Slave(a) => slave::slave(a).await,
        Command::Build(a) => build::build(a).await,
        Command::Revisions(a) => history::revisions(a).await,
        Command::Changes(a) => history::changes(a).await,
        Command::Rollback(a) => history::rollback(a).await,
        Command::Push(a) => push::push(a).await,
        Command::Sync(a) => sync::sync(a).await,
        Command::Verify(a) => sync::verify(a).await,
        Command::Status(a) => status::status(a).await,
        Command::Ui(a) => ui::ui(a).await,
        Command::RemoveSlave(a) => remove_slave::remove_slave(a).await,
        Command::DrainSlave(a) => drain_slave::drain_slave(a).await,
    }
}

/// The master's API for the admin commands (build, status), sending `token` (named `name` in
/// errors) if given.
pub(crate) fn master_api(
    master: &str,
    tls: &ClientTls,
    token: Option<&str>,
    name: &str,
) -> Result<MasterApi> {
    let http = HttpClient::new(tls)?.with_token(token, name)?;
    Ok(MasterApi::new(http, master)?)
}

/// The master's API with the write token (`--write-token` or `HUMMEL_WRITE_TOKEN`, required),
/// for the commands that change the repository or the fleet.
pub(crate) fn write_api(
    master: &str,
    write_token: Option<String>,
    trust: &crate::cli::ClientTlsArgs,
) -> Result<MasterApi> {
    let token =
        crate::util::require_token(write_token, "write", "HUMMEL_WRITE_TOKEN", "--write-token")?;
    master_api(
        master,
        &crate::util::client_tls(trust)?,
        Some(&token),
        "write",
    )
}

/// A failed call to the master as one line: what is wrong with its certificate or connection,
/// or what the master answered (the API's message; who wants which token).
pub(crate) fn master_error(master: &str, e: NetError) -> anyhow::Error {
    match e {
        NetError::Transport { source, .. } => match hummel_tls::certificate_problem(&source) {
            Some(problem) => anyhow!("master {master}: {problem}"),
            None => anyhow::Error::new(source).context(format!("master {master}")),
        },
        NetError::Status { what, error } => {
            let detail = error.detail();
            match error.status.as_u16() {
                401 => anyhow!("{what}: the master wants a token ({detail})"),
                403 => anyhow!("{what}: the master refused the token ({detail})"),
                _ if error.message.is_empty() => anyhow!("{what}: HTTP {}", error.status),
                _ => anyhow!("{what}: HTTP {}: {detail}", error.status),
            }
        }
        e @ (NetError::TooLong { .. } | NetError::BadAnswer { .. }) => {
            anyhow!("{e}").context(format!("unreadable answer from the master {master}"))
        }
        e => anyhow!("master {master}: {e}"),
    }
}
