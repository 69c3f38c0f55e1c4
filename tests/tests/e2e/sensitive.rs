//! Items marked sensitive by their source are never synced; HTML is synced
//! with its plain-text alternative.

use crate::world::{unique, World, LOG};
use clipmesh_tests::wait::STEP;
use clipmesh_tests::xvfb::{xclip_get, xclip_set};
use clipmesh_tests::SelectionOwner;

#[test]
fn sensitive_items_stay_local_and_html_keeps_its_alt_text() {
    let w = World::new(LOG).unwrap();
    let mut a = w
        .desk("alice-a", "alice", "alice pass phrase", true)
        .unwrap();
    let mut b = w
        .desk("alice-b", "alice", "alice pass phrase", false)
        .unwrap();
    let watch_dev = w.device("alice-w").unwrap();
    watch_dev
        .login(&w.relay.url(), "alice", "alice pass phrase", LOG)
        .unwrap();
    let mut watch = watch_dev.watch(LOG).unwrap();

    let owner = SelectionOwner::connect(&a.display()).unwrap();
    // KDE / KeePassXC style: the hint with value "secret".
    let secret1 = unique("password one");
    let n0 = owner.served();
    owner
        .set(&[
            ("UTF8_STRING", secret1.as_bytes()),
            ("x-kde-passwordManagerHint", b"secret"),
        ])
        .unwrap();
    // Let A's daemon look at it (TARGETS, then the hint) before moving on,
    // so the next copy does not simply supersede it.
    owner.wait_served(n0 + 2, STEP).unwrap();
    // nspasteboard.org style: a concealed-type marker.
    let secret2 = unique("password two");
    let n1 = owner.served();
    owner
        .set(&[
            ("UTF8_STRING", secret2.as_bytes()),
            ("org.nspasteboard.ConcealedType", b""),
        ])
        .unwrap();
    owner.wait_served(n1 + 1, STEP).unwrap();
    // An HTML copy with its text alternative.
    let html = format!("<b>{}</b>", unique("bold"));
    let alt = unique("alt text");
    owner
        .set(&[
            ("text/html", html.as_bytes()),
            ("UTF8_STRING", alt.as_bytes()),
        ])
        .unwrap();

    // B's clipboard changes exactly once, to the HTML item: the secrets,
    // copied before it on the same display, never arrived.
    let n = b.watcher.wait_for_text(&alt, STEP).unwrap();
    assert_eq!(n, 1, "B's clipboard changed {n} times");
    assert_eq!(
        b.watcher.read_html().unwrap().as_deref(),
        Some(html.as_str())
    );
    assert_eq!(
        xclip_get(&b.display(), Some("text/html"))
            .unwrap()
            .as_deref(),
        Some(html.as_str())
    );
    let first = watch.next(STEP).unwrap().expect("the html item");
    assert_eq!(
        first["text"].as_str(),
        Some(alt.as_str()),
        "watch line {first}"
    );

    // A plain copy afterwards still syncs, and nothing else was delivered.
    drop(owner);
    let t = unique("plain");
    xclip_set(&a.display(), &t).unwrap();
    b.watcher.wait_for_text(&t, STEP).unwrap();
    watch.wait_text(&t, STEP).unwrap();
    for line in &watch.seen {
        let text = line["text"].as_str().unwrap_or_default();
        assert!(
            text != secret1 && text != secret2,
            "a secret was synced: {line}"
        );
    }
    assert_eq!(watch.seen.len(), 2);
    a.daemon.check_running().unwrap();
    b.daemon.check_running().unwrap();
}
