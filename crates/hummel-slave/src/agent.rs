//! The slave's background worker, [`run`]: one task that announces, heartbeats, replicates,
//! drops and scrubs, with its state visible in [`crate::SlaveMetrics`].
//!
//! The loop does one unit of work at a time, in this order:
//! 1. announce the complete hashlist on start, when the master does not know us or refused our
//!    changes, after more than [`MAX_HASHLIST_CHANGES`] unreported changes, or after each change
//!    if the master takes no changes (one from before incremental hashlists).
//! 2. heartbeat every `heartbeat_interval_ms` of the last directive, reporting corrupt packs and
//!    the changes to the hashlist since the version the master acknowledged ([`HashlistLog`]);
//!    with changes unreported, at once. While fetches are running, hashlists and changes are
//!    coalesced to one per [`ANNOUNCE_COALESCE`]; when the queue runs empty they go out at once,
//!    so new replicas become visible to clients quickly. Failures back off with full jitter
//!    ([`MASTER_RETRY`]: ceilings from 200 ms doubling to 5 s), so slaves that lost a master
//!    together do not all return the moment it is back; a refused token waits 15-30 s
//!    ([`REFUSED_RETRY`]), and is fatal only before the master has ever accepted us.
//! 3. start a scrub when one is due (a blocking task that can be cancelled between packs).
//! 4. start fetches up to `replication_concurrency`.
//!
//! Beside the loop, [`follow_news`] reads the master's publications (`GET /slave/events`) and
//! wakes the loop for each new one: the heartbeat goes out at once and brings the new
//! revision's assignments, so slaves fetch its packs before clients, who hear of it only once
//! its packs have copies (or a second later), come for them. A master without the stream, or a
//! broken one, only costs that head start: heartbeats carry on at their interval.
//!
//! Then it sleeps until a fetch or the scrub ends or the next deadline. Every directive's
//! assignments go to the [`ReplicationQueue`]; its drops are deleted (after a running scrub
//! ends, so the scrub never mistakes a dropped pack for a missing one). Completed fetches,
//! deletions and packs quarantined by scrub are recorded in the [`HashlistLog`]; when nothing
//! is changing the store, the log must count what the store holds, or the complete hashlist
//! goes out again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use hummel_core::Hash;
use hummel_proto::api::{
    Heartbeat, MAX_HASHLIST_CHANGES, RevisionInfo, SlaveDirective, SlaveHashlist,
};
use hummel_store::{BlobStore, StoreError};

use hummel_net::sse::EventParser;
use hummel_net::{Backoff, HttpClient, MasterApi, NetError, Retry};

use crate::hashlist::HashlistLog;
use crate::master::{MasterClient, MasterError};
use crate::metrics::WorkerState;
use crate::replicate::{Fetcher, Offer, ReplicationError, ReplicationQueue};
use crate::{Slave, SlaveError};

/// At most one hashlist, or heartbeat sent early for hashlist changes, per this while fetches
/// are running.
const ANNOUNCE_COALESCE: Duration = Duration::from_secs(1);
/// Retry delays after a failed announce or heartbeat.
const MASTER_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
/// Waits before opening the master's event stream again, by failures in a row.
const NEWS_RECONNECT: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// Retry delay after the master refused the slave token (the operator may fix the master).
const REFUSED_RETRY: Backoff = Backoff::new(Duration::from_secs(30), Duration::from_secs(30))
    .with_floor(Duration::from_secs(15));
/// Heartbeat interval until the master says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(3000);
/// Sleep when nothing at all is scheduled.
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Runs the announce / heartbeat / replication loop until `shutdown` completes.
///
/// Returns an error only if the HTTP client cannot be built or the master refuses the slave
/// token (401/403) before it ever accepted this slave; every other failure is logged and
/// retried. In-flight fetches are aborted on shutdown (their temp files are deleted).
pub async fn run(
    slave: Slave,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SlaveError> {
    let cfg = slave.config();
    let setup = |e: NetError| SlaveError::HttpClient(e.to_string());
    let http = HttpClient::new(&cfg.tls)
        .and_then(|h| h.with_token(Some(&cfg.slave_token), "slave"))
        .map_err(setup)?;
    let api = MasterApi::new(http.clone(), &cfg.master_url).map_err(setup)?;
    let news = Arc::new(Notify::new());
    let stop_news = CancellationToken::new();
    tokio::spawn(follow_news(api.clone(), news.clone(), stop_news.clone()));
    let _stop_news = stop_news.drop_guard();
    let mut agent = Agent::new(slave.clone(), http, api, news);
    tracing::info!(
        slave = %slave.id(),
        key = %slave.key().public().fingerprint(),
        master = %slave.config().master_url,
        url = %slave.advertise_url(),
        packs = slave.store().count(),
        used = slave.store().used(),
        "slave worker starting"
    );
    let result = tokio::select! {
        r = agent.run() => r,
        () = shutdown => Ok(()),
    };
    drop(agent);
    slave.metrics().set_state(WorkerState::Done);
    tracing::info!(slave = %slave.id(), "slave worker stopped");
    result
}

/// Follows the master's publications until `stop` (see the module documentation): notifies
/// `news` for each revision published after the first answer seen (the first revision ever
/// published included).
async fn follow_news(api: MasterApi, news: Arc<Notify>, stop: CancellationToken) {
    // The current revision as last heard (`Some(None)`: the master had none yet).
    let mut last: Option<Option<u64>> = None;
    let mut failures = 0u32;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            r = read_news(&api, &news, &mut last, &mut failures) => r,
        };
        if let Err(e) = outcome {
            failures = failures.saturating_add(1);
            tracing::debug!(error = %e, "the master's event stream failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(NEWS_RECONNECT.delay(failures)) => {}
        }
    }
}

/// One event stream, until it ends (the master ends each after a while) or fails.
async fn read_news(
    api: &MasterApi,
    news: &Notify,
    last: &mut Option<Option<u64>>,
    failures: &mut u32,
) -> Result<(), String> {
    let mut resp = api.slave_events().await.map_err(|e| e.to_string())?;
    let mut parser = EventParser::default();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        *failures = 0;
        for event in parser.feed(&chunk)? {
            if event.name != "revision" {
                continue;
            }
            let info: RevisionInfo = serde_json::from_str(&event.data)
                .map_err(|e| format!("bad revision event: {e}"))?;
            if last.is_some_and(|l| l != info.revision) {
                news.notify_one();
            }
            *last = Some(info.revision);
        }
    }
    Ok(())
}

/// A scrub running on the blocking pool.
struct Scrub {
    handle: JoinHandle<Result<Vec<Hash>, StoreError>>,
    cancel: Arc<AtomicBool>,
}

/// Bookkeeping of what the master knows of our hashlist.
struct Announce {
    /// The master needs the complete hashlist.
    full: bool,
    /// When the master last accepted the hashlist or changes to it.
    last: Option<Instant>,
    /// No announce, nor early heartbeat, before this (after a failure).
    retry_at: Option<Instant>,
    /// Failures since the master last answered.
    retry: Retry,
    /// The master knows us (since the last `unknown_slave`).
    registered: bool,
    /// The master has accepted a hashlist at least once.
    ever: bool,
}

enum Event {
    Fetched(Result<(tokio::task::Id, Result<u64, ReplicationError>), JoinError>),
    Scrubbed(Result<Result<Vec<Hash>, StoreError>, JoinError>),
    /// The master published a revision.
    News,
    Tick,
}

struct Agent {
    slave: Slave,
    master: MasterClient,
    fetcher: Fetcher,
    queue: ReplicationQueue,
    fetches: JoinSet<Result<u64, ReplicationError>>,
    fetch_ids: HashMap<tokio::task::Id, Hash>,
    announce: Announce,
    /// The hashlist the master acknowledged and the changes since.
    hashlist: HashlistLog,
    /// The last request to the master failed (to log transitions, not every retry).
    master_failing: bool,
    heartbeat_every: Duration,
    next_heartbeat: Option<Instant>,
    /// Corrupt packs found by scrub and not yet accepted in a heartbeat.
    unreported_corrupt: Vec<Hash>,
    scrub: Option<Scrub>,
    next_scrub: Option<Instant>,
    /// Drops that arrived while a scrub was running (each directive repeats them until a
    /// heartbeat reports them gone, hence a set).
    deferred_drops: HashSet<Hash>,
    /// Notified by [`follow_news`] for each publication.
    news: Arc<Notify>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(s) = &self.scrub {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// The heartbeat interval a directive asks for, within sane bounds.
fn heartbeat_interval(ms: u64) -> Duration {
    if ms == 0 {
        DEFAULT_HEARTBEAT
    } else {
        Duration::from_millis(ms.clamp(20, 600_000))
    }
}

/// Verifies every pack held, stopping early when `cancel` is set. Packs removed meanwhile are
/// skipped, not reported.
fn scrub_store(store: &BlobStore, cancel: &AtomicBool) -> Result<Vec<Hash>, StoreError> {
    let mut bad = Vec::new();
    for (hash, _) in store.list() {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        if store.contains(&hash) && !store.verify(&hash)? {
            bad.push(hash);
        }
    }
    Ok(bad)
}

/// When a hashlist report (complete, or changes in a heartbeat) is due: at once, but not before
/// `retry_at` and, while fetches are running (`busy`), not within [`ANNOUNCE_COALESCE`] of the
/// last one accepted.
fn report_at(
    now: Instant,
    retry_at: Option<Instant>,
    last: Option<Instant>,
    busy: bool,
) -> Instant {
    let mut t = now;
    if let Some(r) = retry_at {
        t = t.max(r);
    }
    if busy && let Some(last) = last {
        t = t.max(last + ANNOUNCE_COALESCE);
    }
    t
}

fn short_list(packs: &[Hash]) -> String {
    let mut s: Vec<String> = packs.iter().take(8).map(Hash::short).collect();
    if packs.len() > 8 {
        s.push(format!("and {} more", packs.len() - 8));
    }
    s.join(", ")
}

impl Agent {
    fn new(slave: Slave, http: HttpClient, api: MasterApi, news: Arc<Notify>) -> Agent {
        let cfg = slave.config();
        let master = MasterClient::new(api, slave.id(), slave.key().clone());
        let next_scrub = cfg.scrub_interval.map(|d| Instant::now() + d);
        Agent {
            fetcher: Fetcher {
                http,
                slave: slave.clone(),
            },
            slave,
            master,
            queue: ReplicationQueue::default(),
            fetches: JoinSet::new(),
            fetch_ids: HashMap::new(),
            announce: Announce {
                full: true,
                last: None,
                retry_at: None,
                retry: Retry::new(MASTER_RETRY),
                registered: false,
                ever: false,
            },
            hashlist: HashlistLog::default(),
            master_failing: false,
            heartbeat_every: DEFAULT_HEARTBEAT,
            next_heartbeat: None,
            unreported_corrupt: Vec::new(),
            scrub: None,
            next_scrub,
            deferred_drops: HashSet::new(),
            news,
        }
    }

    async fn run(&mut self) -> Result<(), SlaveError> {
        loop {
            let now = Instant::now();
            if self.announce_at(now).is_some_and(|t| now >= t) {
                self.announce().await?;
                continue;
            }
            if self.heartbeat_at(now).is_some_and(|t| now >= t) {
                self.heartbeat().await;
                continue;
            }
            if self.scrub.is_none() && self.next_scrub.is_some_and(|t| now >= t) {
                self.start_scrub();
            }
            self.start_fetches();
            self.publish_state();

            let wake = self.next_wake(now);
            let fetches = &mut self.fetches;
            let scrub = &mut self.scrub;
            let news = &self.news;
            let event = tokio::select! {
                Some(done) = fetches.join_next_with_id(), if !fetches.is_empty() => {
                    Event::Fetched(done)
                }
                done = async {
                    match scrub.as_mut() {
                        Some(s) => (&mut s.handle).await,
                        None => std::future::pending().await,
                    }
                }, if scrub.is_some() => Event::Scrubbed(done),
                () = news.notified() => Event::News,
                () = tokio::time::sleep_until(wake) => Event::Tick,
            };
            match event {
                Event::Fetched(done) => self.fetch_done(done),
                Event::Scrubbed(done) => self.scrub_done(done).await,
                Event::News => {
                    // The heartbeat's answer brings the new revision's assignments.
                    tracing::debug!("the master published a revision: heartbeat now");
                    self.next_heartbeat = Some(Instant::now());
                }
                Event::Tick => {}
            }
        }
    }

    /// When the next announce is due, if one is wanted.
    fn announce_at(&self, now: Instant) -> Option<Instant> {
        let a = &self.announce;
        a.full
            .then(|| report_at(now, a.retry_at, a.last, !self.queue.is_idle()))
    }

    /// When the next heartbeat is due: on its interval, or earlier for unreported hashlist
    /// changes. `None` before the master knows us.
    fn heartbeat_at(&self, now: Instant) -> Option<Instant> {
        let a = &self.announce;
        if !a.registered {
            return None;
        }
        let changes = (!a.full && self.hashlist.has_changes())
            .then(|| report_at(now, a.retry_at, a.last, !self.queue.is_idle()));
        [self.next_heartbeat, changes].into_iter().flatten().min()
    }

    /// The master needs the complete hashlist: no more changes until it has it.
    fn announce_all(&mut self) {
        self.announce.full = true;
        self.hashlist.forget();
    }

    /// Records that `pack` is now held or not, for the next heartbeat (or a complete hashlist).
    fn record(&mut self, pack: Hash, held: bool) {
        let tracking = self.hashlist.is_tracking();
        if !self.hashlist.record(pack, held) {
            if tracking {
                tracing::info!(
                    limit = MAX_HASHLIST_CHANGES,
                    "too many unreported hashlist changes; announcing the complete hashlist"
                );
            }
            self.announce.full = true;
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + IDLE_WAKE;
        let candidates = [
            self.announce_at(now),
            self.heartbeat_at(now),
            self.next_scrub.filter(|_| self.scrub.is_none()),
        ];
        for t in candidates.into_iter().flatten() {
            wake = wake.min(t);
        }
        wake
    }

    fn publish_state(&self) {
        let m = self.slave.metrics();
        m.replicating
            .store(self.queue.replicating(), Ordering::Relaxed);
        let state = if self.master_failing {
            WorkerState::Throttled
        } else if !self.announce.ever {
            WorkerState::Starting
        } else if self.queue.in_flight() > 0 {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        };
        m.set_state(state);
    }

    /// The master answered: mark it reachable.
    fn master_ok(&mut self) {
        let m = self.slave.metrics();
        m.set_master_reachable(true);
        m.touch_contact();
        if self.master_failing {
            tracing::info!(master = %self.slave.config().master_url, "master reachable again");
        }
        self.master_failing = false;
    }

    /// A request to the master failed: log it on the transition, quietly afterwards.
    fn master_failed(&mut self, what: &str, e: &MasterError) {
        let reachable = !matches!(e, MasterError::Unreachable { .. });
        self.slave.metrics().set_master_reachable(reachable);
        let first = !self.master_failing;
        self.master_failing = true;
        match e {
            MasterError::Refused { .. } if first => {
                tracing::error!(error = %e, "{what} refused; check the slave token on both sides");
            }
            MasterError::ReadToken { .. } if first => {
                tracing::error!(error = %e, "{what} refused; check the read token on both sides");
            }
            MasterError::Identity { .. } if first => {
                tracing::error!(error = %e, "{what} refused: the master knows this slave id by \
                    another key; the admin must remove the slave from the master first");
            }
            _ if first => tracing::warn!(error = %e, "{what} failed; will retry"),
            _ => tracing::debug!(error = %e, "{what} failed again"),
        }
    }

    async fn announce(&mut self) -> Result<(), SlaveError> {
        let store = self.slave.store();
        let list = store.list();
        self.hashlist.restart(list.iter().map(|(h, _)| *h));
        let body = SlaveHashlist {
            slave_id: self.slave.id(),
            url: self.slave.advertise_url(),
            quota: self.slave.config().quota,
            used: list.iter().map(|(_, s)| *s).sum(),
            packs: list.into_iter().map(|(h, _)| h).collect(),
            read_token_digest: self
                .slave
                .config()
                .read_token
                .as_deref()
                .map(hummel_proto::auth::read_token_digest),
        };
        match self.master.hashlist(&body).await {
            Ok(directive) => {
                let now = Instant::now();
                self.master_ok();
                self.slave
                    .metrics()
                    .announces
                    .fetch_add(1, Ordering::Relaxed);
                self.hashlist.announced(directive.hashlist);
                let a = &mut self.announce;
                a.full = false;
                a.last = Some(now);
                a.retry_at = None;
                a.retry.succeeded();
                a.ever = true;
                if !a.registered {
                    a.registered = true;
                    self.next_heartbeat =
                        Some(now + heartbeat_interval(directive.heartbeat_interval_ms));
                }
                tracing::info!(
                    packs = body.packs.len(),
                    used = body.used,
                    assigned = directive.assign.len(),
                    drop = directive.drop.len(),
                    epoch = directive.hashlist.map(|v| v.epoch),
                    "announced hashlist"
                );
                if directive.hashlist.is_none() {
                    tracing::debug!("the master takes no hashlist changes; announcing after each");
                }
                self.apply(directive).await;
                Ok(())
            }
            Err(MasterError::Refused { status, url }) if !self.announce.ever => {
                self.slave.metrics().set_master_reachable(true);
                Err(SlaveError::TokenRefused { status, url })
            }
            Err(MasterError::ReadToken { url, message }) if !self.announce.ever => {
                self.slave.metrics().set_master_reachable(true);
                Err(SlaveError::ReadTokenRefused { url, message })
            }
            Err(MasterError::Identity { url, message }) if !self.announce.ever => {
                self.slave.metrics().set_master_reachable(true);
                Err(SlaveError::IdentityRefused { url, message })
            }
            Err(e) => {
                self.master_failed("announce", &e);
                self.back_off(&e);
                Ok(())
            }
        }
    }

    /// Delays the next announce and early heartbeat after a failed request.
    fn back_off(&mut self, e: &MasterError) {
        let a = &mut self.announce;
        let delay = if matches!(
            e,
            MasterError::Refused { .. }
                | MasterError::ReadToken { .. }
                | MasterError::Identity { .. }
        ) {
            REFUSED_RETRY.delay(0)
        } else {
            a.retry.failed()
        };
        a.retry_at = Some(Instant::now() + delay);
    }

    async fn heartbeat(&mut self) {
        let store = self.slave.store().clone();
        // With no fetch or scrub changing the store, the log must count what it holds.
        if self.fetches.is_empty()
            && self.scrub.is_none()
            && self.hashlist.is_tracking()
            && self.hashlist.len() != store.count()
        {
            tracing::warn!(
                recorded = self.hashlist.len(),
                stored = store.count(),
                "recorded hashlist disagrees with the store; announcing the complete hashlist"
            );
            self.announce_all();
        }
        let changes = if self.announce.full {
            None
        } else {
            let tracking = self.hashlist.is_tracking();
            let changes = self.hashlist.changes();
            if tracking && changes.is_none() {
                // The acknowledged version cannot grow (the master named the end of the
                // sequence): start again from the complete hashlist.
                self.announce_all();
            }
            changes
        };
        let packs = match &changes {
            Some(_) => self.hashlist.len(),
            None => store.count(),
        };
        let body = Heartbeat {
            slave_id: self.slave.id(),
            used: store.used(),
            packs: packs as u64,
            replicating: self.queue.replicating(),
            // The rest go with the next heartbeats (the master bounds a heartbeat's body).
            corrupt: self
                .unreported_corrupt
                .iter()
                .take(hummel_proto::api::MAX_CORRUPT_PER_HEARTBEAT)
                .copied()
                .collect(),
            hashlist: changes,
            bytes_served: Some(
                store
                    .metrics
                    .bytes_served
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        };
        match self.master.heartbeat(&body).await {
            Ok(directive) => {
                let now = Instant::now();
                self.master_ok();
                let m = self.slave.metrics();
                m.heartbeats.fetch_add(1, Ordering::Relaxed);
                self.unreported_corrupt.drain(..body.corrupt.len());
                if !body.corrupt.is_empty() {
                    tracing::info!(corrupt = body.corrupt.len(), "reported corrupt packs");
                }
                let a = &mut self.announce;
                a.retry_at = None;
                a.retry.succeeded();
                if let Some(sent) = &body.hashlist {
                    if self.hashlist.answered(sent, directive.hashlist) {
                        if sent.seq != sent.base {
                            m.hashlist_changes.fetch_add(1, Ordering::Relaxed);
                            self.announce.last = Some(now);
                            tracing::debug!(
                                added = sent.added.len(),
                                removed = sent.removed.len(),
                                seq = sent.seq,
                                "hashlist changes accepted"
                            );
                        }
                    } else {
                        m.hashlist_refusals.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            proposed = sent.seq,
                            answered = ?directive.hashlist,
                            "master did not apply our hashlist changes; announcing the complete hashlist"
                        );
                        self.announce_all();
                    }
                }
                self.apply(directive).await;
            }
            Err(MasterError::UnknownSlave { .. }) => {
                self.master_ok();
                tracing::info!("master does not know this slave; announcing the full hashlist");
                self.announce_all();
                let a = &mut self.announce;
                a.registered = false;
                a.retry_at = None;
                a.last = None;
            }
            Err(e) => {
                self.master_failed("heartbeat", &e);
                self.back_off(&e);
            }
        }
        if self.announce.registered {
            self.next_heartbeat = Some(Instant::now() + self.heartbeat_every);
        }
    }

    /// Takes a directive: interval, drops, assignments.
    async fn apply(&mut self, d: SlaveDirective) {
        self.heartbeat_every = heartbeat_interval(d.heartbeat_interval_ms);
        if !d.drop.is_empty() {
            for h in &d.drop {
                self.queue.cancel(h);
            }
            if self.scrub.is_some() {
                self.deferred_drops.extend(d.drop);
            } else {
                self.drop_packs(d.drop).await;
            }
        }
        let store = self.slave.store().clone();
        let quota = self.slave.config().quota;
        let now = std::time::Instant::now();
        let mut queued = 0usize;
        for a in d.assign {
            let (pack, size) = (a.pack, a.size);
            let held = store.contains(&pack);
            match self.queue.offer(a, held, store.used(), quota, now) {
                Offer::Queued => queued += 1,
                Offer::OverQuota { first } => {
                    if first {
                        self.slave
                            .metrics()
                            .quota_skips
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(pack = %pack.short(), size, used = store.used(), quota,
                            "skipping assigned pack: it would overflow the quota");
                    }
                }
                Offer::NoSources => {
                    tracing::warn!(pack = %pack.short(), "assigned pack has no sources");
                }
                Offer::Known | Offer::RetryLater => {}
            }
        }
        if queued > 0 {
            tracing::info!(
                queued,
                replicating = self.queue.replicating(),
                "assignments queued"
            );
        }
    }

    async fn drop_packs(&mut self, packs: Vec<Hash>) {
        let store = self.slave.store().clone();
        let res = tokio::task::spawn_blocking(move || {
            // A pack counts as removed once the store no longer lists it, even if deleting its
            // file then failed.
            let mut removed = Vec::new();
            for h in packs {
                let held = store.contains(&h);
                if let Err(e) = store.remove(&h) {
                    tracing::warn!(pack = %h.short(), error = %e, "could not delete pack");
                }
                if held && !store.contains(&h) {
                    removed.push(h);
                }
            }
            removed
        })
        .await;
        match res {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::info!(removed = removed.len(), "deleted packs the master dropped");
                }
                for h in removed {
                    self.record(h, false);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting dropped packs failed");
                self.announce_all();
            }
        }
    }

    fn start_fetches(&mut self) {
        let quota = self.slave.config().quota;
        let max = self.slave.config().replication_concurrency;
        let mut over = Vec::new();
        while let Some(a) = self
            .queue
            .next(self.slave.store().used(), quota, max, &mut over)
        {
            let pack = a.pack;
            let fetcher = self.fetcher.clone();
            let handle = self.fetches.spawn(async move { fetcher.fetch(&a).await });
            self.fetch_ids.insert(handle.id(), pack);
        }
        for (a, first) in over {
            if first {
                self.slave
                    .metrics()
                    .quota_skips
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pack = %a.pack.short(), size = a.size, quota,
                    "skipping assigned pack: it would overflow the quota");
            }
        }
    }

    fn fetch_done(
        &mut self,
        done: Result<(tokio::task::Id, Result<u64, ReplicationError>), JoinError>,
    ) {
        let now = std::time::Instant::now();
        let m = self.slave.metrics();
        let (id, result) = match done {
            Ok((id, r)) => (id, r.map_err(|e| e.to_string())),
            Err(e) => (e.id(), Err(format!("fetch task failed: {e}"))),
        };
        let Some(pack) = self.fetch_ids.remove(&id) else {
            return;
        };
        match result {
            Ok(size) => {
                self.queue.finish(&pack, true, now);
                m.replicated_packs.fetch_add(1, Ordering::Relaxed);
                m.replicated_bytes.fetch_add(size, Ordering::Relaxed);
                self.record(pack, true);
            }
            Err(e) => {
                self.queue.finish(&pack, false, now);
                m.replication_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pack = %pack.short(), error = %e, "replication failed; will retry when assigned again");
            }
        }
    }

    fn start_scrub(&mut self) {
        let cancel = Arc::new(AtomicBool::new(false));
        let store = self.slave.store().clone();
        let flag = cancel.clone();
        let handle = tokio::task::spawn_blocking(move || scrub_store(&store, &flag));
        tracing::info!(packs = self.slave.store().count(), "scrub started");
        self.scrub = Some(Scrub { handle, cancel });
        self.next_scrub = None;
    }

    async fn scrub_done(&mut self, done: Result<Result<Vec<Hash>, StoreError>, JoinError>) {
        self.scrub = None;
        self.next_scrub = self
            .slave
            .config()
            .scrub_interval
            .map(|d| Instant::now() + d);
        let m = self.slave.metrics();
        match done {
            Ok(Ok(bad)) => {
                m.scrubs.fetch_add(1, Ordering::Relaxed);
                if bad.is_empty() {
                    tracing::info!(
                        packs = self.slave.store().count(),
                        "scrub complete: every pack verified"
                    );
                } else {
                    m.corrupt_packs
                        .fetch_add(bad.len() as u64, Ordering::Relaxed);
                    tracing::warn!(corrupt = bad.len(), packs = %short_list(&bad),
                        "scrub found corrupt packs; quarantined, will report and re-fetch");
                    for h in &bad {
                        self.record(*h, false);
                    }
                    self.unreported_corrupt.extend(bad);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "scrub failed"),
            Err(e) => tracing::warn!(error = %e, "scrub task failed"),
        }
        let drops = std::mem::take(&mut self.deferred_drops);
        if !drops.is_empty() {
            self.drop_packs(drops.into_iter().collect()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_interval_is_bounded() {
        assert_eq!(heartbeat_interval(0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1), Duration::from_millis(20));
        assert_eq!(heartbeat_interval(3000), Duration::from_secs(3));
        assert_eq!(heartbeat_interval(u64::MAX), Duration::from_secs(600));
    }

    #[test]
    fn reports_are_coalesced_while_busy_and_wait_after_failures() {
        let now = Instant::now();
        let last = now - Duration::from_millis(200);
        assert_eq!(report_at(now, None, None, true), now);
        assert_eq!(report_at(now, None, Some(last), false), now);
        assert_eq!(
            report_at(now, None, Some(last), true),
            last + ANNOUNCE_COALESCE
        );
        let retry = now + Duration::from_secs(2);
        assert_eq!(report_at(now, Some(retry), Some(last), true), retry);
        assert_eq!(report_at(now, Some(last), None, false), now);
    }

    #[test]
    fn scrub_skips_removed_and_finds_rot() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        store.put(&a, b"a").unwrap();
        store.put(&b, b"b").unwrap();
        std::fs::write(store.path(&b), b"x").unwrap();
        assert_eq!(
            scrub_store(&store, &AtomicBool::new(false)).unwrap(),
            vec![b]
        );
        assert!(
            scrub_store(&store, &AtomicBool::new(true))
                .unwrap()
                .is_empty()
        );
        assert_eq!(short_list(&[a]), a.short());
    }
}
