//! `hummel build`: asks the master for a new revision, optionally waits for it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hummel_proto::api::{BUILD, BUILDS, BuildStarted, BuildState, BuildStatus};
use hummel_proto::auth::TOKEN_HEADER;

use super::{api_error, http, no_answer};
use crate::cli::BuildArgs;
use crate::util::{client_tls, human_bytes, normalize_url, require_token, send_patiently};

/// `hummel build --master URL [--wait] [--allow-mass-delete]`.
pub async fn build(args: BuildArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let token = require_token(
        args.write_token,
        "write",
        "HUMMEL_WRITE_TOKEN",
        "--write-token",
    )?;
    let client = http(&client_tls(&args.trust)?)?;
    // The query of `hummel_proto::api::BuildQuery`.
    let query = if args.allow_mass_delete {
        "?allow_mass_delete=true"
    } else {
        ""
    };
    let resp = send_patiently(
        client
            .post(format!("{master}{BUILD}{query}"))
            .header(TOKEN_HEADER, &token),
    )
    .await
    .map_err(|e| no_answer(&master, e))?;
    if !resp.status().is_success() {
        return Err(api_error("build", resp).await);
    }
    let started: BuildStarted = resp
        .json()
        .await
        .context("build: unreadable answer from the master")?;
    if !args.wait {
        if args.json {
            println!("{}", serde_json::to_string(&started)?);
        } else {
            println!("build {} started", started.build_id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let url = format!("{master}{BUILDS}/{}", started.build_id);
    let mut failures = 0;
    // Short first, then backing off to 200 ms: a rebuild with nothing changed takes
    // milliseconds, and a long build should not be polled in a tight loop.
    let mut pause = Duration::from_millis(5);
    let status: BuildStatus = loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
        let resp = match send_patiently(client.get(&url).header(TOKEN_HEADER, &token)).await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                if failures > 20 {
                    return Err(no_answer(&master, e)
                        .context("lost the master while waiting for the build"));
                }
                continue;
            }
        };
        if !resp.status().is_success() {
            return Err(api_error("build status", resp).await);
        }
        let st: BuildStatus = resp
            .json()
            .await
            .context("build status: unreadable answer")?;
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
