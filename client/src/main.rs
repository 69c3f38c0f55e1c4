//! The `clipmesh` command line. See `docs/client.md`.
//!
//! Every failure prints one line, `clipmesh: <what went wrong>`, and exits
//! with status 1 (2 for usage errors).

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use clipmesh::account::{self, Credentials, Device};
use clipmesh::clock::now_ms;
use clipmesh::config::{self, ENV_CONFIG_DIR};
use clipmesh::control::{self, ControlError, Request};
use clipmesh::daemon;
use clipmesh::p2p::Mode;
use clipmesh::{oneshot, watch};
use clipmesh_proto::{ClipContent, DeviceId};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

/// How long a standalone `send` waits for the relay's ack.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "clipmesh",
    version,
    about = "End-to-end encrypted clipboard sync"
)]
struct Cli {
    /// Directory holding this device's config, secrets fallback and state.
    #[arg(long, global = true, env = ENV_CONFIG_DIR, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an account (keys are derived on this device), then log in.
    Signup(AuthArgs),
    /// Log this device in and store its token and data key.
    Login(AuthArgs),
    /// Revoke this device's session and delete local secrets.
    Logout,
    /// Change the account's password (OPAQUE: the relay checks the current
    /// one with a fresh login and stores a new record; clips stay readable).
    Password {
        /// Read the current and then the new password, one per line, from
        /// standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Log every other device of the account out.
        #[arg(long)]
        end_other_sessions: bool,
    },
    /// Run the sync daemon in the foreground until SIGTERM or Ctrl-C.
    Run {
        /// Transport: `auto` (direct WebRTC links where they open, and the
        /// relay as well), `relay` (the relay only) or `p2p` (direct links
        /// only; the relay carries signalling and presence, never clips).
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
    },
    /// Show the running daemon's state.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publish TEXT (or standard input) as a clip to this user's devices.
    Send {
        /// The text; read from standard input when omitted.
        text: Option<String>,
    },
    /// Download the received image or file list that waits because it is
    /// over `auto_download_max` (see `status`), with progress, and put it
    /// on the clipboard. Needs the running daemon.
    Fetch,
    /// Print clips as they arrive.
    Watch {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// List this user's devices, or revoke one.
    Devices {
        /// Revoke the device with this id. On a v2 account this changes the
        /// password and starts a new key epoch that the revoked device
        /// cannot open (asks for the current and a new password).
        #[arg(long, value_name = "ID")]
        revoke: Option<u64>,
        /// With --revoke: read the current and then the new password, one
        /// per line, from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, ...).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) for clipmesh(1).
    #[command(hide = true)]
    Man,
}

#[derive(clap::Args, Debug)]
struct AuthArgs {
    /// Relay URL, e.g. https://relay.example.org
    #[arg(long)]
    server: String,
    /// Account name.
    #[arg(long)]
    username: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Name for this device (default: the host name).
    #[arg(long)]
    device_name: Option<String>,
    /// Trust only the certificates in this PEM file for the relay (private
    /// CA or self-signed relay); remembered for later commands.
    #[arg(long, value_name = "FILE", env = "CLIPMESH_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Also let ClipCascade clients log in to this account with the same
    /// password (stores a weaker verifier on the relay: see
    /// docs/crypto.md, "ClipCascade compatibility").
    #[arg(long)]
    clipcascade_compat: bool,
    /// Which protocol this device speaks: `clipmesh` (the default) or
    /// `clipcascade` (ClipCascade's login, STOMP and encryption, to sync
    /// with ClipCascade clients through clipmesh-relay or an original
    /// ClipCascade server; `login` only).
    #[arg(long, value_enum, default_value_t = Profile::Clipmesh)]
    profile: Profile,
    /// ClipCascade profile: PBKDF2 iterations (ClipCascade's setting).
    #[arg(long, default_value_t = clipmesh::clipcascade::DEFAULT_ITERATIONS)]
    cc_iterations: u32,
    /// ClipCascade profile: the custom salt (ClipCascade's setting; default
    /// empty).
    #[arg(long, default_value = "")]
    cc_custom_salt: String,
    /// Allow plain http:// to a relay on another machine (its traffic,
    /// tokens included, can then be read and changed on the way).
    #[arg(long)]
    insecure_http: bool,
    /// The relay's one-time setup token, needed to create its first (admin)
    /// account; the relay prints it at start.
    #[arg(long, value_name = "TOKEN", env = "CLIPMESH_SETUP_TOKEN")]
    setup_token: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Profile {
    /// clipmesh's own protocol and encryption.
    Clipmesh,
    /// ClipCascade's protocol and encryption.
    Clipcascade,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => return completions(shell),
        Command::Man => return man(),
        _ => {}
    }
    init_tracing(&cli.command);
    // One TLS backend for every client (WebSocket and HTTP).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("clipmesh: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("clipmesh: {line}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(cmd: &Command) {
    let default = match cmd {
        // The WebRTC stack (rtc*, webrtc) warns several times per direct
        // link about things it handles itself (a STUN check before the
        // peer's credentials, no DTLS server name): errors only for users.
        Command::Run { .. } | Command::Watch { .. } => "clipmesh=info,warn,rtc=error,webrtc=error",
        _ => "warn",
    };
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // tungstenite logs the whole client handshake request at trace level,
    // `Authorization: Bearer <token>` included: drop its trace events
    // whatever RUST_LOG says (found by the e2e leak test). A directive such
    // as `tungstenite=debug` would raise it to debug under the default filter.
    let no_dependency_trace = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() != tracing::Level::TRACE
            || !(meta.target().starts_with("tungstenite")
                || meta.target().starts_with("tokio_tungstenite"))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(no_dependency_trace),
        )
        .init();
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let dir = config::config_dir(cli.config_dir.as_deref())?;
    match cli.command {
        Command::Signup(a) => auth(dir, a, true).await,
        Command::Login(a) => auth(dir, a, false).await,
        Command::Logout => {
            blocking(move || account::logout(&dir)).await??;
            println!("logged out");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { mode } => run(dir, mode).await,
        Command::Status { json } => status(&dir, json).await,
        Command::Send { text } => send(dir, text).await,
        Command::Fetch => fetch(&dir).await,
        Command::Watch { json } => watch(dir, json).await,
        Command::Devices {
            revoke,
            password_stdin,
        } => devices(dir, revoke, password_stdin).await,
        Command::Password {
            password_stdin,
            end_other_sessions,
        } => password(dir, password_stdin, end_other_sessions).await,
        // Answered in main, before the runtime starts.
        Command::Completions { .. } | Command::Man => Ok(ExitCode::SUCCESS),
    }
}

/// `clipmesh completions SHELL`: the completion script on stdout (the
/// packages ship the bash, zsh and fish ones).
fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    // Into memory first: clap_complete panics on a failed write (a closed
    // pipe), and a failed write here is one line and exit status 1.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "clipmesh", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clipmesh: cannot write the completions: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `clipmesh man`: clipmesh(1) in roff on stdout (the packages ship it).
fn man() -> ExitCode {
    use clap::CommandFactory;
    let page = clap_mangen::Man::new(Cli::command());
    match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clipmesh: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("internal error: {e}"))
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let pw = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        if pw.is_empty() {
            bail!("empty password on standard input");
        }
        return Ok(pw);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to prompt for the password: use --password-stdin");
    }
    let pw =
        Zeroizing::new(rpassword::prompt_password("Password: ").context("reading the password")?);
    if pw.is_empty() {
        bail!("empty password");
    }
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("Repeat password: ").context("reading the password")?,
        );
        if *again != *pw {
            bail!("the passwords do not match");
        }
    }
    Ok(pw)
}

fn host_name() -> String {
    let from_env = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok());
    let name = from_env
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    name.unwrap_or_else(|| "device".to_owned())
}

async fn auth(dir: PathBuf, a: AuthArgs, signup: bool) -> Result<ExitCode> {
    if a.profile == Profile::Clipcascade {
        if signup {
            bail!("the ClipCascade profile has no signup: create the account on the server (with clipmesh-relay: `clipmesh signup --clipcascade-compat` from a clipmesh device)");
        }
        return clipcascade_login(dir, a).await;
    }
    let password = read_password(a.password_stdin, signup && !a.password_stdin)?;
    let device_name = a.device_name.clone().unwrap_or_else(host_name);
    let compat = a.clipcascade_compat;
    let (d2, pw2) = (dir.clone(), password.clone());
    let acct = blocking(move || {
        let creds = Credentials {
            server: &a.server,
            username: &a.username,
            password: password.as_bytes(),
            device_name: &device_name,
            ca_file: a.ca_file.as_deref(),
            insecure_http: a.insecure_http,
            setup_token: a.setup_token.as_deref(),
        };
        if signup {
            account::signup(&dir, &creds)
        } else {
            account::login(&dir, &creds)
        }
    })
    .await??;
    if compat {
        blocking(move || {
            let device = Device::load(&d2)?;
            let hash = clipmesh::clipcascade::login_hash(pw2.as_bytes());
            device
                .api()?
                .set_clipcascade(&device.secrets.token, Some(&hash), None)
                .context("turning on ClipCascade compatibility")
        })
        .await??;
        println!(
            "ClipCascade clients may now log in as {} with the same password",
            acct.username
        );
    }
    println!(
        "{} as {} on {} (device {}, \"{}\"); secrets in the {}",
        if signup {
            "signed up and logged in"
        } else {
            "logged in"
        },
        acct.username,
        acct.server,
        acct.device_id,
        acct.device_name,
        if acct.secret_store == "keyring" {
            "OS keyring"
        } else {
            "0600 file secrets.json"
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn clipcascade_login(dir: PathBuf, a: AuthArgs) -> Result<ExitCode> {
    use clipmesh::clipcascade::{daemon::Profile as CcProfile, login_hash, web::Web, CcKey};
    if a.cc_iterations < clipmesh::clipcascade::crypto::MIN_ITERATIONS {
        bail!(
            "--cc-iterations must be at least {}",
            clipmesh::clipcascade::crypto::MIN_ITERATIONS
        );
    }
    let server = clipmesh::config::normalize_server(&a.server)
        .map_err(|e| anyhow!("bad server URL: {e}"))?;
    // The login sends a fast hash of the password: never over plain http://
    // to another machine unless asked, and refused before any socket opens.
    clipmesh::config::check_plain_http(&server, a.insecure_http).map_err(|e| anyhow!(e))?;
    let password = read_password(a.password_stdin, false)?;
    let ca_file = a
        .ca_file
        .as_deref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    let (user, d2, srv) = (a.username.clone(), dir.clone(), server.clone());
    blocking(move || {
        let hash = login_hash(password.as_bytes());
        let roots = clipmesh::tls::TrustRoots::load(ca_file.as_deref())?;
        let cookie = Web::new(&srv, &roots).login(&user, &hash)?;
        let key = CcKey::derive(
            &user,
            password.as_bytes(),
            &a.cc_custom_salt,
            a.cc_iterations,
        );
        clipmesh::config::ensure_dir(&d2)?;
        CcProfile {
            server: srv,
            username: user,
            login_hash: hash.to_string(),
            key: hex::encode(key.expose()),
            cookie,
            ca_file,
        }
        .save(&d2)
        .context("saving the ClipCascade profile")?;
        anyhow::Ok(())
    })
    .await??;
    println!(
        "logged in as {} on {server} with the ClipCascade profile; `clipmesh run` now speaks ClipCascade (profile in {})",
        a.username,
        clipmesh::clipcascade::daemon::PROFILE_FILE
    );
    Ok(ExitCode::SUCCESS)
}

async fn load_device(dir: &Path) -> Result<Device> {
    let d = dir.to_path_buf();
    Ok(blocking(move || Device::load(&d)).await??)
}

async fn run(dir: PathBuf, mode: Mode) -> Result<ExitCode> {
    let d2 = dir.clone();
    if let Some(profile) = blocking(move || clipmesh::clipcascade::daemon::Profile::load(&d2))
        .await?
        .context("reading the ClipCascade profile")?
    {
        return run_clipcascade(dir, profile).await;
    }
    let device = load_device(&dir).await?;
    let cancel = CancellationToken::new();
    let (clip, local) = clipmesh::clipboard::spawn_watcher(
        device.config.sync.clipboard_config(),
        cancel.child_token(),
    )
    .context("clipboard")?;
    let signals = TaskTracker::new();
    signals.spawn(wait_for_shutdown(cancel.clone()));
    let transport = daemon::Transport::from_env(mode);
    let r = daemon::run_daemon_mode(&dir, device, clip, local, cancel.clone(), transport).await;
    cancel.cancel();
    signals.close();
    signals.wait().await;
    r?;
    Ok(ExitCode::SUCCESS)
}

async fn run_clipcascade(
    dir: PathBuf,
    profile: clipmesh::clipcascade::daemon::Profile,
) -> Result<ExitCode> {
    let d2 = dir.clone();
    let config = blocking(move || clipmesh::Config::load(&d2)).await??;
    let sync = config.sync;
    let cancel = CancellationToken::new();
    let (clip, local) =
        clipmesh::clipboard::spawn_watcher(sync.clipboard_config(), cancel.child_token())
            .context("clipboard")?;
    let signals = TaskTracker::new();
    signals.spawn(wait_for_shutdown(cancel.clone()));
    let r =
        clipmesh::clipcascade::daemon::run(dir, profile, sync, clip.clone(), local, cancel.clone())
            .await;
    cancel.cancel();
    clip.stopped().await;
    signals.close();
    signals.wait().await;
    r?;
    Ok(ExitCode::SUCCESS)
}

/// Cancels `cancel` on Ctrl-C or SIGTERM, on Windows also on Ctrl+Break,
/// console close and shutdown (or when cancelled elsewhere).
async fn wait_for_shutdown(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = cancel.cancelled() => return,
                }
                cancel.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = cancel.cancelled() => return,
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        // Ctrl+C, Ctrl+Break, the console window closing, system shutdown.
        // (Windows allows a few seconds after a close before it ends the
        // process: enough for the daemon to drain.)
        let (Ok(mut c), Ok(mut b), Ok(mut close), Ok(mut down)) =
            (ctrl_c(), ctrl_break(), ctrl_close(), ctrl_shutdown())
        else {
            tracing::warn!("cannot listen for console events");
            cancel.cancelled().await;
            return;
        };
        tokio::select! {
            _ = c.recv() => {}
            _ = b.recv() => {}
            _ = close.recv() => {}
            _ = down.recv() => {}
            _ = cancel.cancelled() => return,
        }
    }
    #[cfg(not(any(unix, windows)))]
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = cancel.cancelled() => return,
    }
    tracing::info!("shutting down");
    cancel.cancel();
}

async fn status(dir: &Path, json: bool) -> Result<ExitCode> {
    let resp = match control::request(dir, &Request::Status).await {
        Ok(r) => r,
        Err(ControlError::NotRunning) if json => {
            println!("{}", serde_json::json!({ "running": false }));
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    let st = match (resp.ok, resp.status) {
        (true, Some(st)) => st,
        _ => bail!(resp.error.unwrap_or_else(|| "daemon gave no status".into())),
    };
    if json {
        let mut v = serde_json::to_value(&st)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("running".into(), true.into());
        }
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("daemon:       running (device {})", st.device_id);
    println!(
        "connection:   {}",
        if st.connected {
            format!("connected via {}", st.path)
        } else {
            "not connected (retrying)".into()
        }
    );
    let names: Vec<String> = st
        .online
        .iter()
        .map(|d| format!("{} ({})", d.name, d.id))
        .collect();
    println!(
        "online:       {}",
        if names.is_empty() {
            "-".into()
        } else {
            names.join(", ")
        }
    );
    for p in &st.peers {
        println!(
            "peer:         {} via {} (direct link {})",
            p.id, p.path, p.link
        );
    }
    println!(
        "last sync:    {}",
        st.last_sync_ms
            .map(|ms| format!("{} s ago", now_ms().saturating_sub(ms) / 1000))
            .unwrap_or_else(|| "never".into())
    );
    println!("last error:   {}", st.last_error.as_deref().unwrap_or("-"));
    if let Some(e) = st.key_epoch {
        println!("key epoch:    {e} (moved while running)");
    }
    for d in &st.new_devices {
        println!(
            "new device:   {} \"{}\", safety number {} (check it on that device: `clipmesh devices`)",
            d.id, d.name, d.fingerprint
        );
    }
    if let Some(p) = &st.pending {
        println!(
            "waiting:      {} ({} file(s), {} bytes) from device {}; run `clipmesh fetch`",
            p.kind, p.files, p.bytes, p.from_device
        );
    }
    for t in &st.transfers {
        let pct = if t.total == 0 {
            100
        } else {
            u128::from(t.done) * 100 / u128::from(t.total)
        };
        println!(
            "transfer:     #{} {} {} file(s), {} of {} bytes ({pct}%)",
            t.id,
            match t.direction {
                clipmesh::transfer::Direction::Send => "sending",
                clipmesh::transfer::Direction::Receive => "receiving",
            },
            t.files,
            t.done,
            t.total
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn fetch(dir: &Path) -> Result<ExitCode> {
    let mut last = None;
    clipmesh::transfer::fetch_waiting(
        dir,
        |p| {
            eprintln!(
                "fetching {}: {} file(s), {} bytes from device {}",
                p.kind, p.files, p.bytes, p.from_device
            )
        },
        |t| {
            let pct = (u128::from(t.done) * 100)
                .checked_div(u128::from(t.total))
                .unwrap_or(100);
            if last != Some(pct) {
                last = Some(pct);
                eprintln!("fetching: {} of {} bytes ({pct}%)", t.done, t.total);
            }
        },
    )
    .await?;
    println!("fetched: the item is on the clipboard");
    Ok(ExitCode::SUCCESS)
}

fn read_text(text: Option<String>) -> Result<String> {
    match text {
        Some(t) => Ok(t),
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input (is it UTF-8 text?)")?;
            Ok(s)
        }
    }
}

async fn send(dir: PathBuf, text: Option<String>) -> Result<ExitCode> {
    let text = read_text(text)?;
    if text.is_empty() {
        bail!("nothing to send: the text is empty");
    }
    match control::request(&dir, &Request::Send { text: text.clone() }).await {
        Ok(resp) if resp.ok => return Ok(ExitCode::SUCCESS),
        Ok(resp) => bail!(resp
            .error
            .unwrap_or_else(|| "the daemon refused the clip".into())),
        Err(ControlError::NotRunning) => {}
        Err(e) => return Err(e.into()),
    }
    // No daemon: connect once, publish, wait for the ack.
    let device = load_device(&dir).await?;
    oneshot::publish_once(&dir, &device, ClipContent::Text(text), SEND_TIMEOUT).await?;
    Ok(ExitCode::SUCCESS)
}

async fn watch(dir: PathBuf, json: bool) -> Result<ExitCode> {
    // One device holds one relay connection: a second one would make the
    // relay close the older socket (4007), and the two would take turns.
    if control::request(&dir, &Request::Status).await.is_ok() {
        bail!(
            "a daemon is running for this config directory; watch from another one \
             (`clipmesh --config-dir DIR login`)"
        );
    }
    let device = load_device(&dir).await?;
    let cancel = CancellationToken::new();
    let signals = TaskTracker::new();
    signals.spawn(wait_for_shutdown(cancel.clone()));
    let mut stdout = std::io::stdout();
    // A terminal would obey control characters in a received clip: show
    // them escaped there; pipes get the text as it was copied.
    let terminal = stdout.is_terminal();
    let r = watch::watch(&dir, &device, cancel.clone(), |clip| {
        let line = if terminal && !json {
            watch::render_for_terminal(&clip)
        } else {
            watch::render(&clip, json)
        };
        // A reader that went away (e.g. `| head`) ends the watch quietly.
        writeln!(stdout, "{line}")
            .and_then(|_| stdout.flush())
            .is_ok()
    })
    .await;
    cancel.cancel();
    signals.close();
    signals.wait().await;
    r?;
    Ok(ExitCode::SUCCESS)
}

/// The current and the new password: one per line on standard input, or
/// prompted on the terminal.
fn password_pair(from_stdin: bool) -> Result<(Zeroizing<String>, Zeroizing<String>)> {
    if from_stdin {
        let mut lines = std::io::stdin().lines();
        let mut next = |what: &str| -> Result<Zeroizing<String>> {
            let line = Zeroizing::new(
                lines
                    .next()
                    .with_context(|| format!("no {what} password on standard input"))?
                    .context("reading standard input")?,
            );
            let pw = Zeroizing::new(line.trim_end_matches('\r').to_owned());
            if pw.is_empty() {
                bail!("empty {what} password on standard input");
            }
            Ok(pw)
        };
        Ok((next("current")?, next("new")?))
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to prompt for the passwords: use --password-stdin");
        }
        let current = Zeroizing::new(
            rpassword::prompt_password("Current password: ").context("reading the password")?,
        );
        println!("New password:");
        Ok((current, read_password(false, true)?))
    }
}

async fn password(dir: PathBuf, from_stdin: bool, end_other_sessions: bool) -> Result<ExitCode> {
    let device = load_device(&dir).await?;
    let (current, new) = password_pair(from_stdin)?;
    let changed = blocking(move || {
        clipmesh::account::change_password(
            &dir,
            &device,
            current.as_bytes(),
            new.as_bytes(),
            end_other_sessions,
            &[],
        )
    })
    .await??;
    announce(&changed.announced);
    println!(
        "password changed; {}{}",
        if changed.new_epoch {
            format!("new key epoch {}", changed.epoch)
        } else {
            format!(
                "key epoch {} kept (this relay has no key epochs)",
                changed.epoch
            )
        },
        if end_other_sessions {
            "; every other device was logged out"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Announces devices seen for the first time, on standard error.
fn announce(devices: &[clipmesh::clipkeys::NewDevice]) {
    for d in devices {
        eprintln!(
            "new device in this account: {} \"{}\", safety number {}",
            d.id.0, d.name, d.fingerprint
        );
    }
}

async fn devices(dir: PathBuf, revoke: Option<u64>, password_stdin: bool) -> Result<ExitCode> {
    let device = load_device(&dir).await?;
    let api = device.api()?;
    let token = device.secrets.token.clone();
    let v2_revoke =
        revoke.filter(|id| device.secrets.device.is_some() && *id != device.account.device_id);
    let epochs = match v2_revoke {
        Some(_) => {
            let (a, t) = (api.clone(), token.clone());
            blocking(move || clipmesh::account::epochs_offered(&a, &t)).await??
        }
        None => false,
    };
    if let (Some(id), false) = (v2_revoke, epochs) {
        eprintln!(
            "warning: this relay cannot start a new key epoch: device {id} loses its session, but the keys it stored still open clips sealed from now on"
        );
    }
    if let Some(id) = v2_revoke.filter(|_| epochs) {
        // v2: a revoke starts a new epoch and needs a new password.
        let (current, new) = password_pair(password_stdin)?;
        let changed = blocking(move || {
            clipmesh::account::change_password(
                &dir,
                &device,
                current.as_bytes(),
                new.as_bytes(),
                false,
                &[DeviceId(id)],
            )
        })
        .await??;
        announce(&changed.announced);
        println!(
            "revoked device {id}; password changed; new key epoch {}",
            changed.epoch
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = revoke {
        let a = api.clone();
        let t = token.clone();
        blocking(move || a.revoke(&t, DeviceId(id))).await??;
        if id == device.account.device_id {
            println!(
                "revoked device {id} (this device); run `clipmesh logout` to clear local secrets"
            );
        } else {
            println!("revoked device {id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let a2 = api.clone();
    let t2 = token.clone();
    let list = blocking(move || a2.devices(&t2)).await??;
    // Protocol v2: the relay's key listing, judged against this device's
    // epoch key and pinned roster (`clipmesh::roster`).
    let trust = match (&device.secrets.device, device.secrets.epoch) {
        (Some(_), Some(epoch)) => {
            let keys = blocking(move || api.v2_device_keys(&token)).await??;
            let epoch_key = clipmesh_proto::EpochKey::from_bytes(*device.secrets.data_key.expose());
            let d2 = dir.clone();
            let listing = keys.devices.clone();
            let verdicts = blocking(move || {
                clipmesh::roster::Roster::load(&d2)?.review(&epoch_key, epoch, &listing)
            })
            .await?
            .context("device roster")?;
            if keys.epoch > epoch {
                eprintln!(
                    "note: the account is at key epoch {}, this device holds epoch {epoch}; log in again to fetch it",
                    keys.epoch
                );
            }
            keys.devices
                .iter()
                .map(|d| d.id)
                .zip(verdicts)
                .collect::<std::collections::HashMap<_, _>>()
        }
        _ => Default::default(),
    };
    println!(
        "{:<8} {:<24} {:<7} {:<8} {:<14} SAFETY NUMBER",
        "ID", "NAME", "ONLINE", "CURRENT", "LAST SEEN"
    );
    let now = (now_ms() / 1000) as i64;
    let mut refused = false;
    for d in list.devices {
        let ago = now.saturating_sub(d.last_seen_at).max(0);
        use clipmesh::roster::Trust;
        let safety = match trust.get(&d.id) {
            Some(Trust::Known(f)) => f.to_string(),
            Some(Trust::New(f)) => {
                eprintln!(
                    "new device in this account: {} \"{}\", safety number {f}",
                    d.id.0, d.name
                );
                format!("{f} (new)")
            }
            Some(Trust::OtherEpoch(e)) => format!("(certified in epoch {e}, not checked)"),
            Some(Trust::BadCert) => {
                refused = true;
                eprintln!(
                    "refused: the relay lists a key for device {} \"{}\" that no device of this account certified",
                    d.id.0, d.name
                );
                "REFUSED (uncertified key)".to_owned()
            }
            Some(Trust::Swapped) => {
                refused = true;
                eprintln!(
                    "refused: the relay lists a different key for device {} \"{}\" than the one this device pinned",
                    d.id.0, d.name
                );
                "REFUSED (key changed)".to_owned()
            }
            Some(Trust::NoKey) | None => "-".to_owned(),
        };
        println!(
            "{:<8} {:<24} {:<7} {:<8} {:<14} {}",
            d.id.0,
            d.name,
            if d.online { "yes" } else { "no" },
            if d.current { "*" } else { "" },
            human_ago(ago as u64),
            safety
        );
    }
    Ok(if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn human_ago(s: u64) -> String {
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}
