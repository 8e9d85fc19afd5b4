//! Push progress: what the master knows of each push that names itself (`hummel push` sends a
//! random id, [`valid_push_id`]), for `StatusResponse::pushes` and the dashboard.
//!
//! A push's session starts at its first missing query ([`PushBook::asked`]); the chunks the
//! master answered missing add up (each counted once), verified packs add what they hold
//! ([`PushBook::received`], each pack counted once), and its publish moves it to publishing,
//! then published or refused ([`PushBook::publishing`], [`PushBook::finished`]). A push not
//! heard from for [`STALLED_AFTER`] reads stalled; its staged packs stay (`crate::push`), and
//! it resumes when it (or a new push, with a new id) asks again.
//!
//! Bounds: at most [`MAX_PUSHES`] sessions. A new one first drops the oldest finished, then the
//! oldest stalled; when all are under way it is refused ([`BookFull`], 503). Finished sessions
//! are shown for [`FINISHED_SHOWN`]. The chunk ids remembered for counting each chunk once are
//! bounded by [`MAX_TRACKED_CHUNKS`] over all sessions (beyond, chunks are counted as answered)
//! and the packs by [`MAX_TRACKED_PACKS`] per session. Requests without an id are not tracked.
//! Times are Unix milliseconds passed in, so the tests need no clock.

use std::collections::HashSet;
use std::sync::Mutex;

use hummel_core::Hash;
use hummel_proto::api::{PushProgress, PushState, valid_push_id};

use crate::lock;

/// Sessions remembered at once.
pub(crate) const MAX_PUSHES: usize = 32;
/// A push silent this long reads stalled (milliseconds).
pub(crate) const STALLED_AFTER: u64 = 2 * 60 * 1000;
/// A finished push is shown this long (milliseconds).
pub(crate) const FINISHED_SHOWN: u64 = 15 * 60 * 1000;
/// Chunk ids remembered over all sessions to count each once (8 bytes each, plus the set's).
pub(crate) const MAX_TRACKED_CHUNKS: usize = 1 << 20;
/// Pack hashes remembered per session to count each pack once.
pub(crate) const MAX_TRACKED_PACKS: usize = 1 << 16;

/// Where a session stands; stalled is derived from its silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Uploading,
    Publishing,
    Published,
    Refused,
}

#[derive(Debug)]
struct Session {
    id: String,
    prefix: Option<String>,
    base: Option<u64>,
    phase: Phase,
    /// The first 8 bytes of each chunk id answered missing (see [`MAX_TRACKED_CHUNKS`]).
    asked: HashSet<u64>,
    chunks_missing: u64,
    packs: HashSet<Hash>,
    chunks_received: u64,
    bytes_received: u64,
    started_ms: u64,
    updated_ms: u64,
    revision: Option<u64>,
    error: Option<String>,
}

impl Session {
    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Published | Phase::Refused)
    }

    fn stalled(&self, now: u64) -> bool {
        self.phase == Phase::Uploading && now.saturating_sub(self.updated_ms) >= STALLED_AFTER
    }

    fn state(&self, now: u64) -> PushState {
        match self.phase {
            _ if self.stalled(now) => PushState::Stalled,
            Phase::Uploading => PushState::Uploading,
            Phase::Publishing => PushState::Publishing,
            Phase::Published => PushState::Published,
            Phase::Refused => PushState::Refused,
        }
    }
}

/// Every [`MAX_PUSHES`] sessions are under way: a new push is refused for now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BookFull;

/// The sessions, behind their own lock.
#[derive(Debug, Default)]
pub(crate) struct PushBook {
    inner: Mutex<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    list: Vec<Session>,
    /// Chunk ids remembered over all sessions.
    tracked: usize,
}

impl Sessions {
    fn get(&mut self, id: &str) -> Option<&mut Session> {
        self.list.iter_mut().find(|s| s.id == id)
    }

    fn remove(&mut self, i: usize) {
        let s = self.list.swap_remove(i);
        self.tracked -= s.asked.len();
    }

    /// Forgets finished sessions shown long enough.
    fn expire(&mut self, now: u64) {
        while let Some(i) = self
            .list
            .iter()
            .position(|s| s.finished() && now.saturating_sub(s.updated_ms) >= FINISHED_SHOWN)
        {
            self.remove(i);
        }
    }

    /// Makes room for one more session: the oldest finished goes, else the oldest stalled.
    fn make_room(&mut self, now: u64) -> Result<(), BookFull> {
        self.expire(now);
        if self.list.len() < MAX_PUSHES {
            return Ok(());
        }
        let oldest = |pick: &dyn Fn(&Session) -> bool| {
            self.list
                .iter()
                .enumerate()
                .filter(|(_, s)| pick(s))
                .min_by_key(|(_, s)| s.updated_ms)
                .map(|(i, _)| i)
        };
        let victim = oldest(&|s| s.finished()).or_else(|| oldest(&|s| s.stalled(now)));
        match victim {
            Some(i) => {
                self.remove(i);
                Ok(())
            }
            None => Err(BookFull),
        }
    }
}

/// The first 8 bytes of a chunk id, enough to tell a push's chunks apart.
fn short_id(h: &Hash) -> u64 {
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

impl PushBook {
    /// Push `id` asked which chunks the master lacks (at `base`, to `prefix`) and was answered
    /// `missing`. Starts its session (making room, [`BookFull`] when it cannot), or resumes it.
    pub(crate) fn asked(
        &self,
        id: &str,
        prefix: Option<&str>,
        base: Option<u64>,
        missing: &[Hash],
        now: u64,
    ) -> Result<(), BookFull> {
        debug_assert!(valid_push_id(id));
        let mut book = lock(&self.inner);
        if book.get(id).is_none() {
            book.make_room(now)?;
            book.list.push(Session {
                id: id.to_string(),
                prefix: prefix.map(str::to_string),
                base,
                phase: Phase::Uploading,
                asked: HashSet::new(),
                chunks_missing: 0,
                packs: HashSet::new(),
                chunks_received: 0,
                bytes_received: 0,
                started_ms: now,
                updated_ms: now,
                revision: None,
                error: None,
            });
        }
        let Sessions { list, tracked } = &mut *book;
        let s = list.iter_mut().find(|s| s.id == id).expect("just found");
        s.phase = Phase::Uploading;
        s.updated_ms = now;
        s.revision = None;
        s.error = None;
        for h in missing {
            let short = short_id(h);
            if s.asked.contains(&short) {
                continue;
            }
            if *tracked < MAX_TRACKED_CHUNKS {
                s.asked.insert(short);
                *tracked += 1;
            }
            s.chunks_missing += 1;
        }
        Ok(())
    }

    /// Push `id` is heard from (a pack upload starts).
    pub(crate) fn heard(&self, id: &str, now: u64) {
        if let Some(s) = lock(&self.inner).get(id) {
            s.updated_ms = now;
        }
    }

    /// Push `id` uploaded pack `pack` (verified and staged) of `chunks` chunks and `bytes`
    /// bytes. Unknown ids are ignored (a session starts with a missing query).
    pub(crate) fn received(&self, id: &str, pack: Hash, chunks: u64, bytes: u64, now: u64) {
        let mut book = lock(&self.inner);
        let Some(s) = book.get(id) else { return };
        s.updated_ms = now;
        if s.packs.contains(&pack) {
            return;
        }
        if s.packs.len() < MAX_TRACKED_PACKS {
            s.packs.insert(pack);
        }
        s.chunks_received += chunks;
        s.bytes_received += bytes;
    }

    /// Push `id` sent its manifest.
    pub(crate) fn publishing(&self, id: &str, now: u64) {
        if let Some(s) = lock(&self.inner).get(id) {
            s.phase = Phase::Publishing;
            s.updated_ms = now;
            s.revision = None;
            s.error = None;
        }
    }

    /// Push `id`'s publish ended: `Ok(revision)` (`None`: nothing changed, or a dry run), or
    /// refused with a one-line reason.
    pub(crate) fn finished(&self, id: &str, outcome: Result<Option<u64>, String>, now: u64) {
        if let Some(s) = lock(&self.inner).get(id) {
            s.updated_ms = now;
            match outcome {
                Ok(revision) => {
                    s.phase = Phase::Published;
                    s.revision = revision;
                }
                Err(e) => {
                    s.phase = Phase::Refused;
                    s.error = Some(e);
                }
            }
        }
    }

    /// The sessions as of `now`, the newest first (finished ones shown long enough dropped).
    pub(crate) fn list(&self, now: u64) -> Vec<PushProgress> {
        let mut book = lock(&self.inner);
        book.expire(now);
        let mut out: Vec<(u64, PushProgress)> = book
            .list
            .iter()
            .map(|s| {
                (
                    s.started_ms,
                    PushProgress {
                        id: s.id.clone(),
                        prefix: s.prefix.clone(),
                        base: s.base,
                        state: s.state(now),
                        chunks_missing: s.chunks_missing,
                        chunks_received: s.chunks_received,
                        bytes_received: s.bytes_received,
                        started_unix: (s.started_ms / 1000) as i64,
                        updated_unix: (s.updated_ms / 1000) as i64,
                        revision: s.revision,
                        error: s.error.clone(),
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        out.into_iter().map(|(_, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> String {
        format!("{n:032x}")
    }

    fn chunk(n: u64) -> Hash {
        Hash::of(&n.to_le_bytes())
    }

    fn only(book: &PushBook, now: u64) -> PushProgress {
        let list = book.list(now);
        assert_eq!(list.len(), 1, "{list:?}");
        list.into_iter().next().unwrap()
    }

    #[test]
    fn a_push_counts_each_chunk_and_pack_once_then_publishes() {
        let book = PushBook::default();
        let t0 = 1_700_000_000_000;
        let (a, b, c) = (chunk(1), chunk(2), chunk(3));
        book.asked(&id(1), Some("@m"), Some(4), &[a, b], t0)
            .unwrap();
        // Asked again (a retried question): the same chunks count once.
        book.asked(&id(1), Some("@m"), Some(4), &[b, c], t0 + 10)
            .unwrap();
        let p = only(&book, t0 + 20);
        assert_eq!(p.state, PushState::Uploading);
        assert_eq!((p.chunks_missing, p.chunks_received), (3, 0));
        assert_eq!((p.prefix.as_deref(), p.base), (Some("@m"), Some(4)));
        assert_eq!(p.started_unix, (t0 / 1000) as i64);

        let pack = chunk(100);
        book.received(&id(1), pack, 2, 5000, t0 + 30);
        // The same pack again (a retried upload) adds nothing.
        book.received(&id(1), pack, 2, 5000, t0 + 40);
        book.received(&id(1), chunk(101), 1, 700, t0 + 50);
        let p = only(&book, t0 + 60);
        assert_eq!((p.chunks_received, p.bytes_received), (3, 5700));
        assert_eq!(p.updated_unix, ((t0 + 50) / 1000) as i64);

        // A pack of a push never asked about: not tracked.
        book.received(&id(9), chunk(102), 1, 1, t0 + 70);
        assert_eq!(book.list(t0 + 70).len(), 1);

        book.publishing(&id(1), t0 + 80);
        assert_eq!(only(&book, t0 + 90).state, PushState::Publishing);
        // Publishing is the master's work, never stalled.
        assert_eq!(
            only(&book, t0 + 80 + STALLED_AFTER).state,
            PushState::Publishing
        );
        book.finished(&id(1), Ok(Some(5)), t0 + 100);
        let p = only(&book, t0 + 110);
        assert_eq!(
            (p.state, p.revision, p.error),
            (PushState::Published, Some(5), None)
        );

        // Shown for FINISHED_SHOWN, then forgotten.
        assert_eq!(book.list(t0 + 100 + FINISHED_SHOWN - 1).len(), 1);
        assert!(book.list(t0 + 100 + FINISHED_SHOWN).is_empty());
        assert_eq!(
            lock(&book.inner).tracked,
            0,
            "its chunk ids are forgotten too"
        );
    }

    #[test]
    fn a_refused_push_says_why_and_a_silent_one_stalls_then_resumes() {
        let book = PushBook::default();
        let t0 = 1_000_000;
        book.asked(&id(1), None, None, &[chunk(1)], t0).unwrap();
        book.publishing(&id(1), t0 + 1);
        book.finished(&id(1), Err("someone else pushed".into()), t0 + 2);
        let p = only(&book, t0 + 3);
        assert_eq!(p.state, PushState::Refused);
        assert_eq!(p.error.as_deref(), Some("someone else pushed"));

        let book = PushBook::default();
        book.asked(&id(2), None, None, &[chunk(1), chunk(2)], t0)
            .unwrap();
        assert_eq!(
            only(&book, t0 + STALLED_AFTER - 1).state,
            PushState::Uploading
        );
        assert_eq!(only(&book, t0 + STALLED_AFTER).state, PushState::Stalled);
        // An upload starting is news from it.
        book.heard(&id(2), t0 + STALLED_AFTER + 5);
        assert_eq!(
            only(&book, t0 + STALLED_AFTER + 6).state,
            PushState::Uploading
        );
        // Stalled again, then asking again resumes it (same counts).
        let later = t0 + 3 * STALLED_AFTER;
        assert_eq!(only(&book, later).state, PushState::Stalled);
        book.asked(&id(2), None, None, &[chunk(2)], later).unwrap();
        let p = only(&book, later + 1);
        assert_eq!((p.state, p.chunks_missing), (PushState::Uploading, 2));
    }

    #[test]
    fn sessions_are_bounded_finished_then_stalled_go_first() {
        let book = PushBook::default();
        let t0 = 10_000_000;
        for n in 0..MAX_PUSHES {
            book.asked(&id(n), None, None, &[], t0 + n as u64).unwrap();
        }
        // All under way: a new one is refused, a known one still asks.
        assert_eq!(
            book.asked(&id(100), None, None, &[], t0 + 100),
            Err(BookFull)
        );
        book.asked(&id(3), None, None, &[chunk(1)], t0 + 100)
            .unwrap();
        // Two finish: the older finished one makes room.
        for n in [7, 5] {
            book.publishing(&id(n), t0 + 200);
            book.finished(&id(n), Ok(Some(1)), t0 + 200 + n as u64);
        }
        book.asked(&id(100), None, None, &[], t0 + 300).unwrap();
        let ids: Vec<String> = book.list(t0 + 301).into_iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), MAX_PUSHES);
        assert_eq!(ids[0], id(100), "newest first");
        assert!(!ids.contains(&id(5)) && ids.contains(&id(7)));
        // Then the finished 7, then the stalled ones, the oldest first (0: id 3 asked later).
        book.asked(&id(101), None, None, &[], t0 + 400).unwrap();
        assert!(!book.list(t0 + 401).iter().any(|p| p.id == id(7)));
        let later = t0 + 400 + STALLED_AFTER;
        book.asked(&id(102), None, None, &[], later).unwrap();
        let ids: Vec<String> = book.list(later).into_iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), MAX_PUSHES);
        assert!(!ids.contains(&id(0)) && ids.contains(&id(1)) && ids.contains(&id(3)));
    }

    #[test]
    fn remembered_chunk_ids_are_bounded() {
        let book = PushBook::default();
        lock(&book.inner).tracked = MAX_TRACKED_CHUNKS - 1;
        book.asked(&id(1), None, None, &[chunk(1), chunk(2)], 0)
            .unwrap();
        // One remembered, one counted without being remembered.
        book.asked(&id(1), None, None, &[chunk(1)], 1).unwrap();
        assert_eq!(only(&book, 2).chunks_missing, 2);
        book.asked(&id(1), None, None, &[chunk(2)], 3).unwrap();
        assert_eq!(
            only(&book, 4).chunks_missing,
            3,
            "beyond the bound, counted as answered"
        );
        assert_eq!(lock(&book.inner).tracked, MAX_TRACKED_CHUNKS);
    }
}
