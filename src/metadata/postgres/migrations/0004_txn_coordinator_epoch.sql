-- The coordinator epoch a transactional id's row was written under: a
-- coordinator that lost the id cannot overwrite its successor's writes.

ALTER TABLE transactions ADD COLUMN coordinator_epoch INTEGER NOT NULL DEFAULT -1;
