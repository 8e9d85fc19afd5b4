//! `hummel remove-slave ID --master URL`: forgets a slave, its claims and its enrolled key.

use std::process::ExitCode;

use anyhow::Result;

use super::{master_error, write_api};
use crate::cli::RemoveSlaveArgs;
use crate::util::normalize_url;

/// `DELETE /api/v1/slaves/{id}` with the write token.
pub async fn remove_slave(args: RemoveSlaveArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = write_api(&master, args.write_token, &args.trust)?;
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
