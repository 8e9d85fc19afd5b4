//! `hummel build`: asks the master for a new revision, optionally waits for it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use hummel_net::{Backoff, Retry};
use hummel_proto::api::{BuildQuery, BuildState, BuildStatus};

use super::{master_error, write_api};
use crate::cli::BuildArgs;
use crate::util::{human_bytes, normalize_url};

/// `--wait` asks a master it lost again after these delays (jittered; ceilings 100 ms doubling
/// to 2 s) ...
const LOST_MASTER: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// ... this many times in a row (17 s in all at most, half that on average) before it gives up.
const LOST_RETRIES: u32 = 12;

/// `hummel build --master URL [--wait] [--allow-mass-delete] [--message TEXT]`.
pub async fn build(args: BuildArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = write_api(&master, args.write_token, &args.trust)?;
    let started = api
        .build_with(&BuildQuery {
            allow_mass_delete: args.allow_mass_delete,
            message: args.message,
        })
        .await
        .map_err(|e| master_error(&master, e))?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&started)?);
        } else {
            println!("build {} started", started.build_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Lost contact is asked again with the shared backoff, [`LOST_RETRIES`] times in a row.
    let mut lost = Retry::new(LOST_MASTER);
    // Polling (not a retry): short first, then backing off to 200 ms: a rebuild with nothing
    // changed takes milliseconds, and a long build should not be polled in a tight loop.
    let mut pause = Duration::from_millis(5);
    let status: BuildStatus = loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
        let st = match api.build_status(started.build_id).await {
            Ok(st) => st,
            Err(e) if e.is_transport() => {
                if lost.failures() >= LOST_RETRIES {
                    return Err(master_error(&master, e)
                        .context("lost the master while waiting for the build"));
                }
                tokio::time::sleep(lost.failed()).await;
                continue;
            }
            Err(e) => return Err(master_error(&master, e)),
        };
        lost.succeeded();
        if st.state != BuildState::Running {
            break st;
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    }
    match status.state {
        BuildState::Succeeded => {
            for w in &status.warnings {
                eprintln!("warning: {w}");
            }
            if !args.json {
                println!(
                    "build {}: revision {} ({} files, {}; {} reused, {} new packs)",
                    status.id,
                    status.revision.unwrap_or_default(),
                    status.files_total,
                    human_bytes(status.bytes_total),
                    status.files_reused,
                    status.packs_written
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        _ => bail!(
            "build {} failed: {}",
            status.id,
            status.error.unwrap_or_else(|| "no reason given".into())
        ),
    }
}
