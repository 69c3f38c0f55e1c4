//! A copied file list (small files, inline) arrives as files in the
//! receiver's download folder, and the receiver's clipboard offers them the
//! way file managers paste them: `text/uri-list`, GNOME's
//! `x-special/gnome-copied-files` and the paths as text.

use crate::world::{unique, World, LOG};
use anyhow::{bail, Context, Result};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::xclip_set;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const FRAMES: &str = "clipmesh_relay_frames_relayed_total";

fn uri(path: &Path) -> String {
    let mut out = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn paths_of(list: &str) -> Vec<PathBuf> {
    list.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("file://"))
        .map(|p| PathBuf::from(String::from_utf8(unescape(p)).unwrap()))
        .collect()
}

fn xclip_offer(display: &str, target: &str, bytes: &[u8]) -> Result<()> {
    let mut child = Command::new("xclip")
        .args(["-selection", "clipboard", "-t", target, "-i"])
        .env("DISPLAY", display)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("xclip (run scripts/test, which installs it)")?;
    child
        .stdin
        .take()
        .context("xclip stdin")?
        .write_all(bytes)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("xclip -i failed on {display}: {status}");
    }
    Ok(())
}

fn xclip_read(display: &str, target: &str) -> Result<Option<String>> {
    let out = Command::new("xclip")
        .args(["-selection", "clipboard", "-o", "-t", target])
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("xclip")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

#[test]
fn copied_file_list_is_pasteable_on_the_other_display() {
    let w = World::new(LOG).unwrap();
    let downloads = w.root.join("downloads-b");
    let sync = format!(
        "files = true\ndownload_dir = {:?}",
        downloads.to_str().unwrap()
    );
    let a = w
        .desk_with(
            "alice-a",
            "alice",
            "alice pass phrase",
            true,
            "files = true",
        )
        .unwrap();
    let b = w
        .desk_with("alice-b", "alice", "alice pass phrase", false, &sync)
        .unwrap();

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
            Ok(xclip_read(&b.display(), "text/uri-list")?
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
    let gnome = xclip_read(&b.display(), "x-special/gnome-copied-files")
        .unwrap()
        .unwrap();
    assert!(gnome.starts_with("copy\nfile://"), "{gnome}");
    assert_eq!(paths_of(&gnome), got);
    // Plain text: the paths, one a line.
    let text = xclip_read(&b.display(), "UTF8_STRING").unwrap().unwrap();
    let lines: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
    assert_eq!(lines, got);

    // B read its own file list back as an echo: a text copied on B
    // afterwards is the only other frame the relay delivers.
    let text = unique("after the files");
    xclip_set(&b.display(), &text).unwrap();
    poll_until("the text on A", STEP, Duration::from_millis(100), || {
        Ok(
            (xclip_read(&a.display(), "UTF8_STRING")?.as_deref() == Some(text.as_str()))
                .then_some(()),
        )
    })
    .unwrap();
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 2, "Deliver frames relayed");
}
