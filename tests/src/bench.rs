//! What the two copy-to-paste latency tools (`clipmesh-latency` on X11,
//! `clipmesh-wl-latency` on Wayland) share: their common flags, the relay
//! with two devices of one user, and the latency report.

use crate::procstat::summary;
use crate::{Device, Relay};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::time::Duration;

/// The flags both latency tools take.
#[derive(Debug, Clone)]
pub struct LatencyArgs {
    /// Timed copies (after one warm-up copy).
    pub copies: usize,
    /// Shortest random gap between copies.
    pub min_gap_ms: u64,
    /// Longest random gap between copies.
    pub max_gap_ms: u64,
    /// How long the idle cost is sampled (0: not at all).
    pub idle_secs: u64,
    /// `RUST_LOG` of the relay and the daemons.
    pub rust_log: String,
    /// `clipmesh run --mode` for both daemons.
    pub mode: String,
}

impl LatencyArgs {
    /// Parses the program's arguments: the common flags, and through
    /// `extra` the tool's own switches (it returns `false` for a flag it
    /// does not know). `--help` prints `usage` and exits.
    pub fn parse(usage: &str, mut extra: impl FnMut(&str) -> bool) -> Result<Self> {
        let mut a = Self {
            copies: 200,
            min_gap_ms: 20,
            max_gap_ms: 150,
            idle_secs: 60,
            rust_log: "warn".into(),
            mode: "relay".into(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut val = || it.next().context("missing value");
            match flag.as_str() {
                "--copies" => a.copies = val()?.parse()?,
                "--min-gap-ms" => a.min_gap_ms = val()?.parse()?,
                "--max-gap-ms" => a.max_gap_ms = val()?.parse()?,
                "--idle-secs" => a.idle_secs = val()?.parse()?,
                "--rust-log" => a.rust_log = val()?,
                "--mode" => a.mode = val()?,
                "-h" | "--help" => {
                    println!("{usage}");
                    std::process::exit(0);
                }
                other if extra(other) => {}
                other => bail!("unknown argument {other}"),
            }
        }
        if a.max_gap_ms < a.min_gap_ms {
            bail!("--max-gap-ms must be at least --min-gap-ms");
        }
        Ok(a)
    }
}

/// A relay on 127.0.0.1:0 and two devices of one user, signed up (`a`)
/// and logged in (`b`), all in a temporary folder with a `logs` folder.
#[derive(Debug)]
pub struct RelayPair {
    /// The relay.
    pub relay: Relay,
    /// The relay's URL.
    pub url: String,
    /// The first device (signed up).
    pub dev_a: Device,
    /// The second device (logged in).
    pub dev_b: Device,
    /// Where the logs are.
    pub logs: PathBuf,
    /// Everything lives here (last, so removed after the rest is dropped).
    pub tmp: tempfile::TempDir,
}

impl RelayPair {
    /// Starts the relay and sets up both devices.
    pub fn start(rust_log: &str) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let logs = tmp.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let data = tmp.path().join("relay-data");
        std::fs::create_dir_all(&data)?;
        let relay = Relay::start(&data, &logs.join("relay.log"), 0, rust_log)?;
        let url = relay.url();
        let pw = "latency bench password";
        let dev_a = Device::new(tmp.path(), &logs, "a")?;
        dev_a.signup(&url, "bench", pw, rust_log)?;
        let dev_b = Device::new(tmp.path(), &logs, "b")?;
        dev_b.login(&url, "bench", pw, rust_log)?;
        Ok(Self {
            relay,
            url,
            dev_a,
            dev_b,
            logs,
            tmp,
        })
    }
}

/// Prints the latency table: clipmesh's copies (as `path`) against the
/// noise floor, and how many of each were over 4 and 10 ms.
pub fn report(path: &str, lat: &mut [Duration], floor: &mut [Duration]) {
    summary(path, lat);
    summary("noise floor (C -> D, no clipmesh)", floor);
    let over =
        |v: &[Duration], ms: u64| v.iter().filter(|d| **d > Duration::from_millis(ms)).count();
    println!(
        "copies over 4 ms: clipmesh {}, floor {}; over 10 ms: clipmesh {}, floor {}",
        over(lat, 4),
        over(floor, 4),
        over(lat, 10),
        over(floor, 10)
    );
}
