//! The SQLite schema and its migrations. A database is brought up to the
//! latest version at open, one transaction per step; a database newer than
//! this broker is refused. A read-only open (tools beside a running broker)
//! migrates nothing: it needs the schema at exactly this version.

use rusqlite::{Connection, OptionalExtension};

use crate::metadata::{MetadataError, Result};

/// Migrations in order; entry `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
    SCHEMA_V9, SCHEMA_V10, SCHEMA_V11, SCHEMA_V12, SCHEMA_V13, SCHEMA_V14, SCHEMA_V15,
];

const SCHEMA_V1: &str = "
CREATE TABLE cluster (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    cluster_id TEXT NOT NULL
);
CREATE TABLE topics (
    topic_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    configs TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE partitions (
    topic_id TEXT NOT NULL REFERENCES topics(topic_id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    leader_id INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    log_start_offset INTEGER NOT NULL,
    high_watermark INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition)
);
CREATE TABLE objects (
    object_key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE chunks (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    max_timestamp INTEGER NOT NULL,
    object_key TEXT NOT NULL REFERENCES objects(object_key),
    byte_start INTEGER NOT NULL,
    byte_len INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition, base_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions(topic_id, partition) ON DELETE CASCADE
);
CREATE INDEX chunks_by_object ON chunks(object_key);
";

const SCHEMA_V2: &str = "
CREATE TABLE groups (
    group_id TEXT PRIMARY KEY,
    protocol_type TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE group_offsets (
    group_id TEXT NOT NULL,
    topic_id TEXT NOT NULL REFERENCES topics(topic_id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT,
    commit_ms INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic_id, partition)
);
";

/// Idempotent producers: the id counter, and each producer's state per
/// partition (epoch, last batches as JSON), written with the chunks.
const SCHEMA_V3: &str = "
CREATE TABLE producer_ids (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    next_producer_id INTEGER NOT NULL
);
CREATE TABLE producer_state (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    producer_id INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    batches TEXT NOT NULL,
    last_append_ms INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition, producer_id),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions(topic_id, partition) ON DELETE CASCADE
);
CREATE INDEX producer_state_by_time ON producer_state(last_append_ms);
";

/// Tiered storage:
/// - upload intents: every object key is recorded by its writer before its
///   PUT and forgotten when the object is committed (or deleted), so the
///   collector deletes only what this store's writers wrote and never an
///   object whose commit may still land (a commit needs its intent, and the
///   collector dooms an intent before it deletes the object);
/// - each object's kind (0: write-ahead, 1: segment, 2: shared) and, once no
///   chunk references it any more, when it was retired (deleted after a
///   grace period, so that reads in flight still find it);
/// - each chunk's sparse index length (segments: the index follows the
///   chunk's bytes).
const SCHEMA_V4: &str = "
CREATE TABLE object_intents (
    object_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    doomed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX object_intents_by_time ON object_intents(created_ms);
ALTER TABLE objects ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
ALTER TABLE objects ADD COLUMN retired_ms INTEGER;
CREATE INDEX objects_retired ON objects(retired_ms) WHERE retired_ms IS NOT NULL;
CREATE INDEX objects_unsealed ON objects(kind, retired_ms);
ALTER TABLE chunks ADD COLUMN index_len INTEGER NOT NULL DEFAULT 0;
UPDATE objects SET retired_ms = created_ms
 WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.object_key = objects.object_key);
";

/// Log compaction: each partition's clean offset (Kafka's cleaner
/// checkpoint): offsets below it have been through a compaction pass.
const SCHEMA_V5: &str = "
ALTER TABLE partitions ADD COLUMN clean_offset INTEGER NOT NULL DEFAULT 0;
";

/// Cheap sealing swaps. A swap deletes a partition's write-ahead chunk
/// rows (thousands, one per flush) for one segment row; in a rowid table
/// those rows lie interleaved with every other partition's (rows are stored
/// in insertion order, and a flush inserts all its partitions at once), and
/// the `chunks_by_object` index interleaves them too, so each swap rewrote
/// most of the tail's pages: 45-60 ms for 2,500 rows, holding the one
/// writer the produce path commits through. So:
/// - `chunks` becomes a WITHOUT ROWID table, clustered by its primary key
///   (topic, partition, base offset): a partition's rows are contiguous;
/// - `chunks_by_object` goes; each object counts the chunk rows that
///   reference it (`refs`, kept by triggers), which is what retiring needs.
///   The foreign key from a chunk to its object goes with it: without the
///   index, deleting an object row (the collector forgets thousands a
///   minute) made SQLite scan every chunk row to enforce it. (The sealer
///   finds its inputs' chunks in the partitions' in-memory indexes.)
///
/// The same 2,500-row swap then takes 8-10 ms.
const SCHEMA_V6: &str = "
ALTER TABLE objects ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
UPDATE objects SET refs = (SELECT COUNT(*) FROM chunks c WHERE c.object_key = objects.object_key);
CREATE TABLE chunks_v6 (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    base_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    max_timestamp INTEGER NOT NULL,
    object_key TEXT NOT NULL,
    byte_start INTEGER NOT NULL,
    byte_len INTEGER NOT NULL,
    index_len INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition, base_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions(topic_id, partition) ON DELETE CASCADE
) WITHOUT ROWID;
INSERT INTO chunks_v6 (topic_id, partition, base_offset, last_offset, max_timestamp, object_key,
                       byte_start, byte_len, index_len)
 SELECT topic_id, partition, base_offset, last_offset, max_timestamp, object_key,
        byte_start, byte_len, index_len FROM chunks;
DROP TABLE chunks;
ALTER TABLE chunks_v6 RENAME TO chunks;
CREATE TRIGGER chunks_ref AFTER INSERT ON chunks BEGIN
    UPDATE objects SET refs = refs + 1 WHERE object_key = NEW.object_key;
END;
CREATE TRIGGER chunks_unref AFTER DELETE ON chunks BEGIN
    UPDATE objects SET refs = refs - 1 WHERE object_key = OLD.object_key;
END;
";

/// Transactions (KIP-98):
/// - each producer's open transaction in a partition (its first offset:
///   the last stable offset is the smallest), written with its chunks;
/// - each partition's aborted transactions, written with the abort
///   marker's chunk and trimmed with the log start offset;
/// - the coordinator's record of every transactional id and the offsets
///   its ongoing transaction will commit.
const SCHEMA_V7: &str = "
ALTER TABLE producer_state ADD COLUMN txn_first_offset INTEGER;
CREATE TABLE aborted_txns (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    producer_id INTEGER NOT NULL,
    first_offset INTEGER NOT NULL,
    last_offset INTEGER NOT NULL,
    PRIMARY KEY (topic_id, partition, last_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions(topic_id, partition) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE transactions (
    transactional_id TEXT PRIMARY KEY,
    producer_id INTEGER NOT NULL,
    producer_epoch INTEGER NOT NULL,
    last_producer_id INTEGER NOT NULL,
    last_producer_epoch INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    state INTEGER NOT NULL,
    partitions TEXT NOT NULL,
    groups TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE txn_offsets (
    transactional_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    topic_id TEXT NOT NULL REFERENCES topics(topic_id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT,
    commit_ms INTEGER NOT NULL,
    PRIMARY KEY (transactional_id, group_id, topic_id, partition)
);
";

/// Clusters: each broker's registration and lease, the controller lease,
/// and partitions found by leader (a broker's start bumps its own).
const SCHEMA_V8: &str = "
CREATE TABLE brokers (
    node_id INTEGER PRIMARY KEY,
    boot TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    rack TEXT,
    lease_until_ms INTEGER NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE controller (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    node_id INTEGER NOT NULL,
    boot TEXT NOT NULL,
    lease_until_ms INTEGER NOT NULL
);
CREATE INDEX partitions_by_leader ON partitions(leader_id);
";

/// Group membership (generation, members, assignments), written by the
/// group's coordinator so the next one takes the group over as it was:
/// ordered by (coordinator epoch, sequence), opaque to the store.
const SCHEMA_V9: &str = "
ALTER TABLE groups ADD COLUMN coordinator_epoch INTEGER NOT NULL DEFAULT -1;
ALTER TABLE groups ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN state BLOB;
";

/// The coordinator epoch a transactional id's row was written under: a
/// coordinator that lost the id cannot overwrite its successor's writes.
const SCHEMA_V10: &str = "
ALTER TABLE transactions ADD COLUMN coordinator_epoch INTEGER NOT NULL DEFAULT -1;
";

/// v11: backup holds. While a hold lives, objects retired after it was
/// taken are kept, so a metadata backup taken under it still finds every
/// object it names when it is restored.
const SCHEMA_V11: &str = "
CREATE TABLE backup_holds (
    hold_id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
";

/// v12: the advertised address of each of a broker's listeners
/// (`NAME://host:port,...`); `host`/`port` stay its inter-broker one.
const SCHEMA_V12: &str = "
ALTER TABLE brokers ADD COLUMN endpoints TEXT NOT NULL DEFAULT '';
";

/// v13: SCRAM credentials (salt, iterations, StoredKey, ServerKey; never
/// a password), by user and Kafka's mechanism code.
const SCHEMA_V13: &str = "
CREATE TABLE scram_credentials (
    user_name TEXT NOT NULL,
    mechanism INTEGER NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (user_name, mechanism)
) WITHOUT ROWID;
";

/// v14: ACL bindings, in Kafka's codes.
const SCHEMA_V14: &str = "
CREATE TABLE acls (
    resource_type INTEGER NOT NULL,
    resource_name TEXT NOT NULL,
    pattern_type INTEGER NOT NULL,
    principal TEXT NOT NULL,
    host TEXT NOT NULL,
    operation INTEGER NOT NULL,
    permission_type INTEGER NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation,
                 permission_type)
) WITHOUT ROWID;
";

/// v15: client quotas (Kafka's AlterClientQuotas), one row per entity and
/// quota key.
const SCHEMA_V15: &str = "
CREATE TABLE client_quotas (
    entity TEXT NOT NULL,
    quota_key TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (entity, quota_key)
) WITHOUT ROWID;
";

pub(super) fn migrate(conn: &Connection) -> Result<()> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let current: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()?
        .flatten()
        .unwrap_or(0);
    let latest = MIGRATIONS.len() as i64;
    if current > latest {
        return Err(MetadataError::Backend(format!(
            "metadata schema version {current} is newer than this broker's {latest}"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN; {migration} DELETE FROM schema_version; INSERT INTO schema_version VALUES ({version}); COMMIT;"
        ))?;
    }
    Ok(())
}

/// For a read-only open: the schema must be exactly this build's version.
pub(super) fn check_current(conn: &Connection) -> Result<()> {
    let current: Option<i64> = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .map_err(|e| {
            MetadataError::Backend(format!(
                "not a Strata metadata store (no schema version): {e}"
            ))
        })?;
    let current = current.unwrap_or(0);
    let latest = MIGRATIONS.len() as i64;
    if current < latest {
        return Err(MetadataError::Backend(format!(
            "metadata schema version {current} is older than this build's {latest}: start the broker once to migrate it"
        )));
    }
    if current > latest {
        return Err(MetadataError::Backend(format!(
            "metadata schema version {current} is newer than this build's {latest}"
        )));
    }
    Ok(())
}
