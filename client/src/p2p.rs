//! Direct peer links: WebRTC data channels between a user's devices.
//!
//! ```text
//! daemon ──Online / Signal / Send──▶ manager task ──spawn──▶ attempt task per peer (rtc.rs)
//!    ▲                                  │   ▲                    │ data channel ⇄ peer
//!    └──────Deliver / Peers─────────────┘   └──Internal events───┘
//!                                        │
//!                                        └──sealed Signal frames──▶ link (relay)
//! ```
//!
//! The relay stays the rendezvous: presence says who is online, and
//! `Signal` frames, addressed to one device, carry the offer and the answer.
//! Their payloads are sealed under a key only the account's devices hold
//! ([`clipmesh_proto::signal`]), so the relay can neither read nor swap the DTLS fingerprints
//! that authenticate the link. [`plan`] decides, without IO, which links to
//! open and when to retry; [`rtc`] runs one attempt. The same sealed clip
//! envelopes travel on an open channel as through the relay, and the
//! receiver's sync engine drops whichever copy arrives second.
//!
//! What each [`Mode`] does is described on the type and in `docs/client.md`.

pub mod plan;
pub mod rtc;

use crate::link::LinkHandle;
use clipmesh_proto::{
    ClipKey, DeviceId, DevicePublic, DeviceSecrets, Epoch, SignalCodec, SignalKind, SignalMsg,
};
use plan::{Action, Phase, Plan, Role};
use rtc::{Attempt, Internal, Remote};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Depth of the queue from the manager to the daemon.
pub const EVENT_QUEUE: usize = 64;
/// Auto mode closes a direct link after this long without a clip on it
/// (an open WebRTC connection wakes the process several times a second).
pub const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Largest image `--mode p2p` sends inline over the links (larger ones
/// would need the relay's blob store and are refused).
pub const MAX_INLINE_IMAGE: usize = 8 << 20;
/// Environment variable naming the local address the peer links bind to.
pub const ENV_BIND: &str = "CLIPMESH_P2P_BIND";
/// Longest the manager waits for its attempts to close at shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How clips travel (`clipmesh run --mode`, `clipmesh-tray --mode`: the
/// commands' `--mode` values come from this enum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Direct WebRTC links where they open, and the relay for every clip
    /// too (first copy wins).
    ///
    /// Offline devices get the newest clip from the relay's store; the
    /// first copy to arrive is applied, the second is a duplicate.
    #[default]
    Auto,
    /// Always through the relay; no WebRTC.
    Relay,
    /// Direct WebRTC links only; devices without one do not get clips.
    ///
    /// The relay carries signalling and presence, never the clip.
    P2p,
}

impl Mode {
    /// The name used on the command line and in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Relay => "relay",
            Mode::P2p => "p2p",
        }
    }

    /// Whether clips are published to the relay.
    pub fn uses_relay_for_clips(self) -> bool {
        self != Mode::P2p
    }

    /// Whether direct links are opened.
    pub fn uses_direct_links(self) -> bool {
        self != Mode::Relay
    }
}

/// One peer in `clipmesh status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's device id.
    pub id: u64,
    /// How this device's clips reach it now.
    pub path: PeerPath,
    /// The direct link: `open`, `connecting`, `retrying`, `failed`, `idle`
    /// (waiting for the peer's offer) or `dormant` (closed for lack of
    /// clips in auto mode; the next clip reopens it).
    pub link: String,
}

/// How this device's clips reach one peer (`PeerStatus::path`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum PeerPath {
    /// Through the relay.
    #[default]
    #[serde(rename = "relay")]
    Relay,
    /// Over an open direct link.
    #[serde(rename = "p2p")]
    P2p,
    /// Not at all: p2p mode without an open link.
    #[serde(rename = "none")]
    None,
}

impl PeerPath {
    /// The name `clipmesh status` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Relay => "relay",
            Self::P2p => "p2p",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for PeerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for PeerPath {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What the manager tells the daemon.
#[derive(Debug)]
pub enum P2pEvent {
    /// A sealed clip envelope arrived over a direct link from `from`.
    Deliver {
        /// The peer at the other end of the link.
        from: DeviceId,
        /// The envelope, as published.
        envelope: Vec<u8>,
    },
    /// The peers' paths changed.
    Peers(Vec<PeerStatus>),
}

/// What the daemon tells the manager.
#[derive(Debug)]
enum Cmd {
    Online(Vec<DeviceId>),
    Signal {
        from: DeviceId,
        kind: SignalKind,
        payload: Vec<u8>,
    },
    Send {
        envelope: Arc<Vec<u8>>,
        done: oneshot::Sender<Vec<DeviceId>>,
    },
    Keys(SignalKeys),
}

/// The keys signalling is sealed and checked with (see
/// [`clipmesh_proto::signal`]).
#[derive(Debug, Clone)]
pub struct SignalKeys {
    /// The current epoch's signal subkey.
    pub key: ClipKey,
    /// The current epoch.
    pub epoch: Epoch,
    /// The account's devices' public keys as this device pinned them.
    pub peers: HashMap<DeviceId, DevicePublic>,
}

/// The daemon's side of the manager.
///
/// The command queue is unbounded so the daemon never waits for the
/// manager (which may itself be waiting to hand the daemon an event); what
/// goes in is bounded by the relay link's and the clipboard's own rates.
#[derive(Debug, Clone)]
pub struct P2pHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl P2pHandle {
    /// The online set changed (from `Welcome` or `Presence`).
    pub async fn online(&self, online: Vec<DeviceId>) {
        let _ = self.tx.send(Cmd::Online(online));
    }

    /// A `Signal` frame arrived from `from`.
    pub async fn signal(&self, from: DeviceId, kind: SignalKind, payload: Vec<u8>) {
        let _ = self.tx.send(Cmd::Signal {
            from,
            kind,
            payload,
        });
    }

    /// New signalling keys: the account moved to a new key epoch, or this
    /// device pinned new peers.
    pub fn set_keys(&self, keys: SignalKeys) {
        let _ = self.tx.send(Cmd::Keys(keys));
    }

    /// Sends a sealed envelope on every open direct link; resolves to the
    /// peers it was handed to.
    pub async fn send(&self, envelope: Vec<u8>) -> oneshot::Receiver<Vec<DeviceId>> {
        let (done, rx) = oneshot::channel();
        let _ = self.tx.send(Cmd::Send {
            envelope: Arc::new(envelope),
            done,
        });
        rx
    }
}

/// What the manager needs.
pub struct P2pConfig {
    /// This device.
    pub me: DeviceId,
    /// Auto or p2p (relay mode runs no manager).
    pub mode: Mode,
    /// Seals signalling ([`clipmesh_proto::DataKey::signal_key`]) and
    /// checks the peers' signatures.
    pub keys: SignalKeys,
    /// v2: signs this device's signalling (`None` on a v1 device).
    pub signer: Option<DeviceSecrets>,
    /// Local UDP address for the peer connections (`0.0.0.0:0` by default;
    /// `CLIPMESH_P2P_BIND=127.0.0.1` for tests on one machine).
    pub bind: String,
    /// Close links without a clip for this long ([`IDLE_CLOSE`] in auto
    /// mode; None in p2p mode, where links are the only path).
    pub idle: Option<Duration>,
}

impl std::fmt::Debug for P2pConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2pConfig")
            .field("me", &self.me)
            .field("mode", &self.mode)
            .field("bind", &self.bind)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// The bind address from [`ENV_BIND`] (an IP, or IP:port), or the default.
pub fn bind_from_env() -> String {
    match std::env::var(ENV_BIND) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            if v.parse::<std::net::SocketAddr>().is_ok() {
                v.to_owned()
            } else if let Ok(ip) = v.parse::<std::net::IpAddr>() {
                std::net::SocketAddr::new(ip, 0).to_string()
            } else {
                tracing::warn!("{ENV_BIND} is not an IP address; using every interface");
                "0.0.0.0:0".into()
            }
        }
        _ => "0.0.0.0:0".into(),
    }
}

/// Creates the manager's command channel.
pub fn channel() -> (P2pHandle, P2pCommands) {
    let (tx, rx) = mpsc::unbounded_channel();
    (P2pHandle { tx }, P2pCommands { rx })
}

/// The manager's end of the command channel.
#[derive(Debug)]
pub struct P2pCommands {
    rx: mpsc::UnboundedReceiver<Cmd>,
}

struct Running {
    session: u64,
    cancel: CancellationToken,
    remote: mpsc::Sender<Remote>,
    outgoing: mpsc::Sender<Arc<Vec<u8>>>,
}

struct Manager {
    cfg: P2pConfig,
    plan: Plan,
    codec: SignalCodec,
    link: LinkHandle,
    events: mpsc::Sender<P2pEvent>,
    internal: mpsc::Sender<Internal>,
    running: HashMap<DeviceId, Running>,
    /// Offers waiting for the plan's `Answer` action.
    offers: HashMap<DeviceId, (u64, String)>,
    tracker: TaskTracker,
    last_status: Vec<PeerStatus>,
}

/// Runs the manager until `cancel`.
pub async fn run(
    cfg: P2pConfig,
    commands: P2pCommands,
    events: mpsc::Sender<P2pEvent>,
    link: LinkHandle,
    cancel: CancellationToken,
) {
    let mut commands = commands.rx;
    let (internal, mut internal_rx) = mpsc::channel(64);
    let seed = rand::random::<u64>();
    let first_seq = crate::clock::now_ms().saturating_mul(1000);
    let mut m = Manager {
        plan: Plan::new(cfg.me, seed, cfg.idle),
        codec: {
            let mut c = SignalCodec::new(cfg.keys.key.clone(), cfg.me, first_seq);
            if let Some(s) = &cfg.signer {
                c.set_signer(s.clone(), cfg.keys.epoch);
            }
            c.set_peer_keys(cfg.keys.peers.clone());
            c
        },
        cfg,
        link,
        events,
        internal,
        running: HashMap::new(),
        offers: HashMap::new(),
        tracker: TaskTracker::new(),
        last_status: Vec::new(),
    };
    tracing::info!(mode = m.cfg.mode.as_str(), "direct links enabled");
    loop {
        m.execute().await;
        let timeout = m.plan.poll_timeout();
        let sleep = async {
            match timeout {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            c = commands.recv() => match c {
                Some(c) => m.on_command(c),
                None => break,
            },
            Some(ev) = internal_rx.recv() => m.on_internal(ev).await,
            _ = sleep => m.plan.on_timeout(Instant::now()),
        }
    }
    // Say goodbye on open links so peers tear down at once, then stop.
    for (peer, r) in m.running.drain() {
        m.link.signal(
            peer,
            SignalKind::Bye,
            m.codec.seal(&SignalMsg {
                kind: SignalKind::Bye,
                target: peer,
                session: r.session,
                body: String::new(),
            }),
        );
        r.cancel.cancel();
    }
    m.tracker.close();
    drop(internal_rx);
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, m.tracker.wait())
        .await
        .is_err()
    {
        tracing::debug!("direct links did not close in time");
    }
}

impl Manager {
    fn on_command(&mut self, c: Cmd) {
        let now = Instant::now();
        match c {
            Cmd::Online(online) => {
                for gone in self.plan.on_online(&online, now) {
                    self.codec.forget(gone);
                    self.offers.remove(&gone);
                }
            }
            Cmd::Signal {
                from,
                kind,
                payload,
            } => self.on_signal(from, kind, &payload, now),
            Cmd::Keys(k) => {
                self.codec.set_key(k.key, k.epoch);
                self.codec.set_peer_keys(k.peers);
            }
            Cmd::Send { envelope, done } => {
                let mut to = Vec::new();
                if envelope.len() <= rtc::MAX_PEER_ENVELOPE {
                    for (peer, r) in &self.running {
                        if self.plan.open_session(*peer) == Some(r.session)
                            && r.outgoing.try_send(envelope.clone()).is_ok()
                        {
                            to.push(*peer);
                        }
                    }
                } else {
                    tracing::info!(
                        len = envelope.len(),
                        max = rtc::MAX_PEER_ENVELOPE,
                        "clip too large for the direct links; not sent over them"
                    );
                }
                to.sort();
                for peer in &to {
                    self.plan.on_activity(*peer, now);
                }
                if self.cfg.mode == Mode::Auto {
                    // This clip goes through the relay; links come back for
                    // the next ones.
                    self.plan.wake(now);
                }
                let _ = done.send(to);
            }
        }
    }

    fn on_signal(&mut self, from: DeviceId, kind: SignalKind, payload: &[u8], now: Instant) {
        let msg = match self.codec.open(from, kind, payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    %from,
                    ?kind,
                    len = payload.len(),
                    "signalling message rejected: {e}"
                );
                return;
            }
        };
        tracing::debug!(%from, ?kind, session = msg.session, len = msg.body.len(), "signal");
        match kind {
            SignalKind::Offer => {
                if self.plan.on_offer(from, msg.session, now) {
                    self.offers.insert(from, (msg.session, msg.body));
                } else {
                    tracing::debug!(%from, "offer not answered (glare, duplicate or peer not online)");
                }
            }
            SignalKind::Answer | SignalKind::Candidate => {
                let Some(r) = self.running.get(&from).filter(|r| r.session == msg.session) else {
                    tracing::debug!(%from, ?kind, "signal for a stale session ignored");
                    return;
                };
                let remote = if kind == SignalKind::Answer {
                    Remote::Answer(msg.body)
                } else {
                    Remote::Candidate(msg.body)
                };
                let _ = r.remote.try_send(remote);
            }
            SignalKind::Bye if msg.body == plan::IDLE_BYE => {
                if self.plan.on_idle_bye(from, msg.session) {
                    tracing::info!(peer = %from, "direct link closed by the peer (idle)");
                }
            }
            SignalKind::Bye => {
                if self.plan.on_ended(from, msg.session, now, false) {
                    tracing::info!(peer = %from, "direct link closed by the peer");
                }
            }
        }
    }

    async fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Signal {
                peer,
                session,
                kind,
                body,
            } => {
                if self.running.get(&peer).map(|r| r.session) != Some(session) {
                    return;
                }
                let len = body.len();
                let sealed = self.codec.seal(&SignalMsg {
                    kind,
                    target: peer,
                    session,
                    body,
                });
                if !self.link.signal(peer, kind, sealed) {
                    tracing::debug!(%peer, ?kind, "signal not sent: relay link busy or down");
                } else {
                    tracing::debug!(%peer, ?kind, len, "signal sent");
                }
            }
            Internal::Opened { peer, session } => {
                if self.plan.on_opened(peer, session, Instant::now()) {
                    tracing::info!(%peer, "direct link open");
                }
            }
            Internal::Envelope { peer, envelope } => {
                self.plan.on_activity(peer, Instant::now());
                let _ = self
                    .events
                    .send(P2pEvent::Deliver {
                        from: peer,
                        envelope,
                    })
                    .await;
            }
            Internal::Ended {
                peer,
                session,
                reason,
            } => {
                let was_open = self.plan.open_session(peer) == Some(session);
                if self.plan.on_ended(peer, session, Instant::now(), true) {
                    if was_open {
                        tracing::info!(%peer, %reason, "direct link closed");
                    } else {
                        tracing::info!(%peer, %reason, "direct link attempt failed");
                    }
                }
                if self.running.get(&peer).map(|r| r.session) == Some(session) {
                    self.running.remove(&peer);
                }
            }
        }
    }

    /// Carries out the plan's actions and reports status changes.
    async fn execute(&mut self) {
        while let Some(a) = self.plan.poll_action() {
            match a {
                Action::Offer { peer, session } => self.start(peer, session, Role::Offerer, None),
                Action::Answer { peer, session } => match self.offers.remove(&peer) {
                    Some((s, sdp)) if s == session => {
                        self.start(peer, session, Role::Answerer, Some(sdp))
                    }
                    _ => tracing::debug!(%peer, "answer planned without its offer"),
                },
                Action::Stop {
                    peer,
                    session,
                    bye,
                    reason,
                } => {
                    if self.running.get(&peer).map(|r| r.session) == Some(session) {
                        if let Some(r) = self.running.remove(&peer) {
                            r.cancel.cancel();
                        }
                        tracing::info!(%peer, reason, "direct link stopped");
                    }
                    if bye {
                        let body = if reason == plan::IDLE_REASON {
                            plan::IDLE_BYE.to_owned()
                        } else {
                            String::new()
                        };
                        let sealed = self.codec.seal(&SignalMsg {
                            kind: SignalKind::Bye,
                            target: peer,
                            session,
                            body,
                        });
                        self.link.signal(peer, SignalKind::Bye, sealed);
                    }
                }
            }
        }
        let status = self.status();
        if status != self.last_status {
            self.last_status = status.clone();
            let _ = self.events.send(P2pEvent::Peers(status)).await;
        }
    }

    fn start(&mut self, peer: DeviceId, session: u64, role: Role, offer: Option<String>) {
        if let Some(old) = self.running.remove(&peer) {
            old.cancel.cancel();
        }
        let (remote_tx, remote) = mpsc::channel(16);
        let (out_tx, outgoing) = mpsc::channel(rtc::OUT_QUEUE);
        let cancel = CancellationToken::new();
        tracing::debug!(%peer, ?role, "starting a direct link attempt");
        self.tracker.spawn(rtc::run_attempt(Attempt {
            peer,
            session,
            role,
            offer,
            bind: self.cfg.bind.clone(),
            events: self.internal.clone(),
            remote,
            outgoing,
            cancel: cancel.clone(),
        }));
        self.running.insert(
            peer,
            Running {
                session,
                cancel,
                remote: remote_tx,
                outgoing: out_tx,
            },
        );
    }

    fn status(&self) -> Vec<PeerStatus> {
        self.plan
            .peers()
            .map(|(id, phase)| PeerStatus {
                id: id.0,
                path: path_for(self.cfg.mode, &phase),
                link: phase.name().into(),
            })
            .collect()
    }
}

/// How clips reach a peer in `mode` when its link is in `phase`.
pub fn path_for(mode: Mode, phase: &Phase) -> PeerPath {
    match (mode, phase) {
        (Mode::Relay, _) => PeerPath::Relay,
        (_, Phase::Open { .. }) => PeerPath::P2p,
        (Mode::Auto, _) => PeerPath::Relay,
        (Mode::P2p, _) => PeerPath::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_per_mode() {
        let open = Phase::Open { session: 1 };
        assert_eq!(path_for(Mode::Relay, &open), "relay");
        assert_eq!(path_for(Mode::Auto, &open), "p2p");
        assert_eq!(path_for(Mode::P2p, &open), "p2p");
        assert_eq!(path_for(Mode::Auto, &Phase::Idle), "relay");
        assert_eq!(path_for(Mode::P2p, &Phase::Failed), "none");
        assert!(Mode::Auto.uses_relay_for_clips() && Mode::Auto.uses_direct_links());
        assert!(!Mode::P2p.uses_relay_for_clips());
        assert!(!Mode::Relay.uses_direct_links());
    }
}
