//! `hummel remove-slave ID --master URL`: forgets a slave, its claims and its enrolled key.

use std::process::ExitCode;

use anyhow::Result;

use super::{master_api, master_error};
use crate::cli::RemoveSlaveArgs;
use crate::util::{client_tls, normalize_url, require_token};

/// `DELETE /api/v1/slaves/{id}` with the write token.
pub async fn remove_slave(args: RemoveSlaveArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let token = require_token(
        args.write_token,
        "write",
        "HUMMEL_WRITE_TOKEN",
        "--write-token",
    )?;
    let api = master_api(&master, &client_tls(&args.trust)?, Some(&token), "write")?;
    api.remove_slave(&args.id)
        .await
        .map_err(|e| master_error(&master, e))?;
    println!(
        "slave {} removed: its claims and key are forgotten; the next key that announces this id \
         enrolls it",
        args.id
    );
    Ok(ExitCode::SUCCESS)
}
