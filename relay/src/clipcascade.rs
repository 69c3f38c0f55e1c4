//! A drop-in surface for existing ClipCascade clients (desktop and
//! Android), so they move to this relay with only a new URL.
//!
//! Built from the protocol description in `docs/protocol.md` ("ClipCascade
//! compatibility"); no ClipCascade code. The pieces:
//!
//! - `login.rs`: the cookie login (`GET`/`POST /login` with a `_csrf`
//!   field and a `JSESSIONID` cookie), `/logout` and the small JSON
//!   endpoints the clients call after login.
//! - `socket.rs`: STOMP 1.1 on `/clipsocket`. Each session joins the
//!   user's room like a clipmesh device; the room carries the ClipCascade
//!   message body to every ClipCascade member of the user, the sender
//!   included.
//! - `account.rs`: `PUT /api/v1/clipcascade`, the switch a clipmesh device
//!   uses to turn compatibility on (with the login hash) or off.
//! - `signal.rs`: the JSON signalling of ClipCascade's P2P mode on
//!   `/p2psignaling`, routed within one user only.
//!
//! Sessions: the `JSESSIONID` is a 32-byte random token. The relay stores
//! its SHA-256, tied to a device row, so sessions survive a restart and
//! show (and are revoked) like any device. Before login the cookie is not
//! stored at all: the `_csrf` token is an HMAC of the cookie under the
//! server secret, so the login page costs the relay no state.
//!
//! Accounts opt in: a ClipCascade client logs in with SHA3-512 hex of the
//! password, checked against a separate verifier (an Argon2id PHC hash of
//! that hex) that exists only for accounts with compatibility on.
//!
//! **Invariant:** the relay never parses or decrypts a ClipCascade payload;
//! it checks the message's JSON shape and size and passes the payload on.

mod account;
mod login;
mod signal;
mod socket;

pub use account::{login_hash, normalise_login_hash};

pub use crate::signals::{uuid_v4, SignalHub};
pub use socket::{StompOutput, StompSession};

use crate::app::AppState;
use crate::error::ApiError;
use crate::store::CcSession;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The session cookie's name, as the clients expect it.
pub const COOKIE: &str = "JSESSIONID";
/// The login form's CSRF field, and `/csrf-token`'s `parameterName`.
pub const CSRF_FIELD: &str = "_csrf";
/// `/csrf-token`'s `headerName`.
pub const CSRF_HEADER: &str = "X-CSRF-TOKEN";
/// The STOMP destination clients send to.
pub const SEND_DESTINATION: &str = "/app/cliptext";
/// The STOMP destination clients subscribe to.
pub const USER_DESTINATION: &str = "/user/queue/cliptext";
/// Longest `Cookie` header considered, bytes (longer ones are ignored).
const MAX_COOKIE_HEADER: usize = 8192;
/// HMAC domain of CSRF tokens.
const CSRF_INFO: &[u8] = b"clipmesh/v1/clipcascade-csrf\0";

/// The ClipCascade routes (only the account switch when
/// `clipcascade.enabled` is off).
pub fn routes(config: &crate::config::ClipCascadeConfig) -> Router<Arc<AppState>> {
    let account = Router::new().route("/api/v1/clipcascade", axum::routing::put(account::set));
    if !config.enabled {
        return account;
    }
    account
        .route("/", get(login::home))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout).get(login::logout_page))
        .route("/signup", get(login::signup_page))
        .route("/csrf-token", get(login::csrf_token_json))
        .route("/server-mode", get(login::server_mode))
        .route("/max-size", get(login::max_size))
        .route("/max-message-size", get(login::max_message_size))
        .route("/stun-url", get(login::stun_url))
        .route("/validate-session", get(login::validate_session))
        .route("/whoami", get(login::whoami))
        .route("/health", get(|| async { "OK" }))
        .route("/ping", get(|| async { "pong" }))
        .route("/clipsocket", get(socket::upgrade))
        .route("/p2psignaling", get(signal::upgrade))
}

/// The largest STOMP message accepted on `/clipsocket`: 2·L, room for
/// base64 and encryption around an item of L bytes.
pub fn transport_limit(c: &crate::config::ClipCascadeConfig) -> u64 {
    c.max_size.saturating_mul(2)
}

/// The `JSESSIONID` the request carries, if it has a token's shape.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        if v.len() > MAX_COOKIE_HEADER {
            continue;
        }
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=') {
                if k.trim() == COOKIE {
                    let val = val.trim().trim_matches('"');
                    if crate::auth::token_shape_ok(val) {
                        found = Some(val);
                    }
                }
            }
        }
    }
    found
}

/// The CSRF token of a session id: base64url of an HMAC under the server
/// secret, so no state is kept for pages shown before login.
pub fn csrf_token(secret: &[u8], sid: &str) -> String {
    let mut out = [0u8; 32];
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(CSRF_INFO);
        mac.update(sid.as_bytes());
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
}

/// Whether `token` is the CSRF token of `sid` (constant time).
pub fn csrf_ok(secret: &[u8], sid: &str, token: &str) -> bool {
    let want = csrf_token(secret, sid);
    want.len() == token.len() && bool::from(want.as_bytes().ct_eq(token.as_bytes()))
}

/// The `Set-Cookie` value for a session id.
fn set_cookie(sid: &str, secure: bool) -> HeaderValue {
    let v = format!(
        "{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    // The id is base64url: always a valid header value.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("JSESSIONID=; Path=/"))
}

/// The `Set-Cookie` value that removes the session cookie.
fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("JSESSIONID=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
}

/// The live ClipCascade session of a request, if any.
pub async fn session(s: &AppState, headers: &HeaderMap) -> Result<Option<CcSession>, ApiError> {
    let Some(sid) = session_cookie(headers) else {
        return Ok(None);
    };
    let hash = crate::auth::token_hash(sid);
    Ok(s.store.call(move |db| db.cc_session(&hash)).await?)
}

/// The answer to an unauthenticated JSON or WebSocket request: 401 (the
/// original server redirects, which a WebSocket handshake cannot follow).
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "Unauthorized: log in at /login",
    )
        .into_response()
}

/// A session, or the 401 answer.
pub async fn require(s: &AppState, headers: &HeaderMap) -> Result<CcSession, Response> {
    match session(s, headers).await {
        Ok(Some(sess)) => Ok(sess),
        Ok(None) => {
            crate::metrics::Metrics::add(&s.metrics.auth_failures, 1);
            Err(unauthorized())
        }
        Err(e) => Err(e.into_response()),
    }
}

/// A 302 to `to`.
fn redirect(to: &'static str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// `s` with `& < > " '` escaped for HTML.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_and_bad_ones_ignored() {
        let (sid, _) = crate::auth::new_token();
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={sid}; c=d")).unwrap(),
        );
        assert_eq!(session_cookie(&h), Some(sid.as_str()));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("JSESSIONID=../../etc; x"),
        );
        assert_eq!(session_cookie(&h), None);
        let mut h = HeaderMap::new();
        let long = format!("{COOKIE}={sid}; {}", "x=y; ".repeat(3000));
        h.append(header::COOKIE, HeaderValue::from_str(&long).unwrap());
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn csrf_is_bound_to_session_and_secret() {
        let t = csrf_token(b"k", "sid1");
        assert!(csrf_ok(b"k", "sid1", &t));
        assert!(!csrf_ok(b"k", "sid2", &t));
        assert!(!csrf_ok(b"j", "sid1", &t));
        assert!(!csrf_ok(b"k", "sid1", ""));
    }

    #[test]
    fn uuid_shape_and_escaping() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
