//! Shared helpers: an in-process relay, a `clipmesh` process runner and
//! the daemon library with a fake clipboard.

use clipmesh::clipboard::{LocalChange, LocalEvent};
use clipmesh::clock::now_ms;
use clipmesh::control::{self, Request, Status};
use clipmesh::daemon::{run_daemon_mode, ClipboardSink, DaemonError, Transport};
use clipmesh::p2p::Mode;
use clipmesh::Device;
use clipmesh_proto::ClipContent;
use clipmesh_relay::{Config, Relay, RelayHandle, SignupPolicy};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest a single step of a test may take.
pub const STEP: Duration = Duration::from_secs(30);

/// A relay with its data directory.
pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub data: TempDir,
    pub addr: SocketAddr,
    pub url: String,
    pub signup: SignupPolicy,
}

/// The setup token every test relay starts with (written into its data
/// directory before the first start; the relay reuses a token it finds).
pub const SETUP_TOKEN: &str = "clipmesh-test-setup-token-xxxxxxxxxxxxxxxxx";

pub fn relay_config(data: &Path, listen: SocketAddr, signup: SignupPolicy) -> Config {
    if !data.join(clipmesh_relay::setup::SETUP_TOKEN_FILE).exists() {
        std::fs::write(
            data.join(clipmesh_relay::setup::SETUP_TOKEN_FILE),
            SETUP_TOKEN,
        )
        .unwrap();
    }
    let mut c = Config {
        listen,
        data_dir: Some(data.to_path_buf()),
        signup,
        ..Config::default()
    };
    // Tests log in several times from one address.
    c.auth.throttle_free_failures = 100;
    c.auth.signup_free_per_ip = 10_000;
    c
}

impl TestRelay {
    pub async fn start(signup: SignupPolicy) -> Self {
        let data = tempfile::tempdir().unwrap();
        let cfg = relay_config(data.path(), "127.0.0.1:0".parse().unwrap(), signup);
        let handle = Relay::bind(cfg).await.unwrap();
        let addr = handle.local_addr();
        let url = handle.url();
        Self {
            handle: Some(handle),
            data,
            addr,
            url,
            signup,
        }
    }

    /// Stops the relay (clients see close 1012) and waits for it to drain.
    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
            tokio::time::timeout(STEP, h.wait()).await.unwrap();
        }
    }

    /// Starts it again on the same address with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let cfg = relay_config(self.data.path(), self.addr, self.signup);
        // The port was just released; retry briefly if the OS lags.
        let mut last = None;
        for _ in 0..50 {
            match Relay::bind(cfg.clone()).await {
                Ok(h) => {
                    self.handle = Some(h);
                    return;
                }
                Err(e) => {
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("relay did not restart: {last:?}");
    }
}

/// A `clipmesh` invocation for the device in `dir`.
pub fn clipmesh(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clipmesh"));
    c.arg("--config-dir")
        .arg(dir)
        .env("CLIPMESH_SECRET_STORE", "file")
        // A relay's first signup needs its setup token; later ones ignore it.
        .env("CLIPMESH_SETUP_TOKEN", SETUP_TOKEN)
        .env("RUST_LOG", "clipmesh=info,warn")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion, feeding `stdin`.
pub async fn run(mut cmd: Command, stdin: Option<&str>) -> Out {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        // The command may exit without reading its input (it refused the
        // arguments first): its status and output say so.
        if let Err(e) = si.write_all(input.as_bytes()).await {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
        }
        drop(si);
    }
    let out = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("command timed out")
        .unwrap();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Password used by every test account.
pub const PASSWORD: &str = "correct horse battery staple";

/// `clipmesh signup` (or `login`) with `--password-stdin`.
pub async fn auth(
    cmd: &str,
    dir: &Path,
    server: &str,
    user: &str,
    password: &str,
    name: &str,
) -> Out {
    let mut c = clipmesh(dir);
    c.args([
        cmd,
        "--server",
        server,
        "--username",
        user,
        "--password-stdin",
        "--device-name",
        name,
    ]);
    run(c, Some(&format!("{password}\n"))).await
}

/// A new config directory.
pub fn device_dir() -> TempDir {
    tempfile::tempdir().unwrap()
}

/// The device id recorded in a config directory.
pub fn device_id(dir: &Path) -> u64 {
    clipmesh::Config::load(dir)
        .unwrap()
        .account
        .unwrap()
        .device_id
}

/// The device token stored in a config directory (file store).
pub fn token(dir: &Path) -> String {
    let raw = std::fs::read_to_string(dir.join("secrets.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// A long-running child with line readers on both pipes.
pub struct Running {
    pub child: Child,
    pub stdout: Lines<BufReader<ChildStdout>>,
    pub stderr: Lines<BufReader<ChildStderr>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Reads stderr until a line contains `needle`; returns everything read.
    pub async fn stderr_until(&mut self, needle: &str) -> String {
        let mut seen = String::new();
        let found = tokio::time::timeout(STEP, async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no {needle:?} on stderr; got:\n{seen}");
        seen
    }

    /// Next stdout line.
    pub async fn next_stdout(&mut self) -> String {
        tokio::time::timeout(STEP, self.stdout.next_line())
            .await
            .expect("no stdout line in time")
            .unwrap()
            .expect("stdout closed")
    }

    /// Next stdout line, reading stderr meanwhile into `stderr` (a chatty
    /// child, e.g. at trace level, would otherwise block on a full pipe).
    pub async fn next_stdout_draining(&mut self, stderr: &mut String) -> String {
        tokio::time::timeout(STEP, async {
            loop {
                tokio::select! {
                    line = self.stdout.next_line() => break line.unwrap().expect("stdout closed"),
                    Ok(Some(line)) = self.stderr.next_line() => {
                        stderr.push_str(&line);
                        stderr.push('\n');
                    }
                }
            }
        })
        .await
        .expect("no stdout line in time")
    }

    /// Waits for exit.
    pub async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("process did not exit")
            .unwrap()
    }

    /// Rest of stderr after exit.
    pub async fn rest_of_stderr(&mut self) -> String {
        let mut s = String::new();
        while let Ok(Ok(Some(line))) = tokio::time::timeout(STEP, self.stderr.next_line()).await {
            s.push_str(&line);
            s.push('\n');
        }
        s
    }
}

/// Records what the daemon puts on "the clipboard".
pub struct FakeClipboard(pub mpsc::UnboundedSender<ClipContent>);

impl ClipboardSink for FakeClipboard {
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>> {
        let r = self.0.send(content).map_err(|_| "gone".to_string());
        async move { r }
    }
}

/// The daemon library on a device directory, with a fake clipboard.
pub struct TestDaemon {
    pub dir: PathBuf,
    pub local: mpsc::Sender<LocalEvent>,
    pub applied: mpsc::UnboundedReceiver<ClipContent>,
    pub cancel: CancellationToken,
    pub task: JoinHandle<Result<(), DaemonError>>,
}

impl TestDaemon {
    /// Relay only (what `run_daemon` does).
    pub fn start(dir: &Path) -> Self {
        let transport = Transport {
            mode: Mode::Relay,
            bind: String::new(),
            idle_close: None,
        };
        Self::start_with(dir, transport)
    }

    pub fn start_with(dir: &Path, transport: Transport) -> Self {
        Self::start_as(dir, Device::load(dir).unwrap(), transport)
    }

    /// The device in `dir` as `device` says (e.g. with another server URL).
    pub fn start_as(dir: &Path, device: Device, transport: Transport) -> Self {
        let (ltx, lrx) = mpsc::channel(16);
        let (atx, arx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let d = dir.to_path_buf();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            run_daemon_mode(&d, device, FakeClipboard(atx), lrx, c, transport).await
        });
        Self {
            dir: dir.to_path_buf(),
            local: ltx,
            applied: arx,
            cancel,
            task,
        }
    }

    pub async fn copy(&self, text: &str) {
        self.copy_content(ClipContent::Text(text.into())).await;
    }

    pub async fn copy_content(&self, content: ClipContent) {
        let ev: LocalEvent = LocalChange {
            content,
            at_ms: now_ms(),
        }
        .into();
        self.local.send(ev).await.unwrap();
    }

    pub async fn next_applied(&mut self) -> String {
        match tokio::time::timeout(STEP, self.applied.recv()).await {
            Ok(Some(ClipContent::Text(t))) => t,
            other => panic!("nothing applied in time: {other:?}"),
        }
    }

    pub async fn status(&self) -> Option<Status> {
        control::request(&self.dir, &Request::Status)
            .await
            .ok()
            .and_then(|r| r.status)
    }

    pub async fn stop(self) -> Result<(), DaemonError> {
        self.cancel.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .unwrap()
            .unwrap()
    }
}
