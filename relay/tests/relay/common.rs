//! Helpers: start an in-process relay on 127.0.0.1:0, a blocking HTTP
//! client (ureq on `spawn_blocking`) and a WebSocket device client.

use clipmesh_proto::api::LoginResponse;
use clipmesh_proto::{DeviceId, Frame, UserId};
use clipmesh_relay::clock::Clock;
use clipmesh_relay::{Config, Relay, RelayHandle, SignupPolicy};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Bound on every wait for an event.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config for tests: loopback, fast hashing, open signup.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.to_path_buf()),
        signup: SignupPolicy::Open,
        ..Config::default()
    };
    c.auth.hash_m_kib = 64;
    c.auth.hash_t = 1;
    c.auth.hash_p = 1;
    c.auth.max_concurrent_hashes = 4;
    // Tests sign many accounts up from 127.0.0.1; the abuse tests set it.
    c.auth.signup_free_per_ip = 10_000;
    c
}

/// A running relay with its data directory.
pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestRelay {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, f).await
    }

    pub async fn start_in(dir: tempfile::TempDir, f: impl FnOnce(&mut Config)) -> Self {
        let mut c = test_config(dir.path());
        f(&mut c);
        let handle = Relay::bind(c).await.unwrap();
        let url = handle.url();
        Self {
            handle: Some(handle),
            url,
            dir,
        }
    }

    /// A relay whose handlers read `clock` (a [`Clock::manual`] in tests of
    /// time limits).
    pub async fn start_clock(clock: Clock, f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut c = test_config(dir.path());
        f(&mut c);
        let handle = Relay::bind_with_clock(c, clock).await.unwrap();
        let url = handle.url();
        Self {
            handle: Some(handle),
            url,
            dir,
        }
    }

    pub fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().unwrap()
    }

    /// Stops the relay and returns its data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.handle.take().unwrap().stop().await;
        self.dir
    }

    pub fn ws_url(&self) -> String {
        format!("{}/api/v1/ws", self.url.replacen("http", "ws", 1))
    }
}

/// An HTTP answer.
pub struct Resp {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP request with an optional bearer token and raw body.
pub async fn http(method: &str, url: &str, token: Option<&str>, body: Option<String>) -> Resp {
    let (method, url) = (method.to_owned(), url.to_owned());
    let token = token.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = match (method.as_str(), body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", _) => {
                let mut r = agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (m, body) => {
                let r = if m == "PUT" {
                    agent.put(&url)
                } else {
                    agent.post(&url)
                };
                let mut r = r.content_type("application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                match body {
                    Some(b) => r.send(b),
                    None => r.send_empty(),
                }
            }
        }
        .unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Resp {
            status,
            retry_after,
            body,
        }
    })
    .await
    .unwrap()
}

pub async fn post(url: &str, token: Option<&str>, body: Value) -> Resp {
    http("POST", url, token, Some(body.to_string())).await
}

/// Account material a client would derive; here just random bytes.
pub struct Account {
    pub name: String,
    pub auth_key: String,
    pub login: LoginResponse,
}

pub fn rand_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

pub fn signup_body(name: &str, auth_key: &str, device: &str) -> Value {
    json!({
        "username": name,
        "salt": rand_hex(16),
        "kdf": {"alg": "argon2id", "version": 19, "m_kib": 65536, "t": 3, "p": 4},
        "auth_key": auth_key,
        "wrapped_data_key": rand_hex(72),
        "device_name": device,
    })
}

/// The relay's pending setup token (needed by its first account).
pub fn setup_token(relay: &TestRelay) -> Option<String> {
    std::fs::read_to_string(
        relay
            .dir
            .path()
            .join(clipmesh_relay::setup::SETUP_TOKEN_FILE),
    )
    .ok()
    .map(|s| s.trim().to_owned())
}

/// Signs `name` up (with the setup token while the relay has none).
pub async fn signup(relay: &TestRelay, name: &str) -> Account {
    let auth_key = rand_hex(32);
    let mut body = signup_body(name, &auth_key, "dev1");
    if let Some(t) = setup_token(relay) {
        body["setup_token"] = json!(t);
    }
    let r = post(&format!("{}/api/v1/signup", relay.url), None, body).await;
    assert_eq!(r.status, 200, "signup: {}", r.body);
    Account {
        name: name.to_owned(),
        auth_key,
        login: serde_json::from_str(&r.body).unwrap(),
    }
}

pub async fn login(relay: &TestRelay, acct: &Account, device: &str) -> Resp {
    post(
        &format!("{}/api/v1/login", relay.url),
        None,
        json!({"username": acct.name, "auth_key": acct.auth_key, "device_name": device}),
    )
    .await
}

/// A new device session of `acct`.
pub async fn new_device(relay: &TestRelay, acct: &Account, device: &str) -> LoginResponse {
    let r = login(relay, acct, device).await;
    assert_eq!(r.status, 200, "login: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket with a bearer token; `Err(status)` if refused.
pub async fn ws_connect(relay: &TestRelay, token: Option<&str>) -> Result<Ws, u16> {
    let mut req = relay.ws_url().into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

/// A connected device that has done its `Hello`.
pub struct Dev {
    pub ws: Ws,
    pub user: UserId,
    pub device: DeviceId,
    pub welcome_online: usize,
}

pub async fn send(ws: &mut Ws, f: &Frame) {
    ws.send(Message::Binary(Bytes::from(f.encode())))
        .await
        .unwrap();
}

/// The next protocol frame (skipping WebSocket pings). Panics on close or
/// timeout.
pub async fn next_frame(ws: &mut Ws) -> Frame {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket ended")
            .expect("socket error");
        match m {
            Message::Binary(b) => return Frame::decode(&b).unwrap(),
            Message::Close(c) => panic!("unexpected close {c:?}"),
            _ => {}
        }
    }
}

/// The next frame that is not `Presence`.
pub async fn next_non_presence(ws: &mut Ws) -> Frame {
    loop {
        let f = next_frame(ws).await;
        if !matches!(f, Frame::Presence { .. }) {
            return f;
        }
    }
}

/// Waits for a `Presence` listing exactly `n` devices.
pub async fn presence_with(ws: &mut Ws, n: usize) -> Vec<DeviceId> {
    loop {
        if let Frame::Presence { online } = next_frame(ws).await {
            if online.len() == n {
                return online.into_iter().map(|d| d.id).collect();
            }
        }
    }
}

/// Reads until the socket closes; returns the close code (frames before it
/// are discarded).
pub async fn close_code(ws: &mut Ws) -> Option<u16> {
    let fut = async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(c)) => return c.map(|c| u16::from(c.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("timed out waiting for close")
}

pub async fn connect_dev(relay: &TestRelay, token: &str, last_seen: u64) -> Dev {
    let mut ws = ws_connect(relay, Some(token)).await.unwrap();
    send(&mut ws, &Frame::Hello { last_seen }).await;
    match next_frame(&mut ws).await {
        Frame::Welcome {
            user,
            device,
            online,
            ..
        } => Dev {
            ws,
            user,
            device,
            welcome_online: online.len(),
        },
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Polls `cond` every 20 ms until true, failing after [`WAIT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a metric's value from `/metrics`.
pub async fn metric(relay: &TestRelay, name: &str) -> f64 {
    let r = http("GET", &format!("{}/metrics", relay.url), None, None).await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .unwrap()
}
