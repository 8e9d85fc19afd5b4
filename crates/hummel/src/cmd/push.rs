//! `hummel push LOCAL_DIR --master URL [--path PREFIX]`: flags to [`hummel_client::PushOptions`],
//! the push itself ([`hummel_client::push()`]: walk, one pass of chunking, missing queries,
//! packs, uploads, publish), and its report on stdout.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use hummel_client::{PushError, PushOptions};
use hummel_core::RelPath;

use super::{master_error, write_api};
use crate::cli::PushArgs;
use crate::util::normalize_url;

/// `hummel push`.
pub async fn push(args: PushArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = write_api(&master, args.write_token, &args.trust)?;
    let prefix = match args.path.as_deref().map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => Some(RelPath::new(p).map_err(|e| anyhow!("--path {p}: {e}"))?),
        _ => None,
    };
    let opts = PushOptions {
        local_dir: args.local_dir,
        prefix,
        message: args.message,
        dry_run: args.dry_run,
        allow_mass_delete: args.allow_mass_delete,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let report = hummel_client::push(&api, opts).await.map_err(|e| match e {
        PushError::Master { source, .. } => master_error(&master, source),
        e => anyhow!(e),
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if report.dry_run {
        println!(
            "dry run: {} chunks to upload; {} files added, {} updated, {} removed; nothing \
             published",
            report.chunks_missing, report.files_added, report.files_updated, report.files_removed
        );
    } else {
        match report.revision {
            Some(n) => println!(
                "revision {n} published: {} files added, {} updated, {} removed; {} bytes \
                 uploaded in {} packs",
                report.files_added,
                report.files_updated,
                report.files_removed,
                report.bytes_uploaded,
                report.packs_uploaded
            ),
            None => println!(
                "nothing changed; revision {} stays",
                report.current.map_or("none".into(), |n| n.to_string())
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
