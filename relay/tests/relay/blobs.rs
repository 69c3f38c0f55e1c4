//! The blob store over HTTP: create, resumable upload, download with
//! ranges (also while the upload runs), limits, expiry, privacy, deletion,
//! abandoned uploads.

use super::blob_client::*;
use super::common::*;
use clipmesh_proto::{BlobId, BlobKey, BlobLayout, BlobOpener, BlobStreamSealer};
use clipmesh_relay::clock::system_unix_now as unix_now;

/// Seals `plain` as a real blob; returns id, key, sealed bytes and SHA-256.
fn sealed_blob(plain: &[u8]) -> (BlobId, BlobKey, Vec<u8>, [u8; 32]) {
    let (id, key) = (BlobId::generate(), BlobKey::generate());
    let mut s = BlobStreamSealer::new(&key, id);
    let mut out = Vec::new();
    for c in s.push(plain).unwrap() {
        out.extend_from_slice(&c.bytes);
    }
    let (last, summary) = s.finish().unwrap();
    if let Some(c) = last {
        out.extend_from_slice(&c.bytes);
    }
    (id, key, out, summary.sha256)
}

fn blob_file(relay: &TestRelay, user: u64, id: &str) -> std::path::PathBuf {
    relay
        .dir
        .path()
        .join("blobs")
        .join(user.to_string())
        .join(id)
}

#[tokio::test]
async fn upload_in_pieces_then_download_whole_and_ranged() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let plain: Vec<u8> = (0..2_500_000u64).map(pattern).collect();
    let (bid, key, sealed, sha) = sealed_blob(&plain);
    let id = bid.to_string();
    let len = sealed.len() as u64;
    assert_eq!(BlobLayout::from_sealed_len(len).unwrap().chunk_count(), 3);

    let r = create(u, t, &id, len).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = head(u, t, &id).await;
    assert_eq!((r.status, r.offset()), (200, 0));
    assert_eq!(r.header("upload-length"), Some(len.to_string().as_str()));
    // Creating again with the same length is a resume: 200.
    assert_eq!(create(u, t, &id, len).await.status, 200);
    assert_eq!(create(u, t, &id, len + 1).await.status, 400);

    // Two pieces at arbitrary (non-chunk) boundaries.
    let cut = 1_500_000usize;
    let r = patch(u, t, &id, 0, &sealed[..cut]).await;
    assert_eq!((r.status, r.offset()), (204, cut as u64));
    // Ahead of the stored bytes: 409 with the current offset.
    let r = patch(u, t, &id, cut as u64 + 1, &sealed[..10]).await;
    assert_eq!((r.status, r.error().as_str()), (409, "offset_mismatch"));
    assert_eq!(r.offset(), cut as u64);
    // Behind them: a rewind (as a client re-sending a whole chunk does).
    let r = patch(u, t, &id, 1000, &sealed[1000..1200]).await;
    assert_eq!((r.status, r.offset()), (204, 1200));
    let r = patch(u, t, &id, 1200, &sealed[1200..cut]).await;
    assert_eq!((r.status, r.offset()), (204, cut as u64));
    // A download of the incomplete blob gets the whole chunk that is there
    // at once, then waits for the rest.
    let early = {
        let (u, t, id) = (u.to_owned(), t.to_owned(), id.clone());
        tokio::spawn(async move { get(&u, &t, &id, None).await })
    };
    let chunk0 = BlobLayout::from_sealed_len(len).unwrap().sealed_offset(1);
    wait_for_metric(
        &relay,
        "clipmesh_relay_blob_bytes_downloaded_total",
        chunk0 as f64,
    )
    .await;
    let r = patch(u, t, &id, cut as u64, &sealed[cut..]).await;
    assert_eq!((r.status, r.offset()), (204, len));
    assert_eq!(head(u, t, &id).await.offset(), len);
    // A complete blob is never rewritten.
    let r = patch(u, t, &id, 0, &sealed[..10]).await;
    assert_eq!((r.status, r.offset()), (409, len));

    let r = early.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert!(
        r.body == sealed,
        "the download that followed the upload differs"
    );
    let r = get(u, t, &id, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(r.body, sealed);
    // Only ciphertext on disk: exactly the sealed bytes.
    assert_eq!(
        std::fs::read(blob_file(&relay, ann.login.user_id.0, &id)).unwrap(),
        sealed
    );
    let mut opener = BlobOpener::new(&key, bid, plain.len() as u64, sha).unwrap();
    let mut got = Vec::new();
    let mut at = 0;
    while let Some(n) = opener.next_sealed_len() {
        got.extend(opener.open_chunk(&r.body[at..at + n]).unwrap());
        at += n;
    }
    opener.finish().unwrap();
    assert_eq!(got, plain);

    // Range from the second chunk on.
    let start = BlobLayout::from_sealed_len(len).unwrap().sealed_offset(1);
    let r = get(u, t, &id, Some(&format!("bytes={start}-"))).await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {start}-{}/{len}", len - 1).as_str())
    );
    assert_eq!(r.body, sealed[start as usize..]);
    let r = get(u, t, &id, Some(&format!("bytes={len}-"))).await;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );

    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_stored").await,
        len as f64
    );
    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_uploaded_total").await,
        (len + cut as u64 - 1000) as f64
    );
    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_downloaded_total").await,
        (3 * len - start) as f64
    );

    let r = breq("DELETE", &blob_url(u, &id), Some(t), &[], None).await;
    assert_eq!(r.status, 204);
    assert_eq!(head(u, t, &id).await.status, 404);
    assert_eq!(get(u, t, &id, None).await.error(), "blob_not_found");
    assert!(!blob_file(&relay, ann.login.user_id.0, &id).exists());
    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_stored").await,
        0.0
    );
}

#[tokio::test]
async fn interrupted_upload_resumes_from_head_offset() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let len = BlobLayout::new(3 << 20).unwrap().sealed_len();
    let data: Vec<u8> = (0..len).map(pattern).collect();
    let id = BlobId::generate().to_string();
    assert_eq!(create(u, t, &id, len).await.status, 201);
    // Declares everything, sends 1.5 MiB + 7, then the connection drops.
    let sent = (3 << 19) + 7;
    broken_patch(
        relay.handle().local_addr(),
        t,
        &id,
        0,
        len as usize,
        &data[..sent],
    )
    .await;
    // The relay keeps and commits what arrived before the break: HEAD
    // reports it once the broken request is done (bounded wait).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let off = head(u, t, &id).await.offset();
        if off == sent as u64 {
            break;
        }
        assert_eq!(off, 0, "torn offset");
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Resume from the first whole chunk the relay does not have, as the
    // client does (it re-seals that chunk). The lock is released just after
    // the commit, so a 409 (with the same offset) may come first.
    let layout = BlobLayout::from_sealed_len(len).unwrap();
    let from = layout.sealed_offset(layout.resume_index(sent as u64));
    assert_eq!(from, layout.sealed_offset(1));
    loop {
        let r = patch(u, t, &id, from, &data[from as usize..]).await;
        if r.status == 204 {
            assert_eq!(r.offset(), len);
            break;
        }
        assert_eq!((r.status, r.offset()), (409, sent as u64));
        assert!(tokio::time::Instant::now() < deadline, "blob stayed locked");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = get(u, t, &id, None).await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "downloaded bytes differ");
}

#[tokio::test]
async fn limits_give_clear_errors() {
    let one_chunk = BlobLayout::new(1 << 20).unwrap().sealed_len(); // 1 MiB + 40
    let relay = TestRelay::start_with(|c| {
        c.limits.blob_max_bytes = 3 * one_chunk;
        c.limits.blob_quota_bytes = 4 * one_chunk;
        c.limits.blob_patch_max_bytes = 512 << 10;
    })
    .await;
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let id = || BlobId::generate().to_string();

    let big = BlobLayout::new(4 << 20).unwrap().sealed_len();
    let r = create(u, t, &id(), big).await;
    assert_eq!((r.status, r.error().as_str()), (413, "too_large"));
    let r = create(u, t, &id(), 39).await;
    assert_eq!((r.status, r.error().as_str()), (400, "bad_request"));
    let r = breq("POST", &blob_url(u, &id()), Some(t), &[], None).await;
    assert_eq!(r.status, 400);
    assert_eq!(create(u, t, "NOT-HEX", 100).await.status, 400);

    let three = BlobLayout::new(3 << 20).unwrap().sealed_len();
    let a = id();
    assert_eq!(create(u, t, &a, three).await.status, 201);
    let r = create(u, t, &id(), 2 * one_chunk).await;
    assert_eq!((r.status, r.error().as_str()), (403, "quota_exceeded"));
    // Deleting frees the quota.
    let b = id();
    assert_eq!(
        breq("DELETE", &blob_url(u, &a), Some(t), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(create(u, t, &b, 100).await.status, 201);

    // More than one PATCH may carry: 413 payload_too_large, nothing kept.
    let r = patch(u, t, &b, 0, &[1; 100]).await;
    assert_eq!(r.status, 204);
    let c = id();
    assert_eq!(create(u, t, &c, one_chunk).await.status, 201);
    let r = patch(u, t, &c, 0, &vec![1; (512 << 10) + 1]).await;
    assert_eq!((r.status, r.error().as_str()), (413, "payload_too_large"));
    assert_eq!(r.offset(), 0);
    // Past Upload-Length: 413 too_large, offset unchanged. Streamed without
    // a Content-Length, so the relay finds out while writing.
    let r = patch_stream(u, t, &b, 100, PatternReader { pos: 0, end: 1 }).await;
    assert_eq!((r.status, r.error().as_str()), (413, "too_large"));
    assert_eq!(r.offset(), 100);
    let r = patch_stream(
        u,
        t,
        &c,
        0,
        PatternReader {
            pos: 0,
            end: 600 << 10,
        },
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (413, "payload_too_large"));
    assert_eq!(head(u, t, &c).await.offset(), 0);
    let r = breq("PATCH", &blob_url(u, &c), Some(t), &[], Some(vec![1])).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn expired_blobs_get_410_and_are_swept() {
    let ttl = 3600;
    let relay = TestRelay::start_with(|c| c.limits.blob_ttl_secs = ttl).await;
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let len = BlobLayout::new(1000).unwrap().sealed_len();
    let id = BlobId::generate().to_string();
    assert_eq!(create(u, t, &id, len).await.status, 201);
    let data: Vec<u8> = (0..len).map(pattern).collect();
    assert_eq!(patch(u, t, &id, 0, &data).await.status, 204);
    let path = blob_file(&relay, ann.login.user_id.0, &id);
    assert!(path.exists());
    let blobs = relay.handle().blobs();
    // Not yet expired.
    assert_eq!(blobs.sweep(unix_now()).await.unwrap().expired, 0);
    assert_eq!(get(u, t, &id, None).await.status, 200);
    // The sweeper at a time past the TTL deletes the file; the blob answers
    // 410 from then on.
    let later = unix_now() + ttl as i64 + 1;
    assert_eq!(blobs.sweep(later).await.unwrap().expired, 1);
    assert!(!path.exists());
    for r in [
        get(u, t, &id, None).await,
        head(u, t, &id).await,
        patch(u, t, &id, len, b"x").await,
        create(u, t, &id, len).await,
    ] {
        assert_eq!(r.status, 410);
    }
    assert_eq!(get(u, t, &id, None).await.error(), "blob_expired");
    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_stored").await,
        0.0
    );
    // Much later the tombstone is forgotten: 404.
    let much_later = later + clipmesh_relay::blobs::TOMBSTONE_SECS + 1;
    blobs.sweep(much_later).await.unwrap();
    assert_eq!(head(u, t, &id).await.status, 404);
}

#[tokio::test]
async fn zero_ttl_blob_is_expired_at_once_and_not_counted_in_quota() {
    let relay = TestRelay::start_with(|c| {
        c.limits.blob_ttl_secs = 0;
        c.limits.blob_quota_bytes = 1000;
    })
    .await;
    let ann = signup(&relay, "ann").await;
    let (t, u) = (&ann.login.token, &relay.url);
    let id = BlobId::generate().to_string();
    assert_eq!(create(u, t, &id, 900).await.status, 201);
    let r = head(u, t, &id).await;
    assert_eq!(r.status, 410);
    let r = patch(u, t, &id, 0, b"abc").await;
    assert_eq!((r.status, r.error().as_str()), (410, "blob_expired"));
    // The expired blob no longer counts against the quota.
    assert_eq!(
        create(u, t, &BlobId::generate().to_string(), 900)
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn blobs_are_private_and_need_auth() {
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let bob = signup(&relay, "bob").await;
    let (ta, tb, u) = (&ann.login.token, &bob.login.token, &relay.url);
    let len = BlobLayout::new(10).unwrap().sealed_len();
    let id = BlobId::generate().to_string();
    assert_eq!(create(u, ta, &id, len).await.status, 201);
    assert_eq!(
        patch(u, ta, &id, 0, &vec![5; len as usize]).await.status,
        204
    );

    // Another user cannot see, read, write or delete it.
    assert_eq!(head(u, tb, &id).await.status, 404);
    let r = get(u, tb, &id, None).await;
    assert_eq!((r.status, r.error().as_str()), (404, "blob_not_found"));
    assert_eq!(patch(u, tb, &id, 0, b"x").await.status, 404);
    let r = breq("DELETE", &blob_url(u, &id), Some(tb), &[], None).await;
    assert_eq!(r.status, 404);
    // Bob may use the same id for his own blob; the two do not mix.
    assert_eq!(create(u, tb, &id, len).await.status, 201);
    assert_eq!(head(u, tb, &id).await.offset(), 0);
    assert_eq!(get(u, ta, &id, None).await.body, vec![5; len as usize]);

    // No token or a bad one: 401 on every method.
    let url = blob_url(u, &id);
    for m in ["GET", "HEAD", "DELETE", "POST", "PATCH"] {
        assert_eq!(breq(m, &url, None, &[], None).await.status, 401, "{m}");
        let bad = "A".repeat(43);
        assert_eq!(
            breq(m, &url, Some(&bad), &[], None).await.status,
            401,
            "{m}"
        );
    }
    assert_eq!(get(u, ta, &id, None).await.status, 200);
}

#[tokio::test]
async fn deleting_a_user_deletes_their_blobs() {
    let relay = TestRelay::start().await;
    let admin = signup(&relay, "root").await;
    let bob = signup(&relay, "bob").await;
    let (tb, u) = (&bob.login.token, &relay.url);
    let len = BlobLayout::new(100).unwrap().sealed_len();
    let id = BlobId::generate().to_string();
    assert_eq!(create(u, tb, &id, len).await.status, 201);
    assert_eq!(
        patch(u, tb, &id, 0, &vec![1; len as usize]).await.status,
        204
    );
    let dir = relay
        .dir
        .path()
        .join("blobs")
        .join(bob.login.user_id.0.to_string());
    assert!(dir.exists());
    let r = http(
        "DELETE",
        &format!("{u}/api/v1/admin/users/{}", bob.login.user_id.0),
        Some(&admin.login.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(!dir.exists());
    assert_eq!(
        metric(&relay, "clipmesh_relay_blob_bytes_stored").await,
        0.0
    );
    // A directory left by a user deleted elsewhere (the admin CLI) goes at
    // the next sweep.
    std::fs::create_dir_all(relay.dir.path().join("blobs").join("999")).unwrap();
    let rep = relay.handle().blobs().sweep(unix_now()).await.unwrap();
    assert_eq!(rep.orphan_dirs, 1);
}

/// Polls a metric until it reaches `want` (bounded).
async fn wait_for_metric(relay: &TestRelay, name: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = metric(relay, name).await;
        if got >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {got}, wanted {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_download_following_an_abandoned_or_deleted_upload_ends_cleanly() {
    let relay = TestRelay::start().await;
    relay
        .handle
        .as_ref()
        .unwrap()
        .blobs()
        .set_idle(std::time::Duration::from_millis(500));
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let plain: Vec<u8> = (0..2_500_000u64).map(pattern).collect();
    let (bid, _key, sealed, _sha) = sealed_blob(&plain);
    let id = bid.to_string();
    let len = sealed.len() as u64;
    let chunk0 = BlobLayout::from_sealed_len(len).unwrap().sealed_offset(1) as usize;
    assert_eq!(create(u, t, &id, len).await.status, 201);
    assert_eq!(
        patch(u, t, &id, 0, &sealed[..chunk0 + 10]).await.status,
        204
    );

    // The uploader stops: the download gets the whole chunk, then its body
    // breaks off once the upload was idle for the idle time.
    let r = get(u, t, &id, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert!(r.body == sealed[..chunk0], "{} bytes", r.body.len());
    // Asked again (as a client resuming would): a clear 409 at once.
    let r = get(u, t, &id, Some(&format!("bytes={chunk0}-"))).await;
    assert_eq!((r.status, r.error().as_str()), (409, "incomplete"));
    assert_eq!(r.offset(), chunk0 as u64 + 10);

    // Progress again: downloads follow it once more.
    assert_eq!(
        patch(
            u,
            t,
            &id,
            chunk0 as u64 + 10,
            &sealed[chunk0 + 10..chunk0 + 20]
        )
        .await
        .status,
        204
    );
    let follower = {
        let (u, t, id) = (u.to_owned(), t.to_owned(), id.clone());
        tokio::spawn(async move { get(&u, &t, &id, None).await })
    };
    wait_for_metric(
        &relay,
        "clipmesh_relay_blob_bytes_downloaded_total",
        (2 * chunk0) as f64,
    )
    .await;
    // The uploader gives up and deletes it: the follower ends at once
    // (long before another idle period would end it) and the blob is gone.
    let r = breq("DELETE", &blob_url(u, &id), Some(t), &[], None).await;
    assert_eq!(r.status, 204);
    let r = follower.await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == sealed[..chunk0], "{} bytes", r.body.len());
    assert_eq!(get(u, t, &id, None).await.error(), "blob_not_found");
}

#[tokio::test]
async fn a_blob_file_shorter_than_its_offset_resumes_from_the_file() {
    // Partial uploads are not fsynced: after an OS crash the file may have
    // lost a tail the database still counts. Simulated by cutting the file.
    let relay = TestRelay::start().await;
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let plain: Vec<u8> = (0..1_500_000u64).map(pattern).collect();
    let (bid, key, sealed, sha) = sealed_blob(&plain);
    let id = bid.to_string();
    let len = sealed.len() as u64;
    assert_eq!(create(u, t, &id, len).await.status, 201);
    assert_eq!(patch(u, t, &id, 0, &sealed[..1_200_000]).await.status, 204);
    let file = blob_file(&relay, ann.login.user_id.0, &id);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(700_000)
        .unwrap();
    let r = head(u, t, &id).await;
    assert_eq!((r.status, r.offset()), (200, 700_000));
    // A few bytes, like the other 409 cases: the relay answers before
    // reading the body and closes, so a client still writing a large body
    // gets a broken pipe instead of the answer (the real client retries
    // and asks HEAD for the offset).
    let r = patch(u, t, &id, 1_200_000, &sealed[1_200_000..1_200_010]).await;
    assert_eq!((r.status, r.offset()), (409, 700_000));
    let r = patch(u, t, &id, 700_000, &sealed[700_000..]).await;
    assert_eq!((r.status, r.offset()), (204, len));
    let r = get(u, t, &id, None).await;
    assert!(r.body == sealed);
    let mut o = BlobOpener::new(&key, bid, plain.len() as u64, sha).unwrap();
    let mut at = 0;
    while let Some(n) = o.next_sealed_len() {
        o.open_chunk(&r.body[at..at + n]).unwrap();
        at += n;
    }
    o.finish().unwrap();
}

/// Sends a PATCH by hand: the head, then `pieces` of the body with `gap`
/// between them (a slow uplink), then waits for the answer without closing.
/// Returns the status and `Upload-Offset` of the answer.
async fn slow_patch(
    addr: std::net::SocketAddr,
    token: &str,
    id: &str,
    declared: usize,
    pieces: &[&[u8]],
    gap: std::time::Duration,
) -> (u16, u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH /api/v1/blobs/{id} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Upload-Offset: 0\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        s.write_all(p).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no answer to the PATCH");
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    let status = text[9..12].parse().unwrap();
    let offset = text
        .lines()
        .find_map(|l| l.strip_prefix("upload-offset:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    (status, offset)
}

#[tokio::test]
async fn a_slow_patch_that_progresses_outlives_the_request_timeout_and_a_stalled_one_ends() {
    // Whole-request timeout 1 s; blob bodies end after 2 s without a frame.
    let relay = TestRelay::start_with(|c| c.limits.http_request_timeout_s = 1).await;
    let h = relay.handle.as_ref().unwrap();
    h.blobs().set_idle(std::time::Duration::from_secs(2));
    let addr = h.local_addr();
    let ann = signup(&relay, "ann").await;
    let t = &ann.login.token;
    let u = &relay.url;
    let plain: Vec<u8> = (0..200_000u64).map(pattern).collect();
    let (bid, _key, sealed, _sha) = sealed_blob(&plain);
    let id = bid.to_string();
    let len = sealed.len() as u64;
    let gap = std::time::Duration::from_millis(400);

    // 8 pieces 400 ms apart: 2.8 s in all, well past the 1 s request
    // timeout, but never 2 s without progress.
    assert_eq!(create(u, t, &id, len).await.status, 201);
    let pieces: Vec<&[u8]> = sealed.chunks(sealed.len().div_ceil(8)).collect();
    assert_eq!(pieces.len(), 8);
    let (status, offset) = slow_patch(addr, t, &id, sealed.len(), &pieces, gap).await;
    assert_eq!((status, offset), (204, len));
    assert!(get(u, t, &id, None).await.body == sealed);

    // Other requests keep the whole-request timeout: a JSON body that never
    // finishes gets 408.
    let (other, _) = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "POST /api/v1/login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"user"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        (text[9..12].parse::<u16>().unwrap(), text)
    };
    assert_eq!(other, 408);

    // A body that stops: ended after the idle time, what arrived is kept.
    let (bid, _key, sealed, _sha) = sealed_blob(&plain);
    let id = bid.to_string();
    assert_eq!(create(u, t, &id, sealed.len() as u64).await.status, 201);
    let (status, offset) = slow_patch(addr, t, &id, sealed.len(), &[&sealed[..70_000]], gap).await;
    assert_eq!((status, offset), (408, 70_000));
    assert_eq!(head(u, t, &id).await.offset(), 70_000);
}
