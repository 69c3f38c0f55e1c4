//! ClipCascade's HTTP login, from the client side (blocking, ureq; async
//! callers use `spawn_blocking`).
//!
//! `GET /login` for the `JSESSIONID` cookie and the `_csrf` field, then a
//! form `POST /login` with the password's SHA3-512 hex. Redirects are not
//! followed automatically: the answer's new cookie is kept and the redirect
//! target fetched by hand, as the original clients do. Success is a final
//! 200 page without "bad credentials". Works against clipmesh-relay and an
//! original ClipCascade server.

use crate::tls::TrustRoots;
use std::time::Duration;
use thiserror::Error;

/// Timeout for one request.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest page read, bytes.
const MAX_PAGE: u64 = 1024 * 1024;
/// Redirects followed after the login POST.
const MAX_REDIRECTS: usize = 4;

/// Why a ClipCascade login or request failed.
#[derive(Debug, Error)]
pub enum WebError {
    /// No answer.
    #[error("server unreachable at {0}: {1}")]
    Unreachable(String, String),
    /// The server refused the user name or password.
    #[error("wrong username or password (or ClipCascade logins are off for this account)")]
    BadCredentials,
    /// The session is no longer valid.
    #[error("the ClipCascade session expired")]
    Unauthorized,
    /// Anything else unexpected.
    #[error("unexpected answer from the ClipCascade server: {0}")]
    Bad(String),
}

/// A ClipCascade HTTP client with its one cookie.
pub struct Web {
    base: String,
    agent: ureq::Agent,
}

/// An answer: status, the `JSESSIONID` it sets, the `Location`, the body.
struct Answer {
    status: u16,
    cookie: Option<String>,
    location: Option<String>,
    body: String,
}

impl Web {
    /// A client for `server` (base URL), trusting `roots` for `https://`.
    pub fn new(server: &str, roots: &TrustRoots) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(roots.ureq_config())
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(TIMEOUT))
            .user_agent(concat!(
                "clipmesh/",
                env!("CARGO_PKG_VERSION"),
                " (clipcascade profile)"
            ))
            .build()
            .into();
        Self {
            base: server.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn unreachable(&self, e: ureq::Error) -> WebError {
        WebError::Unreachable(self.base.clone(), e.to_string())
    }

    fn answer(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, WebError> {
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let cookie = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.trim().strip_prefix("JSESSIONID="))
            .map(|v| v.split(';').next().unwrap_or_default().to_owned())
            .filter(|v| !v.is_empty());
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_PAGE)
            .read_to_string()
            .unwrap_or_default();
        Ok(Answer {
            status,
            cookie,
            location,
            body,
        })
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Result<Answer, WebError> {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut r = self.agent.get(&url);
        if let Some(c) = cookie {
            r = r.header("Cookie", &format!("JSESSIONID={c}"));
        }
        self.answer(r.call())
    }

    /// Logs in with the password's SHA3-512 hex; gives the session cookie.
    pub fn login(&self, username: &str, login_hash: &str) -> Result<String, WebError> {
        let page = self.get("/login", None)?;
        let mut cookie = page
            .cookie
            .ok_or_else(|| WebError::Bad("GET /login set no JSESSIONID".into()))?;
        let csrf = csrf_field(&page.body).unwrap_or_default();
        let form = [
            ("username", username),
            ("password", login_hash),
            ("_csrf", &csrf),
        ];
        let resp = self.answer(
            self.agent
                .post(&format!("{}/login", self.base))
                .header("Cookie", &format!("JSESSIONID={cookie}"))
                .send_form(form),
        )?;
        if let Some(c) = resp.cookie.clone() {
            cookie = c;
        }
        let mut last = resp;
        for _ in 0..MAX_REDIRECTS {
            if !(300..400).contains(&last.status) {
                break;
            }
            let Some(to) = last.location.clone() else {
                break;
            };
            last = self.get(&to, Some(&cookie))?;
            if let Some(c) = last.cookie.clone() {
                cookie = c;
            }
        }
        if last.status == 200 && !last.body.to_ascii_lowercase().contains("bad credentials") {
            Ok(cookie)
        } else if last.status == 429 {
            Err(WebError::Bad(
                "too many login attempts; try again later".into(),
            ))
        } else {
            Err(WebError::BadCredentials)
        }
    }

    /// A JSON endpoint with the session cookie.
    pub fn json(&self, path: &str, cookie: &str) -> Result<serde_json::Value, WebError> {
        let a = self.get(path, Some(cookie))?;
        match a.status {
            200 => serde_json::from_str(&a.body)
                .map_err(|_| WebError::Bad(format!("{path} is not JSON"))),
            // The original server redirects to /login.
            401 | 302 | 303 => Err(WebError::Unauthorized),
            s => Err(WebError::Bad(format!("{path} answered {s}"))),
        }
    }

    /// `GET /max-size`: L, bytes.
    pub fn max_size(&self, cookie: &str) -> Result<u64, WebError> {
        self.json("/max-size", cookie)?["maxsize"]
            .as_u64()
            .ok_or_else(|| WebError::Bad("/max-size has no maxsize".into()))
    }
}

/// The `_csrf` hidden field's value in a login page.
fn csrf_field(page: &str) -> Option<String> {
    let at = page.find("name=\"_csrf\"")?;
    // The value attribute may come before or after the name.
    let tag_start = page[..at].rfind('<')?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[tag_start..tag_end];
    let v = tag.find("value=\"")? + "value=\"".len();
    Some(tag[v..].split('"').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_field_either_attribute_order() {
        assert_eq!(
            csrf_field(r#"<form><input type="hidden" name="_csrf" value="abc"/></form>"#)
                .as_deref(),
            Some("abc")
        );
        assert_eq!(
            csrf_field(r#"<input value="xyz" type="hidden" name="_csrf">"#).as_deref(),
            Some("xyz")
        );
        assert_eq!(csrf_field("<p>no form</p>"), None);
    }
}
