//! Replication: which assigned packs to fetch next ([`ReplicationQueue`], plain data) and how a
//! pack is fetched ([`Fetcher`]).
//!
//! A fetch streams `GET {source}/blob/{hash}` into a temp file inside the store, refuses bodies
//! larger than the assigned size, and publishes the pack only through
//! [`hummel_store::BlobStore::commit`], which hashes, fsyncs and renames. Sources are tried in order; a
//! pack that fails from all of them waits a growing, jittered delay ([`RETRY`]) before it is
//! taken again from a later directive. The queue reserves the size of every pack in flight against the quota, so
//! `used + in flight` never exceeds it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;

use hummel_core::Hash;
use hummel_net::Backoff;
use hummel_proto::api::Assignment;
use hummel_store::StoreError;

/// First delay before a pack that failed from every source is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Delays before a pack that failed from every source is offered again: full jitter under
/// ceilings from [`RETRY_FIRST`] doubling to 60 s, so slaves that failed on the same source
/// together do not return to it together.
const RETRY: Backoff = Backoff::new(RETRY_FIRST, Duration::from_secs(60));

/// What [`ReplicationQueue::offer`] did with an assignment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Will be fetched.
    Queued,
    /// Already held, queued or in flight; nothing to do.
    Known,
    /// Failed recently; a later directive will offer it again.
    RetryLater,
    /// Would overflow the quota. `first` is true the first time for this pack (log it once).
    OverQuota { first: bool },
    /// No sources to fetch it from.
    NoSources,
}

/// Assigned packs not yet held: queued, in flight, or cooling down after a failure.
#[derive(Debug, Default)]
pub(crate) struct ReplicationQueue {
    queue: VecDeque<Assignment>,
    queued: HashSet<Hash>,
    in_flight: HashMap<Hash, u64>,
    failures: HashMap<Hash, (u32, Instant)>,
    quota_logged: HashSet<Hash>,
}

impl ReplicationQueue {
    /// Offers an assignment. `held` says whether the store has it; `used` is the store's bytes.
    pub(crate) fn offer(
        &mut self,
        a: Assignment,
        held: bool,
        used: u64,
        quota: Option<u64>,
        now: Instant,
    ) -> Offer {
        if held || self.queued.contains(&a.pack) || self.in_flight.contains_key(&a.pack) {
            return Offer::Known;
        }
        if a.sources.is_empty() {
            return Offer::NoSources;
        }
        if let Some((_, until)) = self.failures.get(&a.pack)
            && now < *until
        {
            return Offer::RetryLater;
        }
        if !self.fits(a.size, used, quota) {
            return Offer::OverQuota {
                first: self.quota_logged.insert(a.pack),
            };
        }
        self.queued.insert(a.pack);
        self.queue.push_back(a);
        Offer::Queued
    }

    fn reserved(&self) -> u64 {
        self.in_flight.values().sum()
    }

    fn fits(&self, size: u64, used: u64, quota: Option<u64>) -> bool {
        quota.is_none_or(|q| used.saturating_add(self.reserved()).saturating_add(size) <= q)
    }

    /// The next pack to fetch, if fewer than `max_in_flight` are in flight. Queued packs that no
    /// longer fit the quota are skipped and returned in `over_quota` (with whether to log them).
    pub(crate) fn next(
        &mut self,
        used: u64,
        quota: Option<u64>,
        max_in_flight: usize,
        over_quota: &mut Vec<(Assignment, bool)>,
    ) -> Option<Assignment> {
        if self.in_flight.len() >= max_in_flight {
            return None;
        }
        while let Some(a) = self.queue.pop_front() {
            self.queued.remove(&a.pack);
            if !self.fits(a.size, used, quota) {
                let first = self.quota_logged.insert(a.pack);
                over_quota.push((a, first));
                continue;
            }
            self.in_flight.insert(a.pack, a.size);
            return Some(a);
        }
        None
    }

    /// A fetch ended; on failure the pack cools down before it is taken again.
    pub(crate) fn finish(&mut self, pack: &Hash, ok: bool, now: Instant) {
        self.in_flight.remove(pack);
        if ok {
            self.failures.remove(pack);
            self.quota_logged.remove(pack);
        } else {
            let n = self.failures.get(pack).map_or(0, |(n, _)| *n) + 1;
            let delay = RETRY.delay(n - 1);
            self.failures.insert(*pack, (n, now + delay));
        }
    }

    /// Forgets a queued pack (the master dropped it). In-flight fetches finish normally.
    pub(crate) fn cancel(&mut self, pack: &Hash) {
        if self.queued.remove(pack) {
            self.queue.retain(|a| a.pack != *pack);
        }
        self.failures.remove(pack);
    }

    /// Packs being fetched.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Packs being fetched or waiting to be.
    pub(crate) fn replicating(&self) -> u64 {
        (self.in_flight.len() + self.queue.len()) as u64
    }

    /// Nothing queued and nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.queue.is_empty()
    }
}

/// Why fetching a pack from one source failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// No answer or a broken body.
    #[error("request failed: {}", crate::master::why(.0))]
    Http(#[source] reqwest::Error),
    /// The source's URL cannot be used.
    #[error("{0}")]
    BadUrl(String),
    /// A non-200 answer.
    #[error("HTTP {0}")]
    Status(u16),
    /// More bytes than the assigned size.
    #[error("body larger than the assigned {limit} bytes")]
    TooLarge { limit: u64 },
    /// Fewer bytes than the assigned size.
    #[error("body ended after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    /// The body did not hash to the pack's name.
    #[error("content hashes to {actual}, not to the pack's name")]
    Corrupt { actual: Hash },
    /// Local store failure (temp file, write, fsync, rename).
    #[error("local store: {0}")]
    Store(#[source] StoreError),
    /// Local write to the temp file failed.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A blocking task died.
    #[error("blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl SourceError {
    /// True if the source itself is at fault (as opposed to local disk trouble).
    pub(crate) fn is_corrupt(&self) -> bool {
        matches!(self, SourceError::Corrupt { .. })
    }
}

/// A pack could not be fetched from any source.
#[derive(Debug, thiserror::Error)]
#[error("pack {pack}: all {attempts} sources failed; last ({source_url}): {last}")]
pub(crate) struct ReplicationError {
    pub(crate) pack: Hash,
    pub(crate) attempts: usize,
    pub(crate) source_url: String,
    #[source]
    pub(crate) last: SourceError,
}

/// Deletes a temp file when dropped unless disarmed (an aborted or failed fetch).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Fetches packs into the store over the data plane.
#[derive(Clone, Debug)]
pub(crate) struct Fetcher {
    /// The shared client, with the slave token.
    pub(crate) http: hummel_net::HttpClient,
    pub(crate) slave: crate::Slave,
}

impl Fetcher {
    /// Tries each source in order; returns the stored size.
    pub(crate) async fn fetch(&self, a: &Assignment) -> Result<u64, ReplicationError> {
        let mut last = None;
        for source in &a.sources {
            match self.fetch_from(source, a).await {
                Ok(size) => {
                    tracing::info!(pack = %a.pack.short(), size, source = %source, "fetched pack");
                    return Ok(size);
                }
                Err(e) => {
                    let m = self.slave.metrics();
                    m.source_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if e.is_corrupt() {
                        m.corrupt_downloads
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::warn!(pack = %a.pack.short(), source = %source, error = %e,
                        "fetch from source failed");
                    last = Some((source.clone(), e));
                }
            }
        }
        let (source_url, last) = last.unwrap_or((String::new(), SourceError::Status(0)));
        Err(ReplicationError {
            pack: a.pack,
            attempts: a.sources.len(),
            source_url,
            last,
        })
    }

    async fn fetch_from(&self, source: &str, a: &Assignment) -> Result<u64, SourceError> {
        let resp = self
            .http
            .blob(source, &a.pack)
            .map_err(|e| SourceError::BadUrl(e.to_string()))?
            .send()
            .await
            .map_err(|e| SourceError::Http(e.without_url()))?;
        if resp.status() != StatusCode::OK {
            return Err(SourceError::Status(resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > a.size) {
            return Err(SourceError::TooLarge { limit: a.size });
        }
        let store = self.slave.store().clone();
        let temp = tokio::task::spawn_blocking(move || store.temp())
            .await?
            .map_err(SourceError::Store)?;
        let mut guard = TempGuard(Some(temp.path.clone()));
        let write_err = |source| SourceError::Write {
            path: temp.path.clone(),
            source,
        };
        let file = temp.file.try_clone().map_err(write_err)?;
        let mut out = tokio::fs::File::from_std(file);
        let mut got = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| SourceError::Http(e.without_url()))?;
            got += chunk.len() as u64;
            if got > a.size {
                return Err(SourceError::TooLarge { limit: a.size });
            }
            out.write_all(&chunk).await.map_err(write_err)?;
        }
        out.flush().await.map_err(write_err)?;
        drop(out);
        if got < a.size {
            return Err(SourceError::Truncated {
                got,
                expected: a.size,
            });
        }
        // commit() deletes the temp file itself when verification fails.
        guard.0 = None;
        let store = self.slave.store().clone();
        let pack = a.pack;
        match tokio::task::spawn_blocking(move || store.commit(temp, &pack)).await? {
            Ok(size) => Ok(size),
            Err(StoreError::CorruptData { actual, .. }) => Err(SourceError::Corrupt { actual }),
            Err(e) => Err(SourceError::Store(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(tag: &[u8], size: u64) -> Assignment {
        Assignment {
            pack: Hash::of(tag),
            size,
            sources: vec!["http://127.0.0.1:1".into()],
        }
    }

    #[test]
    fn queue_dedupes_and_bounds_concurrency() {
        let now = Instant::now();
        let mut q = ReplicationQueue::default();
        assert_eq!(q.offer(a(b"1", 10), false, 0, None, now), Offer::Queued);
        assert_eq!(q.offer(a(b"1", 10), false, 0, None, now), Offer::Known);
        assert_eq!(q.offer(a(b"2", 10), true, 0, None, now), Offer::Known);
        assert_eq!(q.offer(a(b"3", 10), false, 0, None, now), Offer::Queued);
        let mut no = Vec::new();
        assert_eq!(q.next(0, None, 1, &mut no).unwrap().pack, Hash::of(b"1"));
        assert!(q.next(0, None, 1, &mut no).is_none(), "one at a time");
        assert_eq!(q.offer(a(b"1", 10), false, 0, None, now), Offer::Known);
        assert_eq!(q.replicating(), 2);
        q.finish(&Hash::of(b"1"), true, now);
        assert_eq!(q.next(0, None, 1, &mut no).unwrap().pack, Hash::of(b"3"));
        q.finish(&Hash::of(b"3"), true, now);
        assert!(q.is_idle());
        assert!(no.is_empty());
    }

    #[test]
    fn quota_counts_packs_in_flight_and_logs_once() {
        let now = Instant::now();
        let mut q = ReplicationQueue::default();
        let quota = Some(100);
        assert_eq!(q.offer(a(b"1", 60), false, 0, quota, now), Offer::Queued);
        assert_eq!(q.offer(a(b"2", 30), false, 0, quota, now), Offer::Queued);
        assert_eq!(
            q.offer(a(b"big", 101), false, 0, quota, now),
            Offer::OverQuota { first: true }
        );
        assert_eq!(
            q.offer(a(b"big", 101), false, 0, quota, now),
            Offer::OverQuota { first: false }
        );
        let mut over = Vec::new();
        q.next(10, quota, 4, &mut over).unwrap();
        // used 10 + in flight 60 + 30 = 100: still fits.
        q.next(10, quota, 4, &mut over).unwrap();
        assert_eq!(
            q.offer(a(b"4", 1), false, 10, quota, now),
            Offer::OverQuota { first: true }
        );
        assert!(over.is_empty());
    }

    #[test]
    fn queued_pack_over_quota_at_start_is_skipped() {
        let now = Instant::now();
        let mut q = ReplicationQueue::default();
        assert_eq!(
            q.offer(a(b"1", 60), false, 0, Some(100), now),
            Offer::Queued
        );
        let mut over = Vec::new();
        // Meanwhile the store grew.
        assert!(q.next(50, Some(100), 4, &mut over).is_none());
        assert_eq!(over.len(), 1);
        assert!(over[0].1);
        assert!(q.is_idle());
    }

    #[test]
    fn failed_pack_cools_down() {
        let now = Instant::now();
        let mut q = ReplicationQueue::default();
        q.offer(a(b"1", 1), false, 0, None, now);
        let mut no = Vec::new();
        q.next(0, None, 4, &mut no).unwrap();
        q.finish(&Hash::of(b"1"), false, now);
        assert_eq!(q.offer(a(b"1", 1), false, 0, None, now), Offer::RetryLater);
        let later = now + RETRY_FIRST;
        assert_eq!(q.offer(a(b"1", 1), false, 0, None, later), Offer::Queued);
        q.cancel(&Hash::of(b"1"));
        assert!(q.is_idle());
        let mut none = a(b"5", 1);
        none.sources.clear();
        assert_eq!(q.offer(none, false, 0, None, now), Offer::NoSources);
    }
}
