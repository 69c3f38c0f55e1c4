//! The tray on the platform's loop: [`run`] starts the notification
//! thread, builds the [`TrayCore`] and hands it to
//! [`clipmesh_tray_shell::platform::run`] (GTK's loop on Linux, winit's on
//! Windows and macOS), which owns the icon and the menu.

use crate::app::{Shell, TrayCore, UiEvent, UI_QUEUE};
use crate::driver::{FromEngine, REPORT_QUEUE};
use crate::notify::Notice;
use clipmesh_tray_shell::menu::TrayApp;
use tokio::sync::mpsc;

impl TrayApp for TrayCore {
    type Event = UiEvent;

    fn menu_event(id: String) -> UiEvent {
        UiEvent::Menu(id)
    }

    fn tick_event() -> UiEvent {
        UiEvent::Tick
    }

    fn render(&mut self, shell: &mut dyn Shell) {
        TrayCore::render(self, shell);
    }

    fn handle(&mut self, event: UiEvent, shell: &mut dyn Shell) {
        TrayCore::handle(self, event, shell);
    }

    fn shutdown(&mut self) {
        TrayCore::shutdown(self);
    }
}

/// Shows notifications through the desktop's service (`notify-rust`: D-Bus
/// on Linux, toasts on Windows) until `rx`'s senders are gone. The calls
/// may block, so they get their own thread.
fn notifier(rx: std::sync::mpsc::Receiver<Notice>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
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
        })
}

/// Runs the tray until Quit: the [`TrayCore`] made by `make_core` (given
/// the senders of its own queue and of the engine's reports) on the
/// platform's loop.
pub fn run(
    make_core: impl FnOnce(mpsc::Sender<UiEvent>, mpsc::Sender<FromEngine>) -> anyhow::Result<TrayCore>,
) -> anyhow::Result<()> {
    let (ui_tx, ui_rx) = mpsc::channel::<UiEvent>(UI_QUEUE);
    let (rep_tx, rep_rx) = mpsc::channel(REPORT_QUEUE);
    let core = make_core(ui_tx, rep_tx)?;
    let (notice_tx, notice_rx) = std::sync::mpsc::channel();
    let notices = notifier(notice_rx)?;
    let r =
        clipmesh_tray_shell::platform::run(core, ui_rx, rep_rx, UiEvent::Engine, Some(notice_tx));
    // The shell dropped its sender: the thread ends after the last notice.
    let _ = notices.join();
    r
}
