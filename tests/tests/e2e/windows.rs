//! The Windows client under Wine syncs with a Linux device: a relay, a
//! Linux daemon on display A, and the Windows `clipmesh.exe run` under Wine
//! on display B (Wine bridges the Windows clipboard to B's CLIPBOARD), one
//! account. Text, HTML, a PNG and a copied file go both ways byte for byte;
//! an item marked sensitive on the Windows side is not synced; the Windows
//! device logs in with `clipmesh.exe login --password-stdin` and answers
//! `status` over its named pipe.
//!
//! Needs the Windows executable (`scripts/build-windows --no-msi`, or
//! `CLIPMESH_WINDOWS_EXE`); without it the test says so and passes without
//! running. `scripts/test --only 55` builds it and runs this test.

use crate::world::{add_sync, encode, sample, unique, World, LOG};
use clipmesh_tests::payload::{file_sha256, find_received};
use clipmesh_tests::wait::poll_until;
use clipmesh_tests::wine::{wait_bounded, win_path, windows_exe, WinePrefix};
use clipmesh_tests::xvfb::{xclip_get, xclip_offer, xclip_read, xclip_set};
use clipmesh_tests::{Device, SelectionOwner, Xvfb};
use image::ImageFormat;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PASSWORD: &str = "alice pass phrase";
/// One sync step through Wine (slower to start and to serve than a native
/// daemon on a loaded machine).
const WSTEP: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn uri(path: &Path) -> String {
    let mut out = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("\r\n");
    out
}

/// Offers `text/html` and its text on `display` (xclip offers one target).
fn offer_html(display: &str, html: &str, text: &str) -> SelectionOwner {
    let owner = SelectionOwner::connect(display).unwrap();
    owner
        .set(&[
            ("text/html", html.as_bytes()),
            ("UTF8_STRING", text.as_bytes()),
        ])
        .unwrap();
    owner
}

/// Waits until `display`'s CLIPBOARD holds `text` (read with xclip). On the
/// Wine display this polls: Wine keeps owning the X selection while the
/// Windows clipboard changes, so there is no owner-change event to wait on.
fn wait_text(display: &str, text: &str) {
    poll_until("the text", WSTEP, POLL, || {
        Ok(xclip_get(display, None)?.filter(|t| t == text).map(|_| ()))
    })
    .unwrap();
}

fn wait_bytes(what: &str, display: &str, target: &str, want: &[u8]) {
    poll_until(what, WSTEP, POLL, || {
        Ok(xclip_read(display, target)?
            .filter(|b| b == want)
            .map(|_| ()))
    })
    .unwrap();
}

/// The paths of a `text/uri-list` body, `%XX` escapes decoded.
fn paths_of(list: &str) -> Vec<PathBuf> {
    list.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("file://"))
        .map(|p| {
            let b = p.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.map(|h| u8::from_str_radix(h, 16)) {
                    Some(Ok(v)) if b[i] == b'%' => {
                        out.push(v);
                        i += 3;
                    }
                    _ => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            PathBuf::from(String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

fn wait_file(what: &str, dl: &Path, name: &str) -> PathBuf {
    poll_until(what, WSTEP, POLL, || find_received(dl, name)).unwrap()
}

#[test]
fn windows_under_wine_syncs_text_html_image_and_files_with_linux() {
    let Some(exe) = windows_exe() else {
        eprintln!(
            "SKIPPED windows_under_wine_*: no Windows clipmesh.exe (build it with \
             `scripts/build-windows --no-msi` or set CLIPMESH_WINDOWS_EXE); \
             scripts/test --only 55 builds it and runs this test"
        );
        return;
    };
    let w = World::with_mode(LOG, "relay").unwrap();
    let linux_dl = w.root.join("downloads-linux");
    let win_dl = w.root.join("downloads-windows");
    let mut a = w
        .desk_with(
            "linux",
            "alice",
            PASSWORD,
            true,
            &format!(
                "files = true\ndownload_dir = {:?}",
                linux_dl.to_str().unwrap()
            ),
        )
        .unwrap();

    // The Windows device: its own display, a fresh prefix bound to it.
    // Dropped in reverse: daemon, prefix (wineserver -k), display.
    let xb = Xvfb::start().unwrap();
    let b = xb.display();
    let prefix = WinePrefix::create(&w.root.join("wine"), &b).unwrap();
    let win = Device::new_wine(&w.root, &w.logs, "windows", prefix.exe(&exe)).unwrap();
    win.login(&w.relay.url(), "alice", PASSWORD, LOG).unwrap();
    add_sync(
        &win,
        &format!("files = true\ndownload_dir = '{}'", win_path(&win_dl)),
    )
    .unwrap();
    let _daemon = win.run_mode(&b, "relay", LOG).unwrap();
    win.wait_connected(WSTEP).unwrap();

    // Text, Linux → Windows (read back from the bridged display B).
    let t = unique("linux to windows");
    xclip_set(&a.display(), &t).unwrap();
    wait_text(&b, &t);

    // Text, Windows → Linux.
    let t = unique("windows to linux");
    xclip_set(&b, &t).unwrap();
    a.watcher.wait_for_text(&t, WSTEP).unwrap();

    // HTML with its text, both ways, the HTML byte for byte.
    let text = unique("html L→W");
    let html = format!("<p>Grüße <b>{text}</b> — 日本</p>");
    let _owner_a = offer_html(&a.display(), &html, &text);
    wait_text(&b, &text);
    assert_eq!(
        xclip_get(&b, Some("text/html")).unwrap().as_deref(),
        Some(html.as_str())
    );
    let text = unique("html W→L");
    let html = format!("<i>from Windows {text}</i>");
    let _owner_b = offer_html(&b, &html, &text);
    a.watcher.wait_for_text(&text, WSTEP).unwrap();
    assert_eq!(
        a.watcher.read_html().unwrap().as_deref(),
        Some(html.as_str())
    );

    // A PNG, both ways, byte for byte.
    let png = encode(&sample(7), ImageFormat::Png);
    xclip_offer(&a.display(), "image/png", &png).unwrap();
    wait_bytes("the PNG on Windows", &b, "image/png", &png);
    let png = encode(&sample(8), ImageFormat::Png);
    xclip_offer(&b, "image/png", &png).unwrap();
    wait_bytes("the PNG on Linux", &a.display(), "image/png", &png);

    // A copied file, both ways, by SHA-256; the receiver's clipboard
    // offers the received file.
    let src = w.root.join("source");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let f = src.join("to windows.bin");
    std::fs::write(&f, &data).unwrap();
    xclip_offer(&a.display(), "text/uri-list", uri(&f).as_bytes()).unwrap();
    let got = wait_file("the file on Windows", &win_dl, "to windows.bin");
    assert_eq!(file_sha256(&got).unwrap(), file_sha256(&f).unwrap());
    poll_until("the received file on B's clipboard", WSTEP, POLL, || {
        Ok(xclip_get(&b, Some("text/uri-list"))?
            .filter(|l| paths_of(l) == [got.clone()])
            .map(|_| ()))
    })
    .unwrap();
    let f = src.join("to linux.bin");
    std::fs::write(&f, &data[..150_001]).unwrap();
    xclip_offer(&b, "text/uri-list", uri(&f).as_bytes()).unwrap();
    let got = wait_file("the file on Linux", &linux_dl, "to linux.bin");
    assert_eq!(file_sha256(&got).unwrap(), file_sha256(&f).unwrap());

    // A sensitive-marked item on Windows is not synced: a later ordinary
    // copy arrives, and A's clipboard changed only for it.
    let secret = unique("password");
    let marked = SelectionOwner::connect(&b).unwrap();
    marked
        .set(&[
            ("UTF8_STRING", secret.as_bytes()),
            ("ExcludeClipboardContentFromMonitorProcessing", b"\0\0\0\0"),
        ])
        .unwrap();
    let run_log = w.logs.join("windows-run.log");
    poll_until(
        "the Windows daemon to skip the marked item",
        WSTEP,
        POLL,
        || {
            let log = std::fs::read_to_string(&run_log)?;
            Ok(log.contains("marked sensitive").then_some(()))
        },
    )
    .unwrap();
    // Then an ordinary copy arrives on A, and A never holds the secret.
    // Wine 8 sometimes delivers no WM_CLIPBOARDUPDATE at all for the X
    // selection taken right after the marked item (about 1 run in 5; the
    // daemon's listener sees nothing, see docs/windows.md), so the copy is
    // made again, up to 3 times; every change A sees is checked.
    a.watcher.drain().unwrap();
    let mut arrived = false;
    for attempt in 0..3 {
        let after = unique(&format!("after the secret {attempt}"));
        xclip_set(&b, &after).unwrap();
        if wait_for_text_not(&mut a.watcher, &after, &secret, WSTEP / 3) {
            arrived = true;
            break;
        }
    }
    assert!(arrived, "no ordinary copy after the marked item reached A");
    let log = std::fs::read_to_string(&run_log).unwrap();
    assert!(!log.contains(&secret), "the secret reached the log");
    drop(marked);
}

/// Waits up to `timeout` for `watcher`'s CLIPBOARD to hold `text`, reading
/// it after every owner change; panics if it ever holds `never`.
fn wait_for_text_not(
    watcher: &mut clipmesh_tests::xsel::SelectionWatcher,
    text: &str,
    never: &str,
    timeout: Duration,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let now = watcher.read_text().unwrap();
        assert_ne!(now.as_deref(), Some(never), "the marked item reached A");
        if now.as_deref() == Some(text) {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || watcher.next_change(left).unwrap().is_none() {
            return false;
        }
    }
}

/// The MSI `scripts/build-windows` makes, if it was built.
fn msi() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let p = root.join(format!(
        "target/windows/clipmesh-{}-x86_64.msi",
        env!("CARGO_PKG_VERSION")
    ));
    p.is_file().then_some(p)
}

/// Runs `msiexec ARGS` (quiet) in `prefix`, bounded.
fn msiexec(prefix: &WinePrefix, args: &[&str]) {
    let mut c = prefix
        .exe(Path::new("msiexec"))
        .command()
        .args(args)
        .arg("/qn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_bounded(&mut c, WSTEP, &format!("msiexec {args:?}")).unwrap();
}

/// `reg query` of the start-at-login value: `Some(data line)` if present.
fn run_value(prefix: &WinePrefix) -> Option<String> {
    let out = prefix
        .exe(Path::new("reg"))
        .command()
        .args([
            "query",
            r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run",
            "/v",
            "clipmesh-tray",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("clipmesh-tray") && l.contains("REG_SZ"))
        .map(str::to_owned)
}

#[test]
fn windows_msi_installs_upgrades_and_uninstalls_under_wine() {
    let (Some(_), Some(msi)) = (windows_exe(), msi()) else {
        eprintln!(
            "SKIPPED windows_msi_*: no MSI in target/windows (build it with \
             scripts/build-windows); scripts/test --only 55 builds it and runs this test"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let x = Xvfb::start().unwrap();
    let prefix = WinePrefix::create(&tmp.path().join("wine"), &x.display()).unwrap();
    let drive_c = prefix.path.join("drive_c");
    let installed = drive_c.join("Program Files/clipmesh/clipmesh.exe");
    // The Start Menu entry: all users' Start Menu (what a per-machine
    // install asks for), or the installing user's (where Wine 8's msiexec
    // puts it).
    // "clipmesh" starts the tray, "clipmesh command line" opens a console.
    let shortcuts = |drive_c: &Path, name: &str| -> Vec<PathBuf> {
        let rel = format!("Microsoft/Windows/Start Menu/Programs/clipmesh/{name}.lnk");
        let mut v = vec![drive_c.join("ProgramData").join(&rel)];
        if let Ok(users) = std::fs::read_dir(drive_c.join("users")) {
            v.extend(
                users.filter_map(|e| e.ok().map(|e| e.path().join("AppData/Roaming").join(&rel))),
            );
        }
        v
    };
    let names = ["clipmesh", "clipmesh command line"];

    // Install with the optional start-at-login feature.
    msiexec(&prefix, &["/i", &win_path(&msi), "INSTALLLEVEL=2"]);
    assert!(installed.is_file(), "clipmesh.exe not in Program Files");
    for exe in ["clipmeshw.exe", "clipmesh-tray.exe"] {
        assert!(
            drive_c.join("Program Files/clipmesh").join(exe).is_file(),
            "{exe} not in Program Files"
        );
    }
    for name in names {
        assert!(
            shortcuts(&drive_c, name).iter().any(|p| p.is_file()),
            "no Start Menu entry {name:?}"
        );
    }
    // Start at login starts the tray (the value its menu item reads).
    let run = run_value(&prefix).expect("no HKCU Run value");
    assert!(run.contains(r"clipmesh\clipmesh-tray.exe"), "{run}");
    let out = prefix
        .exe(&installed)
        .command()
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with(&format!("clipmesh {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // The user's config, which uninstall must leave alone.
    let users = drive_c.join("users");
    let profile = std::fs::read_dir(&users)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.join("AppData/Roaming").is_dir())
        .expect("a user profile in the prefix");
    let config = profile.join("AppData/Roaming/clipmesh/clipmesh/config/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "# kept\n").unwrap();

    // A newer version replaces the installed one (MajorUpgrade): after it,
    // uninstalling the newer version leaves nothing of the older behind.
    let newer = tmp.path().join("clipmesh-99.0.0-x86_64.msi");
    // wixl takes File sources relative to its working directory only.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut wixl = std::process::Command::new("wixl")
        .args(["-a", "x64", "-D", "Version=99.0.0", "-D"])
        .arg("BinDir=target/x86_64-pc-windows-gnu/release")
        .arg("-o")
        .arg(&newer)
        .arg("installers/windows/clipmesh.wxs")
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_bounded(&mut wixl, WSTEP, "wixl").unwrap();
    msiexec(&prefix, &["/i", &win_path(&newer)]);
    assert!(installed.is_file());
    msiexec(&prefix, &["/x", &win_path(&newer)]);

    assert!(!installed.exists(), "clipmesh.exe left after uninstall");
    for name in names {
        assert!(
            shortcuts(&drive_c, name).iter().all(|p| !p.exists()),
            "Start Menu entry {name:?} left after uninstall"
        );
    }
    assert_eq!(run_value(&prefix), None, "Run value left after uninstall");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# kept\n");
    drop(prefix);
}
