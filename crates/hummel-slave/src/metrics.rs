//! [`SlaveMetrics`]: the worker's visible state and counters, rendered as Prometheus text.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use hummel_store::BlobStore;

/// What the background worker is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerState {
    /// Not yet announced to the master.
    Starting = 0,
    /// Registered, nothing to fetch.
    Idle = 1,
    /// Fetching packs.
    Busy = 2,
    /// Backing off: the master is unreachable or refused us.
    Throttled = 3,
    /// `run` returned.
    Done = 4,
}

impl WorkerState {
    const ALL: [WorkerState; 5] = [
        WorkerState::Starting,
        WorkerState::Idle,
        WorkerState::Busy,
        WorkerState::Throttled,
        WorkerState::Done,
    ];

    /// Lower-case name, for metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Throttled => "throttled",
            WorkerState::Done => "done",
        }
    }
}

/// Counters of a slave. Totals only grow; gauges are set by the worker.
#[derive(Debug)]
pub struct SlaveMetrics {
    /// Packs fetched, verified and stored.
    pub replicated_packs: AtomicU64,
    /// Bytes of those packs.
    pub replicated_bytes: AtomicU64,
    /// Packs that could not be fetched from any of their sources (retried later).
    pub replication_failures: AtomicU64,
    /// Failed attempts to fetch a pack from one source (HTTP error, bad body, wrong hash).
    pub source_errors: AtomicU64,
    /// Downloaded bodies refused because they did not hash to the pack's name.
    pub corrupt_downloads: AtomicU64,
    /// Stored packs found corrupt by a scrub (quarantined, reported, no longer held).
    pub corrupt_packs: AtomicU64,
    /// Completed scrubs.
    pub scrubs: AtomicU64,
    /// Assignments skipped because the quota would overflow.
    pub quota_skips: AtomicU64,
    /// Complete hashlists accepted by the master.
    pub announces: AtomicU64,
    /// Successful heartbeats.
    pub heartbeats: AtomicU64,
    /// Heartbeats whose hashlist changes the master applied.
    pub hashlist_changes: AtomicU64,
    /// Heartbeats whose hashlist changes the master did not apply, asking for the complete
    /// hashlist.
    pub hashlist_refusals: AtomicU64,
    /// Packs being fetched or queued (gauge).
    pub replicating: AtomicU64,
    master_reachable: AtomicBool,
    state: AtomicU8,
    last_contact: Mutex<Option<Instant>>,
}

impl Default for SlaveMetrics {
    fn default() -> Self {
        SlaveMetrics {
            replicated_packs: AtomicU64::new(0),
            replicated_bytes: AtomicU64::new(0),
            replication_failures: AtomicU64::new(0),
            source_errors: AtomicU64::new(0),
            corrupt_downloads: AtomicU64::new(0),
            corrupt_packs: AtomicU64::new(0),
            scrubs: AtomicU64::new(0),
            quota_skips: AtomicU64::new(0),
            announces: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            hashlist_changes: AtomicU64::new(0),
            hashlist_refusals: AtomicU64::new(0),
            replicating: AtomicU64::new(0),
            master_reachable: AtomicBool::new(false),
            state: AtomicU8::new(WorkerState::Starting as u8),
            last_contact: Mutex::new(None),
        }
    }
}

impl SlaveMetrics {
    /// True if the last request to the master got an answer.
    pub fn master_reachable(&self) -> bool {
        self.master_reachable.load(Ordering::Relaxed)
    }

    pub(crate) fn set_master_reachable(&self, yes: bool) {
        self.master_reachable.store(yes, Ordering::Relaxed);
    }

    /// Seconds since the master last accepted a hashlist or heartbeat, if ever.
    pub fn last_contact_age(&self) -> Option<f64> {
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed().as_secs_f64())
    }

    pub(crate) fn touch_contact(&self) {
        *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// The worker's state.
    pub fn state(&self) -> WorkerState {
        let v = self.state.load(Ordering::Relaxed);
        WorkerState::ALL
            .into_iter()
            .find(|s| *s as u8 == v)
            .unwrap_or(WorkerState::Starting)
    }

    pub(crate) fn set_state(&self, s: WorkerState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Prometheus text exposition (version 0.0.4) of these counters and the store's.
    pub fn render(&self, store: &BlobStore, quota: Option<u64>) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut m = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        m(
            "hummel_slave_packs",
            "gauge",
            "Packs held (verified).",
            store.count().to_string(),
        );
        m(
            "hummel_slave_bytes_used",
            "gauge",
            "Bytes of packs held.",
            store.used().to_string(),
        );
        if let Some(q) = quota {
            m(
                "hummel_slave_quota_bytes",
                "gauge",
                "Most bytes of packs this slave stores.",
                q.to_string(),
            );
        }
        m(
            "hummel_slave_blob_requests_total",
            "counter",
            "GET /blob requests served.",
            load(&store.metrics.requests).to_string(),
        );
        m(
            "hummel_slave_blob_bytes_served_total",
            "counter",
            "Body bytes served from /blob.",
            load(&store.metrics.bytes_served).to_string(),
        );
        m(
            "hummel_slave_replicated_packs_total",
            "counter",
            "Packs fetched, verified and stored.",
            load(&self.replicated_packs).to_string(),
        );
        m(
            "hummel_slave_replicated_bytes_total",
            "counter",
            "Bytes of packs fetched, verified and stored.",
            load(&self.replicated_bytes).to_string(),
        );
        m(
            "hummel_slave_replication_failures_total",
            "counter",
            "Packs that could not be fetched from any source (retried later).",
            load(&self.replication_failures).to_string(),
        );
        m(
            "hummel_slave_source_errors_total",
            "counter",
            "Failed attempts to fetch a pack from one source.",
            load(&self.source_errors).to_string(),
        );
        m(
            "hummel_slave_corrupt_downloads_total",
            "counter",
            "Downloaded packs refused because they failed verification.",
            load(&self.corrupt_downloads).to_string(),
        );
        m(
            "hummel_slave_corrupt_packs_total",
            "counter",
            "Stored packs found corrupt by scrub and quarantined.",
            load(&self.corrupt_packs).to_string(),
        );
        m(
            "hummel_slave_scrubs_total",
            "counter",
            "Completed scrubs of the whole store.",
            load(&self.scrubs).to_string(),
        );
        m(
            "hummel_slave_quota_skips_total",
            "counter",
            "Assignments skipped because the quota would overflow.",
            load(&self.quota_skips).to_string(),
        );
        m(
            "hummel_slave_replicating",
            "gauge",
            "Packs being fetched or queued.",
            load(&self.replicating).to_string(),
        );
        m(
            "hummel_slave_announces_total",
            "counter",
            "Complete hashlists accepted by the master.",
            load(&self.announces).to_string(),
        );
        m(
            "hummel_slave_hashlist_changes_total",
            "counter",
            "Heartbeats whose hashlist changes the master applied.",
            load(&self.hashlist_changes).to_string(),
        );
        m(
            "hummel_slave_hashlist_refusals_total",
            "counter",
            "Heartbeats whose hashlist changes the master did not apply (complete hashlist sent instead).",
            load(&self.hashlist_refusals).to_string(),
        );
        m(
            "hummel_slave_heartbeats_total",
            "counter",
            "Heartbeats accepted by the master.",
            load(&self.heartbeats).to_string(),
        );
        m(
            "hummel_slave_master_reachable",
            "gauge",
            "1 if the last request to the master got an answer.",
            u8::from(self.master_reachable()).to_string(),
        );
        if let Some(age) = self.last_contact_age() {
            m(
                "hummel_slave_last_heartbeat_age_seconds",
                "gauge",
                "Seconds since the master last accepted a heartbeat or hashlist.",
                format!("{age:.3}"),
            );
        } else {
            let _ = writeln!(
                out,
                "# HELP hummel_slave_last_heartbeat_age_seconds Seconds since the master last \
                 accepted a heartbeat or hashlist (absent before the first)."
            );
            let _ = writeln!(out, "# TYPE hummel_slave_last_heartbeat_age_seconds gauge");
        }
        let _ = writeln!(
            out,
            "# HELP hummel_slave_worker_state 1 for the background worker's current state."
        );
        let _ = writeln!(out, "# TYPE hummel_slave_worker_state gauge");
        let current = self.state();
        for s in WorkerState::ALL {
            let _ = writeln!(
                out,
                "hummel_slave_worker_state{{state=\"{}\"}} {}",
                s.name(),
                u8::from(s == current)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        store.put(&hummel_core::Hash::of(b"x"), b"x").unwrap();
        let m = SlaveMetrics::default();
        m.replicated_packs.fetch_add(2, Ordering::Relaxed);
        m.hashlist_changes.fetch_add(3, Ordering::Relaxed);
        m.set_state(WorkerState::Busy);
        let text = m.render(&store, Some(100));
        assert!(text.contains("hummel_slave_packs 1\n"));
        assert!(text.contains("hummel_slave_bytes_used 1\n"));
        assert!(text.contains("hummel_slave_quota_bytes 100\n"));
        assert!(text.contains("hummel_slave_replicated_packs_total 2\n"));
        assert!(text.contains("hummel_slave_announces_total 0\n"));
        assert!(text.contains("hummel_slave_hashlist_changes_total 3\n"));
        assert!(text.contains("hummel_slave_hashlist_refusals_total 0\n"));
        assert!(text.contains("hummel_slave_master_reachable 0\n"));
        assert!(text.contains("# TYPE hummel_slave_blob_requests_total counter\n"));
        assert!(text.contains("hummel_slave_worker_state{state=\"busy\"} 1\n"));
        assert!(!text.contains("\nhummel_slave_last_heartbeat_age_seconds "));
        m.touch_contact();
        let text = m.render(&store, None);
        assert!(!text.contains("hummel_slave_quota_bytes"));
        assert!(text.contains("\nhummel_slave_last_heartbeat_age_seconds 0."));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }
}
