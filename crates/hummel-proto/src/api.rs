//! Endpoints and their bodies.
//!
//! Client → master (read token if configured):
//! - `GET  /api/v1/revision` → [`RevisionInfo`] (cheap; the no-op check), with the master's
//!   signed statement about the revision; `?revision=N` (a client pinned to N): N's, with a
//!   statement under the pinned-statement magic (`hummel_core::statement`) unless N is current
//! - `GET  /api/v1/index?revision=N&path=SUB[&since=M]` → encoded [`hummel_core::Index`] of the
//!   subtree (`application/octet-stream`); `revision` defaults to the current one, `path` to the
//!   root. With `since=M` (the revision the client holds) the answer may instead be an encoded
//!   [`hummel_core::delta::IndexDelta`] from M (header `X-Hummel-Index-Kind: delta`; the magic
//!   says so too); the client rebuilds N from the index it holds. Header `X-Hummel-Proof`
//!   ties the answer to the signed tree digest.
//! - `POST /api/v1/locate` [`LocateRequest`] → [`LocateResponse`]: which live slaves hold which packs
//! - `POST /api/v1/client/report` [`ClientReport`] → 204: what the client now holds
//! - `GET  /api/v1/status` → [`StatusResponse`]
//! - `GET  /api/v1/builds/{id}` → [`BuildStatus`]; `GET /api/v1/builds/latest` likewise
//! - `GET  /api/v1/revisions?limit=N&before=M` → [`RevisionsResponse`]: the history, newest
//!   first, with each revision's message and change summary
//! - `GET  /api/v1/changes?from=N&to=M` → [`ChangesResponse`]: mods and files added, updated
//!   and removed from N to M (bounded)
//!
//! Admin → master (write token): `POST /build` → 202 [`BuildStarted`]; `POST /api/v1/rollback`
//! [`RollbackRequest`] → [`RollbackResponse`]; `POST /api/v1/slaves/{id}/drain` → 204 (the
//! slave gets no new packs, its packs are copied elsewhere; [`SlaveStatus::drain`] says when it
//! may be removed), `DELETE` of the same → 204 (the drain is called off); `DELETE
//! /api/v1/slaves/{id}` → 204
//!
//! Slave → master (slave token):
//! - `POST /slave/hashlist` [`SlaveHashlist`] → [`SlaveDirective`] (an empty list introduces a
//!   slave). The directive's [`SlaveDirective::hashlist`] names the [`HashlistVersion`] the
//!   master now holds.
//! - `POST /slave/heartbeat` [`Heartbeat`] → [`SlaveDirective`]; 404 `unknown_slave` asks the
//!   slave to announce its hashlist again. A heartbeat may carry [`HashlistChanges`]: the packs
//!   added and removed since the version the master last acknowledged. The master applies them
//!   only on top of that version and answers with the new one; a directive whose `hashlist` is
//!   not the version the slave proposed (`None` included) asks for the complete hashlist again.
//!
//! Anyone → slave (and master, as the origin of replication):
//! - `GET|HEAD /blob/{pack hash}` with optional single `Range: bytes=a-b`; `ETag` is the hash,
//!   `Cache-Control: immutable`.
//!
//! Both: `GET /health` → [`Health`], `GET /metrics` → Prometheus text.

use serde::{Deserialize, Serialize};

use hummel_core::Hash;

/// `GET /api/v1/revision`.
pub const REVISION: &str = "/api/v1/revision";
/// `GET /api/v1/index`.
pub const INDEX: &str = "/api/v1/index";
/// `GET`: server-sent events, `revision` with a [`RevisionInfo`] body: the current revision at
/// once, then each new one once its packs can be fetched (read token).
pub const EVENTS: &str = "/api/v1/events";
/// `POST /api/v1/locate`.
pub const LOCATE: &str = "/api/v1/locate";
/// `POST /api/v1/client/report`.
pub const CLIENT_REPORT: &str = "/api/v1/client/report";
/// `GET /api/v1/status`.
pub const STATUS: &str = "/api/v1/status";
/// `GET /api/v1/builds/{id}` (or `latest`).
pub const BUILDS: &str = "/api/v1/builds";
/// `DELETE /api/v1/slaves/{id}` (write token): forget a slave and its enrolled key.
pub const SLAVES: &str = "/api/v1/slaves";
/// `GET /api/v1/revisions`.
pub const REVISIONS: &str = "/api/v1/revisions";
/// `GET /api/v1/changes`.
pub const CHANGES: &str = "/api/v1/changes";
/// `POST /api/v1/rollback` (write token).
pub const ROLLBACK: &str = "/api/v1/rollback";
/// `POST`: which of these chunks the master lacks (`hummel push`; write token).
pub const PUSH_MISSING: &str = "/api/v1/push/missing";
/// `PUT .../{hash}`: one pack of a push, staged until a publish uses it (write token).
pub const PUSH_PACKS: &str = "/api/v1/push/packs";
/// `POST`: publish a pushed tree at a prefix (write token).
pub const PUSH_PUBLISH: &str = "/api/v1/push/publish";
/// `POST /build`.
pub const BUILD: &str = "/build";
/// `POST /slave/hashlist`.
pub const SLAVE_HASHLIST: &str = "/slave/hashlist";
/// `POST /slave/heartbeat`.
pub const SLAVE_HEARTBEAT: &str = "/slave/heartbeat";
/// `GET /slave/events` (slave token): server-sent `revision` events, each publication at once.
pub const SLAVE_EVENTS: &str = "/slave/events";
/// `GET /blob/{hash}` prefix.
pub const BLOB: &str = "/blob";
/// `GET /health`.
pub const HEALTH: &str = "/health";
/// `GET /metrics`.
pub const METRICS: &str = "/metrics";

/// Largest JSON body any endpoint accepts or answers with: a slave's complete hashlist (~67
/// bytes a pack, so about a million packs, 16 TB of 16 MiB packs). Only `POST /slave/hashlist`
/// takes that much, and only after the slave token was checked; every other route has its own,
/// smaller bound (below).
pub const MAX_JSON_BODY: usize = 64 << 20;

/// Largest `POST /slave/heartbeat` body: at most [`MAX_HASHLIST_CHANGES`] hashes of changes and
/// [`MAX_CORRUPT_PER_HEARTBEAT`] corrupt packs (~70 bytes each), with room to spare.
pub const MAX_HEARTBEAT_BODY: usize = 1 << 20;

/// Most corrupt packs one heartbeat reports; more wait for the next one.
pub const MAX_CORRUPT_PER_HEARTBEAT: usize = 1024;

/// Bytes one pack number takes in a JSON list at most (`4294967295,`), plus one of slack.
pub const JSON_BYTES_PER_PACK: usize = 12;

/// Largest `POST /api/v1/locate` body a master whose pack table holds `packs` packs accepts.
/// A client locates the packs of one plan, all of them packs of one revision and so of the
/// table: 12 bytes a pack plus 16 KiB. A 200 GB tree (~13,000 packs) allows ~170 kB; a 60 MB
/// body is refused before it is read.
pub fn locate_body_limit(packs: usize) -> usize {
    (16 << 10) + JSON_BYTES_PER_PACK.saturating_mul(packs)
}

/// Largest `POST /api/v1/client/report` body a master whose pack table holds `packs` packs
/// accepts: the pack list as for [`locate_body_limit`], plus 128 KiB for the ids, the key, a
/// path of [`hummel_core::relpath::MAX_PATH_LEN`] bytes escaped and [`MAX_BAD_SLAVES`] slave ids.
pub fn report_body_limit(packs: usize) -> usize {
    (128 << 10) + JSON_BYTES_PER_PACK.saturating_mul(packs)
}

/// Most packs a slave lists in one [`HashlistChanges`] (added and removed together); with more
/// changes unreported it announces its complete hashlist instead. About 69 kB of JSON, where a
/// complete hashlist of a 200 GB tree (~6,400 packs) is ~430 kB.
pub const MAX_HASHLIST_CHANGES: usize = 1024;

/// The path of a pack: `/blob/{hash}`.
pub fn blob_path(hash: &Hash) -> String {
    format!("{BLOB}/{hash}")
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"` when the answer is 200.
    pub status: String,
    /// `master`, `slave` or `serve`.
    pub role: String,
    /// [`crate::API_VERSION`].
    pub api_version: u32,
    /// The crate version of the process.
    pub version: String,
}

/// `GET /api/v1/revision`: the current revision, if any build has succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// Current revision number, `None` before the first build.
    pub revision: Option<u64>,
    /// When it was built.
    pub created_unix: Option<i64>,
    /// Files in it.
    pub files: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// BLAKE3 of the encoded index body of the whole revision: with [`Self::repository_id`],
    /// the revision's identity. A number alone is not (a master restored from a backup may have
    /// published another tree under it).
    pub index_hash: Option<Hash>,
    /// The repository's stable random id (hex), made when the master's database was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<String>,
    /// The admin confirmed that this revision removes most of the repository
    /// (`hummel build --allow-mass-delete`); clients then apply its deletes without asking.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mass_delete_confirmed: bool,
    /// The master's signed statement about this revision
    /// ([`hummel_core::statement::Statement`], format 1, as lower-case hex): what a client
    /// trusts of all the above. Absent before the first revision, and from masters before
    /// signed revisions (clients refuse those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Every key rotation the signing key came through
    /// ([`hummel_core::statement::Rotation`], hex), oldest first: a client that pinned an
    /// older key follows them to the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_rotations: Vec<String>,
}

/// Response header of `GET /api/v1/index`: the [`hummel_core::tree::SubtreeProof`] (format 1,
/// hex) that ties the answer's subtree (or the index a delta rebuilds) to the tree digest of
/// the signed statement. Empty levels for the whole tree.
pub const PROOF_HEADER: &str = "X-Hummel-Proof";

/// The master's signing key, in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningStatus {
    /// The public key's fingerprint (64 hex digits): what clients pin or pass to `--trust`.
    pub fingerprint: String,
    /// Seconds a signed statement holds (it is signed again after half of it).
    pub expiry_s: u64,
    /// Key rotations recorded.
    pub rotations: u32,
    /// Until when the current revision's statement holds.
    pub statement_expires_unix: Option<i64>,
}

/// Response header of `GET /api/v1/index`: the [`RevisionInfo::index_hash`] of the whole
/// revision the answer (a subtree, or a delta) was cut from.
pub const REVISION_HASH_HEADER: &str = "X-Hummel-Revision-Hash";
/// Response header of `GET /api/v1/index`: [`RevisionInfo::repository_id`].
pub const REPOSITORY_ID_HEADER: &str = "X-Hummel-Repository-Id";
/// Response header of `GET /api/v1/index`: `1` when the revision carries the admin's
/// mass-delete confirmation ([`RevisionInfo::mass_delete_confirmed`]).
pub const MASS_DELETE_HEADER: &str = "X-Hummel-Mass-Delete-Confirmed";

/// Query of `POST /build` (all optional): `?allow_mass_delete=true` publishes a build that
/// removes more than half of the current revision's files or bytes, or finds the repository
/// folder empty, which the master otherwise refuses; `?message=TEXT` is recorded with the
/// revision the build publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildQuery {
    /// The admin confirms a mass delete; recorded in the revision.
    #[serde(default)]
    pub allow_mass_delete: bool,
    /// What the revision brings, in the admin's words: at most [`MAX_MESSAGE_LEN`] bytes, no
    /// control characters but newlines and tabs ([`valid_message`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Longest revision message (bytes of UTF-8).
pub const MAX_MESSAGE_LEN: usize = 1000;

/// True for a revision message the master records: at most [`MAX_MESSAGE_LEN`] bytes, without
/// control characters other than newlines and tabs.
pub fn valid_message(message: &str) -> bool {
    message.len() <= MAX_MESSAGE_LEN
        && !message
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
}

/// Most revisions one `GET /api/v1/revisions` lists (and its default `limit`).
pub const MAX_REVISIONS_LISTED: usize = 200;
/// Most files one [`ChangesResponse`] lists; the counts cover all of them.
pub const MAX_CHANGED_FILES: usize = 2000;
/// Most mods one [`ChangesResponse`] lists.
pub const MAX_CHANGED_MODS: usize = 1000;

/// Query of `GET /api/v1/revisions` (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionsQuery {
    /// Most revisions listed: at most (and by default) [`MAX_REVISIONS_LISTED`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only revisions below this number (the next page: the last number listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}

/// One revision in [`RevisionsResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionEntry {
    /// Its number.
    pub revision: u64,
    /// When it was published.
    pub created_unix: i64,
    /// Files in it.
    pub files: u64,
    /// Bytes in it.
    pub bytes: u64,
    /// The message it was published with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What changed from the revision before it; `None` when unknown (a revision published
    /// before the master recorded summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<hummel_core::changes::ChangeSummary>,
    /// The revision whose tree it published again (`hummel rollback N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// Made by the background repack: the same tree as the revision before, in other packs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repack: bool,
    /// Its index is still stored: it can be synced (`--revision`), diffed and rolled back to.
    pub available: bool,
    /// Why the garbage collection keeps it, when it does ([`RetentionReason`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<RetentionReason>,
}

/// Why the garbage collection keeps a revision's packs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionReason {
    /// The current revision.
    Current,
    /// One of the newest `keep_revisions` builds.
    Recent,
    /// Superseded less than the grace period ago.
    Grace,
    /// A client reported that it is pinned to it.
    Pinned,
}

/// `GET /api/v1/revisions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionsResponse {
    /// Newest first.
    pub revisions: Vec<RevisionEntry>,
    /// Revisions published in all.
    pub total: u64,
}

/// Query of `GET /api/v1/changes` (all optional): from revision `from` (default: the one
/// before `to`) to `to` (default: the current one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesQuery {
    /// The older revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// The newer revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
}

/// `GET /api/v1/changes`: what changed from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangesResponse {
    /// The older revision (`None`: `to` is the first, everything is added).
    pub from: Option<u64>,
    /// The newer revision.
    pub to: u64,
    /// The counts of all changed files.
    pub summary: hummel_core::changes::ChangeSummary,
    /// The mods (top-level entries) that changed, by name; at most [`MAX_CHANGED_MODS`].
    pub mods: Vec<hummel_core::changes::ModChange>,
    /// The files that changed, by path; at most [`MAX_CHANGED_FILES`].
    pub files: Vec<hummel_core::changes::FileChange>,
    /// Mods that changed in all.
    pub mods_total: u64,
    /// Files that changed in all.
    pub files_total: u64,
    /// `mods` or `files` were cut to their bound.
    pub truncated: bool,
}

/// `POST /api/v1/rollback` (write token): publish revision `revision`'s tree again, as the
/// newest revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The revision whose tree to publish.
    pub revision: u64,
    /// The new revision's message (default `rollback to N`); as [`BuildQuery::message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Publish even if it removes most of the current revision's files or bytes.
    #[serde(default)]
    pub allow_mass_delete: bool,
}

/// Answer to [`RollbackRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackResponse {
    /// The revision published.
    pub revision: u64,
    /// The revision whose tree it holds.
    pub rollback_of: u64,
}

/// Most chunk ids one [`PushMissingRequest`] asks about.
pub const MAX_PUSH_MISSING: usize = 16_384;
/// Largest pack a push uploads (a pack holds at least one chunk of at most 4 MiB, stored).
pub const MAX_PUSH_PACK: u64 = 64 << 20;
/// Largest [`PushPublishRequest`] body.
pub const MAX_PUSH_MANIFEST: usize = 256 << 20;

/// `POST /api/v1/push/missing` (write token).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMissingRequest {
    /// Chunk ids, at most [`MAX_PUSH_MISSING`] (none: only the repository's parameters).
    pub chunks: Vec<Hash>,
    /// The push asking ([`valid_push_id`]), so the master can show its progress; absent from
    /// older clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<String>,
    /// Where the push goes, for its progress (as [`PushPublishRequest::prefix`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// Length of a push id: 32 lowercase hex characters, random per run of `hummel push`. Pack
/// uploads name it as `PUT /api/v1/push/packs/{hash}?push=ID`.
pub const PUSH_ID_LEN: usize = 32;

/// True for a well-formed push id ([`PUSH_ID_LEN`] lowercase hex characters).
pub fn valid_push_id(id: &str) -> bool {
    id.len() == PUSH_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where a push stands, in [`PushProgress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    /// Asking which chunks the master lacks, or uploading them.
    Uploading,
    /// The manifest arrived; the revision is being made.
    Publishing,
    /// Published as [`PushProgress::revision`] (or changed nothing).
    Published,
    /// The master refused to publish it ([`PushProgress::error`]).
    Refused,
    /// Nothing heard from it for a while; its staged packs wait for it to resume.
    Stalled,
}

/// A push the master is receiving or recently received, in [`StatusResponse::pushes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushProgress {
    /// Its id ([`valid_push_id`]).
    pub id: String,
    /// Where it goes (`None`: the whole repository).
    pub prefix: Option<String>,
    /// The revision it read.
    pub base: Option<u64>,
    /// Where it stands.
    pub state: PushState,
    /// Chunks the master told it it lacks (what it uploads).
    pub chunks_missing: u64,
    /// Of those, chunks received in verified packs.
    pub chunks_received: u64,
    /// Bytes of verified packs received.
    pub bytes_received: u64,
    /// When it first asked (Unix seconds).
    pub started_unix: i64,
    /// When it was last heard from (Unix seconds).
    pub updated_unix: i64,
    /// The revision it published, once [`PushState::Published`].
    pub revision: Option<u64>,
    /// Why it was refused, once [`PushState::Refused`].
    pub error: Option<String>,
}

/// Answer to [`PushMissingRequest`]: what a push must chunk with and upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMissingResponse {
    /// The current revision, the base a push names (`None`: nothing published yet).
    pub revision: Option<u64>,
    /// How files must be cut into chunks.
    pub chunker: hummel_core::ChunkerConfig,
    /// The zstd level of the master's packs.
    pub zstd_level: i32,
    /// The pack size to aim at (at most [`MAX_PUSH_PACK`]).
    pub pack_target: u64,
    /// The asked chunks the master holds in neither a published nor a staged pack.
    pub missing: Vec<Hash>,
}

/// A folder of a pushed tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDir {
    /// Relative to the pushed folder.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
}

/// A file of a pushed tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushFile {
    /// Relative to the pushed folder.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// BLAKE3 of the content.
    pub hash: Hash,
    /// Chunk ids, in file order.
    pub chunks: Vec<Hash>,
}

/// `POST /api/v1/push/publish` (write token): the current revision with `prefix` holding
/// exactly this tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPublishRequest {
    /// The revision the push read (from [`PushMissingResponse::revision`]).
    pub base: Option<u64>,
    /// Where the tree goes (`None`: the whole repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Every folder of the tree.
    pub dirs: Vec<PushDir>,
    /// Every file of the tree.
    pub files: Vec<PushFile>,
    /// The new revision's message; as [`BuildQuery::message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Check everything, publish nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Publish even if it removes most of the current revision's files or bytes.
    #[serde(default)]
    pub allow_mass_delete: bool,
    /// The push publishing ([`PushMissingRequest::push`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<String>,
}

/// Answer to [`PushPublishRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPublishResponse {
    /// The revision published (`None`: a dry run, or nothing changed).
    pub revision: Option<u64>,
    /// The current revision, unchanged (a dry run, or nothing changed).
    pub current: Option<u64>,
    /// What the push changes (or would).
    pub changes: hummel_core::changes::ChangeSummary,
}

/// `POST /api/v1/locate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateRequest {
    /// Pack numbers (from the index's pack table).
    pub packs: Vec<u32>,
}

/// A slave a client may download from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveEndpoint {
    /// The master's id for the slave.
    pub id: String,
    /// Base URL, e.g. `http://10.0.0.5:7071`.
    pub url: String,
}

/// Answer to [`LocateRequest`]: for each requested pack, in order, the positions in `slaves` of
/// the live slaves holding it, best first. Stale and dead slaves are never listed. A pack no live
/// slave holds yet (a new revision still replicating) lists the master itself, at position
/// `fallback`, as its source of last resort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateResponse {
    /// The slaves referred to.
    pub slaves: Vec<SlaveEndpoint>,
    /// One list per requested pack.
    pub holders: Vec<Vec<u32>>,
    /// The position in `slaves` of the master serving as the source of last resort, when some
    /// pack lists it (absent from older masters). It serves a bounded number of downloads at
    /// once and answers 503 with `Retry-After` beyond them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<u32>,
    /// Copies of each pack the master places on slaves (absent from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u32>,
}

/// The id of the master in [`LocateResponse::slaves`] when it serves as the source of last
/// resort; no slave may use it.
pub const FALLBACK_ID: &str = "master";

/// `POST /api/v1/client/report`: what a client holds after a sync.
///
/// A report is tied to its client's key: the first report of an id registers the hash of
/// [`ClientReport::client_key`] with it, and later reports of that id must carry the same key
/// (403 `client_key_mismatch` otherwise). So no client can write as another, even one whose id
/// it saw on the dashboard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// Stable random id the client keeps in its state folder.
    pub client_id: String,
    /// The client's secret, [`CLIENT_KEY_LEN`] lower-case hex digits made with its id and
    /// kept beside it (`DEST/.hummel/client-key`). The master keeps only its BLAKE3 hash.
    /// Required by masters since keys exist (absent from older clients, whose reports are
    /// refused: they are best effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// Revision it now holds.
    pub revision: u64,
    /// Subtree it synced ("" for all).
    pub path: String,
    /// Files it holds.
    pub files: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Packs whose chunks it holds, by number.
    pub packs: Vec<u32>,
    /// Slaves that served bad data or failed during the sync, by id.
    pub bad_slaves: Vec<String>,
    /// The revision the client is pinned to (`hummel sync --revision N`), if any: the master
    /// keeps it from the garbage collection while the client keeps reporting (absent from
    /// older clients, and when not pinned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<u64>,
}

/// Length of a [`ClientReport::client_key`]: 32 random bytes in lower-case hex.
pub const CLIENT_KEY_LEN: usize = 64;

/// True for a well-formed [`ClientReport::client_key`].
pub fn valid_client_key(key: &str) -> bool {
    key.len() == CLIENT_KEY_LEN && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Most slave ids one [`ClientReport::bad_slaves`] names.
pub const MAX_BAD_SLAVES: usize = 64;

/// `POST /build` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStarted {
    /// The build now running (a new one, or the one already running).
    pub build_id: u64,
}

/// State of a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Walking, chunking, compressing.
    Running,
    /// Published a revision.
    Succeeded,
    /// Failed; the previous revision is still current.
    Failed,
}

/// `GET /api/v1/builds/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStatus {
    /// Build id.
    pub id: u64,
    /// State.
    pub state: BuildState,
    /// The revision it published.
    pub revision: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Files found so far.
    pub files_total: u64,
    /// Files processed so far.
    pub files_done: u64,
    /// Bytes found so far.
    pub bytes_total: u64,
    /// Bytes processed so far.
    pub bytes_done: u64,
    /// Files taken unchanged from the previous revision.
    pub files_reused: u64,
    /// New packs written.
    pub packs_written: u64,
    /// Started (seconds since the epoch).
    pub started_unix: i64,
    /// Finished.
    pub finished_unix: Option<i64>,
    /// Non-fatal findings, e.g. skipped symlinks.
    pub warnings: Vec<String>,
}

/// `POST /slave/hashlist`: the complete list of packs a slave holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveHashlist {
    /// Stable random id the slave keeps in its data folder.
    pub slave_id: String,
    /// The URL clients and other slaves reach it at.
    pub url: String,
    /// Quota in bytes, `None` for unlimited.
    pub quota: Option<u64>,
    /// Bytes stored.
    pub used: u64,
    /// Every verified pack it holds.
    pub packs: Vec<Hash>,
    /// [`crate::auth::read_token_digest`] of the read token the slave guards its packs with;
    /// `None` when it serves them to anyone. A master with a read token refuses a slave whose
    /// digest is not that of its own token (403 `read_token_mismatch`), and a master without
    /// one refuses a slave that has one: either way clients could not use it as they should.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_token_digest: Option<String>,
}

/// `POST /slave/heartbeat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The slave's id.
    pub slave_id: String,
    /// Bytes stored.
    pub used: u64,
    /// Packs stored. With [`Heartbeat::hashlist`], the size of the hashlist those changes
    /// produce; the master refuses changes after which it would count a different number.
    pub packs: u64,
    /// Packs being fetched.
    pub replicating: u64,
    /// Packs found corrupt since the last report (quarantined, no longer held).
    pub corrupt: Vec<Hash>,
    /// Changes to the hashlist since the version the master last acknowledged; `None` from a
    /// slave that holds no acknowledged version (or predates incremental hashlists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashlist: Option<HashlistChanges>,
    /// Bytes its pack server has sent (clients and other slaves) since it started, for the
    /// master's egress figure (absent from older slaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_served: Option<u64>,
}

/// A version of one slave's hashlist as the master holds it: the epoch of the complete hashlist
/// it started from and the changes applied since.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashlistVersion {
    /// Chosen by the master for each complete hashlist it accepts; never reused by a running
    /// master. A restarted master holds no epoch: the slave announces again.
    pub epoch: u64,
    /// 0 for the complete hashlist; afterwards the `seq` of the last changes applied.
    pub seq: u64,
}

/// The packs a slave added and removed since a [`HashlistVersion`] the master acknowledged.
///
/// Each pack whose state changed since `base` is listed once, by its state now, even if it
/// was sent before in changes that were never acknowledged (a lost reply). So the same changes
/// may be applied on top of `base` or on top of any earlier attempt from `base`: the master
/// accepts them if it holds `base`, or a version `(epoch, s)` with `base < s < seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashlistChanges {
    /// The epoch of the acknowledged version.
    pub epoch: u64,
    /// The `seq` of the acknowledged version.
    pub base: u64,
    /// The `seq` the slave proposes for the result: `base` when nothing changed, otherwise
    /// greater than any it sent before in this epoch.
    pub seq: u64,
    /// Packs held now that were not held at `base`.
    pub added: Vec<Hash>,
    /// Packs held at `base`, or added since, that are no longer held.
    pub removed: Vec<Hash>,
}

impl HashlistChanges {
    /// The version the slave proposes: what the master answers when it applied the changes.
    pub fn proposed(&self) -> HashlistVersion {
        HashlistVersion {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The version the changes are based on.
    pub fn base_version(&self) -> HashlistVersion {
        HashlistVersion {
            epoch: self.epoch,
            seq: self.base,
        }
    }
}

/// A pack the master asks a slave to fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The pack.
    pub pack: Hash,
    /// Its size.
    pub size: u64,
    /// Base URLs to fetch it from, in order (other slaves first, the master last).
    pub sources: Vec<String>,
}

/// The master's answer to a hashlist or heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveDirective {
    /// The id the master knows the slave by (echoed).
    pub slave_id: String,
    /// Packs to fetch.
    pub assign: Vec<Assignment>,
    /// Packs no retained revision needs; the slave may delete them.
    pub drop: Vec<Hash>,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u64,
    /// The version of this slave's hashlist the master holds after this request: later
    /// heartbeats send their changes against it. In answer to a heartbeat with
    /// [`HashlistChanges`], anything but the proposed version (`None` included: the master
    /// restarted, the base does not match, or the pack counts disagree) means the changes were
    /// not applied and the slave must announce its complete hashlist again. `None` in answer to
    /// a hashlist: the master takes no changes; announce the complete list after each change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashlist: Option<HashlistVersion>,
}

/// Liveness of a slave, from the age of its last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaveState {
    /// Heard from within `stale_after`.
    Live,
    /// Silent for longer than `stale_after`: clients are not sent there.
    Stale,
    /// Silent for longer than `dead_after`: its packs are placed elsewhere.
    Dead,
}

/// One slave in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveStatus {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// Liveness.
    pub state: SlaveState,
    /// Milliseconds since its last heartbeat or hashlist.
    pub last_seen_ms: u64,
    /// Packs it holds.
    pub packs: u64,
    /// Bytes it holds (reported).
    pub used: u64,
    /// Quota, if any.
    pub quota: Option<u64>,
    /// Packs assigned to it that it does not hold yet.
    pub pending: u64,
    /// Of its packs, those a probe verified it serves: clients are sent to it for these only
    /// (absent for the embedded store, and from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<u64>,
    /// Why clients are not sent to it at all (stale, refused, a failed probe, nothing
    /// verified yet); absent when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
    /// Fingerprint of the key it is enrolled with (absent before it enrolled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Whether the admin is draining it, and how far (absent when not draining, and from
    /// older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainState>,
    /// What it sent between its last two heartbeats, in bytes a second (absent before two
    /// heartbeats that carried the figure, and from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<u64>,
}

/// How far the drain of a slave got ([`SlaveStatus::drain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainState {
    /// Its packs are being copied to the other slaves; clients still use it for packs that
    /// lack copies elsewhere.
    Draining,
    /// Every pack of the current revision it holds has the target copies on other slaves:
    /// removing it is safe.
    Drained,
}

/// Replication health in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationHealth {
    /// Target copies per pack.
    pub target: u32,
    /// Packs the current revision references.
    pub packs: u64,
    /// Of those, packs with fewer than `target` copies on live slaves.
    pub under_replicated: u64,
    /// Of those, packs with no copy on any live slave.
    pub unavailable: u64,
}

/// One client in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStatus {
    /// Id.
    pub id: String,
    /// Address it reported from.
    pub addr: String,
    /// Revision it holds.
    pub revision: u64,
    /// Subtree.
    pub path: String,
    /// Files.
    pub files: u64,
    /// Bytes.
    pub bytes: u64,
    /// Milliseconds since its last report.
    pub last_seen_ms: u64,
    /// The revision it reported it is pinned to (`hummel sync --revision N`); absent when it
    /// follows the master (and from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<u64>,
}

/// `GET /api/v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// [`crate::API_VERSION`].
    pub api_version: u32,
    /// Current revision.
    pub revision: RevisionInfo,
    /// Latest build, if any.
    pub build: Option<BuildStatus>,
    /// Slaves.
    pub slaves: Vec<SlaveStatus>,
    /// Replication.
    pub replication: ReplicationHealth,
    /// Clients, the most recently seen first; at most a thousand (see `clients_total`).
    pub clients: Vec<ClientStatus>,
    /// How many clients the master tracks, listed or not (absent from older masters, which
    /// list them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients_total: Option<u64>,
    /// The background repack, when the master runs one (absent from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repack: Option<RepackStatus>,
    /// The garbage collection of packs (absent from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<GcStatus>,
    /// Packs of the current revision still on their way to their copies; absent once every pack
    /// has them (and from older masters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicating: Option<ReplicatingStatus>,
    /// The master's signing key (absent from masters before signed revisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningStatus>,
    /// Pushes under way and recently finished, the newest first (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushes: Vec<PushProgress>,
}

/// A revision still replicating, in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatingStatus {
    /// Packs with fewer live copies than they should have: [`ReplicationHealth::target`], or
    /// as many as there are slaves to put them on if fewer, and at least one.
    pub packs: u64,
    /// Of those, packs no live slave holds yet.
    pub without_copy: u64,
    /// The master serves the packs without a copy itself, as the source of last resort.
    pub master_fallback: bool,
    /// Downloads the master is serving as that source now.
    pub fallback_active: u64,
    /// The most it serves at once; more are answered 503 with `Retry-After`.
    pub fallback_limit: u64,
}

/// The master's background repack in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepackStatus {
    /// The zstd level packs are recompressed to.
    pub level: i32,
    /// A pass is running.
    pub running: bool,
    /// Passes that published a revision since the master started.
    pub runs: u64,
    /// Stored bytes saved by those passes.
    pub bytes_saved: u64,
    /// The revision the last published pass made, if any since the master started.
    pub last_revision: Option<u64>,
}

/// The master's garbage collection in [`StatusResponse`]: packs no kept revision references
/// are deleted from the master and the slaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcStatus {
    /// Builds kept servable (each in its latest, repacked form).
    pub keep_revisions: u32,
    /// Seconds a superseded revision stays stored.
    pub grace_s: u64,
    /// Passes since the master started.
    pub runs: u64,
    /// Revisions whose index was deleted by those passes.
    pub revisions_expired: u64,
    /// Packs deleted from the master's store by those passes, and their bytes.
    pub packs_collected: u64,
    pub bytes_collected: u64,
    /// When the last pass ran, if one has since the master started.
    pub last_run_unix: Option<i64>,
    /// The revisions kept now and why, newest first (at most [`MAX_REVISIONS_LISTED`]; absent
    /// from older masters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<RetainedRevision>,
}

/// A revision the garbage collection keeps, in [`GcStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedRevision {
    /// Its number.
    pub revision: u64,
    /// Why.
    pub reasons: Vec<RetentionReason>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes_are_stable() {
        let d = SlaveDirective {
            slave_id: "s1".into(),
            assign: vec![Assignment {
                pack: Hash::of(b"p"),
                size: 5,
                sources: vec!["http://127.0.0.1:1".into()],
            }],
            drop: vec![],
            heartbeat_interval_ms: 3000,
            hashlist: Some(HashlistVersion { epoch: 9, seq: 4 }),
        };
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["assign"][0]["pack"], Hash::of(b"p").to_hex());
        assert_eq!(j["hashlist"], serde_json::json!({"epoch": 9, "seq": 4}));
        let back: SlaveDirective = serde_json::from_value(j).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            serde_json::to_string(&SlaveState::Stale).unwrap(),
            "\"stale\""
        );
        assert_eq!(
            serde_json::to_string(&BuildState::Succeeded).unwrap(),
            "\"succeeded\""
        );
    }

    /// Peers from before incremental hashlists send and expect neither `hashlist` field.
    #[test]
    fn the_status_repack_field_is_optional_both_ways() {
        let mut st = StatusResponse {
            api_version: 1,
            revision: RevisionInfo {
                revision: Some(2),
                created_unix: Some(1),
                files: 0,
                bytes: 0,
                index_hash: None,
                repository_id: None,
                mass_delete_confirmed: false,
                statement: None,
                key_rotations: vec![],
            },
            build: None,
            slaves: vec![],
            replication: ReplicationHealth {
                target: 2,
                packs: 0,
                under_replicated: 0,
                unavailable: 0,
            },
            clients: vec![],
            clients_total: None,
            repack: None,
            gc: None,
            replicating: None,
            signing: None,
            pushes: vec![],
        };
        // Off (or an older master): absent, and its absence reads as None.
        let j = serde_json::to_value(&st).unwrap();
        assert!(j.get("repack").is_none(), "{j}");
        assert_eq!(serde_json::from_value::<StatusResponse>(j).unwrap(), st);
        st.repack = Some(RepackStatus {
            level: 13,
            running: true,
            runs: 1,
            bytes_saved: 10,
            last_revision: Some(2),
        });
        let j = serde_json::to_value(&st).unwrap();
        assert_eq!(j["repack"]["level"], 13);
        assert_eq!(serde_json::from_value::<StatusResponse>(j).unwrap(), st);
        assert!(serde_json::to_value(&st).unwrap().get("gc").is_none());
        st.gc = Some(GcStatus {
            keep_revisions: 2,
            grace_s: 3600,
            runs: 3,
            revisions_expired: 1,
            packs_collected: 4,
            bytes_collected: 1000,
            last_run_unix: Some(5),
            retained: vec![RetainedRevision {
                revision: 7,
                reasons: vec![RetentionReason::Current, RetentionReason::Pinned],
            }],
        });
        let j = serde_json::to_value(&st).unwrap();
        assert_eq!(j["gc"]["packs_collected"], 4);
        assert_eq!(
            j["gc"]["retained"][0]["reasons"],
            serde_json::json!(["current", "pinned"])
        );
        assert!(j.get("replicating").is_none(), "{j}");
        assert_eq!(serde_json::from_value::<StatusResponse>(j).unwrap(), st);
        st.replicating = Some(ReplicatingStatus {
            packs: 3,
            without_copy: 2,
            master_fallback: true,
            fallback_active: 1,
            fallback_limit: 4,
        });
        let j = serde_json::to_value(&st).unwrap();
        assert_eq!(j["replicating"]["without_copy"], 2);
        assert_eq!(serde_json::from_value::<StatusResponse>(j).unwrap(), st);
    }

    /// Older clients read a locate answer without the fallback fields, and a newer client reads
    /// an older master's answer.
    #[test]
    fn the_locate_fallback_fields_are_optional_both_ways() {
        let old = serde_json::json!({
            "slaves": [{"id": "s1", "url": "http://127.0.0.1:1"}], "holders": [[0], []]
        });
        let l: LocateResponse = serde_json::from_value(old.clone()).unwrap();
        assert_eq!((l.fallback, l.target), (None, None));
        assert_eq!(serde_json::to_value(&l).unwrap(), old);
        let l = LocateResponse {
            fallback: Some(1),
            target: Some(2),
            ..l
        };
        let j = serde_json::to_value(&l).unwrap();
        assert_eq!(
            (j["fallback"].as_u64(), j["target"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(serde_json::from_value::<LocateResponse>(j).unwrap(), l);
    }

    #[test]
    fn hashlist_fields_are_optional_both_ways() {
        let old_directive = serde_json::json!({
            "slave_id": "s1", "assign": [], "drop": [], "heartbeat_interval_ms": 3000
        });
        let d: SlaveDirective = serde_json::from_value(old_directive.clone()).unwrap();
        assert_eq!(d.hashlist, None);
        assert_eq!(serde_json::to_value(&d).unwrap(), old_directive);
        let old_heartbeat = serde_json::json!({
            "slave_id": "s1", "used": 0, "packs": 0, "replicating": 0, "corrupt": []
        });
        let hb: Heartbeat = serde_json::from_value(old_heartbeat.clone()).unwrap();
        assert_eq!(hb.hashlist, None);
        assert_eq!(serde_json::to_value(&hb).unwrap(), old_heartbeat);

        let changes = HashlistChanges {
            epoch: 9,
            base: 4,
            seq: 6,
            added: vec![Hash::of(b"a")],
            removed: vec![],
        };
        assert_eq!(changes.proposed(), HashlistVersion { epoch: 9, seq: 6 });
        assert_eq!(changes.base_version(), HashlistVersion { epoch: 9, seq: 4 });
        let hb = Heartbeat {
            hashlist: Some(changes),
            ..hb
        };
        let j = serde_json::to_value(&hb).unwrap();
        assert_eq!(j["hashlist"]["added"][0], Hash::of(b"a").to_hex());
        assert_eq!(serde_json::from_value::<Heartbeat>(j).unwrap(), hb);
    }

    /// The case the incremental hashlist is for: a slave of a 200 GB tree (~6,400 packs of
    /// 16 MiB) replicating at ~100 MB/s reports about 6 new packs per coalesced heartbeat.
    #[test]
    fn a_heartbeat_with_changes_is_small_beside_the_complete_hashlist() {
        let packs: Vec<Hash> = (0u32..6400).map(|i| Hash::of(&i.to_le_bytes())).collect();
        let full = serde_json::to_vec(&SlaveHashlist {
            slave_id: "0123456789abcdef0123456789abcdef".into(),
            url: "http://10.0.0.5:7071".into(),
            quota: Some(250 << 30),
            used: 6400 << 24,
            packs: packs.clone(),
            read_token_digest: None,
        })
        .unwrap()
        .len();
        let heartbeat = |added: &[Hash], removed: &[Hash]| {
            serde_json::to_vec(&Heartbeat {
                slave_id: "0123456789abcdef0123456789abcdef".into(),
                used: 6400 << 24,
                packs: 6400,
                replicating: 120,
                corrupt: vec![],
                hashlist: Some(HashlistChanges {
                    epoch: 1 << 61,
                    base: 1234,
                    seq: 1235,
                    added: added.to_vec(),
                    removed: removed.to_vec(),
                }),
                bytes_served: Some(u64::MAX),
            })
            .unwrap()
            .len()
        };
        let typical = heartbeat(&packs[..6], &[]);
        let largest = heartbeat(&packs[..MAX_HASHLIST_CHANGES], &[]);
        assert!((420_000..440_000).contains(&full), "{full}");
        assert!(typical < 800, "{typical}");
        assert!(largest < full / 6, "{largest} vs {full}");
    }
}
