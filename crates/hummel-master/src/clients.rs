//! Client reports (`POST /api/v1/client/report`): who holds what, for status and the dashboard.
//!
//! The route is open to anyone who may read, so a report must not let one client write as
//! another, nor let a flood of made-up clients grow the database, the dashboard or the
//! bad-slave counter without bound:
//!
//! - **A client id belongs to a key.** A client makes a random 256-bit key with its id
//!   (`DEST/.hummel/client-key`, beside `client-id`) and sends it with every report. The first
//!   report of an id stores the key's BLAKE3 hash in its row (`clients.key_hash`, schema 6); a
//!   later report of that id with another key is refused (403 `client_key_mismatch`) and
//!   changes nothing. A row from before keys (no hash) is claimed by the first keyed report.
//!   Reports without a key (clients from before keys) are refused: they are best effort.
//! - **New ids are bounded.** An address registers at most
//!   [`crate::limits::NEW_CLIENTS_PER_HOUR`] ids an hour (429 beyond), and the table holds at
//!   most [`MAX_CLIENTS`] rows (503 for new ids beyond, until rows expire). Known ids always
//!   report.
//! - **Rows expire** `MasterConfig::client_retention` (default 30 days) after their last report
//!   ([`Master::expire_clients`], every [`Master::client_expiry_period`] from the background
//!   task), in the database and in memory.
//! - **A bad slave counts once per client and period.** Only ids of slaves the master knows
//!   (and `master`, the fallback) count; each (client, slave) pair at most once per
//!   [`BAD_SLAVE_PERIOD`], in memory (a restart starts the periods afresh). Each count has
//!   some of that slave's verified packs probed again (`crate::probe`), so one client cannot
//!   cause more than a few probes an hour.
//! - **Status lists the [`STATUS_CLIENTS`] most recent clients** (with the total), the
//!   dashboard fewer, so neither grows with the table.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hummel_core::Hash;
use hummel_proto::api::{ClientReport, ClientStatus, FALLBACK_ID};

use crate::error::MasterError;
use crate::master::{EMBEDDED_SLAVE_ID, Master};
use crate::tracker::ClientRecord;
use crate::{lock, now_ms};

/// A client's report of a failing slave counts once per slave in this period.
pub(crate) const BAD_SLAVE_PERIOD: Duration = Duration::from_secs(3600);
/// Most client rows kept; new ids beyond are refused until rows expire (~200 bytes a row).
pub(crate) const MAX_CLIENTS: usize = 100_000;
/// Clients `GET /api/v1/status` lists, most recently seen first.
pub(crate) const STATUS_CLIENTS: usize = 1000;

/// Why a report was not recorded.
#[derive(Debug)]
pub(crate) enum ReportRefusal {
    /// The id is registered with another key.
    KeyMismatch,
    /// The address registered too many new ids lately; retry after this.
    TooManyNew(Duration),
    /// [`MAX_CLIENTS`] rows; the id is new.
    TableFull,
    Internal(MasterError),
}

impl From<MasterError> for ReportRefusal {
    fn from(e: MasterError) -> Self {
        ReportRefusal::Internal(e)
    }
}

/// Constant-time equality of two key hashes.
fn same_hash(a: &Hash, b: &Hash) -> bool {
    a.0.iter().zip(&b.0).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Master {
    /// `POST /api/v1/client/report`, its key already checked for form. Blocking.
    pub(crate) fn record_client(
        &self,
        report: &ClientReport,
        key: &str,
        peer: Option<SocketAddr>,
    ) -> Result<(), ReportRefusal> {
        let key_hash = Hash::of(key.as_bytes());
        let now = now_ms();
        let fleet = &self.inner.fleet;
        // The client's reports apply in the order they commit; the tracker is not held across
        // the commit (`locate` reads it).
        let _order = fleet.order(&report.client_id);
        let tracker = lock(&fleet.tracker);
        match tracker.clients.get(&report.client_id) {
            Some(known) => {
                if known.key_hash.is_some_and(|h| !same_hash(&h, &key_hash)) {
                    self.inner
                        .metrics
                        .client_key_mismatches
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client = %report.client_id, peer = ?peer,
                        "refused a client report: the id is registered with another key");
                    return Err(ReportRefusal::KeyMismatch);
                }
                if known.key_hash.is_none() {
                    tracing::info!(client = %report.client_id, "client registered its key");
                }
            }
            None => {
                // Checked before the commit: requests racing past it add at most as many
                // rows as the master handles requests at once.
                if tracker.clients.len() >= MAX_CLIENTS {
                    return Err(ReportRefusal::TableFull);
                }
                if let Some(p) = peer {
                    self.inner
                        .limits
                        .check_new_client(p.ip())
                        .map_err(ReportRefusal::TooManyNew)?;
                }
            }
        }
        let record = ClientRecord {
            id: report.client_id.clone(),
            addr: peer.map_or_else(|| "unknown".to_string(), |a| a.to_string()),
            revision: report.revision,
            path: report.path.clone(),
            files: report.files,
            bytes: report.bytes,
            last_seen_ms: now,
            key_hash: Some(key_hash),
        };
        drop(tracker);
        lock(&self.inner.db).record_client(&record)?;
        let mut tracker = lock(&fleet.tracker);
        let metrics = &self.inner.metrics;
        metrics.client_reports.fetch_add(1, Ordering::Relaxed);

        // Each known slave once per (client, period).
        let embedded = self.config().embedded_store;
        let named: BTreeSet<&str> = report.bad_slaves.iter().map(String::as_str).collect();
        let period_ms = u64::try_from(BAD_SLAVE_PERIOD.as_millis()).unwrap_or(u64::MAX);
        let mut counted = Vec::new();
        for slave in named {
            let known = tracker.slaves.contains_key(slave)
                || slave == FALLBACK_ID
                || (embedded && slave == EMBEDDED_SLAVE_ID);
            if !known {
                continue;
            }
            let pair = (report.client_id.clone(), slave.to_string());
            let fresh = tracker
                .bad_slave_counted
                .get(&pair)
                .is_none_or(|&at| now.saturating_sub(at) >= period_ms);
            if fresh {
                tracker.bad_slave_counted.insert(pair, now);
                counted.push(slave.to_string());
            }
        }
        if !counted.is_empty() {
            metrics
                .bad_slave_reports
                .fetch_add(counted.len() as u64, Ordering::Relaxed);
            tracing::warn!(client = %record.id, bad_slaves = ?counted, "client reported failing slaves");
            // Each reported slave has some of its verified packs probed again (`crate::probe`).
            for slave in counted.iter().filter(|s| tracker.slaves.contains_key(*s)) {
                self.inner.fleet.probes.suspect(slave);
            }
        }
        tracker.clients.insert(record.id.clone(), record);
        Ok(())
    }

    /// Deletes the clients not heard from within `client_retention`, and the bad-slave periods
    /// that ended. Blocking. Returns the rows deleted.
    pub(crate) fn expire_clients(&self) -> Result<u64, MasterError> {
        let now = now_ms();
        let retention =
            u64::try_from(self.config().client_retention.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now.saturating_sub(retention);
        let period_ms = u64::try_from(BAD_SLAVE_PERIOD.as_millis()).unwrap_or(u64::MAX);
        let deleted = {
            // The database first, then memory.
            let deleted = lock(&self.inner.db).expire_clients(cutoff)?;
            let mut tracker = lock(&self.inner.fleet.tracker);
            tracker.clients.retain(|_, c| c.last_seen_ms >= cutoff);
            tracker
                .bad_slave_counted
                .retain(|_, at| now.saturating_sub(*at) < period_ms);
            deleted
        };
        if deleted > 0 {
            self.inner
                .metrics
                .clients_expired
                .fetch_add(deleted, Ordering::Relaxed);
            tracing::info!(
                clients = deleted,
                "forgot clients not heard from within the retention"
            );
        }
        Ok(deleted)
    }

    /// How often the background task expires clients: a quarter of the retention, between 1 s
    /// and 1 h.
    pub(crate) fn client_expiry_period(&self) -> Duration {
        (self.config().client_retention / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(3600))
    }

    /// The [`STATUS_CLIENTS`] most recently seen clients, and how many there are.
    pub(crate) fn recent_clients(
        tracker: &crate::tracker::Tracker,
        now: u64,
    ) -> (Vec<ClientStatus>, u64) {
        let mut all: Vec<&ClientRecord> = tracker.clients.values().collect();
        all.sort_by(|a, b| {
            b.last_seen_ms
                .cmp(&a.last_seen_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        let total = all.len() as u64;
        let listed = all
            .into_iter()
            .take(STATUS_CLIENTS)
            .map(|c| c.status(now))
            .collect();
        (listed, total)
    }
}
