//! Hummel master: indexes a folder into a numbered revision of content-defined chunks packed
//! into ~16 MiB packs, keeps all metadata, tells slaves which packs to replicate, and answers
//! clients. Serves no bulk data except as the origin of replication, as the clients' bounded
//! source of last resort for packs no live slave holds yet (`MasterConfig::fallback_limit`), and
//! in `hummel serve`, where its own store acts as an always-live slave.
//!
//! # Layout
//! - [`config`]: [`MasterConfig`] and [`Tokens`], decided by the binary.
//! - [`error`]: [`MasterError`], why opening or running the master failed.
//! - `master`: [`Master`], the cheap-to-clone facade over the components below and the
//!   operations behind every endpoint (database first, then memory, no lock a request reads
//!   under held across a commit; the lock order is in its module map); [`run_background`]; the
//!   clean stop ([`Master::shut_down`]: the running build and repack stop and publish nothing,
//!   no round starts; [`Master::is_idle`], [`Master::flush`] checkpoints the database).
//! - `catalog`: the current revision, the history, the pack table, one cached older revision.
//! - `fleet`: slaves and clients (`tracker`), their keys (`identity`) and probe results
//!   (`probe`), the per-slave ordering stripes and the placement, cached until an input changes.
//! - `builds`: the builds, at most one running; the build epoch; the clean stop's flag.
//! - `db`: the SQLite metadata database `DATA/hummel.db` (WAL, versioned schema).
//! - `revision`: encoded indexes in `DATA/revisions/N.idx`, written before their row commits,
//!   and the numbering rule (never below the UTC time as `YYYYMMDDhhmmss`).
//! - `signing`: the Ed25519 key in `DATA/signing/` (made on first start, rotated on request),
//!   the signed statement of the current revision (signed again at half its validity) and
//!   the proofs that tie a subtree to it.
//! - `sets`: the admin's sets file (`sets.toml`), read at each build into the index's info
//!   section with the configured name and description.
//! - `build`: the pipeline walk → mass-delete guard → reuse → chunk/hash/compress (rayon, each
//!   file read again while it changes) → pack writer → index.
//! - `repack`: the optional background pass that recompresses the current revision's packs at
//!   a higher zstd level and publishes the same tree again (`MasterConfig::repack_level`).
//! - `gc`: the garbage collection: which revisions are kept, and the deletion of packs none of
//!   them references, on the master and (through directives) on the slaves.
//! - `history`: each revision's message and change summary, the changelog between two
//!   revisions (`/api/v1/revisions`, `/api/v1/changes`), the rollback that publishes an older
//!   revision's tree again (`/api/v1/rollback`), and the revisions clients are pinned to.
//! - `push`: `hummel push`: the missing-chunk query, the verified staging of uploaded packs
//!   (`DATA/push-staging/`), and the publication of a pushed tree at a prefix on top of the
//!   revision it read (`/api/v1/push/*`); a master fed by pushes refuses folder builds.
//! - `push_progress`: the pushes that name themselves and how far each is (status, dashboard).
//! - `maintenance`: the background thread that runs the repack, then the collection, and
//!   `Upkeep`, the component holding their state.
//! - `tracker`: slaves (replica sets, liveness, the hashlist version their changes build on,
//!   whether their read token was accepted) and clients, mirrored from the database.
//! - `clients`: client reports tied to client keys, their retention, bad-slave counting.
//! - `drain`: the admin's drain of a slave (no new packs, its packs copied elsewhere, then
//!   `drained`: safe to remove).
//! - `identity`: each slave's own key: signed slave requests ([`hummel_proto::identity`]),
//!   enrolment at the first hashlist, nonces, and the admin's removal of a slave.
//! - `probe`: the background prober that checks a slave serves the right bytes for a pack
//!   before clients are sent there for it, again after client reports and at random; why a
//!   slave is withheld.
//! - `placement`: rendezvous hashing of packs onto slaves under quotas (pure).
//! - `auth`: which token each endpoint accepts (401 / 403), as extractors and a middleware, and
//!   the rule that a private master's slaves guard their packs with its read token.
//! - `limits`: per-address request rates, requests at once, new clients per address.
//! - `api`: the router, handlers, `ApiError` (one error → response mapping) and JSON bodies.
//! - `dashboard`: the server-rendered HTML page at `/`, kept live over `/ui/events` by its
//!   script (one snapshot producer for every subscriber, told of changes by
//!   `Master::ui_changed`), its session (the write token once, a cookie, CSRF-checked forms),
//!   its actions (build, roll back, drain or remove a slave), and the headers of every page
//!   (a Content-Security-Policy with nothing inline).
//! - `events`: publications pushed to `GET /api/v1/events` as server-sent events, each once its
//!   packs can be fetched (`hummel sync --watch`).
//! - `watch`: `hummel master --watch`, a build once changes in the repository folder settle.
//! - `join`: `/join`, the page a player's link leads to (how to use the repository with the
//!   player page, and the link to paste there).
//! - `metrics`: Prometheus text at `/metrics`.
//!
//! The library never prints or initialises logging; it logs with `tracing`. Blocking work
//! (SQLite, file I/O, chunking, placement) runs on `spawn_blocking` or the build's own threads.

mod api;
mod auth;
mod build;
mod builds;
mod catalog;
mod clients;
pub mod config;
mod dashboard;
mod db;
mod drain;
pub mod error;
mod events;
mod fleet;
mod gc;
mod history;
mod identity;
mod join;
mod limits;
mod maintenance;
mod master;
mod metrics;
mod placement;
mod probe;
mod push;
mod push_progress;
mod repack;
mod revision;
mod sets;
mod signing;
mod tracker;
mod watch;

#[cfg(test)]
mod tests;

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use config::{
    DEFAULT_CLIENT_RETENTION, DEFAULT_FALLBACK_LIMIT, DEFAULT_GC_GRACE, DEFAULT_KEEP_REVISIONS,
    DEFAULT_PROBE_INTERVAL, DEFAULT_RATE_LIMIT, DEFAULT_SIGNATURE_EXPIRY, InfoConfig, MasterConfig,
    RATE_BURST_SECONDS, REPACK_LEVELS, Tokens,
};
pub use error::MasterError;
pub use master::{EMBEDDED_SLAVE_ID, Master, run_background};
pub use signing::{KeyEvent, SigningKeyInfo};
pub use watch::watch_repository;

/// Locks a mutex; a panic elsewhere does not make the data unusable for readers.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A UTC calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

/// The UTC calendar time of `unix` seconds since the epoch (proleptic Gregorian).
pub fn utc(unix: i64) -> UtcTime {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    UtcTime {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
    }
}
