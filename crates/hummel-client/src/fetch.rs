//! The multi-source download engine: [`fetch_all`] runs the plan's [`RangeRequest`]s against
//! the slaves the master located, several slaves at once.
//!
//! Scheduling: at most `concurrency` requests in flight in total and [`PER_SLAVE_LIMIT`] per
//! slave; each request goes to the holder of its pack with the fewest requests in flight (ties
//! rotate), so every mirror holding a pack serves the client at the same time.
//!
//! Verification: a response must be `206` and exactly the requested length (the body read stops
//! at the cap). As the body streams in, each run of whole chunks goes to `spawn_blocking`, where
//! every chunk passes [`decode_chunk`] (bounded output, BLAKE3 id) before its plain bytes are
//! written, with `write_at`, to every temp file offset that needs it. An HTTP error, a timeout, a short or long body or a bad chunk marks that slave bad
//! for that pack and the range goes to the next holder; when no holder is left, the sync fails
//! with [`SyncError::PackUnavailable`]. A local write error fails the sync at once.
//!
//! Memory: a request holds the batch being decoded and the bytes arriving behind it, about
//! 2 × [`DECODE_BATCH`] (1 MiB) plus one chunk, not its whole range (up to 16 MiB); network,
//! decompression and disk writes overlap.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use indicatif::ProgressBar;
use reqwest::StatusCode;
use reqwest::header::RANGE;

use hummel_core::codec::decode_chunk;
use hummel_core::{Hash, Index};
use hummel_proto::api::{LocateResponse, blob_path};

use crate::SyncError;
use crate::assemble::TargetWriter;
use crate::http::{HttpClient, describe, normalise_url};
use crate::plan::{RangeRequest, Target};

/// Most requests in flight to one slave.
pub const PER_SLAVE_LIMIT: usize = 4;

/// Everything a range request needs, shared by all of them.
pub(crate) struct FetchContext {
    pub(crate) http: HttpClient,
    pub(crate) index: Arc<Index>,
    pub(crate) targets: Arc<BTreeMap<u32, Vec<Target>>>,
    pub(crate) temp_paths: Arc<Vec<PathBuf>>,
    pub(crate) concurrency: usize,
    pub(crate) per_slave: usize,
    pub(crate) progress: ProgressBar,
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
    /// Requests sent (including failed ones).
    pub(crate) requests: u64,
    /// Requests that failed.
    pub(crate) failed_requests: u64,
    /// Slaves that served at least one range.
    pub(crate) slaves_used: BTreeSet<String>,
    /// Slaves that failed or served bad data.
    pub(crate) bad_slaves: BTreeSet<String>,
}

/// Why one attempt failed.
enum AttemptError {
    /// The slave cannot be reached at all: skip it for every pack.
    SlaveDown(String),
    /// The slave's fault: try another holder.
    Slave(String),
    /// Ours (cannot write a temp file): stop.
    Local(SyncError),
}

/// One slave as the engine sees it.
struct Slave {
    id: String,
    url: String,
    in_flight: usize,
}

/// Among `holders` not marked bad and below the per-slave limit, the one with the fewest
/// requests in flight; ties go round-robin from `turn`.
fn pick_slave(holders: &[usize], slaves: &[Slave], limit: usize, turn: usize) -> Option<usize> {
    let n = holders.len();
    (0..n)
        .map(|k| holders[(k + turn) % n])
        .filter(|&s| slaves[s].in_flight < limit)
        .min_by_key(|&s| slaves[s].in_flight)
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
        })
        .collect();
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
            });
        }
    }

    let ranges: Vec<Arc<RangeRequest>> = ranges.into_iter().map(Arc::new).collect();
    let concurrency = ctx.concurrency.max(1);
    let per_slave = ctx.per_slave.max(1);
    let mut queue: VecDeque<usize> = (0..ranges.len()).collect();
    let mut bad: HashSet<(u32, usize)> = HashSet::new();
    let mut down: HashSet<usize> = HashSet::new();
    let mut failures: HashMap<u32, String> = HashMap::new();
    let mut stats = FetchStats::default();
    let mut turn = 0usize;
    let mut running = FuturesUnordered::new();

    loop {
        // Launch what the limits allow, oldest first.
        let mut i = 0;
        while running.len() < concurrency && i < queue.len() {
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
                return Err(SyncError::PackUnavailable {
                    pack: job.pack,
                    hash: pack_hash(job.pack).short(),
                    tried: holders[&job.pack].len(),
                    last: failures
                        .remove(&job.pack)
                        .unwrap_or_else(|| "every holder is unreachable".into()),
                });
            }
            turn = turn.wrapping_add(1);
            let Some(s) = pick_slave(&usable, &slaves, per_slave, turn) else {
                i += 1;
                continue;
            };
            let idx = queue.remove(i).expect("index in range");
            slaves[s].in_flight += 1;
            stats.requests += 1;
            let (ctx, job, url) = (ctx.clone(), ranges[idx].clone(), slaves[s].url.clone());
            let hash = pack_hash(job.pack);
            running.push(async move {
                let result = fetch_range(&ctx, &job, &hash, &url).await;
                (idx, s, result)
            });
        }

        let Some((idx, s, result)) = running.next().await else {
            break;
        };
        slaves[s].in_flight -= 1;
        let job = &ranges[idx];
        match result {
            Ok(done) => {
                stats.bytes_downloaded += job.len;
                stats.bytes_written += done.plain_bytes;
                stats.chunks_downloaded += done.chunks;
                stats.slaves_used.insert(slaves[s].id.clone());
            }
            Err(AttemptError::Local(e)) => return Err(e),
            Err(AttemptError::SlaveDown(why)) => {
                tracing::warn!(slave = %slaves[s].id, "slave unreachable, not using it again: {why}");
                stats.failed_requests += 1;
                stats.bad_slaves.insert(slaves[s].id.clone());
                down.insert(s);
                failures.insert(job.pack, format!("slave {}: {why}", slaves[s].id));
                queue.push_front(idx);
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
                queue.push_front(idx);
            }
        }
    }
    if !queue.is_empty() {
        return Err(SyncError::Internal(format!(
            "{} ranges left unscheduled",
            queue.len()
        )));
    }
    Ok(stats)
}

/// One range that was verified and written.
struct RangeDone {
    chunks: u64,
    plain_bytes: u64,
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
) -> Result<RangeDone, AttemptError> {
    let slave_err = AttemptError::Slave;
    let url = reqwest::Url::parse(&format!("{slave_url}{}", blob_path(pack)))
        .map_err(|e| slave_err(format!("bad URL: {e}")))?;
    let end = job.start + job.len - 1;
    let mut resp = ctx
        .http
        .get(url)
        .header(RANGE, format!("bytes={}-{end}", job.start))
        .timeout(range_deadline(job.len))
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                AttemptError::SlaveDown(describe(&e))
            } else {
                slave_err(describe(&e))
            }
        })?;
    let status = resp.status();
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
    let mut buf: Vec<u8> = Vec::with_capacity(DECODE_BATCH + (256 << 10));
    let mut buf_start = job.start;
    let mut received = 0u64;
    let mut next = 0usize;
    let mut done = RangeDone {
        chunks: 0,
        plain_bytes: 0,
    };
    let mut decoding: Option<tokio::task::JoinHandle<Result<RangeDone, AttemptError>>> = None;
    loop {
        let piece = resp.chunk().await.map_err(|e| slave_err(describe(&e)))?;
        let finished = piece.is_none();
        if let Some(piece) = piece {
            received += piece.len() as u64;
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
        if upto > next && (ready as usize >= DECODE_BATCH || finished || upto == job.chunks.len()) {
            let rest = buf.split_off(ready as usize);
            let batch = std::mem::replace(&mut buf, rest);
            if let Some(prev) = decoding.take() {
                done.add(
                    prev.await
                        .map_err(|e| AttemptError::Local(SyncError::join(e)))??,
                );
            }
            let (c, j, from, to, at) = (ctx.clone(), job.clone(), next, upto, buf_start);
            decoding = Some(tokio::task::spawn_blocking(move || {
                place_chunks(&c, &j.chunks[from..to], at, &batch)
            }));
            buf_start += ready;
            next = upto;
        }
        if finished {
            break;
        }
    }
    if let Some(prev) = decoding.take() {
        done.add(
            prev.await
                .map_err(|e| AttemptError::Local(SyncError::join(e)))??,
        );
    }
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
    let mut writer = TargetWriter::new(&ctx.temp_paths);
    let mut done = RangeDone {
        chunks: 0,
        plain_bytes: 0,
    };
    for &ci in chunks {
        let c = &ctx.index.chunks[ci as usize];
        let at = (c.offset - body_start) as usize;
        let stored = &body[at..at + c.stored_len as usize];
        let plain = decode_chunk(c.codec, stored, c.len, &c.hash)
            .map_err(|e| AttemptError::Slave(e.to_string()))?;
        let targets = ctx.targets.get(&ci).map(Vec::as_slice).unwrap_or(&[]);
        writer.write(targets, &plain).map_err(AttemptError::Local)?;
        let n = plain.len() as u64 * targets.len() as u64;
        ctx.progress.inc(n);
        done.plain_bytes += n;
        done.chunks += 1;
    }
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
}
