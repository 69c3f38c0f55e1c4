//! `clipmesh watch`: receive clips and hand each one to the caller, with
//! the daemon's reconnect behaviour and no clipboard.
//!
//! Each delivered envelope is opened, deduplicated by origin sequence and
//! passed on as a [`WatchedClip`]. The newest room sequence is recorded in
//! the state file as the daemon does, so a restarted `watch` does not print
//! the same stored clip again.

use crate::account::{AccountError, Device};
use crate::clipkeys::Opened;
use crate::clock::now_ms;
use crate::keyfetch::Need;
use crate::link::{self, LinkConfig, LinkEvent, LinkExit};
use crate::state::State;
use crate::sync::SyncEngine;
use clipmesh_proto::{ClipContent, DeviceId};
use std::collections::HashSet;
use std::path::Path;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One received clip.
#[derive(Debug, Clone)]
pub struct WatchedClip {
    /// What was copied.
    pub content: ClipContent,
    /// The device that sent it.
    pub from: DeviceId,
    /// When it was copied, ms since the epoch (sender's clock).
    pub copied_at_ms: u64,
    /// When it arrived here, ms since the epoch.
    pub received_at_ms: u64,
}

/// Why watching stopped with an error.
#[derive(Debug, Error)]
pub enum WatchError {
    /// The state file could not be used.
    #[error("state file: {0}")]
    State(#[from] std::io::Error),
    /// The CA file is unusable.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The relay revoked this device.
    #[error("this device's session was revoked; run `clipmesh login` again")]
    Revoked,
}

/// Receives clips for the device in `dir` until `cancel`, the session is
/// revoked, or `on_clip` returns false.
pub async fn watch(
    dir: &Path,
    device: &Device,
    cancel: CancellationToken,
    mut on_clip: impl FnMut(WatchedClip) -> bool,
) -> Result<(), WatchError> {
    let d = dir.to_path_buf();
    let mut state = tokio::task::spawn_blocking(move || State::load(&d))
        .await
        .map_err(std::io::Error::other)??;
    let d = dir.to_path_buf();
    let mut keys = crate::clipkeys::for_device(&d, device)?;
    let api = device.api()?;
    let mut sync = SyncEngine::new(DeviceId(device.account.device_id));
    let tracker = TaskTracker::new();
    // Watch never publishes; the handle only keeps the command queue open.
    let (_handle, commands) = link::channel();
    let (etx, mut erx) = mpsc::channel(link::EVENT_QUEUE);
    let link_cancel = cancel.child_token();
    let mut link_task = tracker.spawn(link::run(
        LinkConfig {
            server: device.account.server.clone(),
            token: device.secrets.token.clone().into(),
            last_seen: state.last_seen(),
            seed: rand::random(),
            roots: device.roots()?,
        },
        commands,
        etx,
        link_cancel.clone(),
    ));
    let revoked = || WatchError::Revoked;
    let mut gate = ListingGate::default();
    let result = loop {
        tokio::select! {
            exit = &mut link_task => break match exit {
                Ok(LinkExit::Revoked) => Err(revoked()),
                _ => Ok(()),
            },
            ev = erx.recv() => match ev {
                Some(LinkEvent::Deliver { seq, from, envelope }) => {
                    let mut go_on = true;
                    let mut opened = keys.open(from, &envelope, false);
                    if let Opened::Refresh(need) = opened {
                        if gate.should_fetch(need, now_ms()) {
                            match crate::clipkeys::fetch_listing_until(&api, &device.secrets.token, keys.epoch(), &cancel).await {
                                Some(Ok(Some(listing))) => {
                                    if let Err(line) = keys.refresh(&listing) {
                                        tracing::warn!("{line}");
                                    }
                                }
                                Some(Ok(None)) => gate.no_listings(),
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "cannot fetch the account's device keys");
                                    gate.failed(need, now_ms());
                                }
                                None => break Ok(()),
                            }
                        }
                        opened = keys.open(from, &envelope, true);
                    }
                    match opened {
                        Opened::Clip(meta, item) => {
                            if sync.accept_seq(&meta) {
                                go_on = on_clip(WatchedClip {
                                    content: item.content,
                                    from,
                                    copied_at_ms: meta.timestamp_ms,
                                    received_at_ms: now_ms(),
                                });
                            }
                        }
                        Opened::Refused(line) => tracing::warn!(%from, "{line}"),
                        Opened::Refresh(_) => {}
                    }
                    if let Err(e) = state.set_last_seen(seq) {
                        tracing::warn!(error = %e, "cannot write state file");
                    }
                    if !go_on {
                        break Ok(());
                    }
                }
                Some(LinkEvent::Connected { online, .. }) => {
                    gate.reconnected();
                    tracing::info!(online = online.len(), "watching");
                }
                Some(LinkEvent::Disconnected { reason, retry_in, .. }) => {
                    tracing::warn!(
                        %reason,
                        retry_in_ms = retry_in.as_millis() as u64,
                        "disconnected; reconnecting"
                    );
                }
                Some(_) => {}
                // The link ended: its exit says why.
                None => break match (&mut link_task).await {
                    Ok(LinkExit::Revoked) => Err(revoked()),
                    _ => Ok(()),
                },
            },
        }
    };
    link_cancel.cancel();
    tracker.close();
    tracker.wait().await;
    result
}

/// When `watch` fetches the account's key listing for a clip it cannot
/// open (an unknown sender, a newer epoch): once per need and connection,
/// as the daemon's [`crate::keyfetch`] settles needs, so an unvouched
/// sender's later clips are refused at once instead of each costing the
/// relay a listing. A failed fetch leaves the need open for a later clip
/// once [`crate::keyfetch::MIN_INTERVAL_MS`] has passed; a relay without
/// listings (v1) is not asked again.
#[derive(Debug, Default)]
struct ListingGate {
    settled: HashSet<Need>,
    no_listings: bool,
    retry_at_ms: u64,
}

impl ListingGate {
    /// Whether to fetch for `need` now; true marks it settled.
    fn should_fetch(&mut self, need: Need, now_ms: u64) -> bool {
        !self.no_listings && now_ms >= self.retry_at_ms && self.settled.insert(need)
    }

    /// The fetch for `need` failed.
    fn failed(&mut self, need: Need, now_ms: u64) {
        self.settled.remove(&need);
        self.retry_at_ms = now_ms + crate::keyfetch::MIN_INTERVAL_MS;
    }

    /// The relay has no key listing (v1).
    fn no_listings(&mut self) {
        self.no_listings = true;
    }

    /// The link came up again: the account's devices may have changed.
    fn reconnected(&mut self) {
        self.settled.clear();
    }
}

/// [`render`] for a terminal: control characters other than newline and
/// tab, and Unicode's bidirectional overrides, are printed escaped
/// (`\u{1b}`), so a received clip cannot move the cursor, retitle the
/// window, rewrite earlier lines or hide text.
pub fn render_for_terminal(clip: &WatchedClip) -> String {
    escape_controls(&render(clip, false))
}

/// Escapes what a terminal would interpret rather than show.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\n' && c != '\t') || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// One output line for a received clip: the text itself (HTML: its text
/// alternative; other kinds: a bracketed summary), or with `json` one object
/// with `kind`, `text` (text and HTML), `html`, `from_device`, `copied_at`,
/// `received_at` (ms since the epoch) and `bytes`.
pub fn render(clip: &WatchedClip, json: bool) -> String {
    let content = &clip.content;
    if json {
        let mut v = serde_json::json!({
            "kind": content.kind_name(),
            "from_device": clip.from.0,
            "copied_at": clip.copied_at_ms,
            "received_at": clip.received_at_ms,
            "bytes": content.payload_len(),
        });
        if let Some(o) = v.as_object_mut() {
            match content {
                ClipContent::Text(t) => {
                    o.insert("text".into(), t.clone().into());
                }
                ClipContent::Html { html, alt_text } => {
                    o.insert("text".into(), alt_text.clone().into());
                    o.insert("html".into(), html.clone().into());
                }
                _ => {}
            }
        }
        return v.to_string();
    }
    match content {
        ClipContent::Text(t) => t.clone(),
        ClipContent::Html { alt_text, .. } => alt_text.clone(),
        other => format!(
            "[{} from device {}, {} bytes]",
            other.kind_name(),
            clip.from.0,
            other.payload_len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_gate_fetches_once_per_need_retries_after_a_failure_and_resets_on_reconnect() {
        use crate::keyfetch::MIN_INTERVAL_MS;
        let (b, c) = (Need::Sender(DeviceId(2)), Need::Sender(DeviceId(3)));
        let mut g = ListingGate::default();
        assert!(g.should_fetch(b, 0));
        assert!(!g.should_fetch(b, 1), "settled after one fetch");
        assert!(g.should_fetch(c, 1), "another need is not settled");
        g.failed(c, 10);
        assert!(
            !g.should_fetch(c, 10 + MIN_INTERVAL_MS - 1),
            "not before the interval"
        );
        assert!(!g.should_fetch(b, 10 + MIN_INTERVAL_MS), "b stays settled");
        assert!(g.should_fetch(c, 10 + MIN_INTERVAL_MS), "c again after it");
        g.reconnected();
        assert!(g.should_fetch(b, 10 + MIN_INTERVAL_MS));
        g.no_listings();
        g.reconnected();
        assert!(
            !g.should_fetch(b, u64::MAX),
            "a v1 relay is not asked again"
        );
    }

    fn clip(content: ClipContent) -> WatchedClip {
        WatchedClip {
            content,
            from: DeviceId(7),
            copied_at_ms: 1,
            received_at_ms: 2,
        }
    }

    #[test]
    fn json_lines_have_the_documented_fields() {
        let line = render(&clip(ClipContent::Text("a\nb".into())), true);
        assert!(!line.contains('\n'), "one object per line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "text");
        assert_eq!(v["text"], "a\nb");
        assert_eq!(v["from_device"], 7);
        assert_eq!(v["received_at"], 2);
        let h = render(
            &clip(ClipContent::Html {
                html: "<b>x</b>".into(),
                alt_text: "x".into(),
            }),
            true,
        );
        let v: serde_json::Value = serde_json::from_str(&h).unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["text"].as_str()),
            (Some("html"), Some("x"))
        );
    }

    #[test]
    fn plain_output_prints_text_and_summarises_the_rest() {
        assert_eq!(render(&clip(ClipContent::Text("hi".into())), false), "hi");
        // On a terminal, escape sequences and other controls are shown, not
        // obeyed; newlines and tabs stay.
        let hostile = "a\u{1b}]0;pwned\u{7}\u{1b}[2J\rb\u{202e}c\n\td";
        let shown = render_for_terminal(&clip(ClipContent::Text(hostile.into())));
        assert!(
            !shown
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "a\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{d}b\\u{202e}c\n\td"
        );
        let img = ClipContent::Image {
            width: 1,
            height: 1,
            png: vec![0; 10],
        };
        assert_eq!(render(&clip(img), false), "[image from device 7, 10 bytes]");
    }
}
