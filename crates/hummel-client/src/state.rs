//! The client's own folder, `DEST/.hummel/`, and what it remembers between runs.
//!
//! - `state`: [`ClientState`]: master, subtree, revision, the directories of that revision and
//!   a stat cache path → ([`CachedStat`]: size, mtime, ctime, inode, file hash). Binary
//!   (postcard) behind a magic and a format number; an unreadable or newer state is ignored
//!   (the next run hashes instead of trusting), never fatal.
//! - `index`: the bytes of the last accepted index, reused when the revision has not changed and
//!   used to find reusable chunks of local files when it has. `index.next`: the index of the
//!   run in progress, written before it downloads and renamed to `index` with the state.
//! - `client-id`: a random id, stable across runs.
//! - `lock`: held (flock) for the whole run so two syncs cannot interleave.
//! - `tmp/`: temp files named by content hash, kept when a run fails or is killed so the next
//!   run resumes them; emptied once a sync completes.
//!
//! Every file here is written atomically: temp file, fsync, rename, directory fsync.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use hummel_core::Hash;
use hummel_core::index::RESERVED_TOP_NAME;

use crate::SyncError;
use crate::scan::FileStat;

/// First bytes of the state file.
const STATE_MAGIC: &[u8; 8] = b"HUMLSTAT";
/// The state format this code reads and writes.
pub const STATE_FORMAT: u32 = 2;

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

    /// True when `stat` is the file this entry was made for (nothing touched it since).
    pub fn matches(&self, stat: &FileStat) -> bool {
        self.size == stat.size
            && self.mtime_ns == stat.mtime_ns
            && self.ctime_ns == stat.ctime_ns
            && self.ino == stat.ino
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
    /// Stat cache of the files of that revision, by path relative to DEST.
    pub files: BTreeMap<String, CachedStat>,
    /// The repository the revision came from (`None`: a master that names none).
    pub repository_id: Option<String>,
    /// The whole revision's index hash, as the master named it: with the repository id, the
    /// revision's identity (a number alone is not).
    pub revision_hash: Option<Hash>,
    /// The top-level names of DEST that Hummel manages: those of every revision applied here
    /// that are still there. Nothing else in DEST is ever read for deletion, changed or
    /// removed.
    pub owned: Vec<String>,
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
            files: v1.files,
            repository_id: None,
            revision_hash: None,
            owned,
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

    /// Decodes (format 1 too); `Err` says why the bytes are not a state this build can use.
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
            STATE_FORMAT => postcard::from_bytes(&bytes[12..]).map_err(undecodable),
            _ => Err(format!(
                "state format {format} (this build reads {STATE_FORMAT} and 1)"
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

    /// The saved index bytes, if any.
    pub(crate) fn load_index(&self) -> Option<Vec<u8>> {
        fs::read(self.index_path()).ok()
    }

    pub(crate) fn save_state(&self, state: &ClientState) -> Result<(), SyncError> {
        write_atomic(&self.state_path(), &state.encode())
    }

    /// Writes the index of the run in progress next to the held one (`index.next`), so its
    /// bytes need not stay in memory until [`StateDir::commit_index`] (44 MB at 500,000 files).
    pub(crate) fn stage_index(&self, bytes: &[u8]) -> Result<(), SyncError> {
        write_atomic(&self.root.join("index.next"), bytes)
    }

    /// Makes the index staged by [`StateDir::stage_index`] the held one (rename, directory
    /// fsync).
    pub(crate) fn commit_index(&self) -> Result<(), SyncError> {
        let (next, path) = (self.root.join("index.next"), self.index_path());
        fs::rename(&next, &path)
            .and_then(|()| File::open(&self.root)?.sync_all())
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
}

/// Writes `bytes` to `path` atomically: sibling temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SyncError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.new", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
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
        let mut files = BTreeMap::new();
        files.insert(
            "a/ü b.txt".to_string(),
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
        }
    }

    #[test]
    fn state_round_trips_and_refuses_other_formats() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(ClientState::decode(&bytes).unwrap(), s);
        let mut newer = bytes.clone();
        newer[8] = 3;
        assert!(
            ClientState::decode(&newer)
                .unwrap_err()
                .contains("format 3")
        );
        assert!(ClientState::decode(b"garbage").is_err());
        assert!(ClientState::decode(&bytes[..bytes.len() - 3]).is_err());
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
        let mut files = s.files.clone();
        files.insert("top.txt".into(), s.files["a/ü b.txt"]);
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
        assert_eq!(back.files, files);
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
        // Only the files we wrote (no temp files left next to them).
        let mut names: Vec<String> = fs::read_dir(dest.path().join(".hummel"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["client-id", "lock", "state", "tmp"]);
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
