//! A copied file list (small files, inline) arrives as files in the
//! receiver's download folder, and the receiver's clipboard offers them the
//! way file managers paste them: `text/uri-list`, GNOME's
//! `x-special/gnome-copied-files` and the paths as text.

use crate::world::{paths_of, unique, uri, World, LOG};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{xclip_get, xclip_offer, xclip_set};
use std::path::PathBuf;
use std::time::Duration;

const FRAMES: &str = "clipmesh_relay_frames_relayed_total";

#[test]
fn copied_file_list_is_pasteable_on_the_other_display() {
    // Counts relay frames: relay mode (see `World::with_mode`).
    let w = World::with_mode(LOG, "relay").unwrap();
    let (a, b, downloads) = w.file_desks("").unwrap();

    let src = w.root.join("source files");
    std::fs::create_dir_all(&src).unwrap();
    let files = [
        ("a b.txt", b"first file\n".to_vec()),
        ("ünï #1.bin", (0..=255u8).collect::<Vec<u8>>()),
    ];
    let mut list = String::new();
    for (name, data) in &files {
        let p = src.join(name);
        std::fs::write(&p, data).unwrap();
        list.push_str(&uri(&p));
        list.push_str("\r\n");
    }
    let frames_before = w.relay.metric(FRAMES).unwrap();
    xclip_offer(&a.display(), "text/uri-list", list.as_bytes()).unwrap();

    // B's clipboard lists local copies of both files, inside its download
    // folder, with the same names and contents.
    let got = poll_until(
        "the file list on B",
        STEP,
        Duration::from_millis(100),
        || {
            Ok(xclip_get(&b.display(), Some("text/uri-list"))?
                .map(|l| paths_of(&l))
                .filter(|p| p.len() == files.len()))
        },
    )
    .unwrap();
    for (path, (name, data)) in got.iter().zip(&files) {
        assert!(path.starts_with(&downloads), "{path:?}");
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), *name);
        assert_eq!(&std::fs::read(path).unwrap(), data, "{name}");
    }
    // GNOME's target: "copy", then the same URIs.
    let gnome = xclip_get(&b.display(), Some("x-special/gnome-copied-files"))
        .unwrap()
        .unwrap();
    assert!(gnome.starts_with("copy\nfile://"), "{gnome}");
    assert_eq!(paths_of(&gnome), got);
    // Plain text: the paths, one a line.
    let text = xclip_get(&b.display(), Some("UTF8_STRING"))
        .unwrap()
        .unwrap();
    let lines: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
    assert_eq!(lines, got);

    // B read its own file list back as an echo: a text copied on B
    // afterwards is the only other frame the relay delivers.
    let text = unique("after the files");
    xclip_set(&b.display(), &text).unwrap();
    poll_until("the text on A", STEP, Duration::from_millis(100), || {
        Ok(
            (xclip_get(&a.display(), Some("UTF8_STRING"))?.as_deref() == Some(text.as_str()))
                .then_some(()),
        )
    })
    .unwrap();
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 2, "Deliver frames relayed");
}
