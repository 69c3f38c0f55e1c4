//! The sans-IO core of a room: membership, fan-out, presence, signalling
//! and the newest clip of one user.
//!
//! [`RoomState`] takes inputs (join, leave, publish, signal, revoke) with the
//! current time and writes its outputs to each member's [`Port`]. A port
//! only queues bytes or requests a close; it never blocks. Tests drive it
//! with recording ports and no sockets.
//!
//! **Invariant:** a frame published by a device reaches only the other
//! online devices of the same user: a room holds the members of exactly one
//! user, and the relay creates one room per user id.
//!
//! **Invariant:** each `Deliver` is encoded once per publish and the same
//! bytes are shared by every recipient.

use bytes::Bytes;
use clipmesh_proto::{CloseCode, DeviceId, DeviceInfo, ErrorCode, Frame, SignalKind, UserId};

/// A connection's id, unique within this relay process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The port's queue is full (or its connection is gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortFull;

/// Where a room writes a member's outbound frames. Implementations must not
/// block: a full queue returns [`PortFull`] and the room drops that member.
pub trait Port {
    /// Queues one encoded frame.
    fn try_send(&self, frame: Bytes) -> Result<(), PortFull>;
    /// Asks the connection to close with `code` (it need not be queued
    /// behind pending frames).
    fn close(&self, code: CloseCode);
}

/// A shared port is a port: hosts often keep the same queue in the
/// connection and in the room.
impl<T: Port + ?Sized> Port for std::sync::Arc<T> {
    fn try_send(&self, frame: Bytes) -> Result<(), PortFull> {
        (**self).try_send(frame)
    }
    fn close(&self, code: CloseCode) {
        (**self).close(code);
    }
}

/// Which protocol a member speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MemberKind {
    /// A clipmesh device: gets `Welcome`, `Presence`, `Deliver`, `Signal`.
    #[default]
    Native,
    /// A ClipCascade session (`/clipsocket`): gets only ClipCascade message
    /// bodies, from [`RoomState::cc_publish`]. Its port is handed raw JSON
    /// bodies, which its connection wraps in STOMP `MESSAGE` frames.
    ClipCascade,
}

/// One online device.
#[derive(Debug)]
pub struct Member<P> {
    /// Its device id.
    pub device: DeviceId,
    /// Its name, for presence lists.
    pub name: String,
    /// Its connection.
    pub conn: ConnId,
    /// Its outbound queue.
    pub port: P,
    /// The protocol it speaks; frames of one kind never reach the other.
    pub kind: MemberKind,
}

/// The room's newest clip.
#[derive(Clone, Debug)]
pub struct Clip {
    /// Its sequence number.
    pub seq: u64,
    /// Who published it.
    pub from: DeviceId,
    /// The sealed envelope, or `None` when the clip TTL is 0.
    pub envelope: Option<Bytes>,
    /// When it was published, Unix seconds.
    pub stored_at: i64,
}

/// Room parameters copied from the config.
#[derive(Clone, Copy, Debug)]
pub struct RoomLimits {
    /// Most devices online at once.
    pub max_devices: usize,
    /// Advertised in `Welcome`.
    pub max_frame: u32,
    /// Advertised in `Welcome`.
    pub ping_interval_s: u16,
    /// Advertised in `Welcome`.
    pub idle_timeout_s: u16,
    /// How long the newest clip is replayed, seconds (0: never kept).
    pub clip_ttl_s: u64,
}

/// What a publish did.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// The clip to persist, if the publisher was a member.
    pub persist: Option<Clip>,
    /// `Deliver` frames queued.
    pub delivered: u64,
    /// Bytes queued in them.
    pub bytes: u64,
    /// The publisher's `Ack`, when [`RoomState::publish_held`] held it back
    /// until [`Self::persist`] is stored.
    pub held_ack: Option<HeldAck>,
}

/// An `Ack` not yet sent: the host sends it with [`RoomState::release_ack`]
/// once the clip it acknowledges is stored, or drops the publisher with
/// [`RoomState::fail_ack`] when storing failed (the device then publishes
/// again after it reconnects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldAck {
    /// The publisher's connection.
    pub conn: ConnId,
    /// The `Publish` id.
    pub id: u32,
    /// The sequence number the clip got.
    pub seq: u64,
}

/// The state of one user's room.
#[derive(Debug)]
pub struct RoomState<P> {
    user: UserId,
    members: Vec<Member<P>>,
    seq: u64,
    newest: Option<Clip>,
    limits: RoomLimits,
}

impl<P: Port> RoomState<P> {
    /// A room for `user` resuming from a stored `seq`/clip with the members
    /// that were online when it was evicted.
    pub fn new(
        user: UserId,
        limits: RoomLimits,
        seq: u64,
        newest: Option<Clip>,
        members: Vec<Member<P>>,
    ) -> Self {
        Self {
            user,
            members,
            seq,
            newest,
            limits,
        }
    }

    /// The user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// Newest sequence number assigned.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Number of online devices.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no device is online.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The online devices, ClipCascade sessions included.
    pub fn online(&self) -> Vec<DeviceInfo> {
        self.members
            .iter()
            .map(|m| DeviceInfo {
                id: m.device,
                name: m.name.clone(),
            })
            .collect()
    }

    /// The online clipmesh devices, as `Welcome` and `Presence` list them
    /// (a ClipCascade session cannot take part in clipmesh signalling or
    /// open envelopes, so native devices are not told about it).
    fn native_online(&self) -> Vec<DeviceInfo> {
        self.members
            .iter()
            .filter(|m| m.kind == MemberKind::Native)
            .map(|m| DeviceInfo {
                id: m.device,
                name: m.name.clone(),
            })
            .collect()
    }

    /// Takes the members out (when the room is evicted from memory).
    pub fn take_members(&mut self) -> Vec<Member<P>> {
        std::mem::take(&mut self.members)
    }

    fn fresh_clip(&self, now: i64) -> Option<&Clip> {
        let ttl = i64::try_from(self.limits.clip_ttl_s).unwrap_or(i64::MAX);
        self.newest
            .as_ref()
            .filter(|c| c.envelope.is_some() && now.saturating_sub(c.stored_at) <= ttl)
    }

    /// A device joins (after its `Hello`). A second socket of the same
    /// device replaces the first (closed with 4007). Over the device limit,
    /// the newcomer is closed with 4004 and `false` is returned.
    pub fn join(&mut self, member: Member<P>, last_seen: u64, now: i64) -> bool {
        if let Some(i) = self.members.iter().position(|m| m.device == member.device) {
            let old = self.members.swap_remove(i);
            old.port.close(CloseCode::Replaced);
        } else if self.members.len() >= self.limits.max_devices {
            member.port.close(CloseCode::TooManyDevices);
            return false;
        }
        let device = member.device;
        if member.kind == MemberKind::ClipCascade {
            self.members.push(member);
            return true;
        }
        self.members.push(member);
        let welcome = Frame::Welcome {
            user: self.user,
            device,
            max_frame: self.limits.max_frame,
            ping_interval_s: self.limits.ping_interval_s,
            idle_timeout_s: self.limits.idle_timeout_s,
            online: self.native_online(),
        };
        let mut drop = Vec::new();
        let idx = self.members.len() - 1;
        let newcomer = &self.members[idx];
        if newcomer.port.try_send(welcome.encode().into()).is_err() {
            drop.push(newcomer.conn);
        } else if let Some(c) = self.fresh_clip(now) {
            if c.seq > last_seen && c.from != device {
                if let Some(env) = &c.envelope {
                    let f = Frame::Deliver {
                        seq: c.seq,
                        from: c.from,
                        envelope: env.to_vec(),
                    };
                    if newcomer.port.try_send(f.encode().into()).is_err() {
                        drop.push(newcomer.conn);
                    }
                }
            }
        }
        self.settle(drop, true, Some(device));
        true
    }

    /// A connection ended. Returns whether it was a member.
    pub fn leave(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.members.iter().position(|m| m.conn == conn) else {
            return false;
        };
        let gone = self.members.swap_remove(i);
        self.settle(Vec::new(), gone.kind == MemberKind::Native, None);
        true
    }

    /// Closes the sockets of one device (`Some`) or of all (`None`) with
    /// 4001, e.g. after a revoke or when the account is disabled.
    pub fn revoke(&mut self, device: Option<DeviceId>) {
        let before = self.members.len();
        self.members.retain(|m| {
            let hit = device.is_none_or(|d| d == m.device);
            if hit {
                m.port.close(CloseCode::Unauthorized);
            }
            !hit
        });
        if self.members.len() != before {
            self.settle(Vec::new(), true, None);
        }
    }

    /// The account's keys changed (protocol v2: a new key epoch): closes
    /// every member with 1012 so each reconnects at once and fetches the
    /// new epoch's key on join, before it seals anything more. (The host
    /// also calls [`RoomState::forget_newest`].)
    pub fn reconnect_all(&mut self) {
        if self.members.is_empty() {
            return;
        }
        for m in &self.members {
            m.port.close(CloseCode::ServiceRestart);
        }
        self.members.clear();
        self.settle(Vec::new(), true, None);
    }

    /// The account moved to a new key epoch: the newest clip (sealed under
    /// the old epoch) is no longer replayed to a device that joins. Returns
    /// it, so the host can make sure its copy in storage goes too. The
    /// sequence number is kept.
    pub fn forget_newest(&mut self) -> Option<Clip> {
        self.newest.take()
    }

    /// A member publishes a clip: it gets the next sequence number, is
    /// delivered to every other member, acknowledged to the publisher and
    /// kept as the newest clip. For a host whose writes are durable before
    /// anything it sends leaves (a Durable Object's output gate).
    pub fn publish(&mut self, conn: ConnId, id: u32, envelope: Vec<u8>, now: i64) -> Published {
        self.publish_inner(conn, id, envelope, now, false)
    }

    /// Like [`RoomState::publish`], but the publisher's `Ack` is held back
    /// in [`Published::held_ack`]: the host stores [`Published::persist`]
    /// first and then calls [`RoomState::release_ack`], so an acknowledged
    /// clip survives a crash. `Deliver`s to online members go out at once.
    pub fn publish_held(
        &mut self,
        conn: ConnId,
        id: u32,
        envelope: Vec<u8>,
        now: i64,
    ) -> Published {
        self.publish_inner(conn, id, envelope, now, true)
    }

    fn publish_inner(
        &mut self,
        conn: ConnId,
        id: u32,
        envelope: Vec<u8>,
        now: i64,
        hold: bool,
    ) -> Published {
        let Some(pi) = self
            .members
            .iter()
            .position(|m| m.conn == conn && m.kind == MemberKind::Native)
        else {
            return Published::default();
        };
        let from = self.members[pi].device;
        self.seq += 1;
        let seq = self.seq;
        let frame = Frame::Deliver {
            seq,
            from,
            envelope,
        };
        let bytes: Bytes = frame.encode().into();
        let Frame::Deliver { envelope, .. } = frame else {
            unreachable!("frame was built as Deliver above")
        };
        let mut out = Published::default();
        let mut drop = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if i == pi || m.kind != MemberKind::Native {
                continue;
            }
            if m.port.try_send(bytes.clone()).is_ok() {
                out.delivered += 1;
                out.bytes += bytes.len() as u64;
            } else {
                drop.push(m.conn);
            }
        }
        if hold {
            out.held_ack = Some(HeldAck { conn, id, seq });
        } else {
            let ack = Frame::Ack { id, seq }.encode();
            if self.members[pi].port.try_send(ack.into()).is_err() {
                drop.push(conn);
            }
        }
        let clip = Clip {
            seq,
            from,
            envelope: (self.limits.clip_ttl_s > 0).then(|| Bytes::from(envelope)),
            stored_at: now,
        };
        self.newest = Some(clip.clone());
        out.persist = Some(clip);
        self.settle(drop, false, None);
        out
    }

    /// Sends a held `Ack` (its clip is stored now). Nothing happens if the
    /// publisher has left: it publishes again when it reconnects.
    pub fn release_ack(&mut self, ack: HeldAck) {
        let Some(m) = self
            .members
            .iter()
            .find(|m| m.conn == ack.conn && m.kind == MemberKind::Native)
        else {
            return;
        };
        let frame = Frame::Ack {
            id: ack.id,
            seq: ack.seq,
        }
        .encode();
        if m.port.try_send(frame.into()).is_err() {
            self.settle(vec![ack.conn], false, None);
        }
    }

    /// Storing a held `Ack`'s clip failed: closes the publisher with 1013
    /// (try again later), so it reconnects with back-off and publishes the
    /// clip again, rather than believing it stored.
    pub fn fail_ack(&mut self, ack: HeldAck) {
        let before = self.members.len();
        self.members.retain(|m| {
            let hit = m.conn == ack.conn;
            if hit {
                m.port.close(CloseCode::TryAgainLater);
            }
            !hit
        });
        if self.members.len() != before {
            self.settle(Vec::new(), true, None);
        }
    }

    /// Forwards a signalling frame from a member to the named device, or
    /// answers `Error{PeerOffline}`. Returns whether it was forwarded.
    pub fn signal(
        &mut self,
        conn: ConnId,
        peer: DeviceId,
        kind: SignalKind,
        payload: Vec<u8>,
    ) -> bool {
        let Some(sender) = self
            .members
            .iter()
            .find(|m| m.conn == conn && m.kind == MemberKind::Native)
        else {
            return false;
        };
        let from = sender.device;
        let mut drop = Vec::new();
        let target = self
            .members
            .iter()
            .find(|m| m.device == peer && m.device != from && m.kind == MemberKind::Native);
        let sent = match target {
            Some(t) => {
                let f = Frame::Signal {
                    peer: from,
                    kind,
                    payload,
                };
                if t.port.try_send(f.encode().into()).is_err() {
                    drop.push(t.conn);
                }
                true
            }
            None => {
                let f = Frame::Error {
                    code: ErrorCode::PeerOffline,
                    id: 0,
                    message: format!("device {peer} is not online"),
                };
                if sender.port.try_send(f.encode().into()).is_err() {
                    drop.push(conn);
                }
                false
            }
        };
        self.settle(drop, false, None);
        sent
    }

    /// A ClipCascade member sends a message: its body goes to every
    /// ClipCascade member of the user, the sender included (ClipCascade
    /// clients drop their own echo). Nothing is numbered or kept: the
    /// original server replays nothing either.
    pub fn cc_publish(&mut self, conn: ConnId, body: Bytes) -> Published {
        let mut out = Published::default();
        if !self
            .members
            .iter()
            .any(|m| m.conn == conn && m.kind == MemberKind::ClipCascade)
        {
            return out;
        }
        let mut drop = Vec::new();
        for m in &self.members {
            if m.kind != MemberKind::ClipCascade {
                continue;
            }
            if m.port.try_send(body.clone()).is_ok() {
                out.delivered += 1;
                out.bytes += body.len() as u64;
            } else {
                drop.push(m.conn);
            }
        }
        self.settle(drop, false, None);
        out
    }

    /// Removes members whose queue was full (closing them with 4005), and
    /// when the online set changed (or `announce`), tells every member but
    /// `skip` the new online set. Repeats while sending presence itself
    /// overflows someone; that ends because each round removes a member.
    fn settle(&mut self, mut drop: Vec<ConnId>, mut announce: bool, mut skip: Option<DeviceId>) {
        loop {
            if !drop.is_empty() {
                self.members.retain(|m| {
                    let hit = drop.contains(&m.conn);
                    if hit {
                        m.port.close(CloseCode::SlowConsumer);
                    }
                    !hit
                });
                drop.clear();
                announce = true;
            }
            if !announce {
                return;
            }
            let presence: Bytes = Frame::Presence {
                online: self.native_online(),
            }
            .encode()
            .into();
            for m in &self.members {
                if Some(m.device) == skip || m.kind != MemberKind::Native {
                    continue;
                }
                if m.port.try_send(presence.clone()).is_err() {
                    drop.push(m.conn);
                }
            }
            skip = None;
            announce = false;
            if drop.is_empty() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Default)]
    struct Sink {
        frames: Vec<Frame>,
        /// ClipCascade bodies (not clipmesh frames).
        raw: Vec<Bytes>,
        closed: Option<CloseCode>,
        cap: usize,
    }

    #[derive(Clone)]
    struct TestPort(Rc<RefCell<Sink>>);

    impl Port for TestPort {
        fn try_send(&self, frame: Bytes) -> Result<(), PortFull> {
            let mut s = self.0.borrow_mut();
            if s.frames.len() >= s.cap {
                return Err(PortFull);
            }
            match Frame::decode(&frame) {
                Ok(f) => s.frames.push(f),
                Err(_) => s.raw.push(frame),
            }
            Ok(())
        }
        fn close(&self, code: CloseCode) {
            self.0.borrow_mut().closed = Some(code);
        }
    }

    impl TestPort {
        fn new(cap: usize) -> Self {
            Self(Rc::new(RefCell::new(Sink {
                cap,
                ..Sink::default()
            })))
        }
        fn take(&self) -> Vec<Frame> {
            std::mem::take(&mut self.0.borrow_mut().frames)
        }
        fn closed(&self) -> Option<CloseCode> {
            self.0.borrow().closed
        }
    }

    const LIMITS: RoomLimits = RoomLimits {
        max_devices: 3,
        max_frame: 1024,
        ping_interval_s: 30,
        idle_timeout_s: 45,
        clip_ttl_s: 100,
    };

    fn member(d: u64, port: &TestPort) -> Member<TestPort> {
        Member {
            device: DeviceId(d),
            name: format!("dev{d}"),
            conn: ConnId(d * 10),
            port: port.clone(),
            kind: MemberKind::Native,
        }
    }

    fn room() -> RoomState<TestPort> {
        RoomState::new(UserId(1), LIMITS, 0, None, Vec::new())
    }

    #[test]
    fn join_welcomes_and_announces_presence() {
        let mut r = room();
        let (a, b) = (TestPort::new(10), TestPort::new(10));
        assert!(r.join(member(1, &a), 0, 0));
        assert!(matches!(&a.take()[..], [Frame::Welcome { online, .. }] if online.len() == 1));
        assert!(r.join(member(2, &b), 0, 0));
        assert!(
            matches!(&b.take()[..], [Frame::Welcome { device: DeviceId(2), online, .. }] if online.len() == 2)
        );
        assert!(matches!(&a.take()[..], [Frame::Presence { online }] if online.len() == 2));
        assert!(r.leave(ConnId(20)));
        assert!(matches!(&a.take()[..], [Frame::Presence { online }] if online.len() == 1));
        assert!(!r.leave(ConnId(20)));
    }

    #[test]
    fn publish_fans_out_to_others_acks_publisher() {
        let mut r = room();
        let ports: Vec<_> = (0..3).map(|_| TestPort::new(10)).collect();
        for (i, p) in ports.iter().enumerate() {
            r.join(member(i as u64 + 1, p), 0, 0);
        }
        ports.iter().for_each(|p| drop(p.take()));
        let out = r.publish(ConnId(10), 7, b"sealed".to_vec(), 5);
        assert_eq!(out.delivered, 2);
        assert_eq!(out.persist.as_ref().unwrap().seq, 1);
        assert_eq!(ports[0].take(), vec![Frame::Ack { id: 7, seq: 1 }]);
        for p in &ports[1..] {
            assert_eq!(
                p.take(),
                vec![Frame::Deliver {
                    seq: 1,
                    from: DeviceId(1),
                    envelope: b"sealed".to_vec()
                }]
            );
        }
        // A non-member cannot publish.
        assert!(r.publish(ConnId(99), 1, vec![1], 5).persist.is_none());
    }

    #[test]
    fn newest_clip_replayed_only_when_unseen_and_fresh() {
        let mut r = room();
        let a = TestPort::new(10);
        r.join(member(1, &a), 0, 0);
        r.publish(ConnId(10), 1, b"x".to_vec(), 10);
        let b = TestPort::new(10);
        r.join(member(2, &b), 0, 20);
        assert!(matches!(
            &b.take()[..],
            [Frame::Welcome { .. }, Frame::Deliver { seq: 1, .. }]
        ));
        r.leave(ConnId(20));
        let b = TestPort::new(10);
        r.join(member(2, &b), 1, 20);
        assert!(matches!(&b.take()[..], [Frame::Welcome { .. }]));
        r.leave(ConnId(20));
        // Expired.
        let b = TestPort::new(10);
        r.join(member(2, &b), 0, 10 + 101);
        assert!(matches!(&b.take()[..], [Frame::Welcome { .. }]));
        // Never replayed to its publisher.
        r.leave(ConnId(10));
        let a = TestPort::new(10);
        r.join(member(1, &a), 0, 20);
        assert!(matches!(&a.take()[..], [Frame::Welcome { .. }]));
    }

    #[test]
    fn limits_replacement_and_revoke() {
        let mut r = room();
        let ps: Vec<_> = (0..4).map(|_| TestPort::new(10)).collect();
        for (i, p) in ps.iter().take(3).enumerate() {
            assert!(r.join(member(i as u64 + 1, p), 0, 0));
        }
        assert!(!r.join(member(4, &ps[3]), 0, 0));
        assert_eq!(ps[3].closed(), Some(CloseCode::TooManyDevices));
        // Same device again: the old socket is replaced.
        let again = TestPort::new(10);
        let mut m = member(2, &again);
        m.conn = ConnId(999);
        assert!(r.join(m, 0, 0));
        assert_eq!(ps[1].closed(), Some(CloseCode::Replaced));
        assert_eq!(r.len(), 3);
        r.revoke(Some(DeviceId(3)));
        assert_eq!(ps[2].closed(), Some(CloseCode::Unauthorized));
        assert_eq!(r.len(), 2);
        r.revoke(None);
        assert!(r.is_empty());
        assert_eq!(again.closed(), Some(CloseCode::Unauthorized));
    }

    #[test]
    fn rekey_makes_every_member_reconnect() {
        let mut r = room();
        r.reconnect_all();
        let ps: Vec<_> = (0..2).map(|_| TestPort::new(10)).collect();
        for (i, p) in ps.iter().enumerate() {
            assert!(r.join(member(i as u64 + 1, p), 0, 0));
        }
        r.reconnect_all();
        assert!(r.is_empty());
        for p in &ps {
            assert_eq!(p.closed(), Some(CloseCode::ServiceRestart));
        }
    }

    #[test]
    fn slow_consumer_is_dropped_not_buffered() {
        let mut r = room();
        let a = TestPort::new(1000);
        let slow = TestPort::new(3);
        r.join(member(1, &a), 0, 0);
        r.join(member(2, &slow), 0, 0);
        for i in 0..10 {
            r.publish(ConnId(10), i, vec![0; 100], 0);
        }
        assert_eq!(slow.closed(), Some(CloseCode::SlowConsumer));
        assert_eq!(r.len(), 1);
        assert!(slow.take().len() <= 3);
        let frames = a.take();
        assert!(frames
            .iter()
            .any(|f| matches!(f, Frame::Presence { online } if online.len() == 1)));
    }

    #[test]
    fn signal_routes_to_peer_or_reports_offline() {
        let mut r = room();
        let (a, b) = (TestPort::new(10), TestPort::new(10));
        r.join(member(1, &a), 0, 0);
        r.join(member(2, &b), 0, 0);
        a.take();
        b.take();
        assert!(r.signal(ConnId(10), DeviceId(2), SignalKind::Offer, b"sdp".to_vec()));
        assert_eq!(
            b.take(),
            vec![Frame::Signal {
                peer: DeviceId(1),
                kind: SignalKind::Offer,
                payload: b"sdp".to_vec()
            }]
        );
        assert!(!r.signal(ConnId(10), DeviceId(9), SignalKind::Offer, vec![]));
        assert!(matches!(
            &a.take()[..],
            [Frame::Error {
                code: ErrorCode::PeerOffline,
                ..
            }]
        ));
        // Signalling to itself is refused too.
        assert!(!r.signal(ConnId(10), DeviceId(1), SignalKind::Bye, vec![]));
    }

    #[test]
    fn clipcascade_members_get_only_clipcascade_bodies_sender_included() {
        let mut r = room();
        let (n, c1, c2) = (TestPort::new(10), TestPort::new(10), TestPort::new(10));
        r.join(member(1, &n), 0, 0);
        let cc = |d: u64, p: &TestPort| Member {
            kind: MemberKind::ClipCascade,
            ..member(d, p)
        };
        assert!(r.join(cc(2, &c1), 0, 0));
        assert!(r.join(cc(3, &c2), 0, 0));
        // The device limit counts them; native presence does not list them.
        assert_eq!(r.len(), 3);
        assert_eq!(r.online().len(), 3);
        assert!(n.take().len() == 1, "only the native Welcome");
        // A ClipCascade body reaches both sessions, not the native device.
        let out = r.cc_publish(ConnId(20), Bytes::from_static(b"{}"));
        assert_eq!(out.delivered, 2);
        assert!(n.take().is_empty());
        for p in [&c1, &c2] {
            assert_eq!(p.0.borrow().raw, vec![Bytes::from_static(b"{}")]);
            assert!(p.take().is_empty(), "no clipmesh frame for ClipCascade");
        }
        // Native publishes and signals never reach ClipCascade members.
        r.publish(ConnId(10), 1, b"env".to_vec(), 0);
        assert!(!r.signal(ConnId(10), DeviceId(2), SignalKind::Offer, vec![]));
        assert!(c1.take().is_empty() && c2.take().is_empty());
        // A session leaving does not announce presence to native devices.
        n.take();
        r.leave(ConnId(30));
        assert!(n.take().is_empty());
        // A native member cannot cc_publish, nor a ClipCascade one publish.
        assert_eq!(r.cc_publish(ConnId(10), Bytes::new()).delivered, 0);
        assert!(r.publish(ConnId(20), 1, vec![], 0).persist.is_none());
    }

    #[test]
    fn held_ack_is_sent_only_on_release_and_fail_closes_the_publisher() {
        let mut r = room();
        let (a, b) = (TestPort::new(10), TestPort::new(10));
        r.join(member(1, &a), 0, 0);
        r.join(member(2, &b), 0, 0);
        a.take();
        b.take();
        let out = r.publish_held(ConnId(10), 7, b"sealed".to_vec(), 5);
        let held = out.held_ack.expect("held");
        assert_eq!(
            held,
            HeldAck {
                conn: ConnId(10),
                id: 7,
                seq: 1
            }
        );
        // Delivered at once; the publisher hears nothing yet.
        assert!(matches!(&b.take()[..], [Frame::Deliver { seq: 1, .. }]));
        assert!(a.take().is_empty());
        r.release_ack(held);
        assert_eq!(a.take(), vec![Frame::Ack { id: 7, seq: 1 }]);
        // A failed store closes the publisher so that it publishes again.
        let held = r
            .publish_held(ConnId(10), 8, b"x".to_vec(), 6)
            .held_ack
            .expect("held");
        r.fail_ack(held);
        assert_eq!(a.closed(), Some(CloseCode::TryAgainLater));
        assert!(a.take().is_empty());
        assert_eq!(r.len(), 1);
        // Releasing for a publisher that left does nothing.
        r.release_ack(held);
        // The plain publish still acknowledges at once.
        assert!(r
            .publish(ConnId(20), 1, b"y".to_vec(), 7)
            .held_ack
            .is_none());
        assert!(matches!(
            &b.take()[..],
            [
                Frame::Deliver { seq: 2, .. },
                Frame::Presence { .. },
                Frame::Ack { id: 1, seq: 3 }
            ]
        ));
    }
}
