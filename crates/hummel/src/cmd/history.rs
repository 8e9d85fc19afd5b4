//! `hummel revisions`, `hummel changes` and `hummel rollback`: the master's revision history,
//! what changed between two revisions, and publishing an older revision's tree again.

use std::process::ExitCode;

use anyhow::Result;
use hummel_core::changes::{Change, ChangeSummary};
use hummel_proto::api::{ChangesQuery, RevisionsQuery, RollbackRequest};

use super::{master_api, master_error, write_api};
use crate::cli::{ChangesArgs, RevisionsArgs, RollbackArgs};
use crate::util::{client_tls, human_bytes, normalize_url};

/// "+2 ~1 -3 files, 1.2 MiB written" for humans.
fn summary_line(s: &ChangeSummary) -> String {
    format!(
        "+{} ~{} -{} files, {} changed",
        s.files_added,
        s.files_updated,
        s.files_removed,
        human_bytes(s.bytes_changed)
    )
}

/// A time as `YYYY-MM-DD hh:mm:ss UTC` (the calendar of `hummel_master::utc`, as the master
/// names revisions).
fn utc(unix: i64) -> String {
    let t = hummel_master::utc(unix);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `hummel revisions --master URL [--limit N] [--before M] [--json]`.
pub async fn revisions(args: RevisionsArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = master_api(
        &master,
        &client_tls(&args.trust)?,
        args.read_token.as_deref(),
        "read",
    )?;
    let list = api
        .revisions(&RevisionsQuery {
            limit: Some(args.limit),
            before: args.before,
        })
        .await
        .map_err(|e| master_error(&master, e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.revisions.is_empty() {
        println!("no revision yet");
        return Ok(ExitCode::SUCCESS);
    }
    for r in &list.revisions {
        let changes = r
            .changes
            .as_ref()
            .map_or_else(|| "changes unknown".to_string(), summary_line);
        let mut tags = Vec::new();
        if let Some(n) = r.rollback_of {
            tags.push(format!("rollback to {n}"));
        }
        if r.repack {
            tags.push("repack".to_string());
        }
        if !r.available {
            tags.push("collected".to_string());
        }
        println!(
            "{}  {}  {} files, {}  {}{}",
            r.revision,
            utc(r.created_unix),
            r.files,
            human_bytes(r.bytes),
            changes,
            if tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", tags.join(", "))
            }
        );
        if let Some(m) = &r.message {
            for line in m.lines() {
                println!("    {line}");
            }
        }
    }
    let shown = list.revisions.len() as u64;
    if shown < list.total {
        println!(
            "({shown} of {} revisions; --before {} for older ones)",
            list.total,
            list.revisions.last().map_or(0, |r| r.revision)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `hummel changes --master URL [--from N] [--to M] [--json]`.
pub async fn changes(args: ChangesArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = master_api(
        &master,
        &client_tls(&args.trust)?,
        args.read_token.as_deref(),
        "read",
    )?;
    let log = api
        .changes(&ChangesQuery {
            from: args.from,
            to: args.to,
        })
        .await
        .map_err(|e| master_error(&master, e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(ExitCode::SUCCESS);
    }
    let from = log
        .from
        .map_or_else(|| "nothing".to_string(), |n| n.to_string());
    println!("from {from} to {}: {}", log.to, summary_line(&log.summary));
    let sign = |c: Change| match c {
        Change::Added => '+',
        Change::Updated => '~',
        Change::Removed => '-',
    };
    let renamed = |from: &Option<String>| {
        from.as_ref()
            .map_or_else(String::new, |f| format!(" (renamed from {f})"))
    };
    for m in &log.mods {
        println!(
            "{} {}{}  (+{} ~{} -{} files, {})",
            sign(m.change),
            m.name,
            renamed(&m.renamed_from),
            m.files_added,
            m.files_updated,
            m.files_removed,
            human_bytes(m.bytes_changed)
        );
    }
    for f in &log.files {
        println!(
            "  {} {}{}  {}",
            sign(f.change),
            f.path,
            renamed(&f.renamed_from),
            human_bytes(f.size)
        );
    }
    if log.truncated {
        println!(
            "(showing {} of {} mods and {} of {} files)",
            log.mods.len(),
            log.mods_total,
            log.files.len(),
            log.files_total
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `hummel rollback N --master URL [--message TEXT] [--allow-mass-delete] [--json]`.
pub async fn rollback(args: RollbackArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = write_api(&master, args.write_token, &args.trust)?;
    let done = api
        .rollback(&RollbackRequest {
            revision: args.revision,
            message: args.message,
            allow_mass_delete: args.allow_mass_delete,
        })
        .await
        .map_err(|e| master_error(&master, e))?;
    if args.json {
        println!("{}", serde_json::to_string(&done)?);
    } else {
        println!(
            "revision {} published with the tree of revision {}",
            done.revision, done.rollback_of
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_676_800), "2025-12-02 12:00:00 UTC");
    }
}
