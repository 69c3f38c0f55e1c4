-- clipmesh Worker: blobs. The sealed bytes live on R2, one object per
-- PATCH piece (<user>/<blob>/<start offset, 16 hex digits>); this row holds
-- the declared length, the committed offset and the pieces as a JSON list
-- of [start, length]. Times: created_at and expires_at in Unix seconds,
-- progress_at and busy_until (the PATCH claim) in Unix milliseconds.
CREATE TABLE IF NOT EXISTS blobs (
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    id          TEXT    NOT NULL,
    length      INTEGER NOT NULL,
    stored      INTEGER NOT NULL DEFAULT 0,
    parts       TEXT    NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    progress_at INTEGER NOT NULL,
    busy_until  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX IF NOT EXISTS blobs_expiry ON blobs(user_id, expires_at);
