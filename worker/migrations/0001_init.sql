-- clipmesh Worker: accounts, devices and sessions on D1.
-- Binary values are lower-case hex text; tokens are stored as SHA-256 only.
CREATE TABLE IF NOT EXISTS users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    username         TEXT    NOT NULL UNIQUE,
    salt             TEXT    NOT NULL,
    kdf              TEXT    NOT NULL,
    auth_hash        TEXT    NOT NULL,
    wrapped_data_key TEXT    NOT NULL,
    is_admin         INTEGER NOT NULL DEFAULT 0,
    disabled         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_user ON devices(user_id);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT    PRIMARY KEY,
    device_id    INTEGER NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL
);
