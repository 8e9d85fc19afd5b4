//! Hummel slave: a mirror that holds the packs the master assigns to it and serves them.
//!
//! # Layout
//! - [`SlaveConfig`] (`config`): what the binary passes in — master URL, data folder, advertised
//!   URL, quota, tokens, replication concurrency, scrub interval, and whom `https://` URLs must
//!   be certified by ([`hummel_tls::ClientTls`], which builds its HTTP client).
//! - [`Slave`] (this file): the opened slave, cheap to clone. [`Slave::open`] opens the
//!   [`BlobStore`] at `DATA/store` and loads (or creates) the stable random id in `DATA/slave-id`
//!   and the slave's own Ed25519 key in `DATA/slave-key` (owner-only), with which it signs every
//!   request to the master ([`hummel_proto::identity`]): the master enrolls the key with the id
//!   at the first hashlist and refuses any other key for that id.
//! - [`run`] (`agent`): the background worker. It announces the complete hashlist to the master
//!   (`POST /slave/hashlist`; an empty list introduces a new slave), heartbeats
//!   (`POST /slave/heartbeat`), feeds each [`SlaveDirective`](hummel_proto::api::SlaveDirective)'s
//!   assignments to the replication queue, deletes dropped packs and scrubs. Each change to what
//!   it holds goes to the master with the next heartbeat, sent early for it (coalesced to about
//!   once a second while busy); the complete hashlist goes again only when the master asks.
//! - `hashlist`: the version of the hashlist the master acknowledged and the changes since
//!   (plain data): what the heartbeats report, and when only a complete hashlist will do.
//! - `master`: the two slave → master calls through [`hummel_net::MasterApi`] (the shared HTTP
//!   client with the slave token), each signed with the slave key and a nonce above any used
//!   before, and what each failure means to the slave.
//! - `replicate`: the replication queue (plain data: what to fetch next, quota, retry delays) and
//!   the fetcher, which streams `GET {source}/blob/{hash}` into a store temp file and commits it
//!   only if it hashes to its name. A pack under its final name has always verified. Every
//!   retry (announce, heartbeat, a pack that failed) waits [`hummel_net::Backoff`]'s jittered
//!   delays.
//! - [`Slave::router`] (`api`): the data plane `GET|HEAD /blob/{hash}` from
//!   [`hummel_store::http`], guarded by the read token if one is set, plus `GET /health` and
//!   `GET /metrics` (Prometheus text; guarded by the metrics or read token if either is set).
//!   Counters live in [`SlaveMetrics`]. The hashlist tells the master which read token guards
//!   the packs (its digest): a private master refuses a slave without its token, and the slave
//!   then stops with the master's reason.
//!
//! The slave never changes the index, never prints and never exits the process: the binary owns
//! binding, logging and shutdown (the worker stops when [`run`]'s shutdown future completes,
//! dropping fetches under way with their temp files), and turns a [`SlaveError`] into one line.

mod agent;
mod api;
mod config;
mod hashlist;
mod master;
mod metrics;
mod replicate;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hummel_proto::identity::SlaveKey;
use hummel_store::{BlobStore, StoreError};

pub use agent::run;
pub use config::{DEFAULT_REPLICATION_CONCURRENCY, SlaveConfig};
pub use metrics::{SlaveMetrics, WorkerState};

/// Why the slave could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    /// The configuration is unusable.
    #[error("invalid slave configuration: {0}")]
    Config(String),
    /// The data folder or the id file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The id file holds something that is not an id.
    #[error("{path}: not a slave id (expected 1-64 characters of [0-9a-zA-Z_-])")]
    BadId {
        /// The id file.
        path: PathBuf,
    },
    /// The key file holds something that is not a key.
    #[error(
        "{path}: not a slave key (expected 64 hex digits); restore it from a backup, or \
             move it away and have the admin remove this slave from the master to enroll anew"
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
    },
    /// The pack store could not be opened.
    #[error("pack store: {0}")]
    Store(#[from] StoreError),
    /// The HTTP client could not be built (or the master URL or slave token cannot be used
    /// in a request).
    #[error("{0}")]
    HttpClient(String),
    /// The master answered the first announce with 401/403.
    #[error("master refused the slave token (HTTP {status} from {url})")]
    TokenRefused {
        /// 401 or 403.
        status: u16,
        /// The master endpoint.
        url: String,
    },
    /// The master refused the first announce because its id is enrolled with another key
    /// (403 `slave_identity_mismatch`).
    #[error("master refused this slave ({url}): {message}")]
    IdentityRefused {
        /// The master endpoint.
        url: String,
        /// The master's reason.
        message: String,
    },
    /// The master refused the first announce because this slave does not guard its packs with
    /// the master's read token (403 `read_token_mismatch`).
    #[error("master refused this slave ({url}): {message}")]
    ReadTokenRefused {
        /// The master endpoint.
        url: String,
        /// The master's reason.
        message: String,
    },
}

/// An opened slave: store, id, configuration and counters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Slave {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SlaveConfig,
    advertise_url: RwLock<String>,
    store: Arc<BlobStore>,
    id: String,
    key: SlaveKey,
    metrics: SlaveMetrics,
}

/// Name of the id file inside the data folder.
const ID_FILE: &str = "slave-id";
/// Name of the key file inside the data folder (mode 0600).
const KEY_FILE: &str = "slave-key";
/// Name of the store folder inside the data folder.
const STORE_DIR: &str = "store";

impl Slave {
    /// Opens the slave: creates the data folder, opens the store at `DATA/store` (its listing is
    /// trusted; scrub catches rot) and loads or creates the id in `DATA/slave-id` and the key in
    /// `DATA/slave-key`.
    pub fn open(config: SlaveConfig) -> Result<Slave, SlaveError> {
        let config = config.normalised()?;
        fs::create_dir_all(&config.data).map_err(|source| SlaveError::Io {
            path: config.data.clone(),
            source,
        })?;
        let store = BlobStore::open(&config.data.join(STORE_DIR))?;
        let id = load_or_create_id(&config.data.join(ID_FILE))?;
        let key = load_or_create_key(&config.data.join(KEY_FILE))?;
        let metrics = SlaveMetrics::default();
        Ok(Slave {
            inner: Arc::new(Inner {
                advertise_url: RwLock::new(config.advertise_url.clone()),
                config,
                store: Arc::new(store),
                id,
                key,
                metrics,
            }),
        })
    }

    /// Sets the URL announced to the master (the binary knows it only after binding). Takes
    /// effect at the next announce.
    pub fn set_advertise_url(&self, url: String) {
        let url = config::normalise_url(&url);
        *self
            .inner
            .advertise_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = url;
    }

    /// The URL announced to the master.
    pub fn advertise_url(&self) -> String {
        self.inner
            .advertise_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `/blob/{hash}`, `/health` and `/metrics`.
    pub fn router(&self) -> axum::Router {
        api::router(self)
    }

    /// The stable id the master knows this slave by.
    pub fn id(&self) -> String {
        self.inner.id.clone()
    }

    /// The key this slave signs its requests to the master with.
    pub fn key(&self) -> &SlaveKey {
        &self.inner.key
    }

    /// The configuration (with the master URL normalised).
    pub fn config(&self) -> &SlaveConfig {
        &self.inner.config
    }

    /// The pack store.
    pub fn store(&self) -> &Arc<BlobStore> {
        &self.inner.store
    }

    /// Counters and the worker's state.
    pub fn metrics(&self) -> &SlaveMetrics {
        &self.inner.metrics
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SlaveError + '_ {
    move |source| SlaveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads the key at `path`, or writes a fresh random one, owner-only and atomically
/// ([`hummel_store::write_private_atomic`]). A file that holds no key is an
/// error, never replaced: the master knows this slave by that key.
fn load_or_create_key(path: &Path) -> Result<SlaveKey, SlaveError> {
    match fs::read_to_string(path) {
        Ok(s) => SlaveKey::from_hex(&s).ok_or_else(|| SlaveError::BadKey {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = SlaveKey::from_secret(rand::random());
            hummel_store::write_private_atomic(path, format!("{}\n", key.to_hex()).as_bytes())
                .map_err(io_err(path))?;
            Ok(key)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads the id at `path`, or writes a fresh random one (temp file, fsync, rename).
fn load_or_create_id(path: &Path) -> Result<String, SlaveError> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let id = s.trim();
            if valid_id(id) {
                Ok(id.to_string())
            } else {
                Err(SlaveError::BadId {
                    path: path.to_path_buf(),
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let bytes: [u8; 16] = rand::random();
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = path.with_extension("tmp");
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(format!("{id}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io_err(&tmp))?;
            drop(f);
            fs::rename(&tmp, path).map_err(io_err(path))?;
            if let Some(dir) = path.parent() {
                hummel_store::sync_dir(dir)?;
            }
            Ok(id)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data: &Path) -> SlaveConfig {
        SlaveConfig {
            master_url: "http://127.0.0.1:7070/".into(),
            data: data.to_path_buf(),
            advertise_url: String::new(),
            quota: None,
            slave_token: "s".into(),
            read_token: None,
            metrics_token: None,
            replication_concurrency: DEFAULT_REPLICATION_CONCURRENCY,
            scrub_interval: None,
            serve_limit: None,
            tls: hummel_tls::ClientTls::system(),
        }
    }

    #[test]
    fn id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Slave::open(config(dir.path())).unwrap();
        let id = a.id();
        assert_eq!(id.len(), 32);
        assert!(valid_id(&id));
        drop(a);
        let b = Slave::open(config(dir.path())).unwrap();
        assert_eq!(b.id(), id);
        assert_eq!(b.config().master_url, "http://127.0.0.1:7070");
        assert!(dir.path().join("store").is_dir());
    }

    #[cfg(unix)]
    #[test]
    fn the_key_is_created_once_owner_only_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = Slave::open(config(dir.path())).unwrap();
        let public = a.key().public();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(a);
        let b = Slave::open(config(dir.path())).unwrap();
        assert_eq!(b.key().public(), public);
        // Another data folder, another key.
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            Slave::open(config(other.path())).unwrap().key().public(),
            public
        );
        // A damaged key file is an error, not a new identity.
        fs::write(dir.path().join(KEY_FILE), "damaged\n").unwrap();
        assert!(matches!(
            Slave::open(config(dir.path())),
            Err(SlaveError::BadKey { .. })
        ));
    }

    #[test]
    fn bad_id_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(ID_FILE), "not an id!\n").unwrap();
        assert!(matches!(
            Slave::open(config(dir.path())),
            Err(SlaveError::BadId { .. })
        ));
    }

    #[test]
    fn advertise_url_is_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let s = Slave::open(config(dir.path())).unwrap();
        s.set_advertise_url("http://10.0.0.5:7071/".into());
        assert_eq!(s.advertise_url(), "http://10.0.0.5:7071");
    }
}
