//! `GET /metrics`: Prometheus text format (0.0.4), rendered by hand from counters and a status
//! snapshot. [`Metrics`] holds the counters the HTTP layer increments.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use hummel_proto::api::{BuildState, PushState, SlaveState};

use crate::master::Master;

/// Counters incremented by request handling.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub http_requests: AtomicU64,
    pub http_server_errors: AtomicU64,
    pub index_requests: AtomicU64,
    pub client_reports: AtomicU64,
    pub bad_slave_reports: AtomicU64,
    /// Complete hashlists accepted from slaves.
    pub hashlists_received: AtomicU64,
    /// Heartbeats whose hashlist changes were applied (heartbeats without changes not counted).
    pub hashlist_changes: AtomicU64,
    /// Heartbeats whose hashlist changes were refused, asking for the complete hashlist.
    pub hashlist_refusals: AtomicU64,
    /// `/blob` responses sent to clients by the master as the source of last resort.
    pub fallback_served: AtomicU64,
    /// Such requests answered 503 because the limit was reached.
    pub fallback_busy: AtomicU64,
    /// Requests answered 429 because their address was over its rate (`crate::limits`).
    pub rate_limited: AtomicU64,
    /// Requests answered 503 because `crate::limits::MAX_API_REQUESTS` were running.
    pub shed: AtomicU64,
    /// Requests answered 413: a body over its route's limit.
    pub bodies_refused: AtomicU64,
    /// Client reports refused because the id is registered with another key.
    pub client_key_mismatches: AtomicU64,
    /// Client rows deleted by the retention.
    pub clients_expired: AtomicU64,
    /// Slave hashlists refused because the slave's read token is not the master's.
    pub slaves_refused: AtomicU64,
    /// Slave requests whose signature did not verify (`crate::identity`).
    pub slave_signatures_refused: AtomicU64,
    /// Slave requests signed by another key than the id's enrolled one.
    pub slave_identity_mismatches: AtomicU64,
    /// Probes of slaves that passed and failed (`crate::probe`).
    pub probes_passed: AtomicU64,
    pub probes_failed: AtomicU64,
    /// Packs pushes uploaded that were verified and staged, and their bytes (`crate::push`).
    pub push_packs_staged: AtomicU64,
    pub push_bytes_staged: AtomicU64,
    /// Pack uploads refused: damaged, malformed or broken off (over the size: `bodies_refused`).
    pub push_packs_refused: AtomicU64,
}

struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

/// Renders every metric. Blocking (takes a status snapshot).
pub(crate) fn render(master: &Master) -> String {
    let status = master.status();
    let counters = &master.inner.metrics;
    let store = &master.store().metrics;
    let mut out = Exposition(String::with_capacity(4096));

    out.single(
        "hummel_revision",
        "gauge",
        "Current revision number (0 before the first build).",
        status.revision.revision.unwrap_or(0),
    );
    out.single(
        "hummel_revision_files",
        "gauge",
        "Files in the current revision.",
        status.revision.files,
    );
    out.single(
        "hummel_revision_bytes",
        "gauge",
        "Bytes in the current revision.",
        status.revision.bytes,
    );
    out.single(
        "hummel_event_subscribers",
        "gauge",
        "Programs waiting for new revisions at /api/v1/events (hummel sync --watch).",
        master.inner.events.subscribers() as u64,
    );
    out.single(
        "hummel_slave_event_subscribers",
        "gauge",
        "Slaves following the publications at /slave/events.",
        master.inner.events.slave_subscribers() as u64,
    );

    out.family(
        "hummel_builds_total",
        "counter",
        "Builds by state (since the database was created).",
    );
    for (state, n) in master.build_counts() {
        let label = match state {
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
        };
        out.sample("hummel_builds_total", &format!("state=\"{label}\""), n);
    }
    if let Some(b) = &status.build {
        out.single(
            "hummel_build_files_done",
            "gauge",
            "Files processed by the latest build.",
            b.files_done,
        );
        out.single(
            "hummel_build_bytes_done",
            "gauge",
            "Bytes processed by the latest build.",
            b.bytes_done,
        );
    }

    out.family("hummel_slaves", "gauge", "Slaves by liveness state.");
    for (state, label) in [
        (SlaveState::Live, "live"),
        (SlaveState::Stale, "stale"),
        (SlaveState::Dead, "dead"),
    ] {
        let n = status.slaves.iter().filter(|s| s.state == state).count() as u64;
        out.sample("hummel_slaves", &format!("state=\"{label}\""), n);
    }
    out.single(
        "hummel_packs",
        "gauge",
        "Packs referenced by the current revision.",
        status.replication.packs,
    );
    out.single(
        "hummel_packs_under_replicated",
        "gauge",
        "Packs of the current revision with fewer live copies than the target.",
        status.replication.under_replicated,
    );
    out.single(
        "hummel_packs_unavailable",
        "gauge",
        "Packs of the current revision with no live copy.",
        status.replication.unavailable,
    );
    out.single(
        "hummel_replication_target",
        "gauge",
        "Target copies per pack.",
        u64::from(status.replication.target),
    );
    out.single(
        "hummel_pending_assignments",
        "gauge",
        "Packs assigned to slaves that they do not hold yet.",
        status.slaves.iter().map(|s| s.pending).sum(),
    );
    out.single(
        "hummel_clients",
        "gauge",
        "Clients that have reported within the retention.",
        status.clients_total.unwrap_or(status.clients.len() as u64),
    );
    out.single(
        "hummel_store_packs",
        "gauge",
        "Packs in the master's store.",
        master.store().count() as u64,
    );
    out.single(
        "hummel_store_bytes",
        "gauge",
        "Bytes in the master's store.",
        master.store().used(),
    );

    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    out.single(
        "hummel_http_requests_total",
        "counter",
        "HTTP requests received.",
        load(&counters.http_requests),
    );
    out.single(
        "hummel_http_server_errors_total",
        "counter",
        "HTTP responses with a 5xx status.",
        load(&counters.http_server_errors),
    );
    out.single(
        "hummel_index_requests_total",
        "counter",
        "Index requests.",
        load(&counters.index_requests),
    );
    out.single(
        "hummel_client_reports_total",
        "counter",
        "Client reports received.",
        load(&counters.client_reports),
    );
    out.single(
        "hummel_bad_slave_reports_total",
        "counter",
        "Known slaves named as failing in client reports, once per client and slave an hour.",
        load(&counters.bad_slave_reports),
    );
    out.single(
        "hummel_client_key_mismatches_total",
        "counter",
        "Client reports refused: the client id is registered with another key.",
        load(&counters.client_key_mismatches),
    );
    out.single(
        "hummel_clients_expired_total",
        "counter",
        "Clients forgotten after the retention without a report.",
        load(&counters.clients_expired),
    );
    out.single(
        "hummel_rate_limited_total",
        "counter",
        "Requests refused with 429: their address was over its rate.",
        load(&counters.rate_limited),
    );
    out.single(
        "hummel_requests_shed_total",
        "counter",
        "Requests refused with 503: the most the API handles at once were running.",
        load(&counters.shed),
    );
    out.single(
        "hummel_bodies_refused_total",
        "counter",
        "Requests refused with 413: a body over its route's limit.",
        load(&counters.bodies_refused),
    );
    out.single(
        "hummel_limited_addresses",
        "gauge",
        "Client addresses the request and new-client limits remember now.",
        master.inner.limits.addresses() as u64,
    );
    out.single(
        "hummel_slaves_refused_total",
        "counter",
        "Slave hashlists refused: the slave's read token is not the master's.",
        load(&counters.slaves_refused),
    );
    out.single(
        "hummel_slave_signatures_refused_total",
        "counter",
        "Slave requests refused because their signature did not verify.",
        load(&counters.slave_signatures_refused),
    );
    out.single(
        "hummel_slave_identity_mismatches_total",
        "counter",
        "Slave requests refused because another key is enrolled for the slave id.",
        load(&counters.slave_identity_mismatches),
    );
    out.single(
        "hummel_probes_passed_total",
        "counter",
        "Probes in which a slave served the right bytes for a pack it claims.",
        load(&counters.probes_passed),
    );
    out.single(
        "hummel_probes_failed_total",
        "counter",
        "Probes in which a slave did not serve the right bytes (it is then sent no clients).",
        load(&counters.probes_failed),
    );
    out.single(
        "hummel_hashlists_received_total",
        "counter",
        "Complete hashlists accepted from slaves.",
        load(&counters.hashlists_received),
    );
    out.single(
        "hummel_hashlist_changes_applied_total",
        "counter",
        "Slave heartbeats whose hashlist changes were applied.",
        load(&counters.hashlist_changes),
    );
    out.single(
        "hummel_hashlist_changes_refused_total",
        "counter",
        "Slave heartbeats whose hashlist changes were refused, asking for the complete hashlist.",
        load(&counters.hashlist_refusals),
    );
    out.single(
        "hummel_fallback_served_total",
        "counter",
        "Pack downloads the master served to clients as the source of last resort.",
        load(&counters.fallback_served),
    );
    out.single(
        "hummel_fallback_busy_total",
        "counter",
        "Such downloads refused with 503 because --fallback-limit were running.",
        load(&counters.fallback_busy),
    );
    out.single(
        "hummel_fallback_active",
        "gauge",
        "Downloads the master is serving as the source of last resort now.",
        master.fallback_active(),
    );
    let repack = &master.inner.upkeep.repacker;
    out.single(
        "hummel_repack_level",
        "gauge",
        "zstd level the background repack recompresses to (0: off).",
        u64::try_from(master.config().repack_level).unwrap_or(0),
    );
    out.single(
        "hummel_repack_running",
        "gauge",
        "1 while a repack pass runs.",
        u64::from(repack.running.load(Ordering::Relaxed)),
    );
    out.single(
        "hummel_repack_runs_total",
        "counter",
        "Repack passes that published a revision.",
        load(&repack.runs),
    );
    out.single(
        "hummel_repack_stopped_total",
        "counter",
        "Repack passes stopped by a build (nothing published).",
        load(&repack.stopped),
    );
    out.single(
        "hummel_repack_failures_total",
        "counter",
        "Repack passes that failed.",
        load(&repack.failures),
    );
    out.single(
        "hummel_repack_packs_written_total",
        "counter",
        "Packs sealed by repack passes, published or not.",
        load(&repack.packs_written),
    );
    out.single(
        "hummel_repack_bytes_saved_total",
        "counter",
        "Stored chunk bytes saved by published repack passes (before minus after).",
        load(&repack.bytes_saved),
    );
    let gc = &master.inner.upkeep.collector;
    out.single(
        "hummel_gc_runs_total",
        "counter",
        "Garbage collection passes.",
        load(&gc.runs),
    );
    out.single(
        "hummel_gc_failures_total",
        "counter",
        "Garbage collection passes that failed.",
        load(&gc.failures),
    );
    out.single(
        "hummel_gc_revisions_expired_total",
        "counter",
        "Revisions no longer kept whose index was deleted.",
        load(&gc.revisions),
    );
    out.single(
        "hummel_gc_packs_collected_total",
        "counter",
        "Packs deleted from the master's store by the garbage collection.",
        load(&gc.packs),
    );
    out.single(
        "hummel_gc_bytes_collected_total",
        "counter",
        "Bytes of the packs deleted by the garbage collection.",
        load(&gc.bytes),
    );
    out.single(
        "hummel_push_packs_staged_total",
        "counter",
        "Packs uploaded by pushes, verified and staged.",
        load(&counters.push_packs_staged),
    );
    out.single(
        "hummel_push_bytes_staged_total",
        "counter",
        "Bytes of the packs uploaded by pushes, verified and staged.",
        load(&counters.push_bytes_staged),
    );
    out.single(
        "hummel_push_packs_refused_total",
        "counter",
        "Pack uploads refused: damaged, malformed or broken off.",
        load(&counters.push_packs_refused),
    );
    out.family(
        "hummel_pushes",
        "gauge",
        "Pushes followed (those that name themselves), by state.",
    );
    for (state, label) in [
        (PushState::Uploading, "uploading"),
        (PushState::Publishing, "publishing"),
        (PushState::Published, "published"),
        (PushState::Refused, "refused"),
        (PushState::Stalled, "stalled"),
    ] {
        let n = status.pushes.iter().filter(|p| p.state == state).count() as u64;
        out.sample("hummel_pushes", &format!("state=\"{label}\""), n);
    }
    out.single(
        "hummel_blob_requests_total",
        "counter",
        "Blob requests served from the master's store.",
        load(&store.requests),
    );
    out.single(
        "hummel_blob_bytes_served_total",
        "counter",
        "Blob bytes served from the master's store.",
        load(&store.bytes_served),
    );
    out.0
}
