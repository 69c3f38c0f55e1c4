//! A small blob client for the tests: ureq (on `spawn_blocking`) for
//! whole requests and streamed bodies, raw TCP for a PATCH that breaks off.

use std::collections::HashMap;
use std::io::Read;
use tokio::io::AsyncWriteExt;

/// An answer with its headers (lowercase names) and raw body.
pub struct BResp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl BResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    pub fn offset(&self) -> u64 {
        self.header("upload-offset")
            .expect("Upload-Offset header")
            .parse()
            .unwrap()
    }
    pub fn error(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

pub fn blob_url(base: &str, id: &str) -> String {
    format!("{base}/api/v1/blobs/{id}")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn finish(mut r: ureq::http::Response<ureq::Body>) -> BResp {
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let status = r.status().as_u16();
    let mut body = Vec::new();
    let _ = r
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .reader()
        .read_to_end(&mut body);
    BResp {
        status,
        headers,
        body,
    }
}

/// One blob request. `body` only for POST/PATCH.
pub async fn breq(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> BResp {
    let (method, url) = (method.to_owned(), url.to_owned());
    let token = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let a = agent();
        macro_rules! with_headers {
            ($r:expr) => {{
                let mut r = $r;
                if let Some(t) = &token {
                    r = r.header("Authorization", t);
                }
                for (k, v) in &headers {
                    r = r.header(k, v);
                }
                r
            }};
        }
        let r = match method.as_str() {
            "GET" => with_headers!(a.get(&url)).call(),
            "HEAD" => with_headers!(a.head(&url)).call(),
            "DELETE" => with_headers!(a.delete(&url)).call(),
            "POST" => with_headers!(a.post(&url)).send(&body.unwrap_or_default()[..]),
            "PATCH" => with_headers!(a.patch(&url)).send(&body.unwrap_or_default()[..]),
            m => panic!("method {m}"),
        }
        .unwrap();
        finish(r)
    })
    .await
    .unwrap()
}

pub async fn create(base: &str, token: &str, id: &str, len: u64) -> BResp {
    breq(
        "POST",
        &blob_url(base, id),
        Some(token),
        &[("Upload-Length", len.to_string())],
        None,
    )
    .await
}

pub async fn head(base: &str, token: &str, id: &str) -> BResp {
    breq("HEAD", &blob_url(base, id), Some(token), &[], None).await
}

pub async fn patch(base: &str, token: &str, id: &str, offset: u64, body: &[u8]) -> BResp {
    breq(
        "PATCH",
        &blob_url(base, id),
        Some(token),
        &[("Upload-Offset", offset.to_string())],
        Some(body.to_vec()),
    )
    .await
}

pub async fn get(base: &str, token: &str, id: &str, range: Option<&str>) -> BResp {
    let h: Vec<(&str, String)> = range.map(|r| ("Range", r.to_owned())).into_iter().collect();
    breq("GET", &blob_url(base, id), Some(token), &h, None).await
}

/// A PATCH whose body is read from `reader` as it is sent (chunked, no
/// Content-Length), so the client never holds it whole.
pub async fn patch_stream(
    base: &str,
    token: &str,
    id: &str,
    offset: u64,
    mut reader: impl Read + Send + 'static,
) -> BResp {
    let url = blob_url(base, id);
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let r = agent()
            .patch(&url)
            .header("Authorization", &auth)
            .header("Upload-Offset", &offset.to_string())
            .send(ureq::SendBody::from_reader(&mut reader))
            .unwrap();
        finish(r)
    })
    .await
    .unwrap()
}

/// Streams a GET body into `sink` piece by piece; returns status and length.
pub async fn get_stream(
    base: &str,
    token: &str,
    id: &str,
    mut sink: impl FnMut(&[u8]) + Send + 'static,
) -> (u16, u64) {
    let url = blob_url(base, id);
    let auth = format!("Bearer {token}");
    tokio::task::spawn_blocking(move || {
        let mut r = agent()
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .unwrap();
        let status = r.status().as_u16();
        let mut rd = r.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = rd.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sink(&buf[..n]);
            total += n as u64;
        }
        (status, total)
    })
    .await
    .unwrap()
}

/// Sends a PATCH declaring `declared` body bytes but only `sent` of them,
/// then closes the connection.
pub async fn broken_patch(
    addr: std::net::SocketAddr,
    token: &str,
    id: &str,
    offset: u64,
    declared: usize,
    sent: &[u8],
) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH /api/v1/blobs/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(sent).await.unwrap();
    s.flush().await.unwrap();
    drop(s);
}

/// Deterministic test bytes: byte `i` of a stream.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9)) as u8
}

/// A reader yielding `len` pattern bytes starting at stream position `from`.
pub struct PatternReader {
    pub pos: u64,
    pub end: u64,
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(self.pos + k as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Peak resident set of this process (VmHWM), bytes.
pub fn vm_hwm() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}
