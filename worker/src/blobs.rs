//! The blob endpoints under `/api/v1/blobs/{id}` on **R2**, with the native
//! relay's paths, headers, status codes and error codes (`docs/protocol.md`,
//! "Blobs"): `POST` declares, `HEAD` reports the offset, `PATCH` appends,
//! `GET` downloads (following an upload in progress), `DELETE` removes.
//! Every one is scoped to the token's user: another user's blob is a 404.
//!
//! - **Storage.** Each `PATCH` body is streamed into one R2 object,
//!   `<user>/<blob>/<start offset as 16 hex digits>`; it is never held
//!   whole in the Worker (the body goes to R2 through a fixed-length
//!   stream). The blob's row in D1 (`blobs`) holds its declared length, the
//!   committed offset, and the pieces (start, length) that make it up; a
//!   rewind drops or shortens the pieces past the new offset.
//! - **One `PATCH` at a time** per blob: a `PATCH` claims the row with a
//!   conditional `UPDATE` (`busy_until`); a second one meanwhile gets 409.
//! - **Download** answers with `Content-Length` at once (a fixed-length
//!   stream) and sends the pieces through ranged R2 reads. Before the blob is
//!   complete it sends whole sealed chunks only, then polls the row for more
//!   ([`POLL`]); no progress for [`IDLE_MS`] ends the body short, and a new
//!   `GET` then gets 409 `incomplete`.
//! - **Expiry.** A blob expires `BLOB_TTL_S` after its `POST` (410 from then
//!   on) and is forgotten (404) 7 days later. Expired pieces are deleted
//!   from R2 by the cron sweep ([`sweep_expired`], `crate::sweep`) and
//!   when the same user next declares a blob.
//!
//! What differs from the native relay: a `PATCH` needs `Content-Length`
//! (the client always sends it), and a `PATCH` whose body breaks off keeps
//! nothing of it (R2 writes are all or nothing), so `HEAD` then reports the
//! offset before that `PATCH`.

use crate::api::{self, ApiError};
use crate::config::Settings;
use crate::session::{self, js_u64, DB};
use clipmesh_proto::{BlobId, BlobLayout, UserId};
use futures_util::StreamExt;
use serde::Deserialize;
use std::str::FromStr;
use std::time::Duration;
use wasm_bindgen::JsValue;
use worker::{
    ByteStream, Env, FixedLengthStream, Headers, Method, Range, Request, Response, ResponseBuilder,
};

/// The R2 bucket binding.
pub const BUCKET: &str = "BLOBS";
/// An upload that makes no progress for this long counts as stopped.
pub const IDLE_MS: u64 = 30_000;
/// How often a download that follows an upload looks for more.
pub const POLL: Duration = Duration::from_millis(250);
/// How long a `PATCH` may hold its claim on a blob.
const CLAIM_MS: u64 = 10 * 60_000;
/// Expired blobs answer 410 for this long, then 404.
const FORGET_AFTER_S: i64 = 7 * 24 * 3600;

type Answer = Result<Response, ApiError>;

#[derive(Clone, Debug, Deserialize)]
struct Row {
    length: u64,
    stored: u64,
    parts: String,
    expires_at: i64,
    progress_at: u64,
}

impl Row {
    fn complete(&self) -> bool {
        self.stored == self.length
    }
    fn pieces(&self) -> Result<Vec<(u64, u64)>, ApiError> {
        serde_json::from_str(&self.parts).map_err(ApiError::internal)
    }
}

fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

fn key(user: UserId, blob: &BlobId, start: u64) -> String {
    format!("{}/{}/{start:016x}", user.0, blob)
}

fn not_found() -> ApiError {
    ApiError::new(404, "blob_not_found", "no such blob")
}

fn expired() -> ApiError {
    ApiError::new(410, "blob_expired", "this blob has expired")
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(409, "offset_mismatch", message)
}

fn header_u64(req: &Request, name: &str) -> Result<Option<u64>, ApiError> {
    req.headers()
        .get(name)?
        .map(|v| {
            Some(v.as_str())
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{name} must be a decimal integer")))
        })
        .transpose()
}

async fn row(env: &Env, user: UserId, blob: &BlobId) -> Result<Option<Row>, ApiError> {
    Ok(env
        .d1(DB)?
        .prepare(
            "SELECT length, stored, parts, expires_at, progress_at FROM blobs WHERE user_id = ?1 AND id = ?2",
        )
        .bind(&[js_u64(user.0), JsValue::from_str(&blob.to_string())])?
        .first(None)
        .await?)
}

/// The live (unexpired) row, or the 404/410 answer.
async fn live(env: &Env, user: UserId, blob: &BlobId) -> Result<Row, ApiError> {
    match row(env, user, blob).await? {
        None => Err(not_found()),
        Some(r) if r.expires_at <= api::unix_now() => Err(expired()),
        Some(r) => Ok(r),
    }
}

fn offsets(r: &Row, status: u16) -> Answer {
    let h = Headers::new();
    h.set("Upload-Offset", &r.stored.to_string())?;
    h.set("Upload-Length", &r.length.to_string())?;
    h.set("Cache-Control", "no-store")?;
    Ok(Response::empty()?.with_status(status).with_headers(h))
}

/// Routes `/api/v1/blobs/{id}`.
pub async fn handle(req: Request, env: &Env, method: &Method, id: &str) -> Answer {
    let s = Settings::from_env(env);
    let (token, _) = session::request_token(&req);
    let me = session::authenticate(env, &s, token.as_deref()).await?;
    let blob = BlobId::from_str(id)
        .map_err(|_| ApiError::bad_request("blob id must be 32 lowercase hex digits"))?;
    match method {
        Method::Post => create(&req, env, &s, me.user, &blob).await,
        Method::Head => offsets(&live(env, me.user, &blob).await?, 200),
        Method::Patch => patch(req, env, &s, me.user, &blob).await,
        Method::Get => download(&req, env, me.user, blob).await,
        Method::Delete => remove(env, me.user, &blob).await,
        _ => Err(ApiError::new(405, "bad_request", "method not allowed")),
    }
}

async fn create(req: &Request, env: &Env, s: &Settings, user: UserId, blob: &BlobId) -> Answer {
    let len = header_u64(req, "Upload-Length")?
        .ok_or_else(|| ApiError::bad_request("Upload-Length header required"))?;
    if len > s.blob_max_bytes {
        return Err(ApiError::new(
            413,
            "too_large",
            format!(
                "blob of {len} bytes is over the limit of {} bytes",
                s.blob_max_bytes
            ),
        ));
    }
    if BlobLayout::from_sealed_len(len).is_none() {
        return Err(ApiError::bad_request(format!(
            "Upload-Length {len} is not the sealed length of any blob"
        )));
    }
    let now = api::unix_now();
    if let Some(r) = row(env, user, blob).await? {
        return if r.expires_at <= now {
            Err(expired())
        } else if r.length == len {
            offsets(&r, 200)
        } else {
            Err(ApiError::bad_request(format!(
                "blob exists with Upload-Length {}",
                r.length
            )))
        };
    }
    sweep(env, user, now).await?;
    #[derive(Deserialize)]
    struct Used {
        used: u64,
    }
    let db = env.d1(DB)?;
    let used = db
        .prepare("SELECT COALESCE(SUM(length), 0) AS used FROM blobs WHERE user_id = ?1 AND expires_at > ?2")
        .bind(&[js_u64(user.0), JsValue::from_f64(now as f64)])?
        .first::<Used>(None)
        .await?
        .map_or(0, |u| u.used);
    if used.saturating_add(len) > s.blob_quota_bytes {
        return Err(ApiError::new(
            403,
            "quota_exceeded",
            format!(
                "blob quota of {} bytes exceeded ({used} bytes in use)",
                s.blob_quota_bytes
            ),
        ));
    }
    db.prepare(
        "INSERT OR IGNORE INTO blobs (user_id, id, length, stored, parts, created_at, expires_at, progress_at, busy_until) \
         VALUES (?1, ?2, ?3, 0, '[]', ?4, ?5, ?6, 0)",
    )
    .bind(&[
        js_u64(user.0),
        JsValue::from_str(&blob.to_string()),
        JsValue::from_f64(len as f64),
        JsValue::from_f64(now as f64),
        JsValue::from_f64(now.saturating_add(s.blob_ttl_s as i64) as f64),
        JsValue::from_f64(now_ms() as f64),
    ])?
    .run()
    .await?;
    let r = live(env, user, blob).await?;
    if r.length != len {
        return Err(ApiError::bad_request(format!(
            "blob exists with Upload-Length {}",
            r.length
        )));
    }
    offsets(&r, 201)
}

/// Deletes the R2 pieces of this user's expired blobs (their rows stay as
/// 410 answers for [`FORGET_AFTER_S`]) and forgets older ones.
async fn sweep(env: &Env, user: UserId, now: i64) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    struct Gone {
        id: String,
        parts: String,
    }
    let db = env.d1(DB)?;
    let gone: Vec<Gone> = db
        .prepare(
            "SELECT id, parts FROM blobs WHERE user_id = ?1 AND expires_at <= ?2 AND parts != '[]'",
        )
        .bind(&[js_u64(user.0), JsValue::from_f64(now as f64)])?
        .all()
        .await?
        .results()?;
    let bucket = env.bucket(BUCKET)?;
    for g in gone {
        let Ok(blob) = BlobId::from_str(&g.id) else {
            continue;
        };
        delete_pieces(&bucket, user, &blob, &g.parts).await?;
        db.prepare("UPDATE blobs SET parts = '[]' WHERE user_id = ?1 AND id = ?2")
            .bind(&[js_u64(user.0), JsValue::from_str(&g.id)])?
            .run()
            .await?;
    }
    db.prepare("DELETE FROM blobs WHERE user_id = ?1 AND expires_at <= ?2")
        .bind(&[
            js_u64(user.0),
            JsValue::from_f64((now - FORGET_AFTER_S) as f64),
        ])?
        .run()
        .await?;
    Ok(())
}

/// Deletes the R2 objects of a blob's stored pieces (`parts`, its row's
/// JSON list of `(offset, length)`); answers how many there were.
async fn delete_pieces(
    bucket: &worker::Bucket,
    user: UserId,
    blob: &BlobId,
    parts: &str,
) -> Result<u64, ApiError> {
    let pieces: Vec<(u64, u64)> = serde_json::from_str(parts).unwrap_or_default();
    let keys: Vec<String> = pieces.iter().map(|p| key(user, blob, p.0)).collect();
    let n = keys.len() as u64;
    if n > 0 {
        bucket.delete_multiple(keys).await?;
    }
    Ok(n)
}

/// Most expired blobs one [`sweep_expired`] run empties (the next cron run
/// takes the rest), so a run stays within a Worker's limits.
pub const SWEEP_BATCH: u32 = 500;

/// What one cron sweep did.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SweepReport {
    /// Expired blobs whose R2 objects were deleted (rows kept, 410).
    pub emptied: u64,
    /// R2 objects deleted.
    pub objects: u64,
    /// Rows of blobs expired longer than the tombstone time, deleted (404).
    pub forgotten: u64,
}

/// The cron sweep's blob part, for every user: deletes the R2 objects of
/// up to [`SWEEP_BATCH`] expired blobs (their rows stay as 410 answers for
/// [`FORGET_AFTER_S`], as natively), then the rows older than that.
pub async fn sweep_expired(env: &Env, now: i64) -> Result<SweepReport, ApiError> {
    #[derive(Deserialize)]
    struct Gone {
        user_id: u64,
        id: String,
        parts: String,
    }
    let db = env.d1(DB)?;
    let gone: Vec<Gone> = db
        .prepare(
            "SELECT user_id, id, parts FROM blobs WHERE expires_at <= ?1 AND parts != '[]' LIMIT ?2",
        )
        .bind(&[
            JsValue::from_f64(now as f64),
            JsValue::from_f64(f64::from(SWEEP_BATCH)),
        ])?
        .all()
        .await?
        .results()?;
    let bucket = env.bucket(BUCKET)?;
    let mut report = SweepReport::default();
    for g in gone {
        let user = UserId(g.user_id);
        if let Ok(blob) = BlobId::from_str(&g.id) {
            report.objects += delete_pieces(&bucket, user, &blob, &g.parts).await?;
        }
        db.prepare("UPDATE blobs SET parts = '[]' WHERE user_id = ?1 AND id = ?2")
            .bind(&[js_u64(g.user_id), JsValue::from_str(&g.id)])?
            .run()
            .await?;
        report.emptied += 1;
    }
    report.forgotten = db
        .prepare("DELETE FROM blobs WHERE expires_at <= ?1")
        .bind(&[JsValue::from_f64((now - FORGET_AFTER_S) as f64)])?
        .run()
        .await
        .map(|r| crate::session::changes(&r))?;
    Ok(report)
}

/// Every R2 object under `user`'s prefix, with its size (an admin's view,
/// and what deleting the user removes).
pub async fn user_objects(env: &Env, user: UserId) -> Result<Vec<(String, u64)>, ApiError> {
    let bucket = env.bucket(BUCKET)?;
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    // 1000 keys a page; a user's quota bounds the pages.
    loop {
        let mut list = bucket.list().prefix(format!("{}/", user.0));
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = list.execute().await?;
        out.extend(page.objects().iter().map(|o| (o.key(), o.size())));
        match page.cursor().filter(|_| page.truncated()) {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Deletes R2 objects by key, 1000 at a time.
pub async fn delete_objects(env: &Env, keys: Vec<String>) -> Result<(), ApiError> {
    let bucket = env.bucket(BUCKET)?;
    for chunk in keys.chunks(1000) {
        bucket.delete_multiple(chunk.to_vec()).await?;
    }
    Ok(())
}

fn with_offset(e: ApiError, offset: u64) -> Answer {
    let mut r = e.into_response()?;
    r.headers_mut().set("Upload-Offset", &offset.to_string())?;
    Ok(r)
}

async fn release(env: &Env, user: UserId, blob: &BlobId) -> Result<(), ApiError> {
    env.d1(DB)?
        .prepare("UPDATE blobs SET busy_until = 0 WHERE user_id = ?1 AND id = ?2")
        .bind(&[js_u64(user.0), JsValue::from_str(&blob.to_string())])?
        .run()
        .await?;
    Ok(())
}

/// Largest refused `PATCH` body read (and dropped) before answering, so
/// the client can read the answer: the runtime resets a connection whose
/// request body is left unread.
const DRAIN_MAX: u64 = 4 << 20;

async fn patch(mut req: Request, env: &Env, s: &Settings, user: UserId, blob: &BlobId) -> Answer {
    let mut consumed = false;
    let out = patch_inner(&mut req, &mut consumed, env, s, user, blob).await;
    if !consumed
        && header_u64(&req, "Content-Length")
            .ok()
            .flatten()
            .unwrap_or(0)
            <= DRAIN_MAX
    {
        if let Ok(mut body) = req.stream() {
            while let Some(Ok(_)) = body.next().await {}
        }
    }
    out
}

async fn patch_inner(
    req: &mut Request,
    consumed: &mut bool,
    env: &Env,
    s: &Settings,
    user: UserId,
    blob: &BlobId,
) -> Answer {
    let offset = header_u64(req, "Upload-Offset")?
        .ok_or_else(|| ApiError::bad_request("Upload-Offset header required"))?;
    let r = live(env, user, blob).await?;
    if offset > r.stored || (r.complete() && offset != r.stored) {
        return with_offset(
            conflict(format!("Upload-Offset is {}, not {offset}", r.stored)),
            r.stored,
        );
    }
    let room = r.length - offset;
    let allowed = room.min(s.blob_patch_max_bytes);
    let Some(declared) = header_u64(req, "Content-Length")? else {
        return with_offset(
            ApiError::new(411, "bad_request", "a PATCH needs Content-Length"),
            r.stored,
        );
    };
    if declared > allowed {
        let e = if room <= s.blob_patch_max_bytes {
            ApiError::new(
                413,
                "too_large",
                format!(
                    "body of {declared} bytes goes past Upload-Length {}",
                    r.length
                ),
            )
        } else {
            ApiError::new(
                413,
                "payload_too_large",
                format!(
                    "one PATCH may carry at most {} bytes",
                    s.blob_patch_max_bytes
                ),
            )
        };
        return with_offset(e, r.stored);
    }
    // Claim the blob: one PATCH at a time.
    let now = now_ms();
    let db = env.d1(DB)?;
    let id = JsValue::from_str(&blob.to_string());
    let claimed = db
        .prepare("UPDATE blobs SET busy_until = ?3 WHERE user_id = ?1 AND id = ?2 AND busy_until < ?4 AND stored = ?5")
        .bind(&[
            js_u64(user.0),
            id.clone(),
            JsValue::from_f64((now + CLAIM_MS) as f64),
            JsValue::from_f64(now as f64),
            JsValue::from_f64(r.stored as f64),
        ])?
        .run()
        .await?
        .meta()?
        .and_then(|m| m.changes)
        .unwrap_or(0);
    if claimed == 0 {
        return with_offset(
            conflict("another upload to this blob is in progress"),
            r.stored,
        );
    }
    let bucket = env.bucket(BUCKET)?;
    if declared > 0 {
        *consumed = true;
        let body = req.stream()?;
        let put = bucket
            .put(
                key(user, blob, offset),
                FixedLengthStream::wrap(body, declared),
            )
            .execute()
            .await;
        if let Err(e) = put {
            worker::console_warn!("blob piece not stored: {e}");
            release(env, user, blob).await?;
            return with_offset(
                ApiError::bad_request("upload body broke off; resume from Upload-Offset"),
                r.stored,
            );
        }
    }
    // Pieces before `offset` stay (the one across it is shortened); later
    // ones are replaced by this piece.
    let old = r.pieces()?;
    let mut pieces: Vec<(u64, u64)> = old
        .iter()
        .filter(|p| p.0 < offset)
        .map(|&(start, len)| (start, len.min(offset - start)))
        .collect();
    if declared > 0 {
        pieces.push((offset, declared));
    }
    let stored = offset + declared;
    db.prepare(
        "UPDATE blobs SET stored = ?3, parts = ?4, progress_at = ?5, busy_until = 0 WHERE user_id = ?1 AND id = ?2",
    )
    .bind(&[
        js_u64(user.0),
        id,
        JsValue::from_f64(stored as f64),
        JsValue::from_str(&serde_json::to_string(&pieces).map_err(ApiError::internal)?),
        JsValue::from_f64(now_ms() as f64),
    ])?
    .run()
    .await?;
    let dropped: Vec<String> = old
        .iter()
        .filter(|p| p.0 > offset || (p.0 == offset && declared == 0))
        .map(|p| key(user, blob, p.0))
        .collect();
    if !dropped.is_empty() {
        bucket.delete_multiple(dropped).await?;
    }
    let h = Headers::new();
    h.set("Upload-Offset", &stored.to_string())?;
    Ok(Response::empty()?.with_status(204).with_headers(h))
}

async fn remove(env: &Env, user: UserId, blob: &BlobId) -> Answer {
    let Some(r) = row(env, user, blob).await? else {
        return Err(not_found());
    };
    env.d1(DB)?
        .prepare("DELETE FROM blobs WHERE user_id = ?1 AND id = ?2")
        .bind(&[js_u64(user.0), JsValue::from_str(&blob.to_string())])?
        .run()
        .await?;
    let keys: Vec<String> = r.pieces()?.iter().map(|p| key(user, blob, p.0)).collect();
    if !keys.is_empty() {
        env.bucket(BUCKET)?.delete_multiple(keys).await?;
    }
    api::no_content()
}

/// `Range: bytes=N-` or `bytes=N-M`: `Ok(None)` for none (or another
/// form, which gets the whole blob), `Err(())` when N is past the end.
fn parse_range(req: &Request, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = req.headers().get("Range").ok().flatten() else {
        return Ok(None);
    };
    let Some((a, b)) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
    else {
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

async fn download(req: &Request, env: &Env, user: UserId, blob: BlobId) -> Answer {
    let r = live(env, user, &blob).await?;
    if !r.complete() && now_ms().saturating_sub(r.progress_at) >= IDLE_MS {
        return with_offset(
            ApiError::new(
                409,
                "incomplete",
                "the upload of this blob stopped before it was complete",
            ),
            r.stored,
        );
    }
    let Some(layout) = BlobLayout::from_sealed_len(r.length) else {
        return Err(ApiError::internal("stored blob has an impossible length"));
    };
    let len = r.length;
    let (start, end, ranged) = match parse_range(req, len) {
        Ok(Some((a, b))) => (a, b, true),
        Ok(None) => (0, len, false),
        Err(()) => {
            let mut resp = ApiError::new(
                416,
                "bad_request",
                format!("range starts past the end ({len} bytes)"),
            )
            .into_response()?;
            resp.headers_mut()
                .set("Content-Range", &format!("bytes */{len}"))?;
            return Ok(resp);
        }
    };
    let follow = Follow {
        env: env.clone(),
        user,
        blob,
        layout,
        row: r,
        pos: start,
        end,
        body: None,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        match f.next().await {
            Ok(Some(bytes)) => Some((Ok(bytes), f)),
            Ok(None) => None,
            Err(e) => {
                worker::console_warn!("blob download ended early: {e}");
                // Ends the body short of Content-Length, as natively.
                f.pos = f.end;
                Some((Err(worker::Error::RustError(e)), f))
            }
        }
    });
    let sized: worker::worker_sys::FixedLengthStream =
        FixedLengthStream::wrap(stream, end - start).into();
    let h = Headers::new();
    h.set("Content-Type", "application/octet-stream")?;
    h.set("Content-Length", &(end - start).to_string())?;
    h.set("Cache-Control", "no-store")?;
    if ranged {
        h.set(
            "Content-Range",
            &format!("bytes {start}-{}/{len}", end.saturating_sub(1)),
        )?;
    }
    Ok(ResponseBuilder::new()
        .with_status(if ranged { 206 } else { 200 })
        .with_headers(h)
        .stream(sized.readable()))
}

/// A download in progress: where it is, and the R2 read it is draining.
struct Follow {
    env: Env,
    user: UserId,
    blob: BlobId,
    layout: BlobLayout,
    row: Row,
    pos: u64,
    end: u64,
    body: Option<ByteStream>,
}

impl Follow {
    /// The next bytes of the body, `None` at the end.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if self.pos >= self.end {
                return Ok(None);
            }
            if let Some(b) = self.body.as_mut() {
                match b.next().await {
                    Some(Ok(bytes)) => {
                        self.pos += bytes.len() as u64;
                        return Ok(Some(bytes));
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => {
                        self.body = None;
                        continue;
                    }
                }
            }
            // Whole sealed chunks only until the blob is complete.
            let avail = if self.row.complete() {
                self.row.length
            } else {
                self.layout.whole_chunks_len(self.row.stored)
            }
            .min(self.end);
            if self.pos < avail {
                let pieces = self.row.pieces().map_err(|_| "bad piece list".to_owned())?;
                let Some(&(start, plen)) = pieces
                    .iter()
                    .rev()
                    .find(|p| p.0 <= self.pos && self.pos < p.0 + p.1)
                else {
                    return Err("no piece covers the next byte".into());
                };
                let upto = avail.min(start + plen);
                let bucket = self.env.bucket(BUCKET).map_err(|e| e.to_string())?;
                let obj = bucket
                    .get(key(self.user, &self.blob, start))
                    .range(Range::OffsetWithLength {
                        offset: self.pos - start,
                        length: upto - self.pos,
                    })
                    .execute()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("blob piece missing")?;
                let body = obj.body().ok_or("blob piece has no body")?;
                self.body = Some(body.stream().map_err(|e| e.to_string())?);
                continue;
            }
            // Wait for the upload to move on.
            if now_ms().saturating_sub(self.row.progress_at) >= IDLE_MS {
                return Err("the upload stopped".into());
            }
            worker::Delay::from(POLL).await;
            match row(&self.env, self.user, &self.blob).await {
                Ok(Some(r)) if r.expires_at > api::unix_now() => self.row = r,
                _ => return Err("the blob is gone".into()),
            }
        }
    }
}
