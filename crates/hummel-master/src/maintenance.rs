//! The master's maintenance thread: the repack pass (when `repack_level` is set,
//! `crate::repack`), then the garbage collection (`crate::gc`); and [`Upkeep`], the component
//! that holds their state.
//!
//! [`Master::start_maintenance`] runs after every build, once when the background task starts,
//! and every [`Master::gc_period`]. It starts the thread if none runs, or asks the running one
//! for one more round. Both passes write or delete files of the store, so they never overlap:
//! one thread runs them, and each pass holds [`Maintenance::lock`] (tests call them directly).

use std::sync::Mutex;
use std::time::Duration;

use crate::gc::Collector;
use crate::lock;
use crate::master::Master;
use crate::repack::Repacker;

/// Whether the thread exists, and whether another round was asked for while it ran.
#[derive(Debug, Default)]
struct LoopState {
    thread: bool,
    again: bool,
}

/// The background upkeep: the maintenance thread's control, the repack's progress and the
/// collection's counters. Each has its own locks; a pass holds [`Maintenance::lock`] for its
/// whole run but never a lock a request reads under across a database commit.
pub(crate) struct Upkeep {
    pub repacker: Repacker,
    pub maintenance: Maintenance,
    pub collector: Collector,
}

impl Default for Upkeep {
    fn default() -> Self {
        Upkeep {
            repacker: Repacker::default(),
            maintenance: Maintenance::default(),
            collector: Collector::new(),
        }
    }
}

/// The maintenance thread's control.
#[derive(Debug, Default)]
pub(crate) struct Maintenance {
    state: Mutex<LoopState>,
    /// Held by a repack or collection pass for its whole run.
    pub lock: Mutex<()>,
}

impl Master {
    /// Starts a maintenance round on its own thread; if one is running, it runs once more after
    /// it. Never blocks on the round.
    pub fn start_maintenance(&self) {
        if self.stopping() {
            return;
        }
        let maintenance = &self.inner.upkeep.maintenance;
        {
            let mut state = lock(&maintenance.state);
            if state.thread {
                state.again = true;
                return;
            }
            state.thread = true;
        }
        let master = self.clone();
        let spawned = std::thread::Builder::new()
            .name("hummel-maintenance".into())
            .spawn(move || master.maintenance_loop());
        if let Err(e) = spawned {
            lock(&maintenance.state).thread = false;
            tracing::error!(error = %e, "could not start the maintenance thread");
        }
    }

    fn maintenance_loop(&self) {
        let level = self.inner.config.repack_level;
        loop {
            // A shutdown lets a pass under way finish (a repack stops at its next chunk) and
            // starts none.
            if level != 0 && !self.stopping() {
                self.repack_pass(level);
            }
            if !self.stopping() {
                self.gc_pass();
            }
            let mut state = lock(&self.inner.upkeep.maintenance.state);
            if state.again {
                state.again = false;
            } else {
                state.thread = false;
                return;
            }
        }
    }

    /// A maintenance round runs (or is about to).
    pub(crate) fn maintenance_running(&self) -> bool {
        lock(&self.inner.upkeep.maintenance.state).thread
    }

    /// How often the background task starts a round: a quarter of the grace period, between
    /// 1 s and 10 min, so that garbage is collected soon after its grace ends.
    pub(crate) fn gc_period(&self) -> Duration {
        (self.inner.config.gc_grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(600))
    }
}

#[cfg(test)]
impl Master {
    /// No round runs and none is queued.
    pub(crate) fn maintenance_idle(&self) -> bool {
        !self.maintenance_running()
    }
}
