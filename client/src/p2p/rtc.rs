//! One WebRTC connection attempt and, once open, the data channel's pump.
//!
//! An attempt is a task. It builds a peer connection (no STUN or TURN
//! server, mDNS off, UDP bound to the configured address), runs its half of
//! the offer/answer exchange with the whole candidate list in the SDP (no
//! trickling needed; trickled candidates from the peer are still applied),
//! waits for the data channel `clipmesh` to open, then moves frames both
//! ways until the channel closes or the manager stops it. Whatever ends it,
//! the peer connection is closed and the manager hears `Ended` once.
//!
//! Peer-link framing: one data-channel message is one protocol frame. A
//! clip travels as `Publish { id, envelope }`; one whose frame is larger
//! than [`PIECE`] travels as `Chunk` frames ([`clipmesh_proto::Chunker`]).

use super::plan::Role;
use clipmesh_proto::{Chunker, DeviceId, Frame, Reassembler, SignalKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

/// Label of the data channel.
pub const CHANNEL_LABEL: &str = "clipmesh";
/// Largest data-channel message this side sends (whole frames up to this,
/// chunks above).
pub const PIECE: usize = 16 * 1024;
/// Largest envelope accepted from or sent to a peer over the channel.
pub const MAX_PEER_ENVELOPE: usize = 16 << 20;
/// Longest wait for ICE gathering before the SDP is sent as it is.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Envelopes queued per open channel.
pub const OUT_QUEUE: usize = 16;

/// What an attempt tells the manager.
#[derive(Debug)]
pub enum Internal {
    /// Send this signalling message to the peer (sealed by the manager).
    Signal {
        /// The peer.
        peer: DeviceId,
        /// The attempt.
        session: u64,
        /// Offer, answer or candidate.
        kind: SignalKind,
        /// SDP or candidate line.
        body: String,
    },
    /// The data channel is open.
    Opened {
        /// The peer.
        peer: DeviceId,
        /// The attempt.
        session: u64,
    },
    /// A sealed envelope arrived over the channel.
    Envelope {
        /// The peer.
        peer: DeviceId,
        /// The envelope.
        envelope: Vec<u8>,
    },
    /// The attempt or link ended.
    Ended {
        /// The peer.
        peer: DeviceId,
        /// The attempt.
        session: u64,
        /// Why (one line, no SDP).
        reason: String,
    },
}

/// Signalling the manager hands to a running attempt.
#[derive(Debug)]
pub enum Remote {
    /// The peer's answer SDP.
    Answer(String),
    /// One trickled candidate line.
    Candidate(String),
}

/// Everything one attempt needs.
#[derive(Debug)]
pub struct Attempt {
    /// The peer.
    pub peer: DeviceId,
    /// Session id.
    pub session: u64,
    /// Our side of the handshake.
    pub role: Role,
    /// The peer's offer, for an answerer.
    pub offer: Option<String>,
    /// Local UDP address to bind (`0.0.0.0:0`: every non-loopback interface).
    pub bind: String,
    /// Reports to the manager.
    pub events: mpsc::Sender<Internal>,
    /// Answer and candidates from the peer.
    pub remote: mpsc::Receiver<Remote>,
    /// Envelopes to send once open.
    pub outgoing: mpsc::Receiver<Arc<Vec<u8>>>,
    /// Stops the attempt.
    pub cancel: CancellationToken,
}

/// What the peer connection's callbacks report.
enum PcEvent {
    Gathered,
    State(RTCPeerConnectionState),
    Channel(Arc<dyn DataChannel>),
}

struct Handler {
    tx: mpsc::Sender<PcEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PcEvent::Gathered).await;
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(PcEvent::State(state)).await;
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.tx.send(PcEvent::Channel(dc)).await;
    }
}

/// Runs one attempt to its end; always reports `Ended` last.
pub async fn run_attempt(mut a: Attempt) {
    let events = a.events.clone();
    let (peer, session) = (a.peer, a.session);
    let reason = match attempt(&mut a).await {
        Ok(r) => r,
        Err(e) => format!("webrtc: {e}"),
    };
    let _ = events
        .send(Internal::Ended {
            peer,
            session,
            reason,
        })
        .await;
}

async fn attempt(a: &mut Attempt) -> webrtc::error::Result<String> {
    let (tx, mut pc_events) = mpsc::channel(32);
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(true)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(vec![a.bind.clone()])
        .build()
        .await?;
    let r = converse(&pc, a, &mut pc_events).await;
    if let Err(e) = pc.close().await {
        tracing::debug!(error = %e, "closing peer connection");
    }
    r
}

/// Waits until gathering completes (bounded), then returns the local SDP.
async fn local_sdp(
    pc: &impl PeerConnection,
    pc_events: &mut mpsc::Receiver<PcEvent>,
    early: &mut Vec<PcEvent>,
) -> webrtc::error::Result<String> {
    let wait = async {
        while let Some(ev) = pc_events.recv().await {
            match ev {
                PcEvent::Gathered => return,
                other => early.push(other),
            }
        }
    };
    if tokio::time::timeout(GATHER_TIMEOUT, wait).await.is_err() {
        tracing::debug!("ICE gathering not complete in time; sending the candidates found");
    }
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| webrtc::error::Error::Other("no local description".into()))
}

async fn emit(a: &Attempt, ev: Internal) -> bool {
    a.events.send(ev).await.is_ok()
}

/// Sends this side's SDP (`kind`: offer or answer) to the peer; `false`
/// when the daemon side is gone.
async fn send_sdp(a: &Attempt, kind: SignalKind, sdp: String) -> bool {
    let signal = Internal::Signal {
        peer: a.peer,
        session: a.session,
        kind,
        body: sdp,
    };
    emit(a, signal).await
}

async fn converse(
    pc: &impl PeerConnection,
    a: &mut Attempt,
    pc_events: &mut mpsc::Receiver<PcEvent>,
) -> webrtc::error::Result<String> {
    let mut early = Vec::new();
    let mut channel: Option<Arc<dyn DataChannel>> = None;
    match a.role {
        Role::Offerer => {
            channel = Some(pc.create_data_channel(CHANNEL_LABEL, None).await?);
            let offer = pc.create_offer(None).await?;
            pc.set_local_description(offer).await?;
            let sdp = local_sdp(pc, pc_events, &mut early).await?;
            tracing::debug!(peer = %a.peer, len = sdp.len(), "sending offer");
            if !send_sdp(a, SignalKind::Offer, sdp).await {
                return Ok("stopped".into());
            }
            // Wait for the answer; candidates before it are kept.
            let mut pending = Vec::new();
            loop {
                tokio::select! {
                    _ = a.cancel.cancelled() => return Ok("stopped".into()),
                    r = a.remote.recv() => match r {
                        Some(Remote::Answer(sdp)) => {
                            pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                            break;
                        }
                        Some(Remote::Candidate(c)) => pending.push(c),
                        None => return Ok("stopped".into()),
                    },
                }
            }
            for c in pending {
                add_candidate(pc, c).await;
            }
        }
        Role::Answerer => {
            let offer = a.offer.take().unwrap_or_default();
            pc.set_remote_description(RTCSessionDescription::offer(offer)?)
                .await?;
            let answer = pc.create_answer(None).await?;
            pc.set_local_description(answer).await?;
            let sdp = local_sdp(pc, pc_events, &mut early).await?;
            tracing::debug!(peer = %a.peer, len = sdp.len(), "sending answer");
            if !send_sdp(a, SignalKind::Answer, sdp).await {
                return Ok("stopped".into());
            }
        }
    }
    // Events that arrived while gathering (the answerer's channel may be
    // announced early).
    for ev in early {
        if let Some(r) = on_pc_event(ev, &mut channel) {
            return Ok(r);
        }
    }
    // Wait for the channel to exist and open.
    let dc = loop {
        if let Some(dc) = &channel {
            break dc.clone();
        }
        tokio::select! {
            _ = a.cancel.cancelled() => return Ok("stopped".into()),
            ev = pc_events.recv() => match ev {
                Some(ev) => if let Some(r) = on_pc_event(ev, &mut channel) { return Ok(r) },
                None => return Ok("peer connection ended".into()),
            },
            r = a.remote.recv() => match r {
                Some(Remote::Candidate(c)) => add_candidate(pc, c).await,
                Some(Remote::Answer(_)) => tracing::debug!("second answer ignored"),
                None => return Ok("stopped".into()),
            },
        }
    };
    loop {
        tokio::select! {
            _ = a.cancel.cancelled() => return Ok("stopped".into()),
            ev = dc.poll() => match ev {
                Some(DataChannelEvent::OnOpen) => break,
                Some(DataChannelEvent::OnClose) | None => return Ok("channel closed before opening".into()),
                Some(DataChannelEvent::OnError) => return Ok("channel error before opening".into()),
                Some(_) => {}
            },
            ev = pc_events.recv() => match ev {
                Some(ev) => if let Some(r) = on_pc_event(ev, &mut channel) { return Ok(r) },
                None => return Ok("peer connection ended".into()),
            },
            r = a.remote.recv() => match r {
                Some(Remote::Candidate(c)) => add_candidate(pc, c).await,
                Some(Remote::Answer(_)) => tracing::debug!("second answer ignored"),
                None => return Ok("stopped".into()),
            },
        }
    }
    if !emit(
        a,
        Internal::Opened {
            peer: a.peer,
            session: a.session,
        },
    )
    .await
    {
        return Ok("stopped".into());
    }
    pump(&dc, a, pc_events).await
}

/// Handles a connection callback; `Some(reason)` ends the attempt.
fn on_pc_event(ev: PcEvent, channel: &mut Option<Arc<dyn DataChannel>>) -> Option<String> {
    match ev {
        PcEvent::Gathered => None,
        PcEvent::State(s @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) => {
            Some(format!("peer connection {s}"))
        }
        PcEvent::State(s) => {
            tracing::debug!(state = %s, "peer connection state");
            None
        }
        PcEvent::Channel(dc) => {
            if channel.is_none() {
                *channel = Some(dc);
            }
            None
        }
    }
}

async fn add_candidate(pc: &impl PeerConnection, candidate: String) {
    let init = RTCIceCandidateInit {
        candidate,
        ..Default::default()
    };
    if let Err(e) = pc.add_ice_candidate(init).await {
        tracing::debug!(error = %e, "peer's ICE candidate not added");
    }
}

/// Moves frames both ways until the channel ends.
async fn pump(
    dc: &Arc<dyn DataChannel>,
    a: &mut Attempt,
    pc_events: &mut mpsc::Receiver<PcEvent>,
) -> webrtc::error::Result<String> {
    let mut chunker = Chunker::new(PIECE);
    let mut reasm = Reassembler::new(MAX_PEER_ENVELOPE + 64, 2);
    let mut next_id: u32 = 1;
    let mut ignore = None;
    loop {
        tokio::select! {
            _ = a.cancel.cancelled() => return Ok("stopped".into()),
            ev = dc.poll() => match ev {
                Some(DataChannelEvent::OnMessage(m)) => {
                    if let Some(envelope) = on_message(&m.data, &mut reasm) {
                        let ev = Internal::Envelope { peer: a.peer, envelope };
                        if a.events.send(ev).await.is_err() {
                            return Ok("stopped".into());
                        }
                    }
                }
                Some(DataChannelEvent::OnClose) | None => return Ok("channel closed".into()),
                Some(DataChannelEvent::OnError) => return Ok("channel error".into()),
                Some(_) => {}
            },
            ev = pc_events.recv() => match ev {
                Some(ev) => if let Some(r) = on_pc_event(ev, &mut ignore) { return Ok(r) },
                None => return Ok("peer connection ended".into()),
            },
            out = a.outgoing.recv() => {
                let Some(envelope) = out else { return Ok("stopped".into()) };
                let frame = Frame::Publish { id: next_id, envelope: envelope.to_vec() }.encode();
                next_id = next_id.wrapping_add(1).max(1);
                if frame.len() <= PIECE {
                    dc.send(bytes::BytesMut::from(frame.as_slice())).await?;
                } else {
                    for piece in chunker.split(&frame) {
                        dc.send(bytes::BytesMut::from(piece.encode().as_slice())).await?;
                    }
                }
                tracing::trace!(peer = %a.peer, len = frame.len(), "sent over the direct link");
            }
            r = a.remote.recv() => match r {
                Some(Remote::Candidate(_)) | Some(Remote::Answer(_)) => {}
                None => return Ok("stopped".into()),
            },
        }
    }
}

/// Decodes one data-channel message; returns a complete envelope.
pub fn on_message(data: &[u8], reasm: &mut Reassembler) -> Option<Vec<u8>> {
    let frame = match Frame::decode(data) {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, len = data.len(), "undecodable frame on the direct link");
            return None;
        }
    };
    let frame = match frame {
        Frame::Chunk { .. } => match reasm.push(frame) {
            Ok(Some(whole)) => match Frame::decode(&whole) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(error = %e, "undecodable chunked frame on the direct link");
                    return None;
                }
            },
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "chunk refused on the direct link");
                return None;
            }
        },
        other => other,
    };
    match frame {
        Frame::Publish { envelope, .. } if envelope.len() <= MAX_PEER_ENVELOPE => Some(envelope),
        other => {
            tracing::debug!(frame = ?other, "unexpected frame on the direct link ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_chunked_publishes_come_out_whole() {
        let mut reasm = Reassembler::new(MAX_PEER_ENVELOPE + 64, 2);
        let small = Frame::Publish {
            id: 1,
            envelope: vec![7; 100],
        }
        .encode();
        assert_eq!(on_message(&small, &mut reasm), Some(vec![7; 100]));
        let big = Frame::Publish {
            id: 2,
            envelope: vec![9; PIECE * 3 + 5],
        }
        .encode();
        let pieces = Chunker::new(PIECE).split(&big);
        assert_eq!(pieces.len(), 4);
        let mut out = None;
        for p in pieces {
            let bytes = p.encode();
            assert!(bytes.len() <= PIECE + 14);
            assert!(out.is_none());
            out = on_message(&bytes, &mut reasm);
        }
        assert_eq!(out, Some(vec![9; PIECE * 3 + 5]));
    }

    #[test]
    fn garbage_and_other_frames_are_ignored() {
        let mut reasm = Reassembler::new(1024, 2);
        assert_eq!(on_message(b"", &mut reasm), None);
        assert_eq!(on_message(b"\x01\xffgarbage", &mut reasm), None);
        let ping = Frame::Ping { nonce: 1 }.encode();
        assert_eq!(on_message(&ping, &mut reasm), None);
    }
}
