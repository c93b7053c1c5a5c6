-- SCRAM credentials: salt, iterations, StoredKey and ServerKey (never a
-- password), by user and Kafka's mechanism code (1: SCRAM-SHA-256,
-- 2: SCRAM-SHA-512).

CREATE TABLE scram_credentials (
    user_name TEXT NOT NULL,
    mechanism SMALLINT NOT NULL,
    salt BYTEA NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (user_name, mechanism)
);
