//! [`Tracker`]: what the master knows about slaves and clients, mirrored from the database.
//!
//! Slaves announce the complete set of packs they hold ([`SlaveRecord::packs`], by pack number)
//! and heartbeat; their [`SlaveState`] follows from the age of the last message. Clients report
//! what they hold after each sync. The tracker is plain data; [`crate::master`] keeps it behind a
//! mutex and writes every change to the database first.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hummel_proto::api::{ClientStatus, SlaveState};

/// A slave as the master knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlaveRecord {
    pub id: String,
    pub url: String,
    pub quota: Option<u64>,
    pub used: u64,
    pub replicating: u64,
    /// Unix milliseconds of the last hashlist or heartbeat.
    pub last_seen_ms: u64,
    /// Pack numbers it holds.
    pub packs: HashSet<u32>,
}

/// A client's last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientRecord {
    pub id: String,
    pub addr: String,
    pub revision: u64,
    pub path: String,
    pub files: u64,
    pub bytes: u64,
    pub last_seen_ms: u64,
}

impl ClientRecord {
    pub(crate) fn status(&self, now_ms: u64) -> ClientStatus {
        ClientStatus {
            id: self.id.clone(),
            addr: self.addr.clone(),
            revision: self.revision,
            path: self.path.clone(),
            files: self.files,
            bytes: self.bytes,
            last_seen_ms: now_ms.saturating_sub(self.last_seen_ms),
        }
    }
}

/// The liveness thresholds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Liveness {
    pub stale_after: Duration,
    pub dead_after: Duration,
}

impl Liveness {
    /// `live` below `stale_after`, `dead` from `dead_after`, `stale` in between.
    pub(crate) fn state(&self, last_seen_ms: u64, now_ms: u64) -> SlaveState {
        let age = u128::from(now_ms.saturating_sub(last_seen_ms));
        if age >= self.dead_after.as_millis() {
            SlaveState::Dead
        } else if age >= self.stale_after.as_millis() {
            SlaveState::Stale
        } else {
            SlaveState::Live
        }
    }
}

/// Slaves and clients, by id.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pub slaves: BTreeMap<String, SlaveRecord>,
    pub clients: BTreeMap<String, ClientRecord>,
    /// The state each slave was last seen in by the background observer (for transition logs).
    pub observed: BTreeMap<String, SlaveState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_heartbeat_age() {
        let l = Liveness {
            stale_after: Duration::from_secs(30),
            dead_after: Duration::from_secs(600),
        };
        let now = 1_000_000_000;
        assert_eq!(l.state(now, now), SlaveState::Live);
        assert_eq!(l.state(now - 29_999, now), SlaveState::Live);
        assert_eq!(l.state(now - 30_000, now), SlaveState::Stale);
        assert_eq!(l.state(now - 599_999, now), SlaveState::Stale);
        assert_eq!(l.state(now - 600_000, now), SlaveState::Dead);
        // A clock step backwards never makes a slave look older.
        assert_eq!(l.state(now + 5, now), SlaveState::Live);
    }
}
