//! The macOS pasteboard watcher's logic (sans-IO), and the small
//! [`Pasteboard`] trait the AppKit backend (`macos.rs`) and the tests'
//! fake implement.
//!
//! macOS has no pasteboard change event. The only cheap signal is
//! `NSPasteboard.changeCount`, a number the system bumps whenever any app
//! takes ownership of the general pasteboard. So the backend polls it, every
//! [`crate::DEFAULT_POLL_INTERVAL`] unless configured otherwise, and reads nothing
//! else until it moves. [`Watcher`] decides everything; a driver only
//! carries out its requests:
//!
//! - `handle_timeout(now)` at [`Watcher::poll_timeout`] asks for the count
//!   ([`Output::ReadCount`]); `handle_count` gets the answer. The first count
//!   is a baseline (what was copied before clipmesh started is not sent).
//! - A count equal to the last one handled: nothing to do, nothing read.
//!   A count our own write produced ([`Watcher::handle_applied`]): an echo,
//!   skipped without reading a byte.
//! - A new count: [`Output::ReadTypes`], the type identifiers of the items
//!   (no content). [`Watcher::handle_types`] skips the item if any type is a
//!   sensitive marker (`clipboard/sensitive.rs`: nspasteboard.org's
//!   concealed, transient and auto-generated types, 1Password's and
//!   Keyboard Maestro's) or if nothing syncable is offered, else asks for one
//!   [`Output::Read`] of the formats [`Plan::from_types`] chose.
//! - [`Watcher::handle_read`] gets the content and the count read again
//!   right after: if the pasteboard changed during the read the result is
//!   dropped (the next poll sees the newer item). Otherwise the content goes
//!   through the same [`OwnWrites`] as on Linux (our own item read back is an
//!   echo) and every other item comes out as [`Output::Emit`] (a repeat of
//!   the previous item is the device engine's to drop).
//!
//! The contract, as in every sans-IO core of clipmesh: feed inputs with
//! `handle_*`, drain [`Watcher::poll_output`] until it returns `None`, and
//! call `handle_timeout` again at [`Watcher::poll_timeout`]. [`poll`] and
//! [`apply_content`] are that loop against a [`Pasteboard`].
//!
//! **Invariant:** no pasteboard content is read unless the count moved to a
//! value that is not our own write and the types carry no sensitive marker.

use crate::dedupe::{content_hash, local_files_hash, OwnWrites, ReadItem, Verdict};
use crate::formats::{decode_html, decode_text, ReadPlan};
use crate::picture::{check_png, to_png_content};
use crate::sensitive::{classify, Sensitivity};
use crate::{ClipboardError, LocalEvent};
use clipmesh_proto::{ClipContent, ContentHash};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Plain text (UTF-8).
pub(crate) const UTI_TEXT: &str = "public.utf8-plain-text";
/// HTML.
pub(crate) const UTI_HTML: &str = "public.html";
/// PNG image.
pub(crate) const UTI_PNG: &str = "public.png";
/// TIFF image (what most Mac apps put on the pasteboard); converted to PNG.
pub(crate) const UTI_TIFF: &str = "public.tiff";
/// A file URL, one per pasteboard item.
pub(crate) const UTI_FILE_URL: &str = "public.file-url";

/// Which image representation to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Image {
    /// `public.png`, passed through byte for byte.
    Png,
    /// `public.tiff`, converted to PNG.
    Tiff,
}

impl Image {
    /// The pasteboard type.
    pub(crate) fn uti(self) -> &'static str {
        match self {
            Self::Png => UTI_PNG,
            Self::Tiff => UTI_TIFF,
        }
    }

    /// The MIME name `clipboard/picture.rs` knows the format by.
    fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Tiff => "image/tiff",
        }
    }
}

/// Which representations of the current item to read. One item becomes one
/// event, chosen in the same order as on Linux (`clipboard/formats.rs`):
/// files, then text and/or HTML when text is offered, then an image, then
/// HTML alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The file URLs (Finder also offers the names as text and an icon).
    Files,
    /// An image.
    Image(Image),
    /// HTML and/or text: `html` when `public.html` is offered, `text` when
    /// `public.utf8-plain-text` is (HTML's text alternative).
    Text {
        /// Read `public.html`.
        html: bool,
        /// Read `public.utf8-plain-text`.
        text: bool,
    },
}

impl Plan {
    /// Picks what to read from the offered types; `None` when nothing this
    /// build syncs is offered.
    pub(crate) fn from_types<S: AsRef<str>>(types: &[S]) -> Option<Self> {
        let has = |uti: &str| types.iter().any(|t| t.as_ref() == uti);
        let text = has(UTI_TEXT);
        let html = has(UTI_HTML);
        if has(UTI_FILE_URL) {
            Some(Self::Files)
        } else if text {
            Some(Self::Text { html, text })
        } else if has(UTI_PNG) {
            Some(Self::Image(Image::Png))
        } else if has(UTI_TIFF) {
            Some(Self::Image(Image::Tiff))
        } else if html {
            Some(Self::Text { html, text })
        } else {
            None
        }
    }
}

/// Why an item was not read or not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Skip {
    /// The count is the one our own write produced.
    OwnWrite,
    /// A sensitive marker is among the types.
    Sensitive,
    /// No type this build syncs.
    Unsupported,
    /// The pasteboard changed while it was read; the newer item follows.
    ChangedDuringRead,
    /// Nothing usable was read (empty, too large, undecodable, or access
    /// denied by the user).
    Empty,
    /// The content is the item we applied last (hash echo).
    Echo,
}

/// What the watcher wants done next.
#[derive(Debug)]
pub(crate) enum Output {
    /// Read `changeCount` and call [`Watcher::handle_count`].
    ReadCount,
    /// Read the items' types (no content) and call [`Watcher::handle_types`].
    ReadTypes {
        /// The count the types belong to.
        count: isize,
    },
    /// Read the content in `plan`, then the count again, and call
    /// [`Watcher::handle_read`].
    Read {
        /// The count the types were read at.
        count: isize,
        /// What to read.
        plan: Plan,
    },
    /// A new local item for the daemon.
    Emit(ReadItem),
    /// An item was skipped (for logs and tests).
    Skipped {
        /// The count of the skipped item.
        count: isize,
        /// Why.
        reason: Skip,
    },
}

/// The watcher's state.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// Time between two reads of the count.
    interval: Duration,
    /// When the count is read next.
    next_poll: Instant,
    /// The count last handled (baseline, read, skipped or our own write):
    /// the same count again means nothing happened.
    seen: Option<isize>,
    /// The count our last write produced, until another count is seen.
    own: Option<isize>,
    /// Our own writes read back under another count, by content (shared
    /// logic with Linux).
    dedupe: OwnWrites,
    /// Requests not yet drained by the driver.
    out: VecDeque<Output>,
}

impl Watcher {
    /// A watcher that reads the count first at `now` (the baseline), then
    /// every `interval` ([`crate::ClipboardConfig::poll_interval`]; never
    /// less than a millisecond, so a zero cannot spin).
    pub(crate) fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            next_poll: now,
            seen: None,
            own: None,
            dedupe: OwnWrites::default(),
            out: VecDeque::new(),
        }
    }

    /// The poll interval in use.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// When to call [`Watcher::handle_timeout`] next.
    pub(crate) fn poll_timeout(&self) -> Instant {
        self.next_poll
    }

    /// Time passes: asks for the count when a poll is due. A late call
    /// (the thread was busy writing, or the Mac slept) does not catch up
    /// with missed polls: the next one is an interval after `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_poll {
            self.out.push_back(Output::ReadCount);
            self.next_poll = now + self.interval;
        }
    }

    /// The count just read.
    pub(crate) fn handle_count(&mut self, count: isize) {
        let Some(seen) = self.seen else {
            // Baseline: what was there before we started is not news.
            self.seen = Some(count);
            return;
        };
        if count == seen {
            return;
        }
        self.seen = Some(count);
        if self.own == Some(count) {
            self.out.push_back(Output::Skipped {
                count,
                reason: Skip::OwnWrite,
            });
            return;
        }
        self.own = None;
        self.out.push_back(Output::ReadTypes { count });
    }

    /// The types of the items at `count` (the union over all items).
    pub(crate) fn handle_types<S: AsRef<str>>(&mut self, count: isize, types: &[S]) {
        if classify(types) != Sensitivity::Public {
            // A KDE hint on a Mac has no readable value here: fail closed.
            self.out.push_back(Output::Skipped {
                count,
                reason: Skip::Sensitive,
            });
            return;
        }
        match Plan::from_types(types) {
            Some(plan) => self.out.push_back(Output::Read { count, plan }),
            None => self.out.push_back(Output::Skipped {
                count,
                reason: Skip::Unsupported,
            }),
        }
    }

    /// What [`Output::Read`] at `count` gave (`None`: nothing usable), and
    /// the count read right after it.
    pub(crate) fn handle_read(&mut self, count: isize, count_after: isize, item: Option<ReadItem>) {
        if count_after != count {
            // Another copy happened meanwhile: this read may mix two items.
            // Leave `seen` at `count`, so the next poll handles the new one.
            self.out.push_back(Output::Skipped {
                count,
                reason: Skip::ChangedDuringRead,
            });
            return;
        }
        let Some(item) = item else {
            self.out.push_back(Output::Skipped {
                count,
                reason: Skip::Empty,
            });
            return;
        };
        let hash = match &item {
            ReadItem::Content(c) => content_hash(c),
            ReadItem::Files(paths) => local_files_hash(paths),
        };
        match self.dedupe.observe(hash) {
            Verdict::Emit => self.out.push_back(Output::Emit(item)),
            Verdict::Echo => self.out.push_back(Output::Skipped {
                count,
                reason: Skip::Echo,
            }),
        }
    }

    /// We wrote an item whose content hashes to `hash`, and the count read
    /// right after the write is `count`: that count is ours, and so is the
    /// content should it be read back anyway.
    pub(crate) fn handle_applied(&mut self, count: isize, hash: ContentHash) {
        self.dedupe.applied(hash);
        self.own = Some(count);
        self.seen = Some(count);
    }

    /// The next request, if any.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
}

/// What the watcher and writer need from a pasteboard: AppKit's general
/// pasteboard on a Mac (`macos.rs`), a recording fake in tests.
pub(crate) trait Pasteboard {
    /// `changeCount`.
    fn change_count(&mut self) -> isize;
    /// The type identifiers offered, over all items (no content is read).
    fn types(&mut self) -> Vec<String>;
    /// The bytes of type `uti` of the first item offering it; `Ok(None)`
    /// when there are none, `Err(len)` when they are longer than `max`.
    fn data(&mut self, uti: &str, max: usize) -> Result<Option<Vec<u8>>, usize>;
    /// The local paths of the file URLs on the pasteboard.
    fn file_paths(&mut self) -> Vec<PathBuf>;
    /// Replaces the contents with `item`; returns the count after writing.
    fn write(&mut self, item: &Write<'_>) -> Result<isize, String>;
}

/// An item to put on the pasteboard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write<'a> {
    /// `public.utf8-plain-text`.
    Text(&'a str),
    /// `public.html` plus its text alternative as `public.utf8-plain-text`.
    Html {
        /// The HTML.
        html: &'a str,
        /// The plain-text alternative.
        alt_text: &'a str,
    },
    /// `public.png`.
    Png(&'a [u8]),
    /// One `public.file-url` item per path.
    Files(&'a [PathBuf]),
}

/// Reads what `plan` names; `None` when nothing usable is there.
fn read<P: Pasteboard>(pb: &mut P, plan: Plan, max: usize) -> Option<ReadItem> {
    let data = |pb: &mut P, uti: &str| match pb.data(uti, max) {
        Ok(d) => d,
        Err(len) => {
            tracing::debug!(
                len,
                max,
                "pasteboard item larger than the read bound; skipped"
            );
            None
        }
    };
    match plan {
        Plan::Files => {
            let paths = pb.file_paths();
            (!paths.is_empty()).then_some(ReadItem::Files(paths))
        }
        Plan::Image(image) => {
            let bytes = data(pb, image.uti())?;
            match to_png_content(image.mime(), bytes) {
                Ok(c) => Some(ReadItem::Content(c)),
                Err(e) => {
                    tracing::debug!(error = %e, "pasteboard image skipped");
                    None
                }
            }
        }
        Plan::Text { html, text } => {
            let html = if html {
                data(pb, UTI_HTML).map(decode_html)
            } else {
                None
            };
            let text = if text {
                data(pb, UTI_TEXT).map(|b| decode_text(UTI_TEXT, b))
            } else {
                None
            };
            ReadPlan::assemble(text, html).map(ReadItem::Content)
        }
    }
}

/// One turn of the watcher at `now` against `pb`: reads what the watcher
/// asks for and returns the new local items, stamped `at_ms`.
pub(crate) fn poll<P: Pasteboard>(
    pb: &mut P,
    w: &mut Watcher,
    now: Instant,
    at_ms: u64,
    max_read: usize,
) -> Vec<LocalEvent> {
    w.handle_timeout(now);
    let mut events = Vec::new();
    while let Some(out) = w.poll_output() {
        match out {
            Output::ReadCount => {
                let count = pb.change_count();
                w.handle_count(count);
            }
            Output::ReadTypes { count } => {
                let types = pb.types();
                w.handle_types(count, &types);
            }
            Output::Read { count, plan } => {
                let item = read(pb, plan, max_read);
                let after = pb.change_count();
                w.handle_read(count, after, item);
            }
            Output::Emit(item) => events.push(item.into_event(at_ms).1),
            Output::Skipped { count, reason } => {
                tracing::trace!(count, ?reason, "pasteboard change skipped");
            }
        }
    }
    events
}

/// HTML as written: a charset declaration is added when the HTML has
/// non-ASCII text and declares none, since some Mac apps read
/// `public.html` without one as Latin-1.
pub(crate) fn html_for_pasteboard(html: &str) -> std::borrow::Cow<'_, str> {
    if html.is_ascii() || html.to_ascii_lowercase().contains("charset") {
        std::borrow::Cow::Borrowed(html)
    } else {
        std::borrow::Cow::Owned(format!("<meta charset=\"utf-8\">{html}"))
    }
}

/// Puts a remote item on the pasteboard and tells the watcher, so neither
/// the count nor the content is reported back as a local copy.
pub(crate) fn apply_content<P: Pasteboard>(
    pb: &mut P,
    w: &mut Watcher,
    content: &ClipContent,
) -> Result<(), ClipboardError> {
    let (count, hash) = match content {
        ClipContent::Text(t) => (pb.write(&Write::Text(t)), content_hash(content)),
        ClipContent::Html { html, alt_text } => {
            let written = html_for_pasteboard(html);
            let count = pb.write(&Write::Html {
                html: &written,
                alt_text,
            });
            let hash = content_hash(&ClipContent::Html {
                html: written.into_owned(),
                alt_text: alt_text.clone(),
            });
            (count, hash)
        }
        ClipContent::Image { width, height, png } => {
            // A peer's item is untrusted: only a PNG of the stated size is
            // offered as public.png.
            check_png(*width, *height, png).map_err(|e| ClipboardError::Backend(e.to_string()))?;
            (pb.write(&Write::Png(png)), content_hash(content))
        }
        other => return Err(ClipboardError::UnsupportedContent(other.kind_name())),
    };
    let count = count.map_err(ClipboardError::Backend)?;
    w.handle_applied(count, hash);
    Ok(())
}

/// Puts local files on the pasteboard as file URLs (received files, after
/// download) and tells the watcher.
pub(crate) fn apply_files<P: Pasteboard>(
    pb: &mut P,
    w: &mut Watcher,
    paths: &[PathBuf],
) -> Result<(), ClipboardError> {
    let count = pb
        .write(&Write::Files(paths))
        .map_err(ClipboardError::Backend)?;
    w.handle_applied(count, local_files_hash(paths));
    Ok(())
}

/// `NSPasteboard.accessBehavior` (macOS 15.4 and later): what happens when
/// clipmesh reads the general pasteboard without a user paste.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Never asked yet: the first programmatic read shows the alert, after
    /// which the state becomes [`Access::Ask`].
    Default,
    /// The system asks the user on programmatic reads.
    Ask,
    /// The user allowed clipmesh in System Settings: no alerts.
    AlwaysAllow,
    /// The user denied clipmesh: reads give nothing, nothing is synced from
    /// this Mac (items received are still applied).
    AlwaysDeny,
    /// Older macOS (no such property) or a value newer than this build:
    /// reads work as they always did.
    Unrestricted,
}

impl Access {
    /// From the raw `NSPasteboardAccessBehavior` value; `None` when the
    /// property does not exist (before macOS 15.4).
    pub(crate) fn from_raw(raw: Option<isize>) -> Self {
        match raw {
            Some(0) => Self::Default,
            Some(1) => Self::Ask,
            Some(2) => Self::AlwaysAllow,
            Some(3) => Self::AlwaysDeny,
            _ => Self::Unrestricted,
        }
    }

    /// What to tell the user at start, if anything.
    pub(crate) fn notice(self) -> Option<&'static str> {
        match self {
            Self::Default | Self::Ask => Some(
                "macOS asks before clipmesh reads what you copy; allow clipmesh under \
                 System Settings > Privacy & Security to sync without alerts",
            ),
            Self::AlwaysDeny => Some(
                "pasteboard access for clipmesh is denied in System Settings > Privacy & \
                 Security; copies on this Mac are not synced",
            ),
            Self::AlwaysAllow | Self::Unrestricted => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_POLL_INTERVAL, MAX_POLL_INTERVAL, MIN_POLL_INTERVAL};

    /// One call the watcher or writer made.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Call {
        Count,
        Types,
        Data(String),
        Files,
        Write,
    }

    /// A pasteboard in memory that records every call, so the tests can
    /// say what was read, not only what came out.
    #[derive(Default)]
    struct FakePasteboard {
        count: isize,
        /// One map of type → bytes (the first item), and file paths.
        data: Vec<(String, Vec<u8>)>,
        files: Vec<PathBuf>,
        calls: Vec<Call>,
        /// Bump the count during the next content read (another app copies).
        copy_during_read: bool,
    }

    impl FakePasteboard {
        /// Another app copies an item with these representations.
        fn copy(&mut self, reps: &[(&str, &[u8])]) {
            self.count += 1;
            self.data = reps
                .iter()
                .map(|(t, b)| ((*t).to_owned(), b.to_vec()))
                .collect();
            self.files.clear();
        }

        fn copy_files(&mut self, paths: &[&str]) {
            self.copy(&[(UTI_FILE_URL, b"file:///.file/id=1"), (UTI_TEXT, b"name")]);
            self.files = paths.iter().map(PathBuf::from).collect();
        }

        fn content_reads(&self) -> Vec<Call> {
            self.calls
                .iter()
                .filter(|c| matches!(c, Call::Data(_) | Call::Files))
                .cloned()
                .collect()
        }

        fn take_calls(&mut self) -> Vec<Call> {
            std::mem::take(&mut self.calls)
        }
    }

    impl Pasteboard for FakePasteboard {
        fn change_count(&mut self) -> isize {
            self.calls.push(Call::Count);
            self.count
        }

        fn types(&mut self) -> Vec<String> {
            self.calls.push(Call::Types);
            self.data.iter().map(|(t, _)| t.clone()).collect()
        }

        fn data(&mut self, uti: &str, max: usize) -> Result<Option<Vec<u8>>, usize> {
            self.calls.push(Call::Data(uti.to_owned()));
            if std::mem::take(&mut self.copy_during_read) {
                self.count += 1;
            }
            match self.data.iter().find(|(t, _)| t == uti) {
                Some((_, b)) if b.len() > max => Err(b.len()),
                Some((_, b)) => Ok(Some(b.clone())),
                None => Ok(None),
            }
        }

        fn file_paths(&mut self) -> Vec<PathBuf> {
            self.calls.push(Call::Files);
            self.files.clone()
        }

        fn write(&mut self, item: &Write<'_>) -> Result<isize, String> {
            self.calls.push(Call::Write);
            self.count += 1;
            self.files.clear();
            self.data = match *item {
                Write::Text(t) => vec![(UTI_TEXT.into(), t.as_bytes().to_vec())],
                Write::Html { html, alt_text } => vec![
                    (UTI_HTML.into(), html.as_bytes().to_vec()),
                    (UTI_TEXT.into(), alt_text.as_bytes().to_vec()),
                ],
                Write::Png(png) => vec![(UTI_PNG.into(), png.to_vec())],
                Write::Files(paths) => {
                    self.files = paths.to_vec();
                    vec![(UTI_FILE_URL.into(), b"file:///x".to_vec())]
                }
            };
            Ok(self.count)
        }
    }

    const MAX: usize = 1 << 20;

    /// A started watcher (baseline taken) and its clock.
    fn started(pb: &mut FakePasteboard) -> (Watcher, Instant) {
        let t0 = Instant::now();
        let mut w = Watcher::new(DEFAULT_POLL_INTERVAL, t0);
        assert!(poll(pb, &mut w, t0, 0, MAX).is_empty());
        (w, t0)
    }

    /// The watcher's next turn, at its own deadline.
    fn next(pb: &mut FakePasteboard, w: &mut Watcher) -> Vec<LocalEvent> {
        next_at(pb, w, 0, MAX)
    }

    fn next_at(
        pb: &mut FakePasteboard,
        w: &mut Watcher,
        at_ms: u64,
        max: usize,
    ) -> Vec<LocalEvent> {
        let now = w.poll_timeout();
        poll(pb, w, now, at_ms, max)
    }

    fn texts(events: &[LocalEvent]) -> Vec<ClipContent> {
        events
            .iter()
            .map(|e| match e {
                LocalEvent::Clip(c) => c.content.clone(),
                LocalEvent::Files(f) => panic!("unexpected file list {f:?}"),
            })
            .collect()
    }

    fn png_1x1() -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(1, 1, image::Rgba([1, 2, 3, 255]));
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode a 1x1 PNG");
        out
    }

    #[test]
    fn polls_on_the_interval_and_reads_only_the_count_while_idle() {
        let mut pb = FakePasteboard::default();
        let (mut w, t0) = started(&mut pb);
        assert_eq!(pb.take_calls(), vec![Call::Count]);
        assert_eq!(w.poll_timeout(), t0 + DEFAULT_POLL_INTERVAL);
        // Before the deadline: nothing at all.
        assert!(poll(&mut pb, &mut w, t0 + Duration::from_millis(100), 0, MAX).is_empty());
        assert_eq!(pb.take_calls(), vec![]);
        // A minute of idle polls: one count read each, nothing else.
        let mut now = t0;
        for _ in 0..240 {
            now = w.poll_timeout();
            assert!(poll(&mut pb, &mut w, now, 0, MAX).is_empty());
        }
        assert_eq!(now, t0 + Duration::from_secs(60));
        let calls = pb.take_calls();
        assert_eq!(calls.len(), 240);
        assert!(calls.iter().all(|c| *c == Call::Count));
    }

    #[test]
    fn a_late_turn_does_not_catch_up_missed_polls() {
        let mut pb = FakePasteboard::default();
        let (mut w, t0) = started(&mut pb);
        let late = t0 + Duration::from_secs(10);
        poll(&mut pb, &mut w, late, 0, MAX);
        assert_eq!(w.poll_timeout(), late + DEFAULT_POLL_INTERVAL);
        assert_eq!(pb.take_calls(), vec![Call::Count, Call::Count]);
    }

    #[test]
    fn interval_is_configurable_within_bounds() {
        let t0 = Instant::now();
        let cfg = |ms| crate::ClipboardConfig {
            poll_interval: Some(Duration::from_millis(ms)),
            ..Default::default()
        };
        assert_eq!(
            Watcher::new(cfg(500).poll_interval(), t0).interval(),
            Duration::from_millis(500)
        );
        assert_eq!(
            Watcher::new(cfg(0).poll_interval(), t0).interval(),
            MIN_POLL_INTERVAL
        );
        assert_eq!(
            Watcher::new(cfg(3_600_000).poll_interval(), t0).interval(),
            MAX_POLL_INTERVAL
        );
        // A 500 ms interval halves the idle reads.
        let mut pb = FakePasteboard::default();
        let mut w = Watcher::new(cfg(500).poll_interval(), t0);
        let mut now = t0;
        while now < t0 + Duration::from_secs(60) {
            poll(&mut pb, &mut w, now, 0, MAX);
            now = w.poll_timeout();
        }
        assert_eq!(pb.take_calls().len(), 120);
    }

    #[test]
    fn what_was_there_at_start_is_not_sent() {
        let mut pb = FakePasteboard::default();
        pb.copy(&[(UTI_TEXT, b"old")]);
        let (_w, _t0) = started(&mut pb);
        assert_eq!(pb.content_reads(), vec![]);
    }

    #[test]
    fn a_count_change_reads_types_then_the_chosen_format() {
        let mut pb = FakePasteboard::default();
        let (mut w, t0) = started(&mut pb);
        pb.take_calls();
        pb.copy(&[(UTI_TEXT, b"hello")]);
        let ev = next_at(&mut pb, &mut w, 7, MAX);
        assert_eq!(texts(&ev), vec![ClipContent::Text("hello".into())]);
        match &ev[0] {
            LocalEvent::Clip(c) => assert_eq!(c.at_ms, 7),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pb.take_calls(),
            vec![
                Call::Count,
                Call::Types,
                Call::Data(UTI_TEXT.into()),
                Call::Count
            ]
        );
        // Unchanged since: the next poll reads the count only.
        assert!(poll(&mut pb, &mut w, t0 + Duration::from_secs(1), 0, MAX).is_empty());
        assert_eq!(pb.take_calls(), vec![Call::Count]);
    }

    #[test]
    fn sensitive_items_are_never_read() {
        for marker in [
            "org.nspasteboard.ConcealedType",
            "org.nspasteboard.TransientType",
            "org.nspasteboard.AutoGeneratedType",
            "com.agilebits.onepassword",
            "de.petermaurer.TransientPasteboardType",
        ] {
            let mut pb = FakePasteboard::default();
            let (mut w, _) = started(&mut pb);
            pb.copy(&[(UTI_TEXT, b"hunter2"), (marker, b"")]);
            assert!(next(&mut pb, &mut w).is_empty());
            assert_eq!(pb.content_reads(), vec![], "{marker}");
            // A later ordinary copy is synced again.
            pb.copy(&[(UTI_TEXT, b"public")]);
            let ev = next(&mut pb, &mut w);
            assert_eq!(texts(&ev), vec![ClipContent::Text("public".into())]);
        }
    }

    #[test]
    fn unsupported_types_are_not_read() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[("com.adobe.pdf", b"%PDF"), ("public.rtf", b"{\\rtf1}")]);
        assert!(next(&mut pb, &mut w).is_empty());
        assert_eq!(pb.content_reads(), vec![]);
    }

    #[test]
    fn type_choice_follows_the_linux_order() {
        let p = |t: &[&str]| Plan::from_types(t);
        assert_eq!(
            p(&[UTI_TEXT, UTI_FILE_URL, UTI_TIFF]),
            Some(Plan::Files),
            "Finder: names as text and an icon besides the file URLs"
        );
        assert_eq!(
            p(&[UTI_HTML, UTI_TEXT, UTI_TIFF, "public.rtf"]),
            Some(Plan::Text {
                html: true,
                text: true
            }),
            "spreadsheet cells: text and HTML, not the picture"
        );
        assert_eq!(p(&[UTI_TIFF, UTI_PNG]), Some(Plan::Image(Image::Png)));
        assert_eq!(
            p(&[UTI_TIFF, UTI_HTML]),
            Some(Plan::Image(Image::Tiff)),
            "a browser's copy image"
        );
        assert_eq!(
            p(&[UTI_HTML]),
            Some(Plan::Text {
                html: true,
                text: false
            })
        );
        assert_eq!(
            p(&[UTI_TEXT]),
            Some(Plan::Text {
                html: false,
                text: true
            })
        );
        assert_eq!(p(&["public.rtf"]), None);
    }

    #[test]
    fn html_comes_with_its_text_alternative() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[(UTI_HTML, b"<b>hi</b>"), (UTI_TEXT, b"hi")]);
        let ev = next(&mut pb, &mut w);
        assert_eq!(
            texts(&ev),
            vec![ClipContent::Html {
                html: "<b>hi</b>".into(),
                alt_text: "hi".into()
            }]
        );
        // HTML alone gets a rendered alternative.
        pb.copy(&[(UTI_HTML, b"<i>x &amp; y</i>")]);
        let ev = next(&mut pb, &mut w);
        assert_eq!(
            texts(&ev),
            vec![ClipContent::Html {
                html: "<i>x &amp; y</i>".into(),
                alt_text: "x & y".into()
            }]
        );
    }

    #[test]
    fn png_passes_through_and_tiff_becomes_png() {
        let png = png_1x1();
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[(UTI_PNG, &png), (UTI_TIFF, b"not read")]);
        let ev = next(&mut pb, &mut w);
        assert_eq!(
            texts(&ev),
            vec![ClipContent::Image {
                width: 1,
                height: 1,
                png: png.clone()
            }]
        );
        assert!(!pb.content_reads().contains(&Call::Data(UTI_TIFF.into())));

        let img = image::RgbaImage::from_pixel(2, 3, image::Rgba([9, 8, 7, 255]));
        let mut tiff = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut tiff),
            image::ImageFormat::Tiff,
        )
        .expect("encode a TIFF");
        pb.copy(&[(UTI_TIFF, &tiff)]);
        let ev = next(&mut pb, &mut w);
        match &texts(&ev)[..] {
            [ClipContent::Image { width, height, png }] => {
                assert_eq!((*width, *height), (2, 3));
                let back = image::load_from_memory_with_format(png, image::ImageFormat::Png)
                    .expect("the converted image is a PNG")
                    .into_rgba8();
                assert_eq!(back, img);
            }
            other => panic!("{other:?}"),
        }
        // A broken image is skipped, not an error.
        pb.copy(&[(UTI_PNG, b"\x89PNG broken")]);
        assert!(next(&mut pb, &mut w).is_empty());
    }

    #[test]
    fn file_urls_become_a_file_list() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy_files(&["/Users/a/x.txt", "/Users/a/dir"]);
        let ev = next(&mut pb, &mut w);
        match &ev[..] {
            [LocalEvent::Files(f)] => assert_eq!(
                f.paths,
                vec![
                    PathBuf::from("/Users/a/x.txt"),
                    PathBuf::from("/Users/a/dir")
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(pb.content_reads(), vec![Call::Files]);
    }

    #[test]
    fn items_over_the_read_bound_are_skipped() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[(UTI_TEXT, &[b'a'; 100])]);
        assert!(next_at(&mut pb, &mut w, 0, 99).is_empty());
        pb.copy(&[(UTI_TEXT, &[b'a'; 99])]);
        assert_eq!(next_at(&mut pb, &mut w, 0, 99).len(), 1);
    }

    #[test]
    fn our_own_write_is_not_read_back() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.take_calls();
        apply_content(&mut pb, &mut w, &ClipContent::Text("remote".into())).expect("apply");
        assert_eq!(pb.take_calls(), vec![Call::Write]);
        assert!(next(&mut pb, &mut w).is_empty());
        assert_eq!(pb.take_calls(), vec![Call::Count], "no types, no content");

        let png = png_1x1();
        let image = ClipContent::Image {
            width: 1,
            height: 1,
            png,
        };
        apply_content(&mut pb, &mut w, &image).expect("apply");
        let html = ClipContent::Html {
            html: "<p>é</p>".into(),
            alt_text: "é".into(),
        };
        apply_content(&mut pb, &mut w, &html).expect("apply");
        apply_files(
            &mut pb,
            &mut w,
            &[PathBuf::from("/Users/a/Downloads/clipmesh/f")],
        )
        .expect("apply");
        pb.take_calls();
        assert!(next(&mut pb, &mut w).is_empty());
        assert_eq!(pb.take_calls(), vec![Call::Count]);

        // The user copies something else: synced as usual.
        pb.copy(&[(UTI_TEXT, b"local")]);
        let ev = next(&mut pb, &mut w);
        assert_eq!(texts(&ev), vec![ClipContent::Text("local".into())]);
    }

    #[test]
    fn our_item_read_back_under_another_count_is_an_echo() {
        // An app re-asserts our item (a clipboard manager restoring it, say):
        // the count is new, the content is ours.
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        let html = ClipContent::Html {
            html: "<p>é</p>".into(),
            alt_text: "é".into(),
        };
        apply_content(&mut pb, &mut w, &html).expect("apply");
        let written = pb.data.clone();
        pb.count += 1;
        pb.data = written;
        pb.take_calls();
        assert!(next(&mut pb, &mut w).is_empty());
        assert!(!pb.content_reads().is_empty(), "read, then recognised");
        // Copying the same text again later is a real copy only after
        // something else was seen in between.
        pb.copy(&[(UTI_TEXT, b"other")]);
        assert_eq!(next(&mut pb, &mut w).len(), 1);
    }

    #[test]
    fn an_item_replaced_during_the_read_is_dropped_and_the_new_one_read() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[(UTI_TEXT, b"first")]);
        pb.copy_during_read = true;
        assert!(next(&mut pb, &mut w).is_empty());
        // The count moved during the read: the next poll reads again.
        let ev = next(&mut pb, &mut w);
        assert_eq!(texts(&ev), vec![ClipContent::Text("first".into())]);
    }

    #[test]
    fn every_change_is_reported_and_a_repeat_is_left_to_the_engine() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[(UTI_TEXT, b"a")]);
        assert_eq!(next(&mut pb, &mut w).len(), 1);
        // The same content under a new count: reported; the device engine
        // (the client's sync.rs) finds it unchanged.
        pb.copy(&[(UTI_TEXT, b"a")]);
        assert_eq!(next(&mut pb, &mut w).len(), 1);
        pb.copy(&[(UTI_TEXT, b"b")]);
        assert_eq!(next(&mut pb, &mut w).len(), 1);
        pb.copy(&[(UTI_TEXT, b"a")]);
        assert_eq!(next(&mut pb, &mut w).len(), 1);
        // Two copies between polls: only the newest is seen.
        pb.copy(&[(UTI_TEXT, b"c")]);
        pb.copy(&[(UTI_TEXT, b"d")]);
        assert_eq!(
            texts(&next(&mut pb, &mut w)),
            vec![ClipContent::Text("d".into())]
        );
    }

    #[test]
    fn empty_text_is_not_sent() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        pb.copy(&[(UTI_TEXT, b"")]);
        assert!(next(&mut pb, &mut w).is_empty());
    }

    #[test]
    fn file_lists_of_remote_kinds_are_refused_by_apply_content() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        let files = ClipContent::Files(Vec::new());
        assert!(matches!(
            apply_content(&mut pb, &mut w, &files),
            Err(ClipboardError::UnsupportedContent(_))
        ));
        assert_eq!(pb.count, 0, "nothing written");
    }

    #[test]
    fn a_peer_image_that_is_not_the_png_it_claims_is_not_written() {
        let mut pb = FakePasteboard::default();
        let (mut w, _) = started(&mut pb);
        let png = png_1x1();
        for bad in [
            ClipContent::Image {
                width: 2,
                height: 1,
                png: png.clone(),
            },
            ClipContent::Image {
                width: 1,
                height: 1,
                png: b"GIF89a".to_vec(),
            },
        ] {
            assert!(matches!(
                apply_content(&mut pb, &mut w, &bad),
                Err(ClipboardError::Backend(_))
            ));
        }
        assert_eq!(pb.count, 0, "nothing written");
    }

    #[test]
    fn html_gets_a_charset_only_when_needed() {
        assert_eq!(html_for_pasteboard("<b>x</b>"), "<b>x</b>");
        assert_eq!(
            html_for_pasteboard("<b>é</b>"),
            "<meta charset=\"utf-8\"><b>é</b>"
        );
        let declared = "<meta charset=\"UTF-8\"><b>é</b>";
        assert_eq!(html_for_pasteboard(declared), declared);
    }

    #[test]
    fn access_behavior_values_and_notices() {
        assert_eq!(Access::from_raw(None), Access::Unrestricted);
        assert_eq!(Access::from_raw(Some(0)), Access::Default);
        assert_eq!(Access::from_raw(Some(1)), Access::Ask);
        assert_eq!(Access::from_raw(Some(2)), Access::AlwaysAllow);
        assert_eq!(Access::from_raw(Some(3)), Access::AlwaysDeny);
        assert_eq!(Access::from_raw(Some(42)), Access::Unrestricted);
        assert!(Access::AlwaysAllow.notice().is_none());
        assert!(Access::Unrestricted.notice().is_none());
        assert!(Access::Ask.notice().is_some());
        assert!(Access::AlwaysDeny
            .notice()
            .is_some_and(|n| n.contains("denied")));
    }
}
