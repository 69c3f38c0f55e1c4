//! When the daemon fetches the account's key listing (`GET
//! /api/v2/device-keys`, and the epoch wrap), without IO.
//!
//! **Contract** (the same idiom as [`crate::engine`] and [`crate::session`]):
//!
//! - [`KeyFetch::handle_want`]`(why, now_ms)` asks for a listing (the link
//!   came up, possibly after a 1012 rekey; the online set changed);
//!   [`KeyFetch::handle_clip`]`(need, item, now_ms)` parks a received clip
//!   that cannot be opened without one (an unknown sender, a newer epoch);
//!   [`KeyFetch::handle_done`]`(listed, now_ms)` reports the end of a fetch;
//!   [`KeyFetch::handle_timeout`]`(now_ms)` is fed at
//!   [`KeyFetch::poll_timeout`];
//! - [`KeyFetch::poll_output`] drains what to do: start one fetch
//!   ([`Output::Fetch`]), or open a parked clip again, now without asking
//!   for a listing ([`Output::Reopen`]);
//! - [`KeyFetch::poll_timeout`] says when (ms) to feed the timeout next.
//!
//! The policy, so a listing fetch never blocks the daemon's loop and a
//! burst of clips or a rekey of many devices cannot turn into a burst of
//! requests:
//!
//! - **one fetch in flight**; everything wanted meanwhile is served by it
//!   (clips) or by the next one (a presence change after it started);
//! - **throttled**: fetches start at least [`MIN_INTERVAL_MS`] apart and at
//!   most [`MAX_PER_MINUTE`] in any 60 s;
//! - **settled needs**: a sender (or an epoch) still unknown after a fresh
//!   listing is not fetched for again: its later clips are opened at once
//!   and refused with one line each, until the account's devices may have
//!   changed (the link came up again, or the online set changed);
//! - **bounded**: at most [`MAX_WAITING`] clips wait; one more is given back
//!   to be refused;
//! - **spread after a rekey**: when the link comes back after a 1012 (every
//!   device of the account reconnects at once), the fetch waits a random
//!   delay up to [`REKEY_SPREAD_MS`].

use clipmesh_proto::{DeviceId, Epoch};
use std::collections::{HashSet, VecDeque};

/// Shortest time between the starts of two fetches, ms.
pub const MIN_INTERVAL_MS: u64 = 2_000;
/// Most fetches started in any 60 s.
pub const MAX_PER_MINUTE: usize = 6;
/// Longest random delay of the first fetch after a 1012 rekey, ms.
pub const REKEY_SPREAD_MS: u64 = 3_000;
/// Most received clips waiting for a listing.
pub const MAX_WAITING: usize = 32;

const MINUTE_MS: u64 = 60_000;

/// What a received clip needs from the listing before it can be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Need {
    /// The key of a sender this device has not pinned.
    Sender(DeviceId),
    /// The key of a newer epoch.
    Epoch(Epoch),
}

/// Why a listing is wanted ([`KeyFetch::handle_want`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The relay link came up; `rekey` when it dropped with 1012 before.
    Joined {
        /// The account moved to a new epoch: spread the fetch.
        rekey: bool,
    },
    /// The online set changed (a device came or went).
    Presence,
}

/// What [`KeyFetch`] wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<T> {
    /// Start a fetch; report its end with [`KeyFetch::handle_done`].
    Fetch,
    /// Open this parked clip again, without asking for a listing.
    Reopen {
        /// The clip.
        item: T,
        /// Whether a listing was fetched for it (false: the fetch failed,
        /// or was given up).
        listed: bool,
    },
}

/// The fetch scheduler (see the module docs). `T` is a parked clip.
#[derive(Debug)]
pub struct KeyFetch<T> {
    /// A fetch was started and has not ended.
    in_flight: bool,
    /// A fetch is wanted (and not yet started).
    wanted: bool,
    /// No fetch starts before this (the spread after a rekey).
    hold_until: u64,
    /// When fetches started, within the last minute (oldest first).
    starts: VecDeque<u64>,
    /// Clips waiting for the next listing, with what each needs.
    waiting: VecDeque<(Need, T)>,
    /// Needs still unmet after a fresh listing: not fetched for again.
    settled: HashSet<Need>,
    /// State of the spread's random numbers (xorshift64).
    rng: u64,
    /// What the driver has not drained yet.
    out: VecDeque<Output<T>>,
}

impl<T> KeyFetch<T> {
    /// A scheduler whose random spread starts from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            in_flight: false,
            wanted: false,
            hold_until: 0,
            starts: VecDeque::new(),
            waiting: VecDeque::new(),
            settled: HashSet::new(),
            // SplitMix64 of the seed: close seeds give unrelated spreads, and
            // xorshift needs a state other than 0.
            rng: {
                let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) | 1
            },
            out: VecDeque::new(),
        }
    }

    /// Clips waiting for a listing now.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Asks for a listing.
    pub fn handle_want(&mut self, why: Why, now_ms: u64) {
        // The account's devices may have changed: what a listing settled
        // may be different now.
        self.settled.clear();
        if why == (Why::Joined { rekey: true }) {
            let spread = crate::backoff::xorshift64(&mut self.rng) % (REKEY_SPREAD_MS + 1);
            self.hold_until = self.hold_until.max(now_ms.saturating_add(spread));
        }
        self.wanted = true;
        self.start_if_due(now_ms);
    }

    /// Parks a clip that needs `need` until the next listing. A need a
    /// fresh listing left unmet is reopened at once (to be refused); over
    /// [`MAX_WAITING`] the clip is given back.
    pub fn handle_clip(&mut self, need: Need, item: T, now_ms: u64) -> Result<(), T> {
        if self.settled.contains(&need) {
            self.out.push_back(Output::Reopen { item, listed: true });
            return Ok(());
        }
        if self.waiting.len() >= MAX_WAITING {
            return Err(item);
        }
        self.waiting.push_back((need, item));
        // A fetch in flight serves it; otherwise one is wanted.
        if !self.in_flight {
            self.wanted = true;
            self.start_if_due(now_ms);
        }
        Ok(())
    }

    /// The fetch in flight ended: `listed` when the relay's listing was
    /// taken (false: it failed). The clips that waited are reopened.
    pub fn handle_done(&mut self, listed: bool, now_ms: u64) {
        self.in_flight = false;
        for (need, item) in std::mem::take(&mut self.waiting) {
            if listed {
                self.settled.insert(need);
            }
            self.out.push_back(Output::Reopen { item, listed });
        }
        self.start_if_due(now_ms);
    }

    /// The fetch can no longer be carried out at all (the relay has no
    /// listing): nothing is wanted, and waiting clips are reopened.
    pub fn give_up(&mut self) {
        self.wanted = false;
        for (_, item) in std::mem::take(&mut self.waiting) {
            self.out.push_back(Output::Reopen {
                item,
                listed: false,
            });
        }
    }

    /// [`KeyFetch::poll_timeout`]'s moment has come.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.start_if_due(now_ms);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output<T>> {
        self.out.pop_front()
    }

    /// When to call [`KeyFetch::handle_timeout`] next (ms), if ever.
    pub fn poll_timeout(&self) -> Option<u64> {
        (self.wanted && !self.in_flight).then(|| self.earliest_start())
    }

    /// The earliest moment a fetch may start under the spread and the
    /// throttle.
    fn earliest_start(&self) -> u64 {
        let mut at = self.hold_until;
        if let Some(last) = self.starts.back() {
            at = at.max(last.saturating_add(MIN_INTERVAL_MS));
        }
        if self.starts.len() >= MAX_PER_MINUTE {
            let oldest = self.starts[self.starts.len() - MAX_PER_MINUTE];
            at = at.max(oldest.saturating_add(MINUTE_MS));
        }
        at
    }

    fn start_if_due(&mut self, now_ms: u64) {
        while self
            .starts
            .front()
            .is_some_and(|t| t.saturating_add(MINUTE_MS) <= now_ms)
        {
            self.starts.pop_front();
        }
        if !self.wanted || self.in_flight || now_ms < self.earliest_start() {
            return;
        }
        self.wanted = false;
        self.in_flight = true;
        self.starts.push_back(now_ms);
        self.out.push_back(Output::Fetch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(k: &mut KeyFetch<u32>) -> Vec<Output<u32>> {
        std::iter::from_fn(|| k.poll_output()).collect()
    }

    fn fetches(k: &mut KeyFetch<u32>) -> usize {
        drain(k)
            .iter()
            .filter(|o| matches!(o, Output::Fetch))
            .count()
    }

    const A: Need = Need::Sender(DeviceId(7));

    #[test]
    fn one_fetch_serves_every_clip_that_waits_for_it() {
        let mut k = KeyFetch::new(1);
        for i in 0..10 {
            k.handle_clip(A, i, 1_000).unwrap();
        }
        assert_eq!(
            drain(&mut k),
            vec![Output::Fetch],
            "one fetch for ten clips"
        );
        assert_eq!(k.waiting(), 10);
        k.handle_done(true, 1_100);
        let reopened = drain(&mut k);
        assert_eq!(reopened.len(), 10);
        assert!(reopened
            .iter()
            .all(|o| matches!(o, Output::Reopen { listed: true, .. })));
        assert_eq!(k.poll_timeout(), None, "nothing more wanted");
    }

    #[test]
    fn a_sender_still_unknown_after_a_listing_is_not_fetched_for_again() {
        let mut k = KeyFetch::new(1);
        k.handle_clip(A, 1, 0).unwrap();
        assert_eq!(fetches(&mut k), 1);
        k.handle_done(true, 50);
        drain(&mut k);
        // A flood from the same unknown sender, minutes later: no fetch,
        // each clip is reopened (to be refused) at once.
        let mut now = 60_000;
        for i in 0..100 {
            now += 1_000;
            k.handle_clip(A, i, now).unwrap();
            k.handle_timeout(now);
            assert_eq!(
                drain(&mut k),
                vec![Output::Reopen {
                    item: i,
                    listed: true
                }]
            );
        }
        assert_eq!(k.poll_timeout(), None);
        // Another sender still gets a fetch.
        k.handle_clip(Need::Sender(DeviceId(8)), 1, now).unwrap();
        assert_eq!(fetches(&mut k), 1);
        // A presence change unsettles A: its next clip waits for a fetch.
        k.handle_done(true, now);
        drain(&mut k);
        k.handle_want(Why::Presence, now + 10_000);
        assert_eq!(fetches(&mut k), 1);
        k.handle_clip(A, 2, now + 10_001).unwrap();
        assert!(drain(&mut k).is_empty(), "served by the fetch in flight");
        k.handle_done(true, now + 10_100);
        assert_eq!(
            drain(&mut k),
            vec![Output::Reopen {
                item: 2,
                listed: true
            }]
        );
    }

    #[test]
    fn fetches_are_throttled_on_a_virtual_clock() {
        let mut k = KeyFetch::new(1);
        let mut now = 0;
        let mut started = Vec::new();
        // Presence changes every 100 ms for five minutes, each fetch taking
        // 50 ms.
        while now < 300_000 {
            k.handle_want(Why::Presence, now);
            if let Some(at) = k.poll_timeout() {
                if at <= now {
                    k.handle_timeout(now);
                }
            }
            for o in drain(&mut k) {
                if o == Output::Fetch {
                    started.push(now);
                    k.handle_done(true, now + 50);
                }
            }
            now += 100;
        }
        for w in started.windows(2) {
            assert!(w[1] - w[0] >= MIN_INTERVAL_MS, "{w:?}");
        }
        for (i, t) in started.iter().enumerate() {
            let in_minute = started[i..].iter().filter(|s| **s < t + MINUTE_MS).count();
            assert!(in_minute <= MAX_PER_MINUTE, "{in_minute} starts after {t}");
        }
        // And the cap is what limits it: six a minute, thirty in five.
        assert_eq!(started.len(), 5 * MAX_PER_MINUTE);
    }

    #[test]
    fn a_throttled_fetch_starts_at_its_timeout() {
        let mut k = KeyFetch::new(1);
        k.handle_want(Why::Presence, 10_000);
        assert_eq!(fetches(&mut k), 1);
        k.handle_done(true, 10_020);
        k.handle_want(Why::Presence, 10_500);
        assert_eq!(fetches(&mut k), 0, "too soon");
        assert_eq!(k.poll_timeout(), Some(10_000 + MIN_INTERVAL_MS));
        k.handle_timeout(11_999);
        assert_eq!(fetches(&mut k), 0);
        k.handle_timeout(12_000);
        assert_eq!(fetches(&mut k), 1);
    }

    #[test]
    fn a_rekey_spreads_the_first_fetch() {
        let mut delays = HashSet::new();
        for seed in 0..50 {
            let mut k = KeyFetch::<u32>::new(seed);
            k.handle_want(Why::Joined { rekey: true }, 1_000);
            // Presence changes as the other devices come back do not start
            // it early.
            k.handle_want(Why::Presence, 1_001);
            let at = match k.poll_timeout() {
                Some(at) => at,
                None => {
                    // A delay of 0: started at once.
                    assert_eq!(fetches(&mut k), 1);
                    1_000
                }
            };
            assert!((1_000..=1_000 + REKEY_SPREAD_MS).contains(&at));
            k.handle_timeout(at);
            assert_eq!(
                drain(&mut k)
                    .iter()
                    .filter(|o| **o == Output::Fetch)
                    .count(),
                usize::from(at != 1_000)
            );
            delays.insert(at);
        }
        assert!(delays.len() > 25, "the delays differ: {delays:?}");
        // A join without a rekey fetches at once.
        let mut k = KeyFetch::<u32>::new(3);
        k.handle_want(Why::Joined { rekey: false }, 5);
        assert_eq!(fetches(&mut k), 1);
    }

    #[test]
    fn the_queue_is_bounded_and_a_failed_fetch_reopens_unlisted() {
        let mut k = KeyFetch::new(1);
        for i in 0..MAX_WAITING as u32 {
            k.handle_clip(Need::Epoch(Epoch(3)), i, 0).unwrap();
        }
        assert_eq!(k.handle_clip(Need::Epoch(Epoch(3)), 99, 0), Err(99));
        assert_eq!(fetches(&mut k), 1);
        k.handle_done(false, 10);
        let out = drain(&mut k);
        assert_eq!(out.len(), MAX_WAITING);
        assert!(out
            .iter()
            .all(|o| matches!(o, Output::Reopen { listed: false, .. })));
        // A failure settles nothing: the next clip asks again (throttled).
        k.handle_clip(Need::Epoch(Epoch(3)), 1, 100).unwrap();
        assert!(drain(&mut k).is_empty());
        assert_eq!(k.poll_timeout(), Some(MIN_INTERVAL_MS));
        k.handle_timeout(MIN_INTERVAL_MS);
        assert_eq!(fetches(&mut k), 1);
    }
}
