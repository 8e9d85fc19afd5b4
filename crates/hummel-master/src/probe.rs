//! Probes: a slave's claims are checked before clients are sent to it.
//!
//! A hashlist is a claim, and a slave can lie (a fake slave claiming every pack, a disk that
//! rotted, a mirror that serves something else). So the master sends clients to a slave for a
//! pack only once it has **verified** that the slave serves that pack's bytes: it asks the
//! slave for one chunk of the pack, chosen at random from the pack's table of contents (read
//! from the master's own copy), as clients ask (`GET /blob/{pack}` with a `Range`), and checks
//! it as clients do: status 206, the exact `Content-Length`, at most the frame's bytes read (an
//! endless or longer body fails at the first byte too many), [`decode_chunk`] bounded by the
//! chunk's declared size (a zstd bomb fails without being expanded) and its BLAKE3 id. A pack
//! whose chunks are all empty is checked by its 16-byte header instead.
//!
//! - **New claims** (a hashlist, or packs added by a heartbeat) are probed as they arrive: the
//!   prober wakes on them. Until then the slave is not listed for those packs; a pack no live
//!   slave may serve yet is served by the master (the source of last resort).
//! - **A failed probe withholds the slave**: from `locate` for every pack, and from placement
//!   (its packs are placed on other slaves). Everything verified before is void. It is probed
//!   again after a back-off ([`RETRY_FIRST`] doubling to [`RETRY_MAX`], jittered), and sent
//!   clients again only once a probe passes; then each of its claims is verified anew.
//! - **Reports**: a slave a client reports (`bad_slaves`, counted once per client and hour) has
//!   [`RECHECK_AFTER_REPORT`] of its verified packs probed again at once.
//! - **Spot checks**: each live slave has one verified pack probed again every
//!   `MasterConfig::probe_interval` (jittered ±50%).
//!
//! Bounded: at most [`PROBES_AT_ONCE`] probes in flight, [`PROBES_PER_SLAVE`] per slave; each
//! reads at most one stored chunk (256 KiB plus the codec's slack) and takes at most
//! [`PROBE_DEADLINE`]; decoding runs on the blocking pool. The prober is a background task
//! ([`run`]), never on a request's path. Status (`withheld`, `verified`) and the dashboard say
//! why a slave is not sent clients. Results live in memory: after a restart every claim is
//! probed again.
//!
//! What probes cannot do: a slave that tells the master's requests apart from clients' (by
//! address) can pass them and still lie to clients. Clients verify every byte anyway, fail over
//! to another holder and report the slave, which has it probed again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use hummel_core::codec::decode_chunk;
use hummel_core::pack::{PACK_HEADER_LEN, PackEntry, read_toc};
use hummel_core::{Hash, PackInfo};
use hummel_proto::api::{SlaveState, blob_path};
use hummel_proto::auth::TOKEN_HEADER;
use hummel_store::BlobStore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::master::Master;
use crate::tracker::{SlaveRecord, Vetting};
use crate::{lock, now_ms, read};

/// Probes in flight at once, over all slaves.
pub(crate) const PROBES_AT_ONCE: usize = 4;
/// Probes in flight at once to one slave.
pub(crate) const PROBES_PER_SLAVE: usize = 2;
/// Longest a probe may take, from connecting to the last byte.
pub(crate) const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of a probe's answer.
const PROBE_STALL: Duration = Duration::from_secs(5);
/// First wait before a slave that failed a probe is probed again...
pub(crate) const RETRY_FIRST: Duration = Duration::from_secs(2);
/// ... doubling up to this.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(300);
/// Verified packs probed again when a client reports the slave.
pub(crate) const RECHECK_AFTER_REPORT: usize = 3;
/// The prober looks for work at least this often.
const TICK: Duration = Duration::from_millis(500);

/// What the master knows of each slave's honesty, and the prober's wake-up call. Lock order:
/// tracker, then this.
#[derive(Debug, Default)]
pub(crate) struct Prober {
    book: std::sync::Mutex<TrustBook>,
    wake: tokio::sync::Notify,
}

/// Probe results, by slave id.
#[derive(Debug, Default)]
pub(crate) struct TrustBook {
    slaves: HashMap<String, SlaveTrust>,
}

#[derive(Debug, Default)]
struct SlaveTrust {
    /// Packs it served the right bytes for.
    verified: HashSet<u32>,
    /// Its last failed probe, until one passes.
    failure: Option<Failure>,
    /// Packs being probed now.
    in_flight: HashSet<u32>,
    /// Packs the master could not probe (not in its own store), and until when not to try.
    skip_until: HashMap<u32, u64>,
    /// Verified packs still to probe again after a report.
    recheck: usize,
    /// When the next spot check is due.
    next_spot_ms: u64,
    /// When a failed slave is probed again, and the wait after that.
    retry_at_ms: u64,
    backoff: Duration,
}

impl SlaveTrust {
    /// A failed slave whose retry found nothing to probe is retried after its back-off.
    fn retry_later(&mut self, now: u64) {
        if self.failure.is_some() && self.retry_at_ms == u64::MAX {
            self.retry_at_ms = now + ms(jitter(self.backoff.max(RETRY_FIRST)));
        }
    }
}

#[derive(Clone, Debug)]
struct Failure {
    pack: u32,
    reason: String,
    at_ms: u64,
}

/// One probe to run.
#[derive(Clone, Debug)]
pub(crate) struct ProbeJob {
    pub slave: String,
    pub url: String,
    pub pack: PackInfo,
}

/// How a probe ended.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The slave served the right bytes.
    Passed,
    /// It did not: why.
    Failed(String),
    /// The master could not probe (it lacks the pack): no verdict.
    Unprobeable(String),
}

/// `d` times a random factor in [0.5, 1.5).
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>())
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A random element of `items`.
fn pick<T: Copy>(items: &[T]) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    Some(items[(rand::random::<u64>() % items.len() as u64) as usize])
}

impl TrustBook {
    /// Whether clients may be sent to slave `id` for `pack`.
    pub(crate) fn serves(&self, id: &str, pack: u32) -> bool {
        self.slaves
            .get(id)
            .is_some_and(|t| t.failure.is_none() && t.verified.contains(&pack))
    }

    /// Whether slave `id` failed its last probe (it then gets no placement either).
    pub(crate) fn failed(&self, id: &str) -> bool {
        self.slaves.get(id).is_some_and(|t| t.failure.is_some())
    }

    /// Packs of slave `id` verified.
    pub(crate) fn verified(&self, id: &str) -> u64 {
        self.slaves.get(id).map_or(0, |t| {
            if t.failure.is_some() {
                0
            } else {
                t.verified.len() as u64
            }
        })
    }

    /// Why clients are not sent to slave `s` (state `state` at `now`, on a master with a read
    /// token if `private`), if they are not; `None` when they are sent there for at least the
    /// packs it has verified.
    pub(crate) fn withheld(
        &self,
        s: &SlaveRecord,
        state: SlaveState,
        private: bool,
        now: u64,
    ) -> Option<String> {
        let age = |at: u64| format!("{} s", now.saturating_sub(at) / 1000);
        match state {
            SlaveState::Live => {}
            SlaveState::Stale => {
                return Some(format!("stale: no heartbeat for {}", age(s.last_seen_ms)));
            }
            SlaveState::Dead => {
                return Some(format!("dead: no heartbeat for {}", age(s.last_seen_ms)));
            }
        }
        match s.vetting {
            Vetting::Refused => {
                return Some("refused: its read token is not the master's".into());
            }
            Vetting::Unknown if private => {
                return Some(
                    "not announced since the master started (a private master sends clients \
                     only to slaves that showed its read token)"
                        .into(),
                );
            }
            _ => {}
        }
        let trust = self.slaves.get(&s.id);
        if let Some(f) = trust.and_then(|t| t.failure.as_ref()) {
            let again = trust.map_or(0, |t| t.retry_at_ms.saturating_sub(now) / 1000);
            return Some(format!(
                "failed a probe {} ago: {} (pack {}); probed again in {again} s",
                age(f.at_ms),
                f.reason,
                f.pack
            ));
        }
        let verified = trust.map_or(0, |t| t.verified.len());
        if !s.packs.is_empty() && verified == 0 {
            return Some(format!(
                "probing: none of its {} packs verified yet",
                s.packs.len()
            ));
        }
        None
    }
}

impl Prober {
    /// The probe results, locked (lock order: tracker first).
    pub(crate) fn book(&self) -> std::sync::MutexGuard<'_, TrustBook> {
        lock(&self.book)
    }

    /// New claims (or a report) arrived: the prober looks for work now.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Forgets slave `id` (removed by the admin).
    pub(crate) fn forget(&self, id: &str) {
        self.book().slaves.remove(id);
    }

    /// A client reported slave `id`: probe [`RECHECK_AFTER_REPORT`] of its verified packs again.
    pub(crate) fn suspect(&self, id: &str) {
        let mut book = self.book();
        let t = book.slaves.entry(id.to_string()).or_default();
        t.recheck = RECHECK_AFTER_REPORT;
        drop(book);
        self.wake();
    }
}

impl Master {
    /// Up to `max` probes to start now, marked in flight. Blocking (brief locks).
    pub(crate) fn probe_jobs(&self, max: usize) -> Vec<ProbeJob> {
        let now = now_ms();
        let liveness = self.liveness();
        let interval = self.config().probe_interval;
        let private = self.config().tokens.read.is_some();
        let packs = read(&self.inner.catalog.packs);
        let tracker = lock(&self.inner.fleet.tracker);
        let mut book = self.inner.fleet.probes.book();
        book.slaves.retain(|id, _| tracker.slaves.contains_key(id));
        let mut jobs = Vec::new();
        for s in tracker.slaves.values() {
            if jobs.len() >= max {
                break;
            }
            if liveness.state(s.last_seen_ms, now) != SlaveState::Live
                || !s.vetting.serves_clients(private)
            {
                continue;
            }
            let t = book.slaves.entry(s.id.clone()).or_default();
            // Verification of a pack it no longer claims lapses (it may fetch it again).
            t.verified.retain(|p| s.packs.contains(p));
            t.skip_until.retain(|_, until| *until > now);
            while t.in_flight.len() < PROBES_PER_SLAVE && jobs.len() < max {
                let Some(number) = next_probe(t, s, now, interval) else {
                    break;
                };
                let Some(pack) = packs.by_number.get(&number) else {
                    // Not a pack of the table (collected meanwhile): nothing to check.
                    t.skip_until.insert(number, now + ms(interval));
                    t.retry_later(now);
                    continue;
                };
                t.in_flight.insert(number);
                jobs.push(ProbeJob {
                    slave: s.id.clone(),
                    url: s.url.clone(),
                    pack: *pack,
                });
            }
        }
        jobs
    }

    /// Records how a probe ended. Blocking (brief locks).
    pub(crate) fn probe_done(&self, job: &ProbeJob, verdict: &Verdict) {
        let now = now_ms();
        let interval = self.config().probe_interval;
        let metrics = &self.inner.metrics;
        let mut book = self.inner.fleet.probes.book();
        let t = book.slaves.entry(job.slave.clone()).or_default();
        t.in_flight.remove(&job.pack.number);
        // A slave that starts or stops failing gains or loses its share of the placement.
        let failed_before = t.failure.is_some();
        match verdict {
            Verdict::Passed => {
                metrics.probes_passed.fetch_add(1, Ordering::Relaxed);
                t.verified.insert(job.pack.number);
                t.backoff = Duration::ZERO;
                if let Some(f) = t.failure.take() {
                    tracing::info!(slave = %job.slave, pack = job.pack.number,
                        failed = %f.reason,
                        "the slave passed a probe again; its claims are verified anew");
                }
            }
            Verdict::Failed(reason) => {
                metrics.probes_failed.fetch_add(1, Ordering::Relaxed);
                t.verified.clear();
                t.backoff = (t.backoff * 2).clamp(RETRY_FIRST, RETRY_MAX);
                t.retry_at_ms = now + ms(jitter(t.backoff));
                if t.failure.is_none() {
                    tracing::warn!(slave = %job.slave, url = %job.url, pack = job.pack.number,
                        "the slave failed a probe: {reason}; no clients are sent to it until it \
                         passes one");
                } else {
                    tracing::debug!(slave = %job.slave, pack = job.pack.number,
                        "the slave failed a probe again: {reason}");
                }
                t.failure = Some(Failure {
                    pack: job.pack.number,
                    reason: reason.clone(),
                    at_ms: now,
                });
            }
            Verdict::Unprobeable(why) => {
                tracing::warn!(slave = %job.slave, pack = job.pack.number,
                    "could not probe the slave: {why}");
                t.skip_until
                    .insert(job.pack.number, now + ms(jitter(interval)));
                t.retry_later(now);
            }
        }
        let failed_now = t.failure.is_some();
        drop(book);
        if failed_before != failed_now {
            self.inner.fleet.placement_changed();
        }
    }
}

#[cfg(test)]
impl Master {
    /// Takes every claim of every slave as probed and verified, as the prober finds them with
    /// honest slaves (for tests of everything else; the probes themselves are tested below and
    /// by the integration tests, with real slaves and lying ones).
    pub(crate) fn pass_probes(&self) {
        let tracker = lock(&self.inner.fleet.tracker);
        let mut book = self.inner.fleet.probes.book();
        for s in tracker.slaves.values() {
            let t = book.slaves.entry(s.id.clone()).or_default();
            if t.failure.is_none() {
                t.verified.extend(s.packs.iter().copied());
            }
        }
    }
}

/// The pack to probe next on slave `s`, if one is due: a failed slave's retry; a pack to check
/// again after a report; a claim not yet verified; a spot check.
fn next_probe(t: &mut SlaveTrust, s: &SlaveRecord, now: u64, interval: Duration) -> Option<u32> {
    let free = |p: &u32, t: &SlaveTrust| !t.in_flight.contains(p) && !t.skip_until.contains_key(p);
    if let Some(f) = &t.failure {
        if now < t.retry_at_ms || !t.in_flight.is_empty() {
            return None;
        }
        // The pack it failed, if it still claims it; else any claim.
        let pack = if s.packs.contains(&f.pack) {
            Some(f.pack)
        } else {
            let claims: Vec<u32> = s.packs.iter().copied().filter(|p| free(p, t)).collect();
            pick(&claims)
        };
        t.retry_at_ms = match pack {
            // Probed again only after this one's verdict.
            Some(_) => u64::MAX,
            None => now + ms(jitter(t.backoff.max(RETRY_FIRST))),
        };
        return pack;
    }
    if t.recheck > 0 {
        let verified: Vec<u32> = t.verified.iter().copied().filter(|p| free(p, t)).collect();
        if let Some(p) = pick(&verified) {
            t.recheck -= 1;
            return Some(p);
        }
        t.recheck = 0;
    }
    if let Some(&p) = s
        .packs
        .iter()
        .find(|p| !t.verified.contains(p) && free(p, t))
    {
        return Some(p);
    }
    if now >= t.next_spot_ms {
        t.next_spot_ms = now + ms(jitter(interval));
        let verified: Vec<u32> = t.verified.iter().copied().filter(|p| free(p, t)).collect();
        return pick(&verified);
    }
    None
}

/// A stored chunk of pack `hash` to ask for, at random, from the master's own copy: `None`
/// when every chunk is empty (the header is asked for then).
fn pick_chunk(store: &BlobStore, hash: &Hash) -> Result<Option<PackEntry>, String> {
    let path = store.path(hash);
    let file = std::fs::File::open(&path)
        .map_err(|e| format!("the master's copy of pack {}: {e}", hash.short()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("the master's copy of pack {}: {e}", hash.short()))?
        .len();
    let entries = read_toc(std::io::BufReader::new(file), size)
        .map_err(|e| format!("the master's copy of pack {}: {e}", hash.short()))?;
    let stored: Vec<PackEntry> = entries.into_iter().filter(|e| e.stored_len > 0).collect();
    Ok(pick(&stored))
}

/// Asks the slave of `job` for a random chunk of its pack and checks what comes back.
pub(crate) async fn probe(master: &Master, http: &reqwest::Client, job: &ProbeJob) -> Verdict {
    let store = master.store().clone();
    let hash = job.pack.hash;
    let entry = match tokio::task::spawn_blocking(move || pick_chunk(&store, &hash)).await {
        Ok(Ok(entry)) => entry,
        Ok(Err(why)) => return Verdict::Unprobeable(why),
        Err(e) => return Verdict::Unprobeable(format!("task failed: {e}")),
    };
    let (start, len) = match &entry {
        Some(e) => (e.offset, u64::from(e.stored_len)),
        None => (0, PACK_HEADER_LEN.min(job.pack.size)),
    };
    if len == 0 {
        return Verdict::Unprobeable("an empty pack".into());
    }
    let url = format!("{}{}", job.url, blob_path(&job.pack.hash));
    let mut request = http
        .get(&url)
        .header(
            reqwest::header::RANGE,
            format!("bytes={start}-{}", start + len - 1),
        )
        .timeout(PROBE_DEADLINE);
    if let Some(token) = &master.config().tokens.read {
        request = request.header(TOKEN_HEADER, token);
    }
    let body = match fetch(request, len).await {
        Ok(b) => b,
        Err(why) => return Verdict::Failed(why),
    };
    let check = move || match entry {
        Some(e) => decode_chunk(e.codec, &body, e.len, &e.hash)
            .map(|_| ())
            .map_err(|err| format!("bad bytes: {err}")),
        None => body
            .starts_with(hummel_core::pack::PACK_MAGIC)
            .then_some(())
            .ok_or_else(|| "bad bytes: not the pack's header".to_string()),
    };
    match tokio::task::spawn_blocking(check).await {
        Ok(Ok(())) => Verdict::Passed,
        Ok(Err(why)) => Verdict::Failed(why),
        Err(e) => Verdict::Unprobeable(format!("task failed: {e}")),
    }
}

/// Sends `request` and reads exactly `len` bytes of a 206 answer, refusing anything else.
async fn fetch(request: reqwest::RequestBuilder, len: u64) -> Result<Vec<u8>, String> {
    let resp = request.send().await.map_err(|e| {
        let why = hummel_tls::certificate_problem(&e).unwrap_or_else(|| e.to_string());
        format!("no answer: {why}")
    })?;
    let status = resp.status();
    if status != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(format!("HTTP {status} for a range of {len} bytes"));
    }
    if let Some(n) = resp.content_length()
        && n != len
    {
        return Err(format!("Content-Length {n} for a range of {len} bytes"));
    }
    let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut stream = resp.bytes_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(|e| format!("body failed after {} bytes: {e}", body.len()))?;
        if (body.len() + piece.len()) as u64 > len {
            return Err(format!("body longer than the {len} bytes asked for"));
        }
        body.extend_from_slice(&piece);
    }
    if (body.len() as u64) < len {
        return Err(format!("short body: {} of {len} bytes", body.len()));
    }
    Ok(body)
}

/// Runs probes until `cancel` is cancelled.
pub(crate) async fn run(master: Master, cancel: CancellationToken) {
    let http = match master
        .config()
        .probe_tls
        .client_builder()
        .connect_timeout(PROBE_STALL)
        .read_timeout(PROBE_STALL)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the probes' HTTP client; slaves are not probed");
            return;
        }
    };
    let mut running: JoinSet<Verdict> = JoinSet::new();
    let mut jobs: HashMap<tokio::task::Id, ProbeJob> = HashMap::new();
    loop {
        let room = PROBES_AT_ONCE.saturating_sub(running.len());
        if room > 0 {
            let m = master.clone();
            let new = tokio::task::spawn_blocking(move || m.probe_jobs(room))
                .await
                .unwrap_or_default();
            for job in new {
                let (m, h, j) = (master.clone(), http.clone(), job.clone());
                let handle = running.spawn(async move { probe(&m, &h, &j).await });
                jobs.insert(handle.id(), job);
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                let (id, verdict) = match done {
                    Ok((id, v)) => (id, v),
                    Err(e) => (e.id(), Verdict::Unprobeable(format!("probe task failed: {e}"))),
                };
                if let Some(job) = jobs.remove(&id) {
                    let m = master.clone();
                    let _ = tokio::task::spawn_blocking(move || m.probe_done(&job, &verdict)).await;
                }
            }
            () = master.inner.fleet.probes.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
    running.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slave(packs: &[u32]) -> SlaveRecord {
        SlaveRecord {
            id: "s1".into(),
            url: "http://127.0.0.1:1".into(),
            quota: None,
            used: 0,
            replicating: 0,
            last_seen_ms: 1_000,
            packs: packs.iter().copied().collect(),
            foreign: HashSet::new(),
            foreign_as_of: 0,
            hashlist: None,
            vetting: Vetting::Accepted,
            draining: false,
            served: None,
            egress: None,
        }
    }

    #[test]
    fn claims_are_probed_then_spot_checked_and_a_failure_waits_for_its_retry() {
        let s = slave(&[1, 2]);
        let mut t = SlaveTrust::default();
        let interval = Duration::from_secs(60);
        // Unverified claims first.
        let a = next_probe(&mut t, &s, 1_000, interval).unwrap();
        t.in_flight.insert(a);
        let b = next_probe(&mut t, &s, 1_000, interval).unwrap();
        assert_ne!(a, b);
        t.in_flight.clear();
        t.verified.extend([1, 2]);
        // All verified: one spot check, then none until the interval passed.
        assert!(next_probe(&mut t, &s, 1_000, interval).is_some());
        assert_eq!(next_probe(&mut t, &s, 1_001, interval), None);
        assert!(next_probe(&mut t, &s, 1_000 + 90_001, interval).is_some());
        // A report asks for rechecks of verified packs now.
        t.recheck = 2;
        assert!(next_probe(&mut t, &s, 1_000, interval).is_some());
        assert!(next_probe(&mut t, &s, 1_000, interval).is_some());
        assert_eq!(t.recheck, 0);
        // A failure: nothing before its retry time, then the failed pack, once.
        t.failure = Some(Failure {
            pack: 2,
            reason: "bad bytes".into(),
            at_ms: 1_000,
        });
        t.retry_at_ms = 5_000;
        assert_eq!(next_probe(&mut t, &s, 4_999, interval), None);
        assert_eq!(next_probe(&mut t, &s, 5_000, interval), Some(2));
        assert_eq!(next_probe(&mut t, &s, 5_001, interval), None);
    }

    #[test]
    fn a_failed_slave_serves_nothing_and_status_says_why() {
        let s = slave(&[1]);
        let mut book = TrustBook::default();
        let reason = |b: &TrustBook| b.withheld(&s, SlaveState::Live, false, 3_000);
        assert!(reason(&book).unwrap().starts_with("probing"));
        book.slaves
            .entry("s1".into())
            .or_default()
            .verified
            .insert(1);
        assert!(book.serves("s1", 1));
        assert!(!book.serves("s1", 2));
        assert_eq!(reason(&book), None);
        let t = book.slaves.get_mut("s1").unwrap();
        t.failure = Some(Failure {
            pack: 1,
            reason: "HTTP 404 Not Found for a range of 10 bytes".into(),
            at_ms: 1_000,
        });
        assert!(!book.serves("s1", 1));
        assert!(book.failed("s1"));
        let why = reason(&book).unwrap();
        assert!(why.contains("failed a probe 2 s ago: HTTP 404"), "{why}");
        assert!(
            book.withheld(&s, SlaveState::Stale, false, 3_000)
                .unwrap()
                .starts_with("stale")
        );
    }

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(5) && j < Duration::from_secs(15),
                "{j:?}"
            );
        }
    }
}
