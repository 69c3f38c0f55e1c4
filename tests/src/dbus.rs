//! A private D-Bus session bus per test, for the tray app's tests (a
//! StatusNotifier host, a notification server).
//!
//! [`SessionBus::start`] runs `dbus-daemon` with a configuration of its own:
//! it listens on a socket in the test's directory and has **no service
//! directories**, so nothing is auto-started behind the test's back (every
//! program on the bus is one the test started, and ends by PID). It returns
//! once the bus has printed its address; dropping it ends the daemon.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the bus may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running private session bus, ended by PID on drop.
#[derive(Debug)]
pub struct SessionBus {
    child: Child,
    /// `DBUS_SESSION_BUS_ADDRESS` for the bus.
    pub address: String,
}

impl SessionBus {
    /// Starts a bus listening on `dir/bus` (`dir` must exist).
    pub fn start(dir: &Path) -> Result<Self> {
        let config = dir.join("bus.conf");
        let socket = dir.join("bus");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )?;
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start dbus-daemon (apt-get install -y dbus)")?;
        let out = child.stdout.take().context("dbus-daemon stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let address = line.trim().to_owned();
        if !address.starts_with("unix:") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("dbus-daemon did not print its address within {START_TIMEOUT:?} (got {line:?})");
        }
        Ok(Self { child, address })
    }

    /// The bus daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
