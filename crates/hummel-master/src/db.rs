//! [`Db`]: the metadata database `DATA/hummel.db` (SQLite, WAL).
//!
//! Tables: `revisions` (one row per published revision; the current one is the highest),
//! `packs` (the pack enumeration: number → hash, size, and since schema 2 the zstd level it was
//! written at, for the repack), `chunks` (where every published chunk lives; the repack moves
//! chunks to its packs), `slaves` and `replicas` (who holds which pack), `clients` (what each
//! client holds, and since schema 6 the hash of its key), `builds` (build history), since
//! schema 4 `meta` (the repository id), since schema 7 `slave_identities` (each slave's
//! enrolled public key and the highest nonce it signed, `crate::identity`) and since schema 8
//! `revision_notes` (each revision's message, change summary and the revision a rollback
//! published again, `crate::history`; revisions from before have none: their summary is
//! unknown), and since schema 9 `slaves.draining_ms` (when the admin began draining the
//! slave, NULL: not draining; `crate::fleet`). The schema version is `PRAGMA user_version`; an
//! older database is migrated step by step on open, each step in one transaction. A slave's
//! replica set is replaced whole by its complete hashlist ([`Db::record_hashlist`]) and changed
//! pack by pack by the changes its heartbeats carry ([`Db::record_heartbeat`]), each in one
//! transaction. The garbage collection ([`Db::collect`]) marks packs collected instead of
//! deleting their rows, so that a pack number is never given twice, and deletes their chunk and
//! replica rows.
//!
//! The master keeps one writer connection behind a mutex and mirrors the small tables in memory;
//! the build opens its own read-only connection to load the chunk table. Every call here is
//! blocking I/O: callers on the async runtime use `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hummel_core::changes::ChangeSummary;
use hummel_core::codec::DEFAULT_ZSTD_LEVEL;
use hummel_core::{ChunkLocation, Codec, Hash, PackInfo};
use hummel_proto::api::{BuildState, BuildStatus};
use rusqlite::{Connection, OpenFlags, Row, params};

use crate::error::MasterError;
use crate::tracker::{ClientRecord, SlaveRecord};

/// A row of `slave_identities`: id, public key, enrolment time (Unix ms), highest nonce.
pub(crate) type IdentityRow = (String, [u8; 32], u64, u64);

/// The schema this build writes.
pub(crate) const SCHEMA_VERSION: i64 = 9;

/// Version 1 → 2: the zstd level each pack was written at, so the background repack knows
/// which packs are below its level. Every pack of a version-1 database was written by a build,
/// and builds have always compressed at [`DEFAULT_ZSTD_LEVEL`].
const MIGRATE_V1_TO_V2: &str =
    "ALTER TABLE packs ADD COLUMN zstd_level INTEGER NOT NULL DEFAULT 3;";
// The migration's default is only true while builds compress at level 3.
const _: () = assert!(DEFAULT_ZSTD_LEVEL == 3);

/// Version 2 → 3: when the garbage collection deleted a pack (NULL: stored). The row stays as a
/// tombstone: it keeps the number from being given again.
const MIGRATE_V2_TO_V3: &str = "ALTER TABLE packs ADD COLUMN collected_unix INTEGER;";

/// Version 3 → 4: the repository id, random 128 bits in lower-case hex, made once with the
/// database (or by this step for an older one). With the index hash it tells two trees
/// published under one number apart, e.g. by two masters, or one reset to an empty folder.
const MIGRATE_V3_TO_V4: &str = "
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES ('repository_id', lower(hex(randomblob(16))));";

/// Version 4 → 5: whether the admin confirmed that a revision removes most of the repository
/// (`hummel build --allow-mass-delete`); earlier revisions needed no confirmation.
const MIGRATE_V4_TO_V5: &str =
    "ALTER TABLE revisions ADD COLUMN mass_delete_confirmed INTEGER NOT NULL DEFAULT 0;";

/// Version 5 → 6: the BLAKE3 hash of each client's key (`crate::clients`; NULL for a row from
/// before keys, claimed by the next keyed report), and an index for the expiry of old rows.
const MIGRATE_V5_TO_V6: &str = "
ALTER TABLE clients ADD COLUMN key_hash BLOB;
CREATE INDEX clients_by_last_seen ON clients(last_seen_ms);";

/// Version 6 → 7: slave identities (`crate::identity`). Each slave id is bound to the Ed25519
/// public key its first signed hashlist enrolled, until the admin removes the slave; the
/// highest nonce it signed keeps recorded requests from being replayed, across restarts too.
/// Slaves from before identities have no row: their next signed hashlist enrolls them.
const MIGRATE_SLAVE_IDENTITIES: &str = "
CREATE TABLE slave_identities (
    id           TEXT    PRIMARY KEY,
    public_key   BLOB    NOT NULL,
    enrolled_ms  INTEGER NOT NULL,
    last_nonce   INTEGER NOT NULL
) WITHOUT ROWID;";

/// Version 7 → 8: what each revision brings (`crate::history`): the admin's message, the
/// counts of files added, updated and removed from the revision before and the bytes written,
/// and for a rollback the revision whose tree it published again. Written in the transaction
/// that publishes the revision; older revisions have no row (their summary is unknown). And
/// `client_pins`: the revision each client reported it is pinned to (`hummel sync
/// --revision N`), which the garbage collection keeps while the report is recent.
const MIGRATE_REVISION_NOTES: &str = "
CREATE TABLE revision_notes (
    number         INTEGER PRIMARY KEY,
    message        TEXT,
    files_added    INTEGER NOT NULL,
    files_updated  INTEGER NOT NULL,
    files_removed  INTEGER NOT NULL,
    bytes_changed  INTEGER NOT NULL,
    rollback_of    INTEGER
);
CREATE TABLE client_pins (
    client_id     TEXT    PRIMARY KEY,
    revision      INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
) WITHOUT ROWID;";

/// Version 8 → 9: when the admin began draining each slave (`hummel drain-slave`, the
/// dashboard), NULL when it is not draining: a draining slave gets no new packs and its packs
/// are placed on the others (`crate::fleet`). Removing the slave removes its row and so ends
/// the drain.
const MIGRATE_SLAVE_DRAINS: &str = "ALTER TABLE slaves ADD COLUMN draining_ms INTEGER;";

const SCHEMA_V1: &str = "
CREATE TABLE revisions (
    number        INTEGER PRIMARY KEY,
    created_unix  INTEGER NOT NULL,
    index_hash    BLOB    NOT NULL,
    files         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    build_id      INTEGER,
    build_started_unix INTEGER NOT NULL
);
CREATE TABLE packs (
    number    INTEGER PRIMARY KEY,
    hash      BLOB    NOT NULL UNIQUE,
    size      INTEGER NOT NULL,
    revision  INTEGER NOT NULL
);
CREATE TABLE chunks (
    hash        BLOB    PRIMARY KEY,
    pack        INTEGER NOT NULL REFERENCES packs(number),
    offset      INTEGER NOT NULL,
    stored_len  INTEGER NOT NULL,
    len         INTEGER NOT NULL,
    codec       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE slaves (
    id             TEXT    PRIMARY KEY,
    url            TEXT    NOT NULL,
    quota          INTEGER,
    used           INTEGER NOT NULL,
    replicating    INTEGER NOT NULL DEFAULT 0,
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL
);
CREATE TABLE replicas (
    slave_id  TEXT    NOT NULL REFERENCES slaves(id) ON DELETE CASCADE,
    pack      INTEGER NOT NULL REFERENCES packs(number),
    PRIMARY KEY (slave_id, pack)
) WITHOUT ROWID;
CREATE TABLE clients (
    id            TEXT    PRIMARY KEY,
    addr          TEXT    NOT NULL,
    revision      INTEGER NOT NULL,
    path          TEXT    NOT NULL,
    files         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
);
CREATE TABLE builds (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    state          TEXT    NOT NULL,
    revision       INTEGER,
    error          TEXT,
    started_unix   INTEGER NOT NULL,
    finished_unix  INTEGER,
    files_total    INTEGER NOT NULL DEFAULT 0,
    files_done     INTEGER NOT NULL DEFAULT 0,
    bytes_total    INTEGER NOT NULL DEFAULT 0,
    bytes_done     INTEGER NOT NULL DEFAULT 0,
    files_reused   INTEGER NOT NULL DEFAULT 0,
    packs_written  INTEGER NOT NULL DEFAULT 0,
    warnings       TEXT    NOT NULL DEFAULT '[]'
);
";

/// One published revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RevisionRow {
    pub number: u64,
    pub created_unix: i64,
    pub index_hash: Hash,
    pub files: u64,
    pub bytes: u64,
    /// When the build that published it started: files modified after that may have changed
    /// while being read, so they are not reused without reading.
    pub build_started_unix: i64,
    /// The build that published it; `None` for the repack's revisions (the same tree as the
    /// revision before, in other packs).
    pub build_id: Option<u64>,
    /// The admin confirmed that it removes most of the repository (a repack's revision keeps
    /// the confirmation of the tree it repacked).
    pub mass_delete_confirmed: bool,
}

/// What a revision brings, besides its tree (`revision_notes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NoteRow {
    pub number: u64,
    /// The admin's message.
    pub message: Option<String>,
    /// What changed from the revision before.
    pub summary: ChangeSummary,
    /// The revision whose tree a rollback published again.
    pub rollback_of: Option<u64>,
}

/// What one build (or repack) publishes in one transaction.
pub(crate) struct Publication<'a> {
    pub revision: &'a RevisionRow,
    /// Its note (`None`: none recorded).
    pub note: Option<&'a NoteRow>,
    pub new_packs: &'a [PackInfo],
    /// The zstd level `new_packs` were written at.
    pub pack_level: i32,
    /// Published packs that this level rewrote to the same bytes: their level becomes
    /// `pack_level`.
    pub relevelled_packs: &'a [u32],
    /// Chunks not published before (a chunk already in the table keeps its location).
    pub new_chunks: &'a [ChunkLocation],
    /// Published chunks that now live elsewhere (the repack): their rows are replaced, so later
    /// builds reuse the new location.
    pub moved_chunks: &'a [ChunkLocation],
}

/// SQLite stores signed integers; Hummel's sizes fit, anything larger saturates.
pub(crate) fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn from_sql_int(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn hash_from_blob(blob: Vec<u8>, column: usize) -> rusqlite::Result<Hash> {
    let arr: [u8; 32] = blob.try_into().map_err(|b: Vec<u8>| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Blob,
            format!("expected a 32-byte hash, found {} bytes", b.len()).into(),
        )
    })?;
    Ok(Hash(arr))
}

fn codec_from_int(v: i64) -> rusqlite::Result<Codec> {
    match v {
        0 => Ok(Codec::Raw),
        1 => Ok(Codec::Zstd),
        other => Err(rusqlite::Error::IntegralValueOutOfRange(5, other)),
    }
}

fn state_name(state: BuildState) -> &'static str {
    match state {
        BuildState::Running => "running",
        BuildState::Succeeded => "succeeded",
        BuildState::Failed => "failed",
    }
}

fn state_from_name(name: &str) -> BuildState {
    match name {
        "running" => BuildState::Running,
        "succeeded" => BuildState::Succeeded,
        _ => BuildState::Failed,
    }
}

/// A connection to the metadata database.
pub(crate) struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating and migrating) the database read-write.
    pub(crate) fn open(path: &Path) -> Result<Db, MasterError> {
        let conn = Connection::open(path).map_err(db_err(path))?;
        let db = Db {
            conn,
            path: path.to_path_buf(),
        };
        db.configure()?;
        db.migrate()?;
        Ok(db)
    }

    /// Opens a read-only connection (the build's chunk lookups).
    pub(crate) fn open_reader(path: &Path) -> Result<Db, MasterError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err(path))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(db_err(path))?;
        Ok(Db {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self) -> impl FnOnce(rusqlite::Error) -> MasterError + '_ {
        db_err(&self.path)
    }

    fn configure(&self) -> Result<(), MasterError> {
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(self.err())?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %self.path.display(), mode, "SQLite refused WAL mode");
        }
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(self.err())?;
        // FULL: a published revision survives power loss, so a number is never reused.
        self.conn
            .execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL;")
            .map_err(self.err())
    }

    /// Moves the write-ahead log into the database file and empties it (a clean stop: the
    /// folder holds one file that is the whole database).
    pub(crate) fn checkpoint(&self) -> Result<(), MasterError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(self.err())
    }

    fn migrate(&self) -> Result<(), MasterError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err())?;
        if version > SCHEMA_VERSION {
            return Err(MasterError::SchemaVersion {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        // Each step runs in one transaction with the version it reaches.
        if version == 0 {
            self.conn
                .execute_batch(&format!(
                    "BEGIN; {SCHEMA_V1} {MIGRATE_V1_TO_V2} {MIGRATE_V2_TO_V3} {MIGRATE_V3_TO_V4}
                     {MIGRATE_V4_TO_V5} {MIGRATE_V5_TO_V6} {MIGRATE_SLAVE_IDENTITIES}
                     {MIGRATE_REVISION_NOTES} {MIGRATE_SLAVE_DRAINS}
                     PRAGMA user_version={SCHEMA_VERSION};
                     COMMIT;"
                ))
                .map_err(self.err())?;
            return Ok(());
        }
        let steps = [
            (1, MIGRATE_V1_TO_V2),
            (2, MIGRATE_V2_TO_V3),
            (3, MIGRATE_V3_TO_V4),
            (4, MIGRATE_V4_TO_V5),
            (5, MIGRATE_V5_TO_V6),
            (6, MIGRATE_SLAVE_IDENTITIES),
            (7, MIGRATE_REVISION_NOTES),
            (8, MIGRATE_SLAVE_DRAINS),
        ];
        for (from, sql) in steps.into_iter().filter(|(from, _)| *from >= version) {
            let to = from + 1;
            tracing::info!(path = %self.path.display(), "migrating the database schema from {from} to {to}");
            self.conn
                .execute_batch(&format!("BEGIN; {sql} PRAGMA user_version={to}; COMMIT;"))
                .map_err(self.err())?;
        }
        Ok(())
    }

    /// The repository id made with the database.
    pub(crate) fn repository_id(&self) -> Result<String, MasterError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key='repository_id'",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// Every revision, oldest first.
    pub(crate) fn load_revisions(&self) -> Result<Vec<RevisionRow>, MasterError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT number, created_unix, index_hash, files, bytes, build_started_unix,
                    build_id, mass_delete_confirmed
                 FROM revisions ORDER BY number",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RevisionRow {
                    number: from_sql_int(r.get(0)?),
                    created_unix: r.get(1)?,
                    index_hash: hash_from_blob(r.get(2)?, 2)?,
                    files: from_sql_int(r.get(3)?),
                    bytes: from_sql_int(r.get(4)?),
                    build_started_unix: r.get(5)?,
                    build_id: r.get::<_, Option<i64>>(6)?.map(from_sql_int),
                    mass_delete_confirmed: r.get(7)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Every stored (not collected) pack with the zstd level it was written at, by number.
    pub(crate) fn load_packs(&self) -> Result<Vec<(PackInfo, i32)>, MasterError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT number, hash, size, zstd_level FROM packs
                 WHERE collected_unix IS NULL ORDER BY number",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let number: i64 = r.get(0)?;
                let pack = PackInfo {
                    number: u32::try_from(number)
                        .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, number))?,
                    hash: hash_from_blob(r.get(1)?, 1)?,
                    size: from_sql_int(r.get(2)?),
                };
                Ok((pack, r.get(3)?))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// The highest pack number ever given, collected packs included (0: none).
    pub(crate) fn max_pack_number(&self) -> Result<u32, MasterError> {
        let n: Option<i64> = self
            .conn
            .query_row("SELECT max(number) FROM packs", [], |r| r.get(0))
            .map_err(self.err())?;
        Ok(n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0))
    }

    /// Marks `packs` collected at `now_unix` and deletes their chunk and replica rows, in one
    /// transaction: no later build reuses a chunk from them, and no slave counts as holding
    /// them. Collected rows stay, so their numbers are never given again.
    pub(crate) fn collect(&mut self, packs: &[u32], now_unix: i64) -> Result<(), MasterError> {
        if packs.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(db_err(&path))?;
        {
            let mut mark = tx
                .prepare("UPDATE packs SET collected_unix=?2 WHERE number=?1")
                .map_err(db_err(&path))?;
            let mut replicas = tx
                .prepare("DELETE FROM replicas WHERE pack=?1")
                .map_err(db_err(&path))?;
            for n in packs {
                mark.execute(params![n, now_unix]).map_err(db_err(&path))?;
                replicas.execute(params![n]).map_err(db_err(&path))?;
            }
            // One pass over the chunk table (keyed by hash) for all packs.
            tx.execute(
                "DELETE FROM chunks WHERE pack IN
                    (SELECT number FROM packs WHERE collected_unix IS NOT NULL)",
                [],
            )
            .map_err(db_err(&path))?;
        }
        tx.commit().map_err(db_err(&path))
    }

    /// Every published chunk with its location. Memory: ~100 bytes per chunk.
    pub(crate) fn load_chunks(&self) -> Result<HashMap<Hash, ChunkLocation>, MasterError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash, pack, offset, stored_len, len, codec FROM chunks")
            .map_err(self.err())?;
        let rows = stmt.query_map([], chunk_from_row).map_err(self.err())?;
        let mut out = HashMap::new();
        for row in rows {
            let c = row.map_err(self.err())?;
            out.insert(c.hash, c);
        }
        Ok(out)
    }

    /// Publishes a revision with its new packs and chunks in one transaction.
    pub(crate) fn publish(&mut self, p: &Publication<'_>) -> Result<(), MasterError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(db_err(&path))?;
        {
            // A new pack may have the bytes of a collected one: its tombstone gives way.
            let mut tombstone_stmt = tx
                .prepare("DELETE FROM packs WHERE hash=?1 AND collected_unix IS NOT NULL")
                .map_err(db_err(&path))?;
            let mut pack_stmt = tx
                .prepare(
                    "INSERT INTO packs(number, hash, size, revision, zstd_level)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err(&path))?;
            for pack in p.new_packs {
                tombstone_stmt
                    .execute(params![&pack.hash.0[..]])
                    .map_err(db_err(&path))?;
                pack_stmt
                    .execute(params![
                        pack.number,
                        &pack.hash.0[..],
                        to_sql_int(pack.size),
                        to_sql_int(p.revision.number),
                        p.pack_level
                    ])
                    .map_err(db_err(&path))?;
            }
            let mut level_stmt = tx
                .prepare("UPDATE packs SET zstd_level=?2 WHERE number=?1")
                .map_err(db_err(&path))?;
            for n in p.relevelled_packs {
                level_stmt
                    .execute(params![n, p.pack_level])
                    .map_err(db_err(&path))?;
            }
            let mut chunk_stmt = tx
                .prepare(
                    "INSERT OR IGNORE INTO chunks(hash, pack, offset, stored_len, len, codec)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_err(&path))?;
            for c in p.new_chunks {
                insert_chunk(&mut chunk_stmt, c).map_err(db_err(&path))?;
            }
            let mut moved_stmt = tx
                .prepare(
                    "INSERT OR REPLACE INTO chunks(hash, pack, offset, stored_len, len, codec)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_err(&path))?;
            for c in p.moved_chunks {
                insert_chunk(&mut moved_stmt, c).map_err(db_err(&path))?;
            }
            tx.execute(
                "INSERT INTO revisions(number, created_unix, index_hash, files, bytes, build_id,
                    build_started_unix, mass_delete_confirmed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    to_sql_int(p.revision.number),
                    p.revision.created_unix,
                    &p.revision.index_hash.0[..],
                    to_sql_int(p.revision.files),
                    to_sql_int(p.revision.bytes),
                    p.revision.build_id.map(to_sql_int),
                    p.revision.build_started_unix,
                    p.revision.mass_delete_confirmed
                ],
            )
            .map_err(db_err(&path))?;
            if let Some(n) = p.note {
                tx.execute(
                    "INSERT OR REPLACE INTO revision_notes(number, message, files_added,
                        files_updated, files_removed, bytes_changed, rollback_of)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        to_sql_int(p.revision.number),
                        n.message,
                        to_sql_int(n.summary.files_added),
                        to_sql_int(n.summary.files_updated),
                        to_sql_int(n.summary.files_removed),
                        to_sql_int(n.summary.bytes_changed),
                        n.rollback_of.map(to_sql_int)
                    ],
                )
                .map_err(db_err(&path))?;
            }
        }
        tx.commit().map_err(db_err(&path))
    }

    /// Records that client `id` is pinned to `revision` (or no longer pinned: `None`), and
    /// forgets pins reported before `cutoff_ms`.
    pub(crate) fn record_pin(
        &self,
        id: &str,
        revision: Option<u64>,
        now_ms: u64,
        cutoff_ms: u64,
    ) -> Result<(), MasterError> {
        match revision {
            Some(n) => self.conn.execute(
                "INSERT OR REPLACE INTO client_pins(client_id, revision, last_seen_ms)
                 VALUES (?1, ?2, ?3)",
                params![id, to_sql_int(n), to_sql_int(now_ms)],
            ),
            None => self
                .conn
                .execute("DELETE FROM client_pins WHERE client_id=?1", params![id]),
        }
        .map_err(self.err())?;
        self.conn
            .execute(
                "DELETE FROM client_pins WHERE last_seen_ms < ?1",
                params![to_sql_int(cutoff_ms)],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Every client pin: client id, revision, when reported (Unix ms).
    pub(crate) fn load_pins(&self) -> Result<Vec<(String, u64, u64)>, MasterError> {
        let mut stmt = self
            .conn
            .prepare("SELECT client_id, revision, last_seen_ms FROM client_pins")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, from_sql_int(r.get(1)?), from_sql_int(r.get(2)?)))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Every revision note, by number.
    pub(crate) fn load_notes(&self) -> Result<Vec<NoteRow>, MasterError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT number, message, files_added, files_updated, files_removed,
                    bytes_changed, rollback_of
                 FROM revision_notes ORDER BY number",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(NoteRow {
                    number: from_sql_int(r.get(0)?),
                    message: r.get(1)?,
                    summary: ChangeSummary {
                        files_added: from_sql_int(r.get(2)?),
                        files_updated: from_sql_int(r.get(3)?),
                        files_removed: from_sql_int(r.get(4)?),
                        bytes_changed: from_sql_int(r.get(5)?),
                    },
                    rollback_of: r.get::<_, Option<i64>>(6)?.map(from_sql_int),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Records a new running build; returns its id.
    pub(crate) fn insert_build(&self, started_unix: i64) -> Result<u64, MasterError> {
        self.conn
            .execute(
                "INSERT INTO builds(state, started_unix) VALUES ('running', ?1)",
                params![started_unix],
            )
            .map_err(self.err())?;
        Ok(from_sql_int(self.conn.last_insert_rowid()))
    }

    /// Stores the final status of a build.
    pub(crate) fn finish_build(&self, s: &BuildStatus) -> Result<(), MasterError> {
        let warnings = serde_json::to_string(&s.warnings).unwrap_or_else(|_| "[]".into());
        self.conn
            .execute(
                "UPDATE builds SET state=?2, revision=?3, error=?4, finished_unix=?5,
                    files_total=?6, files_done=?7, bytes_total=?8, bytes_done=?9,
                    files_reused=?10, packs_written=?11, warnings=?12
                 WHERE id=?1",
                params![
                    to_sql_int(s.id),
                    state_name(s.state),
                    s.revision.map(to_sql_int),
                    s.error,
                    s.finished_unix,
                    to_sql_int(s.files_total),
                    to_sql_int(s.files_done),
                    to_sql_int(s.bytes_total),
                    to_sql_int(s.bytes_done),
                    to_sql_int(s.files_reused),
                    to_sql_int(s.packs_written),
                    warnings
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Marks builds that were running when the process died as failed.
    pub(crate) fn fail_interrupted_builds(&self, now_unix: i64) -> Result<usize, MasterError> {
        self.conn
            .execute(
                "UPDATE builds SET state='failed', error='interrupted: the master stopped during the build',
                    finished_unix=?1 WHERE state='running'",
                params![now_unix],
            )
            .map_err(self.err())
    }

    /// Every build, oldest first.
    pub(crate) fn load_builds(&self) -> Result<Vec<BuildStatus>, MasterError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, state, revision, error, started_unix, finished_unix, files_total,
                        files_done, bytes_total, bytes_done, files_reused, packs_written, warnings
                 FROM builds ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let state: String = r.get(1)?;
                let warnings: String = r.get(12)?;
                Ok(BuildStatus {
                    id: from_sql_int(r.get(0)?),
                    state: state_from_name(&state),
                    revision: r.get::<_, Option<i64>>(2)?.map(from_sql_int),
                    error: r.get(3)?,
                    started_unix: r.get(4)?,
                    finished_unix: r.get(5)?,
                    files_total: from_sql_int(r.get(6)?),
                    files_done: from_sql_int(r.get(7)?),
                    bytes_total: from_sql_int(r.get(8)?),
                    bytes_done: from_sql_int(r.get(9)?),
                    files_reused: from_sql_int(r.get(10)?),
                    packs_written: from_sql_int(r.get(11)?),
                    warnings: serde_json::from_str(&warnings).unwrap_or_default(),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Upserts a slave and replaces its replica set, in one transaction.
    pub(crate) fn record_hashlist(&mut self, slave: &SlaveRecord) -> Result<(), MasterError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(db_err(&path))?;
        tx.execute(
            "INSERT INTO slaves(id, url, quota, used, replicating, first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET url=excluded.url, quota=excluded.quota,
                used=excluded.used, replicating=excluded.replicating,
                last_seen_ms=excluded.last_seen_ms",
            params![
                slave.id,
                slave.url,
                slave.quota.map(to_sql_int),
                to_sql_int(slave.used),
                to_sql_int(slave.replicating),
                to_sql_int(slave.last_seen_ms),
                to_sql_int(slave.last_seen_ms)
            ],
        )
        .map_err(db_err(&path))?;
        tx.execute("DELETE FROM replicas WHERE slave_id=?1", params![slave.id])
            .map_err(db_err(&path))?;
        {
            let mut stmt = tx
                .prepare("INSERT OR IGNORE INTO replicas(slave_id, pack) VALUES (?1, ?2)")
                .map_err(db_err(&path))?;
            for pack in &slave.packs {
                stmt.execute(params![slave.id, pack])
                    .map_err(db_err(&path))?;
            }
        }
        tx.commit().map_err(db_err(&path))
    }

    /// Records a heartbeat in one transaction: liveness, usage, and the change to the slave's
    /// replica set (packs found corrupt, and the hashlist changes the master accepted):
    /// `remove` first, then `add`.
    pub(crate) fn record_heartbeat(
        &mut self,
        slave_id: &str,
        used: u64,
        replicating: u64,
        last_seen_ms: u64,
        remove: &[u32],
        add: &[u32],
    ) -> Result<(), MasterError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(db_err(&path))?;
        tx.execute(
            "UPDATE slaves SET used=?2, replicating=?3, last_seen_ms=?4 WHERE id=?1",
            params![
                slave_id,
                to_sql_int(used),
                to_sql_int(replicating),
                to_sql_int(last_seen_ms)
            ],
        )
        .map_err(db_err(&path))?;
        {
            let mut stmt = tx
                .prepare("DELETE FROM replicas WHERE slave_id=?1 AND pack=?2")
                .map_err(db_err(&path))?;
            for pack in remove {
                stmt.execute(params![slave_id, pack])
                    .map_err(db_err(&path))?;
            }
            let mut stmt = tx
                .prepare("INSERT OR IGNORE INTO replicas(slave_id, pack) VALUES (?1, ?2)")
                .map_err(db_err(&path))?;
            for pack in add {
                stmt.execute(params![slave_id, pack])
                    .map_err(db_err(&path))?;
            }
        }
        tx.commit().map_err(db_err(&path))
    }

    /// Every enrolled slave identity: id, public key, enrolment time, highest nonce.
    pub(crate) fn load_slave_identities(&self) -> Result<Vec<IdentityRow>, MasterError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, public_key, enrolled_ms, last_nonce FROM slave_identities")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    from_sql_int(r.get(2)?),
                    from_sql_int(r.get(3)?),
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, key, enrolled, nonce) = row.map_err(self.err())?;
            // A key of another length cannot have been written by this code: skip it (the
            // slave enrolls again).
            if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                out.push((id, key, enrolled, nonce));
            }
        }
        Ok(out)
    }

    /// Enrolls `key` for slave `id` (or records its newer nonce, when already enrolled with it).
    pub(crate) fn record_slave_identity(
        &self,
        id: &str,
        key: &[u8; 32],
        enrolled_ms: u64,
        nonce: u64,
    ) -> Result<(), MasterError> {
        self.conn
            .execute(
                "INSERT INTO slave_identities(id, public_key, enrolled_ms, last_nonce)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET last_nonce=excluded.last_nonce
                 WHERE public_key=excluded.public_key",
                params![id, &key[..], to_sql_int(enrolled_ms), to_sql_int(nonce)],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Forgets slave `id`: its row, replicas and identity, in one transaction. Returns whether
    /// it was known.
    pub(crate) fn remove_slave(&mut self, id: &str) -> Result<bool, MasterError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(db_err(&path))?;
        tx.execute("DELETE FROM replicas WHERE slave_id=?1", params![id])
            .map_err(db_err(&path))?;
        let rows = tx
            .execute("DELETE FROM slaves WHERE id=?1", params![id])
            .map_err(db_err(&path))?;
        let keys = tx
            .execute("DELETE FROM slave_identities WHERE id=?1", params![id])
            .map_err(db_err(&path))?;
        tx.commit().map_err(db_err(&path))?;
        Ok(rows + keys > 0)
    }

    /// Marks slave `id` as draining (`true`, keeping the time a drain began) or not. Returns
    /// whether the slave is known.
    pub(crate) fn set_draining(
        &mut self,
        id: &str,
        draining: bool,
        now_ms: u64,
    ) -> Result<bool, MasterError> {
        let changed = if draining {
            self.conn.execute(
                "UPDATE slaves SET draining_ms=COALESCE(draining_ms, ?2) WHERE id=?1",
                params![id, to_sql_int(now_ms)],
            )
        } else {
            self.conn.execute(
                "UPDATE slaves SET draining_ms=NULL WHERE id=?1",
                params![id],
            )
        }
        .map_err(self.err())?;
        Ok(changed > 0)
    }

    /// Every slave with its replica set.
    pub(crate) fn load_slaves(&self) -> Result<Vec<SlaveRecord>, MasterError> {
        let mut slaves: Vec<SlaveRecord> = {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, url, quota, used, replicating, last_seen_ms, draining_ms FROM slaves
                     ORDER BY id",
                )
                .map_err(self.err())?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(SlaveRecord {
                        id: r.get(0)?,
                        url: r.get(1)?,
                        quota: r.get::<_, Option<i64>>(2)?.map(from_sql_int),
                        used: from_sql_int(r.get(3)?),
                        replicating: from_sql_int(r.get(4)?),
                        last_seen_ms: from_sql_int(r.get(5)?),
                        packs: Default::default(),
                        foreign: Default::default(),
                        foreign_as_of: 0,
                        hashlist: None,
                        vetting: crate::tracker::Vetting::Unknown,
                        draining: r.get::<_, Option<i64>>(6)?.is_some(),
                        served: None,
                        egress: None,
                    })
                })
                .map_err(self.err())?;
            rows.collect::<Result<_, _>>().map_err(self.err())?
        };
        let mut stmt = self
            .conn
            .prepare("SELECT pack FROM replicas WHERE slave_id=?1")
            .map_err(self.err())?;
        for slave in &mut slaves {
            let rows = stmt
                .query_map(params![slave.id], |r| r.get::<_, u32>(0))
                .map_err(db_err(&self.path))?;
            for pack in rows {
                slave.packs.insert(pack.map_err(db_err(&self.path))?);
            }
        }
        Ok(slaves)
    }

    /// Upserts a client's report (with its key hash).
    pub(crate) fn record_client(&self, c: &ClientRecord) -> Result<(), MasterError> {
        self.conn
            .execute(
                "INSERT INTO clients(id, addr, revision, path, files, bytes, last_seen_ms, key_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(id) DO UPDATE SET addr=excluded.addr, revision=excluded.revision,
                    path=excluded.path, files=excluded.files, bytes=excluded.bytes,
                    last_seen_ms=excluded.last_seen_ms, key_hash=excluded.key_hash",
                params![
                    c.id,
                    c.addr,
                    to_sql_int(c.revision),
                    c.path,
                    to_sql_int(c.files),
                    to_sql_int(c.bytes),
                    to_sql_int(c.last_seen_ms),
                    c.key_hash.as_ref().map(|h| &h.0[..])
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Deletes the clients last seen before `cutoff_ms`; returns how many.
    pub(crate) fn expire_clients(&self, cutoff_ms: u64) -> Result<u64, MasterError> {
        let n = self
            .conn
            .execute(
                "DELETE FROM clients WHERE last_seen_ms < ?1",
                params![to_sql_int(cutoff_ms)],
            )
            .map_err(self.err())?;
        Ok(n as u64)
    }

    /// Every client.
    pub(crate) fn load_clients(&self) -> Result<Vec<ClientRecord>, MasterError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, addr, revision, path, files, bytes, last_seen_ms, key_hash
                 FROM clients ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ClientRecord {
                    id: r.get(0)?,
                    addr: r.get(1)?,
                    revision: from_sql_int(r.get(2)?),
                    path: r.get(3)?,
                    files: from_sql_int(r.get(4)?),
                    bytes: from_sql_int(r.get(5)?),
                    last_seen_ms: from_sql_int(r.get(6)?),
                    key_hash: r
                        .get::<_, Option<Vec<u8>>>(7)?
                        .map(|b| hash_from_blob(b, 7))
                        .transpose()?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

/// Runs a `chunks` insert whose six parameters are the columns in table order.
fn insert_chunk(stmt: &mut rusqlite::Statement<'_>, c: &ChunkLocation) -> rusqlite::Result<usize> {
    stmt.execute(params![
        &c.hash.0[..],
        c.pack,
        to_sql_int(c.offset),
        c.stored_len,
        c.len,
        c.codec as u8
    ])
}

fn chunk_from_row(r: &Row<'_>) -> rusqlite::Result<ChunkLocation> {
    Ok(ChunkLocation {
        hash: hash_from_blob(r.get(0)?, 0)?,
        pack: r.get(1)?,
        offset: from_sql_int(r.get(2)?),
        stored_len: r.get(3)?,
        len: r.get(4)?,
        codec: codec_from_int(r.get(5)?)?,
    })
}

fn db_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> MasterError + '_ {
    move |source| MasterError::Db {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Revision 1, published by build 1.
    fn first_build() -> RevisionRow {
        RevisionRow {
            number: 1,
            created_unix: 1,
            index_hash: Hash([1; 32]),
            files: 0,
            bytes: 0,
            build_started_unix: 1,
            build_id: Some(1),
            mass_delete_confirmed: false,
        }
    }

    #[test]
    fn schema_is_created_once_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hummel.db");
        let db = Db::open(&path).unwrap();
        assert!(db.load_revisions().unwrap().is_empty());
        drop(db);
        let db = Db::open(&path).unwrap();
        let v: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        db.conn.execute_batch("PRAGMA user_version=99").unwrap();
        drop(db);
        assert!(matches!(
            Db::open(&path),
            Err(MasterError::SchemaVersion { found: 99, .. })
        ));
    }

    #[test]
    fn a_drain_is_kept_and_ends_with_the_slave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hummel.db");
        let mut db = Db::open(&path).unwrap();
        assert!(!db.set_draining("s1", true, 5).unwrap());
        db.conn
            .execute(
                "INSERT INTO slaves(id, url, used, first_seen_ms, last_seen_ms)
                 VALUES ('s1', 'http://s1', 0, 1, 1)",
                [],
            )
            .unwrap();
        assert!(db.set_draining("s1", true, 5).unwrap());
        drop(db);
        let mut db = Db::open(&path).unwrap();
        assert!(db.load_slaves().unwrap()[0].draining);
        assert!(db.set_draining("s1", false, 6).unwrap());
        assert!(!db.load_slaves().unwrap()[0].draining);
        assert!(db.remove_slave("s1").unwrap());
        assert!(!db.set_draining("s1", true, 7).unwrap());
    }

    #[test]
    fn notes_are_published_with_their_revision_and_older_revisions_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hummel.db");
        {
            // A schema-7 database with one revision: migrated, it has no note for it.
            let mut db = Db::open(&path).unwrap();
            db.publish(&Publication {
                revision: &first_build(),
                note: None,
                new_packs: &[],
                pack_level: 3,
                relevelled_packs: &[],
                new_chunks: &[],
                moved_chunks: &[],
            })
            .unwrap();
            db.conn
                .execute_batch(
                    "DROP TABLE revision_notes; DROP TABLE client_pins;
                     ALTER TABLE slaves DROP COLUMN draining_ms; PRAGMA user_version=7;",
                )
                .unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        assert!(db.load_notes().unwrap().is_empty());
        let note = NoteRow {
            number: 2,
            message: Some("rollback to 1".into()),
            summary: ChangeSummary {
                files_added: 1,
                files_updated: 2,
                files_removed: 3,
                bytes_changed: 4,
            },
            rollback_of: Some(1),
        };
        db.publish(&Publication {
            revision: &RevisionRow {
                number: 2,
                build_id: None,
                ..first_build()
            },
            note: Some(&note),
            new_packs: &[],
            pack_level: 3,
            relevelled_packs: &[],
            new_chunks: &[],
            moved_chunks: &[],
        })
        .unwrap();
        db.record_pin("a", Some(1), 1000, 0).unwrap();
        db.record_pin("b", Some(2), 2000, 0).unwrap();
        db.record_pin("a", None, 3000, 0).unwrap();
        db.record_pin("c", Some(2), 3000, 1500).unwrap();
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.load_notes().unwrap(), [note]);
        let mut pins = db.load_pins().unwrap();
        pins.sort();
        assert_eq!(pins, [("b".into(), 2, 2000), ("c".into(), 2, 3000)]);
    }

    #[test]
    fn clients_keep_their_key_hash_and_old_ones_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hummel.db");
        let db = Db::open(&path).unwrap();
        let client = |id: &str, last_seen_ms: u64, key_hash: Option<Hash>| ClientRecord {
            id: id.into(),
            addr: "192.0.2.1:5000".into(),
            revision: 7,
            path: String::new(),
            files: 1,
            bytes: 2,
            last_seen_ms,
            key_hash,
        };
        let a = client("a", 1000, Some(Hash::of(b"key")));
        let b = client("b", 5000, None);
        db.record_client(&a).unwrap();
        db.record_client(&b).unwrap();
        assert_eq!(
            Db::open(&path).unwrap().load_clients().unwrap(),
            [a, b.clone()]
        );
        // A report of b with a key stores its hash.
        let b = client("b", 6000, Some(Hash::of(b"b's key")));
        db.record_client(&b).unwrap();
        assert_eq!(db.expire_clients(2000).unwrap(), 1);
        assert_eq!(db.load_clients().unwrap(), [b]);
        assert_eq!(db.expire_clients(2000).unwrap(), 0);
    }

    #[test]
    fn the_repository_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hummel.db");
        let id = Db::open(&path).unwrap().repository_id().unwrap();
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "{id}"
        );
        assert_eq!(Db::open(&path).unwrap().repository_id().unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        let other_id = Db::open(&other.path().join("hummel.db"))
            .unwrap()
            .repository_id()
            .unwrap();
        assert_ne!(other_id, id);
    }

    #[test]
    fn a_version_1_database_is_migrated_and_its_packs_count_as_level_3() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hummel.db");
        {
            // A database as the previous release left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!("{SCHEMA_V1} PRAGMA user_version=1;"))
                .unwrap();
            conn.execute(
                "INSERT INTO packs(number, hash, size, revision) VALUES (1, ?1, 100, 1)",
                params![&[7u8; 32][..]],
            )
            .unwrap();
        }
        let mut db = Db::open(&path).unwrap();
        let v: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        // The migration made a repository id.
        assert_eq!(db.repository_id().unwrap().len(), 32);
        let packs = db.load_packs().unwrap();
        assert_eq!(packs.len(), 1);
        assert_eq!(
            (packs[0].0.number, packs[0].0.size, packs[0].1),
            (1, 100, 3)
        );
        // The migrated schema takes a publication with a level, relevelled and moved chunks.
        let row = first_build();
        let new = PackInfo {
            number: 2,
            hash: Hash([8; 32]),
            size: 50,
        };
        let chunk = ChunkLocation {
            hash: Hash([9; 32]),
            pack: 1,
            offset: 16,
            stored_len: 10,
            len: 10,
            codec: Codec::Raw,
        };
        db.publish(&Publication {
            revision: &row,
            note: None,
            new_packs: &[new],
            pack_level: 9,
            relevelled_packs: &[1],
            new_chunks: &[chunk],
            moved_chunks: &[],
        })
        .unwrap();
        let moved = ChunkLocation { pack: 2, ..chunk };
        db.publish(&Publication {
            note: None,
            revision: &RevisionRow {
                number: 2,
                build_id: None,
                mass_delete_confirmed: true,
                ..row
            },
            new_packs: &[],
            pack_level: 9,
            relevelled_packs: &[],
            new_chunks: &[],
            moved_chunks: &[moved],
        })
        .unwrap();
        let levels: Vec<(u32, i32)> = db
            .load_packs()
            .unwrap()
            .into_iter()
            .map(|(p, l)| (p.number, l))
            .collect();
        assert_eq!(levels, [(1, 9), (2, 9)]);
        assert_eq!(db.load_chunks().unwrap()[&chunk.hash], moved);
        let builds: Vec<(Option<u64>, bool)> = db
            .load_revisions()
            .unwrap()
            .iter()
            .map(|r| (r.build_id, r.mass_delete_confirmed))
            .collect();
        assert_eq!(builds, [(Some(1), false), (None, true)]);
        drop(db);
        // Opening again does not migrate twice.
        Db::open(&path).unwrap();
    }

    #[test]
    fn collected_packs_lose_their_chunks_and_replicas_but_keep_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("hummel.db")).unwrap();
        let row = first_build();
        let pack = |number: u32, byte: u8| PackInfo {
            number,
            hash: Hash([byte; 32]),
            size: 50,
        };
        let chunk = |byte: u8, pack: u32| ChunkLocation {
            hash: Hash([byte; 32]),
            pack,
            offset: 16,
            stored_len: 10,
            len: 10,
            codec: Codec::Raw,
        };
        db.publish(&Publication {
            revision: &row,
            note: None,
            new_packs: &[pack(1, 11), pack(2, 12)],
            pack_level: 3,
            relevelled_packs: &[],
            new_chunks: &[chunk(21, 1), chunk(22, 2)],
            moved_chunks: &[],
        })
        .unwrap();
        db.conn
            .execute(
                "INSERT INTO slaves(id, url, used, first_seen_ms, last_seen_ms)
                 VALUES ('s1', 'http://s1', 0, 0, 0)",
                [],
            )
            .unwrap();
        db.conn
            .execute_batch("INSERT INTO replicas VALUES ('s1', 1), ('s1', 2);")
            .unwrap();

        db.collect(&[2], 100).unwrap();
        let numbers: Vec<u32> = db
            .load_packs()
            .unwrap()
            .iter()
            .map(|p| p.0.number)
            .collect();
        assert_eq!(numbers, [1]);
        assert_eq!(db.max_pack_number().unwrap(), 2);
        let chunks = db.load_chunks().unwrap();
        assert!(chunks.contains_key(&Hash([21; 32])));
        assert!(
            !chunks.contains_key(&Hash([22; 32])),
            "a collected pack's chunk stays listed"
        );
        let replicas: Vec<u32> = db.load_slaves().unwrap()[0].packs.iter().copied().collect();
        assert_eq!(replicas, [1]);

        // The same bytes published again, under a new number: the tombstone gives way.
        db.publish(&Publication {
            note: None,
            revision: &RevisionRow {
                number: 2,
                ..row.clone()
            },
            new_packs: &[pack(3, 12)],
            pack_level: 3,
            relevelled_packs: &[],
            new_chunks: &[chunk(22, 3)],
            moved_chunks: &[],
        })
        .unwrap();
        let numbers: Vec<u32> = db
            .load_packs()
            .unwrap()
            .iter()
            .map(|p| p.0.number)
            .collect();
        assert_eq!(numbers, [1, 3]);
        assert_eq!(db.load_chunks().unwrap()[&Hash([22; 32])].pack, 3);
    }
}
