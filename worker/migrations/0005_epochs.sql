-- clipmesh Worker: protocol v2 key epochs, as the native relay's
-- migration 7. The current epoch's key wrapped to each device by the
-- device that started the epoch (signed by it), with that device's public
-- keys and its certificate under the previous epoch, so a device that
-- never saw it can check the signer. One row per device: a new epoch
-- replaces them all. Hex text for binary values, as in 0001.
CREATE TABLE IF NOT EXISTS epoch_wraps (
    device_id     INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    epoch         INTEGER NOT NULL,
    sender        INTEGER NOT NULL,
    sender_public TEXT    NOT NULL,
    sender_cert   TEXT    NOT NULL,
    wrap          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS epoch_wraps_user ON epoch_wraps(user_id);
