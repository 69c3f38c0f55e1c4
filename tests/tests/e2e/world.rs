//! Shared setup: a temp dir, a relay, devices with daemons on Xvfb.

use anyhow::{Context, Result};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{require_xclip, xclip_read};
use clipmesh_tests::{Daemon, Device, Relay, SelectionWatcher, Xvfb};
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Log filter for the relay and clients in ordinary tests.
pub const LOG: &str = "info,clipmesh=debug,clipmesh_clipboard=trace,clipmesh_relay=debug";

/// One test's world. Field order matters for drop: daemons before their
/// displays, everything before the temp dir.
pub struct World {
    pub relay: Relay,
    pub root: PathBuf,
    pub logs: PathBuf,
    pub log_filter: String,
    /// `clipmesh run --mode` for the daemons [`World::desk`] starts.
    pub mode: &'static str,
    /// Keeps the directory alive until the world is dropped.
    pub _tmp: tempfile::TempDir,
}

/// A device whose daemon runs on its own display.
pub struct Desk {
    pub daemon: Daemon,
    pub watcher: SelectionWatcher,
    pub device: Device,
    pub x: Xvfb,
}

impl Desk {
    pub fn display(&self) -> String {
        self.x.display()
    }
}

/// When a test fails, its processes' logs would vanish with the temp dir:
/// print the end of each (the harness shows a failing test's output).
impl Drop for World {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(dir) = std::fs::read_dir(&self.logs) else {
            return;
        };
        let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("---- {} (last {} lines) ----", f.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl World {
    /// A world whose daemons run in the default mode (`auto`: direct links
    /// when they open, and the relay).
    pub fn new(log_filter: &str) -> Result<Self> {
        Self::with_mode(log_filter, "auto")
    }

    /// A world whose daemons run in `mode`. Tests that count the frames the
    /// relay delivered use `relay`: in `auto` a clip can reach its device
    /// over a direct link before the relay has counted its copy.
    pub fn with_mode(log_filter: &str, mode: &'static str) -> Result<Self> {
        require_xclip()?;
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().to_owned();
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs)?;
        let data = root.join("relay-data");
        std::fs::create_dir_all(&data)?;
        let relay = Relay::start(&data, &logs.join("relay.log"), 0, log_filter)?;
        Ok(Self {
            relay,
            root,
            logs,
            log_filter: log_filter.to_owned(),
            mode,
            _tmp: tmp,
        })
    }

    pub fn device(&self, name: &str) -> Result<Device> {
        Device::new(&self.root, &self.logs, name)
    }

    /// Signs `user` up (first device) or logs in, then runs the daemon on a
    /// fresh display and waits until it is connected.
    pub fn desk(&self, name: &str, user: &str, password: &str, signup: bool) -> Result<Desk> {
        self.desk_with(name, user, password, signup, "")
    }

    /// Like [`World::desk`], adding `sync_toml` (lines for the `[sync]`
    /// section of config.toml) before the daemon starts.
    pub fn desk_with(
        &self,
        name: &str,
        user: &str,
        password: &str,
        signup: bool,
        sync_toml: &str,
    ) -> Result<Desk> {
        let device = self.device(name)?;
        if signup {
            device.signup(&self.relay.url(), user, password, &self.log_filter)?;
        } else {
            device.login(&self.relay.url(), user, password, &self.log_filter)?;
        }
        add_sync(&device, sync_toml)?;
        let x = Xvfb::start()?;
        let watcher = SelectionWatcher::connect(&x.display())?;
        let daemon = device.run_mode(&x.display(), self.mode, &self.log_filter)?;
        if let Err(e) = device.wait_connected(STEP) {
            let log = std::fs::read_to_string(&daemon.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            anyhow::bail!(
                "{e:#}; last lines of the daemon log, newest first: {}",
                tail.join(" | ")
            );
        }
        Ok(Desk {
            daemon,
            watcher,
            device,
            x,
        })
    }

    /// Alice's two desks for file tests: A (signs up) with `files = true`;
    /// B (logs in) with `files = true`, `b_sync` (more `[sync]` lines, each
    /// ending in a newline) and its downloads in `<root>/downloads-b`,
    /// which is returned too.
    pub fn file_desks(&self, b_sync: &str) -> Result<(Desk, Desk, PathBuf)> {
        let downloads = self.root.join("downloads-b");
        let dir = downloads
            .to_str()
            .context("a temp path that is not UTF-8")?;
        let sync = format!("files = true\n{b_sync}download_dir = {dir:?}");
        let a = self.desk_with(
            "alice-a",
            "alice",
            "alice pass phrase",
            true,
            "files = true",
        )?;
        let b = self.desk_with("alice-b", "alice", "alice pass phrase", false, &sync)?;
        Ok((a, b, downloads))
    }

    /// Restarts the relay on the same port and data directory.
    pub fn restart_relay(&mut self) -> Result<()> {
        let port = self.relay.port;
        let data = self.relay.data_dir.clone();
        self.relay.stop()?;
        let log = self.logs.join("relay-2.log");
        self.relay = Relay::start(&data, &log, port, &self.log_filter)?;
        Ok(())
    }
}

/// Adds `sync_toml` (lines for the `[sync]` section) to a device's
/// config.toml, replacing settings already there.
pub fn add_sync(device: &Device, sync_toml: &str) -> Result<()> {
    if sync_toml.is_empty() {
        return Ok(());
    }
    let path = device.config_dir.join("config.toml");
    let mut cfg = std::fs::read_to_string(&path)?;
    if !cfg.contains("[sync]") {
        cfg.push_str("\n[sync]\n");
    }
    for setting in sync_toml.lines() {
        let key = setting.split('=').next().unwrap_or_default().trim();
        let existing = cfg
            .lines()
            .find(|l| l.split('=').next().map(str::trim) == Some(key))
            .map(str::to_owned);
        cfg = match existing {
            Some(line) => cfg.replacen(&line, setting, 1),
            None => cfg.replacen("[sync]\n", &format!("[sync]\n{setting}\n"), 1),
        };
    }
    std::fs::write(&path, cfg)?;
    Ok(())
}

/// A text unlikely to be anywhere by chance.
pub fn unique(tag: &str) -> String {
    use rand::Rng;
    format!("{tag}-{:016x}", rand::thread_rng().gen::<u64>())
}

/// A noisy 96×64 test image, different for each `seed`.
pub fn sample(seed: u32) -> RgbaImage {
    RgbaImage::from_fn(96, 64, |x, y| {
        let v = (x * 7919 + y * 104_729 + seed * 31).wrapping_mul(2_654_435_761);
        Rgba([
            (v >> 24) as u8,
            (v >> 16) as u8,
            (v >> 8) as u8,
            255 - (x as u8),
        ])
    })
}

/// `img` encoded as `f`.
pub fn encode(img: &RgbaImage, f: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgba8(img.clone())
        .write_to(&mut Cursor::new(&mut out), f)
        .unwrap();
    out
}

/// A `file://` URI of `path`, percent-escaped.
pub fn uri(path: &Path) -> String {
    let mut out = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes percent-escapes.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The local paths of a `text/uri-list`.
pub fn paths_of(list: &str) -> Vec<PathBuf> {
    list.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("file://"))
        .map(|p| PathBuf::from(String::from_utf8(unescape(p)).unwrap()))
        .collect()
}

/// Waits until `display` serves an `image/png` with exactly `want`'s pixels.
pub fn wait_for_pixels(display: &str, want: &RgbaImage) -> Result<Vec<u8>> {
    poll_until(
        "the image on the other display",
        // Images are read, sealed, uploaded and served in several steps, each
        // by a process that a loaded CI machine may starve for seconds.
        STEP * 3,
        Duration::from_millis(100),
        || {
            let Some(png) = xclip_read(display, "image/png")? else {
                return Ok(None);
            };
            let Ok(img) = image::load_from_memory_with_format(&png, ImageFormat::Png) else {
                return Ok(None);
            };
            Ok((img.to_rgba8() == *want).then_some(png))
        },
    )
}
