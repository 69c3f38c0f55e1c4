//! The platform's event loop and tray icon, behind one seam: [`run`].
//!
//! - Linux: GTK's main loop on the main thread, the icon through
//!   tray-icon's libappindicator backend (StatusNotifier hosts: KDE, GNOME
//!   with the AppIndicator extension, waybar), which falls back to the
//!   XEmbed tray (GtkStatusIcon) when no StatusNotifier host runs.
//! - Windows and macOS: tray-icon and muda build there too, but the event
//!   loop they need (a Win32 message loop, NSApplication) is not written
//!   yet; [`run`] says so instead of pretending.

use crate::app::{Shell, TrayCore, UiEvent};
use crate::model::{Entry, IconState};
use crate::notify::Notice;
use std::collections::HashMap;
use tray_icon::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

/// A rendered menu item, kept to update it in place.
enum Handle {
    Item(MenuItem),
    Check(CheckMenuItem),
    Sub(Submenu),
}

/// The menu's shape: ids and kinds, without labels or states. The same
/// shape is updated in place; a new shape is rendered anew.
fn shape(entries: &[Entry], out: &mut Vec<String>) {
    for e in entries {
        match e {
            Entry::Item { id, checked, .. } => out.push(format!("{id}:{}", checked.is_some())),
            Entry::Submenu { id, entries, .. } => {
                out.push(format!("{id}["));
                shape(entries, out);
                out.push("]".into());
            }
            Entry::Separator => out.push("-".into()),
        }
    }
}

/// The tray icon and its menu.
pub struct TrayShell {
    /// The icon.
    tray: TrayIcon,
    /// One decoded icon per state.
    icons: HashMap<IconState, Icon>,
    /// The state shown now.
    shown: Option<IconState>,
    /// The tooltip shown now.
    tooltip: String,
    /// The shape of the rendered menu.
    shape: Vec<String>,
    /// The rendered items by id.
    items: HashMap<String, Handle>,
    /// Notifications go to this thread.
    notices: Option<std::sync::mpsc::Sender<Notice>>,
    /// The notification thread.
    notice_thread: Option<std::thread::JoinHandle<()>>,
    /// Set by [`Shell::quit`].
    quit: bool,
}

fn icon(state: IconState) -> anyhow::Result<Icon> {
    let rgba = crate::icons::decode(crate::icons::png(state))?;
    Ok(Icon::from_rgba(rgba.pixels, rgba.width, rgba.height)?)
}

impl TrayShell {
    /// Builds the tray icon (on the thread that runs the platform loop).
    pub fn new() -> anyhow::Result<Self> {
        let mut icons = HashMap::new();
        for s in IconState::ALL {
            icons.insert(s, icon(s)?);
        }
        let tray = TrayIconBuilder::new()
            .with_id("clipmesh")
            .with_title("clipmesh")
            .with_tooltip("clipmesh")
            .with_icon(icon(IconState::Offline)?)
            .with_menu(Box::new(Menu::new()))
            .build()?;
        let (tx, rx) = std::sync::mpsc::channel::<Notice>();
        // Notifications are D-Bus calls that may block; they get their own
        // thread, which ends when the sender is dropped.
        let notice_thread = std::thread::Builder::new()
            .name("clipmesh-notify".into())
            .spawn(move || {
                for n in rx {
                    let r = notify_rust::Notification::new()
                        .appname("clipmesh")
                        .icon("clipmesh")
                        .summary(&n.summary)
                        .body(&n.body)
                        .show();
                    if let Err(e) = r {
                        tracing::info!(error = %e, summary = %n.summary, "notification not shown");
                    } else {
                        tracing::info!(summary = %n.summary, "notification shown");
                    }
                }
            })?;
        Ok(Self {
            tray,
            icons,
            shown: None,
            tooltip: String::new(),
            shape: Vec::new(),
            items: HashMap::new(),
            notices: Some(tx),
            notice_thread: Some(notice_thread),
            quit: false,
        })
    }

    fn build(&mut self, entries: &[Entry]) -> anyhow::Result<Menu> {
        let menu = Menu::new();
        self.items.clear();
        for e in entries {
            if let Some(item) = self.build_entry(e)? {
                menu.append(item.as_ref())?;
            }
        }
        Ok(menu)
    }

    fn build_entry(&mut self, e: &Entry) -> anyhow::Result<Option<Box<dyn IsMenuItem>>> {
        Ok(Some(match e {
            Entry::Separator => Box::new(PredefinedMenuItem::separator()),
            Entry::Item {
                id,
                label,
                enabled,
                checked: None,
            } => {
                let i = MenuItem::with_id(id.as_str(), label, *enabled, None);
                self.items.insert(id.clone(), Handle::Item(i.clone()));
                Box::new(i)
            }
            Entry::Item {
                id,
                label,
                enabled,
                checked: Some(c),
            } => {
                let i = CheckMenuItem::with_id(id.as_str(), label, *enabled, *c, None);
                self.items.insert(id.clone(), Handle::Check(i.clone()));
                Box::new(i)
            }
            Entry::Submenu { id, label, entries } => {
                let s = Submenu::with_id(id.as_str(), label, true);
                for e in entries {
                    if let Some(item) = self.build_entry(e)? {
                        s.append(item.as_ref())?;
                    }
                }
                self.items.insert(id.clone(), Handle::Sub(s.clone()));
                Box::new(s)
            }
        }))
    }

    fn update(&self, entries: &[Entry]) {
        for e in entries {
            match e {
                Entry::Item {
                    id,
                    label,
                    enabled,
                    checked,
                } => match self.items.get(id) {
                    Some(Handle::Item(i)) => {
                        i.set_text(label);
                        i.set_enabled(*enabled);
                    }
                    Some(Handle::Check(i)) => {
                        i.set_text(label);
                        i.set_enabled(*enabled);
                        i.set_checked(checked.unwrap_or(false));
                    }
                    _ => {}
                },
                Entry::Submenu { id, label, entries } => {
                    if let Some(Handle::Sub(s)) = self.items.get(id) {
                        s.set_text(label);
                    }
                    self.update(entries);
                }
                Entry::Separator => {}
            }
        }
    }

    /// Whether [`Shell::quit`] was called.
    pub fn quitting(&self) -> bool {
        self.quit
    }

    /// Ends the notification thread.
    pub fn close(&mut self) {
        self.notices.take();
        if let Some(t) = self.notice_thread.take() {
            let _ = t.join();
        }
    }
}

impl Shell for TrayShell {
    fn set_icon(&mut self, state: IconState, tooltip: &str) {
        if self.shown != Some(state) {
            if let Some(i) = self.icons.get(&state) {
                if let Err(e) = self.tray.set_icon(Some(i.clone())) {
                    tracing::warn!(error = %e, "cannot set the tray icon");
                }
            }
            self.shown = Some(state);
            tracing::info!(state = %state.name(), "tray icon");
        }
        if self.tooltip != tooltip {
            let _ = self.tray.set_tooltip(Some(tooltip));
            self.tooltip = tooltip.to_owned();
        }
    }

    fn set_menu(&mut self, entries: &[Entry]) {
        let mut s = Vec::new();
        shape(entries, &mut s);
        if s == self.shape {
            self.update(entries);
            return;
        }
        match self.build(entries) {
            Ok(menu) => {
                self.tray.set_menu(Some(Box::new(menu)));
                self.shape = s;
            }
            Err(e) => tracing::warn!(error = %e, "cannot build the tray menu"),
        }
    }

    fn notify(&mut self, notice: &Notice) {
        if let Some(tx) = &self.notices {
            let _ = tx.send(notice.clone());
        }
    }

    fn quit(&mut self) {
        self.quit = true;
    }
}

/// Runs the tray until Quit: sets up the platform loop, builds the icon,
/// and feeds [`UiEvent`]s to a [`TrayCore`] made by `make_core`.
#[cfg(target_os = "linux")]
pub fn run(
    make_core: impl FnOnce(
        tokio::sync::mpsc::Sender<UiEvent>,
        tokio::sync::mpsc::Sender<crate::driver::FromEngine>,
    ) -> anyhow::Result<TrayCore>,
) -> anyhow::Result<()> {
    use crate::app::UI_QUEUE;
    use crate::driver::REPORT_QUEUE;
    use gtk::glib;
    use tokio::sync::mpsc;

    gtk::init().map_err(|e| anyhow::anyhow!("GTK: {e}"))?;
    let (ui_tx, mut ui_rx) = mpsc::channel::<UiEvent>(UI_QUEUE);
    let (rep_tx, mut rep_rx) = mpsc::channel(REPORT_QUEUE);
    let mut core = make_core(ui_tx.clone(), rep_tx)?;
    let mut shell = TrayShell::new()?;
    core.render(&mut shell);

    let menu_tx = ui_tx.clone();
    tray_icon::menu::MenuEvent::set_event_handler(Some(move |e: tray_icon::menu::MenuEvent| {
        let _ = menu_tx.try_send(UiEvent::Menu(e.id.0));
    }));
    let tick_tx = ui_tx.clone();
    let tick = glib::timeout_add_seconds_local(1, move || {
        let _ = tick_tx.try_send(UiEvent::Tick);
        glib::ControlFlow::Continue
    });
    let ctx = glib::MainContext::default();
    let main_loop = glib::MainLoop::new(Some(&ctx), false);
    let ml = main_loop.clone();
    let engine_fwd = ui_tx.clone();
    // Engine reports join the UI queue (the engine's sends never wait on
    // GTK).
    ctx.spawn_local(async move {
        while let Some(r) = rep_rx.recv().await {
            if engine_fwd.send(UiEvent::Engine(r)).await.is_err() {
                break;
            }
        }
    });
    drop(ui_tx);
    ctx.spawn_local(async move {
        while let Some(ev) = ui_rx.recv().await {
            core.handle(ev, &mut shell);
            if shell.quitting() {
                break;
            }
        }
        core.shutdown();
        shell.close();
        ml.quit();
    });
    main_loop.run();
    tick.remove();
    tray_icon::menu::MenuEvent::set_event_handler(None::<fn(tray_icon::menu::MenuEvent)>);
    Ok(())
}

/// The tray's event loop for this platform is not written yet.
#[cfg(not(target_os = "linux"))]
pub fn run(
    _make_core: impl FnOnce(
        tokio::sync::mpsc::Sender<UiEvent>,
        tokio::sync::mpsc::Sender<crate::driver::FromEngine>,
    ) -> anyhow::Result<TrayCore>,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "the tray's event loop is written for Linux only so far; run `clipmesh run` instead"
    )
}
