#!/usr/bin/env python3
"""Generate or check clipmesh-proto's crypto test vectors with an independent
implementation.

The Rust code (proto/src/keys.rs, proto/src/envelope.rs, proto/src/signal.rs) is checked against
the committed JSON by `cargo test -p clipmesh-proto --test vectors`. This
script recomputes every value from the same fixed inputs with unrelated
libraries, so a bug shared by the Rust code and its vectors cannot hide:

  - Argon2id: argon2-cffi's low-level `hash_secret_raw` (the Argon2 reference
    C implementation), type ID, version 0x13 (19).
  - HKDF-SHA256: written out here from RFC 5869 with Python's hmac/hashlib.
  - XChaCha20-Poly1305: PyNaCl's binding of libsodium's
    `crypto_aead_xchacha20poly1305_ietf_encrypt`.
  - Envelope header and clip item bytes: packed here with `struct` from the
    layouts in docs/protocol.md and docs/crypto.md.
  - Sealed signalling (signal.json): the signal key by the same HKDF, and a
    sealed offer (envelope kind 2) packed with `struct` from docs/protocol.md
    ("Signalling").
  - Blob chunks (blob.json): the same libsodium AEAD per chunk, the chunk AAD
    packed with `struct` from docs/crypto.md ("Large items").
  - Protocol v2 (device.json, epoch.json, epoch_wrap.json, export_wrap.json,
    signed_envelope.json): libsodium's X25519 (`crypto_scalarmult`) and
    Ed25519 (`crypto_sign_seed_keypair`, `crypto_sign`), HMAC-SHA256 from
    Python's hmac, the layouts from docs/crypto.md ("Protocol v2").

opaque.json is not made here: no second OPAQUE implementation over
ristretto255 is reachable from Python (PyNaCl does not expose libsodium's
ristretto255 functions). It is pinned by the Rust test from a deterministic
RNG, and opaque-ke itself is checked against the RFC 9807 vectors upstream.

Usage (from anywhere; paths are relative to the repository):

    pip install argon2-cffi pynacl   # or apt install python3-argon2 python3-nacl (CI: scripts/test.d/05-vectors.sh)
    python3 scripts/vectors.py            # (re)write proto/tests/vectors/*.json
    python3 scripts/vectors.py --check    # verify the committed files; exit 1 on mismatch

Nothing in `cargo test` needs this script or Python.
"""

import argparse
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
    crypto_sign,
    crypto_sign_seed_keypair,
)

VECTORS_DIR = Path(__file__).resolve().parent.parent / "proto" / "tests" / "vectors"

# Constants, spelled out independently of proto/src/keys.rs.
ARGON2_VERSION = 0x13
INFO_AUTH = b"clipmesh/v1/auth"
INFO_KEK = b"clipmesh/v1/kek"
INFO_CLIP = b"clipmesh/v1/clip"
INFO_SIGNAL = b"clipmesh/v1/signal"
WRAP_AAD = b"clipmesh/v1/wrapped-data-key"
ENVELOPE_VERSION = 1
ENVELOPE_KIND_CLIP = 1
ENVELOPE_KIND_SIGNAL = 2
SIGNAL_VERSION = 1
SIGNAL_KIND_OFFER = 1
CONTENT_VERSION = 1
# Large items (docs/crypto.md, "Large items"; proto/src/blob.rs).
BLOB_AAD_DOMAIN = b"clipmesh/v1/blob"
BLOB_CHUNK_LEN = 1 << 20


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32, salt: bytes = b"") -> bytes:
    """RFC 5869 HKDF-SHA256. An empty salt means HashLen zero bytes."""
    if not salt:
        salt = b"\x00" * 32
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, counter = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([counter]), hashlib.sha256).digest()
        okm += t
        counter += 1
    return okm[:length]


def argon2id(password: bytes, salt: bytes, m_kib: int, t: int, p: int) -> bytes:
    return hash_secret_raw(
        secret=password,
        salt=salt,
        time_cost=t,
        memory_cost=m_kib,
        parallelism=p,
        hash_len=32,
        type=Type.ID,
        version=ARGON2_VERSION,
    )


def pattern(n: int, start: int, step: int = 1) -> bytes:
    """Deterministic test bytes: start, start+step, ... mod 256."""
    return bytes((start + i * step) % 256 for i in range(n))


# ---------------------------------------------------------------- kdf.json

KDF_INPUTS = [
    # (password, salt, m_kib, t, p)
    ("password", pattern(16, 0x01), 64, 1, 1),
    ("correct horse battery staple", pattern(16, 0xa0, 3), 1024, 2, 2),
    ("pässwörd \u2603 \U0001f511", bytes(16), 256, 3, 4),
    # The defaults: KdfParams::default() (64 MiB, t = 3, p = 4).
    ("clipmesh default parameters", pattern(16, 0x10, 7), 65536, 3, 4),
]


def kdf_vectors():
    out = []
    for password, salt, m_kib, t, p in KDF_INPUTS:
        master = argon2id(password.encode("utf-8"), salt, m_kib, t, p)
        out.append(
            {
                "password": password,
                "salt_hex": salt.hex(),
                "m_kib": m_kib,
                "t": t,
                "p": p,
                "master_hex": master.hex(),
                "auth_key_hex": hkdf_sha256(master, INFO_AUTH).hex(),
                "kek_hex": hkdf_sha256(master, INFO_KEK).hex(),
            }
        )
    return out


# --------------------------------------------------------------- wrap.json


def wrap_vectors(kdf):
    inputs = [
        # The KEK of the first KDF vector, so the two files chain.
        (bytes.fromhex(kdf[0]["kek_hex"]), pattern(32, 0x40), pattern(24, 0x80)),
        (pattern(32, 0xff, 0xfd), bytes(32), pattern(24, 0x00, 0x11)),
    ]
    out = []
    for kek, data_key, nonce in inputs:
        wrapped = crypto_aead_xchacha20poly1305_ietf_encrypt(data_key, WRAP_AAD, nonce, kek)
        assert len(wrapped) == 32 + 16
        out.append(
            {
                "kek_hex": kek.hex(),
                "data_key_hex": data_key.hex(),
                "nonce_hex": nonce.hex(),
                "aad_hex": WRAP_AAD.hex(),
                "wrapped_hex": wrapped.hex(),
            }
        )
    return out


# ----------------------------------------------------------- clip_key.json


def clip_key_vectors(wrap):
    out = []
    for w in wrap:
        data_key = bytes.fromhex(w["data_key_hex"])
        out.append(
            {
                "data_key_hex": data_key.hex(),
                "info": INFO_CLIP.decode("ascii"),
                "clip_key_hex": hkdf_sha256(data_key, INFO_CLIP).hex(),
            }
        )
    return out


# ----------------------------------------------------------- envelope.json


def envelope_header(sender: int, seq: int, kind: int = ENVELOPE_KIND_CLIP) -> bytes:
    """version u8 | kind u8 | sender u64 | seq u64, big-endian (18 bytes)."""
    return struct.pack(">BBQQ", ENVELOPE_VERSION, kind, sender, seq)


def clip_item_text(timestamp_ms: int, text: str) -> bytes:
    """version u8 | timestamp_ms u64 | tag 0x01 | len u32 | utf-8."""
    b = text.encode("utf-8")
    return struct.pack(">BQBI", CONTENT_VERSION, timestamp_ms, 0x01, len(b)) + b


def envelope_vectors(clip_keys):
    key = bytes.fromhex(clip_keys[0]["clip_key_hex"])
    inputs = [
        # (sender, seq, nonce, plaintext)
        (3, 1, pattern(24, 0x20), clip_item_text(1_700_000_000_000, "hello from clipmesh")),
        (0x0102030405060708, 0xFFFFFFFFFFFFFFFF, pattern(24, 0xc0, 5), b""),
        (42, 7, pattern(24, 0x55, 13), pattern(1000, 0x00)),
    ]
    out = []
    for sender, seq, nonce, plaintext in inputs:
        aad = envelope_header(sender, seq)
        ct = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
        assert crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key) == plaintext
        out.append(
            {
                "key_hex": key.hex(),
                "nonce_hex": nonce.hex(),
                "aad_hex": aad.hex(),
                "plaintext_hex": plaintext.hex(),
                "ciphertext_hex": ct.hex(),
                "envelope_hex": (aad + nonce + ct).hex(),
            }
        )
    return out


# ------------------------------------------------------------- signal.json


def signal_plaintext(kind: int, target: int, session: int, body: str) -> bytes:
    """version u8 | kind u8 | target u64 | session u64 | body (rest, UTF-8)."""
    return struct.pack(">BBQQ", SIGNAL_VERSION, kind, target, session) + body.encode("utf-8")


def signal_vectors(wrap):
    """The signal key of each data key, and one sealed offer under the first."""
    out = []
    for w in wrap:
        data_key = bytes.fromhex(w["data_key_hex"])
        out.append(
            {
                "data_key_hex": data_key.hex(),
                "info": INFO_SIGNAL.decode("ascii"),
                "signal_key_hex": hkdf_sha256(data_key, INFO_SIGNAL).hex(),
            }
        )
    key = bytes.fromhex(out[0]["signal_key_hex"])
    sender, seq, nonce = 1, 1_700_000_000_000_000, pattern(24, 0x70, 7)
    plaintext = signal_plaintext(SIGNAL_KIND_OFFER, 2, 0x0123456789ABCDEF, "v=0\r\n")
    aad = envelope_header(sender, seq, ENVELOPE_KIND_SIGNAL)
    ct = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    out[0]["sealed_offer"] = {
        "sender": sender,
        "target": 2,
        "session": 0x0123456789ABCDEF,
        "body": "v=0\r\n",
        "plaintext_hex": plaintext.hex(),
        "envelope_hex": (aad + nonce + ct).hex(),
    }
    return out


# --------------------------------------------------------------- blob.json


def blob_chunk_aad(blob_id: bytes, index: int, last: bool) -> bytes:
    """domain (16) | blob id (16) | index u64 | last u8, big-endian (41 bytes)."""
    return BLOB_AAD_DOMAIN + blob_id + struct.pack(">QB", index, 1 if last else 0)


def blob_vectors():
    """Whole blobs sealed chunk by chunk. The plaintext is pattern(len, start, step);
    chunk i uses nonce pattern(24, 0x30 + i, 3). Chunks up to 256 sealed bytes are
    given in full (`sealed_hex`), bigger ones by SHA-256 only."""
    inputs = [
        # (key, blob id, plaintext length, pattern start, pattern step)
        (pattern(32, 0x42), pattern(16, 0xa0), 0, 0, 1),
        (pattern(32, 0x42), pattern(16, 0xa0), 100, 0x10, 7),
        (pattern(32, 0x07, 5), pattern(16, 0x00, 0x11), BLOB_CHUNK_LEN + 5, 0x01, 3),
    ]
    out = []
    for key, blob_id, length, start, step in inputs:
        plaintext = pattern(length, start, step)
        count = max(1, -(-length // BLOB_CHUNK_LEN))
        chunks = []
        for i in range(count):
            last = i == count - 1
            piece = plaintext[i * BLOB_CHUNK_LEN:(i + 1) * BLOB_CHUNK_LEN]
            nonce = pattern(24, 0x30 + i, 3)
            aad = blob_chunk_aad(blob_id, i, last)
            ct = crypto_aead_xchacha20poly1305_ietf_encrypt(piece, aad, nonce, key)
            assert crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key) == piece
            sealed = nonce + ct
            chunks.append(
                {
                    "index": i,
                    "last": last,
                    "nonce_hex": nonce.hex(),
                    "aad_hex": aad.hex(),
                    "sealed_len": len(sealed),
                    "sealed_sha256_hex": hashlib.sha256(sealed).hexdigest(),
                    "sealed_hex": sealed.hex() if len(sealed) <= 256 else "",
                }
            )
        out.append(
            {
                "key_hex": key.hex(),
                "id_hex": blob_id.hex(),
                "plaintext_len": length,
                "plaintext_start": start,
                "plaintext_step": step,
                "plaintext_sha256_hex": hashlib.sha256(plaintext).hexdigest(),
                "chunks": chunks,
            }
        )
    return out


# Protocol v2 constants, spelled out independently of proto/src/{device,epoch,signed,opaque}.rs.
FINGERPRINT_DOMAIN = b"clipmesh/v2/fingerprint"
EPOCH_SALT_PREFIX = b"clipmesh/v2/epoch"
INFO_CLIP_V2 = b"clipmesh/v2/clip"
INFO_ROSTER = b"clipmesh/v2/roster"
INFO_EPOCH_WRAP = b"clipmesh/v2/epoch-wrap"
EXPORT_WRAP_AAD = b"clipmesh/v2/epoch-export-wrap"
CERT_DOMAIN = b"clipmesh/v2/device-cert"
INFO_EXPORT_KEK = b"clipmesh/v2/export-kek"
SIGNATURE_DOMAIN = b"clipmesh/v2/envelope"
SIGNED_ENVELOPE_VERSION = 2


def device_public(secrets: bytes) -> bytes:
    """x25519 public (32) | ed25519 public (32) from x25519 secret | ed25519 seed."""
    x_pub = crypto_scalarmult_base(secrets[:32])
    ed_pub, _ = crypto_sign_seed_keypair(secrets[32:])
    return x_pub + ed_pub


def ed25519_sign(secrets: bytes, msg: bytes) -> bytes:
    _, sk = crypto_sign_seed_keypair(secrets[32:])
    return crypto_sign(msg, sk)[:64]


def fingerprint(public: bytes) -> str:
    d = hashlib.sha256(FINGERPRINT_DOMAIN + public).digest()
    return " ".join(f"{int.from_bytes(d[i * 5:i * 5 + 5], 'big') % 100000:05d}" for i in range(6))


def epoch_salt(epoch: int) -> bytes:
    return EPOCH_SALT_PREFIX + struct.pack(">I", epoch)


def device_vectors():
    out = []
    for seed in [b"\x01" * 64, pattern(64, 7, 13), pattern(64, 200, 3)]:
        pub = device_public(seed)
        out.append(
            {
                "secrets_hex": seed.hex(),
                "public_hex": pub.hex(),
                "fingerprint": fingerprint(pub),
                "message_hex": pattern(40, 1).hex(),
                "signature_hex": ed25519_sign(seed, pattern(40, 1)).hex(),
            }
        )
    return out


def epoch_vectors(devices):
    out = []
    for i, (key, epoch, device_id) in enumerate([(b"\x03" * 32, 1, 7), (pattern(32, 9, 5), 0, 1), (pattern(32, 100, 1), 4294967295, 2**64 - 1)]):
        public = bytes.fromhex(devices[i]["public_hex"])
        roster = hkdf_sha256(key, INFO_ROSTER, salt=epoch_salt(epoch))
        cert = hmac.new(roster, CERT_DOMAIN + struct.pack(">IQ", epoch, device_id) + public, hashlib.sha256).digest()
        out.append(
            {
                "epoch_key_hex": key.hex(),
                "epoch": epoch,
                "clip_key_hex": hkdf_sha256(key, INFO_CLIP_V2, salt=epoch_salt(epoch)).hex(),
                "device_id": device_id,
                "device_public_hex": public.hex(),
                "cert_hex": cert.hex(),
            }
        )
    return out


def epoch_wrap_vectors(devices):
    out = []
    for key, epoch, sender, recipient, eph, nonce, si, ri in [
        (b"\x03" * 32, 1, 7, 8, pattern(32, 50, 7), pattern(24, 90, 1), 0, 1),
        (pattern(32, 9, 5), 12, 1, 2, pattern(32, 51, 11), pattern(24, 3, 9), 2, 0),
    ]:
        s_sec = bytes.fromhex(devices[si]["secrets_hex"])
        r_sec = bytes.fromhex(devices[ri]["secrets_hex"])
        r_pub = device_public(r_sec)
        eph_pub = crypto_scalarmult_base(eph)
        shared = crypto_scalarmult(eph, r_pub[:32])
        k = hkdf_sha256(shared, INFO_EPOCH_WRAP, salt=eph_pub + r_pub[:32])
        aad = INFO_EPOCH_WRAP + struct.pack(">IQQ", epoch, sender, recipient)
        ct = crypto_aead_xchacha20poly1305_ietf_encrypt(key, aad, nonce, k)
        body = eph_pub + nonce + ct
        sig = ed25519_sign(s_sec, aad + body)
        out.append(
            {
                "epoch_key_hex": key.hex(),
                "epoch": epoch,
                "sender_id": sender,
                "sender_secrets_hex": s_sec.hex(),
                "recipient_id": recipient,
                "recipient_secrets_hex": r_sec.hex(),
                "eph_secret_hex": eph.hex(),
                "nonce_hex": nonce.hex(),
                "wrapped_hex": (body + sig).hex(),
            }
        )
    return out


def export_wrap_vectors():
    out = []
    for export_key, epoch, key, nonce in [
        (pattern(64, 1, 1), 1, b"\x03" * 32, pattern(24, 7, 7)),
        (pattern(64, 255, 3), 0, pattern(32, 9, 5), pattern(24, 8, 1)),
    ]:
        kek = hkdf_sha256(export_key, INFO_EXPORT_KEK)
        ct = crypto_aead_xchacha20poly1305_ietf_encrypt(key, EXPORT_WRAP_AAD + struct.pack(">I", epoch), nonce, kek)
        out.append(
            {
                "export_key_hex": export_key.hex(),
                "export_kek_hex": kek.hex(),
                "epoch": epoch,
                "epoch_key_hex": key.hex(),
                "nonce_hex": nonce.hex(),
                "wrapped_hex": (nonce + ct).hex(),
            }
        )
    return out


def signed_envelope_vectors(epochs, devices):
    out = []
    for ei, di, sender, seq, nonce, plaintext in [
        (0, 0, 7, 1, pattern(24, 11, 3), clip_item_text(1_700_000_000_000, "hello v2")),
        (1, 2, 1, 2**64 - 1, pattern(24, 12, 5), b""),
    ]:
        e = epochs[ei]
        key = bytes.fromhex(e["clip_key_hex"])
        secrets = bytes.fromhex(devices[di]["secrets_hex"])
        header = struct.pack(">BBQQI", SIGNED_ENVELOPE_VERSION, ENVELOPE_KIND_CLIP, sender, seq, e["epoch"])
        ct = crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)
        sealed = header + nonce + ct
        sig = ed25519_sign(secrets, SIGNATURE_DOMAIN + sealed)
        out.append(
            {
                "clip_key_hex": key.hex(),
                "epoch": e["epoch"],
                "sender_secrets_hex": secrets.hex(),
                "sender_public_hex": device_public(secrets).hex(),
                "sender": sender,
                "seq": seq,
                "nonce_hex": nonce.hex(),
                "plaintext_hex": plaintext.hex(),
                "envelope_hex": (sealed + sig).hex(),
            }
        )
    return out


def all_vectors():
    kdf = kdf_vectors()
    wrap = wrap_vectors(kdf)
    clip_keys = clip_key_vectors(wrap)
    env = envelope_vectors(clip_keys)
    return {
        "kdf.json": kdf,
        "wrap.json": wrap,
        "clip_key.json": clip_keys,
        "envelope.json": env,
        "signal.json": signal_vectors(wrap),
        "blob.json": blob_vectors(),
        **v2_vectors(),
    }


def v2_vectors():
    devices = device_vectors()
    epochs = epoch_vectors(devices)
    return {
        "device.json": devices,
        "epoch.json": epochs,
        "epoch_wrap.json": epoch_wrap_vectors(devices),
        "export_wrap.json": export_wrap_vectors(),
        "signed_envelope.json": signed_envelope_vectors(epochs, devices),
    }


def render(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="verify the committed files instead of writing them")
    args = ap.parse_args()

    vectors = all_vectors()
    if not args.check:
        VECTORS_DIR.mkdir(parents=True, exist_ok=True)
        for name, value in vectors.items():
            (VECTORS_DIR / name).write_text(render(value), encoding="utf-8")
            print(f"wrote proto/tests/vectors/{name} ({len(value)} entries)")
        return 0

    failed = False
    for name, expected in vectors.items():
        path = VECTORS_DIR / name
        try:
            committed = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            print(f"FAIL proto/tests/vectors/{name}: {e}")
            failed = True
            continue
        if committed != expected:
            failed = True
            print(f"FAIL proto/tests/vectors/{name}: differs from an independent recomputation")
            for i, (c, e) in enumerate(zip(committed, expected)):
                for k in sorted(set(c) | set(e)):
                    if c.get(k) != e.get(k):
                        print(f"  entry {i} field {k}: committed {c.get(k)!r} expected {e.get(k)!r}")
            if len(committed) != len(expected):
                print(f"  {len(committed)} entries committed, {len(expected)} expected")
        else:
            print(f"ok   proto/tests/vectors/{name} ({len(expected)} entries)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
