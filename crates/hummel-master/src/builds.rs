//! [`Builds`]: the builds the master knows ([`BuildRun`]: at most one running, on its own
//! thread), the build epoch and the clean stop's flag.
//!
//! Two locks: the **start lock**, held by whoever must keep builds from starting (a build's
//! start across its database row, the repack's publication, the garbage collection's pass:
//! [`Builds::hold_starts`]), and the **book**, held only for memory (status pages read it while
//! a collection runs). Lock order: start lock, then book; the database is never written under
//! the book.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hummel_proto::api::{BuildState, BuildStatus};

use crate::build::BuildRun;
use crate::lock;

/// The builds, by id.
#[derive(Default)]
pub(crate) struct Builds {
    start: Mutex<()>,
    book: Mutex<BuildBook>,
    /// Incremented whenever a build starts (and on the clean stop): a repack that sees it move
    /// stops and publishes nothing.
    epoch: AtomicU64,
    /// `Master::shut_down` was called: builds and maintenance stop, none starts.
    stopping: AtomicBool,
}

#[derive(Default)]
struct BuildBook {
    runs: BTreeMap<u64, Arc<BuildRun>>,
    running: Option<u64>,
}

/// No build starts while this is held; `running` is the build running when it was taken.
pub(crate) struct StartsHeld<'a> {
    _start: MutexGuard<'a, ()>,
    pub running: Option<u64>,
}

impl Builds {
    /// The builds of the database's rows.
    pub(crate) fn load(rows: &[BuildStatus]) -> Builds {
        let builds = Builds::default();
        {
            let mut book = lock(&builds.book);
            for s in rows {
                book.runs.insert(s.id, Arc::new(BuildRun::from_status(s)));
            }
        }
        builds
    }

    /// Keeps builds from starting until dropped.
    pub(crate) fn hold_starts(&self) -> StartsHeld<'_> {
        let start = lock(&self.start);
        let running = lock(&self.book).running;
        StartsHeld {
            _start: start,
            running,
        }
    }

    /// Records `run` (whose row the caller wrote, holding `starts`) as the running build and
    /// moves the epoch. Cancelled at once if the master is stopping.
    pub(crate) fn begin(&self, _starts: &StartsHeld<'_>, run: Arc<BuildRun>) {
        let mut book = lock(&self.book);
        book.runs.insert(run.id, run.clone());
        book.running = Some(run.id);
        if self.stopping() {
            // Recorded as stopped at once, like one that was running.
            run.cancel();
        }
        // Under the start lock: a repack checks the epoch under it before publishing.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Moves the epoch for a publication that is not a build (a rollback, holding `starts`):
    /// a repack under way stops and publishes nothing.
    pub(crate) fn interrupt(&self, _starts: &StartsHeld<'_>) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Records `run`'s outcome and frees the build slot in one step.
    pub(crate) fn end(&self, run: &BuildRun, result: Result<u64, String>, finished_unix: i64) {
        let mut book = lock(&self.book);
        run.finish(result, finished_unix);
        if book.running == Some(run.id) {
            book.running = None;
        }
    }

    /// The epoch now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Begins the clean stop: no build starts, the running one is cancelled, a repack stops.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let book = lock(&self.book);
        // A repack that sees the epoch move stops and publishes nothing.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(run) = book.running.and_then(|id| book.runs.get(&id)) {
            tracing::info!(build = run.id, "stopping the running build");
            run.cancel();
        }
    }

    /// [`Builds::stop`] was called.
    pub(crate) fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The id of the running build.
    pub(crate) fn running(&self) -> Option<u64> {
        lock(&self.book).running
    }

    /// The status of build `id`, if known.
    pub(crate) fn status(&self, id: u64) -> Option<BuildStatus> {
        lock(&self.book).runs.get(&id).map(|r| r.status())
    }

    /// The most recent build, if any.
    pub(crate) fn latest(&self) -> Option<BuildStatus> {
        lock(&self.book)
            .runs
            .values()
            .next_back()
            .map(|r| r.status())
    }

    /// Number of builds per state.
    pub(crate) fn counts(&self) -> [(BuildState, u64); 3] {
        let book = lock(&self.book);
        let mut counts = [
            (BuildState::Running, 0),
            (BuildState::Succeeded, 0),
            (BuildState::Failed, 0),
        ];
        for run in book.runs.values() {
            let state = run.state();
            for (s, n) in &mut counts {
                if *s == state {
                    *n += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_build_runs_and_the_stop_cancels_it() {
        let builds = Builds::default();
        let held = builds.hold_starts();
        assert_eq!(held.running, None);
        let run = Arc::new(BuildRun::new(1, 10, false));
        let epoch = builds.epoch();
        builds.begin(&held, run.clone());
        drop(held);
        assert_eq!(builds.running(), Some(1));
        assert_eq!(builds.hold_starts().running, Some(1));
        assert!(builds.epoch() > epoch);
        assert_eq!(builds.latest().map(|s| s.id), Some(1));

        builds.stop();
        assert!(builds.stopping());
        assert!(run.check_cancelled().is_err());
        builds.end(&run, Err("stopped".into()), 11);
        assert_eq!(builds.running(), None);
        assert_eq!(builds.status(1).map(|s| s.state), Some(BuildState::Failed));
        assert_eq!(builds.counts()[2], (BuildState::Failed, 1));
    }

    #[test]
    fn a_build_begun_while_stopping_is_cancelled_at_once() {
        let builds = Builds::default();
        builds.stop();
        let run = Arc::new(BuildRun::new(2, 10, false));
        builds.begin(&builds.hold_starts(), run.clone());
        assert!(run.check_cancelled().is_err());
    }
}
