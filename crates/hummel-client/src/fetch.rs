//! The multi-source download engine: [`fetch_all`] runs the plan's [`RangeRequest`]s against
//! the slaves the master located, several slaves at once.
//!
//! Scheduling: at most `concurrency` requests in flight in total and [`PER_SLAVE_LIMIT`] per
//! slave; each request goes to the holder of its pack expected to finish it first (requests in
//! flight over the rate measured on its finished requests; ties rotate), so every mirror
//! holding a pack serves the client at once and a slow one gets less. Endgame: once nothing is
//! queued, a request running far behind what another holder has shown it can do is repeated
//! there ([`endgame_pick`]); the first complete copy wins and the other is told to stop, and
//! stops only after the batch it is writing is written (both write the same verified bytes).
//!
//! Verification: a response must be `206` and exactly the requested length (the body read stops
//! at the cap). As the body streams in, each run of whole chunks goes to `spawn_blocking`, where
//! every chunk passes [`decode_chunk_into`] (bounded output, BLAKE3 id) before its plain bytes are
//! written, with `write_at`, to every temp file offset that needs it. An HTTP error, a timeout, a short or long body or a bad chunk marks that slave bad
//! for that pack and the range goes to the next holder; a slave that cannot be reached is used
//! for no other pack either. When no holder is left, those that could not be reached are asked
//! again after a jittered backoff ([`SLAVE_DOWN_RETRY`], a few times), and then the sync fails
//! with [`SyncError::PackUnavailable`]. A local write error fails the sync at once.
//!
//! Busy: a `503` (or `429`) is no fault. The slave (or the master, the source of last resort for
//! packs no mirror holds yet) gets no request before its `Retry-After` (1 s when absent, at most
//! [`MAX_RETRY_AFTER`]); the range goes to another holder, or waits for this one. A range whose
//! holders stay busy for [`BUSY_PATIENCE`] fails the sync, saying when to retry.
//!
//! Memory: a request holds the batch being decoded and the bytes arriving behind it, about
//! 2 × [`DECODE_BATCH`] (1 MiB) plus one chunk, not its whole range (up to 16 MiB); network,
//! decompression and disk writes overlap.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::report::Meter;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use reqwest::StatusCode;
use reqwest::header::RANGE;
use tokio_util::sync::CancellationToken;

use hummel_core::codec::decode_chunk_into;
use hummel_core::{Hash, Index};
use hummel_proto::api::LocateResponse;

use crate::SyncError;
use crate::assemble::{Staging, TargetWriter};
use hummel_net::{Backoff, Retry, backoff};

use crate::http::{HttpClient, describe, normalise_url};
use crate::plan::{RangeRequest, TargetTable};

/// Most requests in flight to one slave.
pub const PER_SLAVE_LIMIT: usize = 4;

/// Longest `Retry-After` honoured; a longer one waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long a range may keep getting busy answers before the sync gives up on it.
const BUSY_PATIENCE: Duration = Duration::from_secs(120);

/// A slave that could not be reached is used for no other range while another holder is left;
/// when every holder of a range is down, the down ones are asked again after this backoff
/// (jittered between 250 ms and ceilings of 250 ms, 500 ms, 1 s, 2 s), [`SLAVE_DOWN_RETRIES`]
/// times per slave, so a blip of the only mirror (a restart) does not fail the sync.
const SLAVE_DOWN_RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(4))
    .with_floor(Duration::from_millis(250));
/// See [`SLAVE_DOWN_RETRY`].
const SLAVE_DOWN_RETRIES: u32 = 4;

/// Everything a range request needs, shared by all of them.
pub(crate) struct FetchContext {
    pub(crate) http: HttpClient,
    pub(crate) index: Arc<Index>,
    pub(crate) targets: Arc<TargetTable>,
    pub(crate) staging: Arc<Staging>,
    pub(crate) concurrency: usize,
    pub(crate) per_slave: usize,
    pub(crate) progress: Meter,
}

/// What the downloads did.
#[derive(Debug, Default, Clone)]
pub(crate) struct FetchStats {
    /// Stored bytes received in successful responses.
    pub(crate) bytes_downloaded: u64,
    /// Plain bytes written from downloads (counting every target).
    pub(crate) bytes_written: u64,
    /// Chunks verified and written.
    pub(crate) chunks_downloaded: u64,
    /// Requests sent (including failed and duplicate ones).
    pub(crate) requests: u64,
    /// Requests that failed.
    pub(crate) failed_requests: u64,
    /// Requests that repeated a slow range on another holder (the endgame).
    pub(crate) duplicate_requests: u64,
    /// Stored bytes of the ranges each slave delivered first, by slave id (the slaves used).
    pub(crate) bytes_by_slave: BTreeMap<String, u64>,
    /// Slaves that failed or served bad data.
    pub(crate) bad_slaves: BTreeSet<String>,
}

/// Why one attempt failed.
enum AttemptError {
    /// The slave cannot be reached at all: skip it for every pack.
    SlaveDown(String),
    /// The slave's fault: try another holder.
    Slave(String),
    /// The slave is busy (503): no request to it before `retry_after` has passed.
    Busy { retry_after: Duration },
    /// Ours (cannot write a temp file): stop.
    Local(SyncError),
    /// Another holder delivered the range first.
    Cancelled,
}

/// One slave as the engine sees it.
struct Slave {
    id: String,
    url: String,
    in_flight: usize,
    /// Stored bytes per second of one request, smoothed over its finished requests; `None`
    /// until one finished.
    rate: Option<f64>,
    /// Said it was busy, or is asked again after it could not be reached: no request before
    /// then.
    busy_until: Option<Instant>,
    /// Times it was asked again after it could not be reached (see [`SLAVE_DOWN_RETRY`]).
    retry: Retry,
}

impl Slave {
    fn busy(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|t| t > now)
    }
}

impl Slave {
    /// Folds one finished request of `bytes` in `secs` into the smoothed rate.
    fn observe(&mut self, bytes: u64, secs: f64) {
        let r = bytes as f64 / secs.max(1e-3);
        self.rate = Some(match self.rate {
            Some(old) => 0.7 * old + 0.3 * r,
            None => r,
        });
    }
}

/// Among `holders` below the per-slave limit, the one expected to finish a new request soonest:
/// the fewest requests in flight, divided by the measured rate (a slave not measured yet counts
/// as fast as the fastest, so every mirror gets tried); ties go round-robin from `turn`.
fn pick_slave(holders: &[usize], slaves: &[Slave], limit: usize, turn: usize) -> Option<usize> {
    let fastest = slaves
        .iter()
        .filter_map(|s| s.rate)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let cost = |s: usize| (slaves[s].in_flight + 1) as f64 / slaves[s].rate.unwrap_or(fastest);
    let n = holders.len();
    (0..n)
        .map(|k| holders[(k + turn) % n])
        .filter(|&s| slaves[s].in_flight < limit)
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
}

/// A range request on its way, as the scheduler tracks it.
struct Attempt {
    range: usize,
    slave: usize,
    started: Instant,
    /// What the request reports while it runs, and how it is told to stop.
    shared: Arc<AttemptShared>,
}

/// Written by a running request, read by the scheduler.
#[derive(Default)]
struct AttemptShared {
    /// Stored bytes received so far.
    received: AtomicU64,
    /// When the last bytes arrived, in ms after the attempt started.
    last_byte_ms: AtomicU64,
    /// Cancelled when another attempt delivered the range first.
    cancel: CancellationToken,
}

/// How long the endgame waits before it judges a request slow: long enough for a rate to show.
const ENDGAME_MIN_AGE: Duration = Duration::from_millis(200);

/// A request is repeated elsewhere when the other holder is expected to deliver the whole
/// range this many times sooner than the first one delivers the rest.
const ENDGAME_MARGIN: f64 = 3.0;

/// A request that received nothing for this long is stalled, whatever its slave did before.
const ENDGAME_STALL: Duration = Duration::from_secs(1);

/// A request expected to finish sooner than this is never repeated.
const ENDGAME_MIN_REMAINING: Duration = Duration::from_secs(1);

/// A request expected to need this much longer is repeated on an idle holder whose speed is
/// not known yet.
const ENDGAME_BLIND_AFTER: Duration = Duration::from_secs(2);

/// Endgame: once nothing is queued, the running request (not yet repeated) that would gain most
/// from a second holder, with that holder. The first one's remaining bytes at its observed
/// speed must take at least [`ENDGAME_MIN_REMAINING`], and [`ENDGAME_MARGIN`] times longer than
/// the whole range at the other holder's measured rate; and the slave must be the cause: measured
/// [`ENDGAME_MARGIN`] times slower than the other (or not measured yet), or silent for
/// [`ENDGAME_STALL`]. An idle holder not measured yet is tried only when the wait is
/// at least [`ENDGAME_BLIND_AFTER`]. Equal mirrors, or a client short of CPU (8 clients on two
/// cores), never trigger it, so it costs nothing on the wire then.
fn endgame_pick(
    attempts: &HashMap<u64, Attempt>,
    done: &[bool],
    ranges: &[Arc<RangeRequest>],
    holders: &HashMap<u32, Vec<usize>>,
    slaves: &[Slave],
    can_take: impl Fn(u32, usize) -> bool,
    now: Instant,
) -> Option<(usize, usize)> {
    let mut running: HashMap<usize, Vec<&Attempt>> = HashMap::new();
    // A delivered range's loser is still winding down: not a candidate.
    for a in attempts.values().filter(|a| !done[a.range]) {
        running.entry(a.range).or_default().push(a);
    }
    let mut best: Option<(f64, usize, usize)> = None;
    for (&range, tries) in &running {
        let [a] = tries.as_slice() else {
            continue; // already repeated
        };
        let age = now.duration_since(a.started);
        if age < ENDGAME_MIN_AGE {
            continue;
        }
        let job = &ranges[range];
        let got = a.shared.received.load(Ordering::Relaxed).min(job.len);
        let speed = got as f64 / age.as_secs_f64();
        let remaining = if speed > 0.0 {
            (job.len - got) as f64 / speed
        } else {
            f64::INFINITY
        };
        if remaining < ENDGAME_MIN_REMAINING.as_secs_f64() {
            continue;
        }
        // Slow because of its slave (measured slower, or silent for a while), not because this
        // client is short of CPU, which would slow a second copy just as much.
        let own = slaves[a.slave].rate;
        let silent_since = Duration::from_millis(a.shared.last_byte_ms.load(Ordering::Relaxed));
        let stalled = age.saturating_sub(silent_since) >= ENDGAME_STALL;
        for &s in &holders[&job.pack] {
            if s == a.slave || !can_take(job.pack, s) {
                continue;
            }
            let gain = match slaves[s].rate {
                Some(rate) if stalled || own.is_none_or(|r| rate >= r * ENDGAME_MARGIN) => {
                    let elsewhere = job.len as f64 / rate * (slaves[s].in_flight + 1) as f64;
                    remaining / elsewhere.max(1e-6)
                }
                Some(_) => continue,
                // Not measured yet: worth a try only when idle and the wait is long.
                None if slaves[s].in_flight == 0
                    && remaining >= ENDGAME_BLIND_AFTER.as_secs_f64() =>
                {
                    ENDGAME_MARGIN
                }
                None => continue,
            };
            if gain >= ENDGAME_MARGIN && best.is_none_or(|(g, _, _)| gain > g) {
                best = Some((gain, range, s));
            }
        }
    }
    best.map(|(_, range, s)| (range, s))
}

/// Runs `ranges` against the slaves in `located` (whose holder lists follow `packs`).
pub(crate) async fn fetch_all(
    ctx: Arc<FetchContext>,
    ranges: Vec<RangeRequest>,
    packs: &[u32],
    located: LocateResponse,
) -> Result<FetchStats, SyncError> {
    let mut slaves: Vec<Slave> = located
        .slaves
        .into_iter()
        .map(|s| Slave {
            id: s.id,
            url: normalise_url(&s.url),
            in_flight: 0,
            rate: None,
            busy_until: None,
            retry: Retry::new(SLAVE_DOWN_RETRY),
        })
        .collect();
    let (fallback, target) = (located.fallback.map(|f| f as usize), located.target);
    let holders: HashMap<u32, Vec<usize>> = packs
        .iter()
        .zip(located.holders)
        .map(|(&p, h)| {
            let mut seen = HashSet::new();
            (
                p,
                h.into_iter()
                    .map(|s| s as usize)
                    .filter(|s| seen.insert(*s))
                    .collect(),
            )
        })
        .collect();
    let pack_hash =
        |pack: u32| -> Hash { ctx.index.pack(pack).map(|p| p.hash).unwrap_or_default() };
    for r in &ranges {
        if holders.get(&r.pack).is_none_or(|h| h.is_empty()) {
            return Err(SyncError::PackNotLocated {
                pack: r.pack,
                hash: pack_hash(r.pack).short(),
                target,
            });
        }
    }

    let ranges: Vec<Arc<RangeRequest>> = ranges.into_iter().map(Arc::new).collect();
    // Plain bytes of each range already shown on the progress bar (the most any attempt wrote).
    let credited: Arc<Vec<AtomicU64>> =
        Arc::new(ranges.iter().map(|_| AtomicU64::new(0)).collect());
    let concurrency = ctx.concurrency.max(1);
    let per_slave = ctx.per_slave.max(1);
    let mut queue: VecDeque<usize> = (0..ranges.len()).collect();
    let mut done = vec![false; ranges.len()];
    let mut bad: HashSet<(u32, usize)> = HashSet::new();
    let mut down: HashSet<usize> = HashSet::new();
    let mut failures: HashMap<u32, String> = HashMap::new();
    // When each range first found its holders busy.
    let mut busy_since: HashMap<usize, Instant> = HashMap::new();
    let mut stats = FetchStats::default();
    let mut turn = 0usize;
    let mut running = FuturesUnordered::new();
    let mut attempts: HashMap<u64, Attempt> = HashMap::new();
    let mut next_attempt = 0u64;
    let mut tick = tokio::time::interval(ENDGAME_MIN_AGE / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        // Launch what the limits allow, oldest first.
        let mut launch: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        let now = Instant::now();
        while running.len() + launch.len() < concurrency && i < queue.len() {
            if slaves.iter().all(|s| s.in_flight >= per_slave) {
                break;
            }
            let job = &ranges[queue[i]];
            let is_bad = |s: &usize| down.contains(s) || bad.contains(&(job.pack, *s));
            let usable: Vec<usize> = holders[&job.pack]
                .iter()
                .copied()
                .filter(|s| !is_bad(s))
                .collect();
            if usable.is_empty() {
                // Every holder failed. Those that could not be reached are asked again, after a
                // jittered wait, a few times each: the range waits for them as for busy ones.
                let revived: Vec<usize> = holders[&job.pack]
                    .iter()
                    .copied()
                    .filter(|s| {
                        down.contains(s)
                            && !bad.contains(&(job.pack, *s))
                            && slaves[*s].retry.failures() < SLAVE_DOWN_RETRIES
                    })
                    .collect();
                for &s in &revived {
                    let wait = slaves[s].retry.failed();
                    tracing::info!(slave = %slaves[s].id, ?wait, "every holder of a pack is unreachable; asking this one again");
                    down.remove(&s);
                    slaves[s].busy_until = Some(now + wait);
                }
                if !revived.is_empty() {
                    continue;
                }
                return Err(SyncError::PackUnavailable {
                    pack: job.pack,
                    hash: pack_hash(job.pack).short(),
                    tried: holders[&job.pack].len(),
                    last: failures
                        .remove(&job.pack)
                        .unwrap_or_else(|| "every holder is unreachable".into()),
                    bad_slaves: stats.bad_slaves.iter().cloned().collect(),
                });
            }
            // Busy holders get nothing until their Retry-After passed; the range waits for them
            // when no other holder is free.
            let ready: Vec<usize> = usable
                .into_iter()
                .filter(|&s| !slaves[s].busy(now))
                .collect();
            turn = turn.wrapping_add(1);
            let Some(s) = pick_slave(&ready, &slaves, per_slave, turn) else {
                i += 1;
                continue;
            };
            let idx = queue.remove(i).expect("index in range");
            slaves[s].in_flight += 1;
            launch.push((idx, s));
        }
        // Endgame: nothing left to queue, a free slot, and a request far behind its peers.
        if queue.is_empty() && running.len() + launch.len() < concurrency {
            let can_take = |pack: u32, s: usize| {
                !down.contains(&s)
                    && !bad.contains(&(pack, s))
                    && slaves[s].in_flight < per_slave
                    && !slaves[s].busy(now)
            };
            if let Some((idx, s)) = endgame_pick(
                &attempts,
                &done,
                &ranges,
                &holders,
                &slaves,
                can_take,
                Instant::now(),
            ) {
                tracing::info!(
                    slave = %slaves[s].id,
                    pack = ranges[idx].pack,
                    len = ranges[idx].len,
                    "repeating a slow range on a faster holder"
                );
                slaves[s].in_flight += 1;
                stats.duplicate_requests += 1;
                launch.push((idx, s));
            }
        }
        for (idx, s) in launch {
            stats.requests += 1;
            let id = next_attempt;
            next_attempt += 1;
            let attempt = Attempt {
                range: idx,
                slave: s,
                started: Instant::now(),
                shared: Arc::default(),
            };
            let (ctx, job, url) = (ctx.clone(), ranges[idx].clone(), slaves[s].url.clone());
            let (shared, started) = (attempt.shared.clone(), attempt.started);
            let credit = Credit {
                all: credited.clone(),
                range: idx,
            };
            let hash = pack_hash(job.pack);
            attempts.insert(id, attempt);
            running.push(async move {
                let on = Progress {
                    started,
                    shared: &shared,
                    credit,
                };
                let result = fetch_range(&ctx, &job, &hash, &url, on).await;
                // A request told to stop may fail in any way on its way out.
                let result = match result {
                    Err(_) if shared.cancel.is_cancelled() => Err(AttemptError::Cancelled),
                    r => r,
                };
                (id, result)
            });
        }

        // Queued ranges waiting for a busy holder: wake up when the first one may be asked again.
        let now = Instant::now();
        let wake = if queue.is_empty() {
            None
        } else {
            slaves
                .iter()
                .filter_map(|s| s.busy_until)
                .filter(|&t| t > now)
                .min()
        };
        let next = tokio::select! {
            next = running.next(), if !running.is_empty() => next,
            // Wake up now and then to judge the stragglers.
            _ = tick.tick(), if queue.is_empty() && !running.is_empty() => continue,
            () = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => continue,
            else => None,
        };
        let Some((id, result)) = next else { break };
        let a = attempts.remove(&id).expect("attempt tracked");
        let (idx, s) = (a.range, a.slave);
        slaves[s].in_flight -= 1;
        let job = &ranges[idx];
        let other_running = attempts.values().any(|o| o.range == idx);
        match result {
            Ok(got) => {
                slaves[s].observe(job.len, a.started.elapsed().as_secs_f64());
                slaves[s].retry.succeeded();
                if done[idx] {
                    continue; // the other attempt won; this one finished anyway
                }
                done[idx] = true;
                for o in attempts.values().filter(|o| o.range == idx) {
                    o.shared.cancel.cancel();
                }
                stats.bytes_downloaded += job.len;
                stats.bytes_written += got.plain_bytes;
                stats.chunks_downloaded += got.chunks;
                *stats
                    .bytes_by_slave
                    .entry(slaves[s].id.clone())
                    .or_default() += job.len;
            }
            Err(AttemptError::Cancelled) => {}
            Err(AttemptError::Local(e)) => return Err(e),
            Err(AttemptError::SlaveDown(why)) => {
                tracing::warn!(slave = %slaves[s].id, "slave unreachable, not using it again: {why}");
                stats.failed_requests += 1;
                stats.bad_slaves.insert(slaves[s].id.clone());
                down.insert(s);
                failures.insert(job.pack, format!("slave {}: {why}", slaves[s].id));
                if !done[idx] && !other_running {
                    queue.push_front(idx);
                }
            }
            Err(AttemptError::Busy { retry_after }) => {
                let now = Instant::now();
                let since = *busy_since.entry(idx).or_insert(now);
                tracing::debug!(slave = %slaves[s].id, pack = job.pack, ?retry_after, "busy");
                stats.failed_requests += 1;
                // Jittered, so the clients a source turned away do not all return at once.
                slaves[s].busy_until = Some(now + backoff::after(retry_after));
                if now.duration_since(since) >= BUSY_PATIENCE && !done[idx] && !other_running {
                    let hash = pack_hash(job.pack).short();
                    let holding = &holders[&job.pack];
                    if fallback.is_some_and(|f| holding.contains(&f)) {
                        return Err(SyncError::PackReplicating {
                            pack: job.pack,
                            hash,
                            copies: holding.iter().filter(|&&h| Some(h) != fallback).count(),
                            target,
                        });
                    }
                    return Err(SyncError::PackUnavailable {
                        pack: job.pack,
                        hash,
                        tried: holding.len(),
                        last: format!(
                            "slave {}: busy for {} s",
                            slaves[s].id,
                            BUSY_PATIENCE.as_secs()
                        ),
                        bad_slaves: stats.bad_slaves.iter().cloned().collect(),
                    });
                }
                if !done[idx] && !other_running {
                    queue.push_front(idx);
                }
            }
            Err(AttemptError::Slave(why)) => {
                tracing::warn!(
                    slave = %slaves[s].id,
                    pack = job.pack,
                    start = job.start,
                    len = job.len,
                    "range failed, trying another holder: {why}"
                );
                stats.failed_requests += 1;
                stats.bad_slaves.insert(slaves[s].id.clone());
                bad.insert((job.pack, s));
                failures.insert(job.pack, format!("slave {}: {why}", slaves[s].id));
                if !done[idx] && !other_running {
                    queue.push_front(idx);
                }
            }
        }
    }
    if !queue.is_empty() || done.iter().any(|d| !d) {
        return Err(SyncError::Internal(format!(
            "{} ranges left unscheduled",
            done.iter().filter(|d| !**d).count()
        )));
    }
    Ok(stats)
}

/// Shows a range's plain bytes on the progress bar once, however many attempts write them.
struct Credit {
    all: Arc<Vec<AtomicU64>>,
    range: usize,
}

impl Credit {
    /// This attempt has now written `total` plain bytes of its range.
    fn update(&self, total: u64, bar: &Meter) {
        let before = self.all[self.range].fetch_max(total, Ordering::Relaxed);
        if total > before {
            bar.inc(total - before);
        }
    }
}

/// What one attempt reports while it runs, and how it learns it lost.
struct Progress<'a> {
    started: Instant,
    shared: &'a AttemptShared,
    credit: Credit,
}

/// One range that was verified and written.
struct RangeDone {
    chunks: u64,
    plain_bytes: u64,
}

/// The wait a busy answer asks for: its `Retry-After` in seconds (1 s when absent or an HTTP
/// date), at most [`MAX_RETRY_AFTER`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .clamp(Duration::from_millis(100), MAX_RETRY_AFTER)
}

/// Deadline for a whole range request: generous, but bounded (a slave trickling one byte every
/// few seconds defeats the stall timeout, not this).
fn range_deadline(len: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_secs(len / (64 << 10))
}

/// Whole chunks are handed to a blocking thread for verification and writing once this many
/// stored bytes of them have arrived (or the body ends).
const DECODE_BATCH: usize = 1 << 20;

async fn fetch_range(
    ctx: &Arc<FetchContext>,
    job: &Arc<RangeRequest>,
    pack: &Hash,
    slave_url: &str,
    on: Progress<'_>,
) -> Result<RangeDone, AttemptError> {
    let slave_err = AttemptError::Slave;
    let end = job.start + job.len - 1;
    let request = ctx
        .http
        .blob(slave_url, pack)
        .map_err(|e| slave_err(e.to_string()))?
        .header(RANGE, format!("bytes={}-{end}", job.start))
        .timeout(range_deadline(job.len))
        .send();
    let sent = tokio::select! {
        sent = request => sent,
        () = on.shared.cancel.cancelled() => return Err(AttemptError::Cancelled),
    };
    let mut resp = sent.map_err(|e| {
        if e.is_connect() {
            AttemptError::SlaveDown(describe(&e))
        } else {
            slave_err(describe(&e))
        }
    })?;
    let status = resp.status();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(AttemptError::Busy {
            retry_after: retry_after(resp.headers()),
        });
    }
    let whole = ctx.index.pack(job.pack).is_some_and(|p| p.size == job.len) && job.start == 0;
    if !(status == StatusCode::PARTIAL_CONTENT || (status == StatusCode::OK && whole)) {
        return Err(slave_err(format!(
            "HTTP {status} for bytes {}-{end}",
            job.start
        )));
    }
    if resp.content_length().is_some_and(|n| n != job.len) {
        return Err(slave_err(format!(
            "Content-Length {} for a range of {} bytes",
            resp.content_length().unwrap_or_default(),
            job.len
        )));
    }

    // Stream the body: every run of whole chunks that has arrived goes to a blocking thread
    // (verify, then write) while the next bytes arrive. One batch is decoded at a time per
    // request, so a request holds about two batches of memory, not the whole range.
    let chunk_end = |k: usize| {
        let c = &ctx.index.chunks[job.chunks[k] as usize];
        c.offset + u64::from(c.stored_len)
    };
    // Two buffers alternate: one fills from the network while the other is decoded. Each is
    // allocated once per request at its full size (a batch plus one largest chunk).
    let new_buf = || Vec::with_capacity(DECODE_BATCH + (256 << 10));
    let mut buf: Vec<u8> = new_buf();
    let mut spare: Option<Vec<u8>> = None;
    let mut buf_start = job.start;
    let mut received = 0u64;
    let mut next = 0usize;
    let mut done = RangeDone {
        chunks: 0,
        plain_bytes: 0,
    };
    type Decoded = (Result<RangeDone, AttemptError>, Vec<u8>);
    let mut decoding: Option<tokio::task::JoinHandle<Decoded>> = None;
    let streamed: Result<(), AttemptError> = async {
        loop {
            let piece = tokio::select! {
                piece = resp.chunk() => piece.map_err(|e| slave_err(describe(&e)))?,
                () = on.shared.cancel.cancelled() => return Err(AttemptError::Cancelled),
            };
            let finished = piece.is_none();
            if let Some(piece) = piece {
                received += piece.len() as u64;
                on.shared.received.store(received, Ordering::Relaxed);
                on.shared
                    .last_byte_ms
                    .store(on.started.elapsed().as_millis() as u64, Ordering::Relaxed);
                if received > job.len {
                    return Err(slave_err(format!(
                        "body longer than the {} bytes asked for",
                        job.len
                    )));
                }
                buf.extend_from_slice(&piece);
            }
            let available = buf_start + buf.len() as u64;
            let mut upto = next;
            while upto < job.chunks.len() && chunk_end(upto) <= available {
                upto += 1;
            }
            let ready = if upto > next {
                chunk_end(upto - 1) - buf_start
            } else {
                0
            };
            if upto > next
                && (ready as usize >= DECODE_BATCH || finished || upto == job.chunks.len())
            {
                let mut rest = spare.take().unwrap_or_else(new_buf);
                rest.clear();
                rest.extend_from_slice(&buf[ready as usize..]);
                buf.truncate(ready as usize);
                let batch = std::mem::replace(&mut buf, rest);
                if let Some(prev) = decoding.take() {
                    let (placed, returned) = prev
                        .await
                        .map_err(|e| AttemptError::Local(SyncError::join(e)))?;
                    spare = Some(returned);
                    done.add(placed?);
                    on.credit.update(done.plain_bytes, &ctx.progress);
                }
                let (c, j, from, to, at) = (ctx.clone(), job.clone(), next, upto, buf_start);
                decoding = Some(tokio::task::spawn_blocking(move || {
                    let placed = place_chunks(&c, &j.chunks[from..to], at, &batch);
                    (placed, batch)
                }));
                buf_start += ready;
                next = upto;
            }
            if finished {
                return Ok(());
            }
        }
    }
    .await;
    // However the body ended (complete, failed, or another holder won), the batch being
    // written finishes first: no write to a temp file outlives its request.
    if let Some(prev) = decoding.take() {
        let (last, _) = prev
            .await
            .map_err(|e| AttemptError::Local(SyncError::join(e)))?;
        if streamed.is_ok() {
            done.add(last?);
            on.credit.update(done.plain_bytes, &ctx.progress);
        }
    }
    streamed?;
    if received != job.len || next != job.chunks.len() {
        return Err(slave_err(format!(
            "short body: {received} of {} bytes",
            job.len
        )));
    }
    Ok(done)
}

impl RangeDone {
    fn add(&mut self, other: RangeDone) {
        self.chunks += other.chunks;
        self.plain_bytes += other.plain_bytes;
    }
}

/// Verifies every chunk of `chunks` (whose stored bytes lie in `body`, which starts at pack
/// offset `body_start`) and writes it to its targets. CPU-bound.
fn place_chunks(
    ctx: &FetchContext,
    chunks: &[u32],
    body_start: u64,
    body: &[u8],
) -> Result<RangeDone, AttemptError> {
    let mut writer = TargetWriter::new(&ctx.staging);
    let mut done = RangeDone {
        chunks: 0,
        plain_bytes: 0,
    };
    let mut scratch = Vec::new();
    for &ci in chunks {
        let c = &ctx.index.chunks[ci as usize];
        let at = (c.offset - body_start) as usize;
        let stored = &body[at..at + c.stored_len as usize];
        let plain = decode_chunk_into(c.codec, stored, c.len, &c.hash, &mut scratch)
            .map_err(|e| AttemptError::Slave(e.to_string()))?;
        let targets = ctx.targets.get(&ci).unwrap_or(&[]);
        writer.write(targets, plain).map_err(AttemptError::Local)?;
        done.plain_bytes += plain.len() as u64 * targets.len() as u64;
        done.chunks += 1;
    }
    writer.start_writeback();
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slaves(in_flight: &[usize]) -> Vec<Slave> {
        in_flight
            .iter()
            .enumerate()
            .map(|(i, &n)| Slave {
                id: format!("s{i}"),
                url: String::new(),
                in_flight: n,
                rate: None,
                busy_until: None,
                retry: Retry::new(SLAVE_DOWN_RETRY),
            })
            .collect()
    }

    #[test]
    fn picks_least_loaded_holder_and_rotates_ties() {
        let s = slaves(&[0, 0, 0]);
        let picks: Vec<_> = (0..3)
            .map(|t| pick_slave(&[0, 1, 2], &s, 4, t).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2]);
        let s = slaves(&[2, 1, 3]);
        assert_eq!(pick_slave(&[0, 1, 2], &s, 4, 0), Some(1));
        assert_eq!(pick_slave(&[0, 2], &s, 4, 0), Some(0));
        let s = slaves(&[4, 4]);
        assert_eq!(pick_slave(&[0, 1], &s, 4, 0), None);
    }

    #[test]
    fn a_measured_slow_slave_gets_work_only_when_the_fast_one_is_busy() {
        let mut s = slaves(&[0, 0]);
        s[0].observe(1 << 20, 1.0); // 1 MiB/s
        s[1].observe(100 << 20, 1.0); // 100 MiB/s
        for turn in 0..4 {
            assert_eq!(pick_slave(&[0, 1], &s, 4, turn), Some(1));
        }
        s[1].in_flight = 3;
        assert_eq!(
            pick_slave(&[0, 1], &s, 4, 0),
            Some(1),
            "4 queued at 100x still wins"
        );
        s[1].in_flight = 4;
        assert_eq!(
            pick_slave(&[0, 1], &s, 4, 0),
            Some(0),
            "the fast one is full"
        );
        // A slave not measured yet is tried as if it were as fast as the fastest.
        let mut s = slaves(&[0, 0]);
        s[0].observe(50 << 20, 1.0);
        s[0].in_flight = 1;
        assert_eq!(pick_slave(&[0, 1], &s, 4, 0), Some(1));
    }

    #[test]
    fn a_busy_holder_is_skipped_until_its_retry_after() {
        let mut s = slaves(&[0, 0]);
        let now = Instant::now();
        s[0].busy_until = Some(now + Duration::from_secs(1));
        assert!(s[0].busy(now) && !s[1].busy(now));
        assert!(!s[0].busy(now + Duration::from_secs(2)));
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(reqwest::header::RETRY_AFTER, "5".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(5));
        h.insert(reqwest::header::RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), MAX_RETRY_AFTER);
        h.insert(reqwest::header::RETRY_AFTER, "0".parse().unwrap());
        assert_eq!(retry_after(&h), Duration::from_millis(100));
    }

    fn range(pack: u32, len: u64) -> Arc<RangeRequest> {
        Arc::new(RangeRequest {
            pack,
            start: 0,
            len,
            chunks: vec![],
        })
    }

    /// An attempt `age` old that received `received` bytes, the last of them just now.
    fn attempt(range: usize, slave: usize, age: Duration, received: u64, now: Instant) -> Attempt {
        let shared = AttemptShared::default();
        shared.received.store(received, Ordering::Relaxed);
        if received > 0 {
            shared
                .last_byte_ms
                .store(age.as_millis() as u64, Ordering::Relaxed);
        }
        Attempt {
            range,
            slave,
            started: now - age,
            shared: Arc::new(shared),
        }
    }

    #[test]
    fn the_endgame_repeats_only_a_range_far_behind_a_faster_holder() {
        let now = Instant::now();
        let ranges = vec![range(0, 8 << 20), range(0, 8 << 20)];
        let mut done = vec![false; 2];
        let holders = HashMap::from([(0u32, vec![0usize, 1])]);
        let mut s = slaves(&[1, 0]);
        s[1].observe(8 << 20, 0.1); // 80 MiB/s
        let all = |_: u32, _: usize| true;
        let sec = Duration::from_secs(1);
        // 1 MiB of 8 in a second on slave 0; slave 1 would take 0.1 s for all of it.
        let slow = HashMap::from([(0u64, attempt(0, 0, sec, 1 << 20, now))]);
        assert_eq!(
            endgame_pick(&slow, &done, &ranges, &holders, &s, all, now),
            Some((0, 1))
        );
        // A stalled request (nothing received) is repeated too.
        let stalled = HashMap::from([(0u64, attempt(0, 0, sec, 0, now))]);
        assert_eq!(
            endgame_pick(&stalled, &done, &ranges, &holders, &s, all, now),
            Some((0, 1))
        );
        // Nearly done at a fair speed: not worth a second copy.
        let fine = HashMap::from([(0u64, attempt(0, 0, sec / 2, 7 << 20, now))]);
        assert_eq!(
            endgame_pick(&fine, &done, &ranges, &holders, &s, all, now),
            None
        );
        // Too young to judge, already repeated, the other holder bad or full: no.
        let young = HashMap::from([(0u64, attempt(0, 0, Duration::from_millis(50), 0, now))]);
        assert_eq!(
            endgame_pick(&young, &done, &ranges, &holders, &s, all, now),
            None
        );
        let twice = HashMap::from([
            (0u64, attempt(0, 0, sec, 0, now)),
            (1u64, attempt(0, 1, sec, 0, now)),
        ]);
        assert_eq!(
            endgame_pick(&twice, &done, &ranges, &holders, &s, all, now),
            None
        );
        let none_usable = |_: u32, s: usize| s != 1;
        assert_eq!(
            endgame_pick(&stalled, &done, &ranges, &holders, &s, none_usable, now),
            None
        );
        s[1].in_flight = 4;
        assert_eq!(
            endgame_pick(
                &stalled,
                &done,
                &ranges,
                &holders,
                &s,
                |_, i| s[i].in_flight < 4,
                now
            ),
            None,
            "the faster holder is full"
        );
        // Both slaves measured alike and bytes still flowing: the client is what is slow (short
        // of CPU); a second copy would crawl as well.
        let mut alike = slaves(&[1, 0]);
        alike[0].observe(10 << 20, 1.0);
        alike[1].observe(12 << 20, 1.0);
        let crawling = HashMap::from([(0u64, attempt(0, 0, 2 * sec, 1 << 20, now))]);
        assert_eq!(
            endgame_pick(&crawling, &done, &ranges, &holders, &alike, all, now),
            None
        );
        // ... but silent for over a second, it is stalled.
        crawling[&0]
            .shared
            .last_byte_ms
            .store(500, Ordering::Relaxed);
        assert_eq!(
            endgame_pick(&crawling, &done, &ranges, &holders, &alike, all, now),
            Some((0, 1))
        );
        // A slave measured far slower than the other is repeated while it still sends.
        alike[0].rate = Some(f64::from(1u32 << 20));
        crawling[&0]
            .shared
            .last_byte_ms
            .store(2000, Ordering::Relaxed);
        assert_eq!(
            endgame_pick(&crawling, &done, &ranges, &holders, &alike, all, now),
            Some((0, 1))
        );
        // Delivered already (by the other copy): the loser winding down is left alone.
        done[0] = true;
        assert_eq!(
            endgame_pick(&stalled, &done, &ranges, &holders, &s, all, now),
            None
        );
        done[0] = false;
        // A holder never measured is tried only when idle and the wait is long.
        let mut s = slaves(&[1, 0]);
        assert_eq!(
            endgame_pick(&stalled, &done, &ranges, &holders, &s, all, now),
            Some((0, 1))
        );
        let half_second_left = HashMap::from([(0u64, attempt(0, 0, sec, 4 << 20, now))]);
        assert_eq!(
            endgame_pick(&half_second_left, &done, &ranges, &holders, &s, all, now),
            None,
            "4 of 8 MiB in 1 s: 1 s left"
        );
        s[1].in_flight = 1;
        assert_eq!(
            endgame_pick(&stalled, &done, &ranges, &holders, &s, all, now),
            None
        );
    }
}
