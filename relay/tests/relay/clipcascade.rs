//! The ClipCascade surface, driven by a scripted ClipCascade-style client
//! written from the protocol description alone (`docs/protocol.md`): raw
//! HTTP/1.1 with a cookie jar of one `JSESSIONID`, and STOMP over a plain
//! WebSocket, text or binary.

use super::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha3::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// One raw HTTP answer.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `JSESSIONID` this answer sets, if any.
    fn cookie(&self) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .find_map(|(_, v)| v.strip_prefix("JSESSIONID="))
            .map(|v| v.split(';').next().unwrap_or_default().to_owned())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn host(relay: &TestRelay) -> String {
    relay.url.trim_start_matches("http://").to_owned()
}

/// Sends one request over a fresh connection (`Connection: close`) and
/// reads the whole answer.
async fn raw(
    relay: &TestRelay,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Raw {
    let mut s = TcpStream::connect(host(relay)).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        host(relay),
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    // Chunked bodies: good enough to search and parse small pages.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn sha3_hex(pw: &str) -> String {
    hex::encode(sha3::Sha3_512::digest(pw.as_bytes()))
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The scripted ClipCascade client's session: its one cookie.
struct CcClient {
    cookie: String,
}

impl CcClient {
    fn cookie_header(&self) -> String {
        format!("JSESSIONID={}", self.cookie)
    }

    async fn get(&self, relay: &TestRelay, path: &str) -> Raw {
        raw(relay, "GET", path, &[("Cookie", &self.cookie_header())], "").await
    }
}

/// `GET /login`: the cookie and the `_csrf` value from the page.
async fn login_page(relay: &TestRelay) -> (String, String) {
    let r = raw(relay, "GET", "/login", &[], "").await;
    assert_eq!(r.status, 200);
    let cookie = r.cookie().expect("GET /login sets JSESSIONID");
    let marker = "name=\"_csrf\" value=\"";
    let at = r.body.find(marker).expect("_csrf hidden field") + marker.len();
    let csrf = r.body[at..].split('"').next().unwrap().to_owned();
    (cookie, csrf)
}

/// The whole login flow as the clients do it: GET /login, POST /login with
/// the SHA3-512 hex, follow the redirect, check the page. `Err(page)` on a
/// refused login.
async fn cc_login(relay: &TestRelay, user: &str, pw: &str) -> Result<CcClient, Raw> {
    let (cookie, csrf) = login_page(relay).await;
    let body = form_encode(&[
        ("username", user),
        ("password", &sha3_hex(pw)),
        ("_csrf", &csrf),
    ]);
    let r = raw(
        relay,
        "POST",
        "/login",
        &[
            ("Cookie", &format!("JSESSIONID={cookie}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("User-Agent", "scripted-clipcascade/1.0"),
        ],
        &body,
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let cookie = r.cookie().unwrap_or(cookie);
    let to = r.header("location").unwrap().to_owned();
    let page = raw(
        relay,
        "GET",
        &to,
        &[("Cookie", &format!("JSESSIONID={cookie}"))],
        "",
    )
    .await;
    if page.status == 200 && !page.body.to_ascii_lowercase().contains("bad credentials") {
        Ok(CcClient { cookie })
    } else {
        Err(page)
    }
}

/// A clipmesh account with ClipCascade compatibility on for `pw`.
async fn compat_account(relay: &TestRelay, name: &str, pw: &str) -> Account {
    let acct = signup(relay, name).await;
    let r = http(
        "PUT",
        &format!("{}/api/v1/clipcascade", relay.url),
        Some(&acct.login.token),
        Some(json!({ "login_hash": sha3_hex(pw) }).to_string()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    acct
}

async fn stomp_connect(relay: &TestRelay, c: &CcClient) -> Ws {
    let url = format!("{}/clipsocket", relay.url.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Cookie", HeaderValue::from_str(&c.cookie_header()).unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

async fn ws_status(relay: &TestRelay, path: &str, cookie: Option<&str>) -> u16 {
    let url = format!("{}{path}", relay.url.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("Cookie", HeaderValue::from_str(c).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

async fn send_stomp(ws: &mut Ws, frame: &str, binary: bool) {
    let m = if binary {
        Message::Binary(Bytes::from(frame.as_bytes().to_vec()))
    } else {
        Message::Text(frame.into())
    };
    ws.send(m).await.unwrap();
}

/// The next STOMP frame (skipping heart-beats): command, headers, body.
async fn next_stomp(ws: &mut Ws) -> (String, Vec<(String, String)>, String, bool) {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a STOMP frame")
            .expect("socket ended")
            .expect("socket error");
        let (text, binary) = match m {
            Message::Text(t) => (t.to_string(), false),
            Message::Binary(b) => (String::from_utf8(b.to_vec()).unwrap(), true),
            Message::Close(c) => panic!("unexpected close {c:?}"),
            _ => continue,
        };
        let text = text.trim_start_matches('\n');
        if text.is_empty() {
            continue;
        }
        let (head, body) = text.split_once("\n\n").unwrap();
        let mut lines = head.lines();
        let cmd = lines.next().unwrap().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        return (cmd, headers, body.trim_end_matches('\0').to_owned(), binary);
    }
}

fn hget<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
    h.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// CONNECT and SUBSCRIBE as the desktop client does.
async fn stomp_session(relay: &TestRelay, c: &CcClient, binary: bool) -> Ws {
    let mut ws = stomp_connect(relay, c).await;
    send_stomp(
        &mut ws,
        "CONNECT\naccept-version:1.0,1.1\nheart-beat:0,20000\n\n\0",
        binary,
    )
    .await;
    let (cmd, h, _, _) = next_stomp(&mut ws).await;
    assert_eq!(cmd, "CONNECTED");
    assert_eq!(hget(&h, "version"), Some("1.1"));
    assert!(hget(&h, "heart-beat").is_some());
    send_stomp(
        &mut ws,
        "SUBSCRIBE\nid:sub-0\ndestination:/user/queue/cliptext\nreceipt:s0\n\n\0",
        binary,
    )
    .await;
    let (cmd, h, _, _) = next_stomp(&mut ws).await;
    assert_eq!(
        (cmd.as_str(), hget(&h, "receipt-id")),
        ("RECEIPT", Some("s0"))
    );
    ws
}

fn send_frame(body: &Value) -> String {
    format!("SEND\ndestination:/app/cliptext\n\n{}\0", body)
}

#[tokio::test]
async fn login_flow_endpoints_and_logout() {
    let relay = TestRelay::start().await;
    let ann = compat_account(&relay, "ann", "secret").await;
    let c = cc_login(&relay, "ann", "secret").await.unwrap();
    // The cookie changed at login (no fixation) and works everywhere.
    assert_eq!(c.get(&relay, "/validate-session").await.body, "OK");
    let r = c.get(&relay, "/csrf-token").await;
    assert_eq!(r.status, 200);
    assert!(r.json()["token"].as_str().unwrap().len() > 20);
    assert_eq!(r.json()["parameterName"], "_csrf");
    assert_eq!(
        c.get(&relay, "/server-mode").await.json(),
        json!({"mode": "P2S"})
    );
    assert_eq!(
        c.get(&relay, "/max-size").await.json(),
        json!({"maxsize": 1048576})
    );
    assert_eq!(
        c.get(&relay, "/max-message-size").await.json(),
        json!({"maxmessagesize": 2})
    );
    assert!(c.get(&relay, "/stun-url").await.json()["url"]
        .as_str()
        .unwrap()
        .starts_with("stun:"));
    assert_eq!(
        c.get(&relay, "/whoami").await.json(),
        json!({"username": "ann", "role": "ADMIN"})
    );
    assert_eq!(raw(&relay, "GET", "/health", &[], "").await.body, "OK");
    assert_eq!(raw(&relay, "GET", "/ping", &[], "").await.body, "pong");
    // Unauthenticated: 401 for JSON and the WebSocket, a redirect for pages.
    for p in [
        "/validate-session",
        "/server-mode",
        "/csrf-token",
        "/whoami",
        "/max-size",
    ] {
        assert_eq!(raw(&relay, "GET", p, &[], "").await.status, 401, "{p}");
    }
    assert_eq!(ws_status(&relay, "/clipsocket", None).await, 401);
    assert_eq!(ws_status(&relay, "/p2psignaling", None).await, 401);
    let home = raw(&relay, "GET", "/", &[], "").await;
    assert_eq!(
        (home.status, home.header("location")),
        (302, Some("/login"))
    );
    // The session shows as a device of the account.
    let devs = http(
        "GET",
        &format!("{}/api/v1/devices", relay.url),
        Some(&ann.login.token),
        None,
    )
    .await;
    assert!(
        devs.body.contains("ClipCascade (scripted-clipcascade/1.0)"),
        "{}",
        devs.body
    );
    // Logout with the CSRF token from /csrf-token.
    let token = c.get(&relay, "/csrf-token").await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = raw(
        &relay,
        "POST",
        "/logout",
        &[
            ("Cookie", &c.cookie_header()),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        &form_encode(&[("_csrf", &token)]),
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(c.get(&relay, "/validate-session").await.status, 401);
}

#[tokio::test]
async fn wrong_password_and_account_without_compat_are_refused() {
    let relay = TestRelay::start().await;
    let ann = compat_account(&relay, "ann", "secret").await;
    signup(&relay, "bob").await;
    for (user, pw) in [("ann", "wrong"), ("bob", "secret"), ("nobody", "secret")] {
        let page = cc_login(&relay, user, pw).await.err().expect("refused");
        assert!(
            page.body.contains("Bad credentials"),
            "{user}: {}",
            page.body
        );
    }
    // Turning compatibility off ends the sessions and refuses logins.
    let c = cc_login(&relay, "ann", "secret").await.unwrap();
    let mut ws = stomp_session(&relay, &c, false).await;
    let r = http(
        "PUT",
        &format!("{}/api/v1/clipcascade", relay.url),
        Some(&ann.login.token),
        Some(json!({ "login_hash": null }).to_string()),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(close_code(&mut ws).await, Some(4001));
    assert_eq!(c.get(&relay, "/validate-session").await.status, 401);
    assert!(cc_login(&relay, "ann", "secret").await.is_err());
}

#[tokio::test]
async fn stomp_relays_to_every_session_of_the_user_sender_included() {
    let relay = TestRelay::start().await;
    let ann = compat_account(&relay, "ann", "pw-a").await;
    compat_account(&relay, "bob", "pw-b").await;
    let a1 = cc_login(&relay, "ann", "pw-a").await.unwrap();
    let a2 = cc_login(&relay, "ann", "pw-a").await.unwrap();
    let b1 = cc_login(&relay, "bob", "pw-b").await.unwrap();
    // Text client (desktop), binary client (Android), another user.
    let mut w1 = stomp_session(&relay, &a1, false).await;
    let mut w2 = stomp_session(&relay, &a2, true).await;
    let mut wb = stomp_session(&relay, &b1, false).await;
    // A clipmesh device of ann in the same room sees no ClipCascade frame.
    let mut native = connect_dev(&relay, &ann.login.token, 0).await;

    let msg = json!({"payload": "{\"nonce\":\"x\"}", "type": "text"});
    send_stomp(&mut w1, &send_frame(&msg), false).await;
    for (ws, binary) in [(&mut w1, false), (&mut w2, true)] {
        let (cmd, h, body, bin) = next_stomp(ws).await;
        assert_eq!(cmd, "MESSAGE");
        assert_eq!(bin, binary, "replies use the client's message kind");
        assert_eq!(hget(&h, "destination"), Some("/user/queue/cliptext"));
        assert_eq!(hget(&h, "subscription"), Some("sub-0"));
        assert!(hget(&h, "message-id").is_some());
        assert_eq!(hget(&h, "content-type"), Some("application/json"));
        assert!(!body.contains('\n'));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["payload"], msg["payload"]);
        assert_eq!(v["type"], "text");
        assert!(v["metadata"].is_null());
    }
    // Binary SEND from the Android-style client, with metadata.
    let img = json!({"payload": "aGVsbG8=", "type": "image", "metadata": {"k": 1}});
    send_stomp(&mut w2, &send_frame(&img), true).await;
    for ws in [&mut w1, &mut w2] {
        let (_, _, body, _) = next_stomp(ws).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["type"].clone(), v["metadata"].clone()),
            (json!("image"), json!({"k": 1}))
        );
    }
    // Bob saw nothing of ann's; his own message reaches only him.
    send_stomp(&mut wb, &send_frame(&json!({"payload": "b"})), false).await;
    let (_, _, body, _) = next_stomp(&mut wb).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["payload"],
        "b"
    );
    // Ping the native device: the next frame it gets is the Pong, so no
    // ClipCascade frame was queued before it.
    send(&mut native.ws, &clipmesh_proto::Frame::Ping { nonce: 9 }).await;
    assert_eq!(
        next_non_presence(&mut native.ws).await,
        clipmesh_proto::Frame::Pong { nonce: 9 }
    );
    // And ann's sessions got nothing of bob's: a fresh message arrives next.
    send_stomp(&mut w1, &send_frame(&json!({"payload": "again"})), false).await;
    let (_, _, body, _) = next_stomp(&mut w2).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["payload"],
        "again"
    );
}

#[tokio::test]
async fn sessions_survive_a_relay_restart() {
    let relay = TestRelay::start().await;
    compat_account(&relay, "ann", "secret").await;
    let c = cc_login(&relay, "ann", "secret").await.unwrap();
    let dir = relay.stop().await;
    let relay = TestRelay::start_in(dir, |_| {}).await;
    assert_eq!(c.get(&relay, "/validate-session").await.body, "OK");
    let mut ws = stomp_session(&relay, &c, false).await;
    send_stomp(&mut ws, &send_frame(&json!({"payload": "after"})), false).await;
    let (cmd, _, body, _) = next_stomp(&mut ws).await;
    assert_eq!(cmd, "MESSAGE");
    assert!(body.contains("after"));
}

#[tokio::test]
async fn oversized_frames_close_the_session_and_the_relay_serves_on() {
    let relay = TestRelay::start_with(|c| c.clipcascade.max_size = 1024).await;
    compat_account(&relay, "ann", "secret").await;
    let c = cc_login(&relay, "ann", "secret").await.unwrap();
    assert_eq!(
        c.get(&relay, "/max-size").await.json(),
        json!({"maxsize": 1024})
    );
    let mut ws = stomp_session(&relay, &c, false).await;
    // 2·L plus the header allowance is the transport limit.
    let big = json!({"payload": "x".repeat(40_000)});
    send_stomp(&mut ws, &send_frame(&big), false).await;
    assert_eq!(close_code(&mut ws).await, Some(1009));
    // Up to 2·L is fine.
    let mut ws = stomp_session(&relay, &c, true).await;
    send_stomp(
        &mut ws,
        &send_frame(&json!({"payload": "y".repeat(2000)})),
        true,
    )
    .await;
    assert_eq!(next_stomp(&mut ws).await.0, "MESSAGE");
}

#[tokio::test]
async fn hostile_input_gets_clear_errors_and_the_relay_serves_on() {
    let relay = TestRelay::start().await;
    compat_account(&relay, "ann", "secret").await;
    let c = cc_login(&relay, "ann", "secret").await.unwrap();
    // Malformed STOMP: ERROR, then close.
    for bad in [
        "GARBAGE\n\n\0",
        "SEND\ndestination:/app/cliptext\n\nnot json\0",
        "SEND\ndestination:/app/cliptext\n\n{\"payload\":\"x\"}",
        "SEND\nbroken-header\n\n\0",
    ] {
        let mut ws = stomp_session(&relay, &c, false).await;
        send_stomp(&mut ws, bad, false).await;
        let (cmd, h, _, _) = next_stomp(&mut ws).await;
        assert_eq!(cmd, "ERROR", "{bad:?}");
        assert!(hget(&h, "message").is_some());
        assert_eq!(close_code(&mut ws).await, Some(4002));
    }
    // SEND before CONNECT.
    let mut ws = stomp_connect(&relay, &c).await;
    send_stomp(&mut ws, &send_frame(&json!({"payload": "x"})), false).await;
    assert_eq!(next_stomp(&mut ws).await.0, "ERROR");
    // Bad CSRF, missing cookie, wrong form.
    let (cookie, _) = login_page(&relay).await;
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let pw = sha3_hex("secret");
    let r = raw(
        &relay,
        "POST",
        "/login",
        &[form[0], ("Cookie", &format!("JSESSIONID={cookie}"))],
        &form_encode(&[("username", "ann"), ("password", &pw), ("_csrf", "forged")]),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = raw(
        &relay,
        "POST",
        "/login",
        &form,
        &form_encode(&[("username", "ann"), ("password", &pw), ("_csrf", "x")]),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = raw(&relay, "POST", "/login", &form, "%%%&&&=").await;
    assert_eq!(r.status, 400);
    // Bad cookies: garbage, many, huge.
    let long = format!("JSESSIONID={}", "A".repeat(10_000));
    for cookie in [
        "JSESSIONID=../../../etc/passwd",
        "JSESSIONID=",
        "JSESSIONID",
        "=;=;=;;;",
        long.as_str(),
    ] {
        let r = raw(
            &relay,
            "GET",
            "/validate-session",
            &[("Cookie", cookie)],
            "",
        )
        .await;
        assert_eq!(r.status, 401, "{cookie:.40}");
    }
    // 10k-byte header lines.
    let big = "v".repeat(10_000);
    let r = raw(&relay, "GET", "/login", &[("X-Big", &big)], "").await;
    assert!(
        r.status == 200 || r.status == 431 || r.status == 400,
        "{}",
        r.status
    );
    // A 10k-byte STOMP header.
    let mut ws = stomp_session(&relay, &c, false).await;
    send_stomp(
        &mut ws,
        &format!("SEND\ndestination:/app/cliptext\nx:{big}\n\n{{\"payload\":\"x\"}}\0"),
        false,
    )
    .await;
    assert_eq!(next_stomp(&mut ws).await.0, "ERROR");
    // Still serving: a full login and relay work.
    let c2 = cc_login(&relay, "ann", "secret").await.unwrap();
    let mut ws = stomp_session(&relay, &c2, false).await;
    send_stomp(&mut ws, &send_frame(&json!({"payload": "ok"})), false).await;
    assert_eq!(next_stomp(&mut ws).await.0, "MESSAGE");
}

#[tokio::test]
async fn login_failures_are_throttled() {
    let relay = TestRelay::start_with(|c| {
        c.auth.throttle_free_failures = 2;
        c.auth.throttle_base_s = 60;
    })
    .await;
    compat_account(&relay, "ann", "secret").await;
    for _ in 0..3 {
        assert!(cc_login(&relay, "ann", "wrong").await.is_err());
    }
    let (cookie, csrf) = login_page(&relay).await;
    let r = raw(
        &relay,
        "POST",
        "/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &format!("JSESSIONID={cookie}")),
        ],
        &form_encode(&[
            ("username", "ann"),
            ("password", &sha3_hex("secret")),
            ("_csrf", &csrf),
        ]),
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(r.body.contains("Bad credentials"));
}

/// Opens `/p2psignaling` and reads the assigned id.
async fn signalling(relay: &TestRelay, c: &CcClient) -> (Ws, String) {
    let url = format!("{}/p2psignaling", relay.url.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Cookie", HeaderValue::from_str(&c.cookie_header()).unwrap());
    let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;
    let v = next_json(&mut ws).await;
    assert_eq!(v["type"], "ASSIGNED_ID");
    let id = v["peerId"].as_str().unwrap().to_owned();
    (ws, id)
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
            .expect("ended")
            .expect("error");
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Waits for a PEER_LIST with exactly `n` peers.
async fn peer_list(ws: &mut Ws, n: usize) -> Vec<String> {
    loop {
        let v = next_json(ws).await;
        if v["type"] == "PEER_LIST" && v["peers"].as_array().unwrap().len() == n {
            return serde_json::from_value(v["peers"].clone()).unwrap();
        }
    }
}

#[tokio::test]
async fn signalling_stays_within_one_user() {
    let relay = TestRelay::start().await;
    compat_account(&relay, "ann", "pa").await;
    compat_account(&relay, "bob", "pb").await;
    let (a, b) = (
        cc_login(&relay, "ann", "pa").await.unwrap(),
        cc_login(&relay, "bob", "pb").await.unwrap(),
    );
    let (mut a1, id1) = signalling(&relay, &a).await;
    assert_eq!(peer_list(&mut a1, 1).await, vec![id1.clone()]);
    let (mut a2, id2) = signalling(&relay, &a).await;
    let mut both = peer_list(&mut a1, 2).await;
    both.sort();
    let mut want = vec![id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(both, want);
    peer_list(&mut a2, 2).await;
    let (mut b1, idb) = signalling(&relay, &b).await;
    assert_eq!(peer_list(&mut b1, 1).await, vec![idb.clone()]);
    for kind in ["OFFER", "ANSWER", "ICE_CANDIDATE"] {
        let text = json!({"type": kind, "fromPeerId": id1, "toPeerId": id2, "offer": {"type": "offer", "sdp": "v=0"}}).to_string();
        a1.send(Message::Text(text.clone().into())).await.unwrap();
        let got = loop {
            match tokio::time::timeout(WAIT, a2.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                Message::Text(t) if !t.contains("PEER_LIST") => break t.to_string(),
                _ => {}
            }
        };
        assert_eq!(got, text, "forwarded unchanged");
    }
    // Addressed to bob's peer id from ann: dropped. Unknown types: ignored.
    let cross = json!({"type": "OFFER", "fromPeerId": id1, "toPeerId": idb}).to_string();
    a1.send(Message::Text(cross.into())).await.unwrap();
    a1.send(Message::Text(
        json!({"type": "HELLO", "toPeerId": id2}).to_string().into(),
    ))
    .await
    .unwrap();
    drop(a2);
    // Ann's list shrinks when a2 leaves; bob's does not change.
    assert_eq!(peer_list(&mut a1, 1).await, vec![id1.clone()]);
    let (_b2, idb2) = signalling(&relay, &b).await;
    let v = next_json(&mut b1).await;
    assert_eq!(
        v["type"], "PEER_LIST",
        "bob's next message is his own list, not ann's offer: {v}"
    );
    assert_eq!(v["peers"].as_array().unwrap().len(), 2);
    assert!(v.to_string().contains(&idb2));
}

#[tokio::test]
async fn per_account_server_mode() {
    let relay = TestRelay::start().await;
    let ann = compat_account(&relay, "ann", "secret").await;
    let r = http(
        "PUT",
        &format!("{}/api/v1/clipcascade", relay.url),
        Some(&ann.login.token),
        Some(json!({ "login_hash": sha3_hex("secret"), "mode": "P2P" }).to_string()),
    )
    .await;
    assert_eq!(r.status, 204);
    let c = cc_login(&relay, "ann", "secret").await.unwrap();
    assert_eq!(
        c.get(&relay, "/server-mode").await.json(),
        json!({"mode": "P2P"})
    );
    let bad = http(
        "PUT",
        &format!("{}/api/v1/clipcascade", relay.url),
        Some(&ann.login.token),
        Some(json!({ "login_hash": "abc" }).to_string()),
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn disabled_in_config_serves_nothing() {
    let relay = TestRelay::start_with(|c| c.clipcascade.enabled = false).await;
    assert_eq!(raw(&relay, "GET", "/login", &[], "").await.status, 404);
    assert_eq!(ws_status(&relay, "/clipsocket", None).await, 404);
}
