//! [`MasterConfig`] and [`Tokens`]: everything the binary decides for the master.
//!
//! The binary resolves flags, environment variables and token files; this crate only receives
//! the result. Tokens are never printed: their `Debug` form is redacted.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The shared secrets the master checks (header [`hummel_proto::auth::TOKEN_HEADER`]).
#[derive(Clone)]
pub struct Tokens {
    /// Starts builds; also accepted for reads.
    pub write: String,
    /// Announces and heartbeats slaves; fetches packs for replication.
    pub slave: String,
    /// Required for client reads when set; reads are public otherwise. Slaves must guard
    /// their packs with the same token (`crate::auth`).
    pub read: Option<String>,
    /// Accepted for `/metrics` (besides the read and write tokens). With neither this nor a
    /// read token, `/metrics` is public.
    pub metrics: Option<String>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("write", &"<redacted>")
            .field("slave", &"<redacted>")
            .field("read", &self.read.as_ref().map(|_| "<redacted>"))
            .field("metrics", &self.metrics.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How a master runs.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// The folder that is indexed and published.
    pub repo: PathBuf,
    /// Where the master keeps `hummel.db`, `store/` and `revisions/`.
    pub data: PathBuf,
    /// Target number of slave copies per pack.
    pub replication: u32,
    /// How often slaves are asked to heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a slave is stale (clients are no longer sent there).
    pub stale_after: Duration,
    /// Silence after which a slave is dead (its packs are placed elsewhere).
    pub dead_after: Duration,
    /// Tokens.
    pub tokens: Tokens,
    /// `hummel serve`: the master's own store acts as an always-live slave holding every pack.
    pub embedded_store: bool,
    /// Builds publish what symlinks point to (files and folders; loops are skipped) instead of
    /// skipping them with a warning.
    pub follow_symlinks: bool,
    /// zstd level the background repack recompresses the current revision's packs to
    /// (`crate::repack`); 0 turns it off. Otherwise in [`REPACK_LEVELS`].
    pub repack_level: i32,
    /// Revisions kept servable besides those in their grace period (`crate::gc`): the newest
    /// `keep_revisions` builds, each in its latest (repacked) form. At least 1: the current.
    pub keep_revisions: u32,
    /// How long a superseded revision stays stored: the longest sync the master allows for.
    /// Packs no kept revision references are deleted after it.
    pub gc_grace: Duration,
    /// Most downloads the master serves at once to clients as the source of last resort, for
    /// packs no live slave holds yet (a revision still replicating); more are answered 503 with
    /// `Retry-After`. 0: the master never offers itself. Replication (slave token) and the
    /// embedded store of `hummel serve` are not counted.
    pub fallback_limit: u32,
    /// How long a client's row is kept after its last report (`crate::clients`).
    pub client_retention: Duration,
    /// Requests per second each client address may make to the public routes (the client API,
    /// the dashboard, `/build`, `/metrics`), with bursts of [`RATE_BURST_SECONDS`] times as
    /// many; 0 turns the limit off (behind a reverse proxy every client has the proxy's
    /// address). `/health`, `/blob` and the slaves' routes are not limited.
    pub rate_limit: u32,
    /// How long a signed statement about the current revision holds; it is signed again
    /// after half of it while the master runs (`crate::signing`).
    pub signature_expiry: Duration,
    /// Replace the signing key at start: the old key signs the handover to a new one, which
    /// clients that pinned the old key follow (`crate::signing`).
    pub rotate_key: bool,
    /// How often each live slave has one of its verified packs probed again at random
    /// (jittered ±50%; `crate::probe`). New claims and reported slaves are probed at once.
    pub probe_interval: Duration,
    /// Whom the probes trust for `https://` slaves (the system's roots plus `--ca-cert`).
    pub probe_tls: hummel_tls::ClientTls,
    /// The repository's name, description and sets file, published with every revision.
    pub info: InfoConfig,
}

/// What the admin says about the repository (`--name`, `--description`, `--sets`): part of
/// every revision's index (its info section), so a change publishes a new revision.
#[derive(Clone, Debug, Default)]
pub struct InfoConfig {
    /// Shown to players on the dashboard, the join page and the player page.
    pub name: String,
    /// Likewise.
    pub description: String,
    /// The sets file, read at each build; `None`: `DATA/sets.toml` when present.
    pub sets_file: Option<PathBuf>,
}

/// Default of [`MasterConfig::signature_expiry`]: a master that stops signing (or whoever
/// replays its old answers) holds clients back this long at most.
pub const DEFAULT_SIGNATURE_EXPIRY: Duration = Duration::from_secs(30 * 86_400);

/// Default of [`MasterConfig::client_retention`].
pub const DEFAULT_CLIENT_RETENTION: Duration = Duration::from_secs(30 * 86_400);
/// Default of [`MasterConfig::rate_limit`]: far above what syncing clients need (a sync makes
/// a handful of API requests), far below a flood.
pub const DEFAULT_RATE_LIMIT: u32 = 20;
/// A client address may spend this many seconds' worth of [`MasterConfig::rate_limit`] at once.
pub const RATE_BURST_SECONDS: u32 = 10;

/// Default of [`MasterConfig::keep_revisions`]: the current build and the one before.
pub const DEFAULT_KEEP_REVISIONS: u32 = 2;
/// Default of [`MasterConfig::fallback_limit`]: a few packs at once, so that clients of a
/// revision still replicating get it without starving the slaves replicating from the master.
pub const DEFAULT_FALLBACK_LIMIT: u32 = 4;
/// Default of [`MasterConfig::probe_interval`].
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(600);
/// Default of [`MasterConfig::gc_grace`].
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// The zstd levels `--repack-level` accepts (besides 0, off): above the build's level 3, up to
/// zstd's highest non-"ultra" level.
pub const REPACK_LEVELS: std::ops::RangeInclusive<i32> = 4..=19;
