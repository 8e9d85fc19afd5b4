//! `GET /ui/events`: the dashboard's live updates, as server-sent events. Each subscriber gets
//! a `snapshot` event (JSON: the figures, and each live section of the page rendered as on the
//! page) at once, then each one published after. The page's script (`/ui/live.js`,
//! [`super::assets::SCRIPT`]) replaces the sections with them; without it the page is complete
//! as served.
//!
//! # One producer for every subscriber
//! One task ([`produce`]) builds the snapshot for all subscribers and publishes it on a watch
//! channel ([`Feed`]); subscribers only forward what it publishes. It runs while someone
//! subscribes: the first subscriber starts it, and it ends when the last one has left (or the
//! master shuts down). It builds a snapshot
//! - when told that something the page shows changed ([`Master::ui_changed`]: a slave's
//!   announce or heartbeat, a client's report, a drain or a removal, a build starting, a
//!   slave's state turning) or a revision is published (`crate::events`), however often it is
//!   told at most once every [`MIN_GAP`];
//! - every [`MIN_GAP`] while a build runs (its progress);
//! - at least every [`RESEND_EVERY`] (ages, and what tells no one).
//!
//! It publishes a snapshot when it differs from the last one published, and at least every
//! [`RESEND_EVERY`]. A snapshot comes in two forms, built from one look at the master: for a
//! viewer without a session (no action forms), and for one with a session, its forms holding a
//! random placeholder that each subscriber replaces with its own session's CSRF token.
//!
//! Subscribers are bounded ([`MAX_LIVE`] at once, 503 beyond); a stream ends after
//! [`crate::events::STREAM_LIFETIME`] (the browser reconnects, and so re-checks its access)
//! and when the master shuts down.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{FutureExt, Stream};
use serde::Serialize;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::events::{KEEP_ALIVE, STREAM_LIFETIME};
use crate::lock;
use crate::master::Master;

/// Live subscribers at once.
pub(crate) const MAX_LIVE: usize = 32;
/// The producer builds at most one snapshot in this time, however often it is told of changes.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(250);
/// A snapshot at least this often, changed or not.
pub(crate) const RESEND_EVERY: Duration = Duration::from_secs(5);

/// The dashboard's state in the master: sessions, live subscribers and their feed.
pub(crate) struct Ui {
    pub sessions: Sessions,
    subscribers: Arc<Semaphore>,
    closed: CancellationToken,
    feed: Feed,
}

/// The producer's channel (see the module documentation).
struct Feed {
    /// The latest snapshot published (`None`: none since the producer started).
    latest: watch::Sender<Option<Arc<Published>>>,
    /// Something the page shows changed.
    changed: Notify,
    /// Whether the producer runs: changed under this lock, and subscriptions taken under it.
    running: Mutex<bool>,
    /// Snapshots built since the master started.
    built: AtomicU64,
    /// Stands for the viewer's CSRF token in [`Published::session`]: random, so that no text
    /// shown on the page can hold it.
    placeholder: String,
}

/// One snapshot as subscribers forward it, encoded.
pub(crate) struct Published {
    /// For a viewer without a session.
    anonymous: String,
    /// For a viewer with a session, with [`Feed::placeholder`] for its CSRF token.
    session: String,
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            sessions: Sessions::default(),
            subscribers: Arc::new(Semaphore::new(MAX_LIVE)),
            closed: CancellationToken::new(),
            feed: Feed {
                latest: watch::Sender::new(None),
                changed: Notify::new(),
                running: Mutex::new(false),
                built: AtomicU64::new(0),
                placeholder: super::session::random_hex(),
            },
        }
    }
}

impl Ui {
    /// Ends every live stream and refuses new ones (the master is shutting down).
    pub(crate) fn close(&self) {
        self.subscribers.close();
        self.closed.cancel();
    }

    /// A place among the live subscribers, if one is free.
    pub(crate) fn subscribe(&self) -> Option<OwnedSemaphorePermit> {
        self.subscribers.clone().try_acquire_owned().ok()
    }

    /// The feed's snapshots, from the latest one on; starts the producer if none runs.
    fn follow(&self, master: &Master) -> watch::Receiver<Option<Arc<Published>>> {
        let mut running = lock(&self.feed.running);
        let mut follower = self.feed.latest.subscribe();
        follower.mark_changed();
        if !*running && !self.closed.is_cancelled() {
            *running = true;
            tokio::spawn(produce(master.clone()));
        }
        follower
    }

    /// Snapshots built since the master started.
    #[cfg(test)]
    pub(crate) fn snapshots_built(&self) -> u64 {
        self.feed.built.load(Ordering::Relaxed)
    }

    /// The stand-in for a viewer's CSRF token in the snapshots built.
    #[cfg(test)]
    pub(crate) fn placeholder(&self) -> &str {
        &self.feed.placeholder
    }

    /// Whether the producer runs.
    #[cfg(test)]
    pub(crate) fn producing(&self) -> bool {
        *lock(&self.feed.running)
    }
}

impl Master {
    /// Something the dashboard shows changed: the live snapshot is built again soon (at most
    /// every [`MIN_GAP`], and only while someone watches). Cheap; callable from any thread.
    pub(crate) fn ui_changed(&self) {
        self.inner.ui.feed.changed.notify_one();
    }
}

/// One snapshot: figures, and the live sections as HTML (escaped as on the page).
#[derive(Serialize, PartialEq)]
pub(crate) struct Snapshot {
    /// The current revision (absent: none yet).
    pub revision: Option<u64>,
    /// The latest build's id, state and progress.
    pub build: Option<BuildProgress>,
    /// Slaves: id, state and drain.
    pub slaves: Vec<SlaveLine>,
    /// Clients listed, and of those, how many are behind the current revision (pinned ones
    /// apart) and how many are pinned to a revision (`hummel sync --revision N`).
    pub clients: u64,
    pub clients_behind: u64,
    pub clients_pinned: u64,
    /// Section id → its HTML.
    pub sections: Vec<(&'static str, String)>,
}

#[derive(Serialize, PartialEq)]
pub(crate) struct BuildProgress {
    pub id: u64,
    pub state: hummel_proto::api::BuildState,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub revision: Option<u64>,
}

#[derive(Serialize, PartialEq)]
pub(crate) struct SlaveLine {
    pub id: String,
    pub state: hummel_proto::api::SlaveState,
    pub pending: u64,
    pub drain: Option<hummel_proto::api::DrainState>,
    pub egress: Option<u64>,
}

/// Builds one snapshot in both forms; also whether a build runs. Blocking.
fn build(master: &Master) -> (Published, bool) {
    let (anonymous, session) = super::snapshots(master, &master.inner.ui.feed.placeholder);
    let running = anonymous
        .build
        .as_ref()
        .is_some_and(|b| b.state == hummel_proto::api::BuildState::Running);
    let encode = |s: &Snapshot| serde_json::to_string(s).unwrap_or_default();
    let published = Published {
        anonymous: encode(&anonymous),
        session: encode(&session),
    };
    (published, running)
}

/// The producer (see the module documentation): runs until no one follows the feed or the
/// master shuts down.
async fn produce(master: Master) {
    let ui = &master.inner.ui;
    let feed = &ui.feed;
    // A change told before anyone watched is in the first snapshot already.
    let _ = feed.changed.notified().now_or_never();
    let mut published = master.inner.events.follow_published();
    let mut last: Option<(String, Instant)> = None;
    'build: loop {
        let built_at = Instant::now();
        let m = master.clone();
        let Ok((snapshot, build_running)) = tokio::task::spawn_blocking(move || build(&m)).await
        else {
            break;
        };
        feed.built.fetch_add(1, Ordering::Relaxed);
        let due = last
            .as_ref()
            .is_none_or(|(text, at)| *text != snapshot.anonymous || at.elapsed() >= RESEND_EVERY);
        if due {
            last = Some((snapshot.anonymous.clone(), Instant::now()));
            feed.latest.send_replace(Some(Arc::new(snapshot)));
        }
        let resend_at = last.as_ref().map_or(built_at, |(_, at)| *at) + RESEND_EVERY;
        loop {
            tokio::select! {
                () = feed.changed.notified() => break,
                Ok(()) = published.changed() => break,
                () = tokio::time::sleep_until(built_at + MIN_GAP), if build_running => break,
                () = tokio::time::sleep_until(resend_at) => break,
                () = ui.closed.cancelled() => break 'build,
                () = feed.latest.closed() => {
                    // The last subscriber left: stop, unless one came meanwhile.
                    let mut running = lock(&feed.running);
                    if feed.latest.receiver_count() == 0 {
                        *running = false;
                        feed.latest.send_replace(None);
                        return;
                    }
                }
            }
        }
        // However often told: one snapshot per MIN_GAP.
        tokio::select! {
            () = tokio::time::sleep_until(built_at + MIN_GAP) => {}
            () = ui.closed.cancelled() => break,
        }
    }
    *lock(&feed.running) = false;
}

/// The stream of one subscriber (`csrf`: its session's token, for the action forms): forwards
/// the feed's snapshots in its form.
pub(crate) fn stream(
    master: Master,
    permit: OwnedSemaphorePermit,
    csrf: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let deadline = Instant::now() + STREAM_LIFETIME;
    let ui = &master.inner.ui;
    let closed = ui.closed.clone();
    let placeholder = ui.feed.placeholder.clone();
    let follower = ui.follow(&master);
    let events = futures::stream::unfold(
        (follower, csrf, permit),
        move |(mut follower, csrf, permit)| {
            let (closed, placeholder) = (closed.clone(), placeholder.clone());
            async move {
                loop {
                    tokio::select! {
                        changed = follower.changed() => changed.ok()?,
                        () = tokio::time::sleep_until(deadline) => return None,
                        () = closed.cancelled() => return None,
                    }
                    let Some(snapshot) = follower.borrow_and_update().clone() else {
                        continue;
                    };
                    let data = match &csrf {
                        Some(token) => snapshot.session.replace(&placeholder, token),
                        None => snapshot.anonymous.clone(),
                    };
                    let event = Event::default().event("snapshot").data(data);
                    return Some((Ok(event), (follower, csrf, permit)));
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
