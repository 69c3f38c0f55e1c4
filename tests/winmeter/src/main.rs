//! `clipmesh-winmeter`: the Windows end of `clipmesh-latency --wine`.
//!
//! It registers a clipboard format listener (`WM_CLIPBOARDUPDATE`, through
//! `clipboard_win::Monitor`, the same listener the Windows backend uses) and
//! prints one line per update on stdout:
//!
//! ```text
//! <unix time in ns when the update arrived> <text on the clipboard, or "-">
//! ```
//!
//! The time comes from `SystemTime::now()`, which Wine answers from the
//! host's `CLOCK_REALTIME`, so the Linux tool that starts it can compare it
//! with its own clock. Lines are flushed as they are written. The first line
//! is `ready`, once the listener is registered. It ends when stdout closes
//! or the listener fails.
//!
//! It reads only text (`CF_UNICODETEXT`, retried while another process
//! holds the clipboard open), prints it on one line (line breaks
//! escaped) and is meant for the latency tool's probe strings, not for a
//! user's clipboard.

#[cfg(windows)]
fn main() -> std::process::ExitCode {
    use std::io::Write;
    let mut monitor = match clipboard_win::Monitor::new() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("clipmesh-winmeter: cannot register a clipboard listener: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "ready").and_then(|_| out.flush()).is_err() {
        return std::process::ExitCode::SUCCESS;
    }
    loop {
        match monitor.recv() {
            Ok(true) => {}
            Ok(false) => return std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("clipmesh-winmeter: clipboard listener failed: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let text = read_text()
            .map(|t| t.replace('\r', "\\r").replace('\n', "\\n"))
            .unwrap_or_else(|| "-".to_owned());
        if writeln!(out, "{at} {text}")
            .and_then(|_| out.flush())
            .is_err()
        {
            return std::process::ExitCode::SUCCESS;
        }
    }
}

/// The clipboard's text. Another process (the daemon that just wrote it,
/// or Wine importing an X selection) may hold the clipboard open for a
/// moment: up to 20 tries, 10 ms apart. The update's time was taken before.
#[cfg(windows)]
fn read_text() -> Option<String> {
    for _ in 0..20 {
        if let Ok(t) = clipboard_win::get_clipboard_string() {
            return Some(t);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

#[cfg(not(windows))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "clipmesh-winmeter is a Windows program: build it with \
         `scripts/build-windows --no-msi`; `clipmesh-latency --wine` runs it under Wine"
    );
    std::process::ExitCode::from(2)
}
