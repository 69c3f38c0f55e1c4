//! A scripted ClipCascade-style client, written from the protocol
//! description alone (`docs/protocol.md`, "ClipCascade compatibility"),
//! with none of clipmesh's own ClipCascade code: its login, STOMP framing
//! and encryption are done here again, independently, so the end-to-end
//! tests check clipmesh's relay and its `--profile clipcascade` daemon
//! against a second implementation.
//!
//! - [`CcClient::login`]: `GET /login` (cookie, `_csrf`), form
//!   `POST /login` with the SHA3-512 hex of the password, the redirect
//!   followed by hand with the one `JSESSIONID` kept, success = a final 200
//!   page without "bad credentials".
//! - [`CcClient::stomp`]: `/clipsocket` with the cookie, `CONNECT`,
//!   `SUBSCRIBE` to `/user/queue/cliptext` (with a receipt, so the caller
//!   knows the subscription is live), as text frames (the desktop client)
//!   or binary ones (the Android client).
//! - [`CcKey`]: PBKDF2-HMAC-SHA256 (salt = user name + password + custom
//!   salt), AES-256-GCM with a 16-byte (desktop) or 12-byte (Android)
//!   nonce, the `{"nonce","ciphertext","tag"}` payload JSON.
//!
//! Loopback only: [`CcClient::login`] refuses any other host.

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce, Tag};
use anyhow::{anyhow, bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use sha3::Digest;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// ClipCascade's default PBKDF2 iteration count.
pub const DEFAULT_ITERATIONS: u32 = 664_937;
/// How long one blocking read may wait.
const READ_TICK: Duration = Duration::from_millis(200);

/// The lowercase hex SHA3-512 of a password (what the login sends).
pub fn login_hash(password: &str) -> String {
    hex::encode(sha3::Sha3_512::digest(password.as_bytes()))
}

/// Which nonce length the client encrypts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceLen {
    /// 16 bytes, as the desktop client.
    Desktop,
    /// 12 bytes, as the Android client (inferred).
    Android,
}

/// A ClipCascade clip key.
pub struct CcKey([u8; 32]);

impl CcKey {
    /// PBKDF2-HMAC-SHA256(password, username + password + custom salt).
    pub fn derive(username: &str, password: &str, custom_salt: &str, iterations: u32) -> Self {
        let salt = format!("{username}{password}{custom_salt}");
        let mut k = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
            password.as_bytes(),
            salt.as_bytes(),
            iterations,
            &mut k,
        );
        Self(k)
    }

    /// The key bytes (to compare with the known answer).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts `plain` into the payload JSON text.
    pub fn seal(&self, plain: &[u8], nonce: NonceLen) -> Result<String> {
        let mut buf = plain.to_vec();
        let (n, tag) = match nonce {
            NonceLen::Desktop => {
                let mut n = [0u8; 16];
                rand::thread_rng().fill_bytes(&mut n);
                let c =
                    AesGcm::<Aes256, U16>::new_from_slice(&self.0).map_err(|_| anyhow!("key"))?;
                let tag = c
                    .encrypt_in_place_detached(Nonce::<U16>::from_slice(&n), b"", &mut buf)
                    .map_err(|_| anyhow!("seal"))?;
                (n.to_vec(), tag.to_vec())
            }
            NonceLen::Android => {
                let mut n = [0u8; 12];
                rand::thread_rng().fill_bytes(&mut n);
                let c =
                    AesGcm::<Aes256, U12>::new_from_slice(&self.0).map_err(|_| anyhow!("key"))?;
                let tag = c
                    .encrypt_in_place_detached(Nonce::<U12>::from_slice(&n), b"", &mut buf)
                    .map_err(|_| anyhow!("seal"))?;
                (n.to_vec(), tag.to_vec())
            }
        };
        Ok(json!({
            "nonce": B64.encode(n),
            "ciphertext": B64.encode(&buf),
            "tag": B64.encode(tag),
        })
        .to_string())
    }

    /// Decrypts a payload JSON text.
    pub fn open(&self, payload: &str) -> Result<Vec<u8>> {
        let v: Value = serde_json::from_str(payload).context("payload is not JSON")?;
        let field = |k: &str| -> Result<Vec<u8>> {
            let s = v[k]
                .as_str()
                .with_context(|| format!("payload has no {k}"))?;
            B64.decode(s).with_context(|| format!("{k} is not base64"))
        };
        let (n, mut buf, tag) = (field("nonce")?, field("ciphertext")?, field("tag")?);
        ensure!(tag.len() == 16, "tag is {} bytes", tag.len());
        let tag = Tag::<U16>::from_slice(&tag);
        let bad_key = |_| anyhow!("key");
        let ok = match n.len() {
            16 => AesGcm::<Aes256, U16>::new_from_slice(&self.0)
                .map_err(bad_key)?
                .decrypt_in_place_detached(Nonce::<U16>::from_slice(&n), b"", &mut buf, tag)
                .is_ok(),
            12 => AesGcm::<Aes256, U12>::new_from_slice(&self.0)
                .map_err(bad_key)?
                .decrypt_in_place_detached(Nonce::<U12>::from_slice(&n), b"", &mut buf, tag)
                .is_ok(),
            l => bail!("nonce of {l} bytes"),
        };
        ensure!(ok, "payload does not decrypt");
        Ok(buf)
    }
}

/// A logged-in client: its server and its one cookie.
#[derive(Debug, Clone)]
pub struct CcClient {
    base: String,
    /// The `JSESSIONID` value.
    pub cookie: String,
}

/// One HTTP answer: status, the `JSESSIONID` it sets, `Location`, body.
struct Answer {
    status: u16,
    cookie: Option<String>,
    location: Option<String>,
    body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer> {
    let mut r = r.context("request")?;
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("JSESSIONID="))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .filter(|v| !v.is_empty());
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Answer {
        status: r.status().as_u16(),
        cookie,
        location,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    })
}

impl CcClient {
    /// Logs in as the clients do. `base` must be a loopback `http://` URL.
    pub fn login(base: &str, user: &str, password: &str) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("scripted client: http:// loopback URLs only"))?;
        ensure!(
            host.starts_with("127.0.0.1:"),
            "scripted client: loopback only, not {base}"
        );
        let agent = agent();
        let page = answer(agent.get(format!("{base}/login")).call())?;
        ensure!(page.status == 200, "GET /login: {}", page.status);
        let mut cookie = page.cookie.context("GET /login set no JSESSIONID")?;
        let marker = "name=\"_csrf\" value=\"";
        let at = page.body.find(marker).context("no _csrf field")? + marker.len();
        let csrf = page.body[at..].split('"').next().unwrap_or_default();
        let hash = login_hash(password);
        let mut last = answer(
            agent
                .post(format!("{base}/login"))
                .header("Cookie", format!("JSESSIONID={cookie}"))
                .header("User-Agent", "scripted-clipcascade/1.0")
                .send_form([("username", user), ("password", &hash), ("_csrf", csrf)]),
        )?;
        for _ in 0..4 {
            if let Some(c) = last.cookie.take() {
                cookie = c;
            }
            if !(300..400).contains(&last.status) {
                break;
            }
            let to = last.location.clone().context("redirect without Location")?;
            let url = if to.starts_with('/') {
                format!("{base}{to}")
            } else {
                to
            };
            ensure!(url.starts_with(&base), "redirected off the server: {url}");
            last = answer(
                agent
                    .get(url)
                    .header("Cookie", format!("JSESSIONID={cookie}"))
                    .call(),
            )?;
        }
        if last.status == 200 && !last.body.to_ascii_lowercase().contains("bad credentials") {
            Ok(Self { base, cookie })
        } else {
            bail!("login refused ({})", last.status)
        }
    }

    /// `GET path` with the cookie: status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let a = answer(
            agent()
                .get(format!("{}{path}", self.base))
                .header("Cookie", format!("JSESSIONID={}", self.cookie))
                .call(),
        )?;
        Ok((a.status, a.body))
    }

    /// Opens `/clipsocket`, connects and subscribes; `binary` sends every
    /// frame as a binary message.
    pub fn stomp(&self, binary: bool) -> Result<Stomp> {
        let url = format!("{}/clipsocket", self.base.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Cookie", format!("JSESSIONID={}", self.cookie).parse()?);
        let (mut ws, _) = tungstenite::connect(req).context("/clipsocket")?;
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(READ_TICK))?;
        }
        let mut s = Stomp {
            ws,
            binary,
            pending: Vec::new(),
        };
        s.write("CONNECT\naccept-version:1.0,1.1\nheart-beat:0,20000\n\n\0")?;
        let f = s.next_frame(Duration::from_secs(20))?;
        ensure!(f.command == "CONNECTED", "expected CONNECTED, got {f:?}");
        s.write("SUBSCRIBE\nid:sub-0\ndestination:/user/queue/cliptext\nreceipt:sub-0\n\n\0")?;
        let f = s.next_frame(Duration::from_secs(20))?;
        ensure!(
            f.command == "RECEIPT" && f.header("receipt-id") == Some("sub-0"),
            "expected the subscription's RECEIPT, got {f:?}"
        );
        Ok(s)
    }
}

/// One STOMP frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The command line.
    pub command: String,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body (NUL removed).
    pub body: String,
}

impl Frame {
    /// A header's value.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
}

/// A received clip, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// `type`.
    pub kind: String,
    /// The decrypted plaintext.
    pub plain: Vec<u8>,
}

/// A STOMP session on `/clipsocket`.
pub struct Stomp {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    binary: bool,
    /// Frames read but not yet returned (several in one message).
    pending: Vec<Frame>,
}

impl Stomp {
    fn write(&mut self, text: &str) -> Result<()> {
        let m = if self.binary {
            Message::Binary(text.as_bytes().to_vec().into())
        } else {
            Message::Text(text.into())
        };
        self.ws.send(m).context("write")?;
        Ok(())
    }

    /// Sends a clip: `{"payload": sealed, "type": kind}` to `/app/cliptext`.
    pub fn send(&mut self, key: &CcKey, nonce: NonceLen, kind: &str, plain: &[u8]) -> Result<()> {
        let body = json!({"payload": key.seal(plain, nonce)?, "type": kind}).to_string();
        self.write(&format!("SEND\ndestination:/app/cliptext\n\n{body}\0"))
    }

    /// The next STOMP frame within `timeout`, answering heart-beats.
    pub fn next_frame(&mut self, timeout: Duration) -> Result<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            if Instant::now() >= deadline {
                bail!("no STOMP frame within {timeout:?}");
            }
            let bytes = match self.ws.read() {
                Ok(Message::Text(t)) => t.as_bytes().to_vec(),
                Ok(Message::Binary(b)) => b.to_vec(),
                Ok(Message::Close(c)) => bail!("closed by the server: {c:?}"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e).context("read"),
            };
            if bytes.iter().all(|b| *b == b'\n' || *b == b'\r') {
                // A heart-beat: answered, as the desktop client does.
                self.write("\n")?;
                continue;
            }
            let text = String::from_utf8(bytes).context("frame is not UTF-8")?;
            for raw in text.split('\0') {
                let raw = raw.trim_start_matches(['\n', '\r']);
                if raw.is_empty() {
                    continue;
                }
                let (head, body) = raw.split_once("\n\n").context("frame without body")?;
                let mut lines = head.lines();
                let command = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                self.pending.push(Frame {
                    command,
                    headers,
                    body: body.to_owned(),
                });
            }
        }
    }

    /// The next `MESSAGE` within `timeout`, opened with `key`. Other
    /// frames (receipts) are skipped; an `ERROR` fails.
    pub fn next_clip(&mut self, key: &CcKey, timeout: Duration) -> Result<Clip> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.next_frame(left)?;
            match f.command.as_str() {
                "MESSAGE" => {
                    ensure!(!f.body.contains('\n'), "raw newline in a MESSAGE body");
                    let v: Value = serde_json::from_str(&f.body).context("MESSAGE body")?;
                    let payload = v["payload"].as_str().context("no payload")?;
                    return Ok(Clip {
                        kind: v["type"].as_str().unwrap_or("text").to_owned(),
                        plain: key.open(payload)?,
                    });
                }
                "ERROR" => bail!("server ERROR: {}", f.body),
                _ => {}
            }
        }
    }

    /// Whether a `MESSAGE` arrives within `quiet` (for "nothing more came").
    pub fn quiet_for(&mut self, quiet: Duration) -> Result<Option<Frame>> {
        match self.next_frame(quiet) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.to_string().starts_with("no STOMP frame") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers_from_the_description() {
        assert_eq!(
            hex::encode(CcKey::derive("alice", "secret", "", DEFAULT_ITERATIONS).bytes()),
            "9a419e8741cc418c613e83f295d6cb9d6b2b49366404fc4d4e3807a7670b0a9b"
        );
        assert_eq!(
            login_hash("secret"),
            "b778a39a3663719dfc5e48c9d78431b1e45c2af9df538782bf199c189dabeac7\
             680ada57dcec8eee91c4e3bf3bfa9af6ffde90cd1d249d1c6121d7b759a001b1"
        );
    }

    #[test]
    fn both_nonce_lengths_round_trip() {
        let k = CcKey([7; 32]);
        for n in [NonceLen::Desktop, NonceLen::Android] {
            let p = k.seal(b"hello", n).unwrap();
            assert_eq!(k.open(&p).unwrap(), b"hello");
        }
        assert!(CcKey([8; 32])
            .open(&k.seal(b"x", NonceLen::Desktop).unwrap())
            .is_err());
    }

    #[test]
    fn login_refuses_other_hosts_before_connecting() {
        let e = CcClient::login("http://192.0.2.1:80", "a", "b").unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
