//! The sans-IO core of one device's WebSocket after `Hello`: what each
//! inbound message asks for.
//!
//! A host feeds every message it reads with [`ConnState::handle_binary`] or
//! [`ConnState::handle_text`] and the current time, and does what the
//! returned [`Inbound`] says: forward a publish or signal to the room,
//! write a reply, or close. `Ping` is answered here without decoding
//! anything else, so a host can answer it without waking the room.
//!
//! The state is small (a strike counter and, once the device publishes, a
//! [`PublishLimiter`]): idle devices never allocate a limiter.

use crate::ratelimit::{PublishLimiter, Verdict};
use clipmesh_proto::{CloseCode, DeviceId, ErrorCode, Frame, SignalKind};
use std::time::Duration;

/// Bytes a `Deliver` adds to the envelope (version, tag, seq, from).
pub const DELIVER_OVERHEAD: usize = 18;

/// The per-connection limits, copied from the host's config.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Largest frame, bytes (a `Deliver` of the envelope must fit).
    pub max_frame: u32,
    /// Publishes and signals per second per device.
    pub publish_per_s: f64,
    /// Burst allowed above the rate.
    pub publish_burst: f64,
    /// Rejected frames per strike window before close 4003.
    pub rate_limit_strikes: u32,
    /// Undecodable or text frames before close 4002.
    pub bad_frame_strikes: u32,
}

/// What one inbound message asks the host to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Nothing.
    Nothing,
    /// Hand this publish to the room.
    Publish {
        /// The `Publish` id.
        id: u32,
        /// The sealed envelope.
        envelope: Vec<u8>,
    },
    /// Hand this signalling frame to the room.
    Signal {
        /// Target device.
        peer: DeviceId,
        /// Kind.
        kind: SignalKind,
        /// Payload.
        payload: Vec<u8>,
    },
    /// Write this frame back to the device.
    Reply(Frame),
    /// Close the socket with this code (the host then tells the room the
    /// connection left).
    Close(CloseCode),
}

/// One connection's inbound state.
#[derive(Debug, Default)]
pub struct ConnState {
    limiter: Option<Box<PublishLimiter>>,
    bad_frames: u32,
}

fn error(code: ErrorCode, id: u32, message: impl Into<String>) -> Inbound {
    Inbound::Reply(Frame::Error {
        code,
        id,
        message: message.into(),
    })
}

impl ConnState {
    /// A fresh connection.
    pub fn new() -> Self {
        Self::default()
    }

    fn strike(&mut self, limits: &ConnLimits) -> bool {
        self.bad_frames += 1;
        self.bad_frames >= limits.bad_frame_strikes.max(1)
    }

    /// A text message: refused with `Error{BadFrame}`, and close 4002 after
    /// `bad_frame_strikes` bad messages.
    pub fn handle_text(&mut self, limits: &ConnLimits) -> Inbound {
        if self.strike(limits) {
            return Inbound::Close(CloseCode::ProtocolError);
        }
        error(
            ErrorCode::BadFrame,
            0,
            "text messages are not accepted; send binary frames",
        )
    }

    /// A binary message at `now` (any monotonic origin).
    pub fn handle_binary(&mut self, bytes: &[u8], limits: &ConnLimits, now: Duration) -> Inbound {
        if Frame::peek_tag(bytes).ok() == Some(Frame::PING_TAG) {
            if let Ok(Frame::Ping { nonce }) = Frame::decode(bytes) {
                return Inbound::Reply(Frame::Pong { nonce });
            }
        }
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                if self.strike(limits) {
                    return Inbound::Close(CloseCode::ProtocolError);
                }
                return error(ErrorCode::BadFrame, 0, format!("bad frame: {e}"));
            }
        };
        let max_envelope = (limits.max_frame as usize).saturating_sub(DELIVER_OVERHEAD);
        let mut check = || {
            self.limiter
                .get_or_insert_with(|| {
                    Box::new(PublishLimiter::new(
                        limits.publish_per_s,
                        limits.publish_burst,
                        limits.rate_limit_strikes,
                        now,
                    ))
                })
                .check(now)
        };
        match frame {
            Frame::Publish { id, envelope } => {
                if envelope.len() > max_envelope {
                    return error(ErrorCode::TooLarge, id, "envelope too large");
                }
                match check() {
                    Verdict::Allow => Inbound::Publish { id, envelope },
                    Verdict::Reject => error(ErrorCode::RateLimited, id, "publishing too fast"),
                    Verdict::Close => Inbound::Close(CloseCode::RateLimited),
                }
            }
            Frame::Signal {
                peer,
                kind,
                payload,
            } => match check() {
                Verdict::Allow => Inbound::Signal {
                    peer,
                    kind,
                    payload,
                },
                Verdict::Reject => error(ErrorCode::RateLimited, 0, "signalling too fast"),
                Verdict::Close => Inbound::Close(CloseCode::RateLimited),
            },
            Frame::Pong { .. } | Frame::Error { .. } => Inbound::Nothing,
            Frame::Chunk { .. } => error(
                ErrorCode::Unexpected,
                0,
                "the relay does not reassemble chunks; publish frames up to max_frame",
            ),
            other => error(
                ErrorCode::Unexpected,
                0,
                format!("unexpected frame tag {:#04x}", other.tag()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ConnLimits = ConnLimits {
        max_frame: 100,
        publish_per_s: 1.0,
        publish_burst: 2.0,
        rate_limit_strikes: 1,
        bad_frame_strikes: 2,
    };
    const T: Duration = Duration::from_secs(5);

    #[test]
    fn ping_is_answered_without_the_room() {
        let mut c = ConnState::new();
        let ping = Frame::Ping { nonce: 9 }.encode();
        assert_eq!(
            c.handle_binary(&ping, &L, T),
            Inbound::Reply(Frame::Pong { nonce: 9 })
        );
    }

    #[test]
    fn publish_is_forwarded_then_limited_then_closed() {
        let mut c = ConnState::new();
        let p = |id| {
            Frame::Publish {
                id,
                envelope: vec![1; 10],
            }
            .encode()
        };
        assert!(matches!(
            c.handle_binary(&p(1), &L, T),
            Inbound::Publish { id: 1, .. }
        ));
        assert!(matches!(
            c.handle_binary(&p(2), &L, T),
            Inbound::Publish { id: 2, .. }
        ));
        assert!(matches!(
            c.handle_binary(&p(3), &L, T),
            Inbound::Reply(Frame::Error {
                code: ErrorCode::RateLimited,
                id: 3,
                ..
            })
        ));
        assert_eq!(
            c.handle_binary(&p(4), &L, T),
            Inbound::Close(CloseCode::RateLimited)
        );
    }

    #[test]
    fn oversized_envelope_is_refused() {
        let mut c = ConnState::new();
        let big = Frame::Publish {
            id: 7,
            envelope: vec![0; 100],
        }
        .encode();
        assert!(matches!(
            c.handle_binary(&big, &L, T),
            Inbound::Reply(Frame::Error {
                code: ErrorCode::TooLarge,
                id: 7,
                ..
            })
        ));
    }

    #[test]
    fn bad_frames_strike_then_close() {
        let mut c = ConnState::new();
        assert!(matches!(
            c.handle_binary(&[0xff, 0xff], &L, T),
            Inbound::Reply(Frame::Error {
                code: ErrorCode::BadFrame,
                ..
            })
        ));
        assert_eq!(c.handle_text(&L), Inbound::Close(CloseCode::ProtocolError));
    }

    #[test]
    fn unexpected_frames_get_an_error_not_a_close() {
        let mut c = ConnState::new();
        let hello = Frame::Hello { last_seen: 0 }.encode();
        assert!(matches!(
            c.handle_binary(&hello, &L, T),
            Inbound::Reply(Frame::Error {
                code: ErrorCode::Unexpected,
                ..
            })
        ));
        let pong = Frame::Pong { nonce: 1 }.encode();
        assert_eq!(c.handle_binary(&pong, &L, T), Inbound::Nothing);
    }
}
