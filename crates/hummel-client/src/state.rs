//! The client's own folder, `DEST/.hummel/`, and what it remembers between runs.
//!
//! - `state`: [`ClientState`]: master, subtree, revision, the directories of that revision and
//!   a stat cache ([`StatCache`]: sorted paths in one string, a [`CachedStat`] each: size,
//!   mtime, ctime, inode, file hash), the signed tree digest of the revision held and the
//!   master's signing key this folder trusts (pinned). Binary
//!   (postcard) behind a magic and a format number; an unreadable or newer state is ignored
//!   (the next run hashes instead of trusting), never fatal.
//! - `index`: the bytes of the last accepted index, reused when the revision has not changed and
//!   used to find reusable chunks of local files when it has. `index.next`: the index of the
//!   run in progress, written before it downloads and renamed to `index` with the state.
//! - `client-id`: a random id, stable across runs, and `client-key` (mode 0600): the random
//!   secret that ties the id's reports to this folder (the master keeps its hash and refuses
//!   reports of the id with another key). Made together; a folder from before keys gets a key
//!   for the id it has. A refused key makes both anew ([`StateDir::forget_client_identity`]).
//! - `pin`: `hummel-pin 1 <N>`: the revision DEST is pinned to (`hummel sync --revision N`),
//!   written once a sync of it succeeded and removed by `--revision latest`; later syncs stay
//!   on N. A separate file, so that the state's format needs no new version for it; an
//!   unreadable one counts as no pin (with a warning).
//! - `lock`: held (`File::try_lock`: flock, `LockFileEx` on Windows) for the whole run so two
//!   syncs cannot interleave.
//! - `tmp/`: temp files named by content hash, kept when a run fails or is killed so the next
//!   run resumes them; emptied once a sync completes.
//!
//! Every file here is written atomically: temp file, fsync, rename, directory fsync.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use hummel_core::index::RESERVED_TOP_NAME;
use hummel_core::statement::PublicKey;
use hummel_core::{Hash, Index};

use crate::SyncError;
use crate::scan::FileStat;

/// First bytes of the state file.
const STATE_MAGIC: &[u8; 8] = b"HUMLSTAT";
/// What `pin` holds before the revision number.
const PIN_PREFIX: &str = "hummel-pin 1 ";
/// The state format this code reads and writes.
pub const STATE_FORMAT: u32 = 4;

/// What the stat cache knows about one file: if the stat still matches, the hash is trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// Status change time (ns since the epoch).
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// BLAKE3 of the content.
    pub hash: Hash,
}

impl CachedStat {
    /// A cache entry for `stat` with content `hash`.
    pub fn new(stat: &FileStat, hash: Hash) -> CachedStat {
        CachedStat {
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ctime_ns: stat.ctime_ns,
            ino: stat.ino,
            hash,
        }
    }

    /// The stat this entry was made for, with `mode` (the cache keeps no mode: a file whose
    /// stat matches has the mode a walk found).
    pub fn file_stat(&self, mode: u16) -> FileStat {
        FileStat {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            ino: self.ino,
            mode: u32::from(mode),
        }
    }

    /// True when `stat` is the file this entry was made for (nothing touched it since).
    pub fn matches(&self, stat: &FileStat) -> bool {
        self.size == stat.size
            && self.mtime_ns == stat.mtime_ns
            && self.ctime_ns == stat.ctime_ns
            && self.ino == stat.ino
    }
}

/// The stat cache: path relative to DEST → [`CachedStat`], sorted by path (bytewise).
///
/// Compact, because it is the one structure a client holds per file between runs: the paths
/// live in one string, with an end offset each, beside a plain vector of stats (~110 bytes per
/// file, where a `BTreeMap<String, _>` took ~230: 55 MB instead of 115 at 500,000 files).
/// Decoding checks the layout (offsets in order and on character boundaries, paths strictly
/// sorted), so a lookup can rely on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawStatCache")]
pub struct StatCache {
    paths: String,
    ends: Vec<u32>,
    stats: Vec<CachedStat>,
}

/// [`StatCache`] as decoded, before its layout is checked.
#[derive(Deserialize)]
struct RawStatCache {
    paths: String,
    ends: Vec<u32>,
    stats: Vec<CachedStat>,
}

impl TryFrom<RawStatCache> for StatCache {
    type Error = String;

    fn try_from(raw: RawStatCache) -> Result<StatCache, String> {
        if raw.ends.len() != raw.stats.len() {
            return Err("stat cache: as many paths as stats expected".into());
        }
        if raw.ends.last().map_or(0, |&e| e as usize) != raw.paths.len() {
            return Err("stat cache: the paths do not end where the last offset says".into());
        }
        let cache = StatCache {
            paths: raw.paths,
            ends: raw.ends,
            stats: raw.stats,
        };
        let mut start = 0u32;
        for &end in &cache.ends {
            if end < start || !cache.paths.is_char_boundary(end as usize) {
                return Err("stat cache: path offsets out of order".into());
            }
            start = end;
        }
        if (1..cache.len()).any(|i| cache.path(i - 1) >= cache.path(i)) {
            return Err("stat cache: paths not sorted".into());
        }
        Ok(cache)
    }
}

impl StatCache {
    /// Files cached.
    pub fn len(&self) -> usize {
        self.stats.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    /// The path at position `i` (`< len()`).
    pub fn path(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.paths[start..self.ends[i] as usize]
    }

    /// The entry at position `i` (`< len()`).
    pub fn stat(&self, i: usize) -> &CachedStat {
        &self.stats[i]
    }

    /// The position and entry of `path`.
    pub fn get(&self, path: &str) -> Option<(usize, &CachedStat)> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.path(mid).cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some((mid, &self.stats[mid])),
            }
        }
        None
    }

    /// Every entry, by path.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CachedStat)> {
        (0..self.len()).map(|i| (self.path(i), &self.stats[i]))
    }

    /// Adds `path`, which must sort after every path already in. Returns `false` (and adds
    /// nothing) when it does not, or when the paths would pass 4 GiB.
    pub fn push(&mut self, path: &str, stat: CachedStat) -> bool {
        let in_order = self.is_empty() || self.path(self.len() - 1) < path;
        let Ok(end) = u32::try_from(self.paths.len() + path.len()) else {
            return false;
        };
        if !in_order {
            return false;
        }
        self.paths.push_str(path);
        self.ends.push(end);
        self.stats.push(stat);
        true
    }

    /// Frees spare capacity.
    pub fn shrink_to_fit(&mut self) {
        self.paths.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.stats.shrink_to_fit();
    }
}

impl FromIterator<(String, CachedStat)> for StatCache {
    /// Sorted and without duplicates (the first of equal paths is kept).
    fn from_iter<I: IntoIterator<Item = (String, CachedStat)>>(iter: I) -> StatCache {
        let mut all: Vec<(String, CachedStat)> = iter.into_iter().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut cache = StatCache::default();
        for (p, s) in all {
            cache.push(&p, s);
        }
        cache.shrink_to_fit();
        cache
    }
}

/// The state after the last successful sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    /// Normalised master URL.
    pub master_url: String,
    /// The subtree synced (`None`: the whole repository).
    pub subtree: Option<String>,
    /// The revision DEST holds.
    pub revision: u64,
    /// The directories of that revision (paths relative to DEST).
    pub dirs: Vec<String>,
    /// Packs referenced by that revision's index (for the report to the master).
    pub packs: Vec<u32>,
    /// Total bytes of its files.
    pub bytes: u64,
    /// Stat cache of the files of that revision.
    pub files: StatCache,
    /// The repository the revision came from (`None`: a master that names none).
    pub repository_id: Option<String>,
    /// The whole revision's index hash, as the master named it: with the repository id, the
    /// revision's identity (a number alone is not).
    pub revision_hash: Option<Hash>,
    /// The top-level names of DEST that Hummel manages: those of every revision applied here
    /// that are still there. Nothing else in DEST is ever read for deletion, changed or
    /// removed.
    pub owned: Vec<String>,
    /// The tree digest the master signed for that revision (`None` before signed revisions):
    /// with the repository id, what the revision is.
    pub tree_digest: Option<Hash>,
    /// The master's signing key this folder trusts: pinned on first contact or given with
    /// `--trust`, followed through key rotations (`None` before signed revisions).
    pub signing_key: Option<PublicKey>,
}

/// Format 3 of the state, before signed revisions (read, never written).
#[derive(Deserialize)]
struct ClientStateV3 {
    master_url: String,
    subtree: Option<String>,
    revision: u64,
    dirs: Vec<String>,
    packs: Vec<u32>,
    bytes: u64,
    files: StatCache,
    repository_id: Option<String>,
    revision_hash: Option<Hash>,
    owned: Vec<String>,
}

impl From<ClientStateV3> for ClientState {
    fn from(v3: ClientStateV3) -> ClientState {
        ClientState {
            master_url: v3.master_url,
            subtree: v3.subtree,
            revision: v3.revision,
            dirs: v3.dirs,
            packs: v3.packs,
            bytes: v3.bytes,
            files: v3.files,
            repository_id: v3.repository_id,
            revision_hash: v3.revision_hash,
            owned: v3.owned,
            tree_digest: None,
            signing_key: None,
        }
    }
}

/// Format 2 of the state: the stat cache as a map (read, never written).
#[derive(Deserialize)]
struct ClientStateV2 {
    master_url: String,
    subtree: Option<String>,
    revision: u64,
    dirs: Vec<String>,
    packs: Vec<u32>,
    bytes: u64,
    files: BTreeMap<String, CachedStat>,
    repository_id: Option<String>,
    revision_hash: Option<Hash>,
    owned: Vec<String>,
}

impl From<ClientStateV2> for ClientState {
    fn from(v2: ClientStateV2) -> ClientState {
        ClientState {
            master_url: v2.master_url,
            subtree: v2.subtree,
            revision: v2.revision,
            dirs: v2.dirs,
            packs: v2.packs,
            bytes: v2.bytes,
            files: v2.files.into_iter().collect(),
            repository_id: v2.repository_id,
            revision_hash: v2.revision_hash,
            owned: v2.owned,
            tree_digest: None,
            signing_key: None,
        }
    }
}

/// Format 1 of the state, before revision identities and ownership (read, never written).
#[derive(Deserialize)]
struct ClientStateV1 {
    master_url: String,
    subtree: Option<String>,
    revision: u64,
    dirs: Vec<String>,
    packs: Vec<u32>,
    bytes: u64,
    files: BTreeMap<String, CachedStat>,
}

impl From<ClientStateV1> for ClientState {
    fn from(v1: ClientStateV1) -> ClientState {
        // Everything that revision placed here is managed, as it was then.
        let owned = top_names(v1.files.keys().chain(&v1.dirs).map(String::as_str));
        ClientState {
            master_url: v1.master_url,
            subtree: v1.subtree,
            revision: v1.revision,
            dirs: v1.dirs,
            packs: v1.packs,
            bytes: v1.bytes,
            files: v1.files.into_iter().collect(),
            repository_id: None,
            revision_hash: None,
            owned,
            tree_digest: None,
            signing_key: None,
        }
    }
}

/// The distinct first components of `paths`, sorted.
pub fn top_names<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let tops: std::collections::BTreeSet<&str> = paths
        .into_iter()
        .map(|p| p.split('/').next().unwrap_or(p))
        .filter(|t| !t.is_empty())
        .collect();
    tops.into_iter().map(str::to_string).collect()
}

impl ClientState {
    /// Encodes with magic and format number.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.files.len() * 80);
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&STATE_FORMAT.to_le_bytes());
        // Straight into `out`: no second buffer of the whole state (~40 MB at 500,000 files).
        postcard::to_extend(self, out).expect("state serialises")
    }

    /// Decodes (formats 1 to 3 too); `Err` says why the bytes are not a state this build can use.
    pub fn decode(bytes: &[u8]) -> Result<ClientState, String> {
        if bytes.len() < 12 || &bytes[..8] != STATE_MAGIC {
            return Err("not a hummel state file".into());
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let undecodable = |e: postcard::Error| format!("undecodable state: {e}");
        match format {
            1 => postcard::from_bytes::<ClientStateV1>(&bytes[12..])
                .map(ClientState::from)
                .map_err(undecodable),
            2 => postcard::from_bytes::<ClientStateV2>(&bytes[12..])
                .map(ClientState::from)
                .map_err(undecodable),
            3 => postcard::from_bytes::<ClientStateV3>(&bytes[12..])
                .map(ClientState::from)
                .map_err(undecodable),
            STATE_FORMAT => postcard::from_bytes(&bytes[12..]).map_err(undecodable),
            _ => Err(format!(
                "state format {format} (this build reads 1 to {STATE_FORMAT})"
            )),
        }
    }
}

/// `DEST/.hummel` and the files in it.
#[derive(Clone, Debug)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub(crate) fn new(dest: &Path) -> StateDir {
        StateDir {
            root: dest.join(RESERVED_TOP_NAME),
        }
    }

    /// `DEST/.hummel` itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn state_path(&self) -> PathBuf {
        self.root.join("state")
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join("index")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn client_id_path(&self) -> PathBuf {
        self.root.join("client-id")
    }

    fn client_key_path(&self) -> PathBuf {
        self.root.join("client-key")
    }

    /// Creates `.hummel` (refusing anything there that is not a real directory), takes the run
    /// lock, and makes sure `tmp/` is a directory (keeping what is in it). The returned file
    /// holds the lock until dropped.
    pub(crate) fn prepare(&self) -> Result<File, SyncError> {
        match fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SyncError::Destination {
                    path: self.root.clone(),
                    reason: "exists and is not a directory (refusing to follow or replace it)"
                        .into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.root)
                    .map_err(|e| SyncError::local("create", &self.root, e))?;
            }
            Err(e) => return Err(SyncError::local("stat", &self.root, e)),
        }
        let lock_path = self.root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| SyncError::local("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SyncError::Busy {
                    path: self.root.parent().unwrap_or(&self.root).to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(SyncError::local("lock", &lock_path, e)),
        }
        // `tmp/` is kept: an interrupted run's temp files are resumed (`assemble::Staging`),
        // which also deletes those no write wants.
        let tmp = self.tmp_dir();
        match fs::symlink_metadata(&tmp) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => fs::remove_file(&tmp).and_then(|()| fs::create_dir(&tmp)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&tmp),
            Err(e) => Err(e),
        }
        .map_err(|e| SyncError::local("create", &tmp, e))?;
        Ok(lock)
    }

    /// The saved state, if there is a usable one.
    pub(crate) fn load_state(&self) -> Option<ClientState> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => match ClientState::decode(&bytes) {
                Ok(s) => Some(s),
                Err(why) => {
                    tracing::warn!(path = %path.display(), "ignoring client state: {why}");
                    None
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring client state: {e}");
                None
            }
        }
    }

    /// The held index, decoded as it is read (its bytes are never in memory whole), if there
    /// is a usable one.
    pub(crate) fn read_index(&self) -> Option<Index> {
        let path = self.index_path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring the held index: {e}");
                return None;
            }
        };
        match hummel_core::index::decode_from(io::BufReader::with_capacity(1 << 16, file)) {
            Ok((index, _)) => Some(index),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring the held index: {e}");
                None
            }
        }
    }

    /// The revision DEST is pinned to, if any.
    pub(crate) fn load_pin(&self) -> Option<u64> {
        let path = self.root.join("pin");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            // No pin, or no folder to hold one (the sync says why, if it matters).
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return None;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring the pin: {e}");
                return None;
            }
        };
        let pin = text
            .trim()
            .strip_prefix(PIN_PREFIX)
            .and_then(|n| n.parse::<u64>().ok());
        if pin.is_none() {
            tracing::warn!(path = %path.display(), "ignoring the pin: not `{PIN_PREFIX}N`");
        }
        pin
    }

    /// Pins DEST to `revision`, or unpins it (`None`).
    pub(crate) fn save_pin(&self, revision: Option<u64>) -> Result<(), SyncError> {
        let path = self.root.join("pin");
        match revision {
            Some(n) => write_atomic(&path, format!("{PIN_PREFIX}{n}\n").as_bytes()),
            None => match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(SyncError::local("remove", &path, e)),
            },
        }
    }

    pub(crate) fn save_state(&self, state: &ClientState) -> Result<(), SyncError> {
        write_atomic(&self.state_path(), &state.encode())
    }

    /// Writes the index of the run in progress next to the held one (`index.next`), so its
    /// bytes need not stay in memory until [`StateDir::commit_index`] (44 MB at 500,000 files).
    pub(crate) fn stage_index(&self, bytes: &[u8]) -> Result<(), SyncError> {
        write_atomic(&self.root.join("index.next"), bytes)
    }

    /// [`StateDir::stage_index`] of `index`, encoded straight into the file.
    pub(crate) fn stage_index_of(&self, index: &Index) -> Result<(), SyncError> {
        write_atomic_with(&self.root.join("index.next"), |f| {
            let mut out = io::BufWriter::with_capacity(1 << 20, f);
            hummel_core::index::encode_to(index, &mut out)?;
            out.flush()
        })
    }

    /// Makes the index staged by [`StateDir::stage_index`] the held one (rename, directory
    /// fsync).
    pub(crate) fn commit_index(&self) -> Result<(), SyncError> {
        let (next, path) = (self.root.join("index.next"), self.index_path());
        fs::rename(&next, &path)
            .and_then(|()| crate::platform::flush_dir(&self.root))
            .map_err(|e| SyncError::local("write", &path, e))
    }

    /// The stable client id, created on first use.
    pub(crate) fn client_id(&self) -> Result<String, SyncError> {
        let path = self.client_id_path();
        if let Ok(s) = fs::read_to_string(&path) {
            let s = s.trim();
            if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(s.to_string());
            }
        }
        let bytes: [u8; 16] = rand::random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic(&path, id.as_bytes())?;
        Ok(id)
    }

    /// The client's key (`client-key`, readable by its owner only), created on first use.
    pub(crate) fn client_key(&self) -> Result<String, SyncError> {
        let path = self.client_key_path();
        if let Ok(s) = fs::read_to_string(&path) {
            let s = s.trim();
            if hummel_proto::api::valid_client_key(s) {
                return Ok(s.to_string());
            }
        }
        let bytes: [u8; 32] = rand::random();
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_atomic_with(&path, |f| {
            // Readable by its owner only. On Windows the folder's ACL decides (a player's
            // profile is theirs already).
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                f.set_permissions(fs::Permissions::from_mode(0o600))?;
            }
            f.write_all(key.as_bytes())
        })?;
        Ok(key)
    }

    /// Forgets the client id and key: the next report registers a new client. For an id the
    /// master holds with another key (a copied folder, a lost key file).
    pub(crate) fn forget_client_identity(&self) -> Result<(), SyncError> {
        for path in [self.client_key_path(), self.client_id_path()] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(SyncError::local("remove", &path, e)),
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: sibling temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SyncError> {
    write_atomic_with(path, |f| f.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes into the (empty) temp file.
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), SyncError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.new", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        crate::platform::flush_dir(dir)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SyncError::local("write", path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClientState {
        let mut files = StatCache::default();
        files.push(
            "a/ü b.txt",
            CachedStat {
                size: 5,
                mtime_ns: 1_700_000_000_123_456_789,
                ctime_ns: -1,
                ino: 42,
                hash: Hash::of(b"hello"),
            },
        );
        ClientState {
            master_url: "http://127.0.0.1:7070".into(),
            subtree: Some("mods/x".into()),
            revision: 9,
            dirs: vec!["a".into()],
            packs: vec![1, 4],
            bytes: 5,
            files,
            repository_id: Some("0123abcd".into()),
            revision_hash: Some(Hash::of(b"index body")),
            owned: vec!["a".into()],
            tree_digest: Some(Hash::of(b"tree")),
            signing_key: Some(hummel_core::statement::KeyPair::from_secret(&[1; 32]).public()),
        }
    }

    #[test]
    fn state_round_trips_and_refuses_other_formats() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(ClientState::decode(&bytes).unwrap(), s);
        let mut newer = bytes.clone();
        newer[8] = 5;
        assert!(
            ClientState::decode(&newer)
                .unwrap_err()
                .contains("format 5")
        );
        assert!(ClientState::decode(b"garbage").is_err());
        assert!(ClientState::decode(&bytes[..bytes.len() - 3]).is_err());
    }

    /// A format-2 state (the stat cache as a map) is read, and a cache whose layout a lookup
    /// could not rely on is refused.
    #[test]
    fn a_format_2_state_is_read_and_a_disordered_cache_refused() {
        #[derive(Serialize)]
        struct V2<'a> {
            master_url: &'a str,
            subtree: Option<&'a str>,
            revision: u64,
            dirs: Vec<&'a str>,
            packs: Vec<u32>,
            bytes: u64,
            files: BTreeMap<String, CachedStat>,
            repository_id: Option<&'a str>,
            revision_hash: Option<Hash>,
            owned: Vec<&'a str>,
        }
        let s = sample();
        let map: BTreeMap<String, CachedStat> = [("z", 1), ("b/c", 2), ("b", 3)]
            .into_iter()
            .map(|(p, n)| {
                (
                    p.to_string(),
                    CachedStat {
                        ino: n,
                        ..*s.files.stat(0)
                    },
                )
            })
            .collect();
        let mut bytes = STATE_MAGIC.to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        bytes.extend(
            postcard::to_stdvec(&V2 {
                master_url: &s.master_url,
                subtree: None,
                revision: 9,
                dirs: vec![],
                packs: vec![],
                bytes: 5,
                files: map,
                repository_id: Some("0123abcd"),
                revision_hash: s.revision_hash,
                owned: vec!["b", "z"],
            })
            .unwrap(),
        );
        let back = ClientState::decode(&bytes).unwrap();
        let paths: Vec<(&str, u64)> = back.files.iter().map(|(p, c)| (p, c.ino)).collect();
        assert_eq!(paths, [("b", 3), ("b/c", 2), ("z", 1)]);
        assert_eq!(back.files.get("b/c").unwrap().0, 1);
        assert!(back.files.get("b/").is_none());

        // A cache with the paths out of order or offsets that do not fit: refused.
        #[derive(Serialize)]
        struct Raw<'a> {
            paths: &'a str,
            ends: Vec<u32>,
            stats: Vec<CachedStat>,
        }
        let decode = |paths: &str, ends: Vec<u32>| {
            let stats = vec![*s.files.stat(0); ends.len()];
            let bytes = postcard::to_stdvec(&Raw { paths, ends, stats }).unwrap();
            postcard::from_bytes::<StatCache>(&bytes)
        };
        assert_eq!(decode("ab", vec![1, 2]).unwrap().path(1), "b");
        for (paths, ends) in [
            ("ba", vec![1, 2]),
            ("aa", vec![1, 2]),
            ("ab", vec![1, 3]),
            ("ab", vec![2, 1]),
            ("ab", vec![1]),
            ("ü", vec![1, 2]),
        ] {
            assert!(decode(paths, ends.clone()).is_err(), "{paths} {ends:?}");
        }
    }

    /// A state written by a client before format 2 still gives its stat cache, and every
    /// top-level name that revision placed counts as managed.
    #[test]
    fn a_format_1_state_is_read_with_its_top_names_owned() {
        #[derive(Serialize)]
        struct V1<'a> {
            master_url: &'a str,
            subtree: Option<&'a str>,
            revision: u64,
            dirs: Vec<&'a str>,
            packs: Vec<u32>,
            bytes: u64,
            files: &'a BTreeMap<String, CachedStat>,
        }
        let s = sample();
        let mut files: BTreeMap<String, CachedStat> =
            s.files.iter().map(|(p, c)| (p.to_string(), *c)).collect();
        files.insert("top.txt".into(), *s.files.get("a/ü b.txt").unwrap().1);
        let mut bytes = STATE_MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend(
            postcard::to_stdvec(&V1 {
                master_url: &s.master_url,
                subtree: Some("mods/x"),
                revision: 9,
                dirs: vec!["a", "b"],
                packs: vec![1, 4],
                bytes: 5,
                files: &files,
            })
            .unwrap(),
        );
        let back = ClientState::decode(&bytes).unwrap();
        assert_eq!(back.revision, 9);
        assert_eq!(back.files, files.into_iter().collect());
        assert_eq!(back.owned, ["a", "b", "top.txt"]);
        assert_eq!((back.repository_id, back.revision_hash), (None, None));
    }

    #[test]
    fn state_dir_saves_atomically_and_keeps_client_id() {
        let dest = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dest.path());
        let lock = sd.prepare().unwrap();
        assert!(matches!(sd.prepare(), Err(SyncError::Busy { .. })));
        fs::write(sd.tmp_dir().join("leftover"), b"x").unwrap();
        drop(lock);
        let _lock = sd.prepare().unwrap();
        // Kept for the run to resume (or delete, if no write wants it).
        assert_eq!(fs::read(sd.tmp_dir().join("leftover")).unwrap(), b"x");
        sd.save_state(&sample()).unwrap();
        assert_eq!(sd.load_state().unwrap(), sample());
        let id = sd.client_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(sd.client_id().unwrap(), id);
        let key = sd.client_key().unwrap();
        assert!(hummel_proto::api::valid_client_key(&key), "{key}");
        assert_eq!(sd.client_key().unwrap(), key);
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dest.path().join(".hummel/client-key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the files we wrote (no temp files left next to them).
        let mut names: Vec<String> = fs::read_dir(dest.path().join(".hummel"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["client-id", "client-key", "lock", "state", "tmp"]);
        // Forgotten: a new pair is made.
        sd.forget_client_identity().unwrap();
        assert_ne!(sd.client_id().unwrap(), id);
        assert_ne!(sd.client_key().unwrap(), key);
    }

    #[test]
    fn refuses_a_planted_symlink_for_the_state_dir() {
        let dest = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dest.path().join(".hummel")).unwrap();
        assert!(matches!(
            StateDir::new(dest.path()).prepare(),
            Err(SyncError::Destination { .. })
        ));
    }
}
