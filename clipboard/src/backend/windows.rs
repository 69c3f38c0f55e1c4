//! Windows backend: the clipboard format listener, reading and writing the
//! Windows clipboard through `clipboard-win`.
//!
//! Two OS threads:
//!
//! - the **watcher** owns a `clipboard_win::Monitor` (a message-only window
//!   registered with `AddClipboardFormatListener`) and blocks in its message
//!   loop; each `WM_CLIPBOARDUPDATE` is a hint to re-read the clipboard,
//!   hash what it holds and report it unless it is our own write read back
//!   (the same [`OwnWrites`] as on X11). No polling: an idle clipboard costs
//!   no wake-ups.
//! - the **writer** takes [`Command`]s and puts items on the clipboard in
//!   one open/empty/set session. When it ends (cancelled, or every handle
//!   dropped) it drops the monitor's shutdown handle, which ends the
//!   watcher.
//!
//! Formats, read in this order of preference (one item per change):
//! `CF_HDROP` (a file list); `CF_UNICODETEXT` with the registered
//! "HTML Format" (CF_HTML, header parsed in [`cf_html`]) when present; the
//! registered "PNG" format, byte for byte, else `CF_DIBV5`/`CF_DIB`
//! converted to PNG ([`dib`]). Written: text as `CF_UNICODETEXT`; HTML as
//! CF_HTML plus its text alternative; images as "PNG" plus a `CF_DIB`;
//! file lists as `CF_HDROP`.
//!
//! Sensitive items are never read: [`markers`] lists the formats password
//! managers set. Items this module writes carry `CanUploadToCloudClipboard`
//! = 0 unless [`crate::ClipboardConfig::windows_cloud_clipboard`] is on, so
//! Windows' own cloud clipboard does not upload what the user chose to
//! sync end-to-end encrypted.

pub(crate) mod cf_html;
pub(crate) mod dib;
pub(crate) mod markers;

#[cfg(windows)]
pub(crate) use backend::spawn;

#[cfg(windows)]
mod backend {
    use super::{cf_html, dib, markers};
    use crate::dedupe::{content_hash, local_files_hash, OwnWrites, ReadItem, Verdict};
    use crate::event::now_ms;
    use crate::formats::ReadPlan;
    use crate::picture::{check_png, to_png_content, PNG_TARGET};
    use crate::{
        Capabilities, ClipboardConfig, ClipboardError, ClipboardHandle, Command, LocalEvent,
        APPLY_QUEUE, LOCAL_CHANGE_QUEUE,
    };
    use clipboard_win::{formats, options::NoClear, raw};
    use clipmesh_proto::ClipContent;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// How often opening the clipboard is tried before giving up (another
    /// program may hold it for a moment; clipboard-win waits between tries).
    const OPEN_ATTEMPTS: usize = 10;

    /// How often the watcher reads one update before it gives up on it,
    /// and the pause before the first retry (doubled each time): 2 + 4 + 8
    /// + 16 + 32 ms at most, so a retry that succeeds early costs little.
    const READ_ATTEMPTS: u32 = 6;
    const READ_RETRY: std::time::Duration = std::time::Duration::from_millis(2);

    fn backend_err(what: &str, e: impl std::fmt::Display) -> ClipboardError {
        ClipboardError::Backend(format!("{what}: {e}"))
    }

    /// Why reading an update failed.
    enum ReadError {
        /// A clipboard call failed: another program held the clipboard, or
        /// the owner of a delayed-rendered format did not render it in time
        /// (under Wine, `GetClipboardData` then fails with "Clipboard not
        /// open" while an item imported from the X selection is replaced).
        /// Worth another try.
        Os(ClipboardError),
        /// The item itself cannot be taken (too large, an image that does
        /// not convert): another read gives the same answer.
        Content(ClipboardError),
        /// The clipboard offered no format at all. An empty clipboard is
        /// legitimate (a program emptied it), but under Wine an update for
        /// an item imported from the X selection can arrive before its
        /// formats are listed, with no second update when they are: worth
        /// another look, then nothing to sync.
        Empty,
    }

    impl ReadError {
        fn os(what: &'static str) -> impl Fn(clipboard_win::ErrorCode) -> Self {
            move |e| Self::Os(backend_err(what, e))
        }

        /// The outcome once no more tries are left.
        fn give_up(self) -> Result<Option<ReadItem>, ClipboardError> {
            match self {
                Self::Os(e) | Self::Content(e) => Err(e),
                Self::Empty => Ok(None),
            }
        }
    }

    /// The ids of the registered formats this backend uses.
    #[derive(Clone, Copy, Debug)]
    struct Registered {
        html: u32,
        png: u32,
        cloud: u32,
    }

    impl Registered {
        fn get() -> Result<Self, ClipboardError> {
            let reg = |name: &str| {
                raw::register_format(name)
                    .map(u32::from)
                    .ok_or_else(|| ClipboardError::Backend(format!("cannot register {name}")))
            };
            Ok(Self {
                html: reg("HTML Format")?,
                png: reg("PNG")?,
                cloud: reg(markers::CLOUD)?,
            })
        }
    }

    /// Starts the watcher and writer threads.
    pub(crate) fn spawn(
        cfg: ClipboardConfig,
        cancel: CancellationToken,
    ) -> Result<(ClipboardHandle, mpsc::Receiver<LocalEvent>), ClipboardError> {
        let formats = Registered::get()?;
        let own_writes = Arc::new(Mutex::new(OwnWrites::default()));
        let (change_tx, change_rx) = mpsc::channel(LOCAL_CHANGE_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::channel(APPLY_QUEUE);
        let threads = tokio_util::task::TaskTracker::new();
        let watcher_token = threads.token();
        let writer_token = threads.token();
        threads.close();

        // The monitor's window belongs to the thread that created it, so
        // the watcher creates it and hands back the shutdown handle.
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let watch_dedupe = Arc::clone(&own_writes);
        let max_read = cfg.max_read_bytes();
        std::thread::Builder::new()
            .name("clipmesh-clip-watch".into())
            .spawn(move || {
                let mut monitor = match clipboard_win::Monitor::new() {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(backend_err("clipboard listener", e)));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(monitor.shutdown_channel()));
                Watcher {
                    formats,
                    own_writes: watch_dedupe,
                    tx: change_tx,
                    max_read,
                }
                .run(&mut monitor);
                drop(watcher_token);
            })
            .map_err(|e| backend_err("cannot start watcher thread", e))?;
        let shutdown = match ready_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ClipboardError::Stopped),
        };

        let writer = Writer {
            formats,
            own_writes,
            allow_cloud: cfg.windows_cloud_clipboard,
        };
        std::thread::Builder::new()
            .name("clipmesh-clip-writer".into())
            .spawn(move || {
                writer.run(cmd_rx, cancel);
                // Ends the watcher's message loop.
                drop(shutdown);
                drop(writer_token);
            })
            .map_err(|e| backend_err("cannot start writer thread", e))?;
        Ok((
            ClipboardHandle::new(
                cmd_tx,
                threads,
                Capabilities {
                    backend: "windows",
                    html: true,
                    images: true,
                    files: true,
                    primary: false,
                    sensitive_markers: markers::ALL,
                },
            ),
            change_rx,
        ))
    }

    struct Watcher {
        formats: Registered,
        own_writes: Arc<Mutex<OwnWrites>>,
        tx: mpsc::Sender<LocalEvent>,
        max_read: usize,
    }

    impl Watcher {
        fn run(self, monitor: &mut clipboard_win::Monitor) {
            tracing::debug!("clipboard format listener started");
            loop {
                match monitor.recv() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "clipboard listener failed");
                        break;
                    }
                }
                let item = match self.read_retrying() {
                    Ok(Some(item)) => item,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the clipboard");
                        continue;
                    }
                };
                let (hash, event) = item.into_event(now_ms());
                let verdict = self
                    .own_writes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .observe(hash);
                tracing::trace!(?verdict, "clipboard update");
                if verdict == Verdict::Emit && self.tx.blocking_send(event).is_err() {
                    break;
                }
            }
            tracing::debug!("clipboard watcher stopped");
        }

        /// Reads the bytes of `format` within the size bound.
        fn bytes(&self, format: u32) -> Result<Vec<u8>, ReadError> {
            let size = raw::size(format).map_or(0, usize::from);
            if size > self.max_read {
                return Err(ReadError::Content(ClipboardError::Backend(
                    "item too large to read".into(),
                )));
            }
            let mut out = Vec::with_capacity(size);
            raw::get_vec(format, &mut out).map_err(ReadError::os("read"))?;
            Ok(out)
        }

        /// [`Self::read`], tried again after a failed clipboard call or an
        /// update that lists no format, up to [`READ_ATTEMPTS`] times: each update is read once, so a read
        /// that fails for a moment would otherwise lose the item. Reading
        /// again always takes what the clipboard holds now, and a newer
        /// update that arrived meanwhile is deduplicated by its hash.
        fn read_retrying(&self) -> Result<Option<ReadItem>, ClipboardError> {
            let mut pause = READ_RETRY;
            let mut attempt = 1;
            loop {
                match self.read() {
                    Ok(item) => return Ok(item),
                    Err(ReadError::Os(e)) if attempt < READ_ATTEMPTS => {
                        tracing::trace!(error = %e, attempt, "clipboard read failed; trying again");
                    }
                    Err(ReadError::Empty) if attempt < READ_ATTEMPTS => {
                        tracing::trace!(attempt, "clipboard update with no formats; looking again");
                    }
                    Err(e) => return e.give_up(),
                }
                std::thread::sleep(pause);
                pause *= 2;
                attempt += 1;
            }
        }

        /// One item from the clipboard, `None` if it holds nothing to sync
        /// or is marked sensitive.
        fn read(&self) -> Result<Option<ReadItem>, ReadError> {
            let open = clipboard_win::Clipboard::new_attempts(OPEN_ATTEMPTS)
                .map_err(ReadError::os("open clipboard"))?;
            let available: Vec<u32> = raw::EnumFormats::new().collect();
            if available.is_empty() {
                return Err(ReadError::Empty);
            }
            let names: Vec<(String, u32)> = available
                .iter()
                .filter(|&&f| f >= 0xC000)
                .filter_map(|&f| raw::format_name_big(f).map(|n| (n, f)))
                .collect();
            let marker_value = |f: u32| raw::size(f).map(|_| self.bytes(f).unwrap_or_default());
            let present: Vec<(&str, Option<Vec<u8>>)> = names
                .iter()
                .filter(|(n, _)| markers::is_marker(n))
                .map(|(n, f)| (n.as_str(), marker_value(*f)))
                .collect();
            if markers::is_sensitive(&present) {
                // Close the clipboard before anything else: the owner of
                // the next item may be waiting to open it.
                drop(open);
                tracing::debug!("clipboard item marked sensitive: not read");
                return Ok(None);
            }
            let has = |f: u32| available.contains(&f);
            if has(formats::CF_HDROP) {
                let mut paths = Vec::new();
                raw::get_file_list_path(&mut paths).map_err(ReadError::os("file list"))?;
                return Ok((!paths.is_empty()).then_some(ReadItem::Files(paths)));
            }
            let text = if has(formats::CF_UNICODETEXT) {
                let mut out = Vec::new();
                raw::get_string(&mut out).map_err(ReadError::os("text"))?;
                Some(String::from_utf8_lossy(&out).into_owned())
            } else {
                None
            };
            if text.is_some() || has(self.formats.html) {
                let html = if has(self.formats.html) {
                    match cf_html::parse(&self.bytes(self.formats.html)?) {
                        Ok(h) => Some(h),
                        Err(e) => {
                            tracing::debug!(error = %e, "unreadable HTML Format; using the text");
                            None
                        }
                    }
                } else {
                    None
                };
                return Ok(ReadPlan::assemble(text, html).map(ReadItem::Content));
            }
            let image = if has(self.formats.png) {
                to_png_content(PNG_TARGET, self.bytes(self.formats.png)?)
            } else if has(formats::CF_DIBV5) {
                dib::dib_to_png(&self.bytes(formats::CF_DIBV5)?)
            } else if has(formats::CF_DIB) {
                dib::dib_to_png(&self.bytes(formats::CF_DIB)?)
            } else {
                return Ok(None);
            };
            match image {
                Ok(c) => Ok(Some(ReadItem::Content(c))),
                Err(e) => Err(ReadError::Content(ClipboardError::Backend(e.to_string()))),
            }
        }
    }

    struct Writer {
        formats: Registered,
        own_writes: Arc<Mutex<OwnWrites>>,
        allow_cloud: bool,
    }

    impl Writer {
        fn run(self, mut rx: mpsc::Receiver<Command>, cancel: CancellationToken) {
            let rt = match tokio::runtime::Builder::new_current_thread().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "clipboard writer could not start");
                    return;
                }
            };
            rt.block_on(async {
                loop {
                    let cmd = tokio::select! {
                        biased;
                        () = cancel.cancelled() => None,
                        cmd = rx.recv() => cmd,
                    };
                    let (res, done) = match cmd {
                        Some(Command::Apply { content, done }) => (self.apply(&content), done),
                        Some(Command::ApplyFiles { paths, done }) => {
                            (self.apply_files(&paths), done)
                        }
                        None => break,
                    };
                    if let Err(e) = &res {
                        tracing::warn!(error = %e, "could not set the clipboard");
                    }
                    let _ = done.send(res);
                }
            });
            tracing::debug!("clipboard writer stopped");
        }

        /// Opens and empties the clipboard, lets `set` add the formats, and
        /// marks the item for the cloud clipboard; the dedupe record comes
        /// first so the update we cause reads as an echo.
        fn session(
            &self,
            hash: clipmesh_proto::ContentHash,
            set: impl FnOnce() -> Result<(), ClipboardError>,
        ) -> Result<(), ClipboardError> {
            self.own_writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .applied(hash);
            let _open = clipboard_win::Clipboard::new_attempts(OPEN_ATTEMPTS)
                .map_err(|e| backend_err("open clipboard", e))?;
            raw::empty().map_err(|e| backend_err("empty clipboard", e))?;
            set()?;
            if !self.allow_cloud {
                raw::set_without_clear(self.formats.cloud, &0u32.to_ne_bytes())
                    .map_err(|e| backend_err("mark item", e))?;
            }
            Ok(())
        }

        fn apply(&self, content: &ClipContent) -> Result<(), ClipboardError> {
            let set_err = |e| backend_err("set clipboard", e);
            let hash = content_hash(content);
            match content {
                ClipContent::Text(t) => {
                    self.session(hash, || raw::set_string_with(t, NoClear).map_err(set_err))?
                }
                ClipContent::Html { html, alt_text } => self.session(hash, || {
                    raw::set_string_with(alt_text, NoClear).map_err(set_err)?;
                    raw::set_without_clear(self.formats.html, &cf_html::write(html))
                        .map_err(set_err)
                })?,
                ClipContent::Image { width, height, png } => {
                    check_png(*width, *height, png)
                        .map_err(|e| ClipboardError::Backend(e.to_string()))?;
                    let dib = dib::png_to_dib(png)
                        .ok_or_else(|| ClipboardError::Backend("cannot convert image".into()))?;
                    self.session(hash, || {
                        raw::set_without_clear(self.formats.png, png).map_err(set_err)?;
                        raw::set_without_clear(formats::CF_DIB, &dib).map_err(set_err)
                    })?
                }
                other => return Err(ClipboardError::UnsupportedContent(other.kind_name())),
            }
            tracing::trace!(
                kind = content.kind_name(),
                len = content.payload_len(),
                "clipboard set"
            );
            Ok(())
        }

        fn apply_files(&self, paths: &[PathBuf]) -> Result<(), ClipboardError> {
            let paths: Vec<PathBuf> = paths
                .iter()
                .filter_map(|p| std::path::absolute(p).ok())
                .collect();
            let strs: Vec<&str> = paths.iter().filter_map(|p| p.to_str()).collect();
            if strs.is_empty() || strs.len() != paths.len() {
                return Err(ClipboardError::Backend(
                    "empty file list or a path that is not Unicode".into(),
                ));
            }
            self.session(local_files_hash(&paths), || {
                raw::set_file_list_with(&strs, NoClear).map_err(|e| backend_err("set files", e))
            })?;
            tracing::trace!(count = paths.len(), "clipboard set to a file list");
            Ok(())
        }
    }
}
