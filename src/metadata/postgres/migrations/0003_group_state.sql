-- Group membership (generation, members, assignments), written by the
-- group's coordinator so the next one takes the group over as it was:
-- ordered by (coordinator epoch, sequence), opaque to the store.

ALTER TABLE groups ADD COLUMN coordinator_epoch INTEGER NOT NULL DEFAULT -1;
ALTER TABLE groups ADD COLUMN state_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN state BYTEA;
