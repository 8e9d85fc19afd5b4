//! Endpoints and their bodies.
//!
//! Client → master (read token if configured):
//! - `GET  /api/v1/revision` → [`RevisionInfo`] (cheap; the no-op check)
//! - `GET  /api/v1/index?revision=N&path=SUB[&since=M]` → encoded [`hummel_core::Index`] of the
//!   subtree (`application/octet-stream`); `revision` defaults to the current one, `path` to the
//!   root. With `since=M` (the revision the client holds) the answer may instead be an encoded
//!   [`hummel_core::delta::IndexDelta`] from M (header `X-Hummel-Index-Kind: delta`; the magic
//!   says so too); the client rebuilds N from the index it holds.
//! - `POST /api/v1/locate` [`LocateRequest`] → [`LocateResponse`]: which live slaves hold which packs
//! - `POST /api/v1/client/report` [`ClientReport`] → 204: what the client now holds
//! - `GET  /api/v1/status` → [`StatusResponse`]
//! - `GET  /api/v1/builds/{id}` → [`BuildStatus`]; `GET /api/v1/builds/latest` likewise
//!
//! Admin → master (write token): `POST /build` → 202 [`BuildStarted`]
//!
//! Slave → master (slave token):
//! - `POST /slave/hashlist` [`SlaveHashlist`] → [`SlaveDirective`] (an empty list introduces a slave)
//! - `POST /slave/heartbeat` [`Heartbeat`] → [`SlaveDirective`]; 404 `unknown_slave` asks the
//!   slave to announce its hashlist again
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
/// `POST /api/v1/locate`.
pub const LOCATE: &str = "/api/v1/locate";
/// `POST /api/v1/client/report`.
pub const CLIENT_REPORT: &str = "/api/v1/client/report";
/// `GET /api/v1/status`.
pub const STATUS: &str = "/api/v1/status";
/// `GET /api/v1/builds/{id}` (or `latest`).
pub const BUILDS: &str = "/api/v1/builds";
/// `POST /build`.
pub const BUILD: &str = "/build";
/// `POST /slave/hashlist`.
pub const SLAVE_HASHLIST: &str = "/slave/hashlist";
/// `POST /slave/heartbeat`.
pub const SLAVE_HEARTBEAT: &str = "/slave/heartbeat";
/// `GET /blob/{hash}` prefix.
pub const BLOB: &str = "/blob";
/// `GET /health`.
pub const HEALTH: &str = "/health";
/// `GET /metrics`.
pub const METRICS: &str = "/metrics";

/// Largest JSON request body any endpoint accepts.
pub const MAX_JSON_BODY: usize = 64 << 20;

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
    /// BLAKE3 of the encoded index body of the whole revision.
    pub index_hash: Option<Hash>,
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
/// the live slaves holding it, best first. Stale and dead slaves are never listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateResponse {
    /// The slaves referred to.
    pub slaves: Vec<SlaveEndpoint>,
    /// One list per requested pack.
    pub holders: Vec<Vec<u32>>,
}

/// `POST /api/v1/client/report`: what a client holds after a sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// Stable random id the client keeps in its state folder.
    pub client_id: String,
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
}

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
}

/// `POST /slave/heartbeat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The slave's id.
    pub slave_id: String,
    /// Bytes stored.
    pub used: u64,
    /// Packs stored.
    pub packs: u64,
    /// Packs being fetched.
    pub replicating: u64,
    /// Packs found corrupt since the last report (quarantined, no longer held).
    pub corrupt: Vec<Hash>,
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
    /// Clients.
    pub clients: Vec<ClientStatus>,
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
        };
        let j = serde_json::to_value(&d).unwrap();
        assert_eq!(j["assign"][0]["pack"], Hash::of(b"p").to_hex());
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
}
