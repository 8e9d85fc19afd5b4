//! `hummel sync` and `hummel verify`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hummel_client::{SyncOptions, SyncOutcome, VerifyOptions};
use hummel_core::RelPath;

use crate::cli::{SyncArgs, VerifyArgs};
use crate::util::{client_tls, human_bytes, normalize_url, shutdown_signal};

/// `--path a/b/`, `/a/b` and `a/b` all mean the subtree `a/b`; `/` or empty means everything.
fn subtree(path: Option<&str>) -> Result<Option<RelPath>> {
    let Some(p) = path else { return Ok(None) };
    let p = p.trim_matches('/');
    if p.is_empty() {
        return Ok(None);
    }
    Ok(Some(RelPath::new(p).context("--path")?))
}

/// `hummel sync MASTER_URL DEST` (or `--profile NAME`).
pub async fn sync(args: SyncArgs) -> Result<ExitCode> {
    if let Some(name) = &args.profile {
        return super::ui::sync_profile(name, &args).await;
    }
    let (Some(master_url), Some(dest)) = (&args.master_url, &args.dest) else {
        bail!("sync needs MASTER_URL and DEST, or --profile NAME");
    };
    let opts = SyncOptions {
        master_url: normalize_url(master_url)?,
        dest: dest.clone(),
        path: subtree(args.path.as_deref())?,
        dry_run: args.dry_run,
        keep_extra: args.keep_extra,
        allow_mass_delete: args.allow_mass_delete,
        allow_rollback: args.allow_rollback,
        read_token: args.read_token.clone(),
        tls: client_tls(&args.trust)?,
        progress: !args.json && std::io::stderr().is_terminal(),
        concurrency: args.concurrency as usize,
    };
    // Ctrl-C or SIGTERM stops the run where it is: requests are dropped, a batch being
    // written finishes, nothing unfinished is renamed, and the temp files (verified chunks
    // only) stay for the next run to resume.
    let outcome = tokio::select! {
        outcome = hummel_client::sync(&opts) => outcome?,
        () = shutdown_signal() => bail!(
            "interrupted; verified data kept in {}, run the same sync again to resume",
            dest.join(".hummel/tmp").display()
        ),
    };
    match outcome {
        SyncOutcome::Done(report) => {
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                if !report.adopted.is_empty() {
                    eprintln!(
                        "took over {} (already in {}): now exact copies of the repository's",
                        report.adopted.join(", "),
                        dest.display()
                    );
                }
                println!(
                    "revision {}: {} written, {} deleted, {} unchanged; {} downloaded ({} chunks), {} reused locally, {:.2} s",
                    report.revision,
                    report.files_written,
                    report.files_deleted,
                    report.files_unchanged,
                    human_bytes(report.bytes_downloaded),
                    report.chunks_downloaded,
                    human_bytes(report.bytes_reused),
                    report.duration_ms as f64 / 1000.0
                );
                print_paths("deleted", &report.deleted);
            }
        }
        SyncOutcome::DryRun(plan) => {
            if args.json {
                println!("{}", serde_json::to_string(&plan)?);
            } else if plan.no_op {
                println!(
                    "dry run: {} already holds revision {}; nothing to do",
                    dest.display(),
                    plan.revision
                );
            } else {
                if let Some(why) = &plan.refused {
                    eprintln!("warning: a real run would refuse: {why}");
                }
                if !plan.adopted.is_empty() {
                    println!(
                        "would take over {} (already in {}): they would become exact copies",
                        plan.adopted.join(", "),
                        dest.display()
                    );
                }
                println!(
                    "dry run for revision {}: write {} files ({}: {} to download in {} requests, {} reused locally), \
                     delete {} files and {} folders, create {} folders, {} unchanged",
                    plan.revision,
                    plan.files_to_write,
                    human_bytes(plan.bytes_to_write),
                    human_bytes(plan.bytes_to_download),
                    plan.requests,
                    human_bytes(plan.bytes_to_reuse),
                    plan.files_to_delete,
                    plan.dirs_to_delete,
                    plan.dirs_to_create,
                    plan.files_unchanged
                );
                for p in &plan.write {
                    println!("  write  {p}");
                }
                for p in &plan.delete {
                    println!("  delete {p}");
                }
                for p in &plan.create_dirs {
                    println!("  mkdir  {p}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Most paths listed after a sync; the rest are counted (`--json` has them all).
const MAX_LISTED: usize = 20;

/// `deleted a`, `deleted b`, ... then "and N more".
fn print_paths(what: &str, paths: &[String]) {
    for p in paths.iter().take(MAX_LISTED) {
        println!("  {what} {p}");
    }
    if paths.len() > MAX_LISTED {
        println!(
            "  ... and {} more (--json lists them all)",
            paths.len() - MAX_LISTED
        );
    }
}

/// `hummel verify MASTER_URL DEST`.
pub async fn verify(args: VerifyArgs) -> Result<ExitCode> {
    let opts = VerifyOptions {
        master_url: normalize_url(&args.master_url)?,
        dest: args.dest.clone(),
        path: subtree(args.path.as_deref())?,
        read_token: args.read_token.clone(),
        tls: client_tls(&args.trust)?,
    };
    let report = hummel_client::verify(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for p in &report.problems {
            println!("{p}");
        }
    }
    if !report.problems.is_empty() {
        bail!(
            "{} differs from revision {}: {} problem(s) in {} files checked",
            args.dest.display(),
            report.revision,
            report.problems.len(),
            report.files_checked
        );
    }
    if !args.json {
        println!(
            "{} is identical to revision {} ({} files checked)",
            args.dest.display(),
            report.revision,
            report.files_checked
        );
    }
    Ok(ExitCode::SUCCESS)
}
