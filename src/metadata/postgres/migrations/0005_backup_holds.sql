-- Backup holds: while a hold lives, objects retired after it was taken
-- are kept, so a metadata backup taken under it still finds every object it
-- names when it is restored. Times are the server's clock (ms).

CREATE TABLE backup_holds (
    hold_id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
