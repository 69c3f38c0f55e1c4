//! The platform's event loop and tray icon, behind one seam: [`run`].
//!
//! - Linux: GTK's main loop on the main thread, the icon through
//!   tray-icon's libappindicator backend (StatusNotifier hosts: KDE, GNOME
//!   with the AppIndicator extension, waybar), which falls back to the
//!   XEmbed tray (GtkStatusIcon) when no StatusNotifier host runs.
//! - Windows and macOS: winit's event loop (a Win32 message loop,
//!   `NSApplication`), which tray-icon needs running on the thread that
//!   owns the icon; the icon is made once the loop runs. On Windows a
//!   click on the icon opens the menu through our own handler
//!   (`crate::winmenu`), not tray-icon's, which needs the icon's rectangle
//!   (Wine cannot give it).

use crate::menu::{Entry, IconState, Notice, Shell, TrayApp};
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
    /// Opens the menu on a click (Windows); dropped before the icon.
    #[cfg(windows)]
    click: crate::winmenu::ClickMenu,
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
    /// Notifications go here (the program's notification thread).
    notices: Option<std::sync::mpsc::Sender<Notice>>,
    /// Set by [`Shell::quit`].
    quit: bool,
}

fn icon(state: IconState) -> anyhow::Result<Icon> {
    let rgba = crate::icons::decode(crate::icons::png(state))?;
    Ok(Icon::from_rgba(rgba.pixels, rgba.width, rgba.height)?)
}

impl TrayShell {
    /// Builds the tray icon (on the thread that runs the platform loop);
    /// notifications are handed to `notices`.
    pub fn new(notices: Option<std::sync::mpsc::Sender<Notice>>) -> anyhow::Result<Self> {
        let mut icons = HashMap::new();
        for s in IconState::ALL {
            icons.insert(s, icon(s)?);
        }
        let tray = TrayIconBuilder::new()
            .with_id("clipmesh")
            .with_title("clipmesh")
            .with_tooltip("clipmesh")
            .with_icon(icon(IconState::Offline)?)
            .with_menu(Box::new(Menu::new()));
        // On Windows the menu opens from crate::winmenu's handler instead.
        #[cfg(windows)]
        let tray = tray
            .with_menu_on_left_click(false)
            .with_menu_on_right_click(false);
        let tray = tray.build()?;
        #[cfg(windows)]
        let click = crate::winmenu::ClickMenu::attach(tray.window_handle())?;
        Ok(Self {
            #[cfg(windows)]
            click,
            tray,
            icons,
            shown: None,
            tooltip: String::new(),
            shape: Vec::new(),
            items: HashMap::new(),
            notices,
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

    /// Stops handing out notifications (the receiver's thread can end).
    pub fn close(&mut self) {
        self.notices.take();
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
                #[cfg(windows)]
                self.click.set_menu(&menu);
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

/// Runs `app` until it quits: sets up the platform loop, builds the icon
/// (notifications go to `notices`), and feeds it its events: `ui` (its own
/// queue), `reports` (wrapped with `wrap`: the engine's queue), menu clicks
/// and a tick once a second. Returns once the loop has ended and
/// [`TrayApp::shutdown`] has run.
#[cfg(target_os = "linux")]
pub fn run<A: TrayApp + 'static, R: Send + 'static>(
    mut app: A,
    mut ui: tokio::sync::mpsc::Receiver<A::Event>,
    mut reports: tokio::sync::mpsc::Receiver<R>,
    wrap: fn(R) -> A::Event,
    notices: Option<std::sync::mpsc::Sender<Notice>>,
) -> anyhow::Result<()> {
    use gtk::glib;
    use tokio::sync::mpsc;

    gtk::init().map_err(|e| anyhow::anyhow!("GTK: {e}"))?;
    let mut shell = TrayShell::new(notices)?;
    app.render(&mut shell);

    // Menu clicks and ticks join the program's queue here; engine reports
    // are forwarded into it (the engine's sends never wait on GTK).
    let (tx, mut rx) = mpsc::channel::<A::Event>(64);
    let menu_tx = tx.clone();
    tray_icon::menu::MenuEvent::set_event_handler(Some(move |e: tray_icon::menu::MenuEvent| {
        let _ = menu_tx.try_send(A::menu_event(e.id.0));
    }));
    let tick_tx = tx.clone();
    let tick = glib::timeout_add_seconds_local(1, move || {
        let _ = tick_tx.try_send(A::tick_event());
        glib::ControlFlow::Continue
    });
    let ctx = glib::MainContext::default();
    let main_loop = glib::MainLoop::new(Some(&ctx), false);
    let ml = main_loop.clone();
    let ui_fwd = tx.clone();
    ctx.spawn_local(async move {
        while let Some(e) = ui.recv().await {
            if ui_fwd.send(e).await.is_err() {
                break;
            }
        }
    });
    let rep_fwd = tx;
    ctx.spawn_local(async move {
        while let Some(r) = reports.recv().await {
            if rep_fwd.send(wrap(r)).await.is_err() {
                break;
            }
        }
    });
    ctx.spawn_local(async move {
        while let Some(ev) = rx.recv().await {
            app.handle(ev, &mut shell);
            if shell.quitting() {
                break;
            }
        }
        app.shutdown();
        shell.close();
        ml.quit();
    });
    main_loop.run();
    tick.remove();
    tray_icon::menu::MenuEvent::set_event_handler(None::<fn(tray_icon::menu::MenuEvent)>);
    Ok(())
}

/// Runs `app` until it quits on Windows and macOS: winit's event loop (a
/// Win32 message loop on Windows, `NSApplication` on macOS), as tray-icon's
/// documentation asks. The icon is built on `StartCause::Init`, once the
/// loop runs, on the loop's (main) thread. The program's events, engine
/// reports and menu clicks reach the loop as user events through an
/// [`winit::event_loop::EventLoopProxy`]; the once-a-second tick is the
/// loop's own timer (`ControlFlow::WaitUntil`). Returns once the loop has
/// ended and [`TrayApp::shutdown`] has run.
#[cfg(not(target_os = "linux"))]
pub fn run<A: TrayApp + 'static, R: Send + 'static>(
    app: A,
    ui: tokio::sync::mpsc::Receiver<A::Event>,
    reports: tokio::sync::mpsc::Receiver<R>,
    wrap: fn(R) -> A::Event,
    notices: Option<std::sync::mpsc::Sender<Notice>>,
) -> anyhow::Result<()> {
    use winit::event_loop::EventLoop;

    let event_loop = EventLoop::<A::Event>::with_user_event().build()?;
    // Two forwarders into the loop; each ends when its queue's senders are
    // gone (the program's, the engine thread's) or the loop has ended.
    let proxy = event_loop.create_proxy();
    let ui_fwd = forward(ui, proxy.clone(), |e| e)?;
    let rep_fwd = forward(reports, proxy.clone(), wrap)?;
    // The icon's own events (clicks, hovers) are not used; without a
    // handler tray-icon would queue each one in an unbounded channel that
    // nobody reads.
    tray_icon::TrayIconEvent::set_event_handler(Some(|_: tray_icon::TrayIconEvent| {}));
    let menu_proxy = std::sync::Mutex::new(proxy);
    tray_icon::menu::MenuEvent::set_event_handler(Some(move |e: tray_icon::menu::MenuEvent| {
        if let Ok(p) = menu_proxy.lock() {
            let _ = p.send_event(A::menu_event(e.id.0));
        }
    }));

    let mut state = WinitApp {
        app,
        shell: None,
        notices,
        failed: None,
    };
    let ran = event_loop.run_app(&mut state);
    tray_icon::menu::MenuEvent::set_event_handler(None::<fn(tray_icon::menu::MenuEvent)>);
    state.app.shutdown();
    if let Some(mut shell) = state.shell.take() {
        shell.close();
    }
    // The program held the last sender of its queue; the engine thread
    // (ended by shutdown) held the last sender of the reports.
    drop(state.app);
    let _ = ui_fwd.join();
    let _ = rep_fwd.join();
    ran?;
    match state.failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Moves items from `rx` into the event loop as user events, on its own
/// thread (joined by [`run`]).
#[cfg(not(target_os = "linux"))]
fn forward<T: Send + 'static, E: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
    proxy: winit::event_loop::EventLoopProxy<E>,
    wrap: fn(T) -> E,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("clipmesh-ui-forward".into())
        .spawn(move || {
            while let Some(x) = rx.blocking_recv() {
                if proxy.send_event(wrap(x)).is_err() {
                    break;
                }
            }
        })
}

/// The winit application: the program, and the shell once the loop runs.
#[cfg(not(target_os = "linux"))]
struct WinitApp<A> {
    app: A,
    shell: Option<TrayShell>,
    /// Handed to the shell when it is built.
    notices: Option<std::sync::mpsc::Sender<Notice>>,
    /// Why the loop ended early (the icon could not be made).
    failed: Option<anyhow::Error>,
}

#[cfg(not(target_os = "linux"))]
impl<A: TrayApp + 'static> winit::application::ApplicationHandler<A::Event> for WinitApp<A> {
    fn new_events(
        &mut self,
        event_loop: &winit::event_loop::ActiveEventLoop,
        cause: winit::event::StartCause,
    ) {
        use winit::event::StartCause;
        use winit::event_loop::ControlFlow;
        match cause {
            StartCause::Init => match TrayShell::new(self.notices.take()) {
                Ok(mut shell) => {
                    self.app.render(&mut shell);
                    self.shell = Some(shell);
                    tracing::info!("tray icon created");
                }
                Err(e) => {
                    self.failed = Some(e.context("creating the tray icon"));
                    event_loop.exit();
                    return;
                }
            },
            StartCause::ResumeTimeReached { .. } => self.user_event(event_loop, A::tick_event()),
            _ => return,
        }
        let next = std::time::Instant::now() + std::time::Duration::from_secs(1);
        event_loop.set_control_flow(ControlFlow::WaitUntil(next));
    }

    fn resumed(&mut self, _event_loop: &winit::event_loop::ActiveEventLoop) {}

    fn user_event(&mut self, event_loop: &winit::event_loop::ActiveEventLoop, event: A::Event) {
        let Some(shell) = self.shell.as_mut() else {
            return;
        };
        self.app.handle(event, shell);
        if shell.quitting() {
            event_loop.exit();
        }
    }

    fn window_event(
        &mut self,
        _event_loop: &winit::event_loop::ActiveEventLoop,
        _window_id: winit::window::WindowId,
        _event: winit::event::WindowEvent,
    ) {
        // The tray opens no winit window (the login window is its own
        // process).
    }
}
