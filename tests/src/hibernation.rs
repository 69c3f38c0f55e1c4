//! Hibernation and metering checks for the relay on Cloudflare Workers (the `UserRoom`
//! Durable Object under a local workerd), run by
//! `clipmesh-conformance --hibernation` from `scripts/test.d/50-workers.sh`.
//!
//! The room's `/api/v1/status` reports `wakes`: how often the object was
//! constructed to handle an event (a cold start or a wake from
//! hibernation). With that counter the check shows, for one user with two
//! joined devices:
//!
//! 1. **Idle keepalives do not wake the room.** Both devices send the
//!    client's keepalive, a WebSocket protocol ping, every `ping_every` for
//!    `idle`; the runtime answers them itself.
//! 2. **The room was evicted meanwhile,** and **the next message fans out to
//!    every device:** a publish after the idle period is acknowledged and
//!    delivered, and it is what constructed the object again (exactly one
//!    wake for the whole idle period plus the publish).
//! 3. **Frame pings run it** (what a client sending `Frame::Ping`
//!    keepalives costs): the same idle period with `Frame::Ping` instead;
//!    every ping is a message the room handles (`messages_since_wake`),
//!    keeping it in memory or waking it.
//!
//! 4. **Metering survives eviction:** the day's usage in `/api/v1/status`
//!    counts every message the devices sent (three `Hello`s, the publish,
//!    the frame pings), although the room was evicted between the publish
//!    and the alarm that writes the counts to storage.
//! 5. **An acknowledged clip is stored:** after the publish the room is
//!    evicted again, and a third device that has not seen the clip joins:
//!    the join wakes the room once, and the clip it gets comes from the
//!    room's storage. (The room writes the newest clip behind a zero-delay
//!    timer, one write for the clips published meanwhile, and sends their
//!    `Ack`s after it.)
//!
//! Waiting here is on wall time by necessity: eviction is the runtime's
//! reaction to real idleness. Every wait is bounded by `idle`.

use crate::conformance::{Target, Ws};
use anyhow::{ensure, Context, Result};
use clipmesh_proto::{DeviceId, Frame};
use std::time::{Duration, Instant};

/// What one run saw.
#[derive(Debug)]
pub struct Report {
    /// Wakes while both devices sent protocol pings for `idle`, plus the
    /// publish after it (1: evicted once, woken by the publish only).
    pub wakes_protocol_pings: u64,
    /// Protocol pings sent (both devices).
    pub protocol_pings: u64,
    /// Wakes while both devices sent `Frame::Ping` for `idle`.
    pub wakes_frame_pings: u64,
    /// Messages the room handled while both devices sent `Frame::Ping`
    /// (each one ran the room, awake or woken).
    pub messages_frame_pings: u64,
    /// Frame pings sent (both devices).
    pub frame_pings: u64,
    /// Messages the day's usage counted (every message the devices sent).
    pub metered: u64,
    /// The idle period each phase lasted.
    pub idle: Duration,
}

/// The room's `wakes` and `messages_since_wake`.
fn counters(t: &Target, token: &str) -> Result<(u64, u64)> {
    let s = t.get("/api/v1/status", Some(token))?;
    ensure!(s.status == 200, "status: {s:?}");
    Ok((
        s.body["wakes"].as_u64().context("status has no wakes")?,
        s.body["messages_since_wake"]
            .as_u64()
            .context("status has no messages_since_wake")?,
    ))
}

fn wakes(t: &Target, token: &str) -> Result<u64> {
    Ok(counters(t, token)?.0)
}

/// Keeps both sockets alive for `idle`, one keepalive each every
/// `ping_every`; returns how many were sent.
fn idle_phase(
    a: &mut Ws,
    b: &mut Ws,
    idle: Duration,
    ping_every: Duration,
    frames: bool,
) -> Result<u64> {
    let end = Instant::now() + idle;
    let mut sent = 0;
    let mut nonce = 0;
    while Instant::now() < end {
        std::thread::sleep(ping_every.min(end.saturating_duration_since(Instant::now())));
        for ws in [&mut *a, &mut *b] {
            if frames {
                nonce += 1;
                ws.send(&Frame::Ping { nonce })?;
                let p = ws.recv()?;
                ensure!(p == Frame::Pong { nonce }, "pong: {p:?}");
            } else {
                ws.protocol_ping()?;
            }
            sent += 1;
        }
    }
    Ok(sent)
}

/// Runs the checks against the Worker at `base` (loopback only).
pub fn run(base: &str, idle: Duration, ping_every: Duration) -> Result<Report> {
    let t = Target::new(base)?;
    let name = format!("hib-{}", std::process::id());
    let (l1, key) = t.signup(&name, "h1")?;
    let l2 = t.login(&name, &key, "h2")?;
    ensure!(l2.status == 200, "login: {l2:?}");
    let token2 = l2.body["token"].as_str().context("token")?.to_owned();
    let (mut a, _) = t.join(&l1.token, 0)?;
    let (mut b, _) = t.join(&token2, 0)?;
    // The room's alarm (the Hello timeout sweep after each connect) fires
    // first: it is an event of its own and would count as a wake.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let s = t.get("/api/v1/status", Some(&l1.token))?;
        if s.body["alarm_at"].is_null() {
            break;
        }
        ensure!(
            Instant::now() < until,
            "the room's alarm never fired: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let w0 = wakes(&t, &l1.token)?;

    // 1 and 2: protocol pings, then a publish.
    let protocol_pings = idle_phase(&mut a, &mut b, idle, ping_every, false)?;
    a.send(&Frame::Publish {
        id: 1,
        envelope: b"after-idle".to_vec(),
    })?;
    let ack = a.recv()?;
    let Frame::Ack { id: 1, seq } = ack else {
        anyhow::bail!("expected Ack after the idle period, got {ack:?}");
    };
    let published = Frame::Deliver {
        seq,
        from: DeviceId(l1.device),
        envelope: b"after-idle".to_vec(),
    };
    let d = b.recv()?;
    ensure!(d == published, "deliver after the idle period: {d:?}");
    let w1 = wakes(&t, &l1.token)?;
    let wakes_protocol_pings = w1 - w0;
    ensure!(
        wakes_protocol_pings == 1,
        "expected exactly one wake (the publish after eviction) over {idle:?} of protocol \
         pings every {ping_every:?}, saw {wakes_protocol_pings}: {}",
        if wakes_protocol_pings == 0 {
            "the room was never evicted"
        } else {
            "idle pings woke the room"
        }
    );

    // 5: the acknowledged clip is in storage, not only in the room's
    // memory: once the room is evicted again, a device that has not seen
    // it joins, wakes the room (exactly one wake) and gets it.
    let l3 = t.login(&name, &key, "h3")?;
    ensure!(l3.status == 200, "login: {l3:?}");
    let token3 = l3.body["token"].as_str().context("token")?.to_owned();
    std::thread::sleep(idle);
    let (mut c, _) = t.join(&token3, 0)?;
    let d = c.recv()?;
    ensure!(d == published, "the newest clip after an eviction: {d:?}");
    let w1b = wakes(&t, &l1.token)?;
    ensure!(
        w1b - w1 == 1,
        "expected the join to wake the evicted room once, saw {} wakes",
        w1b - w1
    );
    drop(c);

    // 3: frame pings, for comparison. The messages counter is per
    // construction; wait for an eviction first so it starts from zero.
    std::thread::sleep(idle);
    let frame_pings = idle_phase(&mut a, &mut b, idle, ping_every, true)?;
    let (w2, m2) = counters(&t, &l1.token)?;
    ensure!(
        m2 >= frame_pings,
        "the room handled {m2} messages for {frame_pings} frame pings"
    );
    // 4: two Hellos, the publish and the frame pings, none lost to the
    // eviction after the publish (the room's flush alarm, at most 5 s
    // after the first uncounted message, has to store its count before
    // the runtime evicts the idle object).
    let s = t.get("/api/v1/status", Some(&l1.token))?;
    let metered = s.body["usage_today"]["messages"]
        .as_u64()
        .context("usage")?;
    // (three `Hello`s: the third device's in check 5.)
    let sent = 3 + 1 + frame_pings;
    ensure!(
        metered == sent,
        "metering counted {metered} messages of the {sent} sent across an eviction"
    );
    Ok(Report {
        wakes_protocol_pings,
        protocol_pings,
        wakes_frame_pings: w2 - w1b,
        messages_frame_pings: m2,
        frame_pings,
        metered,
        idle,
    })
}

/// The admin's per-room view (`/api/v1/admin/users/{id}/status`) of
/// `admin`'s own room, where its one device is joined and has just sent
/// messages: the device is listed connected, with its last message and
/// idle seconds, and with its last connect from D1. Another user's token
/// is refused (403), an unknown user is 404.
fn admin_status(t: &Target, admin: &crate::conformance::Login) -> Result<()> {
    let path = format!("/api/v1/admin/users/{}/status", admin.user);
    let s = t.get(&path, Some(&admin.token))?;
    ensure!(s.status == 200, "admin status: {s:?}");
    let sock = &s.body["sockets"][0];
    ensure!(
        s.body["online"] == 1
            && sock["device"].as_u64() == Some(admin.device)
            && sock["joined"] == true
            && sock["last_message_at"].as_i64().is_some()
            && sock["idle_s"]
                .as_i64()
                .is_some_and(|i| (0..=60).contains(&i)),
        "admin status of a room with one joined, recently active device: {s:?}"
    );
    let dev = &s.body["devices"][0];
    ensure!(
        dev["id"].as_u64() == Some(admin.device) && dev["last_seen_at"].as_i64().is_some(),
        "admin status lists the account's devices: {s:?}"
    );
    let (other, _) = t.signup(&format!("notadmin-{}", std::process::id()), "n1")?;
    let refused = t.get(&path, Some(&other.token))?;
    ensure!(
        refused.status == 403 && refused.body["error"] == "forbidden",
        "a non-admin's admin status: {refused:?}"
    );
    let missing = t.get("/api/v1/admin/users/999999999/status", Some(&admin.token))?;
    ensure!(
        missing.status == 404,
        "an unknown user's status: {missing:?}"
    );
    Ok(())
}

/// Metering and the connect-time quota, against a Worker started with
/// `DAILY_MESSAGE_QUOTA` = `limit` (at least 2): one device sends `limit`
/// messages (its `Hello` and pings), `/api/v1/status` counts them, and the
/// next connect is answered 101, then `Error{RateLimited, "quota
/// exceeded…"}` and close 4003. On the way, the admin's per-room
/// status (the first account is the admin; see `admin_status`).
pub fn quota(base: &str, limit: u64) -> Result<()> {
    use crate::conformance::Closed;
    use clipmesh_proto::{CloseCode, ErrorCode};
    ensure!(limit >= 2, "the quota check needs a limit of at least 2");
    let t = Target::new(base)?;
    let (l1, _) = t.signup(&format!("quota-{}", std::process::id()), "q1")?;
    let (mut a, _) = t.join(&l1.token, 0)?;
    for nonce in 1..limit {
        a.send(&Frame::Ping { nonce })?;
        let p = a.recv()?;
        ensure!(p == Frame::Pong { nonce }, "pong: {p:?}");
    }
    let s = t.get("/api/v1/status", Some(&l1.token))?;
    ensure!(
        s.body["usage_today"]["messages"].as_u64() == Some(limit),
        "usage after {limit} messages: {s:?}"
    );
    // The first account of this fresh Worker is its admin.
    admin_status(&t, &l1)?;
    let mut refused = t.ws(&l1.token)?;
    let e = refused.recv()?;
    ensure!(
        matches!(&e, Frame::Error { code: ErrorCode::RateLimited, message, .. } if message.contains("quota exceeded")),
        "over quota: {e:?}"
    );
    let closed = refused.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::RateLimited.as_u16()),
        "over quota closes 4003: {closed:?}"
    );
    Ok(())
}
