//! The relay's blob store API (`/api/v1/blobs/{id}`), blocking, over ureq.
//!
//! Create with the sealed length, append with `PATCH` at the stored
//! offset, ask the offset with `HEAD`, read with `GET` (and `Range:
//! bytes=N-` to resume). Errors map to [`TransferError`], whose messages
//! name the status and code but never the blob's contents.

use super::TransferError;
use crate::tls::TrustRoots;
use crate::token::TokenCell;
use clipmesh_proto::api::{ApiErrorCode, ErrorBody};
use clipmesh_proto::blob::BlobId;
use std::io::Read;
use std::time::Duration;
use zeroize::Zeroizing;

/// Time to connect or to get response headers. Bodies stream without a
/// total deadline (a 4 GiB blob takes a while); a stalled read still fails
/// after [`BLOB_IO_TIMEOUT`].
pub const BLOB_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Socket buffer of the blob agent, each way.
pub const BLOB_IO_BUFFER: usize = 512 << 10;

/// Header carrying the declared sealed length.
pub const UPLOAD_LENGTH: &str = "Upload-Length";
/// Header carrying the stored offset.
pub const UPLOAD_OFFSET: &str = "Upload-Offset";

/// A blob-store client for one relay and one device token.
#[derive(Clone)]
pub struct BlobClient {
    base: String,
    token: TokenCell,
    agent: ureq::Agent,
}

impl std::fmt::Debug for BlobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobClient({})", self.base)
    }
}

type Resp = ureq::http::Response<ureq::Body>;

impl BlobClient {
    /// A client for the relay at `server`, trusting `roots` for https.
    pub fn new(server: &str, token: &str, roots: &TrustRoots) -> Self {
        Self::with_token(
            server,
            TokenCell::new(Zeroizing::new(token.to_owned())),
            roots,
        )
    }

    /// Like [`BlobClient::new`], presenting whatever token `token` holds at
    /// each request (a running daemon renews it).
    pub fn with_token(server: &str, token: TokenCell, roots: &TrustRoots) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(roots.ureq_config())
            .http_status_as_error(false)
            .timeout_connect(Some(BLOB_IO_TIMEOUT))
            .timeout_recv_response(Some(BLOB_IO_TIMEOUT))
            .timeout_send_request(Some(BLOB_IO_TIMEOUT))
            // Whole sealed chunks move through these: fewer, larger reads
            // and writes than the 128 KiB default.
            .input_buffer_size(BLOB_IO_BUFFER)
            .output_buffer_size(BLOB_IO_BUFFER)
            .user_agent(concat!("clipmesh/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            base: server.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    fn url(&self, id: &BlobId) -> String {
        format!("{}/api/v1/blobs/{id}", self.base)
    }

    fn bearer(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("Bearer {}", self.token.get().as_str()))
    }

    /// `POST`: declares a blob of `sealed_len` bytes. An existing blob of
    /// the same length (a resumed upload) is fine.
    pub fn create(&self, id: &BlobId, sealed_len: u64) -> Result<(), TransferError> {
        let resp = self
            .agent
            .post(&self.url(id))
            .header("Authorization", self.bearer().as_str())
            .header(UPLOAD_LENGTH, &sealed_len.to_string())
            .send_empty()
            .map_err(unreachable)?;
        ok_or_error(resp).map(drop)
    }

    /// `HEAD`: how many sealed bytes the relay has stored.
    pub fn offset(&self, id: &BlobId) -> Result<u64, TransferError> {
        let resp = self
            .agent
            .head(&self.url(id))
            .header("Authorization", self.bearer().as_str())
            .call()
            .map_err(unreachable)?;
        let resp = ok_or_error(resp)?;
        header_u64(&resp, UPLOAD_OFFSET)
    }

    /// `PATCH`: appends `body` at `offset`; returns the new stored offset.
    pub fn append(&self, id: &BlobId, offset: u64, body: &[u8]) -> Result<u64, TransferError> {
        let resp = self
            .agent
            .patch(&self.url(id))
            .header("Authorization", self.bearer().as_str())
            .header(UPLOAD_OFFSET, &offset.to_string())
            .header("Content-Type", "application/octet-stream")
            .send(body)
            .map_err(unreachable)?;
        let resp = ok_or_error(resp)?;
        header_u64(&resp, UPLOAD_OFFSET).or(Ok(offset + body.len() as u64))
    }

    /// `PATCH` with a streamed body of exactly `len` bytes read from
    /// `body` (several sealed chunks in one request, never buffered whole).
    pub fn append_stream(
        &self,
        id: &BlobId,
        offset: u64,
        len: u64,
        body: &mut dyn Read,
    ) -> Result<u64, TransferError> {
        let resp = self
            .agent
            .patch(&self.url(id))
            .header("Authorization", self.bearer().as_str())
            .header(UPLOAD_OFFSET, &offset.to_string())
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", &len.to_string())
            .send(ureq::SendBody::from_reader(body))
            .map_err(unreachable)?;
        let resp = ok_or_error(resp)?;
        header_u64(&resp, UPLOAD_OFFSET).or(Ok(offset + len))
    }

    /// `GET` from sealed byte `from` on (a range request when not 0).
    pub fn get(&self, id: &BlobId, from: u64) -> Result<impl Read + Send + 'static, TransferError> {
        let mut req = self
            .agent
            .get(&self.url(id))
            .header("Authorization", self.bearer().as_str());
        if from > 0 {
            req = req.header("Range", &format!("bytes={from}-"));
        }
        let resp = req.call().map_err(unreachable)?;
        let resp = ok_or_error(resp)?;
        if from > 0 && resp.status().as_u16() != 206 {
            return Err(TransferError::Relay {
                status: resp.status().as_u16(),
                code: "range not honoured".into(),
            });
        }
        Ok(resp.into_body().into_reader())
    }

    /// `DELETE`: removes the blob (best effort cleanup).
    pub fn delete(&self, id: &BlobId) -> Result<(), TransferError> {
        let resp = self
            .agent
            .delete(&self.url(id))
            .header("Authorization", self.bearer().as_str())
            .call()
            .map_err(unreachable)?;
        ok_or_error(resp).map(drop)
    }
}

fn unreachable(e: ureq::Error) -> TransferError {
    TransferError::Unreachable(e.to_string())
}

fn header_u64(resp: &Resp, name: &str) -> Result<u64, TransferError> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| TransferError::Relay {
            status: resp.status().as_u16(),
            code: format!("missing {name} header"),
        })
}

fn ok_or_error(mut resp: Resp) -> Result<Resp, TransferError> {
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Ok(resp);
    }
    let code = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_json::<ErrorBody>()
        .map(|b| b.error)
        .unwrap_or_default();
    Err(match (status, ApiErrorCode::parse(&code)) {
        (410, _) | (_, Some(ApiErrorCode::BlobExpired)) => TransferError::Expired,
        (_, Some(ApiErrorCode::QuotaExceeded)) => TransferError::QuotaExceeded,
        (413, _) | (_, Some(ApiErrorCode::TooLarge)) => TransferError::RelayTooLarge,
        (404, _) => TransferError::NotFound,
        (401, _) => TransferError::Unauthorized,
        (409, Some(ApiErrorCode::OffsetMismatch)) => TransferError::OffsetMismatch,
        (409, Some(ApiErrorCode::Incomplete)) => TransferError::Abandoned,
        _ => TransferError::Relay { status, code },
    })
}
