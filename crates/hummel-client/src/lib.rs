//! Hummel client: make a local folder an exact, verified copy of a revision (or a subtree of
//! one), downloading only what is not already there, from several slaves at once.
//!
//! The entry points are [`sync()`] ([`SyncOptions`] → [`SyncOutcome`]) and [`verify()`]
//! ([`VerifyOptions`] → [`VerifyReport`]). A sync plans first, as plain data ([`SyncPlan`];
//! `--dry-run` returns its [`SyncPlanSummary`]), then carries the plan out.
//!
//! # Layout
//! - [`sync`](mod@sync): the run: lock, no-op check, index, survey, plan, execute, save state,
//!   report to the master.
//! - [`state`]: `DEST/.hummel/`: [`state::ClientState`] (revision, master, subtree, stat cache),
//!   the held index, the client id, the run lock and `tmp/` (kept across runs). Atomic writes.
//! - [`scan`]: what is in DEST: a walk that never follows symlinks, the no-op test, and the
//!   survey of local content (stat cache, hashing, chunk layouts, re-chunking).
//! - [`plan`]: [`SyncPlan`], pure: unchanged / write / local copy / download (coalesced
//!   [`plan::RangeRequest`]s) / conflicts / deletes.
//! - `fetch`: the multi-source scheduler: per-slave and total limits, fail-over per range, every
//!   chunk through [`hummel_core::codec::decode_chunk`] before it is written.
//! - `assemble`: temp files (named by content hash, resumed across runs), local chunk copies,
//!   sealing (mode, mtime, syncfs), and the final burst: directories, renames, deletes.
//! - [`changes`](mod@changes): what changed between two revisions ([`Changelog`]: mods and
//!   files added, updated, removed), what a folder holds ([`changes::held`]) and the master's
//!   current whole index ([`changes::current`]).
//! - [`verify`](mod@verify): read-only comparison of DEST with the current revision.
//! - [`push`](mod@push): the other direction, `hummel push` ([`push()`]: [`PushOptions`] →
//!   [`PushReport`], [`PushError`]): a local folder published at a prefix, each file read
//!   once, only the chunks the master lacks compressed and uploaded.
//! - [`watch`]: [`RevisionWatch`], the master's announcements of new revisions (server-sent
//!   events, reconnected with jittered backoff), for `hummel sync --watch`.
//! - `trusted`: the one place `sync` and `verify` take what the master says: its signed
//!   statement, checked against the key DEST trusts (pinned on first contact, `--trust`, key
//!   rotations), and the index, checked against the signed tree digest (subtree proofs,
//!   deltas rebuilt).
//! - `names`: names DEST's file system cannot hold (Windows' rules, case pairs where case is
//!   ignored), refused before anything is written.
//! - `platform`: every file-system call whose meaning differs between Unix and Windows (stat
//!   fields, modes, durability, replacing read-only and open files, `\\?\` paths, free space).
//! - `http`: the client's side of [`hummel_net`] (the one HTTP client: HTTPS trust, timeouts,
//!   body caps, busy retries, error decoding): the client with the read token, and the four
//!   master calls a client makes, their failures as [`SyncError`]s.
//! - [`space`]: the free-space check before downloading (a pure decision and `statvfs`).
//! - [`report`]: [`SyncReport`], [`SyncOutcome`], the progress bar and [`SyncProgress`] (the
//!   same progress for a program: phase and bytes, polled while a sync runs).
//! - [`error`]: [`SyncError`] and [`PushError`], one line with the failing side and object.
//!
//! # Guarantees
//! - No index is used unless it leads to the tree digest that the trusted key signed, in a
//!   statement that has not expired, of a revision not older than the one held.
//! - Every byte from the network passes `decode_chunk_into` (bounded, BLAKE3 id) before it is
//!   written; every locally copied chunk is re-hashed; a file is renamed into place only when
//!   every one of its chunks was written (the index's chunk lists add up to its file sizes).
//! - Nothing under its final name is ever partial: temp file, made durable (one `syncfs` of
//!   the filesystem on Linux, fsync or `FlushFileBuffers` per file elsewhere), rename, then the
//!   renames made durable.
//!   If anything fails before the renames, DEST is untouched and the temp files (verified
//!   chunks only) are kept: the next run re-hashes them and downloads only what is missing.
//! - Deletes happen last, only after everything else succeeded. `.hummel` is never touched by
//!   them. Symlinks in DEST are never followed; one where the index has a directory is replaced.
//! - CPU and file work runs in `spawn_blocking`/rayon, never on an async worker.
//! - The library logs with `tracing` and never prints; tokens are never logged.

pub mod changes;
pub mod error;
pub mod plan;
pub mod push;
pub mod report;
pub mod scan;
pub mod space;
pub mod state;
pub mod sync;
pub mod verify;
pub mod watch;

mod assemble;
mod failpoint;
mod fetch;
mod http;
mod names;
mod platform;
mod trusted;

pub use changes::{Change, Changelog, changes};
pub use error::{PushError, SyncError};
pub use plan::{SyncPlan, SyncPlanSummary};
pub use push::{PushOptions, PushReport, push};
pub use report::{ProgressSnapshot, SyncOutcome, SyncPhase, SyncProgress, SyncReport};
pub use sync::{RevisionChoice, SyncOptions, sync, sync_with_progress};
pub use trusted::{KeyTrust, Selection};
pub use verify::{VerifyOptions, VerifyReport, verify};
pub use watch::RevisionWatch;
