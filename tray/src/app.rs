//! The tray program: the glue between the model, the engine thread, the
//! notifier and the platform's tray.
//!
//! [`TrayCore`] owns the state and reacts to [`UiEvent`]s (engine reports,
//! menu clicks, the login window ending, the clock), then tells the
//! platform what to show through the [`Shell`] trait: the icon, the menu
//! entries and notifications. The platform code ([`crate::platform`]) owns
//! the event loop and the tray icon; it feeds events in and implements
//! [`Shell`]. Nothing here touches a display.

use crate::autostart::Autostart;
use crate::driver::{EngineHandle, FromEngine, ToEngine};
pub use clipmesh_tray_shell::menu::Shell;

use crate::model::{Action, Command, Engine, TrayModel};
use crate::notify::{Event, Notifier};
use clipmesh::account::Device;
use clipmesh::p2p::Mode;
use std::path::PathBuf;
use std::process::Child;
use std::time::Instant;
use tokio::sync::mpsc;

/// Depth of the queue of events into the UI thread.
pub const UI_QUEUE: usize = 64;

/// What the UI thread reacts to.
#[derive(Debug)]
pub enum UiEvent {
    /// A report from the engine thread.
    Engine(FromEngine),
    /// A menu item was clicked (its id).
    Menu(String),
    /// The login window ended; `true` when the device is now logged in.
    LoginEnded(bool),
    /// Once a second: relative times, notification timers, child reaping.
    Tick,
}

/// The tray's state and reactions.
pub struct TrayCore {
    /// The config directory (one device).
    dir: PathBuf,
    /// What the menu and icon show.
    model: TrayModel,
    /// Debounced notifications.
    notifier: Notifier,
    /// The notifier's clock starts here.
    started: Instant,
    /// The engine thread (None after quit).
    engine: Option<EngineHandle>,
    /// Start at login.
    autostart: Option<Autostart>,
    /// The login window process, while it runs.
    login: Option<std::thread::JoinHandle<()>>,
    /// Where UI events go (for the login watcher).
    events: mpsc::Sender<UiEvent>,
    /// Programs started to open a folder or the log, reaped on ticks.
    opened: Vec<Child>,
    /// The waiting item last notified (its arrival time).
    waiting_seen: Option<u64>,
}

impl TrayCore {
    /// Sets up the tray for `dir`: loads the account (if any), starts the
    /// engine thread (syncing at once when logged in), and opens the login
    /// window when there is no account.
    pub fn new(
        dir: PathBuf,
        mode: Mode,
        log_file: Option<PathBuf>,
        events: mpsc::Sender<UiEvent>,
        reports: mpsc::Sender<FromEngine>,
    ) -> anyhow::Result<Self> {
        let device = Device::load(&dir).ok();
        let autostart = std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|exe| Ok(Autostart::new(&exe)?))
            .map_err(|e| tracing::warn!(error = %e, "start at login unavailable"))
            .ok();
        let model = TrayModel {
            account: device
                .as_ref()
                .map(|d| format!("{} @ {}", d.account.username, d.account.server)),
            engine: if device.is_some() {
                Engine::Running { status: None }
            } else {
                Engine::Stopped
            },
            mode,
            autostart: autostart
                .as_ref()
                .and_then(|a| a.is_enabled().ok())
                .unwrap_or(false),
            download_dir: device.as_ref().and_then(|d| d.config.sync.download_dir()),
            log_file,
            ..TrayModel::default()
        };
        let engine = EngineHandle::spawn(dir.clone(), mode, device.is_some(), reports)?;
        let mut core = Self {
            dir,
            model,
            notifier: Notifier::default(),
            started: Instant::now(),
            engine: Some(engine),
            autostart,
            login: None,
            events,
            opened: Vec::new(),
            waiting_seen: None,
        };
        if device.is_none() {
            core.show_login();
        }
        Ok(core)
    }

    /// The model, for tests and the platform code.
    pub fn model(&self) -> &TrayModel {
        &self.model
    }

    /// Shows the current state.
    pub fn render(&mut self, shell: &mut dyn Shell) {
        let now = clipmesh::clock::now_ms();
        let state = self.model.icon();
        shell.set_icon(state, &format!("clipmesh: {}", self.model.status_line(now)));
        shell.set_menu(&self.model.menu(now));
    }

    /// Reacts to one event and shows the result.
    pub fn handle(&mut self, event: UiEvent, shell: &mut dyn Shell) {
        let now = self.started.elapsed();
        match event {
            UiEvent::Engine(report) => self.handle_report(report),
            UiEvent::Menu(id) => {
                if let Some(action) = Action::parse(&id) {
                    for cmd in self.model.handle_action(action) {
                        self.run(cmd, shell);
                    }
                }
            }
            UiEvent::LoginEnded(ok) => {
                if let Some(t) = self.login.take() {
                    let _ = t.join();
                }
                if ok {
                    self.logged_in();
                }
            }
            UiEvent::Tick => {
                self.notifier.handle_timeout(now);
                self.opened.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            }
        }
        while let Some(n) = self.notifier.poll_output() {
            shell.notify(&n);
        }
        self.render(shell);
    }

    fn handle_report(&mut self, report: FromEngine) {
        let now = self.started.elapsed();
        match report {
            FromEngine::Started => {
                if !matches!(self.model.engine, Engine::Running { .. }) {
                    self.model.engine = Engine::Running { status: None };
                }
            }
            FromEngine::Status(s) => {
                self.notifier.handle_connection(s.connected, now);
                match &s.pending {
                    Some(p) if self.waiting_seen != Some(p.received_ms) => {
                        self.waiting_seen = Some(p.received_ms);
                        let what = if p.kind == "image" {
                            "An image".to_string()
                        } else {
                            crate::recent::files(p.files)
                        };
                        self.notifier.handle_event(
                            Event::Waiting(format!("{what} ({})", crate::model::size(p.bytes))),
                            now,
                        );
                    }
                    _ => {}
                }
                if !matches!(self.model.engine, Engine::Paused) {
                    self.model.engine = Engine::Running { status: Some(s) };
                }
            }
            FromEngine::Stopped(None) => {
                if self.model.engine != Engine::Paused {
                    self.model.engine = Engine::Stopped;
                }
            }
            FromEngine::Stopped(Some(why)) => self.model.engine = Engine::Failed(why),
            FromEngine::Recent {
                direction,
                preview,
                payload,
            } => self.model.recent.push(direction, preview, payload),
            FromEngine::Notify(e) => self.notifier.handle_event(e, now),
            FromEngine::Fetched(Err(e)) => {
                self.notifier
                    .handle_event(Event::NeedsUser(format!("Download failed: {e}")), now);
            }
            FromEngine::Fetched(Ok(())) => {}
            FromEngine::LoggedOut(r) => {
                if let Err(e) = r {
                    self.notifier
                        .handle_event(Event::NeedsUser(format!("Log out: {e}")), now);
                }
            }
        }
    }

    fn send(&self, cmd: ToEngine) {
        if let Some(e) = &self.engine {
            e.send(cmd);
        }
    }

    fn run(&mut self, cmd: Command, shell: &mut dyn Shell) {
        match cmd {
            Command::Pause => self.send(ToEngine::Pause),
            Command::Resume => self.send(ToEngine::Start),
            Command::SetMode(m) => self.send(ToEngine::SetMode(m)),
            Command::Reapply(p) => self.send(ToEngine::Reapply(p)),
            Command::Fetch => self.send(ToEngine::Fetch),
            Command::Open(path) => match open(&path) {
                Ok(c) => self.opened.push(c),
                Err(e) => tracing::warn!(error = %e, "cannot open {}", path.display()),
            },
            Command::SetAutostart(on) => {
                let r = match &self.autostart {
                    Some(a) => a.set(on).map_err(|e| e.to_string()),
                    None => Err("start at login is not available here".into()),
                };
                if let Err(e) = r {
                    self.model.autostart = !on;
                    let now = self.started.elapsed();
                    self.notifier.handle_event(Event::NeedsUser(e), now);
                }
            }
            Command::ShowLogin => self.show_login(),
            Command::Logout => self.send(ToEngine::Logout),
            Command::Quit => {
                if let Some(e) = self.engine.take() {
                    e.join();
                }
                shell.quit();
            }
        }
    }

    fn logged_in(&mut self) {
        match Device::load(&self.dir) {
            Ok(d) => {
                self.model.account = Some(format!("{} @ {}", d.account.username, d.account.server));
                self.model.download_dir = d.config.sync.download_dir();
                self.model.engine = Engine::Running { status: None };
                self.send(ToEngine::Start);
            }
            Err(e) => tracing::warn!(error = %e, "login window ended but no account loads"),
        }
    }

    /// Starts the login window (its own process), unless one is open.
    fn show_login(&mut self) {
        if self.login.is_some() {
            return;
        }
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot find this program to open the login window");
                return;
            }
        };
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("--config-dir").arg(&self.dir).arg("login");
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the login window");
                return;
            }
        };
        let events = self.events.clone();
        // The watcher ends when the window's process does; its handle is
        // joined on LoginEnded.
        let watcher = std::thread::spawn(move || {
            let mut child = child;
            let ok = child.wait().map(|s| s.success()).unwrap_or(false);
            let _ = events.blocking_send(UiEvent::LoginEnded(ok));
        });
        self.login = Some(watcher);
    }

    /// Ends the engine (for a quit that did not come from the menu).
    pub fn shutdown(&mut self) {
        if let Some(e) = self.engine.take() {
            e.join();
        }
        for mut c in self.opened.drain(..) {
            let _ = c.try_wait();
        }
    }
}

/// Opens a folder or file with the desktop's default application.
fn open(path: &std::path::Path) -> std::io::Result<Child> {
    if let Some(parent) = path.parent() {
        // The download folder may not exist before the first file.
        if path.extension().is_none() {
            std::fs::create_dir_all(path)?;
        } else {
            std::fs::create_dir_all(parent)?;
        }
    }
    #[cfg(target_os = "macos")]
    let opener = "open";
    #[cfg(windows)]
    let opener = "explorer";
    #[cfg(not(any(target_os = "macos", windows)))]
    let opener = "xdg-open";
    std::process::Command::new(opener).arg(path).spawn()
}
