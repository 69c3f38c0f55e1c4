//! The `clipmesh-tray` command: the tray app, its login window, and start
//! at login. See `docs/desktop.md`.

// A tray app opens no console window on Windows (as `clipmeshw.exe`).
#![cfg_attr(windows, windows_subsystem = "windows")]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use clipmesh::config::{self, ENV_CONFIG_DIR};
use clipmesh::p2p::Mode;
use clipmesh_tray::{app::TrayCore, autostart::Autostart, login, platform, single};
use std::path::PathBuf;
use std::process::ExitCode;

/// The tray's log file, in the config directory.
const LOG_FILE: &str = "tray.log";
/// The log is started afresh when it grew past this.
const LOG_MAX: u64 = 8 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "clipmesh-tray",
    version,
    about = "clipmesh desktop app: tray icon, login window, notifications"
)]
struct Cli {
    /// Directory holding this device's config, secrets fallback and state.
    #[arg(long, global = true, env = ENV_CONFIG_DIR, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Transport: auto, relay or p2p (as `clipmesh run --mode`).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the login window; exits 0 once this device is logged in.
    Login {
        /// Fill in the server URL.
        #[arg(long)]
        server: Option<String>,
        /// Fill in the username.
        #[arg(long)]
        username: Option<String>,
    },
    /// Show or change start at login.
    Autostart {
        /// `on`, `off`, or nothing to show the setting.
        state: Option<OnOff>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS backend for every client (WebSocket and HTTP), as `clipmesh`.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clipmesh-tray: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn logs(file: Option<&std::path::Path>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "clipmesh=info,clipmesh_tray=info,warn,rtc=error,webrtc=error".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let opened = file.and_then(|f| {
        if std::fs::metadata(f).is_ok_and(|m| m.len() > LOG_MAX) {
            let _ = std::fs::remove_file(f);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .ok()
    });
    match opened {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let dir = config::config_dir(cli.config_dir.as_deref())?;
    match cli.command {
        Some(Command::Login { server, username }) => {
            logs(None);
            config::ensure_dir(&dir)?;
            let ok = login::run(dir, server, username)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Autostart { state }) => {
            let exe = std::env::current_exe().context("finding this program")?;
            let a = Autostart::new(&exe)?;
            if let Some(s) = state {
                a.set(s == OnOff::On)?;
            }
            println!(
                "start at login: {}",
                if a.is_enabled()? { "on" } else { "off" }
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            config::ensure_dir(&dir)?;
            let _instance = match single::Instance::acquire(&dir) {
                Ok(i) => i,
                Err(single::InstanceError::AlreadyRunning) => {
                    println!("clipmesh-tray is already running for {}", dir.display());
                    return Ok(ExitCode::SUCCESS);
                }
                Err(e) => return Err(e.into()),
            };
            let log = dir.join(LOG_FILE);
            logs(Some(&log));
            tracing::info!(dir = %dir.display(), "clipmesh-tray starting");
            let mode = cli.mode;
            platform::run(|events, reports| TrayCore::new(dir, mode, Some(log), events, reports))?;
            tracing::info!("clipmesh-tray stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
