//! Schema migrations, applied in order and tracked with SQLite's
//! `PRAGMA user_version` (the number of migrations applied).
//!
//! **Invariant:** a migration, once released, never changes. New schema goes
//! in a new entry at the end.

/// Every migration, oldest first. `user_version` = how many have run.
pub const MIGRATIONS: &[&str] = &[
    // 1: accounts, devices, sessions, room state, server secret.
    r#"
CREATE TABLE users (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    username         TEXT    NOT NULL UNIQUE,
    salt             BLOB    NOT NULL,
    kdf              TEXT    NOT NULL,
    auth_hash        TEXT    NOT NULL,
    wrapped_data_key BLOB    NOT NULL,
    is_admin         INTEGER NOT NULL DEFAULT 0,
    disabled         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL
);
CREATE TABLE devices (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices(user_id);
CREATE TABLE sessions (
    token_sha256 BLOB    PRIMARY KEY,
    device_id    INTEGER NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE room_state (
    user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    from_device INTEGER NOT NULL,
    envelope    BLOB,
    stored_at   INTEGER NOT NULL
);
CREATE TABLE server_secret (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB    NOT NULL
);
"#,
    // 2: blob store metadata (files live under <data-dir>/blobs/<user>/<id>).
    r#"
CREATE TABLE blobs (
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    id         BLOB    NOT NULL,
    sealed_len INTEGER NOT NULL,
    stored_len INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    complete   INTEGER NOT NULL DEFAULT 0,
    swept      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;
CREATE INDEX blobs_expires ON blobs(expires_at);
"#,
    // 3: the floor a room's sequence counter resumes from after a crash
    // (numbers reserved ahead of use; see room.rs).
    r#"
ALTER TABLE room_state ADD COLUMN seq_floor INTEGER NOT NULL DEFAULT 0;
"#,
    // 4: ClipCascade compatibility: the per-account verifier (Argon2id PHC
    // of the SHA3-512 hex the ClipCascade clients send; NULL = not enabled),
    // the per-account server mode, and cookie sessions (SHA-256 of the
    // JSESSIONID), each tied to a device row so the devices list and revoke
    // cover them.
    r#"
ALTER TABLE users ADD COLUMN cc_verifier TEXT;
ALTER TABLE users ADD COLUMN cc_mode TEXT NOT NULL DEFAULT 'P2S';
CREATE TABLE cc_sessions (
    sid_sha256 BLOB    PRIMARY KEY,
    device_id  INTEGER NOT NULL UNIQUE REFERENCES devices(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // 5: protocol v2 (OPAQUE): the account's registration record (NULL
    // while the account is v1), its current key epoch and that epoch's key
    // wrapped under the OPAQUE export key; each device's public keys and
    // their certificate under an epoch's roster key. An upgraded account's
    // auth_hash is set to '' (no v1 login).
    r#"
ALTER TABLE users ADD COLUMN opaque_record BLOB;
ALTER TABLE users ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN export_wrap BLOB;
ALTER TABLE devices ADD COLUMN public_key BLOB;
ALTER TABLE devices ADD COLUMN key_epoch INTEGER;
ALTER TABLE devices ADD COLUMN key_cert BLOB;
"#,
    // 6: session lifetimes. `issued_at` starts the absolute lifetime (a
    // renewal issues a new token and restarts it), `last_used_at` the idle
    // one. `prev_sha256` is the token a renewal replaced: still accepted
    // until the new token is first used, so a device that lost the renewal's
    // answer (a crash) can renew again. Sessions that exist now count as
    // issued and used at the upgrade.
    r#"
ALTER TABLE sessions ADD COLUMN issued_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN prev_sha256 BLOB;
UPDATE sessions SET issued_at = CAST(strftime('%s', 'now') AS INTEGER),
    last_used_at = CAST(strftime('%s', 'now') AS INTEGER);
CREATE UNIQUE INDEX sessions_prev ON sessions(prev_sha256) WHERE prev_sha256 IS NOT NULL;
"#,
    // 7: protocol v2 key epochs. The current epoch's key wrapped to each
    // device by the device that started the epoch (168 bytes, signed by
    // it), with that device's public keys and its certificate under the
    // previous epoch, so a device that never saw it can check the signer.
    // One row per device: a new epoch replaces them all.
    r#"
CREATE TABLE epoch_wraps (
    device_id     INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,
    sender        INTEGER NOT NULL,
    sender_public BLOB    NOT NULL,
    sender_cert   BLOB    NOT NULL,
    wrap          BLOB    NOT NULL
);
CREATE INDEX epoch_wraps_user ON epoch_wraps(user_id);
"#,
];
