//! What the page shows of a repository for a profile ([`view`]), and the sync of the profile's
//! mods ([`sync_profile`]).
//!
//! A mod is a top-level folder of the repository. The ticked mods are synced together into the
//! game's mod folder as one DEST (`hummel sync URL FOLDER --path A --path B`, each mod at
//! `FOLDER/MOD`), so the state lives in `FOLDER/.hummel/`. The other folders of the game's mod
//! folder (the player's own mods, other repositories') are never looked at; a mod an earlier
//! sync of the page placed there and that is no longer ticked is removed (the changes say so
//! before). A mod is up to date when the index the folder holds has the files and folders of
//! the current revision's mod.
//!
//! Sets (named lists of mods with launch parameters, defined by the admin in the signed
//! revision's info section) are listed with their size and state; picking one ticks its mods
//! and takes its server ([`RepoView::sets`]).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use hummel_client::changes::{Current, held, same_tree};
use hummel_client::{
    Changelog, Selection, SyncOptions, SyncOutcome, SyncPhase, SyncProgress, changes,
};
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

/// A set of mods the admin defined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetView {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The mods in it.
    pub mods: Vec<String>,
    /// A server to join, `HOST:PORT` (`HOST` when the set names no port).
    pub server: Option<String>,
    /// The server asks for a password: the page asks the player at launch.
    pub password: bool,
    /// Files of its mods.
    pub files: u64,
    /// Bytes of its mods.
    pub bytes: u64,
    /// How its mods stand in the folder: up to date when all are, not installed when none is
    /// there, else an update is available.
    pub status: ModStatus,
    /// The profile's set (picked last).
    pub picked: bool,
}

/// What the page shows of a profile's repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoView {
    /// The master's URL.
    pub url: String,
    /// The repository's name, as its admin published it (may be empty).
    pub name: String,
    /// Its description (may be empty).
    pub description: String,
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

/// `profile` with the mods of its picked set as the revision `index` defines it (the admin may
/// have changed the set since it was picked); as it is when it picked none, or one the
/// repository no longer has.
pub fn with_set(profile: &Profile, index: &Index) -> Profile {
    let mut p = profile.clone();
    if let Some(set) = p.set.as_deref().and_then(|n| index.info.set(n)) {
        p.mods = set.mods.iter().map(|m| m.to_string()).collect();
        p.mods.sort();
    }
    p
}

/// What `folder` holds of this repository, if a sync of the page (a selection of its mods
/// into the folder) left it.
fn held_folder(
    folder: &Path,
    current: &Current,
    url: &str,
) -> Option<hummel_client::changes::Held> {
    let h = held(folder)?;
    let same_repo = match (&h.state.repository_id, &current.info.repository_id) {
        (Some(a), Some(b)) => a == b,
        _ => h.state.master_url.trim_end_matches('/') == url.trim_end_matches('/'),
    };
    // A selection's state names no subtree but a key starting with `/`.
    let selection = h
        .state
        .subtree
        .as_deref()
        .is_some_and(|s| s.starts_with('/'));
    (same_repo && selection).then_some(h)
}

/// The mods of `index` named `names` that it has (at their paths; an empty index if none).
fn selected(index: &Index, names: &[String]) -> Index {
    let dirs: Vec<RelPath> = names
        .iter()
        .filter_map(|n| RelPath::new(n).ok())
        .filter(|p| matches!(index.get(p).map(|e| &e.kind), Some(EntryKind::Dir(_))))
        .collect();
    index.select(&dirs).unwrap_or_else(|_| Index {
        entries: Vec::new(),
        chunks: Vec::new(),
        packs: Vec::new(),
        ..index.clone()
    })
}

/// The page's view of `profile`'s repository, given its current revision. Blocking: reads the
/// index the folder holds.
pub fn view(profile: &Profile, current: &Current) -> RepoView {
    let index = &current.index;
    let profile = &with_set(profile, index);
    let no_folder = profile.folder.as_os_str().is_empty();
    let held = (!no_folder)
        .then(|| held_folder(&profile.folder, current, &profile.repository))
        .flatten();
    // What a sync of the ticked mods brings: against what the folder holds (mods it holds
    // and no longer ticked are removed by it).
    let ticked: Vec<String> = profile.mods.clone();
    let changes_log = {
        let mut log = changes(held.as_ref().map(|h| &h.index), &selected(index, &ticked));
        log.to = index.revision;
        log
    };
    let mut mods = Vec::new();
    for (name, files, bytes) in mods_of(index) {
        let selected_now = profile.mods.contains(&name);
        let holds = held.as_ref().filter(|h| {
            h.state.owned.contains(&name)
                && RelPath::new(&name).is_ok_and(|p| {
                    matches!(h.index.get(&p).map(|e| &e.kind), Some(EntryKind::Dir(_)))
                })
        });
        let (status, held_revision) = if no_folder {
            (ModStatus::NoFolder, None)
        } else if let Some(h) = holds {
            let one = std::slice::from_ref(&name);
            let status = if same_tree(&selected(&h.index, one), &selected(index, one)) {
                ModStatus::UpToDate
            } else {
                ModStatus::UpdateAvailable
            };
            (status, Some(h.state.revision))
        } else if profile.folder.join(&name).exists() {
            (ModStatus::NotManaged, None)
        } else {
            (ModStatus::NotInstalled, None)
        };
        let selected = selected_now;
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
    let sets = index
        .info
        .sets
        .iter()
        .map(|s| {
            let of_set: Vec<&ModView> = mods
                .iter()
                .filter(|m| s.mods.iter().any(|p| p.as_str() == m.name))
                .collect();
            let status = if no_folder {
                ModStatus::NoFolder
            } else if of_set.iter().all(|m| m.status == ModStatus::UpToDate) {
                ModStatus::UpToDate
            } else if of_set.iter().all(|m| m.status == ModStatus::NotInstalled) {
                ModStatus::NotInstalled
            } else {
                ModStatus::UpdateAvailable
            };
            SetView {
                name: s.name.clone(),
                description: s.description.clone(),
                mods: s.mods.iter().map(|m| m.to_string()).collect(),
                server: s.server.as_ref().map(|v| {
                    if v.port == 0 {
                        v.address.clone()
                    } else {
                        format!("{}:{}", v.address, v.port)
                    }
                }),
                password: s.server.as_ref().is_some_and(|v| v.password),
                files: of_set.iter().map(|m| m.files).sum(),
                bytes: of_set.iter().map(|m| m.bytes).sum(),
                status,
                picked: profile.set.as_deref() == Some(s.name.as_str()),
            }
        })
        .collect();
    RepoView {
        url: profile.repository.clone(),
        name: index.info.name.clone(),
        description: index.info.description.clone(),
        revision: index.revision,
        created_unix: current.info.created_unix,
        files: current.info.files,
        bytes: current.info.bytes,
        mods,
        sets,
        gone,
        changes: changes_log,
    }
}

/// How a sync of a profile stands, as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SyncStatus {
    /// The profile.
    pub profile: String,
    /// `running`, `done` or `failed`.
    pub state: RunState,
    /// The mods being synced (one sync brings them all), `, `-separated.
    pub current_mod: Option<String>,
    /// How many of them are under way (all at once: [`SyncStatus::mods`] once started).
    pub mod_number: usize,
    /// Mods to sync.
    pub mods: usize,
    /// The phase of the sync.
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

/// Syncs the ticked mods of `profile` the repository has into the folder, as one DEST (each
/// at `FOLDER/MOD`), calling `report` as it goes (every [`TICK`] while it transfers) and once
/// at the end. Returns the last status (`Done` or `Failed`).
pub async fn sync_profile(
    profile: &Profile,
    tls: &ClientTls,
    current: &Arc<Current>,
    mut report: impl FnMut(&SyncStatus),
) -> SyncStatus {
    let profile = &with_set(profile, &current.index);
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
    // What the sync will write, until its plan says: the changes it brings.
    let folder = profile.folder.clone();
    let estimate: u64 = {
        let (p, c) = (profile.clone(), current.clone());
        match tokio::task::spawn_blocking(move || view(&p, &c)).await {
            Ok(v) => v.changes.mods.iter().map(|c| c.bytes_changed).sum(),
            Err(e) => return fail(status, e.to_string(), &mut report),
        }
    };
    let token = profile.read_token.clone().or_else(|| {
        std::env::var("HUMMEL_READ_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
    });
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    report(&status);
    let before = {
        let d = folder.clone();
        tokio::task::spawn_blocking(move || held(&d))
            .await
            .ok()
            .flatten()
    };
    // One sync of every ticked mod into the folder, each at FOLDER/MOD.
    let mut folders = Vec::with_capacity(mods.len());
    for name in &mods {
        match RelPath::new(name) {
            Ok(p) => folders.push(p),
            Err(e) => return fail(status, e.to_string(), &mut report),
        }
    }
    let mut opts = SyncOptions::new(profile.repository.clone(), folder.clone());
    opts.selection = Some(Selection::Paths(folders));
    opts.read_token = token;
    opts.tls = tls.clone();
    status.current_mod = Some(mods.join(", "));
    status.mod_number = mods.len();
    let progress = SyncProgress::new();
    let run = hummel_client::sync_with_progress(&opts, Some(progress.clone()));
    tokio::pin!(run);
    let mut tick = tokio::time::interval(TICK);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            _ = tick.tick() => {
                let snap = progress.snapshot();
                status.phase = snap.phase;
                status.bytes_done = snap.bytes_done;
                status.bytes_total = match snap.phase {
                    SyncPhase::Checking => estimate,
                    _ => snap.bytes_total,
                };
                measure(&mut status, &mut samples);
                report(&status);
            }
        }
    };
    let snap = progress.snapshot();
    let mut finished_bytes = 0u64;
    match outcome {
        Ok(SyncOutcome::Done(r)) => {
            status.files_written += r.files_written;
            status.files_deleted += r.files_deleted;
            status.bytes_downloaded += r.bytes_downloaded;
            status.revision = r.revision;
            finished_bytes = snap.bytes_total.max(r.bytes_written);
        }
        Ok(SyncOutcome::DryRun(_)) => {}
        Err(e) => return fail(status, e.to_string(), &mut report),
    }
    let after = {
        let d = folder.clone();
        tokio::task::spawn_blocking(move || held(&d))
            .await
            .ok()
            .flatten()
    };
    let mut log = Changelog {
        from: None,
        to: current.index.revision,
        ..Changelog::default()
    };
    if let Some(after) = after {
        // Against what the folder held as a selection (a per-mod state from before is not
        // comparable: its paths are the mod's).
        let before = before.filter(|h| h.index.root.is_none());
        log = changes(before.as_ref().map(|h| &h.index), &after.index);
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

    /// A picked set follows the admin: its mods are the revision's, not those ticked when it
    /// was picked; a set the repository dropped leaves the ticks as they are.
    #[test]
    fn a_picked_set_brings_its_current_mods() {
        let mut index = Index {
            revision: 1,
            created_unix: 0,
            chunker: ChunkerConfig::default(),
            root: None,
            entries: Vec::new(),
            chunks: Vec::new(),
            packs: Vec::new(),
            info: Default::default(),
        };
        index.info.sets.push(hummel_core::SetInfo {
            name: "ops".into(),
            description: String::new(),
            mods: vec![RelPath::new("@rhs").unwrap(), RelPath::new("@ace").unwrap()],
            server: None,
        });
        let mut p = Profile::new("p", "http://x");
        p.mods = vec!["@ace".into(), "@cba".into()];
        assert_eq!(with_set(&p, &index).mods, ["@ace", "@cba"]);
        p.set = Some("ops".into());
        assert_eq!(with_set(&p, &index).mods, ["@ace", "@rhs"]);
        p.set = Some("gone".into());
        assert_eq!(with_set(&p, &index).mods, ["@ace", "@cba"]);
    }

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
            info: Default::default(),
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
