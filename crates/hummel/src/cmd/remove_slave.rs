//! `hummel remove-slave ID --master URL`: forgets a slave, its claims and its enrolled key.

use std::process::ExitCode;

use anyhow::Result;
use hummel_proto::api::SLAVES;
use hummel_proto::auth::TOKEN_HEADER;

use super::{api_error, http, no_answer};
use crate::cli::RemoveSlaveArgs;
use crate::util::{client_tls, normalize_url, require_token, send_patiently};

/// `DELETE /api/v1/slaves/{id}` with the write token.
pub async fn remove_slave(args: RemoveSlaveArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let token = require_token(
        args.write_token,
        "write",
        "HUMMEL_WRITE_TOKEN",
        "--write-token",
    )?;
    let client = http(&client_tls(&args.trust)?)?;
    let id: String = args
        .id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let resp = send_patiently(
        client
            .delete(format!("{master}{SLAVES}/{id}"))
            .header(TOKEN_HEADER, &token),
    )
    .await
    .map_err(|e| no_answer(&master, e))?;
    if !resp.status().is_success() {
        return Err(api_error("remove-slave", resp).await);
    }
    println!(
        "slave {} removed: its claims and key are forgotten; the next key that announces this id \
         enrolls it",
        args.id
    );
    Ok(ExitCode::SUCCESS)
}
