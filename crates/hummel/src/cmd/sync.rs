//! `hummel sync` and `hummel verify`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hummel_client::{KeyTrust, RevisionWatch, Selection, SyncOptions, SyncOutcome, VerifyOptions};
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

/// `--path` given once: a subtree (DEST becomes it); twice or more, or `--set`: a selection
/// of folders, each at its repository path below DEST.
fn selection(paths: &[String], set: Option<&str>) -> Result<(Option<RelPath>, Option<Selection>)> {
    if let Some(name) = set {
        return Ok((None, Some(Selection::Set(name.to_string()))));
    }
    match paths {
        [] => Ok((None, None)),
        [one] => Ok((subtree(Some(one))?, None)),
        many => {
            let mut folders = Vec::with_capacity(many.len());
            for p in many {
                let Some(folder) = subtree(Some(p))? else {
                    bail!("--path {p:?} names the whole repository; give folders only");
                };
                if folders.contains(&folder) {
                    bail!("--path {folder} is given twice");
                }
                folders.push(folder);
            }
            for a in &folders {
                if let Some(b) = folders
                    .iter()
                    .find(|b| *b != a && b.as_str().starts_with(&format!("{a}/")))
                {
                    bail!("--path {b} lies inside --path {a}");
                }
            }
            Ok((None, Some(Selection::Paths(folders))))
        }
    }
}

/// `hummel sync MASTER_URL DEST` (or `--profile NAME`).
pub async fn sync(args: SyncArgs) -> Result<ExitCode> {
    if let Some(name) = &args.profile {
        return super::ui::sync_profile(name, &args).await;
    }
    let (Some(master_url), Some(dest)) = (&args.master_url, &args.dest) else {
        bail!("sync needs MASTER_URL and DEST, or --profile NAME");
    };
    let (path, selection) = selection(&args.path, args.set.as_deref())?;
    let opts = SyncOptions {
        master_url: normalize_url(master_url)?,
        dest: dest.clone(),
        path,
        selection,
        dry_run: args.dry_run,
        keep_extra: args.keep_extra,
        allow_mass_delete: args.allow_mass_delete,
        allow_rollback: args.allow_rollback,
        trust: args.trust_key,
        read_token: args.read_token.clone(),
        tls: client_tls(&args.trust)?,
        progress: !args.json && std::io::stderr().is_terminal(),
        concurrency: args.concurrency as usize,
        revision: args.revision,
    };
    if args.watch {
        return watch(&args, dest, opts).await;
    }
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
    print_outcome(&args, dest, outcome)?;
    Ok(ExitCode::SUCCESS)
}

/// `hummel sync --watch`: sync, then again each time the master announces another revision;
/// a failed sync is retried at the next announcement or after a jittered wait. Ctrl-C while
/// waiting ends it (exit 0); during a sync, as a plain sync does.
async fn watch(args: &SyncArgs, dest: &Path, opts: SyncOptions) -> Result<ExitCode> {
    let mut news = RevisionWatch::new(&opts.master_url, opts.read_token.as_deref(), &opts.tls)?;
    let mut held: Option<u64> = None;
    // Pinned, DEST stays on its revision: the next sync is for the next announcement, not
    // for any revision other than the one held (which would be every one).
    let mut pinned = false;
    let mut announced: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            outcome = hummel_client::sync(&opts) => outcome,
            () = shutdown_signal() => bail!(
                "interrupted; verified data kept in {}, run the same sync again to resume",
                dest.join(".hummel/tmp").display()
            ),
        };
        let wait = match outcome {
            Ok(SyncOutcome::Done(report)) => {
                failures = 0;
                let changed = report.files_written
                    + report.files_deleted
                    + report.files_touched
                    + report.dirs_created
                    + report.dirs_deleted
                    > 0;
                held = Some(report.revision);
                pinned = report.pinned.is_some();
                let revision = report.revision;
                print_outcome(args, dest, SyncOutcome::Done(report))?;
                if changed && let Some(cmd) = &args.exec {
                    run_exec(cmd, revision, dest).await;
                }
                None
            }
            Ok(dry) => {
                print_outcome(args, dest, dry)?;
                None
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = hummel_client::watch::RECONNECT.delay(failures + 2);
                eprintln!(
                    "error: {e}; trying again at the next revision or in {} s",
                    wait.as_secs()
                );
                Some(wait)
            }
        };
        if wait.is_none() && !args.json {
            eprintln!(
                "watching {} for new revisions (Ctrl-C ends)",
                opts.master_url
            );
        }
        let retry = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = news.next_other_than(if pinned { announced } else { held }) => {
                announced = Some(n);
            }
            () = retry => {}
            () = shutdown_signal() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Runs `--exec` after a sync that changed DEST; its failure is reported, not fatal.
async fn run_exec(cmd: &str, revision: u64, dest: &Path) {
    let mut command = if cfg!(windows) {
        let mut c = tokio::process::Command::new("cmd");
        c.arg("/C").arg(cmd);
        c
    } else {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(cmd);
        c
    };
    command
        .env("HUMMEL_REVISION", revision.to_string())
        .env("HUMMEL_DEST", dest)
        .stdin(std::process::Stdio::null());
    match command.status().await {
        Ok(s) if s.success() => tracing::info!(revision, "--exec command done"),
        Ok(s) => eprintln!("warning: the --exec command failed ({s})"),
        Err(e) => eprintln!("warning: could not run the --exec command: {e}"),
    }
}

/// Prints what a sync did (or would do), and how the master's signing key is trusted.
fn print_outcome(args: &SyncArgs, dest: &Path, outcome: SyncOutcome) -> Result<()> {
    let (key, trust) = match &outcome {
        SyncOutcome::Done(r) => (&r.signing_key, r.signing_key_trust),
        SyncOutcome::DryRun(p) => (&p.signing_key, p.signing_key_trust),
    };
    say_key_trust(key, trust, dest, args.dry_run);
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
                if let Some(n) = report.pinned {
                    eprintln!(
                        "pinned to revision {n}: later syncs stay on it (--revision latest \
                         follows the master again)"
                    );
                }
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
    Ok(())
}

/// Says on stderr when the master's signing key was trusted for the first time (or anew): the
/// one moment a user can compare it with what the master's admin publishes.
fn say_key_trust(key: &str, trust: KeyTrust, dest: &std::path::Path, pins_nothing: bool) {
    let kept = if pins_nothing {
        "nothing pinned (a dry run or verify writes nothing)".to_string()
    } else {
        format!("pinned in {}", dest.join(".hummel").display())
    };
    match trust {
        KeyTrust::FirstContact => eprintln!(
            "trusting the master's signing key {key} on first contact ({kept}); compare it \
             with the one the master's admin publishes, or pass --trust"
        ),
        KeyTrust::Rotated => eprintln!(
            "the master's signing key was rotated: the pinned key handed over to {key} ({kept})"
        ),
        KeyTrust::Given | KeyTrust::Pinned => {}
    }
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
    let (path, selection) = selection(&args.path, args.set.as_deref())?;
    let opts = VerifyOptions {
        master_url: normalize_url(&args.master_url)?,
        dest: args.dest.clone(),
        path,
        selection,
        read_token: args.read_token.clone(),
        tls: client_tls(&args.trust)?,
        trust: args.trust_key,
    };
    let report = hummel_client::verify(&opts).await?;
    say_key_trust(
        &report.signing_key,
        report.signing_key_trust,
        &args.dest,
        true,
    );
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
