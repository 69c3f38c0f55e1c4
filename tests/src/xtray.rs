//! An XEmbed system tray on an X display, for the tray app's tests (Linux
//! `clipmesh-tray`, and the Windows one under Wine, which docks its
//! notification-area icons into the display's XEmbed tray).
//!
//! - [`Trayer`]: `trayer` (an XEmbed tray panel from Debian) on a display,
//!   ended by PID on drop; [`Trayer::start`] returns once it owns the
//!   `_NET_SYSTEM_TRAY_S0` selection.
//! - [`embedded_icon`]: the first mapped window docked in the panel (an
//!   icon), found by walking the window tree.
//! - [`grab`] and [`screenshot`]: a window's (or the screen's) pixels, and
//!   a PNG of them for the test's output.

use crate::wait::poll_until;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, ImageFormat, MapState, Window};
use x11rb::rust_connection::RustConnection;

/// `trayer` on one display, ended by PID (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Trayer {
    child: Child,
    /// The display it runs on.
    pub display: String,
}

impl Trayer {
    /// Starts a 200×40 panel at the top left of `display` and waits (at
    /// most `timeout`) until it is the display's tray manager.
    pub fn start(display: &str, timeout: Duration) -> Result<Self> {
        let child = Command::new("trayer")
            .args(["--edge", "top", "--align", "left", "--widthtype", "pixel"])
            .args(["--width", "200", "--height", "40"])
            .args(["--SetDockType", "false", "--transparent", "false"])
            .env("DISPLAY", display)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start trayer (apt-get install -y trayer)")?;
        let this = Self {
            child,
            display: display.to_owned(),
        };
        tray_manager(display, timeout)?;
        Ok(this)
    }

    /// trayer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Trayer {
    fn drop(&mut self) {
        let _ = crate::procs::terminate_within(&mut self.child, Duration::from_secs(5));
    }
}

/// The tray selection's owner (`_NET_SYSTEM_TRAY_S0`), once there is one.
pub fn tray_manager(display: &str, timeout: Duration) -> Result<Window> {
    let (conn, _) = RustConnection::connect(Some(display))?;
    let atom = conn
        .intern_atom(false, b"_NET_SYSTEM_TRAY_S0")?
        .reply()?
        .atom;
    poll_until(
        "a tray manager to own _NET_SYSTEM_TRAY_S0",
        timeout,
        Duration::from_millis(50),
        || {
            let owner = conn.get_selection_owner(atom)?.reply()?.owner;
            Ok((owner != x11rb::NONE).then_some(owner))
        },
    )
}

/// Every window under `top`, with its parent, depth first.
pub fn descendants(
    conn: &RustConnection,
    top: Window,
    out: &mut Vec<(Window, Window)>,
) -> Result<()> {
    for w in conn.query_tree(top)?.reply()?.children {
        out.push((top, w));
        descendants(conn, w, out)?;
    }
    Ok(())
}

/// Every window under the root with its parent and `WM_NAME`.
pub fn window_names(display: &str) -> Result<Vec<(Window, Window, String)>> {
    let (conn, screen) = RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let mut all = Vec::new();
    descendants(&conn, root, &mut all)?;
    let mut named = Vec::new();
    for (parent, w) in all {
        let name = conn
            .get_property(false, w, AtomEnum::WM_NAME, AtomEnum::ANY, 0, 256)?
            .reply()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
            .unwrap_or_default();
        named.push((parent, w, name));
    }
    Ok(named)
}

/// A window docked in trayer's panel (named "panel"): the first mapped
/// descendant of at least 8×8 pixels, with the panel, once there is one.
pub fn embedded_icon(display: &str, timeout: Duration) -> Result<(Window, Window)> {
    poll_until(
        "an icon docked in trayer's panel",
        timeout,
        Duration::from_millis(100),
        || {
            let names = window_names(display)?;
            let Some(panel) = names
                .iter()
                .find(|(_, _, n)| n == "panel")
                .map(|(_, w, _)| *w)
            else {
                return Ok(None);
            };
            let (conn, _) = RustConnection::connect(Some(display))?;
            let mut inside = Vec::new();
            descendants(&conn, panel, &mut inside)?;
            for (_, w) in inside {
                let a = conn.get_window_attributes(w)?.reply()?;
                let g = conn.get_geometry(w)?.reply()?;
                if a.map_state == MapState::VIEWABLE && g.width >= 8 && g.height >= 8 {
                    return Ok(Some((panel, w)));
                }
            }
            Ok(None)
        },
    )
}

/// The pixels of `window` (the root when None) as RGBA, with its size.
pub fn grab(display: &str, window: Option<Window>) -> Result<(Vec<u8>, u16, u16)> {
    let (conn, screen) = RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let win = window.unwrap_or(root);
    let geo = conn.get_geometry(win)?.reply()?;
    let img = conn
        .get_image(ImageFormat::Z_PIXMAP, win, 0, 0, geo.width, geo.height, !0)?
        .reply()?;
    if img.data.len() != geo.width as usize * geo.height as usize * 4 {
        bail!("unexpected image format (depth {})", img.depth);
    }
    // ZPixmap at depth 24/32 on Xvfb is BGRX, little-endian.
    let mut rgba = Vec::with_capacity(img.data.len());
    for px in img.data.chunks_exact(4) {
        rgba.extend_from_slice(&[px[2], px[1], px[0], 255]);
    }
    Ok((rgba, geo.width, geo.height))
}

/// Saves a screenshot of `window` (the root when None) as PNG.
pub fn screenshot(display: &str, window: Option<Window>, file: &Path) -> Result<()> {
    let (rgba, width, height) = grab(display, window)?;
    image::save_buffer(
        file,
        &rgba,
        width.into(),
        height.into(),
        image::ExtendedColorType::Rgba8,
    )?;
    Ok(())
}

/// The mapped top-level windows (children of the root).
pub fn mapped_top_levels(display: &str) -> Result<Vec<Window>> {
    let (conn, screen) = RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let mut out = Vec::new();
    for w in conn.query_tree(root)?.reply()?.children {
        if conn.get_window_attributes(w)?.reply()?.map_state == MapState::VIEWABLE {
            out.push(w);
        }
    }
    Ok(out)
}

/// A window's place on the screen: (x, y, width, height) in root
/// coordinates.
pub fn screen_rect(display: &str, window: Window) -> Result<(i32, i32, u16, u16)> {
    let (conn, screen) = RustConnection::connect(Some(display))?;
    let root = conn.setup().roots[screen].root;
    let g = conn.get_geometry(window)?.reply()?;
    let t = conn.translate_coordinates(window, root, 0, 0)?.reply()?;
    Ok((t.dst_x.into(), t.dst_y.into(), g.width, g.height))
}

/// Moves the pointer to (`x`, `y`) on the screen and clicks `button`
/// (1 left, 3 right) with xdotool.
pub fn click_at(display: &str, x: i32, y: i32, button: u8) -> Result<()> {
    let out = Command::new("xdotool")
        .args(["mousemove", "--sync", &x.to_string(), &y.to_string()])
        .args(["click", &button.to_string()])
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .output()
        .context("xdotool (apt-get install -y xdotool)")?;
    if !out.status.success() {
        bail!(
            "xdotool click at {x},{y}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
