//! The relay protocol conformance suite, written once and parameterized by
//! a relay's base URL, so the same checks run against the native relay
//! (`tests/tests/conformance.rs`) and the Cloudflare Worker under a local
//! workerd (`clipmesh-conformance --url`, run by `scripts/test.d/50-workers.sh`).
//!
//! It covers the account API (signup, prelogin, login, devices, revoke,
//! logout, bad input), and on WebSockets: join, fan-out within one user
//! only, `Ack` sequence numbers, the newest clip on join, signalling within
//! a user, pings (frames and WebSocket protocol pings), text frames
//! refused, and revoked sockets closed with 4001; and blobs: declare, a
//! download that follows the upload, offsets, ranges, other users refused,
//! delete; and protocol v2 accounts (OPAQUE): signup, login (a replayed or
//! forged KE3 refused, unknown names answered alike), the v1 → v2 upgrade
//! after which v1 login stops, password change ending other sessions, and
//! device keys; session renewal; the v1 password change; the admin
//! endpoints (list, disable, delete); and v2 key epochs: bad rotations
//! refused and nothing stored, a rotation with a revoke accepted, each
//! remaining device's wrap from `epoch-wrap`, the account's sockets closed
//! with 1012 (the revoked one's with 4001), and the room's stored clip of
//! the old epoch not replayed after it. [`lifetimes`] and
//! [`blob_expiry`] run against relays configured with short lifetimes,
//! [`login_throttle`] against relays with a small failure allowance, and
//! the Worker-only [`cron_sweep`] against a fresh Worker and
//! [`rate_limit_binding`] against a Worker with the rate-limiting binding,
//! [`turnstile`] against one with Turnstile on.
//! Behaviour that must differ between hosts is listed in `docs/protocol.md`.
//!
//! Every wait is bounded by a socket read timeout; nothing sleeps.

use anyhow::{anyhow, bail, ensure, Context, Result};
use clipmesh_proto::{CloseCode, DeviceId, ErrorCode, Frame, KdfParams, SignalKind};
use rand::RngCore;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long one expected frame may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn hex_rand(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// An HTTP answer: status and JSON body (or `Null`).
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Parsed JSON body, `Null` when empty or not JSON.
    pub body: Value,
}

/// A relay under test.
pub struct Target {
    base: String,
    agent: ureq::Agent,
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct RawAnswer {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// A header as a number.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.headers.get(name).and_then(|v| v.parse().ok())
    }

    /// The JSON error code of the body, if any.
    pub fn error(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// A logged-in device.
#[derive(Clone, Debug)]
pub struct Login {
    /// Account id.
    pub user: u64,
    /// Device id.
    pub device: u64,
    /// Token.
    pub token: String,
}

impl Target {
    /// A relay at `base` (`http://127.0.0.1:PORT`; loopback only).
    pub fn new(base: &str) -> Result<Self> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("base URL must be http://127.0.0.1:PORT"))?;
        ensure!(
            host.starts_with("127.0.0.1:") || host.starts_with("localhost:"),
            "conformance runs against loopback relays only, not {base}"
        );
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        })
    }

    fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer> {
        let mut r = r.context("request")?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// `GET path` with an optional bearer token.
    pub fn get(&self, path: &str, token: Option<&str>) -> Result<Answer> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::answer(req.call())
    }

    /// `GET path`, the body as text.
    pub fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let mut r = self.agent.get(format!("{}{path}", self.base)).call()?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }

    /// `POST path` with a raw body.
    pub fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> Result<Answer> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        Self::answer(req.send(body))
    }

    /// `POST path` with JSON.
    pub fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Answer> {
        self.post_raw(path, &body.to_string(), token)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str, token: &str) -> Result<Answer> {
        Self::answer(
            self.agent
                .delete(format!("{}{path}", self.base))
                .header("Authorization", format!("Bearer {token}"))
                .call(),
        )
    }

    /// Creates a blob of one small sealed chunk (random bytes) and uploads
    /// it whole with `token`; answers its path and its bytes.
    pub fn upload_small_blob(&self, token: &str) -> Result<(String, Vec<u8>)> {
        let len = clipmesh_proto::BlobLayout::new(100)?.sealed_len();
        let mut data = vec![0u8; len as usize];
        rand::rngs::OsRng.fill_bytes(&mut data);
        let path = format!("/api/v1/blobs/{}", hex_rand(16));
        let tok = Some(token);
        let r = self.raw(
            "POST",
            &path,
            tok,
            &[("Upload-Length", len.to_string())],
            b"",
        )?;
        ensure!(r.status == 201, "create: {}", r.status);
        let r = self.raw(
            "PATCH",
            &path,
            tok,
            &[("Upload-Offset", "0".to_owned())],
            &data,
        )?;
        ensure!(r.status == 204, "upload: {}", r.status);
        Ok((path, data))
    }

    /// Any request: method, path, bearer token, extra headers and a raw
    /// body; answers status, headers (lower-case names) and body bytes.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<RawAnswer> {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let mut r = self.agent.run(b.body(body.to_vec())?).context("request")?;
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            r.body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .context("reading body")?
        };
        Ok(RawAnswer {
            status,
            headers,
            body,
        })
    }

    /// Signs up `user` with a random auth key; returns the login and key.
    pub fn signup(&self, user: &str, device: &str) -> Result<(Login, String)> {
        let key = hex_rand(32);
        let a = self.post(
            "/api/v1/signup",
            &json!({
                "username": user, "salt": hex_rand(16), "kdf": KdfParams::default(),
                "auth_key": key, "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
                "device_name": device,
                // A fresh native relay's first account needs its setup token
                // (procs::Relay pre-seeds this one); later signups ignore it.
                "setup_token": crate::procs::SETUP_TOKEN,
            }),
            None,
        )?;
        ensure!(a.status == 200, "signup: {} {}", a.status, a.body);
        Ok((login_of(&a.body)?, key))
    }

    /// Logs a new device in.
    pub fn login(&self, user: &str, key: &str, device: &str) -> Result<Answer> {
        self.post(
            "/api/v1/login",
            &json!({"username": user, "auth_key": key, "device_name": device}),
            None,
        )
    }

    /// Opens `/api/v1/ws` with a bearer token (no `Hello` sent yet).
    pub fn ws(&self, token: &str) -> Result<Ws> {
        let url = format!("{}/api/v1/ws", self.base.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse()?);
        let (mut ws, _) = tungstenite::connect(req).context("websocket connect")?;
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(READ_TIMEOUT))?;
        }
        Ok(Ws(ws))
    }

    /// Opens a socket and joins with `Hello{last_seen}`; returns it and the
    /// `Welcome`.
    pub fn join(&self, token: &str, last_seen: u64) -> Result<(Ws, Frame)> {
        let mut ws = self.ws(token)?;
        ws.send(&Frame::Hello { last_seen })?;
        let w = ws.recv()?;
        ensure!(
            matches!(w, Frame::Welcome { .. }),
            "expected Welcome, got {w:?}"
        );
        Ok((ws, w))
    }
}

fn login_of(v: &Value) -> Result<Login> {
    Ok(Login {
        user: v["user_id"].as_u64().context("user_id")?,
        device: v["device_id"].as_u64().context("device_id")?,
        token: v["token"].as_str().context("token")?.to_owned(),
    })
}

/// A client socket speaking clipmesh frames.
pub struct Ws(WebSocket<MaybeTlsStream<TcpStream>>);

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code.
    Code(u16),
    /// The connection dropped without one.
    Dropped,
}

impl Ws {
    /// Sends one frame.
    pub fn send(&mut self, f: &Frame) -> Result<()> {
        self.0.send(Message::Binary(f.encode().into()))?;
        Ok(())
    }

    /// Sends a text message.
    pub fn send_text(&mut self, s: &str) -> Result<()> {
        self.0.send(Message::Text(s.into()))?;
        Ok(())
    }

    /// The next frame, skipping `Presence` (whose timing differs by
    /// arrival order), within the read timeout.
    pub fn recv(&mut self) -> Result<Frame> {
        loop {
            match self.0.read().context("read frame")? {
                Message::Binary(b) => {
                    let f = Frame::decode(&b).map_err(|e| anyhow!("bad frame from relay: {e}"))?;
                    if !matches!(f, Frame::Presence { .. }) {
                        return Ok(f);
                    }
                }
                Message::Close(c) => bail!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Sends a WebSocket protocol ping and waits for its pong (frames
    /// that arrive meanwhile are dropped).
    pub fn protocol_ping(&mut self) -> Result<()> {
        self.0.send(Message::Ping(b"keepalive".to_vec().into()))?;
        loop {
            match self.0.read().context("read pong")? {
                Message::Pong(_) => return Ok(()),
                Message::Close(c) => bail!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Reads until the socket closes; returns how.
    pub fn closed(&mut self) -> Result<Closed> {
        loop {
            match self.0.read() {
                Ok(Message::Close(Some(c))) => return Ok(Closed::Code(u16::from(c.code))),
                Ok(Message::Close(None)) => {
                    return Ok(Closed::Code(u16::from(WsCloseCode::Status)))
                }
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Closed::Dropped)
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    bail!("socket still open after {READ_TIMEOUT:?}")
                }
                Err(_) => return Ok(Closed::Dropped),
            }
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &hex_rand(6))
}

/// Runs every check against `base`; the first failure is returned with the
/// name of its check.
pub fn run(base: &str) -> Result<()> {
    let t = Target::new(base)?;
    health(&t).context("health")?;
    setup_token(&t).context("setup token")?;
    let admin = fake_kdf(&t).context("fake kdf")?;
    let a = accounts(&t).context("accounts")?;
    password_v1(&t).context("v1 password change")?;
    admin_api(&t, &admin, &a).context("admin endpoints")?;
    rooms(&t, &a).context("rooms")?;
    blobs(&t, &a).context("blobs")?;
    revoke_and_logout(&t, &a).context("revoke and logout")?;
    renew(&t).context("session renew")?;
    accounts_v2(&t).context("accounts v2")?;
    epochs(&t).context("key epochs")?;
    Ok(())
}

fn health(t: &Target) -> Result<()> {
    let (s, body) = t.get_text("/healthz")?;
    ensure!(s == 200 && body == "ok\n", "healthz: {s} {body:?}");
    let (s, body) = t.get_text("/readyz")?;
    ensure!(s == 200 && body == "ready\n", "readyz: {s} {body:?}");
    let a = t.get("/api/v1/no-such-route", None)?;
    ensure!(
        a.status == 404 && a.body["error"] == "not_found",
        "404: {a:?}"
    );
    Ok(())
}

/// On a fresh relay set up with a setup token ([`crate::procs::SETUP_TOKEN`]:
/// natively from its data directory, on the Worker the `SETUP_TOKEN`
/// secret), the first signup needs it: without it, or with another one,
/// v1 and v2 signups answer 403 `setup_token_required` and create nothing.
fn setup_token(t: &Target) -> Result<()> {
    for token in [None, Some("not-the-setup-token")] {
        let a = t.post(
            "/api/v1/signup",
            &json!({
                "username": unique("first"), "salt": hex_rand(16), "kdf": KdfParams::default(),
                "auth_key": hex_rand(32),
                "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
                "device_name": "f1", "setup_token": token,
            }),
            None,
        )?;
        ensure!(
            a.status == 403 && a.body["error"] == "setup_token_required",
            "a first signup with setup token {token:?}: {a:?}"
        );
    }
    let name = unique("first2");
    let (record, ek) = v2_register(t, &name, b"pw", None)?;
    let k = clipmesh_proto::EpochKey::generate(&mut rand::rngs::OsRng);
    let a = t.post(
        "/api/v2/signup/finish",
        &json!({"username": name, "record": record, "kdf": KdfParams::default(), "epoch": 1,
                "export_wrap": ek.kek().wrap(clipmesh_proto::Epoch(1), &k).to_hex(),
                "device_name": "f2"}),
        None,
    )?;
    ensure!(
        a.status == 403 && a.body["error"] == "setup_token_required",
        "a first v2 signup without the setup token: {a:?}"
    );
    Ok(())
}

/// Pre-login for unknown names shows KDF parameters drawn from the sets
/// accounts use, so an account with unusual parameters does not stand out.
/// Runs first on a fresh relay: both hosts cache their census of parameter
/// sets for a minute from the first pre-login on.
/// Returns the first account's login, the relay's admin.
fn fake_kdf(t: &Target) -> Result<Login> {
    let odd = KdfParams {
        t: KdfParams::default().t + 1,
        ..KdfParams::default()
    };
    let a = t.post(
        "/api/v1/signup",
        &json!({
            "username": unique("odd"), "salt": hex_rand(16), "kdf": odd,
            "auth_key": hex_rand(32), "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
            "device_name": "o1", "setup_token": crate::procs::SETUP_TOKEN,
        }),
        None,
    )?;
    ensure!(a.status == 200, "signup with odd kdf: {a:?}");
    ensure!(
        a.body["is_admin"] == true,
        "a fresh relay's first account is its admin: {a:?}"
    );
    let admin = login_of(&a.body)?;
    let even = t.post(
        "/api/v1/signup",
        &json!({
            "username": unique("even"), "salt": hex_rand(16), "kdf": KdfParams::default(),
            "auth_key": hex_rand(32), "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
            "device_name": "e1",
        }),
        None,
    )?;
    ensure!(
        even.status == 200 && even.body["is_admin"] == false,
        "a later account is no admin: {even:?}"
    );
    let mut odd_seen = 0;
    for _ in 0..64 {
        let p = t.post(
            "/api/v1/prelogin",
            &json!({"username": unique("ghost")}),
            None,
        )?;
        let kdf: KdfParams = serde_json::from_value(p.body["kdf"].clone())
            .with_context(|| format!("prelogin kdf: {p:?}"))?;
        ensure!(
            kdf == odd || kdf == KdfParams::default(),
            "fake kdf {kdf:?} is no account's"
        );
        odd_seen += usize::from(kdf == odd);
    }
    // One of two accounts has the odd set: 64 names all missing it has
    // odds of 2^-64 on a fresh relay.
    ensure!(odd_seen > 0, "no unknown name drew the odd parameter set");
    Ok(admin)
}

/// A v1 password change body: `current` proves the password; the new
/// salt, key and wrapped data key are random.
fn password_body(current: &str, end_others: bool) -> (Value, String, String) {
    let (salt, key) = (hex_rand(16), hex_rand(32));
    let body = json!({
        "current_auth_key": current, "new_salt": salt, "new_kdf": KdfParams::default(),
        "new_auth_key": key, "new_wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
        "end_other_sessions": end_others,
    });
    (body, salt, key)
}

/// `POST /api/v1/password`: a wrong current key is 401 and changes
/// nothing, bad input 400; a change with `end_other_sessions` ends the
/// other device's session (its socket closes with 4001), keeps the
/// caller's, and from then on only the new key logs in, with the new salt.
fn password_v1(t: &Target) -> Result<()> {
    let name = unique("pw");
    let (p1, key) = t.signup(&name, "p1")?;
    let p2 = login_of(&t.login(&name, &key, "p2")?.body)?;
    let (mut p2_ws, _) = t.join(&p2.token, 0)?;
    let (wrong, _, _) = password_body(&hex_rand(32), true);
    let r = t.post("/api/v1/password", &wrong, Some(&p1.token))?;
    ensure!(
        r.status == 401 && r.body["error"] == "invalid_credentials",
        "wrong current key: {r:?}"
    );
    let (mut bad, _, _) = password_body(&key, true);
    bad["new_salt"] = json!("zz");
    let r = t.post("/api/v1/password", &bad, Some(&p1.token))?;
    ensure!(
        r.status == 400 && r.body["error"] == "bad_request",
        "bad salt: {r:?}"
    );
    let (body, _, _) = password_body(&key, true);
    let r = t.post("/api/v1/password", &body, None)?;
    ensure!(r.status == 401, "no token: {r:?}");
    let l = t.login(&name, &key, "p3")?;
    ensure!(
        l.status == 200,
        "the old key still works after refusals: {l:?}"
    );
    let p3 = login_of(&l.body)?;
    let (body, salt, new_key) = password_body(&key, true);
    let r = t.post("/api/v1/password", &body, Some(&p1.token))?;
    ensure!(r.status == 204, "password change: {r:?}");
    let closed = p2_ws.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::Unauthorized.as_u16()),
        "another device's socket after end_other_sessions: {closed:?}"
    );
    for other in [&p2, &p3] {
        let d = t.get("/api/v1/devices", Some(&other.token))?;
        ensure!(d.status == 401, "another device's session ended: {d:?}");
    }
    let d = t.get("/api/v1/devices", Some(&p1.token))?;
    ensure!(
        d.status == 200 && d.body["devices"].as_array().map(Vec::len) == Some(1),
        "the caller's session stays, alone: {d:?}"
    );
    let old = t.login(&name, &key, "p4")?;
    ensure!(
        old.status == 401 && old.body["error"] == "invalid_credentials",
        "the old key after the change: {old:?}"
    );
    let new = t.login(&name, &new_key, "p4")?;
    ensure!(
        new.status == 200 && new.body["salt"] == salt.as_str(),
        "the new key logs in, with the new salt: {new:?}"
    );
    let p = t.post("/api/v1/prelogin", &json!({"username": name}), None)?;
    ensure!(p.body["salt"] == salt.as_str(), "prelogin's salt: {p:?}");
    Ok(())
}

/// The admin endpoints: others get 403; the list shows accounts with
/// their device counts; an admin cannot disable or delete itself (400);
/// disabling closes the user's sockets (4001), its tokens answer 401
/// `account_disabled` and its login 403; deleting removes the account
/// (its token 401, its name unknown); unknown ids are 404.
fn admin_api(t: &Target, admin: &Login, acc: &Accounts) -> Result<()> {
    let r = t.get("/api/v1/admin/users", Some(&acc.a1.token))?;
    ensure!(
        r.status == 403 && r.body["error"] == "forbidden",
        "a user's list: {r:?}"
    );
    let r = t.get("/api/v1/admin/users", None)?;
    ensure!(r.status == 401, "no token: {r:?}");
    let r = t.get("/api/v1/admin/users", Some(&admin.token))?;
    ensure!(r.status == 200, "the admin's list: {r:?}");
    let users = r.body["users"].as_array().context("users")?;
    let a = users
        .iter()
        .find(|u| u["id"].as_u64() == Some(acc.a1.user))
        .with_context(|| format!("A in the list: {r:?}"))?;
    ensure!(
        a["username"] == acc.a_name.as_str()
            && a["is_admin"] == false
            && a["disabled"] == false
            && a["devices"].as_u64().is_some_and(|n| n >= 1)
            && a["created_at"].as_i64().is_some_and(|t| t > 0),
        "A's record: {a}"
    );
    ensure!(
        users
            .iter()
            .any(|u| u["id"].as_u64() == Some(admin.user) && u["is_admin"] == true),
        "the admin in the list: {r:?}"
    );
    let me = format!("/api/v1/admin/users/{}", admin.user);
    let r = t.post(&format!("{me}/disable"), &json!({}), Some(&admin.token))?;
    ensure!(r.status == 400, "disabling itself: {r:?}");
    let r = t.delete(&me, &admin.token)?;
    ensure!(r.status == 400, "deleting itself: {r:?}");
    let r = t.post(
        "/api/v1/admin/users/999999999/disable",
        &json!({}),
        Some(&admin.token),
    )?;
    ensure!(
        r.status == 404 && r.body["error"] == "not_found",
        "disabling no one: {r:?}"
    );
    let r = t.delete("/api/v1/admin/users/999999999", &admin.token)?;
    ensure!(r.status == 404, "deleting no one: {r:?}");

    // Disable.
    let name = unique("dis");
    let (v, key) = t.signup(&name, "v1")?;
    let (mut v_ws, _) = t.join(&v.token, 0)?;
    let path = format!("/api/v1/admin/users/{}", v.user);
    let r = t.post(&format!("{path}/disable"), &json!({}), Some(&acc.a1.token))?;
    ensure!(r.status == 403, "a user disabling another: {r:?}");
    let r = t.post(&format!("{path}/disable"), &json!({}), Some(&admin.token))?;
    ensure!(r.status == 204, "disable: {r:?}");
    let closed = v_ws.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::Unauthorized.as_u16()),
        "a disabled user's socket: {closed:?}"
    );
    let d = t.get("/api/v1/devices", Some(&v.token))?;
    ensure!(
        d.status == 401 && d.body["error"] == "account_disabled",
        "a disabled user's token: {d:?}"
    );
    let l = t.login(&name, &key, "v2")?;
    ensure!(
        l.status == 403 && l.body["error"] == "account_disabled",
        "a disabled user's login: {l:?}"
    );
    let r = t.get("/api/v1/admin/users", Some(&admin.token))?;
    ensure!(
        r.body["users"]
            .as_array()
            .context("users")?
            .iter()
            .any(|u| u["id"].as_u64() == Some(v.user) && u["disabled"] == true),
        "listed as disabled: {r:?}"
    );

    // Delete.
    let name = unique("del");
    let (w, key) = t.signup(&name, "w1")?;
    let (mut w_ws, _) = t.join(&w.token, 0)?;
    let path = format!("/api/v1/admin/users/{}", w.user);
    let r = t.delete(&path, &admin.token)?;
    ensure!(r.status == 204, "delete: {r:?}");
    let closed = w_ws.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::Unauthorized.as_u16()),
        "a deleted user's socket: {closed:?}"
    );
    let d = t.get("/api/v1/devices", Some(&w.token))?;
    ensure!(d.status == 401, "a deleted user's token: {d:?}");
    let l = t.login(&name, &key, "w2")?;
    ensure!(
        l.status == 401 && l.body["error"] == "invalid_credentials",
        "a deleted user's login: {l:?}"
    );
    let r = t.delete(&path, &admin.token)?;
    ensure!(r.status == 404, "deleting again: {r:?}");
    // The name is free again.
    t.signup(&name, "w3")
        .context("the deleted name signs up again")?;
    Ok(())
}

/// The accounts the room checks use (two users, made by `accounts()`).
pub struct Accounts {
    /// User A's name and key.
    pub a_name: String,
    /// User A's auth key.
    pub a_key: String,
    /// A's first device.
    pub a1: Login,
    /// A's second device.
    pub a2: Login,
    /// User B's device.
    pub b1: Login,
}

fn accounts(t: &Target) -> Result<Accounts> {
    let a_name = unique("ann");
    let (a1, a_key) = t.signup(&a_name, "a1")?;
    // Taken.
    let again = t.post(
        "/api/v1/signup",
        &json!({
            "username": a_name, "salt": hex_rand(16), "kdf": KdfParams::default(),
            "auth_key": hex_rand(32), "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
            "device_name": "x",
        }),
        None,
    )?;
    ensure!(
        again.status == 409 && again.body["error"] == "username_taken",
        "taken: {again:?}"
    );
    // Prelogin: the real salt for a known user, a stable fake for others.
    let p = t.post("/api/v1/prelogin", &json!({"username": a_name}), None)?;
    ensure!(
        p.status == 200 && p.body["salt"].as_str().map(str::len) == Some(32),
        "prelogin: {p:?}"
    );
    let ghost = unique("ghost");
    let f1 = t.post("/api/v1/prelogin", &json!({"username": ghost}), None)?;
    let f2 = t.post("/api/v1/prelogin", &json!({"username": ghost}), None)?;
    ensure!(
        f1.status == 200 && f1.body == f2.body,
        "fake prelogin not stable: {f1:?} {f2:?}"
    );
    ensure!(
        f1.body["salt"].as_str().map(str::len) == Some(32),
        "fake salt: {f1:?}"
    );
    // Login, right and wrong.
    let l = t.login(&a_name, &a_key, "a2")?;
    ensure!(l.status == 200, "login: {l:?}");
    let a2 = login_of(&l.body)?;
    ensure!(
        a2.user == a1.user && a2.device != a1.device,
        "login ids: {a1:?} {a2:?}"
    );
    let bad = t.login(&a_name, &hex_rand(32), "a3")?;
    ensure!(
        bad.status == 401 && bad.body["error"] == "invalid_credentials",
        "wrong key: {bad:?}"
    );
    let nobody = t.login(&ghost, &hex_rand(32), "a3")?;
    ensure!(
        nobody.status == 401 && nobody.body["error"] == "invalid_credentials",
        "unknown user: {nobody:?}"
    );
    // Bad input.
    let m = t.post_raw("/api/v1/login", "{not json", None)?;
    ensure!(
        m.status == 400 && m.body["error"] == "bad_request",
        "malformed JSON: {m:?}"
    );
    let n = t.post("/api/v1/prelogin", &json!({"username": ""}), None)?;
    ensure!(
        n.status == 400 && n.body["error"] == "bad_request",
        "empty username: {n:?}"
    );
    let big = t.post_raw(
        "/api/v1/login",
        &format!("{{\"username\":\"{}\"}}", "x".repeat(70_000)),
        None,
    )?;
    ensure!(
        big.status == 413 && big.body["error"] == "payload_too_large",
        "oversized body: {big:?}"
    );
    // Tokens.
    let d = t.get("/api/v1/devices", None)?;
    ensure!(
        d.status == 401 && d.body["error"] == "unauthorized",
        "no token: {d:?}"
    );
    let d = t.get("/api/v1/devices", Some("not-a-token"))?;
    ensure!(d.status == 401, "bad token: {d:?}");
    let d = t.get("/api/v1/devices", Some(&"A".repeat(43)))?;
    ensure!(d.status == 401, "unknown token: {d:?}");
    let d = t.get("/api/v1/devices", Some(&a1.token))?;
    ensure!(d.status == 200, "devices: {d:?}");
    let list = d.body["devices"].as_array().context("devices array")?;
    ensure!(list.len() == 2, "two devices: {d:?}");
    ensure!(
        list.iter()
            .any(|x| x["id"].as_u64() == Some(a1.device) && x["current"] == true),
        "current flag: {d:?}"
    );
    let (b1, _) = t.signup(&unique("bob"), "b1")?;
    ensure!(b1.user != a1.user, "distinct users");
    Ok(Accounts {
        a_name,
        a_key,
        a1,
        a2,
        b1,
    })
}

fn rooms(t: &Target, acc: &Accounts) -> Result<()> {
    let (mut a1, w) = t.join(&acc.a1.token, 0)?;
    let Frame::Welcome { user, device, .. } = w else {
        unreachable!("join checked Welcome")
    };
    ensure!(
        user.0 == acc.a1.user && device.0 == acc.a1.device,
        "welcome ids: {user} {device}, expected {} {}",
        acc.a1.user,
        acc.a1.device
    );
    let (mut a2, _) = t.join(&acc.a2.token, 0)?;
    let (mut b1, _) = t.join(&acc.b1.token, 0)?;
    // Ping.
    a1.send(&Frame::Ping { nonce: 42 })?;
    let p = a1.recv()?;
    ensure!(p == Frame::Pong { nonce: 42 }, "pong: {p:?}");
    // The client's keepalive: a WebSocket protocol ping, answered by the
    // host's WebSocket layer (on Cloudflare without waking the room).
    a1.protocol_ping().context("protocol ping")?;
    // Publish: Ack to the publisher, Deliver to the other device of A.
    a1.send(&Frame::Publish {
        id: 7,
        envelope: b"sealed-1".to_vec(),
    })?;
    let ack = a1.recv()?;
    let Frame::Ack { id: 7, seq: s1 } = ack else {
        bail!("expected Ack for 7, got {ack:?}")
    };
    let d = a2.recv()?;
    ensure!(
        d == Frame::Deliver {
            seq: s1,
            from: DeviceId(acc.a1.device),
            envelope: b"sealed-1".to_vec()
        },
        "deliver: {d:?}"
    );
    a1.send(&Frame::Publish {
        id: 8,
        envelope: b"sealed-2".to_vec(),
    })?;
    let ack = a1.recv()?;
    ensure!(
        ack == Frame::Ack { id: 8, seq: s1 + 1 },
        "second ack: {ack:?}"
    );
    let d = a2.recv()?;
    ensure!(
        matches!(d, Frame::Deliver { seq, .. } if seq == s1 + 1),
        "second deliver: {d:?}"
    );
    // B is another user: its next frame is its own Pong, not A's clips.
    b1.send(&Frame::Ping { nonce: 5 })?;
    let p = b1.recv()?;
    ensure!(p == Frame::Pong { nonce: 5 }, "other user got {p:?}");
    // Signalling within the user, and to an offline device.
    a1.send(&Frame::Signal {
        peer: DeviceId(acc.a2.device),
        kind: SignalKind::Offer,
        payload: b"sdp".to_vec(),
    })?;
    let s = a2.recv()?;
    ensure!(
        s == Frame::Signal {
            peer: DeviceId(acc.a1.device),
            kind: SignalKind::Offer,
            payload: b"sdp".to_vec()
        },
        "signal: {s:?}"
    );
    a1.send(&Frame::Signal {
        peer: DeviceId(acc.b1.device),
        kind: SignalKind::Offer,
        payload: vec![],
    })?;
    let e = a1.recv()?;
    ensure!(
        matches!(
            e,
            Frame::Error {
                code: ErrorCode::PeerOffline,
                ..
            }
        ),
        "signal to another user's device: {e:?}"
    );
    // Text frames are refused with BadFrame.
    a2.send_text("hello")?;
    let e = a2.recv()?;
    ensure!(
        matches!(
            e,
            Frame::Error {
                code: ErrorCode::BadFrame,
                ..
            }
        ),
        "text: {e:?}"
    );
    // The newest clip on join, for a device that has not seen it.
    let l = t.login(&acc.a_name, &acc.a_key, "a3")?;
    let a3 = login_of(&l.body)?;
    let (mut s3, _) = t.join(&a3.token, 0)?;
    let d = s3.recv()?;
    ensure!(
        matches!(&d, Frame::Deliver { seq, envelope, .. } if *seq == s1 + 1 && envelope == b"sealed-2"),
        "newest clip on join: {d:?}"
    );
    // ... and not for one that has.
    let (mut s3b, _) = t.join(&a3.token, s1 + 1)?;
    let closed = s3.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::Replaced.as_u16()),
        "second socket of a device replaces the first: {closed:?}"
    );
    s3b.send(&Frame::Ping { nonce: 1 })?;
    let p = s3b.recv()?;
    ensure!(p == Frame::Pong { nonce: 1 }, "seen clip replayed: {p:?}");
    Ok(())
}

/// The blob API: declare, a download that follows the upload, offsets,
/// ranges, other users refused, delete.
fn blobs(t: &Target, acc: &Accounts) -> Result<()> {
    use clipmesh_proto::BlobLayout;
    // Two sealed chunks, the second short.
    let layout = BlobLayout::new(clipmesh_proto::blob::CHUNK_LEN as u64 + 1000)?;
    let len = layout.sealed_len();
    let split = layout.sealed_offset(1);
    let mut data = vec![0u8; len as usize];
    rand::rngs::OsRng.fill_bytes(&mut data);
    let id = hex_rand(16);
    let path = format!("/api/v1/blobs/{id}");
    let a1 = acc.a1.token.as_str();
    let a2 = acc.a2.token.clone();
    let ulen = |n: u64| vec![("Upload-Length", n.to_string())];
    let at = |n: u64| vec![("Upload-Offset", n.to_string())];

    let r = t.raw("POST", &path, None, &ulen(len), b"")?;
    ensure!(r.status == 401, "no token: {r:?}");
    let r = t.raw("POST", "/api/v1/blobs/xyz", Some(a1), &ulen(len), b"")?;
    ensure!(r.status == 400, "bad id: {}", r.status);
    let r = t.raw("POST", &path, Some(a1), &[], b"")?;
    ensure!(r.status == 400, "no Upload-Length: {}", r.status);
    let r = t.raw("POST", &path, Some(a1), &ulen(5), b"")?;
    ensure!(r.status == 400, "impossible length: {}", r.status);
    let r = t.raw("POST", &path, Some(a1), &ulen(len), b"")?;
    ensure!(
        r.status == 201 && r.u64("upload-offset") == Some(0) && r.u64("upload-length") == Some(len),
        "create: {} {:?}",
        r.status,
        r.headers
    );
    let r = t.raw("POST", &path, Some(a1), &ulen(len), b"")?;
    ensure!(r.status == 200, "create again: {}", r.status);
    let r = t.raw("HEAD", &path, Some(&acc.b1.token), &[], b"")?;
    ensure!(r.status == 404, "other user's blob: {}", r.status);
    let r = t.raw("GET", &path, Some(&acc.b1.token), &[], b"")?;
    ensure!(
        r.status == 404 && r.error() == "blob_not_found",
        "other user's download: {} {}",
        r.status,
        r.error()
    );

    // The other device's download starts before the upload and follows it.
    let base = t.base.clone();
    let reader = std::thread::spawn(move || -> Result<RawAnswer> {
        Target::new(&base)?.raw("GET", &format!("/api/v1/blobs/{id}"), Some(&a2), &[], b"")
    });
    let r = t.raw("PATCH", &path, Some(a1), &at(split), &data[..10])?;
    ensure!(
        r.status == 409 && r.u64("upload-offset") == Some(0),
        "offset past the stored end: {} {:?}",
        r.status,
        r.headers
    );
    let r = t.raw("PATCH", &path, Some(a1), &at(0), &data[..split as usize])?;
    ensure!(
        r.status == 204 && r.u64("upload-offset") == Some(split),
        "first piece: {} {:?}",
        r.status,
        r.headers
    );
    let r = t.raw("HEAD", &path, Some(a1), &[], b"")?;
    ensure!(r.u64("upload-offset") == Some(split), "head: {r:?}");
    let r = t.raw(
        "PATCH",
        &path,
        Some(a1),
        &at(split),
        &data[split as usize..],
    )?;
    ensure!(
        r.status == 204 && r.u64("upload-offset") == Some(len),
        "last piece: {} {:?}",
        r.status,
        r.headers
    );
    let got = reader
        .join()
        .map_err(|_| anyhow!("download thread panicked"))??;
    ensure!(
        got.status == 200 && got.body == data,
        "followed download: {} ({} of {len} bytes, equal: {})",
        got.status,
        got.body.len(),
        got.body == data
    );
    let r = t.raw("PATCH", &path, Some(a1), &at(0), &data[..10])?;
    ensure!(
        r.status == 409 && r.u64("upload-offset") == Some(len),
        "rewind of a complete blob: {} {:?}",
        r.status,
        r.headers
    );
    // Ranges.
    let r = t.raw(
        "GET",
        &path,
        Some(a1),
        &[("Range", format!("bytes={}-", split - 5))],
        b"",
    )?;
    ensure!(
        r.status == 206 && r.body == data[split as usize - 5..],
        "range: {} ({} bytes)",
        r.status,
        r.body.len()
    );
    let r = t.raw(
        "GET",
        &path,
        Some(a1),
        &[("Range", format!("bytes={len}-"))],
        b"",
    )?;
    ensure!(r.status == 416, "range past the end: {}", r.status);
    // Delete.
    let r = t.raw("DELETE", &path, Some(&acc.b1.token), &[], b"")?;
    ensure!(r.status == 404, "other user's delete: {}", r.status);
    let r = t.raw("DELETE", &path, Some(a1), &[], b"")?;
    ensure!(r.status == 204, "delete: {}", r.status);
    let r = t.raw("HEAD", &path, Some(a1), &[], b"")?;
    ensure!(r.status == 404, "deleted: {}", r.status);
    Ok(())
}

fn revoke_and_logout(t: &Target, acc: &Accounts) -> Result<()> {
    let (mut a2, _) = t.join(&acc.a2.token, u64::MAX)?;
    let r = t.delete(&format!("/api/v1/devices/{}", acc.a2.device), &acc.a1.token)?;
    ensure!(r.status == 204, "revoke: {r:?}");
    let closed = a2.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::Unauthorized.as_u16()),
        "revoked socket: {closed:?}"
    );
    let d = t.get("/api/v1/devices", Some(&acc.a2.token))?;
    ensure!(d.status == 401, "revoked token: {d:?}");
    let r = t.delete(&format!("/api/v1/devices/{}", acc.a2.device), &acc.a1.token)?;
    ensure!(r.status == 404, "revoke twice: {r:?}");
    let r = t.delete(&format!("/api/v1/devices/{}", acc.b1.device), &acc.a1.token)?;
    ensure!(r.status == 404, "revoke another user's device: {r:?}");
    let r = t.post("/api/v1/logout", &json!({}), Some(&acc.b1.token))?;
    ensure!(r.status == 204, "logout: {r:?}");
    let d = t.get("/api/v1/devices", Some(&acc.b1.token))?;
    ensure!(d.status == 401, "logged-out token: {d:?}");
    Ok(())
}

/// `POST /api/v1/session/renew`: a new token for the same device; the old
/// one is accepted until the new one is first used, then never again.
fn renew(t: &Target) -> Result<()> {
    let (l, _) = t.signup(&unique("renew"), "r1")?;
    // Used once, so a cache in front of the store holds the old token.
    ensure!(t.get("/api/v1/devices", Some(&l.token))?.status == 200);
    let r = t.post("/api/v1/session/renew", &json!({}), Some(&l.token))?;
    ensure!(r.status == 200, "renew: {r:?}");
    let new = r.body["token"].as_str().context("token")?.to_owned();
    ensure!(
        new != l.token
            && r.body["max_lifetime_s"].as_u64().is_some_and(|s| s > 0)
            && r.body["idle_lifetime_s"].as_u64().is_some_and(|s| s > 0),
        "renew answer: {r:?}"
    );
    let old = t.get("/api/v1/devices", Some(&l.token))?;
    ensure!(
        old.status == 200,
        "the old token before the new one is used: {old:?}"
    );
    let d = t.get("/api/v1/devices", Some(&new))?;
    ensure!(
        d.status == 200
            && d.body["devices"][0]["id"].as_u64() == Some(l.device)
            && d.body["devices"][0]["current"] == true,
        "the new token names the same device: {d:?}"
    );
    let old = t.get("/api/v1/devices", Some(&l.token))?;
    ensure!(
        old.status == 401,
        "the old token after the new one was used: {old:?}"
    );
    Ok(())
}

/// Session lifetimes against a relay whose idle lifetime is `idle`
/// seconds: a token unused for longer is refused (401) and its device is
/// gone from the account's list. Waits `idle` + 2 s of wall time (the
/// lifetime is wall time, in whole seconds).
pub fn lifetimes(base: &str, idle: u64) -> Result<()> {
    let t = Target::new(base)?;
    let name = unique("life");
    let (l, key) = t.signup(&name, "old")?;
    std::thread::sleep(std::time::Duration::from_secs(idle + 2));
    let d = t.get("/api/v1/devices", Some(&l.token))?;
    ensure!(d.status == 401, "a token idle past its lifetime: {d:?}");
    let fresh = t.login(&name, &key, "new")?;
    ensure!(fresh.status == 200, "login: {fresh:?}");
    let token = fresh.body["token"].as_str().context("token")?;
    let d = t.get("/api/v1/devices", Some(token))?;
    let ids: Vec<u64> = d.body["devices"]
        .as_array()
        .context("devices")?
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    ensure!(
        d.status == 200 && !ids.contains(&l.device) && ids.len() == 1,
        "the expired device is gone: {d:?}"
    );
    Ok(())
}

/// Blob expiry against a relay whose blob lifetime is `ttl` seconds: a
/// stored blob downloads at first, and once `ttl` has passed every request
/// for it answers 410 `blob_expired`. Waits `ttl` + 2 s of wall time
/// (expiry is wall time, in whole seconds).
pub fn blob_expiry(base: &str, ttl: u64) -> Result<()> {
    let t = Target::new(base)?;
    let (l, _) = t.signup(&unique("exp"), "e1")?;
    let (path, data) = t.upload_small_blob(&l.token)?;
    let tok = Some(l.token.as_str());
    let r = t.raw("GET", &path, tok, &[], b"")?;
    ensure!(
        r.status == 200 && r.body == data,
        "download before expiry: {}",
        r.status
    );
    std::thread::sleep(std::time::Duration::from_secs(ttl + 2));
    for method in ["GET", "HEAD"] {
        let r = t.raw(method, &path, tok, &[], b"")?;
        ensure!(
            r.status == 410,
            "{method} after expiry: {} {}",
            r.status,
            r.error()
        );
    }
    let r = t.raw("GET", &path, tok, &[], b"")?;
    ensure!(
        r.error() == "blob_expired",
        "expired blob's error: {}",
        r.error()
    );
    Ok(())
}

/// The login throttle, against a fresh relay configured with `free`
/// failures allowed per key and a first block of a minute or more (so
/// nothing here runs into its end): `free` wrong logins and one more are
/// 401; then the right key is refused with 429 `rate_limited` and a
/// `Retry-After`, and so are the other password checks of that account
/// (v1 password change, v2 login start); pre-login is not throttled.
/// Blocks this client's network for the block's length: run it last.
pub fn login_throttle(base: &str, free: u32) -> Result<()> {
    let t = Target::new(base)?;
    let name = unique("thr");
    let (l, key) = t.signup(&name, "t1")?;
    for i in 0..=free {
        let r = t.login(&name, &hex_rand(32), "t2")?;
        ensure!(
            r.status == 401 && r.body["error"] == "invalid_credentials",
            "wrong key {} of {}: {r:?}",
            i + 1,
            free + 1
        );
    }
    let body = json!({"username": name, "auth_key": key, "device_name": "t2"}).to_string();
    let json_ct = [("Content-Type", "application/json".to_owned())];
    let r = t.raw("POST", "/api/v1/login", None, &json_ct, body.as_bytes())?;
    ensure!(
        r.status == 429
            && r.error() == "rate_limited"
            && r.u64("retry-after").is_some_and(|s| s >= 1),
        "the right key while blocked: {} {} {:?}",
        r.status,
        r.error(),
        r.headers.get("retry-after")
    );
    let (change, _, _) = password_body(&key, false);
    let r = t.post("/api/v1/password", &change, Some(&l.token))?;
    ensure!(
        r.status == 429 && r.body["error"] == "rate_limited",
        "a password change while blocked: {r:?}"
    );
    let (_, ke1) = clipmesh_proto::opaque::ClientLogin::start(&mut rand::rngs::OsRng, b"pw")?;
    let r = t.post(
        "/api/v2/login/start",
        &json!({"username": name, "request": ke1.to_hex()}),
        None,
    )?;
    ensure!(
        r.status == 429 && r.body["error"] == "rate_limited",
        "a v2 login start while blocked: {r:?}"
    );
    let p = t.post("/api/v1/prelogin", &json!({"username": name}), None)?;
    ensure!(p.status == 200, "prelogin is not throttled: {p:?}");
    Ok(())
}

/// The Worker's cron sweep, against a fresh Worker (its first account is
/// the admin) with a blob lifetime of `ttl` seconds: a user's stored blob
/// shows as R2 objects in the admin's view; once it has expired, running
/// the scheduled handler (`/cdn-cgi/handler/scheduled`, the local
/// runtime's trigger) deletes them, and the blob still answers 410
/// `blob_expired` (its row stays as a tombstone). Waits `ttl` + 2 s.
pub fn cron_sweep(base: &str, ttl: u64) -> Result<()> {
    let t = Target::new(base)?;
    let admin_name = unique("root");
    let (admin, admin_key) = t.signup(&admin_name, "r1")?;
    let me = t.get(
        &format!("/api/v1/admin/users/{}/blobs", admin.user),
        Some(&admin.token),
    )?;
    ensure!(
        me.status == 200,
        "the cron sweep check needs a fresh Worker (first account = admin): {me:?}"
    );
    // Tokens are fetched afresh before each use: sessions on this Worker
    // may have a short idle lifetime.
    let fresh = |name: &str, key: &str| -> Result<String> {
        let l = t.login(name, key, "again")?;
        ensure!(l.status == 200, "login: {l:?}");
        Ok(l.body["token"].as_str().context("token")?.to_owned())
    };
    let u_name = unique("swp");
    let (u, key) = t.signup(&u_name, "s1")?;
    let (path, data) = t.upload_small_blob(&u.token)?;
    let len = data.len() as u64;
    let usage = format!("/api/v1/admin/users/{}/blobs", u.user);
    let r = t.get(&usage, Some(&fresh(&admin_name, &admin_key)?))?;
    ensure!(
        r.status == 200
            && r.body["objects"].as_u64().is_some_and(|n| n >= 1)
            && r.body["bytes"] == len,
        "the stored blob on R2: {r:?}"
    );
    std::thread::sleep(Duration::from_secs(ttl + 2));
    let (status, outcome) = t.get_text("/cdn-cgi/handler/scheduled")?;
    ensure!(
        status == 200 && outcome == "ok",
        "the scheduled handler: {status} {outcome:?}"
    );
    let admin_token = fresh(&admin_name, &admin_key)?;
    let r = t.get(&usage, Some(&admin_token))?;
    ensure!(
        r.status == 200 && r.body["objects"] == 0 && r.body["bytes"] == 0,
        "R2 after the sweep: {r:?}"
    );
    let u_token = fresh(&u_name, &key)?;
    let r = t.raw("GET", &path, Some(&u_token), &[], b"")?;
    ensure!(
        r.status == 410 && r.error() == "blob_expired",
        "the swept blob: {} {}",
        r.status,
        r.error()
    );
    Ok(())
}

/// The optional rate-limiting binding, against a Worker started with
/// `--rate-limit LIMIT` (LIMIT requests a minute per client network):
/// pre-logins from this client are answered at first, then refused with
/// 429 `rate_limited` and a `Retry-After`. Up to 2·LIMIT + 2 requests are
/// sent, since the limiter's minute may turn over during the run (and
/// earlier checks on the same Worker may have used some of it).
pub fn rate_limit_binding(base: &str, limit: u32) -> Result<()> {
    let t = Target::new(base)?;
    let json_ct = [("Content-Type", "application/json".to_owned())];
    let mut answered = 0;
    for _ in 0..2 * limit + 2 {
        let body = json!({"username": unique("rl")}).to_string();
        let r = t.raw("POST", "/api/v1/prelogin", None, &json_ct, body.as_bytes())?;
        match r.status {
            200 => answered += 1,
            429 => {
                ensure!(
                    answered > 0,
                    "the first pre-login was refused: budget used up before the check"
                );
                ensure!(
                    r.error() == "rate_limited" && r.u64("retry-after").is_some_and(|s| s >= 1),
                    "the refusal: {} {:?}",
                    r.error(),
                    r.headers.get("retry-after")
                );
                let (s, _) = t.get_text("/healthz")?;
                ensure!(s == 200, "an unguarded path while limited: {s}");
                return Ok(());
            }
            s => bail!("pre-login answered {s} {}", r.error()),
        }
    }
    bail!("{answered} pre-logins answered, none refused, with a limit of {limit} a minute")
}

/// The Worker's per-network signup budget (natively `NetGuard`, tested in
/// the relay's own tests), against a Worker allowing `free` signups per
/// network: signups from this client are accepted until the budget is
/// spent (earlier checks on the same Worker may have used some of it, but
/// at least one must be left), then refused with 429 `rate_limited` and a
/// `Retry-After`, and so is the next one (the block holds).
pub fn signup_budget(base: &str, free: u32) -> Result<()> {
    let t = Target::new(base)?;
    let json_ct = [("Content-Type", "application/json".to_owned())];
    let signup = || -> Result<RawAnswer> {
        let body = json!({
            "username": unique("bud"), "salt": hex_rand(16), "kdf": KdfParams::default(),
            "auth_key": hex_rand(32),
            "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
            "device_name": "b1",
        })
        .to_string();
        t.raw("POST", "/api/v1/signup", None, &json_ct, body.as_bytes())
    };
    let mut accepted = 0;
    for _ in 0..=free {
        let r = signup()?;
        match r.status {
            200 => accepted += 1,
            429 => {
                ensure!(accepted > 0, "no signup was left of a budget of {free}");
                ensure!(
                    r.error() == "rate_limited" && r.u64("retry-after").is_some_and(|s| s >= 1),
                    "the refusal: {} {:?}",
                    r.error(),
                    r.headers.get("retry-after")
                );
                let again = signup()?;
                ensure!(
                    again.status == 429 && again.error() == "rate_limited",
                    "a signup during the block: {} {}",
                    again.status,
                    again.error()
                );
                return Ok(());
            }
            s => bail!("signup answered {s} {}", r.error()),
        }
    }
    bail!("{accepted} signups accepted with a budget of {free}")
}

/// Cloudflare's documented Turnstile test secret that always passes, and
/// the dummy token it accepts; `worker/dev/serve.mjs` answers siteverify
/// locally the way Cloudflare does for them.
pub const TURNSTILE_TEST_SECRET: &str = "1x0000000000000000000000000000000AA";
const TURNSTILE_DUMMY_TOKEN: &str = "XXXX.DUMMY.TOKEN.XXXX";

/// Optional Turnstile on signup, against a Worker with `TURNSTILE_SECRET`
/// set to [`TURNSTILE_TEST_SECRET`]: a v1 signup and a v2 signup finish
/// without a token, or with one siteverify refuses, are 403 `forbidden`
/// and create nothing; with the accepted token both succeed.
pub fn turnstile(base: &str) -> Result<()> {
    use clipmesh_proto::{Epoch, EpochKey};
    let t = Target::new(base)?;
    let name = unique("ts");
    let v1 = json!({
        "username": name, "salt": hex_rand(16), "kdf": KdfParams::default(),
        "auth_key": hex_rand(32), "wrapped_data_key": hex_rand(clipmesh_proto::keys::WRAPPED_LEN),
        "device_name": "t1",
    })
    .to_string();
    let name = unique("ts2");
    let (record, ek) = v2_register(&t, &name, b"pw", None)?;
    let k = EpochKey::generate(&mut rand::rngs::OsRng);
    let v2 = json!({"username": name, "record": record, "kdf": KdfParams::default(), "epoch": 1,
                    "export_wrap": ek.kek().wrap(Epoch(1), &k).to_hex(), "device_name": "t2"})
    .to_string();
    let ct = ("Content-Type", "application/json".to_owned());
    for (what, path, body) in [
        ("v1 signup", "/api/v1/signup", &v1),
        ("v2 signup", "/api/v2/signup/finish", &v2),
    ] {
        for (token, want, case) in [
            (None, 403, "without a token"),
            (Some("not-a-solved-challenge"), 403, "with a refused token"),
            (Some(TURNSTILE_DUMMY_TOKEN), 200, "with the accepted token"),
        ] {
            let mut headers = vec![ct.clone()];
            headers.extend(token.map(|v| ("CF-Turnstile-Response", v.to_owned())));
            let r = t.raw("POST", path, None, &headers, body.as_bytes())?;
            ensure!(
                r.status == want && (want == 200 || r.error() == "forbidden"),
                "{what} {case}: {} {}",
                r.status,
                r.error()
            );
        }
    }
    Ok(())
}

/// A v2 registration: step 1 at `start` (`token` for the caller's own
/// account), then the client's record and export key.
fn v2_register(
    t: &Target,
    user: &str,
    pw: &[u8],
    token: Option<&str>,
) -> Result<(String, clipmesh_proto::opaque::ExportKey)> {
    use clipmesh_proto::opaque::{ClientRegistration, RegistrationResponseBytes};
    let mut rng = rand::rngs::OsRng;
    let (c, req) = ClientRegistration::start(&mut rng, pw)?;
    let a = match token {
        None => t.post(
            "/api/v2/signup/start",
            &json!({"username": user, "request": req.to_hex()}),
            None,
        )?,
        Some(tok) => t.post(
            "/api/v2/register/start",
            &json!({"request": req.to_hex()}),
            Some(tok),
        )?,
    };
    ensure!(a.status == 200, "register start: {a:?}");
    let resp =
        RegistrationResponseBytes::from_hex(a.body["response"].as_str().context("response")?)?;
    let (rec, ek) = c.finish(&mut rng, pw, user, &resp, &KdfParams::default())?;
    Ok((rec.to_hex(), ek))
}

/// A v2 login: `Ok((answer, export key))`, or `Err` with what failed
/// (the client's own check of KE2, or the relay's status and code).
fn v2_login(
    t: &Target,
    user: &str,
    pw: &[u8],
) -> Result<std::result::Result<(Value, clipmesh_proto::opaque::ExportKey), String>> {
    use clipmesh_proto::opaque::{ClientLogin, LoginResponseBytes};
    let (c, ke1) = ClientLogin::start(&mut rand::rngs::OsRng, pw)?;
    let a = t.post(
        "/api/v2/login/start",
        &json!({"username": user, "request": ke1.to_hex()}),
        None,
    )?;
    ensure!(a.status == 200, "login start: {a:?}");
    let ke2 = LoginResponseBytes::from_hex(a.body["response"].as_str().context("response")?)?;
    let kdf: KdfParams = serde_json::from_value(a.body["kdf"].clone())?;
    let out = match c.finish(pw, user, &ke2, &kdf) {
        Ok(o) => o,
        Err(e) => return Ok(Err(format!("client: {e}"))),
    };
    let finish = json!({"login_id": a.body["login_id"], "finish": out.finish.to_hex(),
                        "device_name": "v2"});
    let r = t.post("/api/v2/login/finish", &finish, None)?;
    if r.status != 200 {
        return Ok(Err(format!("{} {}", r.status, r.body["error"])));
    }
    // The same KE3 again (a replay) finds nothing.
    let again = t.post("/api/v2/login/finish", &finish, None)?;
    ensure!(
        again.status == 401 && again.body["error"] == "invalid_credentials",
        "replayed KE3: {again:?}"
    );
    Ok(Ok((r.body, out.export_key)))
}

fn accounts_v2(t: &Target) -> Result<()> {
    use clipmesh_proto::{DeviceSecrets, Epoch, EpochKey, ExportWrappedKey};
    let mut rng = rand::rngs::OsRng;
    // First (before the checks below fail logins from this network,
    // which the native relay throttles): a v1 account upgrades in place; v1 login then stops.
    let old = unique("olde");
    let (o1, o_key) = t.signup(&old, "o1")?;
    ensure!(
        v2_login(t, &old, b"pw")?.is_err(),
        "v2 login before the upgrade"
    );
    let (record, ek) = v2_register(t, &old, b"pw", Some(&o1.token))?;
    let wrap = ek.kek().wrap(Epoch(0), &EpochKey::generate(&mut rng));
    let upgrade = |proof: &str| {
        t.post(
            "/api/v2/upgrade",
            &json!({"current_auth_key": proof, "record": record, "kdf": KdfParams::default(),
                    "export_wrap": wrap.to_hex()}),
            Some(&o1.token),
        )
    };
    let wrong = upgrade(&hex_rand(32))?;
    ensure!(
        wrong.status == 401 && wrong.body["error"] == "invalid_credentials",
        "upgrade with a wrong key: {wrong:?}"
    );
    let up = upgrade(&o_key)?;
    ensure!(up.status == 204, "upgrade: {up:?}");
    ensure!(upgrade(&o_key)?.status == 401, "a second upgrade");
    let v1 = t.login(&old, &o_key, "again")?;
    ensure!(v1.status == 401, "v1 login after the upgrade: {v1:?}");
    let (l, _) = v2_login(t, &old, b"pw")?.map_err(|e| anyhow!("v2 login after upgrade: {e}"))?;
    ensure!(
        l["user_id"].as_u64() == Some(o1.user) && l["epoch"] == 0,
        "v2 login after the upgrade: {l}"
    );

    // Signup.
    let name = unique("vee");
    let (record, ek) = v2_register(t, &name, b"pw one", None)?;
    let key = EpochKey::generate(&mut rng);
    let wrap = ek.kek().wrap(Epoch(1), &key);
    let a = t.post(
        "/api/v2/signup/finish",
        &json!({"username": name, "record": record, "kdf": KdfParams::default(), "epoch": 1,
                "export_wrap": wrap.to_hex(), "device_name": "v1st",
                "setup_token": crate::procs::SETUP_TOKEN}),
        None,
    )?;
    ensure!(a.status == 200, "v2 signup: {a:?}");
    let first = login_of(&a.body)?;
    // Taken, and a record that is not one.
    let again = t.post(
        "/api/v2/signup/finish",
        &json!({"username": name, "record": record, "kdf": KdfParams::default(), "epoch": 1,
                "export_wrap": wrap.to_hex(), "device_name": "x"}),
        None,
    )?;
    ensure!(
        again.status == 409 && again.body["error"] == "username_taken",
        "v2 signup of a taken name: {again:?}"
    );
    let junk = t.post(
        "/api/v2/signup/finish",
        &json!({"username": unique("junk"), "record": "ff".repeat(192),
                "kdf": KdfParams::default(), "epoch": 1,
                "export_wrap": wrap.to_hex(), "device_name": "x"}),
        None,
    )?;
    ensure!(junk.status == 400, "junk record: {junk:?}");

    // v1 login never works for a v2 account.
    let v1 = t.login(&name, &hex_rand(32), "x")?;
    ensure!(v1.status == 401, "v1 login of a v2 account: {v1:?}");

    // Login: the export key opens the epoch key; wrong passwords and
    // unknown names fail at the client, a forged KE3 at the relay.
    let (l, ek2) = v2_login(t, &name, b"pw one")?.map_err(|e| anyhow!("v2 login: {e}"))?;
    ensure!(
        l["user_id"].as_u64() == Some(first.user) && l["epoch"] == 1,
        "v2 login: {l}"
    );
    let got = ExportWrappedKey::from_hex(l["export_wrap"].as_str().context("export_wrap")?)
        .context("export_wrap")?;
    let opened = ek2
        .kek()
        .unwrap(Epoch(1), &got)
        .map_err(|e| anyhow!("unwrap: {e}"))?;
    ensure!(
        opened.expose() == key.expose(),
        "export key opens the epoch key"
    );
    ensure!(v2_login(t, &name, b"wrong")?.is_err(), "wrong password");
    ensure!(
        v2_login(t, &unique("nobody"), b"pw one")?.is_err(),
        "unknown name"
    );
    let (_, ke1) = clipmesh_proto::opaque::ClientLogin::start(&mut rng, b"x")?;
    let start = |user: &str| {
        t.post(
            "/api/v2/login/start",
            &json!({"username": user, "request": ke1.to_hex()}),
            None,
        )
    };
    let (real, fake) = (start(&name)?, start(&unique("ghost"))?);
    let keys = |v: &Value| {
        let mut k: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        k.sort();
        k
    };
    ensure!(
        real.status == 200 && fake.status == 200 && keys(&real.body) == keys(&fake.body),
        "real and unknown names answer alike: {real:?} {fake:?}"
    );
    let forged = t.post(
        "/api/v2/login/finish",
        &json!({"login_id": real.body["login_id"], "finish": hex_rand(64), "device_name": "x"}),
        None,
    )?;
    ensure!(
        forged.status == 401 && forged.body["error"] == "invalid_credentials",
        "forged KE3: {forged:?}"
    );

    // Device keys: published once per device, a swap refused.
    let me = DeviceSecrets::generate(&mut rng).public();
    let cert = key.certify(Epoch(1), DeviceId(first.device), &me);
    let put = |public: String| {
        t.raw(
            "PUT",
            "/api/v2/device-key",
            Some(&first.token),
            &[("Content-Type", "application/json".to_owned())],
            json!({"public_key": public, "epoch": 1, "cert": hex::encode(cert)})
                .to_string()
                .as_bytes(),
        )
    };
    ensure!(put(me.to_hex())?.status == 204, "device key");
    ensure!(put(me.to_hex())?.status == 204, "the same device key again");
    let swap = put(DeviceSecrets::generate(&mut rng).public().to_hex())?;
    ensure!(swap.status == 409, "a swapped device key: {}", swap.status);
    let keys = t.get("/api/v2/device-keys", Some(&first.token))?;
    ensure!(
        keys.status == 200
            && keys.body["epoch"] == 1
            && keys.body["devices"][0]["public_key"].as_str() == Some(me.to_hex().as_str())
            && keys.body["devices"][0]["cert"].as_str() == Some(hex::encode(cert).as_str()),
        "device keys: {keys:?}"
    );

    // Password change: a fresh login with the current password, the new
    // record, and every other session ended.
    let other = v2_login(t, &name, b"pw one")?.map_err(|e| anyhow!("second login: {e}"))?;
    let other_token = other.0["token"].as_str().context("token")?.to_owned();
    let (c, ke1) = clipmesh_proto::opaque::ClientLogin::start(&mut rng, b"pw one")?;
    let (reg, req) = clipmesh_proto::opaque::ClientRegistration::start(&mut rng, b"pw two")?;
    let ps = t.post(
        "/api/v2/password/start",
        &json!({"login": ke1.to_hex(), "registration": req.to_hex()}),
        Some(&first.token),
    )?;
    ensure!(ps.status == 200, "password start: {ps:?}");
    let ke2 = clipmesh_proto::opaque::LoginResponseBytes::from_hex(
        ps.body["response"].as_str().context("response")?,
    )?;
    let out = c
        .finish(b"pw one", &name, &ke2, &KdfParams::default())
        .map_err(|e| anyhow!("password start KE2: {e}"))?;
    let rr = clipmesh_proto::opaque::RegistrationResponseBytes::from_hex(
        ps.body["registration"].as_str().context("registration")?,
    )?;
    let (rec2, ek3) = reg.finish(&mut rng, b"pw two", &name, &rr, &KdfParams::default())?;
    let pf = t.post(
        "/api/v2/password/finish",
        &json!({"login_id": ps.body["login_id"], "finish": out.finish.to_hex(),
                "record": rec2.to_hex(), "kdf": KdfParams::default(), "epoch": 1,
                "export_wrap": ek3.kek().wrap(Epoch(1), &key).to_hex(),
                "end_other_sessions": true}),
        Some(&first.token),
    )?;
    ensure!(pf.status == 204, "password finish: {pf:?}");
    ensure!(v2_login(t, &name, b"pw one")?.is_err(), "the old password");
    v2_login(t, &name, b"pw two")?.map_err(|e| anyhow!("the new password: {e}"))?;
    let gone = t.get("/api/v1/devices", Some(&other_token))?;
    ensure!(gone.status == 401, "the other session ended: {gone:?}");
    let kept = t.get("/api/v1/devices", Some(&first.token))?;
    ensure!(kept.status == 200, "this session kept: {kept:?}");

    Ok(())
}

/// A password change (password "pw" both ways) by the device holding
/// `token`, naming `epoch` (its key `key` under the new export key), with
/// `extra` fields merged into `password/finish`.
fn change_with(
    t: &Target,
    user: &str,
    token: &str,
    epoch: u32,
    key: &clipmesh_proto::EpochKey,
    extra: Value,
) -> Result<Answer> {
    use clipmesh_proto::opaque::{
        ClientLogin, ClientRegistration, LoginResponseBytes, RegistrationResponseBytes,
    };
    use clipmesh_proto::Epoch;
    let mut rng = rand::rngs::OsRng;
    let (c, ke1) = ClientLogin::start(&mut rng, b"pw")?;
    let (reg, req) = ClientRegistration::start(&mut rng, b"pw")?;
    let ps = t.post(
        "/api/v2/password/start",
        &json!({"login": ke1.to_hex(), "registration": req.to_hex()}),
        Some(token),
    )?;
    ensure!(ps.status == 200, "password start: {ps:?}");
    let ke2 = LoginResponseBytes::from_hex(ps.body["response"].as_str().context("response")?)?;
    let out = c
        .finish(b"pw", user, &ke2, &KdfParams::default())
        .map_err(|e| anyhow!("password start KE2: {e}"))?;
    let rr = RegistrationResponseBytes::from_hex(
        ps.body["registration"].as_str().context("registration")?,
    )?;
    let (rec, ek) = reg.finish(&mut rng, b"pw", user, &rr, &KdfParams::default())?;
    let mut body = json!({"login_id": ps.body["login_id"], "finish": out.finish.to_hex(),
        "record": rec.to_hex(), "kdf": KdfParams::default(), "epoch": epoch,
        "export_wrap": ek.kek().wrap(Epoch(epoch), key).to_hex()});
    for (k, v) in extra.as_object().context("extra")? {
        body[k] = v.clone();
    }
    t.post("/api/v2/password/finish", &body, Some(token))
}

/// Key epochs: three devices publish keys; bad rotations are refused and
/// change nothing; a rotation by A that revokes C and wraps the new key to
/// A and B is accepted: C's session ends, B's socket closes with 1012, B
/// gets its wrap (signed by A, opening to the new key) and both remaining
/// devices are certified in the new epoch; the clip B published under the
/// old epoch is not replayed to A when it joins afterwards. Then the v1
/// revoke of another device (no new epoch) is refused with 409; of itself
/// it is a logout.
fn epochs(t: &Target) -> Result<()> {
    use clipmesh_proto::{DeviceSecrets, DeviceWrappedKey, Epoch, EpochKey};
    let mut rng = rand::rngs::OsRng;
    let name = unique("epo");
    let (record, ek) = v2_register(t, &name, b"pw", None)?;
    let k1 = EpochKey::generate(&mut rng);
    let a = t.post(
        "/api/v2/signup/finish",
        &json!({"username": name, "record": record, "kdf": KdfParams::default(), "epoch": 1,
                "export_wrap": ek.kek().wrap(Epoch(1), &k1).to_hex(), "device_name": "a",
                "setup_token": crate::procs::SETUP_TOKEN}),
        None,
    )?;
    ensure!(a.status == 200, "v2 signup: {a:?}");
    let mut devs = vec![login_of(&a.body)?];
    for _ in 0..2 {
        let (l, _) = v2_login(t, &name, b"pw")?.map_err(|e| anyhow!("v2 login: {e}"))?;
        devs.push(login_of(&l)?);
    }
    let secrets: Vec<DeviceSecrets> = devs
        .iter()
        .map(|_| DeviceSecrets::generate(&mut rng))
        .collect();
    for (d, sec) in devs.iter().zip(&secrets) {
        let p = sec.public();
        let cert = k1.certify(Epoch(1), DeviceId(d.device), &p);
        let r = t.raw(
            "PUT",
            "/api/v2/device-key",
            Some(&d.token),
            &[("Content-Type", "application/json".to_owned())],
            json!({"public_key": p.to_hex(), "epoch": 1, "cert": hex::encode(cert)})
                .to_string()
                .as_bytes(),
        )?;
        ensure!(r.status == 204, "device key: {r:?}");
    }
    let (a, b, c) = (&devs[0], &devs[1], &devs[2]);
    let (a_id, b_id, c_id) = (DeviceId(a.device), DeviceId(b.device), DeviceId(c.device));
    let (a_sec, b_sec) = (&secrets[0], &secrets[1]);
    let w = t.get("/api/v2/epoch-wrap", Some(&b.token))?;
    ensure!(
        w.status == 200 && w.body["wrap"].is_null(),
        "no wrap before a new epoch: {w:?}"
    );

    let k2 = EpochKey::generate(&mut rng);
    let wrap_to = |id: DeviceId, to: &DeviceSecrets| -> Result<String> {
        Ok(k2
            .wrap_to_device(
                &mut rand::rngs::OsRng,
                Epoch(2),
                (a_id, a_sec),
                (id, &to.public()),
            )
            .map_err(|e| anyhow!("wrap: {e}"))?
            .to_hex())
    };
    let wraps = json!([{"device": a_id, "wrap": wrap_to(a_id, a_sec)?},
                       {"device": b_id, "wrap": wrap_to(b_id, b_sec)?}]);
    let certs = json!([
        {"device": a_id, "cert": hex::encode(k2.certify(Epoch(2), a_id, &a_sec.public()))},
        {"device": b_id, "cert": hex::encode(k2.certify(Epoch(2), b_id, &b_sec.public()))}]);
    let sender_cert = hex::encode(k1.certify(Epoch(1), a_id, &a_sec.public()));
    let bad = [
        (1, json!({"revoke": [c_id]}), "a revoke without a new epoch"),
        (3, json!({}), "an epoch jump"),
        (
            2,
            json!({"revoke": [c_id], "wraps": [{"device": c_id, "wrap": wrap_to(c_id, &secrets[2])?}],
                   "sender_cert": sender_cert}),
            "a wrap to the revoked device",
        ),
        (2, json!({"wraps": wraps}), "wraps without sender_cert"),
    ];
    for (epoch, extra, what) in bad {
        let r = change_with(t, &name, &a.token, epoch, &k2, extra)?;
        ensure!(r.status == 400, "{what}: {r:?}");
    }
    let keys = t.get("/api/v2/device-keys", Some(&c.token))?;
    ensure!(
        keys.status == 200 && keys.body["epoch"] == 1,
        "nothing changed after refused rotations: {keys:?}"
    );

    let (mut b_ws, _) = t.join(&b.token, 0)?;
    let (mut c_ws, _) = t.join(&c.token, 0)?;
    // A clip sealed under epoch 1 becomes the room's newest clip.
    b_ws.send(&Frame::Publish {
        id: 1,
        envelope: b"sealed-under-epoch-1".to_vec(),
    })?;
    let ack = b_ws.recv()?;
    let Frame::Ack {
        id: 1,
        seq: old_seq,
    } = ack
    else {
        bail!("expected Ack for the epoch-1 clip, got {ack:?}")
    };
    let d = c_ws.recv()?;
    ensure!(
        matches!(d, Frame::Deliver { seq, .. } if seq == old_seq),
        "the epoch-1 clip reaches C: {d:?}"
    );
    let r = change_with(
        t,
        &name,
        &a.token,
        2,
        &k2,
        json!({"revoke": [c_id], "wraps": wraps, "certs": certs, "sender_cert": sender_cert}),
    )?;
    ensure!(r.status == 204, "a rotation: {r:?}");
    let closed = b_ws.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::ServiceRestart.as_u16()),
        "a remaining device's socket after a new epoch: {closed:?}"
    );
    let closed = c_ws.closed()?;
    ensure!(
        closed == Closed::Code(CloseCode::Unauthorized.as_u16()),
        "the revoked device's socket: {closed:?}"
    );
    let gone = t.get("/api/v2/device-keys", Some(&c.token))?;
    ensure!(gone.status == 401, "the revoked device's session: {gone:?}");

    // B's wrap, signed by A, opens to the new key; C has none.
    let r = t.get("/api/v2/epoch-wrap", Some(&b.token))?;
    ensure!(r.status == 200, "epoch-wrap: {r:?}");
    let w = &r.body["wrap"];
    ensure!(
        w["epoch"] == 2
            && w["sender"].as_u64() == Some(a.device)
            && w["sender_public"].as_str() == Some(a_sec.public().to_hex().as_str())
            && w["sender_cert"].as_str() == Some(sender_cert.as_str()),
        "B's wrap: {w}"
    );
    let opened = DeviceWrappedKey::from_hex(w["wrap"].as_str().context("wrap")?)
        .context("wrap")?
        .open(Epoch(2), (a_id, &a_sec.public()), (b_id, b_sec))
        .map_err(|e| anyhow!("B opens its wrap: {e}"))?;
    ensure!(opened.expose() == k2.expose(), "B's wrap holds the new key");
    let keys = t.get("/api/v2/device-keys", Some(&b.token))?;
    let listed: Vec<(Option<u64>, Value)> = keys.body["devices"]
        .as_array()
        .context("devices")?
        .iter()
        .map(|d| (d["id"].as_u64(), d["epoch"].clone()))
        .collect();
    ensure!(
        keys.status == 200
            && keys.body["epoch"] == 2
            && listed == vec![(Some(a.device), json!(2)), (Some(b.device), json!(2))],
        "device keys after the rotation: {keys:?}"
    );
    // A joins from zero: the clip B sealed under epoch 1 is not replayed
    // (both hosts drop the room's newest clip on a new epoch), so A's
    // first frame after its Welcome is B's next clip, not the old one.
    let (mut a_ws, _) = t.join(&a.token, 0)?;
    let (mut b_ws, _) = t
        .join(&b.token, old_seq)
        .context("B rejoins after the new epoch")?;
    b_ws.send(&Frame::Publish {
        id: 2,
        envelope: b"sealed-under-epoch-2".to_vec(),
    })?;
    let ack = b_ws.recv()?;
    let Frame::Ack {
        id: 2,
        seq: new_seq,
    } = ack
    else {
        bail!("expected Ack for the epoch-2 clip, got {ack:?}")
    };
    ensure!(
        new_seq > old_seq,
        "sequence goes on: {old_seq} then {new_seq}"
    );
    let d = a_ws.recv()?;
    ensure!(
        d == Frame::Deliver {
            seq: new_seq,
            from: b_id,
            envelope: b"sealed-under-epoch-2".to_vec()
        },
        "after a new epoch A gets only the new clip, not the stored epoch-1 one: {d:?}"
    );
    // The v1 revoke would end B's session without a new epoch (B would
    // keep the key): refused on an account past epoch 0, nothing changed.
    let r = t.delete(&format!("/api/v1/devices/{}", b.device), &a.token)?;
    ensure!(
        r.status == 409
            && r.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("clipmesh devices --revoke")),
        "a v1 revoke of another device at epoch 2: {r:?}"
    );
    let keys = t.get("/api/v2/device-keys", Some(&b.token))?;
    ensure!(
        keys.status == 200 && keys.body["epoch"] == 2,
        "B's session after the refused v1 revoke: {keys:?}"
    );
    // An id that is no device of this account is not found, as at epoch 0
    // (C's was revoked by the rotation).
    for id in [c.device, 999_999_999] {
        let r = t.delete(&format!("/api/v1/devices/{id}"), &a.token)?;
        ensure!(
            r.status == 404,
            "a v1 revoke of no device ({id}) at epoch 2: {r:?}"
        );
    }
    // A device may still end its own session that way (a logout).
    let r = t.delete(&format!("/api/v1/devices/{}", b.device), &b.token)?;
    ensure!(r.status == 204, "a device's v1 revoke of itself: {r:?}");
    let gone = t.get("/api/v2/device-keys", Some(&b.token))?;
    ensure!(
        gone.status == 401,
        "B's session after its own revoke: {gone:?}"
    );
    Ok(())
}
