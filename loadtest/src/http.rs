//! A minimal HTTP/1.1 client for the relay's account API and `/metrics`.
//!
//! The load tool creates thousands of sessions; a tiny client on tokio
//! sockets (one request per connection, `Connection: close`) keeps that
//! non-blocking and lets requests come from the same loopback source pool as
//! the WebSockets. A response ends at its `Content-Length` or last chunk,
//! not only at EOF: some servers (workerd) keep the connection open for
//! seconds despite `Connection: close`.

use crate::target::Target;
use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response body accepted.
const MAX_RESPONSE: usize = 1024 * 1024;

/// A response: status, `Retry-After` seconds if present, and body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
    /// The `JSESSIONID` a `Set-Cookie` header sets (ClipCascade login).
    pub cookie: Option<String>,
    /// The `Location` header.
    pub location: Option<String>,
}

/// POSTs `body` as JSON to `path` and returns the response.
pub async fn post_json(target: &Target, path: &str, body: &[u8]) -> anyhow::Result<Response> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.addr,
        body.len()
    );
    request(target, &head, body).await
}

/// Sends `method path` with extra header lines (each `Name: value`) and a
/// body, and returns the response.
pub async fn send(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> anyhow::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.addr,
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    request(target, &head, body).await
}

/// GETs `path` (e.g. `/metrics`) and returns the response.
pub async fn get(target: &Target, path: &str) -> anyhow::Result<Response> {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        target.addr
    );
    request(target, &head, &[]).await
}

/// Sends one request on a fresh connection and reads the whole response.
async fn request(target: &Target, head: &str, body: &[u8]) -> anyhow::Result<Response> {
    let mut stream = target.tcp().await?;
    stream
        .write_all(head.as_bytes())
        .await
        .context("writing request")?;
    stream
        .write_all(body)
        .await
        .context("writing request body")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.context("reading response")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            bail!("response larger than {MAX_RESPONSE} bytes");
        }
        if complete(&buf) {
            break;
        }
    }
    parse(&buf)
}

/// Whether `buf` holds a whole response: its header, then as many body
/// bytes as `Content-Length` says, or a chunked body up to its last chunk,
/// or nothing for 1xx, 204 and 304. Without either header the response
/// ends at EOF.
fn complete(buf: &[u8]) -> bool {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let Ok(head) = std::str::from_utf8(&buf[..split]) else {
        return false;
    };
    let body = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok());
    if matches!(status, Some(100..=199 | 204 | 304)) {
        return true;
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                return value.trim().parse::<usize>().is_ok_and(|n| body.len() >= n)
            }
            "transfer-encoding" if value.trim().eq_ignore_ascii_case("chunked") => {
                return body.ends_with(b"0\r\n\r\n")
            }
            _ => {}
        }
    }
    false
}

fn parse(buf: &[u8]) -> anyhow::Result<Response> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response has no header end")?;
    let head = std::str::from_utf8(&buf[..split]).context("response header is not UTF-8")?;
    let mut raw_body = &buf[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut retry_after = None;
    let mut content_length = None;
    let mut cookie = None;
    let mut location = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "retry-after" => retry_after = value.parse().ok(),
            "content-length" => content_length = value.parse::<usize>().ok(),
            "set-cookie" => {
                if let Some(v) = value.strip_prefix("JSESSIONID=") {
                    let v = v.split(';').next().unwrap_or_default();
                    cookie = (!v.is_empty()).then(|| v.to_owned());
                }
            }
            "location" => location = Some(value.to_owned()),
            _ => {}
        }
    }
    let body = if chunked {
        let mut out = Vec::new();
        loop {
            let end = raw_body
                .windows(2)
                .position(|w| w == b"\r\n")
                .context("truncated chunk size")?;
            let size_str = std::str::from_utf8(&raw_body[..end]).context("chunk size")?;
            let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                .context("chunk size")?;
            raw_body = &raw_body[end + 2..];
            if size == 0 {
                break out;
            }
            if raw_body.len() < size + 2 {
                bail!("truncated chunk");
            }
            out.extend_from_slice(&raw_body[..size]);
            raw_body = &raw_body[size + 2..];
        }
    } else {
        let n = content_length.unwrap_or(raw_body.len()).min(raw_body.len());
        raw_body[..n].to_vec()
    };
    Ok(Response {
        status,
        retry_after,
        body,
        cookie,
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_when_a_response_is_complete() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{"));
        assert!(complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"));
        assert!(complete(b"HTTP/1.1 204 No Content\r\n\r\n"));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n"
        ));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ));
        // Neither header: the body ends at EOF.
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\nabc"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\ncontent-len"));
    }

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse(
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after, Some(3));
        assert_eq!(r.body, b"abc");
        let r = parse(
            b"HTTP/1.1 302 Found\r\nset-cookie: JSESSIONID=abc; Path=/; HttpOnly\r\nlocation: /\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.cookie.as_deref(), Some("abc"));
        assert_eq!(r.location.as_deref(), Some("/"));
    }
}
