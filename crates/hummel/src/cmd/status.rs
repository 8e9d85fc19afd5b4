//! `hummel status`: revision, build, background repack (when on), slaves, replication health,
//! clients.

use std::process::ExitCode;

use anyhow::Result;
use hummel_proto::api::ReplicatingStatus;

use super::{master_api, master_error};
use crate::cli::StatusArgs;
use crate::util::{client_tls, human_bytes, normalize_url};

/// `hummel status --master URL [--json]`.
pub async fn status(args: StatusArgs) -> Result<ExitCode> {
    let master = normalize_url(&args.master)?;
    let api = master_api(
        &master,
        &client_tls(&args.trust)?,
        args.read_token.as_deref(),
        "read",
    )?;
    let st = api.status().await.map_err(|e| master_error(&master, e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    match st.revision.revision {
        Some(r) => println!(
            "revision {r}: {} files, {}",
            st.revision.files,
            human_bytes(st.revision.bytes)
        ),
        None => println!("no revision yet"),
    }
    if let Some(s) = &st.signing {
        println!(
            "signing key {} (statements hold {} s, signed again halfway{})",
            s.fingerprint,
            s.expiry_s,
            if s.rotations > 0 {
                format!("; {} rotation(s)", s.rotations)
            } else {
                String::new()
            }
        );
    }
    if let Some(b) = &st.build {
        let state = serde_json::to_value(b.state)?;
        println!(
            "last build {}: {} ({}/{} files){}",
            b.id,
            state.as_str().unwrap_or("?"),
            b.files_done,
            b.files_total,
            b.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(rp) = &st.repack {
        println!(
            "repack to zstd level {}: {}, {} passes published, {} saved{}",
            rp.level,
            if rp.running { "running" } else { "idle" },
            rp.runs,
            human_bytes(rp.bytes_saved),
            rp.last_revision
                .map(|r| format!(", last revision {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(g) = &st.gc {
        println!(
            "garbage collection: keeps {} builds, grace {}s; {} packs ({}) and {} revisions collected in {} passes",
            g.keep_revisions,
            g.grace_s,
            g.packs_collected,
            human_bytes(g.bytes_collected),
            g.revisions_expired,
            g.runs
        );
        if !g.retained.is_empty() {
            let kept: Vec<String> = g
                .retained
                .iter()
                .map(|r| {
                    let why: Vec<String> = r
                        .reasons
                        .iter()
                        .filter_map(|w| serde_json::to_value(w).ok()?.as_str().map(String::from))
                        .collect();
                    format!("{} ({})", r.revision, why.join(", "))
                })
                .collect();
            println!("  retained revisions: {}", kept.join("; "));
        }
    }
    let r = &st.replication;
    println!(
        "replication: {} packs, target {} copies, {} under-replicated, {} unavailable",
        r.packs, r.target, r.under_replicated, r.unavailable
    );
    if let Some(rp) = &st.replicating {
        println!("{}", replicating_line(rp, r.target));
    }
    println!("slaves: {}", st.slaves.len());
    for s in &st.slaves {
        let state = serde_json::to_value(s.state)?;
        println!(
            "  {:<6} {:<28} {:>6} packs {:>10}{}  seen {:.1}s ago  pending {}",
            state.as_str().unwrap_or("?"),
            s.url,
            s.packs,
            human_bytes(s.used),
            s.quota
                .map(|q| format!(" / {}", human_bytes(q)))
                .unwrap_or_default(),
            s.last_seen_ms as f64 / 1000.0,
            s.pending
        );
        if let Some(v) = s.verified
            && v < s.packs
            && s.withheld.is_none()
        {
            println!(
                "         clients sent for {v} of its {} packs (verified by probes)",
                s.packs
            );
        }
        if let Some(why) = &s.withheld {
            println!("         no clients sent: {why}");
        }
        match s.drain {
            Some(hummel_proto::api::DrainState::Draining) => {
                println!("         draining: its packs are being copied to the other slaves")
            }
            Some(hummel_proto::api::DrainState::Drained) => {
                println!("         drained: removing it (hummel remove-slave) is safe")
            }
            None => {}
        }
    }
    let total = st.clients_total.unwrap_or(st.clients.len() as u64);
    if total > st.clients.len() as u64 {
        println!(
            "clients: {total} (the {} most recent below)",
            st.clients.len()
        );
    } else {
        println!("clients: {total}");
    }
    for c in &st.clients {
        println!(
            "  {:<16} {:<22} revision {:<5} {:>7} files  /{}  seen {:.0}s ago{}",
            c.id.chars().take(16).collect::<String>(),
            c.addr,
            c.revision,
            c.files,
            c.path,
            c.last_seen_ms as f64 / 1000.0,
            c.pinned
                .map(|n| format!("  pinned to {n}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `replicating: 3 packs below 2 copies, 2 on no mirror yet (the master serves those: 1 of 4
/// downloads)`.
fn replicating_line(rp: &ReplicatingStatus, target: u32) -> String {
    let mut line = format!("replicating: {} packs below {target} copies", rp.packs);
    if rp.without_copy > 0 {
        line.push_str(&format!(", {} on no mirror yet", rp.without_copy));
        if rp.master_fallback {
            line.push_str(&format!(
                " (the master serves those: {} of {} downloads)",
                rp.fallback_active, rp.fallback_limit
            ));
        } else {
            line.push_str(" (not downloadable until a mirror has them)");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replicating_line_says_whether_the_master_serves() {
        let mut rp = ReplicatingStatus {
            packs: 3,
            without_copy: 2,
            master_fallback: true,
            fallback_active: 1,
            fallback_limit: 4,
        };
        assert_eq!(
            replicating_line(&rp, 2),
            "replicating: 3 packs below 2 copies, 2 on no mirror yet (the master serves those: 1 of 4 downloads)"
        );
        rp.without_copy = 0;
        assert_eq!(
            replicating_line(&rp, 2),
            "replicating: 3 packs below 2 copies"
        );
    }
}
