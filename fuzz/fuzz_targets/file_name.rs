//! `SafePath::new` and `numbered_name` on arbitrary (lossily decoded)
//! strings. Invariants: no panic; every component is non-empty, at most
//! 255 bytes, free of separators, controls and the characters Windows
//! forbids, not `.`/`..`; the path is never absolute; sanitising twice
//! changes nothing; numbered names are sanitised components too.
#![no_main]

use clipmesh_proto::filename::{numbered_name, sanitize_component, MAX_COMPONENT_BYTES, MAX_DEPTH};
use clipmesh_proto::SafePath;
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};

fn check_component(c: &str) {
    assert!(!c.is_empty() && c != "." && c != "..");
    assert!(c.len() <= MAX_COMPONENT_BYTES);
    assert!(!c
        .chars()
        .any(|ch| ch.is_control() || "/\\<>:\"|?*".contains(ch)));
    assert!(!c.ends_with('.') && !c.ends_with(' ') && !c.starts_with(' '));
    assert_eq!(sanitize_component(c).as_deref(), Some(c), "not a fixpoint");
}

fuzz_target!(|data: &[u8]| {
    let name = String::from_utf8_lossy(data);
    let p = SafePath::new(&name);
    assert!(!p.components().is_empty() && p.components().len() <= MAX_DEPTH);
    for c in p.components() {
        check_component(c);
    }
    assert_eq!(SafePath::new(&p.to_relative_string()), p, "not idempotent");
    let base = Path::new("downloads");
    let joined = p.join_to(base);
    let rel = joined.strip_prefix(base).expect("joined under base");
    assert!(rel.components().all(|c| matches!(c, Component::Normal(_))));

    let n = data.first().map_or(0, |&b| u32::from(b) * 41);
    check_component(&numbered_name(&name, n));
});
