//! ClipCascade's HTTP surface: the cookie login and logout, and the JSON
//! endpoints the clients call after login.
//!
//! What the clients test for: `GET /login` answers with a `Set-Cookie`
//! and a page holding the `_csrf` hidden field; `POST /login` succeeds when
//! the page reached after redirects is a 200 without "bad credentials",
//! and fails with a page that says "Bad credentials". As the original
//! server does, both answer with a 302 (to `/` or `/login?error`).
//! Unauthenticated JSON requests get 401; a page request gets a redirect.

use super::{
    clear_cookie, csrf_ok, csrf_token, html_escape, redirect, require, session, session_cookie,
    set_cookie, CSRF_FIELD, CSRF_HEADER,
};
use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

type S = State<Arc<AppState>>;

/// Length of the SHA3-512 hex a client sends as `password`.
pub const PASSWORD_HEX_LEN: usize = 128;
/// Longest device name made from a client's `User-Agent`.
const MAX_AGENT: usize = 40;

/// The text the clients look for on a failed login.
const BAD_CREDENTIALS: &str = "Bad credentials";

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>{body}<p><small>clipmesh-relay (ClipCascade compatible)</small></p>\
         </body></html>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn login_form(csrf: &str, note: &str) -> String {
    format!(
        "{note}<form method=\"post\" action=\"/login\">\
         <label>Username <input type=\"text\" name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input type=\"password\" name=\"password\"></label>\
         <input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
         <button type=\"submit\">Sign in</button></form>",
        html_escape(csrf)
    )
}

/// `?error` / `?logout` on the login page.
#[derive(Deserialize, Default)]
pub(super) struct LoginQuery {
    error: Option<String>,
    logout: Option<String>,
}

/// `GET /login`: the form, with a CSRF token bound to the cookie it sets.
pub(super) async fn login_page(
    State(s): S,
    headers: HeaderMap,
    q: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let q = q.map(|Query(q)| q).unwrap_or_default();
    // Keep a cookie the client already has (its page's token stays valid);
    // otherwise start a new one. Either way answer with Set-Cookie: the
    // Android client needs it.
    let sid = match session_cookie(&headers) {
        Some(sid) => sid.to_owned(),
        None => crate::auth::new_token().0,
    };
    let note = if q.error.is_some() {
        format!("<p class=\"error\">{BAD_CREDENTIALS}</p>")
    } else if q.logout.is_some() {
        "<p>You have been signed out.</p>".to_owned()
    } else {
        String::new()
    };
    let mut resp = page(
        StatusCode::OK,
        "Sign in",
        &login_form(&csrf_token(&s.secret, &sid), &note),
    );
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&sid, s.config.tls_cert.is_some()),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The login form's fields.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    username: String,
    password: String,
    #[serde(rename = "_csrf")]
    csrf: String,
}

fn forbidden(why: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!("<p>{}</p>", html_escape(why)),
    )
}

/// A device name from the client's `User-Agent`: printable ASCII only,
/// at most [`MAX_AGENT`] characters.
fn device_name(headers: &HeaderMap) -> String {
    let agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_AGENT)
        .collect();
    let agent = agent.trim();
    if agent.is_empty() {
        "ClipCascade client".to_owned()
    } else {
        format!("ClipCascade ({agent})")
    }
}

/// `POST /login`: checks the CSRF token against the cookie, then the
/// SHA3-512 hex against the account's ClipCascade verifier, through the
/// same login throttle as native logins.
pub(super) async fn login(
    State(s): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "<p>expected a form with username, password and _csrf</p>",
        );
    };
    let Some(cookie) = session_cookie(&headers) else {
        return forbidden("missing session cookie: load /login first");
    };
    if !csrf_ok(&s.secret, cookie, &form.csrf) {
        tracing::debug!("clipcascade login: bad csrf token");
        return forbidden("invalid CSRF token");
    }
    if crate::validate::username(&form.username).is_err()
        || form.password.len() != PASSWORD_HEX_LEN
        || !form.password.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return redirect("/login?error");
    }
    let ip = s.trusted.client_ip(peer, &headers);
    if let Err(e) = crate::http::check_login_throttle(&s, &form.username, ip) {
        let wait = e.retry_after().unwrap_or(1);
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign in",
            &format!(
                "<p class=\"error\">{BAD_CREDENTIALS}: too many attempts; retry in {wait} s</p>"
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return resp;
    }
    let name = form.username.clone();
    let account = match s.store.call(move |db| db.cc_account(&name)).await {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let verifier = account
        .as_ref()
        .filter(|a| !a.disabled)
        .and_then(|a| a.verifier.clone());
    let hex = form.password.to_ascii_lowercase().into_bytes();
    // An unknown account, a disabled one or one without compatibility is
    // checked against a dummy hash, so timing does not tell them apart.
    let ok = match s.hasher.verify_bytes(verifier, hex).await {
        Ok(ok) => ok,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let Some(account) = account.filter(|_| ok) else {
        crate::http::record_login_failure(&s, &form.username, ip);
        tracing::debug!(%ip, "clipcascade login failed");
        return redirect("/login?error");
    };
    crate::http::record_login_success(&s, &form.username, ip);
    let (sid, sid_hash) = crate::auth::new_token();
    let (user, dname) = (account.user, device_name(&headers));
    let max = s.config.clipcascade.max_sessions_per_user;
    let now = s.clock.unix_now();
    let created = s
        .store
        .call(move |db| db.create_cc_session(user, &dname, &sid_hash, max, now))
        .await;
    let (device, ended) = match created {
        Ok(v) => v,
        Err(e) => return ApiError::from(e).into_response(),
    };
    for d in ended {
        s.registry.revoke(user, Some(d)).await;
    }
    tracing::info!(%user, %device, "clipcascade session started");
    let mut resp = redirect("/");
    // A new id at login (no session fixation).
    resp.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&sid, s.config.tls_cert.is_some()),
    );
    resp
}

/// `GET /`: the page a successful login lands on.
pub(super) async fn home(State(s): S, headers: HeaderMap) -> Response {
    match session(&s, &headers).await {
        Ok(Some(sess)) => page(
            StatusCode::OK,
            "clipmesh",
            &format!(
                "<p>Signed in as {}.</p><form method=\"post\" action=\"/logout\">\
                 <input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                html_escape(&sess.username),
                csrf_token(&s.secret, session_cookie(&headers).unwrap_or_default())
            ),
        ),
        Ok(None) => redirect("/login"),
        Err(e) => e.into_response(),
    }
}

/// The logout form's field.
#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(rename = "_csrf")]
    csrf: Option<String>,
}

/// `POST /logout`: ends the session (with a valid `_csrf`, as a form field
/// or an `X-CSRF-TOKEN` header).
pub(super) async fn logout(
    State(s): S,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let field = form.ok().and_then(|Form(f)| f.csrf);
    let header_token = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(token) = field.or(header_token) else {
        return forbidden("missing CSRF token");
    };
    let Some(cookie) = session_cookie(&headers) else {
        return redirect("/login?logout");
    };
    if !csrf_ok(&s.secret, cookie, &token) {
        return forbidden("invalid CSRF token");
    }
    match session(&s, &headers).await {
        Ok(Some(sess)) => {
            let (user, device) = (sess.user, sess.device);
            if let Err(e) = s.store.call(move |db| db.delete_device(user, device)).await {
                return ApiError::from(e).into_response();
            }
            s.registry.revoke(user, Some(device)).await;
            tracing::info!(%user, %device, "clipcascade session ended");
        }
        Ok(None) => {}
        Err(e) => return e.into_response(),
    }
    let mut resp = redirect("/login?logout");
    resp.headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    resp
}

/// `GET /logout`: a browser's link; logging out needs the POST.
pub(super) async fn logout_page(State(s): S, headers: HeaderMap) -> Response {
    match session_cookie(&headers) {
        Some(sid) => page(
            StatusCode::OK,
            "Sign out",
            &format!(
                "<form method=\"post\" action=\"/logout\">\
                 <input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                csrf_token(&s.secret, sid)
            ),
        ),
        None => redirect("/login"),
    }
}

/// `GET /signup`: accounts are made with clipmesh, not here.
pub(super) async fn signup_page() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Sign up",
        "<p>This relay creates accounts with clipmesh: run <code>clipmesh signup \
         --clipcascade-compat</code>, or ask the operator for <code>clipmesh-relay user add \
         --clipcascade</code>.</p>",
    )
}

/// `GET /csrf-token`.
pub(super) async fn csrf_token_json(State(s): S, headers: HeaderMap) -> Response {
    if let Err(r) = require(&s, &headers).await {
        return r;
    }
    let sid = session_cookie(&headers).unwrap_or_default();
    Json(json!({
        "token": csrf_token(&s.secret, sid),
        "headerName": CSRF_HEADER,
        "parameterName": CSRF_FIELD,
    }))
    .into_response()
}

/// `GET /server-mode`: the account's mode.
pub(super) async fn server_mode(State(s): S, headers: HeaderMap) -> Response {
    match require(&s, &headers).await {
        Ok(sess) => Json(json!({ "mode": sess.mode.as_str() })).into_response(),
        Err(r) => r,
    }
}

/// `GET /max-size`: L, the largest raw item, bytes.
pub(super) async fn max_size(State(s): S, headers: HeaderMap) -> Response {
    match require(&s, &headers).await {
        Ok(_) => Json(json!({ "maxsize": s.config.clipcascade.max_size })).into_response(),
        Err(r) => r,
    }
}

/// `GET /max-message-size`: the transport limit (2·L), MiB, rounded up.
pub(super) async fn max_message_size(State(s): S, headers: HeaderMap) -> Response {
    match require(&s, &headers).await {
        Ok(_) => {
            let mib = super::transport_limit(&s.config.clipcascade).div_ceil(1024 * 1024);
            Json(json!({ "maxmessagesize": mib })).into_response()
        }
        Err(r) => r,
    }
}

/// `GET /stun-url`.
pub(super) async fn stun_url(State(s): S, headers: HeaderMap) -> Response {
    match require(&s, &headers).await {
        Ok(_) => Json(json!({ "url": s.config.clipcascade.stun_url })).into_response(),
        Err(r) => r,
    }
}

/// `GET /validate-session`: exactly `OK`, or 401.
pub(super) async fn validate_session(State(s): S, headers: HeaderMap) -> Response {
    match require(&s, &headers).await {
        Ok(_) => "OK".into_response(),
        Err(r) => r,
    }
}

/// `GET /whoami`.
pub(super) async fn whoami(State(s): S, headers: HeaderMap) -> Response {
    match require(&s, &headers).await {
        Ok(sess) => Json(json!({
            "username": sess.username,
            "role": if sess.is_admin { "ADMIN" } else { "USER" },
        }))
        .into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_from_agents_are_tame() {
        let mut h = HeaderMap::new();
        assert_eq!(device_name(&h), "ClipCascade client");
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("okhttp/4.12.0 \t<script>"),
        );
        assert_eq!(device_name(&h), "ClipCascade (okhttp/4.12.0 <script>)");
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_str(&"x".repeat(500)).unwrap(),
        );
        assert!(device_name(&h).len() <= MAX_AGENT + 14);
    }
}
