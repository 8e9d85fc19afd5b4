//! Crash points for tests: `HUMMEL_FAILPOINTS=name=N[,name=N...]` aborts the process, as a
//! `kill -9` would, the N-th time the named point is reached. Without the variable a check costs
//! one load of an already-initialised `OnceLock`.
//!
//! Points: `rename` (before each rename of a verified temp file into place), `delete` (before
//! each delete of an extra entry), `save-state` (after DEST is complete, before the state is
//! saved). The integration tests use them to prove that a crash at any of these moments leaves
//! every file old or new and that the next run completes the job.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static POINTS: OnceLock<Vec<(String, AtomicU64)>> = OnceLock::new();

fn points() -> &'static [(String, AtomicU64)] {
    POINTS.get_or_init(|| {
        std::env::var("HUMMEL_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| {
                let (name, n) = p.trim().split_once('=')?;
                Some((name.to_string(), AtomicU64::new(n.parse().ok()?)))
            })
            .collect()
    })
}

/// Aborts the process if `name` is armed and this is its N-th hit.
pub(crate) fn hit(name: &str) {
    for (point, left) in points() {
        if point == name && left.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::error!(failpoint = name, "failpoint reached: aborting");
            std::process::abort();
        }
    }
}
