//! `clipmesh-proto`: the wire types and the crypto envelope shared by the
//! clipmesh relay and client.
//!
//! **Architecture Invariant:** this crate does no IO. It has no async runtime,
//! no sockets and no files; time is passed in as an argument. Everything here
//! can be tested with plain function calls.
//!
//! Map of the crate:
//!
//! - [`codec`]: the bounded binary reader/writer every decoder is built on.
//! - [`frame`]: every message between a device and the relay, and between
//!   two devices, plus close and error codes.
//! - [`keys`]: the key hierarchy (Argon2id → HKDF → auth key / KEK, wrapped
//!   data key, clip and signal subkeys).
//! - [`envelope`]: the sealed envelope (XChaCha20-Poly1305, header as AAD).
//! - [`clip`]: [`seal_clip`] / [`open_clip`], clips in envelopes.
//! - [`signal`]: sealed WebRTC signalling payloads (their own envelope kind
//!   and key).
//! - [`hash`]: the one content hash every "same item?" decision uses.
//! - [`opaque`]: protocol v2 login (OPAQUE, ristretto255, Argon2id as KSF).
//! - [`device`]: per-device X25519 + Ed25519 key pairs and safety numbers.
//! - [`epoch`]: key epochs: per-epoch data keys, their wraps to devices and
//!   under the OPAQUE export key, device certificates.
//! - [`signed`]: the v2 envelope (epoch in the header, signed by the sender).
//! - [`content`]: the clip content model that lives *inside* the ciphertext.
//! - [`chunk`]: splitting oversized frames and reassembling them with bounds.
//! - [`blob`]: large items sealed as a stream of authenticated chunks
//!   (bounded memory; the relay's blob store holds only ciphertext).
//! - [`filename`]: peer-supplied file names made safe to create on disk.
//! - [`api`]: JSON bodies of the relay's HTTP API and its error codes.
//! - [`stomp`]: STOMP 1.1 frames, for ClipCascade compatibility.

pub mod api;
pub mod blob;
pub mod chunk;
pub mod clip;
pub mod codec;
pub mod content;
pub mod device;
pub mod envelope;
pub mod epoch;
pub mod filename;
pub mod frame;
pub mod hash;
pub mod ids;
pub mod keys;
pub mod opaque;
pub mod signal;
pub mod signed;
pub mod stomp;

pub use api::{ApiErrorCode, ErrorBody};
pub use blob::{
    BlobError, BlobId, BlobKey, BlobLayout, BlobOpener, BlobSealer, BlobStreamSealer, BlobSummary,
    SealedChunk,
};
pub use chunk::{Chunker, ReassembleError, Reassembler};
pub use clip::{open_clip, seal_clip, OpenClipError};
pub use codec::DecodeError;
pub use content::{ClipContent, ClipItem, FileEntry};
pub use device::{DevicePublic, DeviceSecrets, Fingerprint};
pub use envelope::{Envelope, EnvelopeHeader, EnvelopeKind, OpenError};
pub use epoch::{DeviceWrappedKey, Epoch, EpochKey, ExportKek, ExportWrappedKey};
pub use filename::{numbered_name, unique_name, SafePath};
pub use frame::{CloseCode, DeviceInfo, ErrorCode, Frame, SignalKind, PROTOCOL_VERSION};
pub use hash::{ContentHash, ContentHasher};
pub use ids::{DeviceId, UserId};
pub use keys::{AuthKey, ClipKey, DataKey, KdfParams, Kek, MasterKey, WrappedDataKey};
pub use signal::{SignalCodec, SignalError, SignalMsg};
pub use signed::{SignedEnvelope, SignedHeader};
