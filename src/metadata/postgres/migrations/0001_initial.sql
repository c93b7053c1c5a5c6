-- Strata metadata on PostgreSQL, version 1: the state SQLite reaches at its
-- version 7 (see src/metadata/sqlite/schema.rs for why each table exists).
-- Column types match the Rust types the backend binds: INTEGER i32,
-- BIGINT i64, SMALLINT i16.

CREATE TABLE cluster (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    cluster_id TEXT NOT NULL
);

CREATE TABLE topics (
    topic_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    configs TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE partitions (
    topic_id TEXT NOT NULL REFERENCES topics(topic_id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    leader_id INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    log_start_offset BIGINT NOT NULL,
    high_watermark BIGINT NOT NULL,
    clean_offset BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition)
);

-- seq: commit order (the sealer takes the oldest write-ahead objects first).
CREATE TABLE objects (
    object_key TEXT PRIMARY KEY,
    seq BIGSERIAL NOT NULL,
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    kind SMALLINT NOT NULL DEFAULT 0,
    retired_ms BIGINT,
    refs BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX objects_retired ON objects (retired_ms) WHERE retired_ms IS NOT NULL;
CREATE INDEX objects_unsealed ON objects (seq) WHERE kind = 0 AND retired_ms IS NULL;

CREATE TABLE chunks (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    base_offset BIGINT NOT NULL,
    last_offset BIGINT NOT NULL,
    max_timestamp BIGINT NOT NULL,
    object_key TEXT NOT NULL,
    byte_start BIGINT NOT NULL,
    byte_len BIGINT NOT NULL,
    index_len BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (topic_id, partition, base_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE
);

-- Each object counts the chunk rows that reference it (what retiring needs).
CREATE FUNCTION strata_chunk_refs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE objects SET refs = refs + 1 WHERE object_key = NEW.object_key;
    ELSE
        UPDATE objects SET refs = refs - 1 WHERE object_key = OLD.object_key;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER chunks_refs AFTER INSERT OR DELETE ON chunks
    FOR EACH ROW EXECUTE FUNCTION strata_chunk_refs();

CREATE TABLE object_intents (
    object_key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    doomed BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX object_intents_by_time ON object_intents (created_ms);

CREATE TABLE groups (
    group_id TEXT PRIMARY KEY,
    protocol_type TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE group_offsets (
    group_id TEXT NOT NULL,
    topic_id TEXT NOT NULL REFERENCES topics(topic_id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    committed_offset BIGINT NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT,
    commit_ms BIGINT NOT NULL,
    PRIMARY KEY (group_id, topic_id, partition)
);

CREATE TABLE producer_ids (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    next_producer_id BIGINT NOT NULL
);

CREATE TABLE producer_state (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    producer_id BIGINT NOT NULL,
    epoch SMALLINT NOT NULL,
    batches TEXT NOT NULL,
    last_append_ms BIGINT NOT NULL,
    txn_first_offset BIGINT,
    PRIMARY KEY (topic_id, partition, producer_id),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE
);
CREATE INDEX producer_state_by_time ON producer_state (last_append_ms);

CREATE TABLE aborted_txns (
    topic_id TEXT NOT NULL,
    partition INTEGER NOT NULL,
    producer_id BIGINT NOT NULL,
    first_offset BIGINT NOT NULL,
    last_offset BIGINT NOT NULL,
    PRIMARY KEY (topic_id, partition, last_offset),
    FOREIGN KEY (topic_id, partition) REFERENCES partitions (topic_id, partition) ON DELETE CASCADE
);

CREATE TABLE transactions (
    transactional_id TEXT PRIMARY KEY,
    producer_id BIGINT NOT NULL,
    producer_epoch SMALLINT NOT NULL,
    last_producer_id BIGINT NOT NULL,
    last_producer_epoch SMALLINT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    state SMALLINT NOT NULL,
    partitions TEXT NOT NULL,
    groups TEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE txn_offsets (
    transactional_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    topic_id TEXT NOT NULL REFERENCES topics(topic_id) ON DELETE CASCADE,
    partition INTEGER NOT NULL,
    committed_offset BIGINT NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT,
    commit_ms BIGINT NOT NULL,
    PRIMARY KEY (transactional_id, group_id, topic_id, partition)
);
