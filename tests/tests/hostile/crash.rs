//! A relay killed right after it acknowledged a clip still hands that clip
//! to a device that was offline when it was published.

use anyhow::Result;
use clipmesh_tests::wait::STEP;
use clipmesh_tests::{Device, Relay};
use std::path::Path;

const LOG: &str = "info,clipmesh_relay=debug";

/// Rounds of publish → `kill -9` → restart → receive. Before the `Ack` was
/// held until the commit, every round lost its clip (the write came up to
/// 500 ms after the `Ack`).
const ROUNDS: usize = 3;

fn unique(tag: &str) -> String {
    format!("{tag}-{:016x}", rand::random::<u64>())
}

fn devices(root: &Path, logs: &Path, relay: &Relay) -> Result<(Device, Device)> {
    let a = Device::new(root, logs, "crash-a")?;
    a.signup(&relay.url(), "crash", "crash pass phrase", LOG)?;
    let b = Device::new(root, logs, "crash-b")?;
    b.login(&relay.url(), "crash", "crash pass phrase", LOG)?;
    Ok((a, b))
}

#[test]
fn acknowledged_clip_survives_kill_9_for_an_offline_device() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let data = root.join("relay-data");
    let mut relay = Relay::start(&data, &logs.join("relay-0.log"), 0, LOG).unwrap();
    let (a, b) = devices(root, &logs, &relay).unwrap();
    for round in 0..ROUNDS {
        let text = unique("acked before the crash");
        // `send` returns once the relay acknowledged the clip; B is offline.
        a.send(&text, LOG).unwrap();
        relay.kill().unwrap();
        relay
            .restart(&logs.join(format!("relay-{}.log", round + 1)), LOG)
            .unwrap();
        let mut watch = b.watch(LOG).unwrap();
        let got = watch.wait_text(&text, STEP);
        drop(watch);
        if let Err(e) = got {
            let log = std::fs::read_to_string(&relay.log).unwrap_or_default();
            panic!("round {round}: the acknowledged clip was lost in the crash: {e:#}\n{log}");
        }
    }
}
