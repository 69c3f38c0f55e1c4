-- clipmesh Worker: session lifetimes, as the native relay's migration 6.
-- issued_at starts the absolute lifetime (a renewal issues a new token and
-- restarts it), last_used_at the idle one (Unix seconds). prev_sha256 is
-- the token a renewal replaced: accepted until the new one is first used.
-- Sessions that exist now count as issued and used at the upgrade.
ALTER TABLE sessions ADD COLUMN issued_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN prev_sha256 TEXT;
UPDATE sessions SET issued_at = CAST(strftime('%s', 'now') AS INTEGER),
    last_used_at = CAST(strftime('%s', 'now') AS INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS sessions_prev ON sessions(prev_sha256) WHERE prev_sha256 IS NOT NULL;
