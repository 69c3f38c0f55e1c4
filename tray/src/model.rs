//! The tray's state, the menu built from it and what each menu action does.
//!
//! This is the tray's logic without a display: [`TrayModel`] holds what the
//! user sees (connection, pause, mode, recent items, a waiting large item,
//! devices, start at login, the account), [`TrayModel::menu`] turns it into
//! a list of [`Entry`]s that the platform code renders with muda, and
//! [`TrayModel::handle_action`] turns a clicked entry into [`Command`]s for
//! the driver (pause the engine, switch mode, put an item on the clipboard
//! again, download the waiting item, ...). The platform code only renders
//! entries and forwards clicks by id, so everything here is unit-tested.

pub use clipmesh_tray_shell::menu::{Entry, IconState};

use crate::recent::{Payload, Recent};
use clipmesh::control::Status;
use clipmesh::p2p::Mode;
use std::path::PathBuf;

/// Where the engine is, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Engine {
    /// Not running: no account yet, or logged out.
    #[default]
    Stopped,
    /// Running; `status` is its last report (None until the first one).
    Running {
        /// The daemon's last status.
        status: Option<Box<Status>>,
    },
    /// Stopped by the user.
    Paused,
    /// Stopped on an error that needs the user (one line).
    Failed(String),
}

/// A menu action, encoded in the menu item's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pause or resume syncing.
    TogglePause,
    /// Switch the transport mode.
    SetMode(Mode),
    /// Put the recent item with this id on the clipboard again.
    Recent(u64),
    /// Download the waiting large item.
    Fetch,
    /// Open the download folder.
    OpenDownloads,
    /// Open the log file.
    OpenLog,
    /// Toggle start at login.
    ToggleAutostart,
    /// Open the login window.
    Login,
    /// Log this device out.
    Logout,
    /// Quit the tray (and its engine).
    Quit,
}

impl Action {
    /// The menu item id for this action.
    pub fn id(self) -> String {
        match self {
            Action::TogglePause => "pause".into(),
            Action::SetMode(m) => format!("mode:{}", m.as_str()),
            Action::Recent(n) => format!("recent:{n}"),
            Action::Fetch => "fetch".into(),
            Action::OpenDownloads => "downloads".into(),
            Action::OpenLog => "log".into(),
            Action::ToggleAutostart => "autostart".into(),
            Action::Login => "login".into(),
            Action::Logout => "logout".into(),
            Action::Quit => "quit".into(),
        }
    }

    /// The action for a menu item id (None for items that do nothing).
    pub fn parse(id: &str) -> Option<Action> {
        Some(match id {
            "pause" => Action::TogglePause,
            "mode:auto" => Action::SetMode(Mode::Auto),
            "mode:relay" => Action::SetMode(Mode::Relay),
            "mode:p2p" => Action::SetMode(Mode::P2p),
            "fetch" => Action::Fetch,
            "downloads" => Action::OpenDownloads,
            "log" => Action::OpenLog,
            "autostart" => Action::ToggleAutostart,
            "login" => Action::Login,
            "logout" => Action::Logout,
            "quit" => Action::Quit,
            other => Action::Recent(other.strip_prefix("recent:")?.parse().ok()?),
        })
    }
}

/// What the driver and the platform code are asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop syncing (the engine disconnects).
    Pause,
    /// Start syncing again.
    Resume,
    /// Restart the engine in this mode.
    SetMode(Mode),
    /// Put this item on the clipboard.
    Reapply(Payload),
    /// Download the waiting large item.
    Fetch,
    /// Open this folder or file with the desktop's default application.
    Open(PathBuf),
    /// Turn start at login on or off.
    SetAutostart(bool),
    /// Show the login window.
    ShowLogin,
    /// Log out (revoke this device, delete its secrets).
    Logout,
    /// End the program.
    Quit,
}

fn info(id: &str, label: impl Into<String>) -> Entry {
    Entry::Item {
        id: format!("info:{id}"),
        label: label.into(),
        enabled: false,
        checked: None,
    }
}

fn item(action: Action, label: impl Into<String>, enabled: bool) -> Entry {
    Entry::Item {
        id: action.id(),
        label: label.into(),
        enabled,
        checked: None,
    }
}

fn check(action: Action, label: impl Into<String>, checked: bool) -> Entry {
    Entry::Item {
        id: action.id(),
        label: label.into(),
        enabled: true,
        checked: Some(checked),
    }
}

/// The tray's state.
#[derive(Debug, Clone, Default)]
pub struct TrayModel {
    /// `user @ server` when logged in.
    pub account: Option<String>,
    /// The engine's state.
    pub engine: Engine,
    /// The chosen transport mode.
    pub mode: Mode,
    /// Recent items.
    pub recent: Recent,
    /// Whether start at login is on.
    pub autostart: bool,
    /// The download folder.
    pub download_dir: Option<PathBuf>,
    /// The log file.
    pub log_file: Option<PathBuf>,
}

impl TrayModel {
    fn status(&self) -> Option<&Status> {
        match &self.engine {
            Engine::Running { status } => status.as_deref(),
            _ => None,
        }
    }

    /// The icon for the current state.
    pub fn icon(&self) -> IconState {
        match &self.engine {
            Engine::Stopped => IconState::Offline,
            Engine::Paused => IconState::Paused,
            Engine::Failed(_) => IconState::Error,
            Engine::Running { status: None } => IconState::Connecting,
            Engine::Running {
                status: Some(status),
            } => {
                if !status.connected {
                    IconState::Connecting
                } else if status.peers.iter().any(|p| p.link == "open") {
                    IconState::Direct
                } else {
                    IconState::Connected
                }
            }
        }
    }

    /// The status line: server, devices online, last sync (relative to
    /// `now_ms`).
    pub fn status_line(&self, now_ms: u64) -> String {
        let Some(account) = &self.account else {
            return "Not logged in".into();
        };
        match &self.engine {
            Engine::Stopped => format!("{account}: stopped"),
            Engine::Paused => format!("{account}: paused"),
            Engine::Failed(e) => format!("{account}: {e}"),
            Engine::Running { status: None } => format!("{account}: starting"),
            Engine::Running {
                status: Some(status),
            } => {
                let state = if status.connected {
                    "connected"
                } else {
                    "connecting"
                };
                let others = status.online.len().saturating_sub(1);
                let devices = match others {
                    1 => "1 other device online".to_string(),
                    n => format!("{n} other devices online"),
                };
                let last = match status.last_sync_ms {
                    Some(t) => format!("last sync {}", ago(now_ms.saturating_sub(t))),
                    None => "no sync yet".into(),
                };
                format!("{account}: {state}, {devices}, {last}")
            }
        }
    }

    /// The menu for the current state.
    pub fn menu(&self, now_ms: u64) -> Vec<Entry> {
        let mut m = vec![info("status", self.status_line(now_ms)), Entry::Separator];
        let logged_in = self.account.is_some();
        if logged_in {
            let paused = self.engine == Engine::Paused;
            m.push(check(Action::TogglePause, "Pause syncing", paused));
            m.push(Entry::Submenu {
                id: "sub:mode".into(),
                label: format!("Mode: {}", self.mode.as_str()),
                entries: [Mode::Auto, Mode::Relay, Mode::P2p]
                    .into_iter()
                    .map(|mode| {
                        let label = match mode {
                            Mode::Auto => "Auto (direct links and relay)",
                            Mode::Relay => "Relay only",
                            Mode::P2p => "Direct links only (P2P)",
                        };
                        check(Action::SetMode(mode), label, self.mode == mode)
                    })
                    .collect(),
            });
            let recent: Vec<Entry> = self
                .recent
                .items()
                .map(|i| item(Action::Recent(i.id), i.label(), i.payload.is_some()))
                .collect();
            m.push(Entry::Submenu {
                id: "sub:recent".into(),
                label: "Recent items".into(),
                entries: if recent.is_empty() {
                    vec![info("recent-empty", "Nothing synced yet")]
                } else {
                    recent
                },
            });
            if let Some(p) = self.status().and_then(|s| s.pending.as_ref()) {
                let what = if p.kind == "image" {
                    "image".to_string()
                } else {
                    crate::recent::files(p.files)
                };
                m.push(item(
                    Action::Fetch,
                    format!("Download {what} ({})", size(p.bytes)),
                    true,
                ));
            }
            let devices: Vec<Entry> = match self.status() {
                Some(s) => s
                    .online
                    .iter()
                    .map(|d| {
                        let me = if d.id == s.device_id {
                            " (this device)"
                        } else {
                            ""
                        };
                        info(&format!("device-{}", d.id), format!("{}{me}", d.name))
                    })
                    .collect(),
                None => vec![],
            };
            m.push(Entry::Submenu {
                id: "sub:devices".into(),
                label: "Devices online".into(),
                entries: if devices.is_empty() {
                    vec![info("devices-none", "None known (not connected)")]
                } else {
                    devices
                },
            });
            m.push(Entry::Separator);
        }
        m.push(item(
            Action::OpenDownloads,
            "Open download folder",
            self.download_dir.is_some(),
        ));
        m.push(item(Action::OpenLog, "Open log", self.log_file.is_some()));
        m.push(check(
            Action::ToggleAutostart,
            "Start at login",
            self.autostart,
        ));
        m.push(Entry::Separator);
        if logged_in {
            m.push(item(Action::Logout, "Log out", true));
        } else {
            m.push(item(Action::Login, "Log in…", true));
        }
        m.push(item(Action::Quit, "Quit clipmesh", true));
        m
    }

    /// What a clicked action does. Updates the model where the outcome is
    /// known at once (pause, mode, start at login) and returns the commands
    /// for the driver and the platform code.
    pub fn handle_action(&mut self, action: Action) -> Vec<Command> {
        match action {
            Action::TogglePause => match self.engine {
                Engine::Paused => {
                    self.engine = Engine::Running { status: None };
                    vec![Command::Resume]
                }
                Engine::Running { .. } => {
                    self.engine = Engine::Paused;
                    vec![Command::Pause]
                }
                // Nothing runs: resuming is starting.
                Engine::Stopped | Engine::Failed(_) if self.account.is_some() => {
                    self.engine = Engine::Running { status: None };
                    vec![Command::Resume]
                }
                Engine::Stopped | Engine::Failed(_) => vec![],
            },
            Action::SetMode(mode) => {
                if mode == self.mode {
                    return vec![];
                }
                self.mode = mode;
                if matches!(self.engine, Engine::Running { .. }) {
                    self.engine = Engine::Running { status: None };
                }
                vec![Command::SetMode(mode)]
            }
            Action::Recent(id) => match self.recent.get(id).and_then(|i| i.payload.clone()) {
                Some(p) => vec![Command::Reapply(p)],
                None => vec![],
            },
            Action::Fetch => {
                if self.status().is_some_and(|s| s.pending.is_some()) {
                    vec![Command::Fetch]
                } else {
                    vec![]
                }
            }
            Action::OpenDownloads => self
                .download_dir
                .clone()
                .map(Command::Open)
                .into_iter()
                .collect(),
            Action::OpenLog => self
                .log_file
                .clone()
                .map(Command::Open)
                .into_iter()
                .collect(),
            Action::ToggleAutostart => {
                self.autostart = !self.autostart;
                vec![Command::SetAutostart(self.autostart)]
            }
            Action::Login => vec![Command::ShowLogin],
            Action::Logout => {
                self.account = None;
                self.engine = Engine::Stopped;
                self.recent.clear();
                vec![Command::Logout]
            }
            Action::Quit => vec![Command::Quit],
        }
    }
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago".
pub fn ago(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=4 => "just now".into(),
        5..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// "512 B", "64 KiB", "123 MiB", "1.5 GiB".
pub fn size(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        b if b < KIB => format!("{b} B"),
        b if b < MIB => format!("{} KiB", b / KIB),
        b if b < GIB => format!("{} MiB", b / MIB),
        b => format!("{:.1} GiB", b as f64 / GIB as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recent::Direction;
    use clipmesh::control::OnlineDevice;
    use clipmesh::p2p::PeerStatus;
    use clipmesh::transfer::PendingItem;
    use clipmesh_proto::ClipContent;

    fn running(status: Status) -> TrayModel {
        TrayModel {
            account: Some("ann @ https://relay.example".into()),
            engine: Engine::Running {
                status: Some(Box::new(status)),
            },
            download_dir: Some("/home/ann/Downloads/clipmesh".into()),
            log_file: Some("/home/ann/.local/state/clipmesh/tray.log".into()),
            ..TrayModel::default()
        }
    }

    fn connected() -> Status {
        Status {
            connected: true,
            device_id: 1,
            online: vec![
                OnlineDevice {
                    id: 1,
                    name: "laptop".into(),
                },
                OnlineDevice {
                    id: 2,
                    name: "desktop".into(),
                },
            ],
            last_sync_ms: Some(1_000),
            ..Status::default()
        }
    }

    fn labels(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e {
                Entry::Item { label, .. } | Entry::Submenu { label, .. } => label.clone(),
                Entry::Separator => "--".into(),
            })
            .collect()
    }

    fn submenu<'a>(entries: &'a [Entry], name: &str) -> &'a [Entry] {
        entries
            .iter()
            .find_map(|e| match e {
                Entry::Submenu { label, entries, .. } if label.starts_with(name) => {
                    Some(entries.as_slice())
                }
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn action_ids_round_trip() {
        let all = [
            Action::TogglePause,
            Action::SetMode(Mode::Auto),
            Action::SetMode(Mode::Relay),
            Action::SetMode(Mode::P2p),
            Action::Recent(42),
            Action::Fetch,
            Action::OpenDownloads,
            Action::OpenLog,
            Action::ToggleAutostart,
            Action::Login,
            Action::Logout,
            Action::Quit,
        ];
        for a in all {
            assert_eq!(Action::parse(&a.id()), Some(a));
        }
        assert_eq!(Action::parse("info:status"), None);
        assert_eq!(Action::parse("recent:x"), None);
    }

    #[test]
    fn full_menu_when_connected() {
        let mut m = running(connected());
        let menu = m.menu(63_000);
        assert_eq!(
            labels(&menu),
            [
                "ann @ https://relay.example: connected, 1 other device online, last sync 1 min ago",
                "--",
                "Pause syncing",
                "Mode: auto",
                "Recent items",
                "Devices online",
                "--",
                "Open download folder",
                "Open log",
                "Start at login",
                "--",
                "Log out",
                "Quit clipmesh",
            ]
        );
        assert_eq!(
            labels(submenu(&menu, "Devices")),
            ["laptop (this device)", "desktop"]
        );
        assert_eq!(labels(submenu(&menu, "Recent")), ["Nothing synced yet"]);
        assert_eq!(m.icon(), IconState::Connected);
        // Every clickable entry maps to an action.
        fn clickable(e: &[Entry], out: &mut Vec<String>) {
            for e in e {
                match e {
                    Entry::Item {
                        id, enabled: true, ..
                    } => out.push(id.clone()),
                    Entry::Submenu { entries, .. } => clickable(entries, out),
                    _ => {}
                }
            }
        }
        let mut ids = vec![];
        clickable(&menu, &mut ids);
        assert!(ids.iter().all(|id| Action::parse(id).is_some()), "{ids:?}");
        m.account = None;
        m.engine = Engine::Stopped;
        let menu = m.menu(0);
        assert_eq!(labels(&menu)[0], "Not logged in");
        assert!(labels(&menu).contains(&"Log in…".to_string()));
        assert!(!labels(&menu).contains(&"Pause syncing".to_string()));
    }

    #[test]
    fn icon_follows_state() {
        let mut m = running(connected());
        assert_eq!(m.icon(), IconState::Connected);
        let mut s = connected();
        s.peers = vec![PeerStatus {
            id: 2,
            path: clipmesh::p2p::PeerPath::P2p,
            link: "open".into(),
        }];
        m.engine = Engine::Running {
            status: Some(Box::new(s)),
        };
        assert_eq!(m.icon(), IconState::Direct);
        m.engine = Engine::Running {
            status: Some(Box::new(Status::default())),
        };
        assert_eq!(m.icon(), IconState::Connecting);
        m.engine = Engine::Paused;
        assert_eq!(m.icon(), IconState::Paused);
        m.engine = Engine::Failed("this device was revoked".into());
        assert_eq!(m.icon(), IconState::Error);
        assert!(m.status_line(0).ends_with("this device was revoked"));
        m.engine = Engine::Stopped;
        assert_eq!(m.icon(), IconState::Offline);
    }

    #[test]
    fn pause_and_resume() {
        let mut m = running(connected());
        assert_eq!(m.handle_action(Action::TogglePause), [Command::Pause]);
        assert_eq!(m.engine, Engine::Paused);
        let pause = m.menu(0)[2].clone();
        assert!(matches!(
            pause,
            Entry::Item {
                checked: Some(true),
                ..
            }
        ));
        assert_eq!(m.handle_action(Action::TogglePause), [Command::Resume]);
        assert_eq!(m.icon(), IconState::Connecting);
        // Logged out: nothing to resume.
        m.account = None;
        m.engine = Engine::Stopped;
        assert!(m.handle_action(Action::TogglePause).is_empty());
    }

    #[test]
    fn mode_switch_restarts_once() {
        let mut m = running(connected());
        assert!(m.handle_action(Action::SetMode(Mode::Auto)).is_empty());
        assert_eq!(
            m.handle_action(Action::SetMode(Mode::Relay)),
            [Command::SetMode(Mode::Relay)]
        );
        let menu = m.menu(0);
        let modes = submenu(&menu, "Mode: relay");
        let checked: Vec<_> = modes
            .iter()
            .filter_map(|e| match e {
                Entry::Item {
                    id,
                    checked: Some(true),
                    ..
                } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(checked, ["mode:relay"]);
        assert_eq!(m.engine, Engine::Running { status: None });
    }

    #[test]
    fn recent_items_reapply() {
        let mut m = running(connected());
        let text = ClipContent::Text("secret words".into());
        m.recent.push_content(Direction::Received, &text);
        m.recent
            .push_files(Direction::Sent, vec!["/home/ann/a.pdf".into()]);
        let menu = m.menu(0);
        let recent = submenu(&menu, "Recent");
        assert_eq!(labels(recent), ["↑ 1 file", "↓ text, 12 chars"]);
        let Entry::Item { id, .. } = &recent[1] else {
            panic!("not an item")
        };
        let action = Action::parse(id).unwrap();
        assert_eq!(
            m.handle_action(action),
            [Command::Reapply(Payload::Content(text))]
        );
        assert!(m.handle_action(Action::Recent(999)).is_empty());
        // No preview shows the content.
        assert!(!format!("{menu:?}").contains("secret"));
    }

    #[test]
    fn waiting_item_offers_download() {
        let mut m = running(connected());
        assert!(m.handle_action(Action::Fetch).is_empty());
        let mut s = connected();
        s.pending = Some(PendingItem {
            kind: "files".into(),
            files: 3,
            bytes: 123 << 20,
            from_device: 2,
            received_ms: 0,
        });
        m.engine = Engine::Running {
            status: Some(Box::new(s)),
        };
        let menu = m.menu(0);
        assert!(labels(&menu).contains(&"Download 3 files (123 MiB)".to_string()));
        assert_eq!(m.handle_action(Action::Fetch), [Command::Fetch]);
    }

    #[test]
    fn autostart_folders_login_logout_quit() {
        let mut m = running(connected());
        assert_eq!(
            m.handle_action(Action::ToggleAutostart),
            [Command::SetAutostart(true)]
        );
        assert!(m.autostart);
        assert_eq!(
            m.handle_action(Action::ToggleAutostart),
            [Command::SetAutostart(false)]
        );
        assert_eq!(
            m.handle_action(Action::OpenDownloads),
            [Command::Open("/home/ann/Downloads/clipmesh".into())]
        );
        assert_eq!(
            m.handle_action(Action::OpenLog),
            [Command::Open(
                "/home/ann/.local/state/clipmesh/tray.log".into()
            )]
        );
        m.recent
            .push_content(Direction::Sent, &ClipContent::Text("x".into()));
        assert_eq!(m.handle_action(Action::Logout), [Command::Logout]);
        assert_eq!((m.account.as_ref(), m.icon()), (None, IconState::Offline));
        assert_eq!(m.recent.items().count(), 0);
        assert_eq!(m.handle_action(Action::Login), [Command::ShowLogin]);
        assert_eq!(m.handle_action(Action::Quit), [Command::Quit]);
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(123 << 20), "123 MiB");
        assert_eq!(size(3 << 29), "1.5 GiB");
        assert_eq!(ago(1_000), "just now");
        assert_eq!(ago(42_000), "42 s ago");
        assert_eq!(ago(7_200_000), "2 h ago");
        assert_eq!(ago(3 * 86_400_000), "3 d ago");
    }
}
