//! Large items through the relay's blob store between two Xvfb displays: a
//! 5 MiB image (random pixels, so PNG cannot shrink it) copied with xclip
//! arrives with identical pixels, and a 100 MiB file copied as a `text/uri-list` arrives
//! in B's download folder with an identical SHA-256 while B's clipboard
//! offers its path. Memory stays bounded: the relay's and both daemons'
//! peak RSS grow by less than [`RSS_BOUND`] over their idle resident set.

use crate::world::{World, LOG};
use clipmesh_tests::payload::{file_sha256, find_received, random_file, random_image};
use clipmesh_tests::rss::MemoryWindow;
use clipmesh_tests::wait::poll_until;
use clipmesh_tests::xvfb::{xclip_offer, xclip_read};
use image::ImageFormat;
use std::path::Path;
use std::time::Duration;

/// The bound this test states: peak RSS of the relay and of each daemon
/// stays below its idle RSS plus 64 MiB while a 5 MiB image and a 100 MiB
/// file go through.
pub const RSS_BOUND: u64 = 64 << 20;
/// Size of the large file.
const FILE_LEN: usize = 100 << 20;
/// Deadline for one large item (debug builds on a shared 2-core machine).
const LARGE_STEP: Duration = Duration::from_secs(180);

/// A `file://` URI for a path of plain characters.
pub fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The last `n` lines of a log file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn five_mib_image_and_100_mib_file_arrive_intact_in_bounded_memory() {
    let w = World::new(LOG).unwrap();
    let dl = w.root.join("b-downloads");
    let sync = format!("files = true\ndownload_dir = \"{}\"", dl.display());
    let a = w
        .desk_with("large-a", "lara", "lara pass phrase", true, &sync)
        .unwrap();
    let b = w
        .desk_with("large-b", "lara", "lara pass phrase", false, &sync)
        .unwrap();
    let (img, png) = random_image().unwrap();
    assert!(png.len() >= 5 << 20, "{} bytes", png.len());
    let src_dir = w.root.join("a-files");
    std::fs::create_dir_all(&src_dir).unwrap();
    let src = src_dir.join("big.bin");
    let want_sha = random_file(&src, FILE_LEN).unwrap();

    let windows = [
        ("relay", MemoryWindow::start(w.relay.pid()).unwrap()),
        ("daemon A", MemoryWindow::start(a.daemon.pid()).unwrap()),
        ("daemon B", MemoryWindow::start(b.daemon.pid()).unwrap()),
    ];

    // The file: copied on A as a uri-list, lands in B's download folder.
    xclip_offer(
        &a.display(),
        "text/uri-list",
        format!("{}\r\n", file_uri(&src)).as_bytes(),
    )
    .unwrap();
    let got = poll_until(
        "the 100 MiB file in B's download folder",
        LARGE_STEP,
        Duration::from_millis(250),
        || find_received(&dl, "big.bin"),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nA:\n{}\nB:\n{}",
            tail(&a.daemon.log, 15),
            tail(&b.daemon.log, 15)
        )
    });
    assert_eq!(std::fs::metadata(&got).unwrap().len(), FILE_LEN as u64);
    assert!(file_sha256(&got).unwrap() == want_sha, "SHA-256 differs");
    // Nothing else (no temporary file) is left beside it.
    let beside: Vec<_> = std::fs::read_dir(got.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["big.bin"]);
    // B's clipboard offers the received file.
    let want_uri = file_uri(&got);
    poll_until(
        "the received file on B's clipboard",
        LARGE_STEP,
        Duration::from_millis(100),
        || {
            let list = xclip_read(&b.display(), "text/uri-list")?.unwrap_or_default();
            let list = String::from_utf8_lossy(&list).into_owned();
            Ok(list.lines().any(|l| l.trim_end() == want_uri).then_some(()))
        },
    )
    .unwrap();

    // The image: copied on A, served on B with the same pixels.
    // Copied with xclip, which serves it by INCR.
    xclip_offer(&a.display(), "image/png", &png).unwrap();
    poll_until(
        "the 5 MiB image on B",
        LARGE_STEP,
        Duration::from_millis(250),
        || {
            let Some(got) = xclip_read(&b.display(), "image/png")? else {
                return Ok(None);
            };
            let Ok(got) = image::load_from_memory_with_format(&got, ImageFormat::Png) else {
                return Ok(None);
            };
            Ok((got.to_rgba8() == img).then_some(()))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nA:\n{}\nB:\n{}",
            tail(&a.daemon.log, 15),
            tail(&b.daemon.log, 15)
        )
    });

    for (who, win) in windows {
        let growth = win.growth().unwrap();
        eprintln!(
            "{who}: idle {} MiB, peak {} MiB (+{} MiB)",
            win.idle >> 20,
            win.peak().unwrap() >> 20,
            growth >> 20
        );
        assert!(
            growth < RSS_BOUND,
            "{who}: peak RSS grew by {growth} bytes (bound {RSS_BOUND})"
        );
    }
}
