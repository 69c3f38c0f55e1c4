//! A running daemon renews its session before the relay's lifetime ends it,
//! and the token it started with (as in an old backup) stops working.

use anyhow::{bail, Result};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::{Device, Relay, Xvfb};
use std::time::Duration;

const LOG: &str = "info,clipmesh=debug,clipmesh_relay=debug";

/// Both lifetimes, seconds: a token unused or issued this long ago ends.
const LIFETIME_S: u64 = 8;

/// `GET /api/v1/devices` with `token`: its HTTP status.
fn devices_status(port: u16, token: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /api/v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).into_owned();
    match head.get(9..12).and_then(|c| c.parse().ok()) {
        Some(code) => Ok(code),
        None => bail!("malformed HTTP answer {head:?}"),
    }
}

#[test]
fn running_daemon_renews_its_session_and_the_old_token_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let auth = format!("session_idle_s = {LIFETIME_S}\nsession_max_s = {LIFETIME_S}");
    let mut relay = Relay::start_with(
        &root.join("relay-data"),
        &logs.join("relay-0.log"),
        0,
        LOG,
        &auth,
    )
    .unwrap();
    let a = Device::new(root, &logs, "renew-a").unwrap();
    a.signup(&relay.url(), "renew", "renew pass phrase", LOG)
        .unwrap();
    // A second device that logs in and never runs: its token ends with the
    // lifetime, which is how the test knows the lifetime has passed.
    let idle = Device::new(root, &logs, "renew-idle").unwrap();
    idle.login(&relay.url(), "renew", "renew pass phrase", LOG)
        .unwrap();
    let (first_token, _) = a.secrets().unwrap();
    let (idle_token, _) = idle.secrets().unwrap();

    let x = Xvfb::start().unwrap();
    let mut daemon = a.run(&x.display(), LOG).unwrap();
    a.wait_connected(STEP).unwrap();

    // The token the daemon started with stops working once it has renewed
    // (twice: the relay accepts the replaced token until the new one is used).
    poll_until(
        "the daemon's first token to be refused",
        STEP,
        Duration::from_millis(200),
        || Ok((devices_status(relay.port, &first_token)? == 401).then_some(())),
    )
    .unwrap();
    assert_ne!(a.secrets().unwrap().0, first_token, "renewed token saved");
    poll_until(
        "the unused device's session to end",
        STEP,
        Duration::from_millis(200),
        || Ok((devices_status(relay.port, &idle_token)? == 401).then_some(())),
    )
    .unwrap();

    // Every token issued before the lifetime elapsed is dead by now unless
    // renewed: after a relay restart the daemon reconnects with its current
    // token, without a login.
    relay.restart(&logs.join("relay-1.log"), LOG).unwrap();
    a.wait_connected(STEP).unwrap();
    daemon.check_running().unwrap();
    let (now_token, _) = a.secrets().unwrap();
    assert_eq!(devices_status(relay.port, &now_token).unwrap(), 200);
    assert_eq!(devices_status(relay.port, &first_token).unwrap(), 401);
    daemon.stop().unwrap();
}
