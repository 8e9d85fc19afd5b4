//! Content-addressed pack store: the master's build output and each slave's storage.
//!
//! # Layout
//! - [`BlobStore`]: packs on local disk under `ROOT/packs/ab/<hash>`. New packs are written to
//!   `ROOT/tmp/`, hashed, fsynced, renamed into place and the directory fsynced, so a pack under
//!   its final name has always verified. [`BlobStore::scrub`] re-hashes and quarantines.
//!   [`BlobStore::adopt`] takes in a file its caller verified itself, without reading it again.
//! - [`http`]: the data plane, `GET|HEAD /blob/{hash}` with single `Range` support, `ETag` and
//!   `Cache-Control: immutable`, served straight from the store.
//!
//! The store is synchronous (std I/O); async callers use `spawn_blocking`.

pub mod http;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hummel_core::Hash;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The bytes did not hash to the expected name.
    #[error("pack {expected} failed verification (content hashes to {actual})")]
    CorruptData {
        /// The name it should have had.
        expected: Hash,
        /// What it hashed to.
        actual: Hash,
    },
    /// A file to adopt is not the size its caller verified.
    #[error("pack {hash} is {actual} bytes, not the {expected} verified")]
    SizeMismatch {
        /// The pack.
        hash: Hash,
        /// The size verified.
        expected: u64,
        /// The size found.
        actual: u64,
    },
    /// Larger than allowed.
    #[error("pack {hash} is larger than allowed ({size} > {limit} bytes)")]
    TooLarge {
        /// The pack.
        hash: Hash,
        /// Its size so far.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    /// Blob requests served.
    pub requests: AtomicU64,
    /// Body bytes served.
    pub bytes_served: AtomicU64,
    /// Packs found corrupt (on write or scrub).
    pub corrupt: AtomicU64,
}

/// Packs on local disk, by hash.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    index: Mutex<HashMap<Hash, u64>>,
    used: AtomicU64,
    tmp_seq: AtomicU64,
    /// Counters.
    pub metrics: StoreMetrics,
}

/// A file being written into the store; [`BlobStore::commit`] verifies and publishes it.
#[derive(Debug)]
pub struct TempBlob {
    /// The open file.
    pub file: File,
    /// Where it is.
    pub path: PathBuf,
}

impl BlobStore {
    /// Opens (creating) a store at `root`, removes leftover temp files, and lists what it holds.
    /// Files under `packs/` whose name is not a hash are ignored.
    pub fn open(root: &Path) -> Result<BlobStore, StoreError> {
        for d in ["packs", "tmp", "quarantine"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let tmp = root.join("tmp");
        for e in fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut index = HashMap::new();
        let packs = root.join("packs");
        for fan in fs::read_dir(&packs).map_err(io_err(&packs))?.flatten() {
            let Ok(rd) = fs::read_dir(fan.path()) else {
                continue;
            };
            for e in rd.flatten() {
                let Some(name) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                let Ok(hash) = name.parse::<Hash>() else {
                    continue;
                };
                if let Ok(md) = e.metadata()
                    && md.is_file()
                {
                    index.insert(hash, md.len());
                }
            }
        }
        let used = index.values().sum();
        Ok(BlobStore {
            root: root.to_path_buf(),
            index: Mutex::new(index),
            used: AtomicU64::new(used),
            tmp_seq: AtomicU64::new(0),
            metrics: StoreMetrics::default(),
        })
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where pack `hash` lives (whether or not it is there).
    pub fn path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join("packs").join(&hex[..2]).join(hex)
    }

    /// Size of pack `hash`, if held.
    pub fn size(&self, hash: &Hash) -> Option<u64> {
        self.index.lock().expect("store index").get(hash).copied()
    }

    /// True if pack `hash` is held.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.size(hash).is_some()
    }

    /// Every pack held, with its size, sorted by hash.
    pub fn list(&self) -> Vec<(Hash, u64)> {
        let mut v: Vec<_> = self
            .index
            .lock()
            .expect("store index")
            .iter()
            .map(|(h, s)| (*h, *s))
            .collect();
        v.sort();
        v
    }

    /// Number of packs held.
    pub fn count(&self) -> usize {
        self.index.lock().expect("store index").len()
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// A fresh temp file inside the store (same filesystem, so the final rename is atomic).
    pub fn temp(&self) -> Result<TempBlob, StoreError> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.root.join("tmp").join(format!(
            "{}.{}.{n}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let file = File::options()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(TempBlob { file, path })
    }

    /// Verifies that the temp file hashes to `expected`, fsyncs it, renames it into place and
    /// fsyncs the directory. On a mismatch the temp file is deleted and nothing is published.
    /// CPU- and I/O-bound.
    pub fn commit(&self, temp: TempBlob, expected: &Hash) -> Result<u64, StoreError> {
        let TempBlob { mut file, path } = temp;
        let result = (|| {
            file.flush().map_err(io_err(&path))?;
            let actual = hash_file(&path)?;
            if actual != *expected {
                self.metrics.corrupt.fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::CorruptData {
                    expected: *expected,
                    actual,
                });
            }
            file.sync_all().map_err(io_err(&path))?;
            let size = file.metadata().map_err(io_err(&path))?.len();
            let dest = self.path(expected);
            let dir = dest.parent().expect("fan-out dir");
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            fs::rename(&path, &dest).map_err(io_err(&dest))?;
            sync_dir(dir)?;
            Ok(size)
        })();
        match result {
            Ok(size) => {
                let mut idx = self.index.lock().expect("store index");
                if idx.insert(*expected, size).is_none() {
                    self.used.fetch_add(size, Ordering::Relaxed);
                }
                Ok(size)
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Moves `path`, a file on the store's filesystem that its caller hashed to `hash` moments
    /// ago (`size` bytes), into the store as that pack without reading it again: the size is
    /// checked, the file fsynced, renamed into place and the directory fsynced. A file of
    /// another size is left where it is. I/O-bound (the hash is the caller's: [`hash_file`]).
    pub fn adopt(&self, path: &Path, hash: &Hash, size: u64) -> Result<u64, StoreError> {
        let file = File::open(path).map_err(io_err(path))?;
        let actual = file.metadata().map_err(io_err(path))?.len();
        if actual != size {
            self.metrics.corrupt.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::SizeMismatch {
                hash: *hash,
                expected: size,
                actual,
            });
        }
        file.sync_all().map_err(io_err(path))?;
        drop(file);
        let dest = self.path(hash);
        let dir = dest.parent().expect("fan-out dir");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        fs::rename(path, &dest).map_err(io_err(&dest))?;
        sync_dir(dir)?;
        let mut idx = self.index.lock().expect("store index");
        if idx.insert(*hash, size).is_none() {
            self.used.fetch_add(size, Ordering::Relaxed);
        }
        Ok(size)
    }

    /// Stores `bytes` as pack `expected` (verified like [`BlobStore::commit`]).
    pub fn put(&self, expected: &Hash, bytes: &[u8]) -> Result<u64, StoreError> {
        let mut t = self.temp()?;
        t.file.write_all(bytes).map_err(io_err(&t.path))?;
        self.commit(t, expected)
    }

    /// Deletes pack `hash`; returns whether it was held.
    pub fn remove(&self, hash: &Hash) -> Result<bool, StoreError> {
        let removed = self.index.lock().expect("store index").remove(hash);
        if let Some(size) = removed {
            self.used.fetch_sub(size, Ordering::Relaxed);
            let p = self.path(hash);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        Ok(removed.is_some())
    }

    /// Re-hashes pack `hash`. A pack that no longer verifies is moved to `quarantine/`, forgotten,
    /// and `Ok(false)` is returned.
    pub fn verify(&self, hash: &Hash) -> Result<bool, StoreError> {
        let p = self.path(hash);
        let ok = match hash_file(&p) {
            Ok(actual) => actual == *hash,
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !ok {
            self.metrics.corrupt.fetch_add(1, Ordering::Relaxed);
            let q = self.root.join("quarantine").join(hash.to_hex());
            let _ = fs::rename(&p, &q);
            if let Some(size) = self.index.lock().expect("store index").remove(hash) {
                self.used.fetch_sub(size, Ordering::Relaxed);
            }
        }
        Ok(ok)
    }

    /// Verifies every pack; returns the ones found corrupt (now quarantined).
    pub fn scrub(&self) -> Result<Vec<Hash>, StoreError> {
        let mut bad = Vec::new();
        for (h, _) in self.list() {
            if !self.verify(&h)? {
                bad.push(h);
            }
        }
        Ok(bad)
    }
}

/// BLAKE3 of a file's content, streamed.
pub fn hash_file(path: &Path) -> Result<Hash, StoreError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Writes `content` to `path` so that a crash leaves the old file or the new one, never a
/// partial or empty one: a temp file in the same folder (mode 0600), written, fsynced, renamed
/// over `path`, and the folder fsynced.
pub fn write_private_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // Left by a crash: it never held anything anyone relies on.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// fsyncs a directory so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_atomic_write_replaces_the_file_whole_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("write.token");
        write_private_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        // A temp file left by a crash is not in the way.
        fs::write(dir.path().join(".write.token.tmp"), b"junk").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["write.token"], "no temp file is left");
        // A folder that does not exist: an error, no file.
        assert!(write_private_atomic(&dir.path().join("missing/x.token"), b"x").is_err());
    }

    #[test]
    fn put_list_reopen_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let data = b"pack bytes".to_vec();
        let h = Hash::of(&data);
        assert_eq!(s.put(&h, &data).unwrap(), data.len() as u64);
        assert!(s.contains(&h));
        assert_eq!(s.used(), data.len() as u64);
        assert_eq!(fs::read(s.path(&h)).unwrap(), data);
        drop(s);
        let s = BlobStore::open(dir.path()).unwrap();
        assert_eq!(s.list(), vec![(h, data.len() as u64)]);
        assert!(s.remove(&h).unwrap());
        assert_eq!(s.used(), 0);
        assert!(!s.path(&h).exists());
    }

    #[test]
    fn wrong_content_is_never_published() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let h = Hash::of(b"right");
        assert!(matches!(
            s.put(&h, b"wrong"),
            Err(StoreError::CorruptData { .. })
        ));
        assert!(!s.contains(&h));
        assert!(!s.path(&h).exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn adopt_moves_a_verified_file_in_and_checks_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(&dir.path().join("store")).unwrap();
        let outside = dir.path().join("staged.pack");
        fs::write(&outside, b"pack bytes").unwrap();
        let h = hash_file(&outside).unwrap();
        assert!(matches!(
            s.adopt(&outside, &h, 9),
            Err(StoreError::SizeMismatch { actual: 10, .. })
        ));
        assert!(outside.exists() && !s.contains(&h));
        assert_eq!(s.adopt(&outside, &h, 10).unwrap(), 10);
        assert!(!outside.exists());
        assert_eq!(fs::read(s.path(&h)).unwrap(), b"pack bytes");
        assert_eq!((s.list(), s.used()), (vec![(h, 10)], 10));
    }

    #[test]
    fn scrub_quarantines_bit_rot() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let good = Hash::of(b"good");
        let bad = Hash::of(b"bad!");
        s.put(&good, b"good").unwrap();
        s.put(&bad, b"bad!").unwrap();
        fs::write(s.path(&bad), b"rot!").unwrap();
        assert_eq!(s.scrub().unwrap(), vec![bad]);
        assert!(!s.contains(&bad));
        assert!(s.contains(&good));
        assert!(dir.path().join("quarantine").join(bad.to_hex()).exists());
    }
}
