//! One connection to the relay, as a sans-IO state machine.
//!
//! The driver ([`crate::link`]) owns the socket; this struct owns the
//! protocol. Drive loop invariant:
//!
//! 1. after creating the session or feeding it anything (a received frame,
//!    a publish, a timeout), drain [`Session::poll_transmit`] to the socket
//!    and [`Session::poll_event`] to the application;
//! 2. then check [`Session::dead`]; if set, drop the socket;
//! 3. otherwise wait for the next frame, command, or
//!    [`Session::poll_timeout`], and call [`Session::handle_timeout`] when
//!    that instant passes.
//!
//! Time is always passed in, so tests run on a virtual clock.
//!
//! What it does:
//! - sends `Hello{last_seen}` first and holds publishes until `Welcome`;
//! - pings every `ping_interval` (30 s, or what `Welcome` says);
//! - declares the link half-open when nothing at all was received for
//!   `idle_timeout` (45 s), or when a probe sent after a clock jump (sleep,
//!   network change) is not answered within [`PROBE_TIMEOUT`];
//! - tracks unacknowledged publishes and the newest room sequence seen.

use crate::backoff::Disconnect;
use clipmesh_proto::{DeviceId, DeviceInfo, ErrorCode, Frame, SignalKind, UserId};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How often the client pings unless `Welcome` says otherwise.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Silence after which the link counts as half-open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long to wait for `Welcome` after the upgrade.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a probe ping after a clock jump may go unanswered.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most publishes kept waiting for `Welcome` or an `Ack`.
pub const MAX_UNACKED: usize = 64;

/// Something the application must hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// The relay accepted the device.
    Welcome {
        /// The account.
        user: UserId,
        /// This device.
        device: DeviceId,
        /// Largest frame the relay accepts.
        max_frame: u32,
        /// Devices online now, this one included.
        online: Vec<DeviceInfo>,
    },
    /// A clip from another device.
    Deliver {
        /// Room sequence number.
        seq: u64,
        /// Publishing device.
        from: DeviceId,
        /// The sealed envelope.
        envelope: Vec<u8>,
    },
    /// A publish was accepted.
    Acked {
        /// The publish id.
        id: u32,
        /// Room sequence number assigned to it.
        seq: u64,
    },
    /// A publish was refused; the connection stays up.
    Rejected {
        /// The publish id.
        id: u32,
        /// Why.
        code: ErrorCode,
        /// The relay's one-line message.
        message: String,
    },
    /// The online set changed.
    Presence {
        /// Devices online now.
        online: Vec<DeviceInfo>,
    },
    /// A signalling frame from another device of this user.
    Signal {
        /// The sender (the relay rewrites `peer` to it).
        from: DeviceId,
        /// What it is.
        kind: SignalKind,
        /// The opaque payload.
        payload: Vec<u8>,
    },
    /// The relay reported an error not tied to a publish.
    RelayError {
        /// Why.
        code: ErrorCode,
        /// The relay's one-line message.
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingWelcome { deadline: Instant },
    Ready,
}

/// Protocol state of one relay connection.
#[derive(Debug)]
pub struct Session {
    /// Before or after `Welcome`.
    phase: Phase,
    /// Newest room sequence this device has seen (sent in `Hello`, raised by
    /// `Deliver` and `Ack`).
    last_seen: u64,
    /// When anything was last received; drives half-open detection.
    last_rx: Instant,
    /// When the next ping is due (only after `Welcome`).
    next_ping: Instant,
    /// Ping cadence, from `Welcome`.
    ping_interval: Duration,
    /// Silence limit, from `Welcome`.
    idle_timeout: Duration,
    /// Set after a clock jump: a probe ping must be answered by then.
    probe_deadline: Option<Instant>,
    /// Nonce of the last ping sent.
    nonce: u64,
    /// Next publish id.
    next_id: u32,
    /// Publishes sent but not acknowledged, by id, with when they were sent.
    unacked: BTreeMap<u32, Instant>,
    /// Publishes held until `Welcome`.
    held: VecDeque<(u32, Vec<u8>)>,
    /// Frames to write to the socket.
    transmit: VecDeque<Frame>,
    /// Events for the application.
    events: VecDeque<SessionEvent>,
    /// Set once the connection should be dropped.
    dead: Option<Disconnect>,
}

impl Session {
    /// A new connection that has just been upgraded. Queues `Hello`.
    pub fn new(last_seen: u64, now: Instant) -> Self {
        let mut s = Self {
            phase: Phase::AwaitingWelcome {
                deadline: now + WELCOME_TIMEOUT,
            },
            last_seen,
            last_rx: now,
            next_ping: now + PING_INTERVAL,
            ping_interval: PING_INTERVAL,
            idle_timeout: IDLE_TIMEOUT,
            probe_deadline: None,
            nonce: 0,
            next_id: 1,
            unacked: BTreeMap::new(),
            held: VecDeque::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            dead: None,
        };
        s.transmit.push_back(Frame::Hello { last_seen });
        s
    }

    /// Newest room sequence seen so far.
    pub fn last_seen(&self) -> u64 {
        self.last_seen
    }

    /// True after `Welcome`.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Why the connection must be dropped, once it must.
    pub fn dead(&self) -> Option<Disconnect> {
        self.dead
    }

    /// Whether `f`, just taken from [`Session::poll_transmit`], is a plain
    /// keepalive ping the driver should send as a WebSocket protocol ping
    /// instead. Every relay answers those in its WebSocket layer: the native
    /// relay's tungstenite, and on Cloudflare the runtime itself, without
    /// waking a hibernated Durable Object (a `Frame::Ping` would wake it).
    /// The pong counts through [`Session::handle_liveness`]. A probe after a
    /// clock jump stays a `Frame::Ping`: its `Pong` nonce is what ends it.
    pub fn is_keepalive(&self, f: &Frame) -> bool {
        matches!(f, Frame::Ping { .. }) && self.probe_deadline.is_none()
    }

    /// Number of publishes not yet acknowledged (held ones included).
    pub fn unacked(&self) -> usize {
        self.unacked.len() + self.held.len()
    }

    /// Next frame to write.
    pub fn poll_transmit(&mut self) -> Option<Frame> {
        self.transmit.pop_front()
    }

    /// Next event for the application.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.last_rx + self.idle_timeout;
        match self.phase {
            Phase::AwaitingWelcome { deadline } => t = t.min(deadline),
            Phase::Ready => t = t.min(self.next_ping),
        }
        if let Some(p) = self.probe_deadline {
            t = t.min(p);
        }
        t
    }

    /// Queues a publish of a sealed envelope and returns its id. Held until
    /// `Welcome` if the relay has not answered `Hello` yet. Returns `None`
    /// when too many publishes are outstanding.
    pub fn publish(&mut self, envelope: Vec<u8>, now: Instant) -> Option<u32> {
        if self.unacked() >= MAX_UNACKED {
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        match self.phase {
            Phase::AwaitingWelcome { .. } => self.held.push_back((id, envelope)),
            Phase::Ready => {
                self.unacked.insert(id, now);
                self.transmit.push_back(Frame::Publish { id, envelope });
            }
        }
        Some(id)
    }

    /// Queues a `Signal` frame for `peer`. Signals are not held until
    /// `Welcome`: returns false (and sends nothing) before it.
    pub fn signal(&mut self, peer: DeviceId, kind: SignalKind, payload: Vec<u8>) -> bool {
        if self.phase != Phase::Ready {
            return false;
        }
        self.transmit.push_back(Frame::Signal {
            peer,
            kind,
            payload,
        });
        true
    }

    /// Feeds raw bytes of one binary WebSocket message.
    pub fn handle_bytes(&mut self, bytes: &[u8], now: Instant) {
        self.last_rx = now;
        match Frame::decode(bytes) {
            Ok(frame) => self.handle_frame(frame, now),
            Err(e) => {
                // A newer relay may send frames this build does not know;
                // they still prove the link is alive. Ignore them.
                tracing::debug!(error = %e, len = bytes.len(), "ignoring undecodable frame");
            }
        }
    }

    /// Notes that something other than a protocol frame (a WebSocket
    /// ping/pong) was received: the link is alive.
    pub fn handle_liveness(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// Feeds one decoded frame.
    pub fn handle_frame(&mut self, frame: Frame, now: Instant) {
        self.last_rx = now;
        match frame {
            Frame::Welcome {
                user,
                device,
                max_frame,
                ping_interval_s,
                idle_timeout_s,
                online,
            } => {
                if self.phase == Phase::Ready {
                    tracing::debug!("duplicate welcome ignored");
                    return;
                }
                self.phase = Phase::Ready;
                // Take the relay's cadence, within sane bounds, and keep the
                // idle limit above the ping interval.
                self.ping_interval = Duration::from_secs(u64::from(ping_interval_s).clamp(5, 300));
                self.idle_timeout = Duration::from_secs(u64::from(idle_timeout_s).clamp(10, 600))
                    .max(self.ping_interval + Duration::from_secs(5));
                self.next_ping = now + self.ping_interval;
                self.events.push_back(SessionEvent::Welcome {
                    user,
                    device,
                    max_frame,
                    online,
                });
                while let Some((id, envelope)) = self.held.pop_front() {
                    self.unacked.insert(id, now);
                    self.transmit.push_back(Frame::Publish { id, envelope });
                }
            }
            Frame::Deliver {
                seq,
                from,
                envelope,
            } => {
                self.last_seen = self.last_seen.max(seq);
                self.events.push_back(SessionEvent::Deliver {
                    seq,
                    from,
                    envelope,
                });
            }
            Frame::Ack { id, seq } => {
                if self.unacked.remove(&id).is_some() {
                    self.last_seen = self.last_seen.max(seq);
                    self.events.push_back(SessionEvent::Acked { id, seq });
                } else {
                    tracing::debug!(id, "ack for unknown publish ignored");
                }
            }
            Frame::Error { code, id, message } => {
                if id != 0 && self.unacked.remove(&id).is_some() {
                    self.events
                        .push_back(SessionEvent::Rejected { id, code, message });
                } else {
                    self.events
                        .push_back(SessionEvent::RelayError { code, message });
                }
            }
            Frame::Presence { online } => {
                self.events.push_back(SessionEvent::Presence { online });
            }
            Frame::Ping { nonce } => self.transmit.push_back(Frame::Pong { nonce }),
            Frame::Pong { nonce } => {
                if nonce == self.nonce {
                    self.probe_deadline = None;
                }
            }
            Frame::Signal {
                peer,
                kind,
                payload,
            } => {
                self.events.push_back(SessionEvent::Signal {
                    from: peer,
                    kind,
                    payload,
                });
            }
            other @ (Frame::Hello { .. } | Frame::Publish { .. } | Frame::Chunk { .. }) => {
                tracing::debug!(frame = ?other, "unexpected frame from relay ignored");
            }
        }
    }

    /// Advances timers. Call when [`Session::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.dead.is_some() {
            return;
        }
        if let Phase::AwaitingWelcome { deadline } = self.phase {
            if now >= deadline {
                tracing::debug!("no welcome in time");
                self.dead = Some(Disconnect::HalfOpen);
                return;
            }
        }
        if now.saturating_duration_since(self.last_rx) >= self.idle_timeout {
            tracing::debug!("relay silent too long: half-open");
            self.dead = Some(Disconnect::HalfOpen);
            return;
        }
        if let Some(p) = self.probe_deadline {
            if now >= p {
                tracing::debug!("probe after clock jump unanswered");
                self.dead = Some(Disconnect::HalfOpen);
                return;
            }
        }
        if self.phase == Phase::Ready && now >= self.next_ping {
            self.send_ping();
            self.next_ping = now + self.ping_interval;
        }
    }

    /// The wall clock moved differently from the monotonic clock (the
    /// machine slept, or the network likely changed): probe the link now
    /// and give up on it if the probe is not answered quickly.
    pub fn handle_clock_jump(&mut self, now: Instant) {
        if self.dead.is_some() || self.probe_deadline.is_some() {
            return;
        }
        self.send_ping();
        self.probe_deadline = Some(now + PROBE_TIMEOUT);
        if self.phase == Phase::Ready {
            self.next_ping = now + self.ping_interval;
        }
    }

    fn send_ping(&mut self) {
        self.nonce = self.nonce.wrapping_add(1);
        self.transmit.push_back(Frame::Ping { nonce: self.nonce });
    }
}

/// Detects clock jumps by comparing how far the monotonic and the wall
/// clock moved between two observations.
#[derive(Debug, Clone, Copy)]
pub struct ClockWatch {
    mono: Instant,
    wall: std::time::SystemTime,
}

/// Difference between wall and monotonic progress that counts as a jump.
pub const CLOCK_JUMP_THRESHOLD: Duration = Duration::from_secs(5);

impl ClockWatch {
    /// Starts watching from this pair of readings.
    pub fn new(mono: Instant, wall: std::time::SystemTime) -> Self {
        Self { mono, wall }
    }

    /// Records a new pair of readings; true if the clocks diverged by more
    /// than [`CLOCK_JUMP_THRESHOLD`] since the last one. On Linux the
    /// monotonic clock stops during suspend while the wall clock does not.
    pub fn observe(&mut self, mono: Instant, wall: std::time::SystemTime) -> bool {
        let dm = mono.saturating_duration_since(self.mono);
        let jumped = match wall.duration_since(self.wall) {
            Ok(dw) => dw.abs_diff(dm) > CLOCK_JUMP_THRESHOLD,
            Err(_) => true, // wall clock went backwards
        };
        self.mono = mono;
        self.wall = wall;
        jumped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome() -> Frame {
        Frame::Welcome {
            user: UserId(1),
            device: DeviceId(2),
            max_frame: 1 << 20,
            ping_interval_s: 30,
            idle_timeout_s: 45,
            online: vec![],
        }
    }

    fn drain(s: &mut Session) -> Vec<Frame> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn events(s: &mut Session) -> Vec<SessionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    /// Runs timers on a virtual clock until `until`, answering nothing.
    fn run_until(s: &mut Session, mut now: Instant, until: Instant) -> (Instant, Vec<Frame>) {
        let mut out = vec![];
        for _ in 0..1000 {
            let t = s.poll_timeout();
            if t > until || s.dead().is_some() {
                break;
            }
            now = t;
            s.handle_timeout(now);
            out.extend(drain(s));
        }
        (now, out)
    }

    #[test]
    fn hello_first_and_publishes_held_until_welcome() {
        let t0 = Instant::now();
        let mut s = Session::new(7, t0);
        assert_eq!(drain(&mut s), vec![Frame::Hello { last_seen: 7 }]);
        let id = s.publish(b"env".to_vec(), t0).unwrap();
        assert!(drain(&mut s).is_empty(), "held before welcome");
        s.handle_frame(welcome(), t0);
        assert_eq!(
            drain(&mut s),
            vec![Frame::Publish {
                id,
                envelope: b"env".to_vec()
            }]
        );
        assert!(matches!(
            events(&mut s).as_slice(),
            [SessionEvent::Welcome { .. }]
        ));
        s.handle_frame(Frame::Ack { id, seq: 11 }, t0);
        assert_eq!(events(&mut s), vec![SessionEvent::Acked { id, seq: 11 }]);
        assert_eq!(s.last_seen(), 11);
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn no_welcome_in_time_is_half_open() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        drain(&mut s);
        let (now, _) = run_until(&mut s, t0, t0 + Duration::from_secs(60));
        assert_eq!(s.dead(), Some(Disconnect::HalfOpen));
        assert_eq!(now - t0, WELCOME_TIMEOUT);
    }

    #[test]
    fn pings_every_30s_and_stays_up_while_pongs_arrive() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        s.handle_frame(welcome(), t0);
        drain(&mut s);
        let mut now = t0;
        let mut pings = 0;
        for _ in 0..10 {
            now = s.poll_timeout();
            s.handle_timeout(now);
            for f in drain(&mut s) {
                if let Frame::Ping { nonce } = f {
                    pings += 1;
                    // The relay answers 20 ms later.
                    s.handle_frame(Frame::Pong { nonce }, now + Duration::from_millis(20));
                }
            }
        }
        assert_eq!(pings, 10);
        assert!(s.dead().is_none());
        assert_eq!(now - t0, Duration::from_secs(300));
    }

    #[test]
    fn silence_is_detected_within_45s() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        s.handle_frame(welcome(), t0);
        drain(&mut s);
        let (now, frames) = run_until(&mut s, t0, t0 + Duration::from_secs(120));
        assert_eq!(s.dead(), Some(Disconnect::HalfOpen));
        assert_eq!(now - t0, IDLE_TIMEOUT);
        assert_eq!(frames, vec![Frame::Ping { nonce: 1 }]);
    }

    #[test]
    fn clock_jump_probes_and_gives_up_quickly() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        s.handle_frame(welcome(), t0);
        drain(&mut s);
        let t1 = t0 + Duration::from_secs(3);
        s.handle_clock_jump(t1);
        assert_eq!(drain(&mut s), vec![Frame::Ping { nonce: 1 }]);
        let (now, _) = run_until(&mut s, t1, t1 + Duration::from_secs(60));
        assert_eq!(s.dead(), Some(Disconnect::HalfOpen));
        assert_eq!(now - t1, PROBE_TIMEOUT);
    }

    #[test]
    fn periodic_pings_are_keepalives_and_probes_are_not() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        s.handle_frame(welcome(), t0);
        drain(&mut s);
        s.handle_timeout(t0 + PING_INTERVAL);
        let ping = s.poll_transmit().expect("periodic ping");
        assert!(s.is_keepalive(&ping));
        // A WebSocket pong keeps the link alive like any frame.
        s.handle_liveness(t0 + PING_INTERVAL + Duration::from_millis(5));
        s.handle_timeout(t0 + PING_INTERVAL + IDLE_TIMEOUT - Duration::from_secs(1));
        assert!(s.dead().is_none());
        s.handle_clock_jump(t0 + PING_INTERVAL + Duration::from_secs(1));
        let probe = s.poll_transmit().expect("probe");
        assert!(matches!(probe, Frame::Ping { .. }) && !s.is_keepalive(&probe));
        assert!(!s.is_keepalive(&Frame::Pong { nonce: 1 }));
    }

    #[test]
    fn answered_probe_keeps_the_link() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        s.handle_frame(welcome(), t0);
        drain(&mut s);
        s.handle_clock_jump(t0);
        let nonce = match drain(&mut s).as_slice() {
            [Frame::Ping { nonce }] => *nonce,
            other => panic!("{other:?}"),
        };
        s.handle_frame(Frame::Pong { nonce }, t0 + Duration::from_millis(5));
        s.handle_timeout(t0 + PROBE_TIMEOUT);
        assert!(s.dead().is_none());
    }

    #[test]
    fn deliver_raises_last_seen_and_rejects_map_to_publish() {
        let t0 = Instant::now();
        let mut s = Session::new(3, t0);
        s.handle_frame(welcome(), t0);
        let id = s.publish(vec![1, 2], t0).unwrap();
        drain(&mut s);
        events(&mut s);
        s.handle_frame(
            Frame::Deliver {
                seq: 9,
                from: DeviceId(5),
                envelope: vec![0],
            },
            t0,
        );
        s.handle_frame(
            Frame::Error {
                code: ErrorCode::TooLarge,
                id,
                message: "too big".into(),
            },
            t0,
        );
        let ev = events(&mut s);
        assert_eq!(s.last_seen(), 9);
        assert!(matches!(ev[0], SessionEvent::Deliver { seq: 9, .. }));
        assert!(matches!(
            ev[1],
            SessionEvent::Rejected {
                code: ErrorCode::TooLarge,
                ..
            }
        ));
        assert_eq!(s.unacked(), 0);
    }

    #[test]
    fn relay_ping_is_answered_and_garbage_is_survived() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        drain(&mut s);
        s.handle_frame(Frame::Ping { nonce: 77 }, t0);
        assert_eq!(drain(&mut s), vec![Frame::Pong { nonce: 77 }]);
        s.handle_bytes(&[0xff, 0x00, 0x13], t0);
        s.handle_bytes(&[], t0);
        assert!(s.dead().is_none());
    }

    #[test]
    fn outstanding_publishes_are_bounded() {
        let t0 = Instant::now();
        let mut s = Session::new(0, t0);
        for _ in 0..MAX_UNACKED {
            assert!(s.publish(vec![0], t0).is_some());
        }
        assert!(s.publish(vec![0], t0).is_none());
    }

    #[test]
    fn clock_watch_sees_suspend() {
        let m0 = Instant::now();
        let w0 = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut cw = ClockWatch::new(m0, w0);
        // Normal progress.
        assert!(!cw.observe(m0 + Duration::from_secs(30), w0 + Duration::from_secs(30)));
        // 10 minutes of suspend: the monotonic clock moved 1 s.
        assert!(cw.observe(m0 + Duration::from_secs(31), w0 + Duration::from_secs(631)));
        // Wall clock set backwards.
        assert!(cw.observe(m0 + Duration::from_secs(32), w0));
    }
}
