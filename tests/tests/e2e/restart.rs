//! Restarting the relay mid-run: sync resumes with no new login.

use crate::world::{unique, World, LOG};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xvfb::{xclip_get, xclip_set};

#[test]
fn sync_resumes_after_relay_restart_without_login() {
    let mut w = World::new(LOG).unwrap();
    let mut a = w
        .desk("alice-a", "alice", "alice pass phrase", true)
        .unwrap();
    let mut b = w
        .desk("alice-b", "alice", "alice pass phrase", false)
        .unwrap();
    let secrets_before = (a.device.secrets().unwrap(), b.device.secrets().unwrap());

    let t1 = unique("before restart");
    xclip_set(&a.display(), &t1).unwrap();
    b.watcher.wait_for_text(&t1, STEP).unwrap();

    // Same data directory and port; the daemons keep running throughout.
    w.restart_relay().unwrap();
    a.device.wait_connected(STEP).unwrap();
    b.device.wait_connected(STEP).unwrap();

    let t2 = unique("after restart");
    xclip_set(&a.display(), &t2).unwrap();
    b.watcher.wait_for_text(&t2, STEP).unwrap();
    assert_eq!(
        xclip_get(&b.display(), None).unwrap().as_deref(),
        Some(t2.as_str())
    );

    let t3 = unique("after restart, other way");
    xclip_set(&b.display(), &t3).unwrap();
    a.watcher.wait_for_text(&t3, STEP).unwrap();

    // No new login happened: the stored device tokens are unchanged and
    // both daemons are the same processes.
    let secrets_after = (a.device.secrets().unwrap(), b.device.secrets().unwrap());
    assert_eq!(secrets_before, secrets_after);
    a.daemon.check_running().unwrap();
    b.daemon.check_running().unwrap();
}
