//! Two devices of one user sync both ways; another user sees nothing.

use crate::world::{unique, World, LOG};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xvfb::{xclip_get, xclip_get_selection, xclip_set, xclip_set_selection};
use clipmesh_tests::SelectionOwner;

#[test]
fn text_syncs_both_ways_and_another_user_sees_nothing() {
    let w = World::new(LOG).unwrap();
    let mut a = w
        .desk("alice-a", "alice", "alice pass phrase", true)
        .unwrap();
    let mut b = w
        .desk("alice-b", "alice", "alice pass phrase", false)
        .unwrap();
    let mut c = w.desk("bob-c", "bob", "bob pass phrase", true).unwrap();
    let bob_watch_dev = w.device("bob-w").unwrap();
    bob_watch_dev
        .login(&w.relay.url(), "bob", "bob pass phrase", LOG)
        .unwrap();
    let mut bob_watch = bob_watch_dev.watch(LOG).unwrap();

    // A → B, checked with xclip -o on B.
    let t1 = unique("from A");
    xclip_set(&a.display(), &t1).unwrap();
    b.watcher.wait_for_text(&t1, STEP).unwrap();
    assert_eq!(
        xclip_get(&b.display(), None).unwrap().as_deref(),
        Some(t1.as_str())
    );

    // B → A.
    let t2 = unique("from B");
    xclip_set(&b.display(), &t2).unwrap();
    a.watcher.wait_for_text(&t2, STEP).unwrap();
    assert_eq!(
        xclip_get(&a.display(), None).unwrap().as_deref(),
        Some(t2.as_str())
    );

    // Bob's own copy reaches bob's watcher: fan-out to bob works, so had
    // alice's clips been sent to bob they would have arrived before it.
    a.watcher.drain().unwrap();
    b.watcher.drain().unwrap();
    let t3 = unique("bob's own");
    xclip_set(&c.display(), &t3).unwrap();
    bob_watch.wait_text(&t3, STEP).unwrap();
    for line in &bob_watch.seen {
        let text = line["text"].as_str().unwrap_or_default();
        assert!(
            text != t1 && text != t2,
            "bob received alice's clip: {line}"
        );
    }
    // Bob's display only ever held what xclip put there.
    assert_eq!(
        xclip_get(&c.display(), None).unwrap().as_deref(),
        Some(t3.as_str())
    );
    let changes_on_c = c.watcher.drain().unwrap();
    assert_eq!(
        changes_on_c.len(),
        1,
        "bob's clipboard changed {} times",
        changes_on_c.len()
    );

    // A last alice copy as a barrier: alice's displays changed exactly once
    // each since bob's copy (xclip on A, the daemon on B), so bob's clip
    // never reached them.
    let t4 = unique("barrier");
    xclip_set(&a.display(), &t4).unwrap();
    let changes_on_b = b.watcher.wait_for_text(&t4, STEP).unwrap();
    assert_eq!(changes_on_b, 1, "B's clipboard changed more than once");
    assert_eq!(b.watcher.drain().unwrap().len(), 0);
    assert_eq!(
        a.watcher.drain().unwrap().len(),
        1,
        "A's clipboard changed more than once"
    );
    assert_eq!(
        xclip_get(&a.display(), None).unwrap().as_deref(),
        Some(t4.as_str())
    );

    for d in [&mut a, &mut b, &mut c] {
        d.daemon.check_running().unwrap();
    }
}

#[test]
fn large_text_syncs_through_incr_transfers() {
    // ~600 KB, offered by an application that hands it over with the ICCCM
    // INCR protocol in 64 KiB chunks, so the daemon's reader must follow
    // INCR; under the client's default 1 MB item limit.
    let w = World::new(LOG).unwrap();
    let a = w
        .desk("alice-a", "alice", "alice pass phrase", true)
        .unwrap();
    let mut b = w
        .desk("alice-b", "alice", "alice pass phrase", false)
        .unwrap();
    let line = unique("a long line of a large copied log");
    let big: String = std::iter::repeat_n(line.as_str(), 600_000 / (line.len() + 1))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(big.len() > 500_000);
    let owner = SelectionOwner::connect(&a.display()).unwrap();
    owner.set_incr_chunk(Some(64 * 1024));
    owner.set_text(&big).unwrap();
    b.watcher.wait_for_text(&big, STEP).unwrap();
    assert!(owner.incr_done() >= 1, "the item was not sent with INCR");
    assert_eq!(
        xclip_get(&b.display(), None).unwrap().map(|s| s.len()),
        Some(big.len())
    );
}

#[test]
fn primary_selection_syncs_when_enabled() {
    let w = World::new(LOG).unwrap();
    let sync = "primary = true";
    let a = w
        .desk_with("alice-a", "alice", "alice pass phrase", true, sync)
        .unwrap();
    let mut b = w
        .desk_with("alice-b", "alice", "alice pass phrase", false, sync)
        .unwrap();
    // Selecting text on A (PRIMARY only) reaches B's CLIPBOARD and PRIMARY.
    let t = unique("selected with the mouse");
    xclip_set_selection(&a.display(), "primary", &t, None).unwrap();
    b.watcher.wait_for_text(&t, STEP).unwrap();
    assert_eq!(
        xclip_get_selection(&b.display(), "primary", None)
            .unwrap()
            .as_deref(),
        Some(t.as_str())
    );
}
