//! `clipmesh run --mode p2p`: two real daemons on two Xvfb displays sync
//! over a WebRTC data channel on 127.0.0.1 (the test environment sets
//! `CLIPMESH_P2P_BIND`), and the relay's counters prove no clip went
//! through it: `clipmesh_relay_frames_relayed_total` counts the `Deliver`
//! frames it sent, `clipmesh_relay_signals_total` the `Signal` frames it
//! forwarded.

use crate::world::{unique, World, LOG};
use anyhow::Result;
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{xclip_get, xclip_set};
use clipmesh_tests::{Daemon, Device, SelectionWatcher, Xvfb};
use std::time::Duration;

/// A device whose daemon runs in p2p mode on its own display.
struct P2pDesk {
    daemon: Daemon,
    watcher: SelectionWatcher,
    device: Device,
    x: Xvfb,
}

fn p2p_desk(w: &World, name: &str, signup: bool) -> Result<P2pDesk> {
    let device = w.device(name)?;
    let pass = "alice pass phrase";
    if signup {
        device.signup(&w.relay.url(), "alice", pass, &w.log_filter)?;
    } else {
        device.login(&w.relay.url(), "alice", pass, &w.log_filter)?;
    }
    let x = Xvfb::start()?;
    let watcher = SelectionWatcher::connect(&x.display())?;
    let daemon = device.run_mode(&x.display(), "p2p", &w.log_filter)?;
    device.wait_connected(STEP)?;
    Ok(P2pDesk {
        daemon,
        watcher,
        device,
        x,
    })
}

#[test]
fn p2p_mode_syncs_text_both_ways_and_the_relay_relays_no_clip() {
    let w = World::new(LOG).unwrap();
    let mut a = p2p_desk(&w, "alice-a", true).unwrap();
    let mut b = p2p_desk(&w, "alice-b", false).unwrap();
    let st = a.device.wait_link_open(STEP * 2).unwrap();
    assert_eq!(st["mode"], "p2p", "{st}");
    assert_eq!(st["path"], "p2p", "{st}");
    b.device.wait_link_open(STEP * 2).unwrap();

    // A → B and B → A, checked with xclip -o on the other display.
    let t1 = unique("p2p from A");
    xclip_set(&a.x.display(), &t1).unwrap();
    b.watcher.wait_for_text(&t1, STEP).unwrap();
    assert_eq!(
        xclip_get(&b.x.display(), None).unwrap().as_deref(),
        Some(t1.as_str())
    );
    let t2 = unique("p2p from B");
    xclip_set(&b.x.display(), &t2).unwrap();
    a.watcher.wait_for_text(&t2, STEP).unwrap();
    assert_eq!(
        xclip_get(&a.x.display(), None).unwrap().as_deref(),
        Some(t2.as_str())
    );

    // The relay forwarded the sealed offer and answer, and not one clip.
    let signals = w.relay.metric("clipmesh_relay_signals_total").unwrap();
    assert!(signals >= 2, "signals forwarded: {signals}");
    assert_eq!(
        w.relay
            .metric("clipmesh_relay_frames_relayed_total")
            .unwrap(),
        0
    );
    assert_eq!(
        w.relay
            .metric("clipmesh_relay_bytes_relayed_total")
            .unwrap(),
        0
    );

    // B leaves: A closes the link and drops the peer.
    b.daemon.stop().unwrap();
    poll_until(
        "A to drop the peer",
        STEP,
        Duration::from_millis(100),
        || {
            let s = a.device.status()?;
            Ok(s["peers"]
                .as_array()
                .is_some_and(|p| p.is_empty())
                .then_some(()))
        },
    )
    .unwrap();
    let log = std::fs::read_to_string(&a.daemon.log).unwrap();
    assert!(log.contains("direct link open"), "A's log:\n{log}");
    // Whichever A notices first, the closed channel or the presence
    // change, the link is torn down with one line.
    assert!(
        log.contains("direct link closed") || log.contains("direct link stopped"),
        "A's log:\n{log}"
    );
    // No SDP in the log (it holds addresses and fingerprints).
    assert!(!log.contains("a=fingerprint"), "A's log:\n{log}");
    a.daemon.check_running().unwrap();
}
