-- clipmesh Worker: protocol v2 accounts (OPAQUE), as the native relay's
-- migration 5. Hex text for binary values, as in 0001.
ALTER TABLE users ADD COLUMN opaque_record TEXT;
ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN export_wrap TEXT;
ALTER TABLE devices ADD COLUMN public_key TEXT;
ALTER TABLE devices ADD COLUMN key_epoch INTEGER;
ALTER TABLE devices ADD COLUMN key_cert TEXT;
-- Half-finished logins (a Worker keeps no memory between requests): the
-- OPAQUE server state sealed under a key derived from OPAQUE_SEED, keyed
-- by the SHA-256 of the login id, taken once, expires_at in Unix ms.
CREATE TABLE IF NOT EXISTS pending_logins (
    id_sha256  TEXT    PRIMARY KEY,
    sealed     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    user_id    INTEGER,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_logins_expiry ON pending_logins(expires_at);
