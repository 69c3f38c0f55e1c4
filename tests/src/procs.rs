//! The real processes: relay, devices, daemons, `clipmesh watch`.
//!
//! Every process writes its standard output and error to a log file in the
//! test's directory (the leak test greps them). Processes get SIGTERM on
//! drop, then SIGKILL if they do not exit within [`STOP_TIMEOUT`].

use crate::bins::{self, CLIENT, RELAY};
use crate::wait::{poll_until, STEP};
use crate::wine::{win_path, WineExe};
use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The line prefix the relay prints once it accepts connections.
pub const LISTENING: &str = "clipmesh-relay listening on http://";

/// Client environment: keep secrets in the config dir (no keyring in tests).
const ENV_SECRET_STORE: &str = "CLIPMESH_SECRET_STORE";

/// Sends SIGTERM, waits up to [`STOP_TIMEOUT`], then kills.
fn terminate(child: &mut Child) -> Result<()> {
    terminate_within(child, STOP_TIMEOUT)
}

/// Ends `child` by its PID: SIGTERM, up to `grace` to exit, then SIGKILL;
/// an error if it needed the SIGKILL.
pub fn terminate_within(child: &mut Child, grace: Duration) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("pid")?;
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait()?;
    bail!("process {} ignored SIGTERM for {grace:?}", child.id());
}

/// Copies a child's stdout and stderr, line by line, into one log file,
/// passing each line to `tap` as well.
fn capture(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    log: &Path,
    tap: Option<mpsc::Sender<String>>,
) -> Result<()> {
    let file = Arc::new(Mutex::new(
        File::create(log).with_context(|| format!("create {}", log.display()))?,
    ));
    let pump = |r: Box<dyn Read + Send>, tap: Option<mpsc::Sender<String>>| {
        let file = Arc::clone(&file);
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(&line);
                }
                if let Some(t) = &tap {
                    let _ = t.send(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
            }
        });
    };
    if let Some(o) = stdout {
        pump(Box::new(o), tap.clone());
    }
    if let Some(e) = stderr {
        pump(Box::new(e), tap);
    }
    Ok(())
}

/// The setup token every relay started here has (written into its data
/// directory before its first start; the relay reuses a token it finds), so
/// the first `clipmesh signup` can pass it.
pub const SETUP_TOKEN: &str = "clipmesh-test-setup-token-xxxxxxxxxxxxxxxxx";

/// A running `clipmesh-relay`.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The extra `[auth]` lines it was started with (kept on restart).
    pub auth_toml: String,
}

impl Relay {
    /// Starts a relay on `127.0.0.1:port` (0 = any free port) with open
    /// signup, logging at `rust_log` into `log`.
    pub fn start(data_dir: &Path, log: &Path, port: u16, rust_log: &str) -> Result<Self> {
        Self::start_with(data_dir, log, port, rust_log, "")
    }

    /// Like [`Relay::start`], adding `auth_toml` (lines for the config's
    /// `[auth]` section, e.g. short session lifetimes).
    pub fn start_with(
        data_dir: &Path,
        log: &Path,
        port: u16,
        rust_log: &str,
        auth_toml: &str,
    ) -> Result<Self> {
        std::fs::create_dir_all(data_dir).context("relay data dir")?;
        let token_file = data_dir.join("setup-token");
        if !token_file.exists() {
            std::fs::write(&token_file, SETUP_TOKEN).context("write setup token")?;
        }
        // Tests sign several accounts up from 127.0.0.1.
        let config = data_dir.join("test-relay.toml");
        std::fs::write(
            &config,
            format!("[auth]\nsignup_free_per_ip = 10000\n{auth_toml}\n"),
        )
        .context("write relay config")?;
        let mut child = Command::new(bins::bin(RELAY)?)
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--signup", "open"])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start clipmesh-relay")?;
        let (tx, rx) = mpsc::channel();
        capture(child.stdout.take(), child.stderr.take(), log, Some(tx))?;
        let deadline = Instant::now() + STEP;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(i) = line.find(LISTENING) {
                        let rest = &line[i + LISTENING.len()..];
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let port = addr
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
                            .ok_or_else(|| anyhow!("cannot parse relay address in {line:?}"))?;
                        break port;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "relay did not print {LISTENING:?} within {STEP:?}; see {}",
                        log.display()
                    );
                }
            }
        };
        Ok(Self {
            child,
            port,
            data_dir: data_dir.to_owned(),
            log: log.to_owned(),
            auth_toml: auth_toml.to_owned(),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the relay with SIGTERM (it closes sockets with 1012).
    pub fn stop(&mut self) -> Result<()> {
        terminate(&mut self.child)
    }

    /// Kills the relay with SIGKILL (a crash: nothing is flushed) and waits
    /// for it to exit.
    pub fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }

    /// Starts a relay again on the same port and data directory, logging
    /// into `log`, after this one has stopped or been killed.
    pub fn restart(&mut self, log: &Path, rust_log: &str) -> Result<()> {
        self.kill()?;
        let auth = self.auth_toml.clone();
        *self = Self::start_with(&self.data_dir.clone(), log, self.port, rust_log, &auth)?;
        Ok(())
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> Result<String> {
        http_get(self.port, "/metrics")
    }

    /// The value of an unlabelled metric.
    pub fn metric(&self, name: &str) -> Result<u64> {
        let text = self.metrics()?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == name).then(|| v.trim().parse::<f64>().ok())?
            })
            .map(|v| v as u64)
            .ok_or_else(|| anyhow!("metric {name} not found"))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}

/// The relay on Cloudflare Workers under a local workerd: the built bundle
/// (`scripts/worker-dev --build-only`) run by `worker/dev/serve.mjs`
/// (miniflare, pinned in `worker/package-lock.json`) on 127.0.0.1 with its
/// D1/KV/R2/Durable Object state in a directory, signup open.
#[derive(Debug)]
pub struct WorkerRelay {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// Its state directory.
    pub state: PathBuf,
}

impl WorkerRelay {
    /// The bundle directory from `CLIPMESH_WORKER_BUNDLE`, which
    /// `scripts/test.d/50-workers.sh` sets after building it.
    pub fn bundle_from_env() -> Result<PathBuf> {
        std::env::var_os("CLIPMESH_WORKER_BUNDLE")
            .map(PathBuf::from)
            .context(
                "CLIPMESH_WORKER_BUNDLE is not set: build the Worker with scripts/worker-dev \
                 --build-only (scripts/test.d/50-workers.sh does) and point it at target/worker/bundle",
            )
    }

    /// Starts it on `127.0.0.1:port` (0 = a free port) with `state`,
    /// logging to `log`; waits until it listens.
    pub fn start(bundle: &Path, state: &Path, log: &Path, port: u16) -> Result<Self> {
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port()
        } else {
            port
        };
        let serve = Path::new(env!("CARGO_MANIFEST_DIR")).join("../worker/dev/serve.mjs");
        let mut child = Command::new("node")
            .arg(&serve)
            .arg("--build")
            .arg(bundle)
            .arg("--port")
            .arg(port.to_string())
            .arg("--state")
            .arg(state)
            .args(["--var", "SIGNUP=open"])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("NO_UPDATE_NOTIFIER", "1")
            .env("MINIFLARE_TELEMETRY_DISABLED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start node worker/dev/serve.mjs")?;
        let (tx, rx) = mpsc::channel();
        capture(child.stdout.take(), child.stderr.take(), log, Some(tx))?;
        let deadline = Instant::now() + STEP * 3;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = terminate(&mut child);
                    bail!(
                        "the Worker did not start within {:?}; see {}",
                        STEP * 3,
                        log.display()
                    );
                }
            }
        }
        Ok(Self {
            child,
            port,
            state: state.to_owned(),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:4567`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops it with SIGTERM (miniflare then stops its workerd).
    pub fn stop(&mut self) -> Result<()> {
        terminate(&mut self.child)
    }
}

impl Drop for WorkerRelay {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}

/// A minimal HTTP/1.1 GET on loopback (no client library needed).
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    // Bodies of /metrics are small; undo chunked encoding if used.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        return Ok(out);
    }
    Ok(body.to_owned())
}

/// One device: a config directory and a place for its logs.
#[derive(Debug)]
pub struct Device {
    /// Short name for log files.
    pub name: String,
    /// `--config-dir`.
    pub config_dir: PathBuf,
    /// Where this device's process logs go.
    pub log_dir: PathBuf,
    /// Set for a Windows device: runs `clipmesh.exe` under Wine.
    pub wine: Option<WineExe>,
}

impl Device {
    /// A device with config in `root/<name>/config`, logs in `log_dir`.
    pub fn new(root: &Path, log_dir: &Path, name: &str) -> Result<Self> {
        let config_dir = root.join(name).join("config");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::create_dir_all(log_dir)?;
        Ok(Self {
            name: name.to_owned(),
            config_dir,
            log_dir: log_dir.to_owned(),
            wine: None,
        })
    }

    /// A Windows device: like [`Device::new`], running `clipmesh.exe` under
    /// Wine (`exe`), with its config dir given as a `Z:` path.
    pub fn new_wine(root: &Path, log_dir: &Path, name: &str, exe: WineExe) -> Result<Self> {
        let mut d = Self::new(root, log_dir, name)?;
        d.wine = Some(exe);
        Ok(d)
    }

    /// `clipmesh --config-dir DIR` with the test environment. Direct
    /// links (`--mode auto`, the default, and `p2p`) bind to 127.0.0.1
    /// only, so tests never send a packet to another address.
    pub fn command(&self) -> Result<Command> {
        let mut c = match &self.wine {
            None => {
                let mut c = Command::new(bins::bin(CLIENT)?);
                c.arg("--config-dir").arg(&self.config_dir);
                c
            }
            Some(w) => {
                let mut c = w.command();
                c.arg("--config-dir").arg(win_path(&self.config_dir));
                c
            }
        };
        c.env(ENV_SECRET_STORE, "file")
            .env("CLIPMESH_P2P_BIND", "127.0.0.1")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        Ok(c)
    }

    fn run_to_end(&self, what: &str, mut cmd: Command, stdin: Option<&str>) -> Result<String> {
        let log = self.log_dir.join(format!("{}-{what}.log", self.name));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| format!("clipmesh {what}"))?;
        if let Some(mut i) = child.stdin.take() {
            if let Some(s) = stdin {
                // The command may exit without reading its input (it
                // refused the arguments first): its status and output say so.
                match i.write_all(s.as_bytes()) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                    r => r?,
                }
            }
        }
        let out = child.wait_with_output()?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        f.write_all(&out.stdout)?;
        f.write_all(&out.stderr)?;
        if !out.status.success() {
            bail!(
                "clipmesh {what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn auth(&self, verb: &str, server: &str, user: &str, password: &str, log: &str) -> Result<()> {
        self.auth_with(verb, server, user, password, &[], log)
    }

    fn auth_with(
        &self,
        verb: &str,
        server: &str,
        user: &str,
        password: &str,
        extra: &[&str],
        log: &str,
    ) -> Result<()> {
        let mut c = self.command()?;
        c.arg(verb)
            .args(["--server", server, "--username", user, "--password-stdin"])
            .args(extra)
            .env("RUST_LOG", log);
        if verb == "signup" {
            c.env("CLIPMESH_SETUP_TOKEN", SETUP_TOKEN);
        } else if !extra.contains(&"clipcascade") {
            c.args(["--device-name", &self.name]);
        }
        self.run_to_end(verb, c, Some(&format!("{password}\n")))
            .map(|_| ())
    }

    /// `clipmesh signup --clipcascade-compat`: an account that ClipCascade
    /// clients may log in to.
    pub fn signup_clipcascade_compat(
        &self,
        server: &str,
        user: &str,
        password: &str,
        log: &str,
    ) -> Result<()> {
        let extra = ["--clipcascade-compat"];
        self.auth_with("signup", server, user, password, &extra, log)
    }

    /// `clipmesh login --profile clipcascade`: this device's `clipmesh run`
    /// then speaks ClipCascade.
    pub fn login_clipcascade(
        &self,
        server: &str,
        user: &str,
        password: &str,
        log: &str,
    ) -> Result<()> {
        let extra = ["--profile", "clipcascade"];
        self.auth_with("login", server, user, password, &extra, log)
    }

    /// `clipmesh signup`.
    pub fn signup(&self, server: &str, user: &str, password: &str, log: &str) -> Result<()> {
        self.auth("signup", server, user, password, log)
    }

    /// `clipmesh login`.
    pub fn login(&self, server: &str, user: &str, password: &str, log: &str) -> Result<()> {
        self.auth("login", server, user, password, log)
    }

    /// `clipmesh status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let mut c = self.command()?;
        c.args(["status", "--json"]);
        let out = self.run_to_end("status", c, None)?;
        serde_json::from_str(out.trim()).context("status --json output")
    }

    /// `clipmesh send TEXT`.
    pub fn send(&self, text: &str, log: &str) -> Result<()> {
        let mut c = self.command()?;
        c.args(["send", text]).env("RUST_LOG", log);
        self.run_to_end("send", c, None).map(|_| ())
    }

    /// The stored secrets: (token, data key bytes) from `secrets.json`.
    pub fn secrets(&self) -> Result<(String, Vec<u8>)> {
        let raw = std::fs::read_to_string(self.config_dir.join("secrets.json"))
            .context("read secrets.json (CLIPMESH_SECRET_STORE=file)")?;
        let v: serde_json::Value = serde_json::from_str(&raw)?;
        let token = v["token"].as_str().context("token")?.to_owned();
        let key = hex::decode(v["data_key"].as_str().context("data_key")?)?;
        Ok((token, key))
    }

    /// Starts `clipmesh run` on `display`.
    pub fn run(&self, display: &str, rust_log: &str) -> Result<Daemon> {
        self.run_env(&[("DISPLAY", display.into())], rust_log)
    }

    /// Starts `clipmesh run` with `env` (a display: `DISPLAY`, or a Wayland
    /// compositor's `WAYLAND_DISPLAY` and `XDG_RUNTIME_DIR`).
    pub fn run_env(&self, env: &[(&str, std::ffi::OsString)], rust_log: &str) -> Result<Daemon> {
        self.run_args(env, &[], rust_log)
    }

    /// Like [`Device::run_env`], as `clipmesh run --mode MODE`.
    pub fn run_env_mode(
        &self,
        env: &[(&str, std::ffi::OsString)],
        mode: &str,
        rust_log: &str,
    ) -> Result<Daemon> {
        self.run_args(env, &["--mode", mode], rust_log)
    }

    /// Starts `clipmesh run --mode MODE` on `display`.
    pub fn run_mode(&self, display: &str, mode: &str, rust_log: &str) -> Result<Daemon> {
        self.run_args(&[("DISPLAY", display.into())], &["--mode", mode], rust_log)
    }

    fn run_args(
        &self,
        env: &[(&str, std::ffi::OsString)],
        args: &[&str],
        rust_log: &str,
    ) -> Result<Daemon> {
        let log = self.log_dir.join(format!("{}-run.log", self.name));
        let mut c = self.command()?;
        let mut child = c
            .arg("run")
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("clipmesh run")?;
        capture(child.stdout.take(), child.stderr.take(), &log, None)?;
        Ok(Daemon { child, log })
    }

    /// Starts `clipmesh watch --json`.
    pub fn watch(&self, rust_log: &str) -> Result<Watch> {
        let log = self.log_dir.join(format!("{}-watch.log", self.name));
        let mut c = self.command()?;
        let mut child = c
            .args(["watch", "--json"])
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("clipmesh watch")?;
        let (tx, rx) = mpsc::channel();
        // Only stdout carries JSON lines; stderr goes to the log too.
        capture(child.stdout.take(), None, &log, Some(tx))?;
        capture(
            None,
            child.stderr.take(),
            &self.log_dir.join(format!("{}-watch.err.log", self.name)),
            None,
        )?;
        Ok(Watch {
            child,
            rx,
            seen: Vec::new(),
        })
    }

    /// Waits until the running daemon reports `connected: true`.
    pub fn wait_connected(&self, timeout: Duration) -> Result<serde_json::Value> {
        poll_until(
            &format!("{} to connect", self.name),
            timeout,
            Duration::from_millis(100),
            || {
                let s = self.status()?;
                Ok(is_connected(&s).then_some(s))
            },
        )
    }

    /// Waits until the running daemon's status lists exactly one peer,
    /// reached over an open direct link (`--mode auto` or `p2p`).
    pub fn wait_link_open(&self, timeout: Duration) -> Result<serde_json::Value> {
        poll_until(
            &format!("{}: direct link open", self.name),
            timeout,
            Duration::from_millis(100),
            || {
                let s = self.status()?;
                let open = s["peers"].as_array().is_some_and(|p| {
                    p.len() == 1 && p[0]["path"] == "p2p" && p[0]["link"] == "open"
                });
                Ok(open.then_some(s))
            },
        )
    }
}

/// Whether a `status --json` document says the daemon is connected.
pub fn is_connected(status: &serde_json::Value) -> bool {
    status["connected"].as_bool() == Some(true)
        || status["status"]["connected"].as_bool() == Some(true)
}

/// A running `clipmesh run`.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Daemon {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with SIGTERM.
    pub fn stop(&mut self) -> Result<()> {
        terminate(&mut self.child)
    }

    /// Waits until the daemon's log holds `needle` at least `n` times (for
    /// lifecycle lines such as the ClipCascade profile's "subscribed").
    pub fn wait_log(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let log = self.log.clone();
        poll_until(
            &format!("{n}× {needle:?} in {}", log.display()),
            timeout,
            Duration::from_millis(50),
            || {
                self.check_running()?;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Ok((text.matches(needle).count() >= n).then_some(()))
            },
        )
    }

    /// Fails if the daemon has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("daemon exited ({st}); see {}", self.log.display());
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}

/// A running `clipmesh watch --json`, its lines parsed.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    rx: mpsc::Receiver<String>,
    /// Every JSON line received so far.
    pub seen: Vec<serde_json::Value>,
}

impl Watch {
    /// Waits for the next clip line, at most `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                        continue;
                    };
                    self.seen.push(v.clone());
                    return Ok(Some(v));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("clipmesh watch exited: {:?}", self.child.try_wait()?)
                }
            }
        }
    }

    /// Waits until a line with `text` arrives; returns it.
    pub fn wait_text(&mut self, text: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left)? {
                Some(v) if v["text"].as_str() == Some(text) => return Ok(v),
                Some(_) => {}
                None => bail!("watch did not print {text:?} within {timeout:?}"),
            }
        }
    }

    /// Lines that already arrived, without waiting.
    pub fn drain(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(line) = self.rx.try_recv() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                self.seen.push(v.clone());
                out.push(v);
            }
        }
        out
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child);
    }
}
