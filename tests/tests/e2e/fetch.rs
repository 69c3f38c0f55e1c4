//! `clipmesh fetch`: a copied file over the receiver's `auto_download_max`
//! waits (status shows its size, not its name), and `clipmesh fetch` on the
//! receiver downloads it and puts it on the receiver's real X clipboard.

use crate::world::{World, LOG};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{xclip_get, xclip_offer};
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn a_file_over_auto_download_max_waits_and_fetch_puts_it_on_the_clipboard() {
    let w = World::with_mode(LOG, "relay").unwrap();
    let (a, b, downloads) = w.file_desks("auto_download_max = 1000\n").unwrap();

    // 300 KiB: above the inline threshold (a blob) and auto_download_max.
    let src = w.root.join("fetch-src");
    std::fs::create_dir_all(&src).unwrap();
    let path = src.join("secret-name.bin");
    let data: Vec<u8> = (0..300u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    xclip_offer(
        &a.display(),
        "text/uri-list",
        format!("file://{}\r\n", path.display()).as_bytes(),
    )
    .unwrap();

    // B announces it in status (size and count, no name) and downloads
    // nothing yet.
    let pending = poll_until("the waiting item", STEP, Duration::from_millis(100), || {
        let st = b.device.status()?;
        Ok(st
            .get("pending")
            .filter(|p| p["bytes"] == data.len() as u64)
            .cloned())
    })
    .unwrap();
    assert_eq!(pending["kind"], "files");
    assert_eq!(pending["files"], 1);
    assert!(!pending.to_string().contains("secret"), "{pending}");
    assert!(!downloads.exists(), "nothing downloaded before the fetch");

    let mut fetch = b.device.command().unwrap();
    fetch.arg("fetch");
    let out = fetch.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("fetched"), "{stdout}");
    assert!(!stderr.contains("secret"), "{stderr}");

    // B's clipboard now lists the downloaded file, same bytes.
    let got: PathBuf = poll_until(
        "the file on B's clipboard",
        STEP,
        Duration::from_millis(100),
        || {
            Ok(
                xclip_get(&b.display(), Some("text/uri-list"))?.and_then(|l| {
                    l.lines()
                        .find_map(|l| l.trim_end_matches('\r').strip_prefix("file://"))
                        .map(PathBuf::from)
                }),
            )
        },
    )
    .unwrap();
    assert!(got.starts_with(&downloads), "{got:?}");
    assert_eq!(got.file_name().unwrap(), "secret-name.bin");
    assert!(std::fs::read(&got).unwrap() == data);

    // Nothing waits any more.
    let mut again = b.device.command().unwrap();
    again.arg("fetch");
    let out = again.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to fetch"));
}
