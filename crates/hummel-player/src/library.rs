//! What the page shows of a repository for a profile ([`view`]), and the sync of the profile's
//! mods ([`sync_profile`]).
//!
//! A mod is a top-level folder of the repository. Each ticked mod is synced on its own into
//! `FOLDER/MOD` (`hummel sync URL FOLDER/MOD --path MOD`), so its state lives in
//! `FOLDER/MOD/.hummel/` and the other folders of the game's mod folder (the player's own mods,
//! other repositories') are never looked at. A mod is up to date when the index its folder holds
//! has the files and folders of the current revision's subtree.
//!
//! Sets (named lists of mods with launch parameters, defined by the admin) are not published
//! by masters yet; [`RepoView::sets`] is where the page finds them once they are.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use hummel_client::changes::{Current, held, same_tree};
use hummel_client::{Changelog, SyncOptions, SyncOutcome, SyncPhase, SyncProgress, changes};
use hummel_core::{EntryKind, Index, RelPath};
use hummel_tls::ClientTls;

use crate::profile::Profile;

/// How a mod stands in the profile's folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModStatus {
    /// No folder chosen yet.
    NoFolder,
    /// Not in the folder.
    NotInstalled,
    /// In the folder but not synced by Hummel from this repository: a sync takes it over.
    NotManaged,
    /// Synced, and the repository has changed it since.
    UpdateAvailable,
    /// Synced, and the same as the current revision.
    UpToDate,
}

/// One mod of the repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModView {
    /// The top-level folder's name, e.g. `@ace`.
    pub name: String,
    /// Files in it.
    pub files: u64,
    /// Bytes of its files.
    pub bytes: u64,
    /// Ticked in the profile.
    pub selected: bool,
    /// In the profile's folder.
    pub status: ModStatus,
    /// The revision the folder holds of it.
    pub held_revision: Option<u64>,
}

/// A set of mods the admin defined (none are published yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetView {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The mods in it.
    pub mods: Vec<String>,
    /// A server to join, `HOST:PORT`.
    pub server: Option<String>,
}

/// What the page shows of a profile's repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoView {
    /// The master's URL.
    pub url: String,
    /// The current revision.
    pub revision: u64,
    /// When it was built (seconds since the epoch).
    pub created_unix: Option<i64>,
    /// Files and bytes of the whole revision.
    pub files: u64,
    /// Bytes of the whole revision.
    pub bytes: u64,
    /// The mods, by name.
    pub mods: Vec<ModView>,
    /// The admin's sets.
    pub sets: Vec<SetView>,
    /// Ticked mods the repository no longer has.
    pub gone: Vec<String>,
    /// What a sync of the ticked mods brings: the current revision against what the folder
    /// holds of each.
    pub changes: Changelog,
}

/// The mods of `index`: its top-level folders, with their files and bytes.
pub fn mods_of(index: &Index) -> Vec<(String, u64, u64)> {
    let mut mods: Vec<(String, u64, u64)> = Vec::new();
    for e in &index.entries {
        let path = e.path.as_str();
        let top = path.split('/').next().unwrap_or(path);
        match &e.kind {
            EntryKind::Dir(_) if top == path => mods.push((top.to_string(), 0, 0)),
            EntryKind::File(f) => {
                if let Some(m) = mods.iter_mut().rev().find(|m| m.0 == top) {
                    m.1 += 1;
                    m.2 += f.size;
                }
            }
            EntryKind::Dir(_) => {}
        }
    }
    mods.sort_by(|a, b| a.0.cmp(&b.0));
    mods
}

/// What `folder/name` holds of this repository, if a sync of mod `name` from it left it.
fn held_mod(
    folder: &Path,
    name: &str,
    current: &Current,
    url: &str,
) -> Option<hummel_client::changes::Held> {
    let h = held(&folder.join(name))?;
    let same_repo = match (&h.state.repository_id, &current.info.repository_id) {
        (Some(a), Some(b)) => a == b,
        _ => h.state.master_url.trim_end_matches('/') == url.trim_end_matches('/'),
    };
    (same_repo && h.state.subtree.as_deref() == Some(name)).then_some(h)
}

/// The page's view of `profile`'s repository, given its current revision. Blocking: reads the
/// index each mod folder holds.
pub fn view(profile: &Profile, current: &Current) -> RepoView {
    let index = &current.index;
    let mut changes_log = Changelog {
        from: None,
        to: index.revision,
        ..Changelog::default()
    };
    let mut mods = Vec::new();
    for (name, files, bytes) in mods_of(index) {
        let selected = profile.mods.contains(&name);
        let (status, held_revision) = if profile.folder.as_os_str().is_empty() {
            (ModStatus::NoFolder, None)
        } else {
            match held_mod(&profile.folder, &name, current, &profile.repository) {
                Some(h) => {
                    let now = subtree(index, &name);
                    if selected {
                        changes_log.merge(changes(Some(&h.index), &now));
                    }
                    let status = if same_tree(&h.index, &now) {
                        ModStatus::UpToDate
                    } else {
                        ModStatus::UpdateAvailable
                    };
                    (status, Some(h.state.revision))
                }
                None => {
                    if selected {
                        changes_log.merge(changes(None, &subtree(index, &name)));
                    }
                    if profile.folder.join(&name).exists() {
                        (ModStatus::NotManaged, None)
                    } else {
                        (ModStatus::NotInstalled, None)
                    }
                }
            }
        };
        mods.push(ModView {
            name,
            files,
            bytes,
            selected,
            status,
            held_revision,
        });
    }
    let gone = profile
        .mods
        .iter()
        .filter(|m| !mods.iter().any(|v| &v.name == *m))
        .cloned()
        .collect();
    RepoView {
        url: profile.repository.clone(),
        revision: index.revision,
        created_unix: current.info.created_unix,
        files: current.info.files,
        bytes: current.info.bytes,
        mods,
        sets: Vec::new(),
        gone,
        changes: changes_log,
    }
}

/// The subtree of mod `name` (an empty index of it if the index has no such folder).
fn subtree(index: &Index, name: &str) -> Index {
    RelPath::new(name)
        .ok()
        .and_then(|p| index.subtree(&p))
        .unwrap_or_else(|| Index {
            revision: index.revision,
            created_unix: index.created_unix,
            chunker: index.chunker,
            root: RelPath::new(name).ok(),
            entries: Vec::new(),
            chunks: Vec::new(),
            packs: Vec::new(),
        })
}

/// How a sync of a profile stands, as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncStatus {
    /// The profile.
    pub profile: String,
    /// `running`, `done` or `failed`.
    pub state: RunState,
    /// The mod being synced.
    pub current_mod: Option<String>,
    /// Its number, from 1.
    pub mod_number: usize,
    /// Mods to sync.
    pub mods: usize,
    /// The phase of the mod being synced.
    pub phase: SyncPhase,
    /// Plain bytes written so far, all mods together.
    pub bytes_done: u64,
    /// Plain bytes to write, all mods together (an estimate until each mod has planned).
    pub bytes_total: u64,
    /// 0 to 100.
    pub percent: f64,
    /// Bytes a second over the last seconds.
    pub rate: f64,
    /// Seconds left at that rate.
    pub eta_secs: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Files written, all mods together.
    pub files_written: u64,
    /// Files deleted.
    pub files_deleted: u64,
    /// Compressed bytes downloaded.
    pub bytes_downloaded: u64,
    /// What the sync changed in the folder.
    pub changes: Option<Changelog>,
    /// The revision synced.
    pub revision: u64,
}

/// A sync's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Under way.
    Running,
    /// Every mod synced.
    Done,
    /// Stopped on an error.
    Failed,
}

/// How often [`sync_profile`] reports while a mod syncs.
const TICK: Duration = Duration::from_millis(200);
/// The window the rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Syncs each ticked mod of `profile` the repository has into `FOLDER/MOD`, in name order,
/// calling `report` as it goes (every [`TICK`] while a mod transfers) and once at the end.
/// Returns the last status (`Done` or `Failed`).
pub async fn sync_profile(
    profile: &Profile,
    tls: &ClientTls,
    current: &Arc<Current>,
    mut report: impl FnMut(&SyncStatus),
) -> SyncStatus {
    let available = mods_of(&current.index);
    let mut mods: Vec<String> = profile
        .mods
        .iter()
        .filter(|m| available.iter().any(|a| &a.0 == *m))
        .cloned()
        .collect();
    mods.sort();
    mods.dedup();
    let mut status = SyncStatus {
        profile: profile.name.clone(),
        state: RunState::Running,
        current_mod: None,
        mod_number: 0,
        mods: mods.len(),
        phase: SyncPhase::Checking,
        bytes_done: 0,
        bytes_total: 0,
        percent: 0.0,
        rate: 0.0,
        eta_secs: None,
        error: None,
        files_written: 0,
        files_deleted: 0,
        bytes_downloaded: 0,
        changes: None,
        revision: current.index.revision,
    };
    let fail = |mut status: SyncStatus, e: String, report: &mut dyn FnMut(&SyncStatus)| {
        status.state = RunState::Failed;
        status.error = Some(e);
        status.rate = 0.0;
        status.eta_secs = None;
        report(&status);
        status
    };
    if profile.folder.as_os_str().is_empty() {
        return fail(
            status,
            "choose the game's mod folder first".into(),
            &mut report,
        );
    }
    if mods.is_empty() {
        return fail(status, "tick at least one mod first".into(), &mut report);
    }
    // What each mod will write, until its plan says: the changes a sync brings.
    let folder = profile.folder.clone();
    let estimates: Vec<u64> = {
        let (p, c) = (profile.clone(), current.clone());
        let planned = tokio::task::spawn_blocking(move || view(&p, &c))
            .await
            .map_err(|e| e.to_string());
        match planned {
            Ok(v) => mods
                .iter()
                .map(|m| {
                    v.changes
                        .mods
                        .iter()
                        .find(|c| &c.name == m)
                        .map_or(0, |c| c.bytes_changed)
                })
                .collect(),
            Err(e) => return fail(status, e, &mut report),
        }
    };
    let token = profile.read_token.clone().or_else(|| {
        std::env::var("HUMMEL_READ_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let mut log = Changelog {
        from: None,
        to: current.index.revision,
        ..Changelog::default()
    };
    let mut finished_bytes = 0u64;
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    report(&status);
    for (i, name) in mods.iter().enumerate() {
        let dest = folder.join(name);
        let before = {
            let d = dest.clone();
            tokio::task::spawn_blocking(move || held(&d))
                .await
                .ok()
                .flatten()
        };
        let mut opts = SyncOptions::new(profile.repository.clone(), dest.clone());
        opts.path = match RelPath::new(name) {
            Ok(p) => Some(p),
            Err(e) => return fail(status, e.to_string(), &mut report),
        };
        opts.read_token = token.clone();
        opts.tls = tls.clone();
        status.current_mod = Some(name.clone());
        status.mod_number = i + 1;
        let progress = SyncProgress::new();
        let run = hummel_client::sync_with_progress(&opts, Some(progress.clone()));
        tokio::pin!(run);
        let mut tick = tokio::time::interval(TICK);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = tick.tick() => {
                    let snap = progress.snapshot();
                    let this_total = match snap.phase {
                        SyncPhase::Checking => estimates[i],
                        _ => snap.bytes_total,
                    };
                    status.phase = snap.phase;
                    status.bytes_done = finished_bytes + snap.bytes_done;
                    status.bytes_total =
                        finished_bytes + this_total + estimates[i + 1..].iter().sum::<u64>();
                    measure(&mut status, &mut samples);
                    report(&status);
                }
            }
        };
        let snap = progress.snapshot();
        match outcome {
            Ok(SyncOutcome::Done(r)) => {
                status.files_written += r.files_written;
                status.files_deleted += r.files_deleted;
                status.bytes_downloaded += r.bytes_downloaded;
                status.revision = r.revision;
                finished_bytes += snap.bytes_total.max(r.bytes_written);
            }
            Ok(SyncOutcome::DryRun(_)) => {}
            Err(e) => return fail(status, format!("{name}: {e}"), &mut report),
        }
        let after = {
            let d = dest.clone();
            tokio::task::spawn_blocking(move || held(&d))
                .await
                .ok()
                .flatten()
        };
        if let Some(after) = after {
            log.merge(changes(before.as_ref().map(|h| &h.index), &after.index));
        }
    }
    status.state = RunState::Done;
    status.current_mod = None;
    status.phase = SyncPhase::Finished;
    status.bytes_done = finished_bytes;
    status.bytes_total = finished_bytes;
    status.percent = 100.0;
    status.rate = 0.0;
    status.eta_secs = Some(0);
    status.changes = Some(log);
    report(&status);
    status
}

/// Percent, rate over [`RATE_WINDOW`] and ETA of `status`, from its bytes.
fn measure(status: &mut SyncStatus, samples: &mut VecDeque<(Instant, u64)>) {
    let now = Instant::now();
    samples.push_back((now, status.bytes_done));
    while samples
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
    {
        samples.pop_front();
    }
    status.percent = if status.bytes_total == 0 {
        0.0
    } else {
        (status.bytes_done as f64 * 100.0 / status.bytes_total as f64).min(100.0)
    };
    let (t0, b0) = samples.front().copied().unwrap_or((now, status.bytes_done));
    let secs = now.duration_since(t0).as_secs_f64();
    status.rate = if secs > 0.5 {
        status.bytes_done.saturating_sub(b0) as f64 / secs
    } else {
        status.rate
    };
    status.eta_secs = (status.rate > 0.0).then(|| {
        (status.bytes_total.saturating_sub(status.bytes_done) as f64 / status.rate) as u64
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use hummel_core::Hash;
    use hummel_core::chunk::ChunkerConfig;
    use hummel_core::index::{DirEntry, Entry, FileEntry};

    #[test]
    fn mods_are_top_level_folders_with_their_sizes() {
        let dir = |p: &str| Entry {
            path: RelPath::new(p).unwrap(),
            kind: EntryKind::Dir(DirEntry { mode: 0o755 }),
        };
        let file = |p: &str, size: u64| Entry {
            path: RelPath::new(p).unwrap(),
            kind: EntryKind::File(FileEntry {
                size,
                mode: 0o644,
                mtime_ns: 0,
                hash: Hash::of(p.as_bytes()),
                chunks: Vec::new(),
            }),
        };
        let mut entries = vec![
            dir("@a"),
            dir("@a/addons"),
            file("@a/addons/x.pbo", 10),
            file("@a/mod.cpp", 5),
            dir("@b"),
            file("@b.txt", 7),
            dir("@a.old"),
            file("@a.old/y", 1),
            file("readme.txt", 3),
        ];
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let index = Index {
            revision: 1,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries,
            chunks: Vec::new(),
            packs: Vec::new(),
        };
        assert_eq!(
            mods_of(&index),
            vec![
                ("@a".to_string(), 2, 15),
                ("@a.old".to_string(), 1, 1),
                ("@b".to_string(), 0, 0)
            ]
        );
    }
}
