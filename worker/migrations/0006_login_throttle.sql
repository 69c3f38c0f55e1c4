-- clipmesh Worker: the login throttle (worker/src/throttle.rs), as the
-- native relay's in-memory one. key is "n:<network>" (per client network)
-- or "a:<network>/<username>" (per account from one network); times in
-- Unix milliseconds. The cron sweep deletes rows quiet for longer than
-- THROTTLE_MAX_S.
CREATE TABLE IF NOT EXISTS login_throttle (
    key           TEXT    PRIMARY KEY,
    failures      INTEGER NOT NULL,
    blocked_until INTEGER NOT NULL,
    last_failure  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_throttle_age ON login_throttle(last_failure);
