//! Every message between a device and the relay, and between two devices.
//!
//! One frame is one binary WebSocket message (or one WebRTC data-channel
//! message). Layout: `version: u8 | tag: u8 | body`. Integers are big-endian;
//! see [`crate::codec`] for the primitives and `docs/protocol.md` for every
//! frame's byte layout.
//!
//! The relay only ever looks at the frame layer. Clip contents travel inside
//! [`Frame::Publish`] / [`Frame::Deliver`] as an opaque, sealed
//! [`crate::Envelope`].

use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::{DeviceId, UserId};
use std::fmt;

/// The frame-layer protocol version. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u8 = 1;

/// Longest device name, in bytes.
pub const MAX_DEVICE_NAME: usize = 64;
/// Longest error message, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 256;
/// Longest signalling payload (SDP or ICE candidate), in bytes.
pub const MAX_SIGNAL_PAYLOAD: usize = 64 * 1024;
/// Most devices listed in one presence or welcome frame.
pub const MAX_DEVICES_LISTED: usize = 256;

const TAG_HELLO: u8 = 0x01;
const TAG_WELCOME: u8 = 0x02;
const TAG_PUBLISH: u8 = 0x03;
const TAG_DELIVER: u8 = 0x04;
const TAG_ACK: u8 = 0x05;
const TAG_ERROR: u8 = 0x06;
const TAG_PRESENCE: u8 = 0x07;
const TAG_SIGNAL: u8 = 0x08;
const TAG_PING: u8 = 0x09;
const TAG_PONG: u8 = 0x0a;
const TAG_CHUNK: u8 = 0x0b;

/// A device as other devices of the same user see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The device's relay-assigned id.
    pub id: DeviceId,
    /// The name the user gave it at login (at most [`MAX_DEVICE_NAME`] bytes).
    pub name: String,
}

/// What a signalling frame carries for the WebRTC handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SignalKind {
    /// An SDP offer.
    Offer = 1,
    /// An SDP answer.
    Answer = 2,
    /// One trickled ICE candidate.
    Candidate = 3,
    /// The sender tears its side of the peer link down.
    Bye = 4,
}

impl SignalKind {
    /// The kind with wire value `v`.
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Self::Offer,
            2 => Self::Answer,
            3 => Self::Candidate,
            4 => Self::Bye,
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "signal kind",
                    tag,
                })
            }
        })
    }
}

/// Stable error codes carried by [`Frame::Error`]. Numbers never change
/// meaning; unknown numbers decode as [`ErrorCode::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame could not be decoded.
    BadFrame,
    /// The frame or item is larger than the relay accepts.
    TooLarge,
    /// The device publishes faster than its rate limit.
    RateLimited,
    /// A signalling frame named a device that is not online for this user.
    PeerOffline,
    /// The frame type is not allowed in this direction or state.
    Unexpected,
    /// The relay failed internally; the client may retry.
    Internal,
    /// A code this build does not know.
    Other(u16),
}

impl ErrorCode {
    /// The code's wire number.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::BadFrame => 1,
            Self::TooLarge => 2,
            Self::RateLimited => 3,
            Self::PeerOffline => 4,
            Self::Unexpected => 5,
            Self::Internal => 6,
            Self::Other(n) => n,
        }
    }

    /// The code for a wire number.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1 => Self::BadFrame,
            2 => Self::TooLarge,
            3 => Self::RateLimited,
            4 => Self::PeerOffline,
            5 => Self::Unexpected,
            6 => Self::Internal,
            n => Self::Other(n),
        }
    }
}

/// WebSocket close codes the relay uses. 1000–1015 are RFC 6455's; 4000–4999
/// are ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCode {
    /// Normal closure.
    Normal,
    /// The relay is restarting: reconnect at once, without back-off.
    ServiceRestart,
    /// The relay is full (total connections): retry later with back-off.
    TryAgainLater,
    /// A frame exceeded the maximum frame size.
    TooLarge,
    /// The device's session was revoked or its account disabled: log in again.
    Unauthorized,
    /// The peer sent a frame that broke the protocol.
    ProtocolError,
    /// The device kept publishing above its rate limit.
    RateLimited,
    /// The user already has the maximum number of devices online.
    TooManyDevices,
    /// The device did not read fast enough and its send queue filled.
    SlowConsumer,
    /// Nothing was heard from the device within the idle timeout.
    IdleTimeout,
    /// The same device connected again; this older socket is closed.
    Replaced,
    /// A code this build does not know.
    Other(u16),
}

impl CloseCode {
    /// The code's wire number.
    pub fn as_u16(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::ServiceRestart => 1012,
            Self::TryAgainLater => 1013,
            Self::TooLarge => 1009,
            Self::Unauthorized => 4001,
            Self::ProtocolError => 4002,
            Self::RateLimited => 4003,
            Self::TooManyDevices => 4004,
            Self::SlowConsumer => 4005,
            Self::IdleTimeout => 4006,
            Self::Replaced => 4007,
            Self::Other(n) => n,
        }
    }

    /// The code for a wire number.
    pub fn from_u16(n: u16) -> Self {
        match n {
            1000 => Self::Normal,
            1012 => Self::ServiceRestart,
            1013 => Self::TryAgainLater,
            1009 => Self::TooLarge,
            4001 => Self::Unauthorized,
            4002 => Self::ProtocolError,
            4003 => Self::RateLimited,
            4004 => Self::TooManyDevices,
            4005 => Self::SlowConsumer,
            4006 => Self::IdleTimeout,
            4007 => Self::Replaced,
            n => Self::Other(n),
        }
    }

    /// A short human reason, sent as the WebSocket close reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::ServiceRestart => "service restart",
            Self::TryAgainLater => "relay full",
            Self::TooLarge => "frame too large",
            Self::Unauthorized => "session revoked",
            Self::ProtocolError => "protocol error",
            Self::RateLimited => "rate limited",
            Self::TooManyDevices => "too many devices online",
            Self::SlowConsumer => "slow consumer",
            Self::IdleTimeout => "idle timeout",
            Self::Replaced => "replaced by a newer connection",
            Self::Other(_) => "closed",
        }
    }
}

/// One protocol message.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// Device → relay, first frame after the (token-authenticated) upgrade.
    Hello {
        /// Room sequence number of the newest clip this device has already
        /// received, or 0. The relay replays its stored newest clip if it is
        /// newer.
        last_seen: u64,
    },
    /// Relay → device, answer to `Hello`.
    Welcome {
        /// The authenticated user.
        user: UserId,
        /// This device.
        device: DeviceId,
        /// Largest frame the relay accepts, in bytes.
        max_frame: u32,
        /// How often the device should ping, in seconds.
        ping_interval_s: u16,
        /// Silence after which the relay closes the socket, in seconds.
        idle_timeout_s: u16,
        /// The user's devices online now, this one included.
        online: Vec<DeviceInfo>,
    },
    /// Device → relay: an encrypted clip for the user's other devices.
    Publish {
        /// Device-chosen id echoed in the `Ack` or `Error`.
        id: u32,
        /// The sealed [`crate::Envelope`], opaque to the relay.
        envelope: Vec<u8>,
    },
    /// Relay → device: a clip another device published.
    Deliver {
        /// The room's sequence number for this clip (monotonic per user).
        seq: u64,
        /// The device that published it (stamped by the relay).
        from: DeviceId,
        /// The sealed envelope, byte for byte as published.
        envelope: Vec<u8>,
    },
    /// Relay → device: a `Publish` was accepted and fanned out.
    Ack {
        /// The `Publish` id.
        id: u32,
        /// The room sequence number assigned to it.
        seq: u64,
    },
    /// Either direction: a request failed. The connection stays open.
    Error {
        /// Stable code.
        code: ErrorCode,
        /// Id of the frame it refers to (`Publish` id), or 0.
        id: u32,
        /// Short human text; never contains clip data or secrets.
        message: String,
    },
    /// Relay → device: the user's online devices changed.
    Presence {
        /// Every online device of the user, this one included.
        online: Vec<DeviceInfo>,
    },
    /// Addressed WebRTC signalling. Device → relay: `peer` is the target;
    /// relay → device: `peer` is the sender (rewritten by the relay).
    Signal {
        /// The other device.
        peer: DeviceId,
        /// What the payload is.
        kind: SignalKind,
        /// SDP or candidate; at most [`MAX_SIGNAL_PAYLOAD`] bytes.
        payload: Vec<u8>,
    },
    /// Liveness probe; answered with a `Pong` carrying the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// One piece of a frame too large to send whole (see [`crate::chunk`]).
    Chunk {
        /// Sender-chosen id shared by all pieces of one frame.
        transfer: u32,
        /// Index of this piece, from 0.
        index: u32,
        /// Number of pieces.
        total: u32,
        /// The bytes of this piece.
        data: Vec<u8>,
    },
}

impl fmt::Debug for Frame {
    /// Prints frame metadata only. Payloads print as lengths, so a frame can
    /// be logged at trace level without leaking ciphertext or SDP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hello { last_seen } => write!(f, "Hello {{ last_seen: {last_seen} }}"),
            Self::Welcome {
                user,
                device,
                online,
                ..
            } => write!(
                f,
                "Welcome {{ user: {user}, device: {device}, online: {} }}",
                online.len()
            ),
            Self::Publish { id, envelope } => {
                write!(f, "Publish {{ id: {id}, len: {} }}", envelope.len())
            }
            Self::Deliver {
                seq,
                from,
                envelope,
            } => write!(
                f,
                "Deliver {{ seq: {seq}, from: {from}, len: {} }}",
                envelope.len()
            ),
            Self::Ack { id, seq } => write!(f, "Ack {{ id: {id}, seq: {seq} }}"),
            Self::Error { code, id, message } => {
                write!(
                    f,
                    "Error {{ code: {code:?}, id: {id}, message: {message:?} }}"
                )
            }
            Self::Presence { online } => write!(f, "Presence {{ online: {} }}", online.len()),
            Self::Signal {
                peer,
                kind,
                payload,
            } => write!(
                f,
                "Signal {{ peer: {peer}, kind: {kind:?}, len: {} }}",
                payload.len()
            ),
            Self::Ping { nonce } => write!(f, "Ping {{ nonce: {nonce} }}"),
            Self::Pong { nonce } => write!(f, "Pong {{ nonce: {nonce} }}"),
            Self::Chunk {
                transfer,
                index,
                total,
                data,
            } => write!(
                f,
                "Chunk {{ transfer: {transfer}, index: {index}/{total}, len: {} }}",
                data.len()
            ),
        }
    }
}

fn write_devices(w: &mut Writer, devices: &[DeviceInfo]) {
    let devices = &devices[..devices.len().min(MAX_DEVICES_LISTED)];
    w.count(devices.len());
    for d in devices {
        w.u64(d.id.0);
        w.str(truncate_str(&d.name, MAX_DEVICE_NAME));
    }
}

fn read_devices(r: &mut Reader<'_>) -> Result<Vec<DeviceInfo>, DecodeError> {
    // Each entry is at least 8 (id) + 4 (name length) bytes.
    let n = r.count(12, "device list")?;
    if n > MAX_DEVICES_LISTED {
        return Err(DecodeError::Range("device list"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = DeviceId(r.u64()?);
        let name = r.str_max(MAX_DEVICE_NAME, "device name")?.to_owned();
        out.push(DeviceInfo { id, name });
    }
    Ok(out)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Frame {
    /// The frame's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Hello { .. } => TAG_HELLO,
            Self::Welcome { .. } => TAG_WELCOME,
            Self::Publish { .. } => TAG_PUBLISH,
            Self::Deliver { .. } => TAG_DELIVER,
            Self::Ack { .. } => TAG_ACK,
            Self::Error { .. } => TAG_ERROR,
            Self::Presence { .. } => TAG_PRESENCE,
            Self::Signal { .. } => TAG_SIGNAL,
            Self::Ping { .. } => TAG_PING,
            Self::Pong { .. } => TAG_PONG,
            Self::Chunk { .. } => TAG_CHUNK,
        }
    }

    /// Encodes the frame. Strings and lists longer than their documented
    /// limits are truncated, so every encoded frame decodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len_hint());
        w.u8(PROTOCOL_VERSION);
        w.u8(self.tag());
        match self {
            Self::Hello { last_seen } => w.u64(*last_seen),
            Self::Welcome {
                user,
                device,
                max_frame,
                ping_interval_s,
                idle_timeout_s,
                online,
            } => {
                w.u64(user.0);
                w.u64(device.0);
                w.u32(*max_frame);
                w.u16(*ping_interval_s);
                w.u16(*idle_timeout_s);
                write_devices(&mut w, online);
            }
            Self::Publish { id, envelope } => {
                w.u32(*id);
                w.raw(envelope);
            }
            Self::Deliver {
                seq,
                from,
                envelope,
            } => {
                w.u64(*seq);
                w.u64(from.0);
                w.raw(envelope);
            }
            Self::Ack { id, seq } => {
                w.u32(*id);
                w.u64(*seq);
            }
            Self::Error { code, id, message } => {
                w.u16(code.as_u16());
                w.u32(*id);
                w.str(truncate_str(message, MAX_ERROR_MESSAGE));
            }
            Self::Presence { online } => write_devices(&mut w, online),
            Self::Signal {
                peer,
                kind,
                payload,
            } => {
                w.u64(peer.0);
                w.u8(*kind as u8);
                w.bytes(&payload[..payload.len().min(MAX_SIGNAL_PAYLOAD)]);
            }
            Self::Ping { nonce } | Self::Pong { nonce } => w.u64(*nonce),
            Self::Chunk {
                transfer,
                index,
                total,
                data,
            } => {
                w.u32(*transfer);
                w.u32(*index);
                w.u32(*total);
                w.raw(data);
            }
        }
        w.into_inner()
    }

    fn encoded_len_hint(&self) -> usize {
        2 + match self {
            Self::Publish { envelope, .. } => 4 + envelope.len(),
            Self::Deliver { envelope, .. } => 16 + envelope.len(),
            Self::Signal { payload, .. } => 13 + payload.len(),
            Self::Chunk { data, .. } => 12 + data.len(),
            _ => 64,
        }
    }

    /// Decodes one frame. Never panics; never allocates more than `buf.len()`
    /// bytes plus small constant overhead.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        let tag = r.u8()?;
        let frame = match tag {
            TAG_HELLO => Self::Hello {
                last_seen: r.u64()?,
            },
            TAG_WELCOME => Self::Welcome {
                user: UserId(r.u64()?),
                device: DeviceId(r.u64()?),
                max_frame: r.u32()?,
                ping_interval_s: r.u16()?,
                idle_timeout_s: r.u16()?,
                online: read_devices(&mut r)?,
            },
            TAG_PUBLISH => Self::Publish {
                id: r.u32()?,
                envelope: r.rest().to_vec(),
            },
            TAG_DELIVER => Self::Deliver {
                seq: r.u64()?,
                from: DeviceId(r.u64()?),
                envelope: r.rest().to_vec(),
            },
            TAG_ACK => Self::Ack {
                id: r.u32()?,
                seq: r.u64()?,
            },
            TAG_ERROR => Self::Error {
                code: ErrorCode::from_u16(r.u16()?),
                id: r.u32()?,
                message: r.str_max(MAX_ERROR_MESSAGE, "error message")?.to_owned(),
            },
            TAG_PRESENCE => Self::Presence {
                online: read_devices(&mut r)?,
            },
            TAG_SIGNAL => Self::Signal {
                peer: DeviceId(r.u64()?),
                kind: SignalKind::from_u8(r.u8()?)?,
                payload: r.bytes_max(MAX_SIGNAL_PAYLOAD, "signal payload")?.to_vec(),
            },
            TAG_PING => Self::Ping { nonce: r.u64()? },
            TAG_PONG => Self::Pong { nonce: r.u64()? },
            TAG_CHUNK => {
                let transfer = r.u32()?;
                let index = r.u32()?;
                let total = r.u32()?;
                if total == 0 || index >= total {
                    return Err(DecodeError::Range("chunk index"));
                }
                Self::Chunk {
                    transfer,
                    index,
                    total,
                    data: r.rest().to_vec(),
                }
            }
            tag => return Err(DecodeError::UnknownTag { what: "frame", tag }),
        };
        r.finish()?;
        Ok(frame)
    }

    /// Reads only the version and tag of an encoded frame, without decoding
    /// the body. The relay uses this to answer pings cheaply.
    pub fn peek_tag(buf: &[u8]) -> Result<u8, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        r.u8()
    }

    /// Tag of [`Frame::Ping`], for [`Frame::peek_tag`] callers.
    pub const PING_TAG: u8 = TAG_PING;
}
