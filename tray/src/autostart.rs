//! Start at login, through `auto-launch`: an XDG autostart entry on Linux
//! (`~/.config/autostart/clipmesh-tray.desktop`), the user's Run key on
//! Windows (value `clipmesh-tray`, which the MSI's optional StartAtLogin
//! feature also writes), a
//! LaunchAgent on macOS. Off until the user (the tray menu, or
//! `clipmesh-tray autostart on`) turns it on.
//!
//! The Linux packages ship `/etc/xdg/autostart/clipmesh-tray.desktop` with
//! `Hidden=true`: present but off. The user's entry of the same name,
//! written here, overrides it; removing it turns autostart off again.

use auto_launch::{AutoLaunch, AutoLaunchBuilder};
use std::path::Path;

/// The entry's name (the desktop file's stem on Linux).
pub const APP_NAME: &str = "clipmesh-tray";

/// Why autostart could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[error("start at login: {0}")]
pub struct AutostartError(String);

/// Start at login for the program at `exe`.
pub struct Autostart(AutoLaunch);

impl Autostart {
    /// For the program at `exe` (normally the running executable).
    pub fn new(exe: &Path) -> Result<Self, AutostartError> {
        let path = exe
            .to_str()
            .ok_or_else(|| AutostartError("the program's path is not UTF-8".into()))?;
        // The Run value's command line: quoted, as the path has spaces
        // ("Program Files"); the MSI writes the same value.
        #[cfg(windows)]
        let path = &format!("\"{path}\"");
        AutoLaunchBuilder::new()
            .set_app_name(APP_NAME)
            .set_app_path(path)
            // The user's Run key (HKCU), never the machine's, even when
            // the user could write it: it is a per-user choice.
            .set_windows_enable_mode(auto_launch::WindowsEnableMode::CurrentUser)
            .build()
            .map(Self)
            .map_err(|e| AutostartError(e.to_string()))
    }

    /// Whether it is on.
    pub fn is_enabled(&self) -> Result<bool, AutostartError> {
        self.0
            .is_enabled()
            .map_err(|e| AutostartError(e.to_string()))
    }

    /// Turns it on or off.
    pub fn set(&self, on: bool) -> Result<(), AutostartError> {
        let r = if on {
            self.0.enable()
        } else if self.0.is_enabled().unwrap_or(true) {
            self.0.disable()
        } else {
            Ok(())
        };
        r.map_err(|e| AutostartError(e.to_string()))
    }
}
