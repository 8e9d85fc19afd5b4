//! `GET /ui/events`: the dashboard's live updates, as server-sent events. Each subscriber gets
//! a `snapshot` event (JSON: the figures, and each live section of the page rendered as on the
//! page) at once, then again whenever it differs from the last one sent, looked at every
//! [`LOOK_EVERY`] (so at most that often), and at least every [`RESEND_EVERY`]. The page's
//! embedded script ([`SCRIPT`]) replaces the sections with them; without it the page is
//! complete as served.
//!
//! Subscribers are bounded ([`MAX_LIVE`] at once, 503 beyond); a stream ends after
//! [`crate::events::STREAM_LIFETIME`] (the browser reconnects, and so re-checks its access)
//! and when the master shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::session::Sessions;
use crate::events::{KEEP_ALIVE, STREAM_LIFETIME};
use crate::master::Master;

/// Live subscribers at once.
pub(crate) const MAX_LIVE: usize = 32;
/// How often a stream looks for changes (and so the most it sends).
pub(crate) const LOOK_EVERY: Duration = Duration::from_millis(500);
/// A snapshot at least this often, changed or not.
pub(crate) const RESEND_EVERY: Duration = Duration::from_secs(5);

/// The page's script: subscribes to `/ui/events` and replaces the live sections.
pub(crate) const SCRIPT: &str = include_str!("live.js");

/// The dashboard's state in the master: sessions and live subscribers.
pub(crate) struct Ui {
    pub sessions: Sessions,
    subscribers: Arc<Semaphore>,
    closed: CancellationToken,
}

impl Default for Ui {
    fn default() -> Ui {
        Ui {
            sessions: Sessions::default(),
            subscribers: Arc::new(Semaphore::new(MAX_LIVE)),
            closed: CancellationToken::new(),
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
    /// Clients listed, and of those, how many are behind the current revision.
    pub clients: u64,
    pub clients_behind: u64,
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

/// The stream of one subscriber (`csrf`: its session's token, for the action forms).
pub(crate) fn stream(
    master: Master,
    permit: OwnedSemaphorePermit,
    csrf: Option<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let deadline = tokio::time::Instant::now() + STREAM_LIFETIME;
    let closed = master.inner.ui.closed.clone();
    struct State {
        master: Master,
        csrf: Option<String>,
        last: Option<(String, Instant)>,
        _permit: OwnedSemaphorePermit,
        first: bool,
    }
    let start = State {
        master,
        csrf,
        last: None,
        _permit: permit,
        first: true,
    };
    let events = futures::stream::unfold(start, move |mut st| {
        let closed = closed.clone();
        async move {
            loop {
                if !st.first {
                    tokio::select! {
                        () = tokio::time::sleep(LOOK_EVERY) => {}
                        () = tokio::time::sleep_until(deadline) => return None,
                        () = closed.cancelled() => return None,
                    }
                }
                st.first = false;
                let (m, csrf) = (st.master.clone(), st.csrf.clone());
                let Ok(json) = tokio::task::spawn_blocking(move || {
                    serde_json::to_string(&super::snapshot(&m, csrf.as_deref())).unwrap_or_default()
                })
                .await
                else {
                    return None;
                };
                let due = st
                    .last
                    .as_ref()
                    .is_none_or(|(text, at)| *text != json || at.elapsed() >= RESEND_EVERY);
                if due {
                    let event = Event::default().event("snapshot").data(json.clone());
                    st.last = Some((json, Instant::now()));
                    return Some((Ok(event), st));
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
