//! Which direct links to open, when to retry, when to give up: sans-IO.
//!
//! One [`Plan`] per daemon. It is told who is online (presence), what the
//! peers said (offers, byes) and what the connection attempts did (opened,
//! ended), and answers with [`Action`]s: start an attempt, stop one. Time is
//! passed in, so the tests run on a virtual clock.
//!
//! - **Roles.** The device with the lower id offers; the other answers
//!   ([`role`]). Both sides compute the same thing, so two offers never cross
//!   ("glare"). An offer from a peer this device should be offering to is
//!   ignored.
//! - **Timeouts.** An attempt that has not opened its channel within
//!   [`CONNECT_TIMEOUT`] is stopped.
//! - **Retries.** The offerer retries a failed or closed link after
//!   [`RETRY_BASE`], doubling up to [`RETRY_CAP`]. After [`MAX_FAILURES`]
//!   failures in a row it gives up on that peer until the peer goes offline
//!   and comes back. A link that opened resets the count.
//! - **Teardown.** A peer that leaves the online set has its attempt or
//!   link stopped at once and its state forgotten.
//! - **Idle links** (auto mode only, [`Plan::new`]'s `idle`): a link that
//!   carried no clip for that long is closed with an idle `Bye` and both
//!   sides go [`Phase::Dormant`]: an open WebRTC connection wakes its
//!   process several times a second, and in auto mode the relay carries
//!   every clip anyway. The next local clip wakes every dormant or idle peer
//!   ([`Plan::wake`]): this device offers, whichever its id (an offer from
//!   the higher id is accepted by a lower id that is not offering itself).

use clipmesh_proto::DeviceId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Longest an attempt may take from start to an open data channel.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// First retry delay after a failure.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
pub const RETRY_CAP: Duration = Duration::from_secs(60);
/// Failures in a row after which the offerer stops retrying a peer.
pub const MAX_FAILURES: u32 = 6;

/// Which side of the handshake this device plays for a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends the offer.
    Offerer,
    /// Waits for the offer and answers it.
    Answerer,
}

/// The role of `me` towards `peer`: the lower id offers.
pub fn role(me: DeviceId, peer: DeviceId) -> Role {
    if me.0 < peer.0 {
        Role::Offerer
    } else {
        Role::Answerer
    }
}

/// Retry delay after `failures` failures in a row (1 → [`RETRY_BASE`]).
pub fn retry_delay(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    RETRY_BASE.saturating_mul(1 << shift).min(RETRY_CAP)
}

/// Where the link to one peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Answerer waiting for an offer (or offerer about to start).
    Idle,
    /// An attempt runs.
    Connecting {
        /// Its session id.
        session: u64,
        /// Our role in it.
        role: Role,
        /// When it counts as failed.
        deadline: Instant,
    },
    /// The data channel is open.
    Open {
        /// Its session id.
        session: u64,
    },
    /// Offerer waiting to retry.
    Retrying {
        /// When the next attempt starts.
        at: Instant,
    },
    /// Offerer gave up after [`MAX_FAILURES`] failures.
    Failed,
    /// Closed for lack of traffic (auto mode); reopened by [`Plan::wake`]
    /// or the peer's offer.
    Dormant,
}

impl Phase {
    /// A short name for status output.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Connecting { .. } => "connecting",
            Phase::Open { .. } => "open",
            Phase::Retrying { .. } => "retrying",
            Phase::Failed => "failed",
            Phase::Dormant => "dormant",
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start an attempt as offerer.
    Offer {
        /// The peer.
        peer: DeviceId,
        /// A fresh session id.
        session: u64,
    },
    /// Start an attempt as answerer for a received offer.
    Answer {
        /// The peer.
        peer: DeviceId,
        /// The offer's session id.
        session: u64,
    },
    /// Stop an attempt or close a link; tell the peer when `bye`.
    Stop {
        /// The peer.
        peer: DeviceId,
        /// The session to stop.
        session: u64,
        /// Send the peer a `Bye`.
        bye: bool,
        /// Why (one line, for the log).
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    phase: Phase,
    failures: u32,
    /// When a clip last crossed the open link (or it opened).
    last_activity: Option<Instant>,
}

/// `Action::Stop` reason for a link closed for lack of traffic; its `Bye`
/// carries [`IDLE_BYE`].
pub const IDLE_REASON: &str = "no clip for the idle time";
/// Body of a `Bye` that closes an idle link (the peer goes dormant instead
/// of retrying).
pub const IDLE_BYE: &str = "idle";

/// Direct-link plan for one device.
#[derive(Debug)]
pub struct Plan {
    me: DeviceId,
    peers: BTreeMap<DeviceId, Peer>,
    actions: VecDeque<Action>,
    /// Session ids come from here (the driver seeds it randomly).
    next_session: u64,
    /// Close links idle this long (auto mode).
    idle: Option<Duration>,
}

impl Plan {
    /// A plan for device `me`; `seed` starts the session-id sequence;
    /// links idle for `idle` are closed (None: kept open).
    pub fn new(me: DeviceId, seed: u64, idle: Option<Duration>) -> Self {
        Self {
            me,
            peers: BTreeMap::new(),
            actions: VecDeque::new(),
            next_session: seed | 1,
            idle,
        }
    }

    fn session(&mut self) -> u64 {
        // A 64-bit LCG step: distinct ids for this process, unpredictable
        // start.
        self.next_session = self
            .next_session
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.next_session
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The earliest deadline or retry time, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| match p.phase {
                Phase::Connecting { deadline, .. } => Some(deadline),
                Phase::Retrying { at } => Some(at),
                Phase::Open { .. } => Some(p.last_activity? + self.idle?),
                _ => None,
            })
            .min()
    }

    /// Every known peer and its phase.
    pub fn peers(&self) -> impl Iterator<Item = (DeviceId, Phase)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.phase))
    }

    /// The phase of `peer`, if it is online.
    pub fn phase(&self, peer: DeviceId) -> Option<Phase> {
        self.peers.get(&peer).map(|p| p.phase)
    }

    /// The session of an open link to `peer`.
    pub fn open_session(&self, peer: DeviceId) -> Option<u64> {
        match self.phase(peer)? {
            Phase::Open { session } => Some(session),
            _ => None,
        }
    }

    /// The session of a running attempt or open link to `peer`.
    pub fn live_session(&self, peer: DeviceId) -> Option<u64> {
        match self.phase(peer)? {
            Phase::Open { session } | Phase::Connecting { session, .. } => Some(session),
            _ => None,
        }
    }

    fn start_offer(&mut self, peer: DeviceId, now: Instant) {
        let session = self.session();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.phase = Phase::Connecting {
                session,
                role: Role::Offerer,
                deadline: now + CONNECT_TIMEOUT,
            };
            self.actions.push_back(Action::Offer { peer, session });
        }
    }

    /// The online set (this device included, or not) is now `online`.
    /// Returns the peers that left (their state is forgotten).
    pub fn on_online(&mut self, online: &[DeviceId], now: Instant) -> Vec<DeviceId> {
        let set: BTreeSet<DeviceId> = online.iter().copied().filter(|d| *d != self.me).collect();
        let gone: Vec<DeviceId> = self
            .peers
            .keys()
            .filter(|d| !set.contains(d))
            .copied()
            .collect();
        for d in &gone {
            if let Some(p) = self.peers.remove(d) {
                if let Phase::Connecting { session, .. } | Phase::Open { session } = p.phase {
                    self.actions.push_back(Action::Stop {
                        peer: *d,
                        session,
                        bye: false,
                        reason: "peer went offline",
                    });
                }
            }
        }
        for d in set {
            if self.peers.contains_key(&d) {
                continue;
            }
            self.peers.insert(
                d,
                Peer {
                    phase: Phase::Idle,
                    failures: 0,
                    last_activity: None,
                },
            );
            if role(self.me, d) == Role::Offerer {
                self.start_offer(d, now);
            }
        }
        gone
    }

    /// A valid offer for `session` arrived from `peer`. Returns true when
    /// this device answers it (an [`Action::Answer`] is queued).
    pub fn on_offer(&mut self, peer: DeviceId, session: u64, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        match p.phase {
            Phase::Connecting {
                role: Role::Offerer,
                ..
            }
            | Phase::Open { .. }
                if role(self.me, peer) == Role::Offerer =>
            {
                // Glare, or a peer with another rule: the lower id's offer
                // wins, and that is ours.
                return false;
            }
            _ => {}
        }
        if let Phase::Connecting { session: old, .. } | Phase::Open { session: old } = p.phase {
            if old == session {
                return false;
            }
            self.actions.push_back(Action::Stop {
                peer,
                session: old,
                bye: false,
                reason: "peer offered a new link",
            });
        }
        p.phase = Phase::Connecting {
            session,
            role: Role::Answerer,
            deadline: now + CONNECT_TIMEOUT,
        };
        self.actions.push_back(Action::Answer { peer, session });
        true
    }

    /// The attempt `session` to `peer` opened its data channel.
    pub fn on_opened(&mut self, peer: DeviceId, session: u64, now: Instant) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        match p.phase {
            Phase::Connecting { session: s, .. } if s == session => {
                p.phase = Phase::Open { session };
                p.failures = 0;
                p.last_activity = Some(now);
                true
            }
            _ => false,
        }
    }

    /// A clip crossed the link to `peer` (either way): it is not idle.
    pub fn on_activity(&mut self, peer: DeviceId, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_activity = Some(now);
        }
    }

    /// The peer closed `session` because it was idle: go dormant, no retry.
    pub fn on_idle_bye(&mut self, peer: DeviceId, session: u64) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        match p.phase {
            Phase::Connecting { session: s, .. } | Phase::Open { session: s } if s == session => {
                p.phase = Phase::Dormant;
                self.actions.push_back(Action::Stop {
                    peer,
                    session,
                    bye: false,
                    reason: IDLE_REASON,
                });
                true
            }
            _ => false,
        }
    }

    /// A local clip is being sent (auto mode): offer to every peer without
    /// a link or an attempt (dormant, or idle waiting for an offer).
    pub fn wake(&mut self, now: Instant) {
        let sleeping: Vec<DeviceId> = self
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.phase, Phase::Dormant | Phase::Idle))
            .map(|(d, _)| *d)
            .collect();
        for d in sleeping {
            self.start_offer(d, now);
        }
    }

    /// The attempt or link `session` to `peer` ended (failed, closed, or
    /// the peer said `Bye`, in which case `tell_peer` is false). Returns
    /// true if it was the current one. An attempt that never opened is
    /// retried by the offerer; an open link that ends goes dormant in auto
    /// mode (idle time set) and is retried otherwise.
    pub fn on_ended(
        &mut self,
        peer: DeviceId,
        session: u64,
        now: Instant,
        tell_peer: bool,
    ) -> bool {
        let me = self.me;
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        match p.phase {
            Phase::Connecting { session: s, .. } | Phase::Open { session: s } if s == session => {}
            _ => return false,
        }
        self.actions.push_back(Action::Stop {
            peer,
            session,
            bye: tell_peer,
            reason: "link ended",
        });
        let was_offering = matches!(
            p.phase,
            Phase::Connecting {
                role: Role::Offerer,
                ..
            }
        );
        if self.idle.is_some() && matches!(p.phase, Phase::Open { .. }) {
            // Auto mode: the relay carries every clip; an open link that
            // broke (or that the peer closed as idle before its `Bye`
            // arrived) comes back with the next clip, not by retrying.
            p.phase = Phase::Dormant;
        } else if role(me, peer) == Role::Offerer {
            p.failures += 1;
            p.phase = if p.failures >= MAX_FAILURES {
                Phase::Failed
            } else {
                Phase::Retrying {
                    at: now + retry_delay(p.failures),
                }
            };
        } else if was_offering {
            // An offer made on demand ([`Plan::wake`]) by the side that
            // normally answers: bounded like the offerer's retries.
            p.failures += 1;
            p.phase = if p.failures >= MAX_FAILURES {
                Phase::Failed
            } else {
                Phase::Idle
            };
        } else {
            p.phase = Phase::Idle;
        }
        true
    }

    /// Advances timers: attempts past their deadline fail, retries start.
    pub fn on_timeout(&mut self, now: Instant) {
        let idle = self.idle;
        let due: Vec<(DeviceId, Phase)> = self
            .peers
            .iter()
            .filter(|(_, p)| match p.phase {
                Phase::Connecting { deadline, .. } => now >= deadline,
                Phase::Retrying { at } => now >= at,
                Phase::Open { .. } => match (p.last_activity, idle) {
                    (Some(t), Some(i)) => now >= t + i,
                    _ => false,
                },
                _ => false,
            })
            .map(|(d, p)| (*d, p.phase))
            .collect();
        for (d, phase) in due {
            match phase {
                Phase::Open { session } => {
                    if let Some(p) = self.peers.get_mut(&d) {
                        p.phase = Phase::Dormant;
                    }
                    self.actions.push_back(Action::Stop {
                        peer: d,
                        session,
                        bye: true,
                        reason: IDLE_REASON,
                    });
                }
                Phase::Connecting { session, .. } => {
                    self.on_ended(d, session, now, true);
                    // Replace the generic reason of the Stop just queued.
                    if let Some(Action::Stop { reason, .. }) = self.actions.back_mut() {
                        *reason = "no open channel within the connect timeout";
                    }
                }
                Phase::Retrying { .. } => self.start_offer(d, now),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<DeviceId> {
        v.iter().map(|i| DeviceId(*i)).collect()
    }

    fn drain(p: &mut Plan) -> Vec<Action> {
        std::iter::from_fn(|| p.poll_action()).collect()
    }

    #[test]
    fn lower_id_offers_higher_id_waits() {
        assert_eq!(role(DeviceId(1), DeviceId(2)), Role::Offerer);
        assert_eq!(role(DeviceId(2), DeviceId(1)), Role::Answerer);
        let t0 = Instant::now();
        let mut a = Plan::new(DeviceId(1), 5, None);
        let mut b = Plan::new(DeviceId(2), 9, None);
        a.on_online(&ids(&[1, 2]), t0);
        b.on_online(&ids(&[1, 2]), t0);
        let acts = drain(&mut a);
        let [Action::Offer { peer, session }] = acts.as_slice() else {
            panic!("{acts:?}")
        };
        assert_eq!(*peer, DeviceId(2));
        assert!(drain(&mut b).is_empty(), "the higher id never offers");
        assert!(b.on_offer(DeviceId(1), *session, t0));
        assert_eq!(
            drain(&mut b),
            vec![Action::Answer {
                peer: DeviceId(1),
                session: *session
            }]
        );
        assert!(a.on_opened(DeviceId(2), *session, t0));
        assert!(b.on_opened(DeviceId(1), *session, t0));
        assert_eq!(a.open_session(DeviceId(2)), Some(*session));
        // A glare offer from the higher id is ignored by the offerer.
        assert!(!a.on_offer(DeviceId(2), 77, t0));
    }

    #[test]
    fn failures_back_off_and_give_up() {
        assert_eq!(retry_delay(1), RETRY_BASE);
        assert_eq!(retry_delay(2), RETRY_BASE * 2);
        assert_eq!(retry_delay(40), RETRY_CAP);
        let mut t = Instant::now();
        let mut a = Plan::new(DeviceId(1), 1, None);
        a.on_online(&ids(&[1, 2]), t);
        let mut attempts = 0;
        for round in 1..=MAX_FAILURES {
            let acts = drain(&mut a);
            let Some(Action::Offer { session, .. }) = acts.last().cloned() else {
                panic!("round {round}: {acts:?}")
            };
            attempts += 1;
            // The attempt times out.
            t += CONNECT_TIMEOUT;
            assert_eq!(a.poll_timeout(), Some(t));
            a.on_timeout(t);
            let stop = drain(&mut a);
            assert!(
                matches!(stop.as_slice(), [Action::Stop { session: s, bye: true, .. }] if *s == session),
                "{stop:?}"
            );
            if round < MAX_FAILURES {
                assert_eq!(
                    a.phase(DeviceId(2)),
                    Some(Phase::Retrying {
                        at: t + retry_delay(round)
                    })
                );
                t += retry_delay(round);
                a.on_timeout(t);
            }
        }
        assert_eq!(attempts, MAX_FAILURES);
        assert_eq!(a.phase(DeviceId(2)), Some(Phase::Failed));
        assert_eq!(a.poll_timeout(), None);
        // Leaving and coming back starts over.
        a.on_online(&ids(&[1]), t);
        a.on_online(&ids(&[1, 2]), t);
        assert!(matches!(drain(&mut a).as_slice(), [Action::Offer { .. }]));
    }

    #[test]
    fn an_open_link_resets_failures_and_a_close_retries() {
        let t = Instant::now();
        let mut a = Plan::new(DeviceId(1), 1, None);
        a.on_online(&ids(&[1, 2]), t);
        let Some(Action::Offer { session, .. }) = a.poll_action() else {
            panic!()
        };
        a.on_ended(DeviceId(2), session, t, true);
        drain(&mut a);
        a.on_timeout(t + retry_delay(1));
        let Some(Action::Offer { session, .. }) = a.poll_action() else {
            panic!()
        };
        assert!(a.on_opened(DeviceId(2), session, t));
        // Stale events for an old session change nothing.
        assert!(!a.on_ended(DeviceId(2), session ^ 1, t, true));
        assert!(a.on_ended(DeviceId(2), session, t, false));
        assert_eq!(
            a.phase(DeviceId(2)),
            Some(Phase::Retrying {
                at: t + retry_delay(1)
            })
        );
    }

    #[test]
    fn a_peer_leaving_tears_down_without_bye() {
        let t = Instant::now();
        let mut b = Plan::new(DeviceId(2), 1, None);
        b.on_online(&ids(&[1, 2, 3]), t);
        // 2 offers to 3, answers 1.
        let offer3 = drain(&mut b);
        assert!(matches!(offer3.as_slice(), [Action::Offer { peer, .. }] if *peer == DeviceId(3)));
        assert!(b.on_offer(DeviceId(1), 42, t));
        drain(&mut b);
        assert!(b.on_opened(DeviceId(1), 42, t));
        let gone = b.on_online(&ids(&[2, 3]), t);
        assert_eq!(gone, ids(&[1]));
        assert_eq!(
            drain(&mut b),
            vec![Action::Stop {
                peer: DeviceId(1),
                session: 42,
                bye: false,
                reason: "peer went offline"
            }]
        );
        assert_eq!(b.phase(DeviceId(1)), None);
        // An offer from a device not online is ignored.
        assert!(!b.on_offer(DeviceId(9), 1, t));
    }

    #[test]
    fn answerer_takes_a_new_offer_over_the_old_session() {
        let t = Instant::now();
        let mut b = Plan::new(DeviceId(2), 1, None);
        b.on_online(&ids(&[1, 2]), t);
        assert!(b.on_offer(DeviceId(1), 10, t));
        drain(&mut b);
        assert!(b.on_opened(DeviceId(1), 10, t));
        // The offerer restarted: a new session replaces the old one.
        assert!(b.on_offer(DeviceId(1), 11, t));
        assert_eq!(
            drain(&mut b),
            vec![
                Action::Stop {
                    peer: DeviceId(1),
                    session: 10,
                    bye: false,
                    reason: "peer offered a new link"
                },
                Action::Answer {
                    peer: DeviceId(1),
                    session: 11
                }
            ]
        );
        // The same offer twice (duplicate) is not answered twice.
        assert!(!b.on_offer(DeviceId(1), 11, t));
        // The answerer does not retry: after a failure it waits for an offer.
        assert!(b.on_ended(DeviceId(1), 11, t, true));
        assert_eq!(b.phase(DeviceId(1)), Some(Phase::Idle));
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn idle_links_go_dormant_and_wake_on_the_next_clip() {
        let idle = Duration::from_secs(60);
        let t = Instant::now();
        let mut a = Plan::new(DeviceId(1), 1, Some(idle));
        let mut b = Plan::new(DeviceId(2), 1, Some(idle));
        a.on_online(&ids(&[1, 2]), t);
        b.on_online(&ids(&[1, 2]), t);
        let Some(Action::Offer { session, .. }) = a.poll_action() else {
            panic!()
        };
        assert!(b.on_offer(DeviceId(1), session, t));
        drain(&mut b);
        assert!(a.on_opened(DeviceId(2), session, t));
        assert!(b.on_opened(DeviceId(1), session, t));
        // Traffic keeps it open.
        a.on_activity(DeviceId(2), t + idle / 2);
        assert_eq!(a.poll_timeout(), Some(t + idle / 2 + idle));
        a.on_timeout(t + idle);
        assert_eq!(a.open_session(DeviceId(2)), Some(session));
        // Then silence: A closes with an idle Bye and goes dormant.
        a.on_timeout(t + idle / 2 + idle);
        assert_eq!(
            drain(&mut a),
            vec![Action::Stop {
                peer: DeviceId(2),
                session,
                bye: true,
                reason: IDLE_REASON
            }]
        );
        assert_eq!(a.phase(DeviceId(2)), Some(Phase::Dormant));
        assert_eq!(a.poll_timeout(), None, "a dormant link sets no timer");
        // B hears the idle Bye: dormant too, no retry.
        assert!(b.on_idle_bye(DeviceId(1), session));
        assert_eq!(b.phase(DeviceId(1)), Some(Phase::Dormant));
        drain(&mut b);
        // B (the higher id) copies something: it offers, and A, not
        // offering itself, answers.
        b.wake(t + idle * 3);
        let Some(Action::Offer { peer, session: s2 }) = b.poll_action() else {
            panic!()
        };
        assert_eq!(peer, DeviceId(1));
        assert!(a.on_offer(DeviceId(2), s2, t + idle * 3));
        assert!(matches!(
            drain(&mut a).as_slice(),
            [Action::Answer { session, .. }] if *session == s2
        ));
        // Without an idle time (p2p mode) a link never idles out.
        let mut p = Plan::new(DeviceId(1), 1, None);
        p.on_online(&ids(&[1, 2]), t);
        let Some(Action::Offer { session, .. }) = p.poll_action() else {
            panic!()
        };
        assert!(p.on_opened(DeviceId(2), session, t));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn auto_mode_does_not_retry_a_broken_open_link_until_the_next_clip() {
        let t = Instant::now();
        let mut a = Plan::new(DeviceId(1), 1, Some(Duration::from_secs(60)));
        a.on_online(&ids(&[1, 2]), t);
        let Some(Action::Offer { session, .. }) = a.poll_action() else {
            panic!()
        };
        assert!(a.on_opened(DeviceId(2), session, t));
        assert!(a.on_ended(DeviceId(2), session, t, true));
        drain(&mut a);
        assert_eq!(a.phase(DeviceId(2)), Some(Phase::Dormant));
        assert_eq!(a.poll_timeout(), None);
        a.wake(t);
        assert!(matches!(drain(&mut a).as_slice(), [Action::Offer { .. }]));
    }

    #[test]
    fn on_demand_offers_to_a_peer_that_never_answers_are_bounded() {
        let t = Instant::now();
        // Device 2 (normally the answerer) in auto mode; device 1 never
        // offers (it runs in relay mode).
        let mut b = Plan::new(DeviceId(2), 1, Some(Duration::from_secs(60)));
        b.on_online(&ids(&[1, 2]), t);
        let mut offers = 0;
        for _ in 0..MAX_FAILURES + 3 {
            b.wake(t);
            for a in drain(&mut b) {
                if let Action::Offer { session, .. } = a {
                    offers += 1;
                    assert!(b.on_ended(DeviceId(1), session, t, true));
                }
            }
        }
        assert_eq!(offers, MAX_FAILURES);
        assert_eq!(b.phase(DeviceId(1)), Some(Phase::Failed));
    }
}
