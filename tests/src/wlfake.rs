//! A fake Wayland compositor that offers no data-control protocol: it
//! speaks just enough of the wire protocol (the registry's globals and the
//! answer to `wl_display.sync`) for a client to find out what is offered.
//! Real compositors without data-control (GNOME's, weston, cage) are not
//! all packaged for headless use, so the "no data-control" path is tested
//! against this one.

use anyhow::Result;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The globals the fake offers: a seat and a compositor, nothing else.
const GLOBALS: &[(&str, u32)] = &[("wl_compositor", 4), ("wl_seat", 7)];
/// Most connections served (each client connects once).
const MAX_CLIENTS: usize = 16;
/// How long one client may stay silent before it is dropped.
const CLIENT_IDLE: Duration = Duration::from_secs(30);

/// A running fake compositor, listening on `<dir>/<socket>`.
#[derive(Debug)]
pub struct FakeCompositor {
    /// The socket's directory (`XDG_RUNTIME_DIR`).
    pub dir: PathBuf,
    /// The socket name (`WAYLAND_DISPLAY`).
    pub socket: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeCompositor {
    /// Listens on `dir/wayland-fake` and serves clients on a thread.
    pub fn start(dir: &Path) -> Result<Self> {
        let socket = "wayland-fake".to_owned();
        let listener = UnixListener::bind(dir.join(&socket))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming().take(MAX_CLIENTS) {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let _ = serve(c);
                }
            }
        });
        Ok(Self {
            dir: dir.to_owned(),
            socket,
            stop,
            thread: Some(thread),
        })
    }

    /// The environment a client of this compositor needs.
    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        vec![
            ("WAYLAND_DISPLAY", self.socket.clone().into()),
            ("XDG_RUNTIME_DIR", self.dir.clone().into_os_string()),
        ]
    }
}

impl Drop for FakeCompositor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(self.dir.join(&self.socket));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn message(object: u32, opcode: u16, args: &[u8]) -> Vec<u8> {
    let size = u32::try_from(8 + args.len()).unwrap_or(u32::MAX);
    let mut m = Vec::with_capacity(8 + args.len());
    m.extend_from_slice(&object.to_ne_bytes());
    m.extend_from_slice(&((size << 16) | u32::from(opcode)).to_ne_bytes());
    m.extend_from_slice(args);
    m
}

fn string_arg(s: &str, out: &mut Vec<u8>) {
    let len = u32::try_from(s.len() + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// Serves one client until it hangs up: `wl_display.get_registry` gets the
/// globals, `wl_display.sync` gets `done`; everything else is ignored.
fn serve(mut c: UnixStream) -> std::io::Result<()> {
    c.set_read_timeout(Some(CLIENT_IDLE))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..1000 {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        while buf.len() >= 8 {
            let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
            let (object, head) = (word(0), word(4));
            let size = (head >> 16) as usize;
            let opcode = head & 0xffff;
            if size < 8 || buf.len() < size {
                break;
            }
            let new_id = if size >= 12 { word(8) } else { 0 };
            match (object, opcode) {
                // wl_display.get_registry(new_id)
                (1, 1) => {
                    for (name, (iface, version)) in GLOBALS.iter().enumerate() {
                        let mut args = (name as u32 + 1).to_ne_bytes().to_vec();
                        string_arg(iface, &mut args);
                        args.extend_from_slice(&version.to_ne_bytes());
                        out.extend(message(new_id, 0, &args));
                    }
                }
                // wl_display.sync(new_id): callback.done, then delete_id.
                (1, 0) => {
                    out.extend(message(new_id, 0, &0u32.to_ne_bytes()));
                    out.extend(message(1, 1, &new_id.to_ne_bytes()));
                }
                _ => {}
            }
            buf.drain(..size);
        }
        c.write_all(&out)?;
    }
    Ok(())
}
