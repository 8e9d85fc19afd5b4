//! `hummel drain-slave ID --master URL [--cancel]`: starts (or calls off) a slave's drain.

use std::process::ExitCode;

use anyhow::Result;

use super::{master_error, write_api};
use crate::cli::DrainSlaveArgs;
use crate::util::normalize_url;

/// `POST` (or `DELETE`) `/api/v1/slaves/{id}/drain` with the write token.
pub async fn drain_slave(args: DrainSlaveArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = write_api(&master, args.write_token, &args.trust)?;
    api.drain_slave(&args.id, !args.cancel)
        .await
        .map_err(|e| master_error(&master, e))?;
    if args.cancel {
        println!("slave {}: drain called off; it takes packs again", args.id);
    } else {
        println!(
            "slave {} is draining: its packs are being copied to the other slaves; `hummel \
             status` says \"drained\" once it can be removed safely",
            args.id
        );
    }
    Ok(ExitCode::SUCCESS)
}
