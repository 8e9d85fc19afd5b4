//! [`Events`]: news pushed to the programs that wait for it, at `GET /api/v1/events` as
//! server-sent events (`hummel sync --watch`), and at `GET /slave/events` (slave token) for
//! slaves.
//!
//! A publication moves two watch channels, one after the other:
//! - `published`, at once: the master's own background tasks and the slaves follow it, so a
//!   slave asks for its new assignments at once instead of at its next heartbeat;
//! - `announced`, once every pack of the revision has a live copy on a slave (or the master's
//!   embedded store), or [`ANNOUNCE_BOUND`] after publication, whichever comes first. That is
//!   what subscribers see: a watching client arrives when the packs are there, and never waits
//!   long for a slow replication, because the master serves what no slave holds yet.
//!
//! Subscribers are bounded ([`MAX_SUBSCRIBERS`] clients and, apart, [`MAX_SLAVE_SUBSCRIBERS`]
//! slaves at once, 503 beyond), each stream ends after [`STREAM_LIFETIME`] (the client
//! reconnects), and a comment line every [`KEEP_ALIVE`] keeps idle proxies from cutting it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::Master;

/// Longest a publication waits for its packs to have a live copy before subscribers hear of
/// it anyway (the master serves packs no slave holds yet).
pub const ANNOUNCE_BOUND: Duration = Duration::from_secs(1);
/// How often a publication checks whether its packs have live copies yet.
const ANNOUNCE_POLL: Duration = Duration::from_millis(100);
/// Subscribers at once; more get 503 and retry with backoff.
pub const MAX_SUBSCRIBERS: usize = 256;
/// Slaves' subscribers at once (`GET /slave/events`), counted apart so that a fleet of slaves
/// never takes the places of watching clients; more get 503.
pub const MAX_SLAVE_SUBSCRIBERS: usize = 1024;
/// A stream ends after this long; the client connects again (and so re-checks its token).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(600);
/// A comment line this often on an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The master's event channels (see the module documentation).
pub(crate) struct Events {
    /// The number of the newest revision published (0: none), at once.
    published: watch::Sender<u64>,
    /// The same, once its packs can be fetched from slaves (or [`ANNOUNCE_BOUND`] passed).
    announced: watch::Sender<u64>,
    subscribers: Arc<Semaphore>,
    slave_subscribers: Arc<Semaphore>,
    /// Cancelled when the master shuts down: every stream ends.
    closed: CancellationToken,
}

impl Events {
    /// Channels starting at `current` (the revision the master opened with).
    pub(crate) fn new(current: u64) -> Events {
        Events {
            published: watch::Sender::new(current),
            announced: watch::Sender::new(current),
            subscribers: Arc::new(Semaphore::new(MAX_SUBSCRIBERS)),
            slave_subscribers: Arc::new(Semaphore::new(MAX_SLAVE_SUBSCRIBERS)),
            closed: CancellationToken::new(),
        }
    }

    /// Ends every stream (the master is shutting down) and refuses new ones.
    pub(crate) fn close(&self) {
        self.subscribers.close();
        self.slave_subscribers.close();
        self.closed.cancel();
    }

    /// Revision `number` is current.
    pub(crate) fn published(&self, number: u64) {
        self.published.send_replace(number);
    }

    /// A place among the subscribers, if one is free, following the announcements (clients).
    pub(crate) fn subscribe(&self) -> Option<(OwnedSemaphorePermit, watch::Receiver<u64>)> {
        let permit = self.subscribers.clone().try_acquire_owned().ok()?;
        Some((permit, self.announced.subscribe()))
    }

    /// A place among the subscribers, if one is free, following the publications themselves
    /// (slaves: told at once, so that they fetch the packs before clients come for them).
    pub(crate) fn subscribe_published(
        &self,
    ) -> Option<(OwnedSemaphorePermit, watch::Receiver<u64>)> {
        let permit = self.slave_subscribers.clone().try_acquire_owned().ok()?;
        Some((permit, self.published.subscribe()))
    }

    /// The publications as they happen, for the master's own followers (the dashboard's
    /// live snapshots, `crate::dashboard`); takes no subscriber's place.
    pub(crate) fn follow_published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Subscribers connected now (clients).
    pub(crate) fn subscribers(&self) -> usize {
        MAX_SUBSCRIBERS - self.subscribers.available_permits()
    }

    /// Slaves following the publications now.
    pub(crate) fn slave_subscribers(&self) -> usize {
        MAX_SLAVE_SUBSCRIBERS - self.slave_subscribers.available_permits()
    }
}

/// Moves `announced` after `published`: for each publication, once its packs have live copies
/// or [`ANNOUNCE_BOUND`] passed. Runs until `shutdown`.
pub(crate) async fn announce(master: Master, shutdown: impl std::future::Future<Output = ()>) {
    let mut published = master.inner.events.published.subscribe();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            changed = published.changed() => if changed.is_err() { return },
        }
        let number = *published.borrow_and_update();
        let deadline = tokio::time::Instant::now() + ANNOUNCE_BOUND;
        loop {
            let m = master.clone();
            let fetchable = tokio::task::spawn_blocking(move || m.current_fetchable())
                .await
                .unwrap_or(true);
            if fetchable || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(ANNOUNCE_POLL) => {}
            }
        }
        tracing::debug!(revision = number, "announcing the revision to subscribers");
        master.inner.events.announced.send_replace(number);
    }
}

/// The stream of one subscriber: the current revision at once, then each one announced (or,
/// for a slave, published), until
/// [`STREAM_LIFETIME`] passed.
pub(crate) fn stream(
    master: Master,
    permit: OwnedSemaphorePermit,
    mut announced: watch::Receiver<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let closed = master.inner.events.closed.clone();
    announced.mark_changed();
    let events = futures::stream::unfold(
        (master, announced, permit),
        move |(master, mut announced, permit)| {
            let closed = closed.clone();
            async move {
                tokio::select! {
                    changed = announced.changed() => changed.ok()?,
                    () = tokio::time::sleep_until(deadline) => return None,
                    () = closed.cancelled() => return None,
                }
                announced.borrow_and_update();
                let info = master.revision_info();
                let mut event = Event::default().event("revision");
                if let Some(n) = info.revision {
                    event = event.id(n.to_string());
                }
                let event = event
                    .json_data(&info)
                    .unwrap_or_else(|_| Event::default().comment("unencodable revision"));
                Some((Ok(event), (master, announced, permit)))
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
