//! Desktop notifications, debounced so a flapping network does not spam.
//!
//! [`Notifier`] is a sans-IO core in the same shape as the client's other
//! cores:
//!
//! - `handle_*(input, now)` feeds it: [`Notifier::handle_connection`] with
//!   every change of the relay link, [`Notifier::handle_event`] with things
//!   worth telling (a received file, a waiting large item, an error that
//!   needs the user);
//! - [`Notifier::poll_output`] drains the notifications to show now;
//! - [`Notifier::poll_timeout`] says when to call
//!   [`Notifier::handle_timeout`] next.
//!
//! The rules (the reference client is criticised for notifying on every
//! reconnect):
//!
//! - "connection lost" only after the link has been down for
//!   [`LOST_AFTER`] without a break; a link that comes back sooner says
//!   nothing at all;
//! - "connection restored" only after a "lost" was shown, and only once the
//!   link has stayed up for [`RESTORED_AFTER`];
//! - at most one "lost" per [`LOST_EVERY`], however often it flaps;
//! - the same event again within [`REPEAT_QUIET`] is dropped.
//!
//! Time is a [`Duration`] since any fixed start (a virtual clock in tests,
//! `Instant::elapsed` in the tray).

pub use clipmesh_tray_shell::menu::Notice;

use std::collections::VecDeque;
use std::time::Duration;

/// How long the link must stay down before "connection lost".
pub const LOST_AFTER: Duration = Duration::from_secs(30);
/// How long the link must stay up before "connection restored".
pub const RESTORED_AFTER: Duration = Duration::from_secs(10);
/// Least time between two "connection lost" notifications.
pub const LOST_EVERY: Duration = Duration::from_secs(600);
/// The same event notified again within this window is dropped.
pub const REPEAT_QUIET: Duration = Duration::from_secs(60);

/// Something the user may be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Files were received into the download folder (count only).
    FilesReceived(usize),
    /// A received item is over `auto_download_max` and waits (a summary
    /// like "3 files (123 MiB)").
    Waiting(String),
    /// An error that needs the user (revoked, password changed, ...).
    NeedsUser(String),
}

/// The debouncing core.
#[derive(Debug, Default)]
pub struct Notifier {
    /// Whether the link is up, as last reported.
    up: bool,
    /// Since when the link has been in its current state (None before the
    /// first report).
    since: Option<Duration>,
    /// Whether "lost" was shown for the current outage (so "restored" is
    /// owed).
    lost_shown: bool,
    /// When "lost" was last shown.
    last_lost: Option<Duration>,
    /// Recent events with the time they were shown, for [`REPEAT_QUIET`].
    recent: Vec<(Event, Duration)>,
    /// Notifications waiting for [`Notifier::poll_output`].
    out: VecDeque<Notice>,
}

impl Notifier {
    /// The relay link went up (`true`) or down.
    pub fn handle_connection(&mut self, up: bool, now: Duration) {
        if self.since.is_some() && self.up == up {
            return;
        }
        if self.since.is_none() && up {
            // Starting connected: nothing was lost.
            self.up = true;
            self.since = Some(now);
            return;
        }
        self.up = up;
        self.since = Some(now);
        self.handle_timeout(now);
    }

    /// Something happened that may be worth a notification.
    pub fn handle_event(&mut self, event: Event, now: Duration) {
        self.recent
            .retain(|(_, t)| now.saturating_sub(*t) < REPEAT_QUIET);
        if self.recent.iter().any(|(e, _)| *e == event) {
            return;
        }
        let notice = match &event {
            Event::FilesReceived(n) => Notice {
                summary: "Files received".into(),
                body: format!(
                    "{} in the clipmesh download folder, and on the clipboard",
                    crate::recent::files(*n)
                ),
            },
            Event::Waiting(what) => Notice {
                summary: "Large item waiting".into(),
                body: format!("{what}: choose Download in the clipmesh menu to get it"),
            },
            Event::NeedsUser(what) => Notice {
                summary: "clipmesh needs you".into(),
                body: what.clone(),
            },
        };
        self.recent.push((event, now));
        self.out.push_back(notice);
    }

    /// Time passed: emits what is due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        let Some(since) = self.since else { return };
        let held = now.saturating_sub(since);
        if !self.up && !self.lost_shown && held >= LOST_AFTER {
            let quiet = self
                .last_lost
                .is_some_and(|t| now.saturating_sub(t) < LOST_EVERY);
            // Inside the quiet window the outage still counts as shown, so
            // its end is announced; only the "lost" is held back.
            self.lost_shown = true;
            if !quiet {
                self.last_lost = Some(now);
                self.out.push_back(Notice {
                    summary: "Connection lost".into(),
                    body: "clipmesh cannot reach the relay; it keeps trying".into(),
                });
            }
        }
        if self.up && self.lost_shown && held >= RESTORED_AFTER {
            self.lost_shown = false;
            self.out.push_back(Notice {
                summary: "Connection restored".into(),
                body: "clipmesh is syncing again".into(),
            });
        }
    }

    /// The next notification to show.
    pub fn poll_output(&mut self) -> Option<Notice> {
        self.out.pop_front()
    }

    /// When [`Notifier::handle_timeout`] has something to decide next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let since = self.since?;
        if !self.up && !self.lost_shown {
            Some(since + LOST_AFTER)
        } else if self.up && self.lost_shown {
            Some(since + RESTORED_AFTER)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtual clock: runs `n` until `until`, firing timeouts when due.
    fn advance(n: &mut Notifier, now: &mut Duration, until: Duration) -> Vec<String> {
        let mut shown = vec![];
        loop {
            while let Some(o) = n.poll_output() {
                shown.push(o.summary);
            }
            match n.poll_timeout() {
                Some(t) if t <= until => {
                    *now = t.max(*now);
                    n.handle_timeout(*now);
                }
                _ => break,
            }
        }
        *now = until;
        shown
    }

    const fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn flapping_network_says_nothing() {
        let mut n = Notifier::default();
        let mut now = s(0);
        n.handle_connection(true, now);
        let mut shown = vec![];
        // Down 20 s, up 5 s, for ten minutes: never down for 30 s at once.
        for _ in 0..24 {
            n.handle_connection(false, now);
            let until = now + s(20);
            shown.extend(advance(&mut n, &mut now, until));
            n.handle_connection(true, now);
            let until = now + s(5);
            shown.extend(advance(&mut n, &mut now, until));
        }
        assert!(shown.is_empty(), "{shown:?}");
    }

    #[test]
    fn real_outage_is_lost_then_restored_once() {
        let mut n = Notifier::default();
        let mut now = s(0);
        n.handle_connection(true, now);
        n.handle_connection(false, now);
        assert_eq!(n.poll_timeout(), Some(LOST_AFTER));
        assert!(advance(&mut n, &mut now, s(29)).is_empty());
        assert_eq!(advance(&mut n, &mut now, s(31)), ["Connection lost"]);
        // Still down much later: no repeat.
        assert!(advance(&mut n, &mut now, s(300)).is_empty());
        // Back, but flaps within 10 s: not yet restored.
        n.handle_connection(true, now);
        assert!(advance(&mut n, &mut now, s(305)).is_empty());
        n.handle_connection(false, now);
        n.handle_connection(true, now);
        assert!(advance(&mut n, &mut now, s(314)).is_empty());
        assert_eq!(advance(&mut n, &mut now, s(316)), ["Connection restored"]);
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn second_outage_soon_after_is_not_announced_but_its_end_is() {
        let mut n = Notifier::default();
        let mut now = s(0);
        n.handle_connection(false, now);
        assert_eq!(advance(&mut n, &mut now, s(40)), ["Connection lost"]);
        n.handle_connection(true, now);
        assert_eq!(advance(&mut n, &mut now, s(60)), ["Connection restored"]);
        // A second long outage two minutes later: inside LOST_EVERY.
        n.handle_connection(false, s(120));
        now = s(120);
        assert!(advance(&mut n, &mut now, s(200)).is_empty());
        n.handle_connection(true, now);
        assert_eq!(advance(&mut n, &mut now, s(220)), ["Connection restored"]);
        // Once LOST_EVERY has passed, a long outage is announced again.
        n.handle_connection(false, s(700));
        now = s(700);
        assert_eq!(advance(&mut n, &mut now, s(800)), ["Connection lost"]);
    }

    #[test]
    fn events_are_shown_once_per_quiet_window() {
        let mut n = Notifier::default();
        let waiting = Event::Waiting("3 files (123 MiB)".into());
        n.handle_event(waiting.clone(), s(0));
        n.handle_event(waiting.clone(), s(10));
        n.handle_event(Event::FilesReceived(2), s(11));
        n.handle_event(Event::NeedsUser("this device was logged out".into()), s(12));
        let shown: Vec<_> = std::iter::from_fn(|| n.poll_output()).collect();
        assert_eq!(shown.len(), 3);
        assert_eq!(shown[0].summary, "Large item waiting");
        assert!(shown[0].body.starts_with("3 files (123 MiB)"));
        assert_eq!(
            shown[1].body,
            "2 files in the clipmesh download folder, and on the clipboard"
        );
        assert_eq!(shown[2].body, "this device was logged out");
        n.handle_event(waiting, s(61));
        assert_eq!(n.poll_output().unwrap().summary, "Large item waiting");
    }
}
