//! A fake backend for tests: no display, no threads.
//!
//! [`FakeClipboard::new`] returns the three ends a real backend gives: the
//! handle (implements [`Clipboard`]; what it is asked to apply is recorded),
//! the [`LocalEvent`] receiver for the code under test, and a
//! [`FakeUser`], the test's side, which "copies" items and sees what was
//! applied. Like a real backend it never reports an applied item back as a
//! local copy.

use crate::event::now_ms;
use crate::{Capabilities, Clipboard, ClipboardError, LocalChange, LocalEvent, LocalFiles};
use clipmesh_proto::ClipContent;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the fake was asked to put on the clipboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// An item ([`Clipboard::apply`]).
    Content(ClipContent),
    /// A file list ([`Clipboard::apply_files`]).
    Files(Vec<PathBuf>),
}

/// The handle half of the fake backend.
#[derive(Clone, Debug)]
pub struct FakeClipboard {
    applied: mpsc::UnboundedSender<Applied>,
    /// Set by [`FakeUser::fail_applies`]: every apply fails.
    failing: Arc<AtomicBool>,
    caps: Capabilities,
}

/// The test's half: copy items on the fake device, see what was applied.
#[derive(Debug)]
pub struct FakeUser {
    local: mpsc::Sender<LocalEvent>,
    applied: mpsc::UnboundedReceiver<Applied>,
    failing: Arc<AtomicBool>,
}

impl FakeClipboard {
    /// A fake with every capability; events queue up to
    /// [`crate::LOCAL_CHANGE_QUEUE`].
    pub fn new() -> (Self, mpsc::Receiver<LocalEvent>, FakeUser) {
        let (local, events) = mpsc::channel(crate::LOCAL_CHANGE_QUEUE);
        let (applied_tx, applied) = mpsc::unbounded_channel();
        let failing = Arc::new(AtomicBool::new(false));
        (
            Self {
                applied: applied_tx,
                failing: Arc::clone(&failing),
                caps: Capabilities::desktop("fake", true),
            },
            events,
            FakeUser {
                local,
                applied,
                failing,
            },
        )
    }

    fn record(&self, a: Applied) -> Result<(), ClipboardError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(ClipboardError::Backend("fake clipboard set to fail".into()));
        }
        self.applied.send(a).map_err(|_| ClipboardError::Stopped)
    }
}

impl Clipboard for FakeClipboard {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn apply(
        &self,
        content: ClipContent,
    ) -> impl Future<Output = Result<(), ClipboardError>> + Send {
        let r = self.record(Applied::Content(content));
        async move { r }
    }

    fn apply_files(
        &self,
        paths: Vec<PathBuf>,
    ) -> impl Future<Output = Result<(), ClipboardError>> + Send {
        let r = self.record(Applied::Files(paths));
        async move { r }
    }
}

impl FakeUser {
    /// Copies `content` on the fake device (read now).
    pub async fn copy(&self, content: ClipContent) -> Result<(), ClipboardError> {
        self.send(LocalEvent::Clip(LocalChange {
            content,
            at_ms: now_ms(),
        }))
        .await
    }

    /// Copies a file list on the fake device (read now).
    pub async fn copy_files(&self, paths: Vec<PathBuf>) -> Result<(), ClipboardError> {
        self.send(LocalEvent::Files(LocalFiles {
            paths,
            at_ms: now_ms(),
        }))
        .await
    }

    /// Sends an event exactly as given (to control `at_ms`).
    pub async fn send(&self, ev: LocalEvent) -> Result<(), ClipboardError> {
        self.local
            .send(ev)
            .await
            .map_err(|_| ClipboardError::Stopped)
    }

    /// The next applied item, or `None` once every handle is gone.
    pub async fn next_applied(&mut self) -> Option<Applied> {
        self.applied.recv().await
    }

    /// An applied item if one is waiting (never blocks).
    pub fn try_applied(&mut self) -> Option<Applied> {
        self.applied.try_recv().ok()
    }

    /// Makes every later apply fail (`true`) or succeed again (`false`).
    pub fn fail_applies(&self, fail: bool) {
        self.failing.store(fail, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn copies_arrive_as_events_and_applies_are_recorded() {
        let (clip, mut events, mut user) = FakeClipboard::new();
        assert_eq!(clip.capabilities().backend, "fake");
        user.copy(ClipContent::Text("local".into())).await.unwrap();
        match events.recv().await {
            Some(LocalEvent::Clip(c)) => assert_eq!(c.content, ClipContent::Text("local".into())),
            other => panic!("{other:?}"),
        }
        clip.apply(ClipContent::Text("remote".into()))
            .await
            .unwrap();
        clip.apply_files(vec![PathBuf::from("/x")]).await.unwrap();
        assert_eq!(
            user.next_applied().await,
            Some(Applied::Content(ClipContent::Text("remote".into())))
        );
        assert_eq!(
            user.try_applied(),
            Some(Applied::Files(vec![PathBuf::from("/x")]))
        );
        // An applied item is never reported back as a local copy.
        assert!(events.try_recv().is_err());
        user.fail_applies(true);
        assert!(clip.apply(ClipContent::Text("x".into())).await.is_err());
    }
}
