//! Scenario tests of the device engine: several devices on a virtual clock,
//! a scripted relay (room sequence, fan-out, acks) and direct links between
//! them, real sealing and opening of envelopes, and a clipboard per device
//! whose watcher may report our own writes back (the worst case the
//! clipboard backends guard against).

use super::*;
use clipmesh_proto::blob::{BlobId, BlobKey, NO_DIGEST};
use clipmesh_proto::content::{FileBody, FileEntry};
use clipmesh_proto::{open_clip, seal_clip, ClipKey, DataKey};

fn text(s: &str) -> ClipContent {
    ClipContent::Text(s.into())
}

/// One simulated device.
struct Dev {
    id: DeviceId,
    engine: Engine,
    /// What its OS clipboard holds.
    clipboard: Option<ClipContent>,
    /// Every item the engine put on the clipboard.
    applied: Vec<ClipContent>,
    /// File lists put on the clipboard.
    applied_files: Vec<Vec<PathBuf>>,
    /// What the driver last persisted.
    replay: Option<Replay>,
    last_seen: u64,
    /// Its envelope sequence counter.
    seq: u64,
    /// Report every apply back as a local read (a watcher that misses its
    /// own writes).
    watcher_echoes: bool,
    /// Control answers by ticket.
    replies: Vec<(Ticket, Response)>,
    /// Uploads and downloads started.
    uploads: Vec<(JobId, Output)>,
    downloads: Vec<(JobId, ClipItem)>,
    /// Publishes with their routes.
    published: Vec<(bool, bool)>,
    /// Who the direct-link manager was told is online.
    told_online: Vec<Vec<DeviceId>>,
}

/// A message on the way.
struct Wire {
    from: usize,
    via_relay: bool,
    /// For direct messages: the one receiver.
    to: Option<usize>,
    envelope: Vec<u8>,
}

struct World {
    now: u64,
    key: ClipKey,
    devs: Vec<Dev>,
    wire: VecDeque<Wire>,
    /// Room sequence.
    room_seq: u64,
    /// Envelopes the relay fanned out.
    relayed: usize,
    /// The relay's newest clip (what a reconnecting device gets).
    newest: Option<(usize, Vec<u8>)>,
    /// Direct links are open between every pair.
    links_open: bool,
}

fn opts() -> SyncOptions {
    SyncOptions::default()
}

impl World {
    fn new(n: u64, mode: Mode) -> Self {
        Self::with(n, mode, opts())
    }

    fn with(n: u64, mode: Mode, o: SyncOptions) -> Self {
        let devs = (1..=n)
            .map(|i| Dev {
                id: DeviceId(i),
                engine: Engine::new(DeviceId(i), mode, o.clone(), None),
                clipboard: None,
                applied: vec![],
                applied_files: vec![],
                replay: None,
                last_seen: 0,
                seq: 0,
                watcher_echoes: false,
                replies: vec![],
                uploads: vec![],
                downloads: vec![],
                published: vec![],
                told_online: vec![],
            })
            .collect();
        Self {
            now: 1_000_000,
            key: DataKey::generate().clip_key(),
            devs,
            wire: VecDeque::new(),
            room_seq: 0,
            relayed: 0,
            newest: None,
            links_open: true,
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
    }

    fn input(&mut self, d: usize, input: Input) {
        let now = self.now;
        self.devs[d].engine.handle(input, now);
        self.drain(d);
    }

    /// The user copies `content` on device `d` now.
    fn copy(&mut self, d: usize, content: ClipContent) {
        self.devs[d].clipboard = Some(content.clone());
        let at_ms = self.now;
        self.input(d, Input::LocalClip { content, at_ms });
    }

    /// Carries out device `d`'s outputs, as the daemon does.
    fn drain(&mut self, d: usize) {
        while let Some(o) = self.devs[d].engine.poll_output() {
            match o {
                Output::Publish {
                    item,
                    direct,
                    relay,
                    ticket,
                } => {
                    let dev = &mut self.devs[d];
                    dev.seq += 1;
                    dev.published.push((direct, relay));
                    let env = seal_clip(&self.key, dev.id, dev.seq, &item);
                    if direct && self.links_open {
                        for to in 0..self.devs.len() {
                            if to != d {
                                self.wire.push_back(Wire {
                                    from: d,
                                    via_relay: false,
                                    to: Some(to),
                                    envelope: env.clone(),
                                });
                            }
                        }
                    }
                    if relay {
                        self.wire.push_back(Wire {
                            from: d,
                            via_relay: true,
                            to: None,
                            envelope: env,
                        });
                    } else if let Some(t) = ticket {
                        let now = self.now;
                        self.devs[d].engine.handle(
                            Input::SendOutcome {
                                ticket: t,
                                result: Ok(0),
                            },
                            now,
                        );
                    }
                }
                Output::Apply { content, ticket } => {
                    let now = self.now;
                    let dev = &mut self.devs[d];
                    dev.clipboard = Some(content.clone());
                    dev.applied.push(content.clone());
                    dev.engine.handle(
                        Input::Applied {
                            ticket,
                            result: Ok(()),
                        },
                        now,
                    );
                    if dev.watcher_echoes {
                        dev.engine.handle(
                            Input::LocalClip {
                                content,
                                at_ms: now,
                            },
                            now,
                        );
                    }
                }
                Output::ApplyFiles { paths, ticket } => {
                    let now = self.now;
                    let dev = &mut self.devs[d];
                    dev.applied_files.push(paths);
                    dev.engine.handle(
                        Input::Applied {
                            ticket,
                            result: Ok(()),
                        },
                        now,
                    );
                }
                o @ (Output::UploadImage { job, .. } | Output::UploadFiles { job, .. }) => {
                    self.devs[d].uploads.push((job, o));
                }
                Output::Download { job, item } => self.devs[d].downloads.push((job, item)),
                Output::SaveReplay(r) => self.devs[d].replay = Some(r),
                Output::SaveLastSeen(s) => {
                    let dev = &mut self.devs[d];
                    dev.last_seen = dev.last_seen.max(s);
                }
                Output::Online(ids) => self.devs[d].told_online.push(ids),
                Output::Reply { ticket, response } => self.devs[d].replies.push((ticket, response)),
            }
        }
    }

    /// Moves messages until nothing is in flight (bounded: a loop fails).
    fn settle(&mut self) {
        let mut steps = 0;
        while let Some(w) = self.wire.pop_front() {
            steps += 1;
            assert!(steps < 200, "messages keep flowing: a sync loop");
            self.tick(1);
            if w.via_relay {
                self.room_seq += 1;
                self.relayed += 1;
                self.newest = Some((w.from, w.envelope.clone()));
                let seq = self.room_seq;
                self.input(w.from, Input::Acked { seq });
                for to in 0..self.devs.len() {
                    if to != w.from {
                        self.deliver(to, w.from, &w.envelope, Via::Relay { seq });
                    }
                }
            } else if let Some(to) = w.to {
                self.deliver(to, w.from, &w.envelope, Via::Direct);
            }
        }
    }

    fn deliver(&mut self, to: usize, from: usize, envelope: &[u8], via: Via) {
        let from = self.devs[from].id;
        let opened = open_clip(&self.key, from, envelope).map_err(|e| e.to_string());
        self.input(to, Input::Received { via, from, opened });
    }

    fn publishes(&self) -> usize {
        self.devs.iter().map(|d| d.published.len()).sum()
    }
}

#[test]
fn two_devices_a_copy_reaches_the_other_once() {
    let mut w = World::new(2, Mode::Relay);
    w.devs[1].watcher_echoes = true;
    w.copy(0, text("hello"));
    w.settle();
    assert_eq!(w.devs[1].applied, vec![text("hello")]);
    assert!(w.devs[0].applied.is_empty(), "the sender applies nothing");
    assert_eq!(
        w.publishes(),
        1,
        "the receiver's watcher echo is not sent back"
    );
    assert_eq!(
        w.devs[0].published,
        vec![(false, true)],
        "relay mode: relay only"
    );
    assert_eq!(w.devs[1].last_seen, 1);
    assert_eq!(w.devs[0].last_seen, 1, "the ack's room seq is saved");
    assert!(w.devs[0].engine.status().last_sync_ms.is_some());
    assert!(w.devs[1].engine.status().last_sync_ms.is_some());
    // The same copy again is not a change; a new one is.
    w.copy(0, text("hello"));
    w.settle();
    assert_eq!(w.publishes(), 1);
    w.copy(1, text("reply"));
    w.settle();
    assert_eq!(w.devs[0].applied, vec![text("reply")]);
}

#[test]
fn three_devices_with_echoing_watchers_do_not_loop() {
    let mut w = World::new(3, Mode::Relay);
    for d in &mut w.devs {
        d.watcher_echoes = true;
    }
    w.copy(0, text("one copy"));
    w.settle();
    assert_eq!(w.publishes(), 1);
    assert_eq!(w.relayed, 1);
    assert_eq!(w.devs[1].applied, vec![text("one copy")]);
    assert_eq!(w.devs[2].applied, vec![text("one copy")]);
    // Then C copies: A and B apply it, nothing else moves.
    w.tick(10);
    w.copy(2, text("from c"));
    w.settle();
    assert_eq!(w.publishes(), 2);
    assert_eq!(w.devs[0].applied, vec![text("from c")]);
    assert_eq!(w.devs[1].applied.last(), Some(&text("from c")));
    // All three hold the same item.
    for d in &w.devs {
        assert_eq!(d.clipboard, Some(text("from c")));
    }
}

#[test]
fn concurrent_copies_end_with_the_same_item_everywhere() {
    let mut w = World::new(3, Mode::Relay);
    // A and B copy in the same millisecond; neither has seen the other's.
    w.copy(0, text("from a"));
    w.copy(1, text("from b"));
    w.settle();
    // Newest wins with the tie broken by origin: B's item, everywhere.
    for d in &w.devs {
        assert_eq!(d.clipboard, Some(text("from b")), "device {}", d.id);
    }
    assert!(w.devs[1].applied.is_empty(), "B keeps its own item");
}

#[test]
fn restart_with_the_replay_state_refuses_a_replayed_clip() {
    let mut w = World::new(2, Mode::Relay);
    w.copy(0, text("old password"));
    w.settle();
    assert_eq!(w.devs[1].applied.len(), 1);
    let saved = w.devs[1].replay.clone();
    assert!(saved.is_some(), "replay state saved before the apply");
    let (from, env) = w.newest.clone().expect("relay holds the newest clip");
    // B restarts with what it persisted; the relay hands it the newest
    // clip again on reconnect.
    w.devs[1].engine = Engine::new(DeviceId(2), Mode::Relay, opts(), saved.as_ref());
    w.deliver(1, from, &env, Via::Relay { seq: 1 });
    assert_eq!(w.devs[1].applied.len(), 1, "replayed clip applied again");
    // Without the saved state it would have been applied.
    w.devs[1].engine = Engine::new(DeviceId(2), Mode::Relay, opts(), None);
    w.deliver(1, from, &env, Via::Relay { seq: 1 });
    assert_eq!(w.devs[1].applied.len(), 2);
}

#[test]
fn restart_of_the_sender_keeps_its_items_flowing() {
    let mut w = World::new(2, Mode::Relay);
    w.copy(0, text("before"));
    w.settle();
    // A restarts (its sequence counter continues above, as state.rs
    // guarantees) and copies something new.
    w.devs[0].engine = Engine::new(DeviceId(1), Mode::Relay, opts(), w.devs[0].replay.as_ref());
    w.devs[0].seq += crate::state::SEQ_BLOCK;
    w.tick(1000);
    w.copy(0, text("after"));
    w.settle();
    assert_eq!(w.devs[1].applied, vec![text("before"), text("after")]);
}

#[test]
fn a_local_read_from_before_a_remote_apply_is_stale() {
    let mut w = World::new(2, Mode::Relay);
    let read_at = w.now;
    w.tick(5);
    w.copy(0, text("remote"));
    w.settle();
    assert_eq!(w.devs[1].applied, vec![text("remote")]);
    // B's watcher had read an older item before the apply; it arrives now.
    w.input(
        1,
        Input::LocalClip {
            content: text("read before"),
            at_ms: read_at,
        },
    );
    w.settle();
    assert_eq!(w.devs[1].published.len(), 0, "stale read not published");
    assert!(w.devs[0].applied.is_empty());
    // A read after the apply is a real copy.
    w.tick(5);
    w.copy(1, text("new copy"));
    w.settle();
    assert_eq!(w.devs[0].applied, vec![text("new copy")]);
}

#[test]
fn auto_mode_the_second_copy_over_the_other_path_is_a_duplicate() {
    // Seen in the e2e tests: in auto mode a clip reaches a device over the
    // direct link before the relay's copy arrives.
    let mut w = World::new(2, Mode::Auto);
    w.copy(0, text("twice"));
    assert_eq!(w.devs[0].published, vec![(true, true)]);
    w.settle();
    assert_eq!(w.devs[1].applied, vec![text("twice")], "applied once");
    assert_eq!(
        w.devs[1].last_seen, 1,
        "the relay copy still counts as seen"
    );
}

#[test]
fn p2p_mode_uses_direct_links_only() {
    let mut w = World::new(2, Mode::P2p);
    assert_eq!(w.devs[0].engine.status().path, StatusPath::P2p);
    w.copy(0, text("direct"));
    assert_eq!(w.devs[0].published, vec![(true, false)]);
    w.settle();
    assert_eq!(w.relayed, 0);
    assert_eq!(w.devs[1].applied, vec![text("direct")]);
    // A clip through the relay (from a device in another mode) is ignored,
    // but its room sequence still counts as seen.
    let env = seal_clip(
        &w.key,
        DeviceId(1),
        99,
        &ClipItem {
            timestamp_ms: w.now + 10,
            content: text("via relay"),
        },
    );
    w.deliver(1, 0, &env, Via::Relay { seq: 7 });
    assert_eq!(w.devs[1].applied.len(), 1);
    assert_eq!(w.devs[1].last_seen, 7);
}

#[test]
fn p2p_mode_refuses_what_needs_the_blob_store() {
    let mut w = World::new(2, Mode::P2p);
    let big = ClipContent::Image {
        width: 1,
        height: 1,
        png: vec![0; MAX_INLINE_IMAGE + 1],
    };
    w.copy(0, big);
    assert!(w.devs[0].published.is_empty() && w.devs[0].uploads.is_empty());
    let e = w.devs[0]
        .engine
        .status()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(e.contains("--mode p2p sends images inline"), "{e}");
    w.input(
        0,
        Input::LocalFiles {
            paths: vec![PathBuf::from("/tmp/a")],
            at_ms: w.now,
        },
    );
    assert!(w.devs[0].uploads.is_empty());
    let e = w.devs[0]
        .engine
        .status()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(e.starts_with("file list not sent"), "{e}");
    // A large image under the inline cap goes inline over the links.
    let inline = ClipContent::Image {
        width: 1,
        height: 1,
        png: vec![1; 100 << 10],
    };
    w.tick(1);
    w.copy(0, inline.clone());
    w.settle();
    assert_eq!(w.devs[1].applied, vec![inline]);
}

#[test]
fn relay_mode_never_talks_to_the_link_manager() {
    let mut w = World::new(2, Mode::Relay);
    let online = vec![
        DeviceInfo {
            id: DeviceId(1),
            name: "a".into(),
        },
        DeviceInfo {
            id: DeviceId(2),
            name: "b".into(),
        },
    ];
    w.input(
        0,
        Input::LinkUp {
            online: online.clone(),
        },
    );
    assert!(w.devs[0].told_online.is_empty());
    let mut a = World::new(2, Mode::Auto);
    a.input(0, Input::LinkUp { online });
    assert_eq!(a.devs[0].told_online, vec![vec![DeviceId(1), DeviceId(2)]]);
    assert_eq!(a.devs[0].engine.online_others(), vec![DeviceId(2)]);
}

#[test]
fn status_follows_the_link_presence_and_peers() {
    let mut w = World::new(2, Mode::Auto);
    let s = w.devs[0].engine.status().clone();
    assert!(!s.connected);
    assert_eq!((s.mode.as_str(), s.device_id), ("auto", 1));
    w.input(
        0,
        Input::LinkUp {
            online: vec![DeviceInfo {
                id: DeviceId(1),
                name: "a".into(),
            }],
        },
    );
    w.input(
        0,
        Input::Presence {
            online: vec![
                DeviceInfo {
                    id: DeviceId(1),
                    name: "a".into(),
                },
                DeviceInfo {
                    id: DeviceId(2),
                    name: "b".into(),
                },
            ],
        },
    );
    w.input(
        0,
        Input::Peers(vec![PeerStatus {
            id: 2,
            path: PeerPath::P2p,
            link: "open".into(),
        }]),
    );
    let s = w.devs[0].engine.status().clone();
    assert!(s.connected);
    assert_eq!(s.online.len(), 2);
    assert_eq!(s.path, StatusPath::RelayP2p);
    w.input(0, Input::Peers(vec![]));
    assert_eq!(w.devs[0].engine.status().path, StatusPath::Relay);
    w.input(
        0,
        Input::LinkDown {
            reason: "relay unreachable".into(),
        },
    );
    let s = w.devs[0].engine.status().clone();
    assert!(!s.connected && s.online.is_empty());
    assert_eq!(s.last_error.as_deref(), Some("relay unreachable"));
    // The status request answers with the model.
    w.input(
        0,
        Input::Control {
            ticket: Ticket(1),
            request: Request::Status,
        },
    );
    let (t, r) = w.devs[0].replies.pop().expect("answered");
    assert_eq!(t, Ticket(1));
    assert_eq!(r.status.map(|s| s.connected), Some(false));
}

fn file_entry(size: u64) -> FileEntry {
    FileEntry {
        name: "report.pdf".into(),
        size,
        body: FileBody::Blob {
            id: BlobId([7; 16]),
            key: BlobKey::from_bytes([9; 32]),
            sha256: NO_DIGEST,
        },
    }
}

/// Seals a file list from device `from` (index) as if it had uploaded it.
fn send_files(w: &mut World, from: usize, size: u64) {
    let dev = &mut w.devs[from];
    dev.seq += 1;
    let item = ClipItem {
        timestamp_ms: w.now,
        content: ClipContent::Files(vec![file_entry(size)]),
    };
    let env = seal_clip(&w.key, dev.id, dev.seq, &item);
    w.wire.push_back(Wire {
        from,
        via_relay: true,
        to: None,
        envelope: env,
    });
    w.settle();
}

#[test]
fn a_download_that_finishes_after_a_newer_copy_is_not_applied() {
    let mut w = World::new(2, Mode::Relay);
    send_files(&mut w, 0, 1000);
    let (job, _) = w.devs[1].downloads.pop().expect("download started");
    // The user copies something on B while the download runs.
    w.tick(5);
    w.copy(1, text("newer"));
    w.input(
        1,
        Input::Downloaded {
            job,
            result: Downloaded::Files(vec![PathBuf::from("/dl/report.pdf")]),
        },
    );
    assert!(w.devs[1].applied_files.is_empty());
    // Without the newer copy it is applied.
    w.tick(5);
    send_files(&mut w, 0, 2000);
    let (job, _) = w.devs[1].downloads.pop().expect("download started");
    w.input(
        1,
        Input::Downloaded {
            job,
            result: Downloaded::Files(vec![PathBuf::from("/dl/report.pdf")]),
        },
    );
    assert_eq!(w.devs[1].applied_files.len(), 1);
}

#[test]
fn an_item_over_auto_download_max_waits_for_fetch() {
    let mut o = opts();
    o.auto_download_max = 100;
    let mut w = World::with(2, Mode::Relay, o);
    send_files(&mut w, 0, 5000);
    assert!(w.devs[1].downloads.is_empty());
    let e = w.devs[1]
        .engine
        .status()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(e.contains("5000 bytes") && !e.contains("report"), "{e}");
    w.input(
        1,
        Input::Control {
            ticket: Ticket(1),
            request: Request::Status,
        },
    );
    let pending = w.devs[1].replies.pop().and_then(|(_, r)| r.status?.pending);
    assert_eq!(pending.map(|p| (p.files, p.bytes)), Some((1, 5000)));
    // fetch: downloaded, applied, answered.
    w.input(
        1,
        Input::Control {
            ticket: Ticket(2),
            request: Request::Fetch,
        },
    );
    let (job, _) = w.devs[1]
        .downloads
        .pop()
        .expect("fetch starts the download");
    assert!(w.devs[1].replies.is_empty(), "answered only when applied");
    w.tick(5);
    w.copy(1, text("meanwhile"));
    w.input(
        1,
        Input::Downloaded {
            job,
            result: Downloaded::Files(vec![PathBuf::from("/dl/report.pdf")]),
        },
    );
    assert_eq!(
        w.devs[1].applied_files.len(),
        1,
        "a fetch is applied anyway"
    );
    let (t, r) = w.devs[1].replies.pop().expect("answered");
    assert_eq!((t, r.ok), (Ticket(2), true));
    // Nothing waits any more.
    w.input(
        1,
        Input::Control {
            ticket: Ticket(3),
            request: Request::Fetch,
        },
    );
    let (_, r) = w.devs[1].replies.pop().expect("answered");
    assert!(r.error.unwrap_or_default().contains("nothing to fetch"));
}

#[test]
fn a_failed_fetch_is_answered_with_its_error() {
    let mut o = opts();
    o.auto_download_max = 100;
    let mut w = World::with(2, Mode::Relay, o);
    send_files(&mut w, 0, 5000);
    w.input(
        1,
        Input::Control {
            ticket: Ticket(4),
            request: Request::Fetch,
        },
    );
    let (job, _) = w.devs[1].downloads.pop().expect("download started");
    w.input(
        1,
        Input::TransferFailed {
            job,
            message: "received files discarded: blob expired".into(),
        },
    );
    let (t, r) = w.devs[1].replies.pop().expect("answered");
    assert_eq!(t, Ticket(4));
    assert_eq!(
        r.error.as_deref(),
        Some("received files discarded: blob expired")
    );
}

#[test]
fn a_large_local_image_is_uploaded_then_published_as_a_reference() {
    let mut w = World::new(2, Mode::Relay);
    w.devs[0].watcher_echoes = true;
    let png = vec![3; 200 << 10];
    let image = ClipContent::Image {
        width: 2,
        height: 2,
        png: png.clone(),
    };
    w.copy(0, image.clone());
    assert!(
        w.devs[0].published.is_empty(),
        "nothing published before the upload"
    );
    let (job, o) = w.devs[0].uploads.pop().expect("upload started");
    assert!(matches!(o, Output::UploadImage { png: p, .. } if p == png));
    let reference = ClipContent::ImageBlob {
        width: 2,
        height: 2,
        size: png.len() as u64,
        id: BlobId([1; 16]),
        key: BlobKey::from_bytes([2; 32]),
        sha256: [0; 32],
    };
    w.input(
        0,
        Input::UploadAnnounced {
            job,
            content: reference,
        },
    );
    w.settle();
    assert_eq!(w.devs[0].published.len(), 1);
    assert_eq!(w.devs[1].downloads.len(), 1, "B downloads the reference");
    w.input(0, Input::UploadDone { job });
    // The same image read again on A is not a change.
    w.tick(5);
    w.copy(0, image);
    assert_eq!(w.devs[0].published.len(), 1);
}

#[test]
fn send_waits_for_the_ack_and_times_out() {
    let mut w = World::new(2, Mode::Relay);
    w.input(
        0,
        Input::Control {
            ticket: Ticket(1),
            request: Request::Send {
                text: "by pipe".into(),
            },
        },
    );
    assert_eq!(w.devs[0].published.len(), 1);
    assert_eq!(
        w.devs[0].engine.poll_timeout(),
        Some(w.now + SEND_ACK_TIMEOUT_MS)
    );
    // The relay's outcome answers it.
    w.input(
        0,
        Input::SendOutcome {
            ticket: Ticket(1),
            result: Ok(42),
        },
    );
    let (_, r) = w.devs[0].replies.pop().expect("answered");
    assert_eq!((r.ok, r.seq), (true, Some(42)));
    assert_eq!(w.devs[0].engine.poll_timeout(), None);
    // No ack: answered at the deadline, not before, and only once.
    w.input(
        0,
        Input::Control {
            ticket: Ticket(2),
            request: Request::Send {
                text: "lost".into(),
            },
        },
    );
    let deadline = w.devs[0].engine.poll_timeout().expect("waiting");
    w.now = deadline - 1;
    w.input(0, Input::Timeout);
    assert!(w.devs[0].replies.is_empty());
    w.now = deadline;
    w.input(0, Input::Timeout);
    let (t, r) = w.devs[0].replies.pop().expect("answered");
    assert_eq!(t, Ticket(2));
    assert!(r.error.unwrap_or_default().contains("did not acknowledge"));
    w.input(
        0,
        Input::SendOutcome {
            ticket: Ticket(2),
            result: Ok(43),
        },
    );
    assert!(
        w.devs[0].replies.is_empty(),
        "a late ack is not answered twice"
    );
}

#[test]
fn send_is_refused_when_too_large_and_publish_failures_reach_status() {
    let mut o = opts();
    o.max_item_bytes = 4;
    let mut w = World::with(2, Mode::Relay, o);
    w.input(
        0,
        Input::Control {
            ticket: Ticket(1),
            request: Request::Send {
                text: "too long".into(),
            },
        },
    );
    let (_, r) = w.devs[0].replies.pop().expect("answered");
    assert!(r.error.unwrap_or_default().contains("max_item_bytes (4)"));
    assert!(w.devs[0].published.is_empty());
    w.input(
        0,
        Input::Control {
            ticket: Ticket(2),
            request: Request::Send { text: "ok".into() },
        },
    );
    w.input(
        0,
        Input::PublishFailed {
            ticket: Some(Ticket(2)),
            message: "not connected to the relay".into(),
        },
    );
    let (_, r) = w.devs[0].replies.pop().expect("answered");
    assert_eq!(r.error.as_deref(), Some("not connected to the relay"));
    assert_eq!(w.devs[0].engine.poll_timeout(), None);
    assert_eq!(
        w.devs[0].engine.status().last_error.as_deref(),
        Some("not connected to the relay")
    );
}

#[test]
fn policy_send_only_receive_only_and_types() {
    let mut o = opts();
    o.receive_only = true;
    let mut w = World::with(2, Mode::Relay, o);
    w.copy(0, text("kept here"));
    assert!(w.devs[0].published.is_empty());
    // Still the newest item here: an older remote one does not replace it.
    let env = seal_clip(
        &w.key,
        DeviceId(2),
        1,
        &ClipItem {
            timestamp_ms: w.now - 10,
            content: text("older"),
        },
    );
    w.deliver(0, 1, &env, Via::Relay { seq: 1 });
    assert!(w.devs[0].applied.is_empty());

    let mut o = opts();
    o.send_only = true;
    o.html = false;
    let mut w = World::with(2, Mode::Relay, o);
    w.copy(
        0,
        ClipContent::Html {
            html: "<b>x</b>".into(),
            alt_text: "x".into(),
        },
    );
    assert!(w.devs[0].published.is_empty(), "html off");
    w.copy(1, text("to a send-only device"));
    w.settle();
    assert!(w.devs[0].applied.is_empty(), "send-only applies nothing");
}

#[test]
fn an_envelope_that_does_not_open_is_reported_not_applied() {
    let mut w = World::new(2, Mode::Relay);
    w.input(
        1,
        Input::Received {
            via: Via::Relay { seq: 3 },
            from: DeviceId(1),
            opened: Err("envelope could not be opened".into()),
        },
    );
    assert!(w.devs[1].applied.is_empty());
    assert_eq!(w.devs[1].last_seen, 3);
    assert_eq!(
        w.devs[1].engine.status().last_error.as_deref(),
        Some("envelope could not be opened")
    );
}

#[test]
fn a_clip_older_than_the_ttl_is_not_applied() {
    let mut o = opts();
    o.clip_ttl_s = 60;
    let mut w = World::with(2, Mode::Relay, o);
    let env = seal_clip(
        &w.key,
        DeviceId(1),
        1,
        &ClipItem {
            timestamp_ms: w.now - 61_000,
            content: text("old"),
        },
    );
    w.deliver(1, 0, &env, Via::Relay { seq: 1 });
    assert!(w.devs[1].applied.is_empty());
    let e = w.devs[1]
        .engine
        .status()
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(e.contains("older than clip_ttl_s (60)"), "{e}");
    assert!(w.devs[1].replay.is_some(), "its sequence is remembered");
}

/// **Architecture Invariant** check: the engine's source names no runtime,
/// socket, file system or clock.
#[test]
fn the_engine_does_no_io() {
    let src = include_str!("../engine.rs");
    for banned in [
        "tokio",
        "std::fs",
        "std::net",
        "std::thread",
        "SystemTime",
        "Instant",
        "now_ms()",
        "clock::",
        "spawn",
    ] {
        assert!(!src.contains(banned), "engine.rs mentions {banned}");
    }
}

#[test]
fn repeats_reported_by_the_watcher_are_dropped_here() {
    // The backends report every read but their own writes; an application
    // re-asserting the same data, or PRIMARY mirroring CLIPBOARD, reaches
    // the engine, which finds it unchanged.
    let mut w = World::new(2, Mode::Relay);
    w.copy(0, text("x"));
    // `clipmesh send` publishes something the clipboard does not hold ...
    w.input(
        0,
        Input::Control {
            ticket: Ticket(1),
            request: Request::Send {
                text: "piped".into(),
            },
        },
    );
    assert_eq!(w.devs[0].published.len(), 2);
    // ... so the clipboard's item re-asserted is still not a change.
    w.tick(5);
    w.copy(0, text("x"));
    assert_eq!(w.devs[0].published.len(), 2);
    // A file list read twice is uploaded once; a different one again.
    let files = vec![PathBuf::from("/home/u/a.txt")];
    for _ in 0..2 {
        w.input(
            0,
            Input::LocalFiles {
                paths: files.clone(),
                at_ms: w.now,
            },
        );
    }
    assert_eq!(w.devs[0].uploads.len(), 1);
    w.input(
        0,
        Input::LocalFiles {
            paths: vec![PathBuf::from("/home/u/b.txt")],
            at_ms: w.now,
        },
    );
    assert_eq!(w.devs[0].uploads.len(), 2);
}

#[test]
fn received_files_read_back_are_not_sent_again() {
    let mut w = World::new(2, Mode::Relay);
    send_files(&mut w, 0, 1000);
    let (job, _) = w.devs[1].downloads.pop().expect("download started");
    let paths = vec![PathBuf::from("/dl/1/report.pdf")];
    w.input(
        1,
        Input::Downloaded {
            job,
            result: Downloaded::Files(paths.clone()),
        },
    );
    assert_eq!(w.devs[1].applied_files, vec![paths.clone()]);
    w.input(
        1,
        Input::LocalFiles {
            paths,
            at_ms: w.now,
        },
    );
    assert!(w.devs[1].uploads.is_empty(), "our own apply is not a copy");
}
