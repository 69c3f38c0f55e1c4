//! The blob endpoints under `/api/v1/blobs/{id}` (POST create, HEAD offset,
//! PATCH append, GET download with `Range: bytes=N-`, DELETE). Every one is
//! Bearer-authenticated and scoped to the token's user: another user's blob
//! is indistinguishable from a missing one (404).

use super::serve::Tail;
use super::upload::{self, End};
use super::{blocking, BlobError};
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::Authed;
use crate::metrics::Metrics;
use crate::store::{BlobRow, CreateBlob};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use clipmesh_proto::api::ApiErrorCode;
use clipmesh_proto::{BlobId, BlobLayout, UserId};
use std::str::FromStr;
use std::sync::Arc;

type S = State<Arc<AppState>>;

/// `Upload-Length`: the declared sealed length of a blob.
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
/// `Upload-Offset`: bytes stored so far (and where a `PATCH` appends).
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");

/// The blob routes, merged into [`crate::http::router`].
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route(
        "/api/v1/blobs/{id}",
        post(create)
            .head(head)
            .patch(patch)
            .get(download)
            .delete(remove),
    )
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ApiErrorCode::BlobNotFound,
        "no such blob",
    )
}

fn expired() -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        ApiErrorCode::BlobExpired,
        "this blob has expired",
    )
}

fn too_large(message: String) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ApiErrorCode::TooLarge,
        message,
    )
}

/// An error answer carrying the current `Upload-Offset`.
fn with_offset(e: ApiError, offset: u64) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    r
}

fn parse_id(s: &str) -> Result<BlobId, ApiError> {
    BlobId::from_str(s)
        .map_err(|_| ApiError::bad_request("blob id must be 32 lowercase hex digits"))
}

fn header_u64(h: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, ApiError> {
    h.get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a decimal integer")))
        })
        .transpose()
}

/// A transfer slot for `user`, or the 429/503 answer (`Retry-After: 1`).
fn transfer_slot(s: &AppState, user: UserId) -> Result<super::slots::TransferSlot, ApiError> {
    s.blobs.take_transfer(user).map_err(|why| match why {
        super::slots::Refused::User => {
            tracing::debug!(%user, "too many blob transfers of one user");
            ApiError::rate_limited(std::time::Duration::from_secs(1))
        }
        super::slots::Refused::Relay => {
            tracing::debug!("blob transfers hold their share of connections");
            ApiError::unavailable("too many blob transfers; try again shortly", 1)
        }
    })
}

fn internal(e: BlobError) -> ApiError {
    ApiError::internal(e)
}

/// The live (unexpired) row of a blob, or the 404/410 answer.
async fn live(s: &AppState, user: UserId, blob: BlobId) -> Result<BlobRow, ApiError> {
    let row = s.blobs.store().call(move |db| db.blob(user, &blob)).await?;
    match row {
        None => Err(not_found()),
        Some(r) if r.expired(s.clock.unix_now()) => Err(expired()),
        Some(r) => Ok(r),
    }
}

fn offsets(r: &BlobRow, status: StatusCode) -> Response {
    (
        status,
        [
            (UPLOAD_OFFSET, HeaderValue::from(r.stored_len)),
            (UPLOAD_LENGTH, HeaderValue::from(r.sealed_len)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

async fn create(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let blob = parse_id(&id)?;
    let len = header_u64(&headers, &UPLOAD_LENGTH)?
        .ok_or_else(|| ApiError::bad_request("Upload-Length header required"))?;
    let lim = s.blobs.limits();
    if len > lim.max_bytes {
        return Err(too_large(format!(
            "blob of {len} bytes is over the limit of {} bytes",
            lim.max_bytes
        )));
    }
    if BlobLayout::from_sealed_len(len).is_none() {
        return Err(ApiError::bad_request(format!(
            "Upload-Length {len} is not the sealed length of any blob"
        )));
    }
    let now = s.clock.unix_now();
    let user = me.user;
    let res = s
        .blobs
        .store()
        .call(move |db| {
            db.create_blob(
                user,
                &blob,
                len,
                now,
                lim.ttl_secs,
                crate::store::BlobQuota {
                    user: lim.quota_bytes,
                    total: lim.total_quota_bytes,
                },
            )
        })
        .await?;
    match res {
        CreateBlob::Created => {
            tracing::debug!(%user, %blob, len, "blob created");
            let r = BlobRow {
                sealed_len: len,
                stored_len: 0,
                created_at: now,
                expires_at: now,
                complete: false,
                swept: false,
            };
            Ok(offsets(&r, StatusCode::CREATED))
        }
        CreateBlob::Exists(r) if r.expired(now) => Err(expired()),
        CreateBlob::Exists(r) if r.sealed_len == len => Ok(offsets(&r, StatusCode::OK)),
        CreateBlob::Exists(r) => Err(ApiError::bad_request(format!(
            "blob exists with Upload-Length {}",
            r.sealed_len
        ))),
        CreateBlob::OverQuota { used } => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::QuotaExceeded,
            format!(
                "blob quota of {} bytes exceeded ({used} bytes in use)",
                lim.quota_bytes
            ),
        )),
        CreateBlob::OverTotalQuota => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ApiErrorCode::QuotaExceeded,
            "the relay's blob storage is full; try again later",
        )),
    }
}

async fn head(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let blob = parse_id(&id)?;
    let mut r = live(&s, me.user, blob).await?;
    r.stored_len = on_disk(&s, me.user, blob, &r).await?;
    Ok(offsets(&r, StatusCode::OK))
}

/// The bytes of an incomplete blob that are really in its file: its
/// committed offset, or less if the file is shorter. Partial uploads are
/// not fsynced (only a completed blob is), so after an OS crash the file
/// may have lost a tail the database still counts; resuming from the
/// file's length keeps the blob whole. (On ext4 and other ordered-data file
/// systems a file's length never covers data that did not reach the disk.)
async fn on_disk(s: &AppState, user: UserId, blob: BlobId, row: &BlobRow) -> Result<u64, ApiError> {
    if row.complete || row.stored_len == 0 {
        return Ok(row.stored_len);
    }
    let path = s.blobs.path(user, &blob);
    let len = blocking(move || std::fs::metadata(&path).map(|m| m.len()))
        .await
        .map_err(internal)?
        .unwrap_or(0);
    Ok(len.min(row.stored_len))
}

async fn patch(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let blob = parse_id(&id)?;
    let user = me.user;
    let offset = header_u64(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| ApiError::bad_request("Upload-Offset header required"))?;
    let _slot = transfer_slot(&s, user)?;
    let row = live(&s, user, blob).await?;
    let Some(lock) = s.blobs.lock_upload(user, blob) else {
        return Ok(with_offset(
            ApiError::new(
                StatusCode::CONFLICT,
                ApiErrorCode::OffsetMismatch,
                "another upload to this blob is in progress",
            ),
            row.stored_len,
        ));
    };
    // Read again under the lock: a PATCH may have committed in between.
    let mut row = live(&s, user, blob).await?;
    let kept = on_disk(&s, user, blob, &row).await?;
    if kept < row.stored_len {
        tracing::warn!(%user, %blob, committed = row.stored_len, kept, "blob file shorter than its committed offset (crash?); resuming from the file");
        if !s
            .blobs
            .store()
            .call(move |db| db.set_blob_stored(user, &blob, kept))
            .await?
        {
            return Err(live(&s, user, blob).await.err().unwrap_or_else(expired));
        }
        s.blobs.adjust_gauge(row.stored_len, kept);
        row.stored_len = kept;
    }
    // Ahead of the stored bytes: refused. Behind them: a rewind (a client
    // re-sending from a whole chunk), except into a complete blob, whose
    // bytes never change once downloadable.
    if offset > row.stored_len || (row.complete && offset != row.stored_len) {
        return Ok(with_offset(
            ApiError::new(
                StatusCode::CONFLICT,
                ApiErrorCode::OffsetMismatch,
                format!("Upload-Offset is {}, not {offset}", row.stored_len),
            ),
            row.stored_len,
        ));
    }
    if offset < row.stored_len {
        // Commit the rewind before touching the file, so the committed
        // offset never points past the bytes on disk.
        if !s
            .blobs
            .store()
            .call(move |db| db.set_blob_stored(user, &blob, offset))
            .await?
        {
            return Err(live(&s, user, blob).await.err().unwrap_or_else(expired));
        }
    }
    let room = row.sealed_len - offset;
    let per_patch = s.blobs.limits().patch_max_bytes;
    let over = |declared: Option<u64>| -> ApiError {
        if room <= per_patch {
            too_large(format!(
                "body{} goes past Upload-Length {}",
                declared
                    .map(|n| format!(" of {n} bytes"))
                    .unwrap_or_default(),
                row.sealed_len
            ))
        } else {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ApiErrorCode::PayloadTooLarge,
                format!("one PATCH may carry at most {per_patch} bytes"),
            )
        }
    };
    let allowed = room.min(per_patch);
    let declared = header_u64(&headers, &header::CONTENT_LENGTH)?;
    if let Some(n) = declared.filter(|n| *n > allowed) {
        if n <= upload::DRAIN_MAX {
            upload::drain(&mut body.into_data_stream()).await;
        }
        return Ok(with_offset(over(declared), offset));
    }
    let path = s.blobs.path(user, &blob);
    let mark = s.blobs.growth().get(user, blob);
    let w = upload::write_body(
        path.clone(),
        offset,
        allowed,
        body,
        &lock,
        &mark,
        s.blobs.idle(),
        s.blobs.limits().min_upload_rate,
        row.sealed_len,
    )
    .await
    .map_err(internal)?;
    if w.end == End::Overflow {
        // A rewind before the refused body was committed.
        s.blobs.adjust_gauge(row.stored_len, offset);
        return Ok(with_offset(over(None), offset));
    }
    let stored = offset + w.bytes;
    let kept = s
        .blobs
        .store()
        .call(move |db| db.set_blob_stored(user, &blob, stored))
        .await?;
    drop(lock);
    if !kept {
        // Deleted or swept while we wrote: do not leave a file behind.
        return match live(&s, user, blob).await {
            // Deleted and created again meanwhile: its file is its own.
            Ok(r) => Ok(with_offset(
                ApiError::new(
                    StatusCode::CONFLICT,
                    ApiErrorCode::OffsetMismatch,
                    "the blob was replaced during this upload",
                ),
                r.stored_len,
            )),
            Err(e) => {
                blocking(move || super::remove_file_if_exists(&path))
                    .await
                    .map_err(internal)?
                    .map_err(|e| internal(e.into()))?;
                Err(e)
            }
        };
    }
    Metrics::add(&s.metrics.blob_bytes_uploaded, w.bytes);
    s.blobs.adjust_gauge(row.stored_len, stored);
    if stored == row.sealed_len {
        tracing::debug!(%user, %blob, len = stored, "blob complete");
        // Its mark says so; downloads following it keep their handle.
        s.blobs.growth().remove(user, blob);
    }
    match w.end {
        End::Interrupted => Ok(with_offset(
            ApiError::bad_request("upload body broke off; resume from Upload-Offset"),
            stored,
        )),
        // The relay's own limit, not a malformed request: a timeout (as the
        // whole-request timeout of other requests), which clients resume.
        End::Stalled => Ok(with_offset(
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ApiErrorCode::BadRequest,
                "upload body too slow (idle, or below the relay's minimum upload rate); resume from Upload-Offset",
            ),
            stored,
        )),
        _ => Ok((
            StatusCode::NO_CONTENT,
            [(UPLOAD_OFFSET, HeaderValue::from(stored))],
        )
            .into_response()),
    }
}

/// The byte range asked for: `None` = the whole blob, `Some(start)` =
/// `bytes=start-` (or `bytes=start-end`, as `(start, end exclusive)`).
/// Other forms (suffix ranges, several ranges) are ignored, as RFC 9110
/// allows. `Err` = unsatisfiable.
fn parse_range(h: &HeaderMap, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let Ok(start) = a.trim().parse::<u64>() else {
        return Ok(None);
    };
    let end = match b.trim() {
        "" => len,
        b => match b.parse::<u64>() {
            Ok(e) if e >= start => e.saturating_add(1).min(len),
            _ => return Ok(None),
        },
    };
    if start >= len {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn download(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let blob = parse_id(&id)?;
    let user = me.user;
    let slot = transfer_slot(&s, user)?;
    // A missing, expired or complete blob needs no watch (and a request
    // for a missing one leaves no state behind).
    let first = live(&s, user, blob).await?;
    let (mark, row) = if first.complete {
        (super::growth::settled(first.sealed_len), first)
    } else {
        // Watch first, then read the row again: a PATCH after this point
        // moves the mark we hold.
        let mark = s.blobs.growth().get(user, blob);
        (mark, live(&s, user, blob).await?)
    };
    let rx = mark.subscribe();
    if !row.complete && rx.borrow().at.elapsed() >= s.blobs.idle() {
        return Ok(with_offset(
            ApiError::new(
                StatusCode::CONFLICT,
                ApiErrorCode::Incomplete,
                "the upload of this blob stopped before it was complete",
            ),
            row.stored_len,
        ));
    }
    let Some(layout) = BlobLayout::from_sealed_len(row.sealed_len) else {
        return Err(internal(BlobError::Io(std::io::Error::other(
            "stored blob has an impossible length",
        ))));
    };
    let len = row.sealed_len;
    let range = match parse_range(&headers, len) {
        Ok(r) => r,
        Err(()) => {
            let mut r = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ApiErrorCode::BadRequest,
                format!("range starts past the end ({len} bytes)"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let (start, end) = range.unwrap_or((0, len));
    let path = s.blobs.path(user, &blob);
    let opened = blocking(move || -> std::io::Result<Option<std::fs::File>> {
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(f)),
            // Created, no PATCH yet: the stream opens the file once bytes
            // are there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && row.stored_len == 0 => Ok(None),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(internal)?;
    let file = match opened {
        Ok(f) => f,
        // Swept or deleted since the row was read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(live(&s, user, blob).await.err().unwrap_or_else(expired))
        }
        Err(e) => return Err(internal(e.into())),
    };
    let tail = Tail {
        file,
        path: s.blobs.path(user, &blob),
        pos: start,
        end,
        layout,
        committed: row.stored_len,
        complete: row.complete,
        rx,
        _entry: mark,
        blobs: s.blobs.clone(),
        user,
        blob,
        metrics: s.metrics.clone(),
        _slot: slot,
    };
    let mut resp = Response::new(Body::from_stream(tail.into_stream()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if range.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

async fn remove(
    State(s): S,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let blob = parse_id(&id)?;
    if s.blobs.delete(me.user, blob).await.map_err(internal)? {
        tracing::debug!(user = %me.user, %blob, "blob deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
        parse_range(&h, len)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range("bytes=3-", 10), Ok(Some((3, 10))));
        assert_eq!(range("bytes=3-4", 10), Ok(Some((3, 5))));
        assert_eq!(range("bytes=3-99", 10), Ok(Some((3, 10))));
        assert_eq!(range("bytes=10-", 10), Err(()));
        assert_eq!(range("bytes=-5", 10), Ok(None));
        assert_eq!(range("bytes=1-2,4-5", 10), Ok(None));
        assert_eq!(range("items=1-", 10), Ok(None));
    }
}
