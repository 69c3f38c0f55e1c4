//! Large items against a real in-process relay with its blob store: upload
//! and download through the transfer drivers, crafted chunks (reordered,
//! truncated, tampered, wrong key) rejected, expired and over-quota blobs
//! with clear errors, a download that follows a streamed upload (and ends
//! clearly when the sender gives up), and a daemon receiving a crafted
//! peer's file list with hostile names into its download folder only.

use crate::support::*;
use clipmesh::clipboard::LocalEvent;
use clipmesh::clock::now_ms;
use clipmesh::daemon::{run_daemon, ClipboardSink, DaemonError};
use clipmesh::link::{self, LinkConfig, LinkEvent};
use clipmesh::transfer::{
    download_blob, download_to_vec, upload_bytes, upload_streamed, BlobClient, Progress,
    TransferError,
};
use clipmesh::{Config, Device};
use clipmesh_proto::blob::{BlobId, BlobKey, BlobLayout, BlobSealer, CHUNK_LEN, NO_DIGEST};
use clipmesh_proto::content::{FileBody, FileEntry};
use clipmesh_proto::{ClipContent, ClipItem};
use clipmesh_relay::{Relay, RelayHandle, SignupPolicy};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct BlobRelay {
    handle: RelayHandle,
    _data: TempDir,
    url: String,
}

async fn relay_with(tune: impl FnOnce(&mut clipmesh_relay::Config)) -> BlobRelay {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = relay_config(
        data.path(),
        "127.0.0.1:0".parse().unwrap(),
        SignupPolicy::Open,
    );
    tune(&mut cfg);
    let handle = Relay::bind(cfg).await.unwrap();
    let url = handle.url();
    BlobRelay {
        handle,
        _data: data,
        url,
    }
}

async fn signed_up(url: &str, user: &str, name: &str, login: bool) -> TempDir {
    let dir = device_dir();
    let out = auth(
        if login { "login" } else { "signup" },
        dir.path(),
        url,
        user,
        PASSWORD,
        name,
    )
    .await;
    assert!(out.status.success(), "{}", out.stderr);
    dir
}

fn blob_client(dir: &Path) -> BlobClient {
    let d = Device::load(dir).unwrap();
    BlobClient::new(&d.account.server, &d.secrets.token, &d.roots().unwrap())
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(17) as u8
            ^ rand::random::<u8>();
    }
    v
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Runs a blocking transfer call off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(STEP, tokio::task::spawn_blocking(f))
        .await
        .expect("transfer timed out")
        .unwrap()
}

/// Uploads crafted sealed chunks as they are, declaring their total length.
fn upload_raw(client: &BlobClient, id: &BlobId, chunks: &[Vec<u8>]) {
    let total: u64 = chunks.iter().map(|c| c.len() as u64).sum();
    client.create(id, total).unwrap();
    let mut off = 0;
    for c in chunks {
        off = client.append(id, off, c).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_roundtrip_and_crafted_chunks_are_rejected() {
    let relay = relay_with(|_| {}).await;
    let a = signed_up(&relay.url, "ann", "a", false).await;
    let client = blob_client(a.path());
    let cancel = CancellationToken::new();

    // A real upload and download: 3 chunks, the last one short.
    let data = random_bytes(2 * CHUNK_LEN + 12_345);
    let (c, d, k) = (client.clone(), data.clone(), cancel.clone());
    let r = blocking(move || upload_bytes(&c, &d, &Progress::detached(0), &k).unwrap()).await;
    assert_eq!((r.len, r.sha256), (data.len() as u64, sha(&data)));
    let (c, r2, k) = (client.clone(), r.clone(), cancel.clone());
    let back = blocking(move || {
        download_to_vec(
            &c,
            &r2.id,
            &r2.key,
            r2.len,
            r2.sha256,
            u64::MAX,
            &Progress::detached(0),
            &k,
        )
    })
    .await
    .unwrap();
    assert!(back == data, "downloaded bytes differ");

    // Crafted blobs of the same 3-chunk plaintext.
    let key = BlobKey::generate();
    let layout = BlobLayout::new(data.len() as u64).unwrap();
    let seal = |id: BlobId, key: &BlobKey| -> Vec<Vec<u8>> {
        let s = BlobSealer::new(key, id);
        (0..layout.chunk_count())
            .map(|i| {
                let start = layout.plain_offset(i) as usize;
                let end = start + layout.chunk_plain_len(i).unwrap();
                s.seal_chunk(i, &data[start..end], layout.is_last(i))
                    .unwrap()
            })
            .collect()
    };
    let try_get = |id: BlobId, key: BlobKey| {
        let c = client.clone();
        let k = cancel.clone();
        let (len, digest) = (data.len() as u64, sha(&data));
        async move {
            blocking(move || {
                download_blob(
                    &c,
                    &id,
                    &key,
                    len,
                    digest,
                    &mut Vec::new(),
                    &Progress::detached(0),
                    &k,
                )
            })
            .await
        }
    };
    let corrupt = |r: Result<(), TransferError>| match r {
        Err(TransferError::Corrupt(e)) => e,
        other => panic!("expected a verification failure, got {other:?}"),
    };

    // Reordered: chunks 0 and 1 swapped (same lengths, so the relay takes it).
    let id = BlobId::generate();
    let mut chunks = seal(id, &key);
    chunks.swap(0, 1);
    upload_raw(&client, &id, &chunks);
    let e = corrupt(try_get(id, key.clone()).await);
    assert_eq!(e, clipmesh_proto::blob::BlobError::Open);

    // Truncated: only the two full chunks are on the relay.
    let id = BlobId::generate();
    let chunks = seal(id, &key);
    upload_raw(&client, &id, &chunks[..2]);
    let e = corrupt(try_get(id, key.clone()).await);
    assert_eq!(e, clipmesh_proto::blob::BlobError::Truncated);

    // Tampered: one ciphertext bit flipped in the last chunk.
    let id = BlobId::generate();
    let mut chunks = seal(id, &key);
    chunks[2][100] ^= 1;
    upload_raw(&client, &id, &chunks);
    let e = corrupt(try_get(id, key.clone()).await);
    assert_eq!(e, clipmesh_proto::blob::BlobError::Open);

    // Swapped in from another blob (a chunk sealed under another id).
    let id = BlobId::generate();
    let other = seal(BlobId::generate(), &key);
    let mut chunks = seal(id, &key);
    chunks[1] = other[1].clone();
    upload_raw(&client, &id, &chunks);
    let e = corrupt(try_get(id, key.clone()).await);
    assert_eq!(e, clipmesh_proto::blob::BlobError::Open);

    // Resume: the relay already holds chunk 0 of this blob; the uploader
    // sends only chunks 1 and 2, and the result opens.
    let id = BlobId::generate();
    let chunks = seal(id, &key);
    client.create(&id, layout.sealed_len()).unwrap();
    client.append(&id, 0, &chunks[0]).unwrap();
    let (c, d, k, kk) = (client.clone(), data.clone(), cancel.clone(), key.clone());
    let progress = Progress::detached(0);
    let p2 = progress.clone();
    let resumed = blocking(move || {
        clipmesh::transfer::upload_blob_as(
            &c,
            id,
            kk,
            || Ok(std::io::Cursor::new(d.clone())),
            d.len() as u64,
            &p2,
            &k,
        )
        .unwrap()
    })
    .await;
    assert_eq!(resumed.sha256, sha(&data));
    assert_eq!(progress.done(), data.len() as u64);
    // Chunk 0 on the relay is still the one uploaded first (same nonce).
    let c = client.clone();
    let head = blocking(move || {
        let mut r = c.get(&id, 0).unwrap();
        let mut nonce = [0u8; 24];
        std::io::Read::read_exact(&mut r, &mut nonce).unwrap();
        nonce
    })
    .await;
    assert_eq!(head[..], chunks[0][..24]);
    try_get(id, key.clone()).await.unwrap();

    // Wrong key for an intact blob.
    let e = corrupt(try_get(r.id, BlobKey::generate()).await);
    assert_eq!(e, clipmesh_proto::blob::BlobError::Open);

    relay.handle.shutdown();
    relay.handle.wait().await;
}

/// A reader over `data` that stops before byte `gate` until `open` says
/// go (true) or fails there (false): an upload the test holds mid-way.
struct GatedReader {
    data: std::io::Cursor<Vec<u8>>,
    gate: u64,
    open: Option<std::sync::mpsc::Receiver<bool>>,
}

impl std::io::Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let pos = self.data.position();
        if pos >= self.gate {
            if let Some(rx) = self.open.take() {
                if !rx.recv_timeout(STEP).unwrap_or(false) {
                    return Err(std::io::Error::other("the test stopped this upload"));
                }
            }
        }
        let room = if pos < self.gate {
            (self.gate - pos).min(buf.len() as u64) as usize
        } else {
            buf.len()
        };
        self.data.read(&mut buf[..room])
    }
}

/// Polls `progress` until it reaches `want` bytes (bounded).
async fn wait_progress(progress: &Progress, want: u64) {
    let deadline = tokio::time::Instant::now() + STEP;
    while progress.done() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "download stuck at {} bytes",
            progress.done()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_follows_a_streamed_upload_and_ends_clearly_if_it_is_abandoned() {
    let relay = relay_with(|_| {}).await;
    let a = signed_up(&relay.url, "ann", "a", false).await;
    let client = blob_client(a.path());
    let cancel = CancellationToken::new();
    let data = random_bytes(5 * CHUNK_LEN + 999);
    let len = data.len() as u64;
    let layout = BlobLayout::new(len).unwrap();

    for give_up in [false, true] {
        let (id, key) = (BlobId::generate(), BlobKey::generate());
        client.create(&id, layout.sealed_len()).unwrap();
        // The upload stops after 3 MiB until the test says go (or fail).
        let (go, gate) = std::sync::mpsc::channel();
        let (c, d, k, kk) = (client.clone(), data.clone(), cancel.clone(), key.clone());
        let upload = tokio::task::spawn_blocking(move || {
            let mut reader = Some(GatedReader {
                data: std::io::Cursor::new(d),
                gate: 3 * CHUNK_LEN as u64,
                open: Some(gate),
            });
            upload_streamed(
                &c,
                id,
                kk,
                || {
                    reader
                        .take()
                        .ok_or_else(|| std::io::Error::other("no retry here"))
                },
                len,
                &Progress::detached(0),
                &k,
            )
        });
        // The receiver starts right away, with no digest to check.
        let progress = Progress::detached(0);
        let (c, k, p) = (client.clone(), cancel.clone(), progress.clone());
        let download = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            download_blob(&c, &id, &key, len, NO_DIGEST, &mut out, &p, &k).map(|()| out)
        });
        // It gets the first whole chunk while the upload is held.
        wait_progress(&progress, CHUNK_LEN as u64).await;
        assert!(!upload.is_finished());
        if give_up {
            go.send(false).unwrap();
            let up = tokio::time::timeout(STEP, upload).await.unwrap().unwrap();
            assert!(up.is_err());
            // What send_files does on failure: delete the blob.
            client.delete(&id).unwrap();
            let err = tokio::time::timeout(STEP, download)
                .await
                .expect("the receiver ends soon after the sender gives up")
                .unwrap()
                .unwrap_err();
            assert!(matches!(err, TransferError::NotFound), "{err:?}");
            assert!(err.to_string().contains("cancelled"), "{err}");
        } else {
            go.send(true).unwrap();
            tokio::time::timeout(STEP, upload)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let back = tokio::time::timeout(STEP, download)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(back == data, "the streamed download differs");
        }
    }

    relay.handle.shutdown();
    relay.handle.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_over_quota_blobs_get_clear_errors() {
    let relay = relay_with(|c| {
        c.limits.blob_quota_bytes = 3 << 20;
        c.limits.blob_ttl_secs = 3;
    })
    .await;
    let a = signed_up(&relay.url, "ann", "a", false).await;
    let client = blob_client(a.path());
    let cancel = CancellationToken::new();

    // Over quota: 4 MiB declared against a 3 MiB quota.
    let (c, k) = (client.clone(), cancel.clone());
    let err = blocking(move || {
        upload_bytes(&c, &random_bytes(4 << 20), &Progress::detached(0), &k).unwrap_err()
    })
    .await;
    assert!(matches!(err, TransferError::QuotaExceeded), "{err:?}");
    assert!(err.to_string().contains("quota exceeded"), "{err}");
    assert!(!err.to_string().contains('\n'));

    // Expired: fine right after upload, 410 once the 3 s TTL has passed.
    let data = random_bytes(100_000);
    let (c, d, k) = (client.clone(), data.clone(), cancel.clone());
    let r = blocking(move || upload_bytes(&c, &d, &Progress::detached(0), &k).unwrap()).await;
    let deadline = tokio::time::Instant::now() + STEP;
    let err = loop {
        let (c, r2, k) = (client.clone(), r.clone(), cancel.clone());
        let got = blocking(move || {
            download_to_vec(
                &c,
                &r2.id,
                &r2.key,
                r2.len,
                r2.sha256,
                u64::MAX,
                &Progress::detached(0),
                &k,
            )
        })
        .await;
        match got {
            Ok(back) => assert!(back == data),
            Err(e) => break e,
        }
        assert!(tokio::time::Instant::now() < deadline, "blob never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(matches!(err, TransferError::Expired), "{err:?}");
    assert!(err.to_string().contains("expired"), "{err}");

    relay.handle.shutdown();
    relay.handle.wait().await;
}

/// Records applied items and file lists.
#[derive(Clone)]
struct Recorder {
    files: mpsc::UnboundedSender<Vec<PathBuf>>,
}

impl ClipboardSink for Recorder {
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>> {
        let r = Err(format!("unexpected {}", content.kind_name()));
        async move { r }
    }

    fn apply_files(&self, paths: Vec<PathBuf>) -> impl Future<Output = Result<(), String>> {
        let r = self.files.send(paths).map_err(|_| "gone".to_string());
        async move { r }
    }
}

/// Two devices of one user on a relay with a blob store: A (for a
/// crafted [`Peer`]) and B, with files on and downloads into `dl` in
/// `sandbox` (tuned further by `tune` before any daemon starts).
struct FileSetup {
    relay: BlobRelay,
    a: TempDir,
    b: TempDir,
    sandbox: TempDir,
    dl: PathBuf,
}

impl FileSetup {
    async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let relay = relay_with(|_| {}).await;
        let a = signed_up(&relay.url, "ann", "peer", false).await;
        let b = signed_up(&relay.url, "ann", "b", true).await;
        let sandbox = tempfile::tempdir().unwrap();
        let dl = sandbox.path().join("downloads");
        let mut cfg = Config::load(b.path()).unwrap();
        cfg.sync.files = true;
        cfg.sync.download_dir = Some(dl.clone());
        tune(&mut cfg);
        cfg.save(b.path()).unwrap();
        Self {
            relay,
            a,
            b,
            sandbox,
            dl,
        }
    }
}

/// A daemon on `dir` with a [`Recorder`] clipboard.
struct RecordedDaemon {
    /// The file lists it applied.
    files: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    /// Its local clipboard events.
    local: mpsc::Sender<LocalEvent>,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl RecordedDaemon {
    fn start(dir: &Path) -> Self {
        let (ftx, frx) = mpsc::unbounded_channel();
        let (ltx, lrx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        let device = Device::load(dir).unwrap();
        let d = dir.to_path_buf();
        let c = cancel.clone();
        let task =
            tokio::spawn(
                async move { run_daemon(&d, device, Recorder { files: ftx }, lrx, c).await },
            );
        Self {
            files: frx,
            local: ltx,
            cancel,
            task,
        }
    }

    /// Cancels it and waits until it ended without an error.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A crafted peer: a raw link that publishes whatever envelope it is given.
struct Peer {
    /// Seals as the device, the way its daemon would (v2: signed).
    keys: clipmesh::clipkeys::ClipKeys,
    link: link::LinkHandle,
    seq: u64,
    cancel: CancellationToken,
}

impl Peer {
    async fn connect(dir: &Path) -> Self {
        let device = Device::load(dir).unwrap();
        let (handle, commands) = link::channel();
        let (etx, mut erx) = mpsc::channel(link::EVENT_QUEUE);
        let cancel = CancellationToken::new();
        let cfg = LinkConfig {
            server: device.account.server.clone(),
            token: device.secrets.token.clone().into(),
            last_seen: u64::MAX,
            seed: 1,
            roots: device.roots().unwrap(),
        };
        tokio::spawn(link::run(cfg, commands, etx, cancel.clone()));
        tokio::time::timeout(STEP, async {
            while let Some(ev) = erx.recv().await {
                if matches!(ev, LinkEvent::Connected { .. }) {
                    break;
                }
            }
        })
        .await
        .unwrap();
        // Keep draining events so the link never blocks on them.
        tokio::spawn(async move { while erx.recv().await.is_some() {} });
        Self {
            keys: clipmesh::clipkeys::for_device(dir, &device).unwrap(),
            link: handle,
            seq: 1000,
            cancel,
        }
    }

    async fn publish(&mut self, content: ClipContent) {
        self.seq += 1;
        let env = self.keys.seal(
            self.seq,
            &ClipItem {
                timestamp_ms: now_ms(),
                content,
            },
        );
        let ack = self.link.publish(env).await.unwrap();
        tokio::time::timeout(STEP, ack)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn inline(name: &str, data: &[u8]) -> FileEntry {
    FileEntry {
        name: name.into(),
        size: data.len() as u64,
        body: FileBody::Inline(data.to_vec()),
    }
}

/// Every regular file below `dir`, relative, with its contents.
fn files_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            assert!(!ty.is_symlink(), "a symlink was created");
            if ty.is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_keeps_hostile_names_inside_its_download_folder() {
    let FileSetup {
        relay,
        a,
        b,
        sandbox,
        dl,
    } = FileSetup::start(|_| {}).await;

    let mut daemon = RecordedDaemon::start(b.path());

    let mut peer = Peer::connect(a.path()).await;
    // Wait until B is online: the relay only delivers to connected devices.
    tokio::time::timeout(STEP, async {
        loop {
            let st = clipmesh::control::request(b.path(), &clipmesh::control::Request::Status)
                .await
                .ok()
                .and_then(|r| r.status);
            if st.is_some_and(|s| s.connected && s.online.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // A large body through the blob store under a hostile name.
    let big = random_bytes(CHUNK_LEN + 77);
    let client = blob_client(a.path());
    let (c, d) = (client.clone(), big.clone());
    let r = blocking(move || {
        upload_bytes(&c, &d, &Progress::detached(0), &CancellationToken::new()).unwrap()
    })
    .await;
    let hostile = [
        "../../etc/passwd",
        "/abs",
        "C:\\x",
        "CON",
        "a/../../b",
        "ctl\u{0}\u{1b}[31m\n.txt",
        "..\\..\\win.ini",
        "dup",
        "dup",
    ];
    let mut entries: Vec<FileEntry> = hostile.iter().map(|n| inline(n, n.as_bytes())).collect();
    entries.push(FileEntry {
        name: "../../../../big.bin".into(),
        size: big.len() as u64,
        body: FileBody::Blob {
            id: r.id,
            sha256: r.sha256,
            key: r.key.clone(),
        },
    });
    peer.publish(ClipContent::Files(entries)).await;

    let paths = tokio::time::timeout(STEP, daemon.files.recv())
        .await
        .expect("no file list applied in time")
        .unwrap();
    let dl_canon = dl.canonicalize().unwrap();
    for p in &paths {
        assert!(p.canonicalize().unwrap().starts_with(&dl_canon), "{p:?}");
    }
    // Only the download folder was created in the sandbox.
    let top: Vec<_> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, ["downloads"]);
    let folders: Vec<_> = std::fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(folders.len(), 1, "one fresh folder per transfer");
    let got = files_below(&folders[0]);
    let mut want: Vec<(String, Vec<u8>)> = vec![
        ("etc/passwd".into(), hostile[0].into()),
        ("abs".into(), hostile[1].into()),
        ("C_/x".into(), hostile[2].into()),
        ("_CON".into(), hostile[3].into()),
        ("a/b".into(), hostile[4].into()),
        ("ctl__[31m_.txt".into(), hostile[5].into()),
        ("win.ini".into(), hostile[6].into()),
        ("dup".into(), hostile[7].into()),
        ("dup (1)".into(), hostile[8].into()),
        ("big.bin".into(), big.clone()),
    ];
    want.sort();
    assert_eq!(got.len(), want.len());
    for ((gn, gd), (wn, wd)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert!(gd == wd, "contents of {gn} differ");
    }

    // A tampered blob: verification fails, nothing is left behind, status
    // says why in one line.
    let id = BlobId::generate();
    let key = BlobKey::generate();
    let mut sealed = BlobSealer::new(&key, id)
        .seal_chunk(0, &big[..CHUNK_LEN], false)
        .unwrap();
    sealed[50] ^= 0x40;
    let last = BlobSealer::new(&key, id)
        .seal_chunk(1, &big[CHUNK_LEN..], true)
        .unwrap();
    let c = client.clone();
    blocking(move || upload_raw(&c, &id, &[sealed, last])).await;
    peer.publish(ClipContent::Files(vec![FileEntry {
        name: "evil.bin".into(),
        size: big.len() as u64,
        body: FileBody::Blob {
            id,
            sha256: sha(&big),
            key,
        },
    }]))
    .await;
    let msg = tokio::time::timeout(STEP, async {
        loop {
            let st = clipmesh::control::request(b.path(), &clipmesh::control::Request::Status)
                .await
                .unwrap()
                .status
                .unwrap();
            if let Some(e) = st.last_error.filter(|e| e.contains("verification")) {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no verification error in status");
    assert!(!msg.contains("evil") && !msg.contains('\n'), "{msg}");
    assert_eq!(
        std::fs::read_dir(&dl).unwrap().count(),
        1,
        "the failed transfer's folder was removed"
    );
    assert!(
        daemon.files.try_recv().is_err(),
        "a failed transfer was applied"
    );

    peer.cancel.cancel();
    daemon.stop().await;
    relay.handle.shutdown();
    relay.handle.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_refuses_over_limit_items_with_a_message() {
    let FileSetup {
        relay,
        a,
        b,
        sandbox,
        dl,
    } = FileSetup::start(|c| {
        c.sync.max_files = 2;
        c.sync.auto_download_max = 1000;
    })
    .await;

    let mut daemon = RecordedDaemon::start(b.path());
    let status_error = |needle: &'static str| {
        let dir = b.path().to_path_buf();
        async move {
            tokio::time::timeout(STEP, async {
                loop {
                    let st = clipmesh::control::request(&dir, &clipmesh::control::Request::Status)
                        .await
                        .ok()
                        .and_then(|r| r.status);
                    if let Some(e) = st.and_then(|s| s.last_error).filter(|e| e.contains(needle)) {
                        return e;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in status"))
        }
    };

    // A copied folder of three files against max_files = 2: refused.
    let copied = sandbox.path().join("copied");
    std::fs::create_dir_all(&copied).unwrap();
    for i in 0..3 {
        std::fs::write(copied.join(format!("secret-{i}.txt")), b"x").unwrap();
    }
    daemon
        .local
        .send(clipmesh::clipboard::LocalEvent::Files(
            clipmesh::clipboard::LocalFiles {
                paths: vec![copied],
                at_ms: now_ms(),
            },
        ))
        .await
        .unwrap();
    let msg = status_error("too many files").await;
    assert!(
        msg.contains("max_files") && !msg.contains("secret"),
        "{msg}"
    );

    // A received item over auto_download_max: announced, not downloaded.
    let mut peer = Peer::connect(a.path()).await;
    tokio::time::timeout(STEP, async {
        loop {
            let st = clipmesh::control::request(b.path(), &clipmesh::control::Request::Status)
                .await
                .ok()
                .and_then(|r| r.status);
            if st.is_some_and(|s| s.connected && s.online.len() == 2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    peer.publish(ClipContent::Files(vec![FileEntry {
        name: "big.iso".into(),
        size: 5000,
        body: FileBody::Blob {
            id: BlobId::generate(),
            sha256: [0; 32],
            key: BlobKey::generate(),
        },
    }]))
    .await;
    let msg = status_error("auto_download_max").await;
    assert!(
        msg.contains("5000 bytes") && !msg.contains("big.iso"),
        "{msg}"
    );
    assert!(!dl.exists(), "nothing was downloaded");
    assert!(daemon.files.try_recv().is_err());

    peer.cancel.cancel();
    daemon.stop().await;
    relay.handle.shutdown();
    relay.handle.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_downloads_a_waiting_item_and_fails_clearly() {
    let FileSetup {
        relay,
        a,
        b,
        sandbox: _sandbox,
        dl,
    } = FileSetup::start(|c| {
        c.sync.auto_download_max = 1000;
    })
    .await;

    // No daemon yet: one clear line.
    let out = run(cmd_fetch(b.path()), None).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("daemon is not running"),
        "{}",
        out.stderr
    );

    let mut daemon = RecordedDaemon::start(b.path());
    let status = || async {
        clipmesh::control::request(b.path(), &clipmesh::control::Request::Status)
            .await
            .ok()
            .and_then(|r| r.status)
    };
    let mut peer = Peer::connect(a.path()).await;
    tokio::time::timeout(STEP, async {
        while !status()
            .await
            .is_some_and(|s| s.connected && s.online.len() == 2)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // Nothing waiting yet.
    let out = run(cmd_fetch(b.path()), None).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("nothing to fetch"), "{}", out.stderr);

    // A real 3000-byte blob, over auto_download_max: it waits.
    let data = random_bytes(3000);
    let client = blob_client(a.path());
    let (cl, d) = (client.clone(), data.clone());
    let r = blocking(move || {
        upload_bytes(&cl, &d, &Progress::detached(0), &CancellationToken::new()).unwrap()
    })
    .await;
    let wait_pending = |bytes: u64| {
        let status = &status;
        async move {
            tokio::time::timeout(STEP, async {
                loop {
                    if let Some(p) = status().await.and_then(|s| s.pending) {
                        if p.bytes == bytes {
                            return p;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("the item never waited in status")
        }
    };
    peer.publish(ClipContent::Files(vec![FileEntry {
        name: "secret-report.bin".into(),
        size: 3000,
        body: FileBody::Blob {
            id: r.id,
            sha256: r.sha256,
            key: r.key.clone(),
        },
    }]))
    .await;
    let p = wait_pending(3000).await;
    assert_eq!((p.kind.as_str(), p.files), ("files", 1));
    let st = run(
        {
            let mut c = clipmesh(b.path());
            c.arg("status");
            c
        },
        None,
    )
    .await;
    assert!(
        st.stdout.contains("clipmesh fetch") && !st.stdout.contains("secret"),
        "{}",
        st.stdout
    );
    assert!(
        daemon.files.try_recv().is_err(),
        "nothing applied before the fetch"
    );

    let out = run(cmd_fetch(b.path()), None).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("fetched"), "{}", out.stdout);
    assert!(out.stderr.contains("3000 bytes"), "{}", out.stderr);
    assert!(!out.stderr.contains("secret"), "{}", out.stderr);
    let paths = tokio::time::timeout(STEP, daemon.files.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(paths.len(), 1);
    assert!(paths[0].starts_with(&dl));
    assert!(std::fs::read(&paths[0]).unwrap() == data);
    assert!(status().await.unwrap().pending.is_none());

    // A waiting item whose blob is gone from the relay: a clear error.
    let gone = BlobId::generate();
    peer.publish(ClipContent::Files(vec![FileEntry {
        name: "secret-2.bin".into(),
        size: 5000,
        body: FileBody::Blob {
            id: gone,
            sha256: [9; 32],
            key: BlobKey::generate(),
        },
    }]))
    .await;
    wait_pending(5000).await;
    let out = run(cmd_fetch(b.path()), None).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("not on the relay") && !out.stderr.contains("secret"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.trim().lines().count(), 2, "{}", out.stderr);

    peer.cancel.cancel();
    daemon.stop().await;
    relay.handle.shutdown();
    relay.handle.wait().await;
}

fn cmd_fetch(dir: &Path) -> tokio::process::Command {
    let mut c = clipmesh(dir);
    c.arg("fetch");
    c
}
