//! End-to-end test helpers for clipmesh.
//!
//! The tests in `tests/tests/e2e.rs` start the **real** binaries — one
//! `clipmesh-relay` on `127.0.0.1:0` and several `clipmesh` daemons, each
//! with its own `--config-dir` and its own Xvfb display — and drive them
//! the way a user would: `xclip` on one display, read the clipboard on
//! another.
//!
//! - [`bins`]: finds the built binaries (`cargo build --workspace --bins`
//!   first; `scripts/test` does).
//! - [`xvfb`]: a private X server per device, killed on drop.
//! - [`sway`]: a private headless Wayland compositor per device (sway), the
//!   `wl-copy` / `wl-paste` tools and a change watcher; [`wloffer`]: a
//!   Wayland clipboard owner offering several types at once; [`wlfake`]: a
//!   fake compositor without data-control; [`wlwatch`]: an in-process
//!   Wayland clipboard change watcher (for latency timing).
//! - [`xsel`]: X11 helpers built on x11rb — an XFixes owner-change watcher
//!   (event-driven waits and latency timing, from outside the daemons) and
//!   a selection owner that serves chosen targets.
//! - [`dbus`]: a private D-Bus session bus with no auto-started services
//!   (the tray's StatusNotifier and notification tests).
//! - [`xtray`]: an XEmbed tray (trayer) on a display, the icons docked in
//!   it, and screenshots (the tray app's tests, Linux and Wine).
//! - [`procs`]: the relay, devices, daemons and `watch` processes, with
//!   their logs captured to files.
//! - [`wait`]: bounded waiting.
//! - [`wine`]: the Windows `clipmesh.exe` under Wine, in a fresh prefix per
//!   test (the Windows end-to-end test and latency benchmark).
//! - [`procstat`]: CPU time, wake-ups and memory of a process, and
//!   latency percentiles, for the benchmark tools; [`bench`](mod@bench):
//!   the flags, relay setup and report both latency tools share.
//! - [`rss`]: peak memory of a process (`VmHWM`), resettable.
//! - [`conformance`]: the relay protocol conformance suite, parameterized
//!   by a relay URL (native relay and Cloudflare Worker); [`hibernation`]:
//!   the Worker's room is evicted when idle and keepalives do not wake it.
//! - [`clipcascade`]: a scripted ClipCascade-style client (login, STOMP,
//!   encryption), written from the protocol description alone.
//! - [`payload`]: random images and files for large-item runs, and checks
//!   on what arrived.
//!
//! Nothing here sleeps to synchronise: every wait is on an event (a log
//! line, an X event, a process's output) or a bounded poll of observable
//! state with a deadline.

pub mod bench;
pub mod bins;
pub mod clipcascade;
pub mod conformance;
pub mod dbus;
pub mod hibernation;
pub mod payload;
pub mod procs;
pub mod procstat;
pub mod rss;
pub mod sway;
pub mod wait;
pub mod wine;
mod wlcommon;
pub mod wlfake;
pub mod wloffer;
pub mod wlwatch;
pub mod xsel;
pub mod xtray;
pub mod xvfb;

pub use procs::{Daemon, Device, Relay, Watch, WorkerRelay};
pub use xsel::{OwnerChange, SelectionOwner, SelectionWatcher};
pub use xvfb::Xvfb;

/// What to tell a developer whose machine lacks a system tool.
pub const INSTALL_HINT: &str =
    "run scripts/test, which installs xvfb, xclip and x11-utils (apt-get install -y xvfb xclip x11-utils)";
