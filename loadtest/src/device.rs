//! One simulated device: joining (upgrade, Hello, Welcome), and the probe
//! envelopes whose bytes carry the send time.
//!
//! The relay treats an envelope as opaque. A probe envelope starts with an
//! envelope-header-shaped prefix (version, kind, sender, seq: 18 bytes) in
//! case the relay peeks it, then the send time and the run id, then zero
//! padding up to the requested size.

use crate::target::{ServerKind, Target, Ws};
use anyhow::{bail, Context};
use clipmesh_proto::envelope::{ENVELOPE_VERSION, HEADER_LEN};
use clipmesh_proto::{EnvelopeKind, Frame};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Time allowed between Hello and Welcome.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(20);

/// Smallest probe envelope: header prefix, send time, run id.
pub const MIN_PROBE: usize = HEADER_LEN + 8 + 4;

/// What the relay told a device in `Welcome`.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    /// Seconds between pings the relay asks for (0 for the baseline).
    pub ping_interval_s: u16,
    /// When this device last sent something the relay counts as life.
    pub last_sent: tokio::time::Instant,
}

/// Connects one device and, for the relay, completes Hello → Welcome.
pub async fn join(
    target: &Target,
    token: Option<&str>,
    group: &str,
) -> anyhow::Result<(Ws, Joined)> {
    let mut ws = target.connect(token, group).await?;
    if target.kind == ServerKind::Baseline {
        return Ok((
            ws,
            Joined {
                ping_interval_s: 0,
                last_sent: tokio::time::Instant::now(),
            },
        ));
    }
    if target.kind == ServerKind::Clipcascade {
        let joined = tokio::time::timeout(WELCOME_TIMEOUT, stomp_join(&mut ws))
            .await
            .context("no RECEIPT for SUBSCRIBE in time")??;
        return Ok((ws, joined));
    }
    let hello = Frame::Hello {
        last_seen: u64::MAX,
    }
    .encode();
    ws.send(Message::Binary(hello.into()))
        .await
        .context("sending Hello")?;
    let wait = async {
        while let Some(msg) = ws.next().await {
            match msg.context("reading Welcome")? {
                Message::Binary(b) => match Frame::decode(&b) {
                    Ok(Frame::Welcome {
                        ping_interval_s, ..
                    }) => {
                        return Ok(Joined {
                            ping_interval_s,
                            last_sent: tokio::time::Instant::now(),
                        })
                    }
                    Ok(Frame::Error { code, message, .. }) => {
                        bail!("relay error before Welcome: {code:?} {message}")
                    }
                    Ok(_) => {}
                    Err(e) => bail!("undecodable frame before Welcome: {e}"),
                },
                Message::Close(frame) => bail!("closed before Welcome: {frame:?}"),
                _ => {}
            }
        }
        bail!("socket ended before Welcome")
    };
    let joined = tokio::time::timeout(WELCOME_TIMEOUT, wait)
        .await
        .context("no Welcome in time")??;
    Ok((ws, joined))
}

/// A ClipCascade session's start, as the desktop client does it: `CONNECT`
/// (no client heart-beats), then `SUBSCRIBE` to the user queue with a
/// receipt; joined once the `RECEIPT` arrives.
async fn stomp_join(ws: &mut Ws) -> anyhow::Result<Joined> {
    let frames = [
        "CONNECT\naccept-version:1.0,1.1\nheart-beat:0,20000\n\n\0",
        "SUBSCRIBE\nid:sub-0\ndestination:/user/queue/cliptext\nreceipt:sub-0\n\n\0",
    ];
    for f in frames {
        ws.send(Message::Text(f.into()))
            .await
            .context("sending CONNECT/SUBSCRIBE")?;
    }
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg.context("reading CONNECTED/RECEIPT")? {
            let t = t.trim_start_matches('\n');
            if t.starts_with("RECEIPT\n") {
                return Ok(Joined {
                    ping_interval_s: 0,
                    last_sent: tokio::time::Instant::now(),
                });
            }
            if t.starts_with("ERROR\n") {
                bail!("STOMP error before the subscription: {t:?}");
            }
        }
    }
    bail!("socket ended before the subscription's RECEIPT")
}

/// Builds a probe envelope of `size` bytes (at least [`MIN_PROBE`]).
pub fn probe(size: usize, sender: u64, seq: u64, sent_ns: u64, run: u32) -> Vec<u8> {
    let mut env = vec![0u8; size.max(MIN_PROBE)];
    env[0] = ENVELOPE_VERSION;
    env[1] = EnvelopeKind::Clip as u8;
    env[2..10].copy_from_slice(&sender.to_be_bytes());
    env[10..18].copy_from_slice(&seq.to_be_bytes());
    env[18..26].copy_from_slice(&sent_ns.to_be_bytes());
    env[26..30].copy_from_slice(&run.to_be_bytes());
    env
}

/// The send time of a probe envelope from run `run`; `None` for anything
/// else (a clip stored by an earlier run and replayed, for example).
pub fn probe_sent_ns(env: &[u8], run: u32) -> Option<u64> {
    let sent = env.get(18..26)?;
    let r = env.get(26..30)?;
    if r != run.to_be_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(sent.try_into().ok()?))
}

/// The bytes a publisher sends: a `Publish` frame (the baseline forwards
/// them verbatim, the relay answers with `Ack` and fans out `Deliver`).
pub fn publish_bytes(id: u32, envelope: Vec<u8>) -> Vec<u8> {
    Frame::Publish { id, envelope }.encode()
}

/// What a received binary message means to the load tool.
#[derive(Debug)]
pub enum Inbound {
    /// A fanned-out clip: `Deliver` from the relay, the forwarded `Publish`
    /// from the baseline.
    Clip(Vec<u8>),
    /// The relay accepted a publish.
    Ack,
    /// The relay refused something.
    Error(String),
    /// Presence, Pong and the like.
    Other,
}

/// Classifies one received binary message.
pub fn inbound(bytes: &[u8]) -> Inbound {
    match Frame::decode(bytes) {
        Ok(Frame::Deliver { envelope, .. }) | Ok(Frame::Publish { envelope, .. }) => {
            Inbound::Clip(envelope)
        }
        Ok(Frame::Ack { .. }) => Inbound::Ack,
        Ok(Frame::Error { code, message, .. }) => Inbound::Error(format!("{code:?}: {message}")),
        Ok(_) => Inbound::Other,
        Err(e) => Inbound::Error(format!("undecodable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clipmesh_proto::Envelope;

    #[test]
    fn probe_round_trips_through_frames() {
        let env = probe(1024, 7, 9, 123_456, 42);
        assert_eq!(env.len(), 1024);
        let header = Envelope::peek_header(&env).unwrap();
        assert_eq!((header.sender.0, header.seq), (7, 9));
        let Inbound::Clip(got) = inbound(&publish_bytes(1, env)) else {
            panic!("not a clip");
        };
        assert_eq!(probe_sent_ns(&got, 42), Some(123_456));
        assert_eq!(probe_sent_ns(&got, 43), None);
    }
}
