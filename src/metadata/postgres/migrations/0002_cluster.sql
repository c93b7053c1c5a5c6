-- Clusters: each broker's registration and lease, the controller lease,
-- and partitions found by leader (a broker's start bumps its own).

CREATE TABLE brokers (
    node_id INTEGER PRIMARY KEY,
    boot TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    rack TEXT,
    lease_until_ms BIGINT NOT NULL,
    draining BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE controller (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    node_id INTEGER NOT NULL,
    boot TEXT NOT NULL,
    lease_until_ms BIGINT NOT NULL
);

CREATE INDEX partitions_by_leader ON partitions (leader_id);

-- Each broker seals the write-ahead chunks of the partitions it leads:
-- its sealer finds their objects through their chunks.
CREATE INDEX chunks_by_object ON chunks (object_key);
