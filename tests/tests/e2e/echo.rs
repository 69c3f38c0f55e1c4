//! No echo loops: one copy produces exactly one delivery per device, with
//! three daemons and a `watch` of the same user.

use crate::world::{unique, World, LOG};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xvfb::xclip_set;

const FRAMES: &str = "clipmesh_relay_frames_relayed_total";
/// How long to wait for a delivery that must not come.
const QUIET: std::time::Duration = std::time::Duration::from_millis(1500);

#[test]
fn one_copy_is_delivered_exactly_once_to_each_device() {
    // Counts relay frames: relay mode (see `World::with_mode`).
    let w = World::with_mode(LOG, "relay").unwrap();
    let pw = "alice pass phrase";
    let mut a = w.desk("alice-a", "alice", pw, true).unwrap();
    let mut b = w.desk("alice-b", "alice", pw, false).unwrap();
    let mut c = w.desk("alice-c", "alice", pw, false).unwrap();
    let watch_dev = w.device("alice-w").unwrap();
    watch_dev.login(&w.relay.url(), "alice", pw, LOG).unwrap();
    let mut watch = watch_dev.watch(LOG).unwrap();
    // The watcher is online once the relay counts four connections.
    clipmesh_tests::wait::poll_until(
        "four connections",
        STEP,
        std::time::Duration::from_millis(50),
        || Ok((w.relay.metric("clipmesh_relay_connections")? == 4).then_some(())),
    )
    .unwrap();
    let frames_before = w.relay.metric(FRAMES).unwrap();

    // A, B, C, then A again each copy once. Each later copy is a barrier for
    // echoes of the earlier ones: a daemon that re-published a received
    // item would do so before publishing its own next copy.
    let texts: Vec<String> = (0..4).map(|i| unique(&format!("copy {i}"))).collect();
    let order = [0usize, 1, 2, 0];
    for (i, &src) in order.iter().enumerate() {
        let desks = [&mut a, &mut b, &mut c];
        let text = &texts[i];
        xclip_set(&desks[src].display(), text).unwrap();
        for (j, d) in desks.into_iter().enumerate() {
            if j != src {
                // Changes consumed while waiting plus any already queued
                // (the item may have arrived before the wait began).
                let n =
                    d.watcher.wait_for_text(text, STEP).unwrap() + d.watcher.drain().unwrap().len();
                assert_eq!(n, 1, "device {j} saw {n} clipboard changes for copy {i}");
            }
        }
        watch.wait_text(text, STEP).unwrap();
        let desks = [&mut a, &mut b, &mut c];
        let n = desks[src].watcher.drain().unwrap().len();
        assert_eq!(
            n, 1,
            "source device {src} saw {n} clipboard changes for copy {i}"
        );
    }
    // Echoes of the last copies have no later copy to order them against:
    // give them a bounded window to show up on the watch (an event wait,
    // expected to time out).
    let late = watch.next(QUIET).unwrap();
    assert!(
        late.is_none(),
        "extra delivery after the last copy: {late:?}"
    );

    // The watch device printed each copy exactly once and nothing else.
    let seen: Vec<String> = watch
        .seen
        .iter()
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen, texts, "watch lines");
    // Relay: 4 copies × 3 receivers (the two other daemons and the watch).
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 4 * 3, "Deliver frames relayed");
    // Exactly one owner change per item on every display: the copies'
    // sources had one from xclip, the others one from the daemon.
    for d in [&mut a, &mut b, &mut c] {
        assert_eq!(d.watcher.drain().unwrap().len(), 0, "late clipboard change");
        d.daemon.check_running().unwrap();
    }
}
