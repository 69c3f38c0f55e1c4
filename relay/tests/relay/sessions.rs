//! Session lifetimes: a token ends after `auth.session_idle_s` without use
//! and `auth.session_max_s` after it was issued; a renewal issues a new
//! token and ends the old one once the new one is used.

use crate::common::*;
use clipmesh_proto::api::RenewResponse;
use clipmesh_relay::clock::Clock;

const IDLE: i64 = 100;
const MAX: i64 = 1000;

async fn devices(relay: &TestRelay, token: &str) -> u16 {
    http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(token),
        None,
    )
    .await
    .status
}

async fn renew(relay: &TestRelay, token: &str) -> Resp {
    http(
        "POST",
        &format!("{}/api/v1/session/renew", relay.url),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn sessions_end_when_idle_or_old_and_renewal_retires_the_old_token() {
    let clock = Clock::manual(1_000_000);
    let relay = TestRelay::start_clock(clock.clone(), |c| {
        c.auth.session_idle_s = IDLE as u64;
        c.auth.session_max_s = MAX as u64;
    })
    .await;
    let acct = signup(&relay, "lifetimes").await;

    // Idle: unused for longer than IDLE, the token is dead (and so is its
    // WebSocket join).
    let idle = acct.login.token.clone();
    assert_eq!(devices(&relay, &idle).await, 200);
    clock.advance(IDLE + 1);
    assert_eq!(
        devices(&relay, &idle).await,
        401,
        "idle session still works"
    );
    assert_eq!(ws_connect(&relay, Some(&idle)).await.err(), Some(401));

    // Absolute: used well within IDLE all along, it still ends MAX after it
    // was issued.
    let busy = new_device(&relay, &acct, "busy").await.token;
    let mut used = 0;
    while used + 90 <= MAX {
        clock.advance(90);
        used += 90;
        assert_eq!(devices(&relay, &busy).await, 200, "at {used} s");
    }
    clock.advance(MAX - used + 1);
    assert_eq!(
        devices(&relay, &busy).await,
        401,
        "session past its lifetime"
    );

    // Renewal: a new token with a fresh lifetime; the old one works until
    // the new one is used, then never again (a copy in an old backup).
    let old = new_device(&relay, &acct, "renewing").await.token;
    for _ in 0..5 {
        clock.advance(90);
        assert_eq!(devices(&relay, &old).await, 200);
    }
    let r = renew(&relay, &old).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let renewed: RenewResponse = serde_json::from_str(&r.body).unwrap();
    assert_eq!(renewed.max_lifetime_s, MAX as u64);
    assert_ne!(renewed.token, old);
    assert_eq!(
        devices(&relay, &old).await,
        200,
        "old token before the new one is used"
    );
    assert_eq!(devices(&relay, &renewed.token).await, 200);
    assert_eq!(
        devices(&relay, &old).await,
        401,
        "old token after the new one was used"
    );
    assert_eq!(renew(&relay, &old).await.status, 401);
    // The new token lives MAX from its renewal, past the old one's end.
    let mut used = 0;
    while used + 90 <= MAX - 10 {
        clock.advance(90);
        used += 90;
        assert_eq!(devices(&relay, &renewed.token).await, 200, "at {used} s");
    }
    // An expired session cannot renew itself.
    clock.advance(MAX);
    assert_eq!(renew(&relay, &renewed.token).await.status, 401);
    relay.stop().await;
}
