//! The device engine: every decision `clipmesh run` makes, without IO.
//!
//! **Contract** (the same idiom as [`crate::session`] and the room core):
//!
//! - [`Engine::handle`]`(input, now_ms)` feeds it one [`Input`]: a local copy,
//!   an opened envelope from the relay or a direct link, a link or presence
//!   change, an ack, a finished transfer, an applied item, a control request,
//!   or [`Input::Timeout`];
//! - [`Engine::poll_output`] drains what it wants done, in order, as
//!   [`Output`]s: publish an item, put one on the clipboard, start an upload
//!   or download, save the replay state or the last room sequence, tell the
//!   direct-link manager who is online, answer a control request;
//! - [`Engine::poll_timeout`] says when (wall clock, ms) to feed
//!   [`Input::Timeout`] next, if ever.
//!
//! Time is the argument `now_ms`; the engine never reads a clock, opens a
//! socket or a file, or starts a task (`the_engine_does_no_io` in its
//! tests fails if this file names an async runtime, the file system,
//! sockets, threads or a clock).
//! The driver ([`crate::daemon`]) carries the outputs out *in order*: a
//! [`Output::SaveReplay`] comes before the [`Output::Apply`] it protects.
//! Sealing and opening envelopes stay with the driver (they are the crypto
//! boundary); the engine sees [`ClipItem`]s and [`ClipMeta`]s.
//!
//! What it owns:
//!
//! - **New, echo or stale**: one decision in [`crate::sync::SyncEngine`] over
//!   one content hash ([`clipmesh_proto::ContentHash`]); an item read from
//!   the local clipboard is new unless it is what the clipboard already held
//!   (our own apply, an application re-asserting the same data, PRIMARY
//!   mirroring CLIPBOARD) or was read before a remote item replaced it. The
//!   clipboard backends drop only reads of their own writes, which they
//!   alone can recognise;
//! - **newest wins**: a received item is applied only if it is newer than
//!   the clipboard's item, and a download that finishes after something
//!   newer reached the clipboard is kept but not applied (a generation
//!   counter);
//! - **mode** ([`Mode`]: which paths an item is published on and accepted
//!   from) and **size/type policy** ([`SyncOptions`]);
//! - **waiting work**: the received item over `auto_download_max` kept for
//!   `clipmesh fetch`, downloads and uploads by job, `clipmesh send`s waiting
//!   for the relay's ack (with [`SEND_ACK_TIMEOUT`]);
//! - **presence** and the [`Status`] model `clipmesh status` prints.

use crate::config::{item_size, SyncOptions};
use crate::control::{AnnouncedDevice, OnlineDevice, Request, Response, Status, StatusPath};
use crate::p2p::{Mode, PeerPath, PeerStatus, MAX_INLINE_IMAGE};
use crate::replay::Replay;
use crate::sync::{local_files_hash, LocalDecision, RemoteDecision, SyncEngine};
use crate::transfer::{Pending, SendLimits, WalkLimits};
use clipmesh_proto::content::ClipMeta;
use clipmesh_proto::{ClipContent, ClipItem, ContentHash, DeviceId, DeviceInfo};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

/// How many announced devices `clipmesh status` keeps (the oldest go).
pub const MAX_ANNOUNCED: usize = 8;

/// How long `clipmesh send` through the daemon waits for the relay's ack, ms.
pub const SEND_ACK_TIMEOUT_MS: u64 = 30_000;
/// [`SEND_ACK_TIMEOUT_MS`] as a duration.
pub const SEND_ACK_TIMEOUT: std::time::Duration =
    std::time::Duration::from_millis(SEND_ACK_TIMEOUT_MS);

/// Names one control request until it is answered (the driver keeps the
/// answer channel under it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Names one upload or download the engine started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId(pub u64);

/// Which way an envelope came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Delivered by the relay, with the room sequence it assigned.
    Relay {
        /// Room sequence (saved as the last seen once handled).
        seq: u64,
    },
    /// Over a direct link.
    Direct,
}

/// What a finished download produced.
#[derive(Debug)]
pub enum Downloaded {
    /// Received files, in the download folder.
    Files(Vec<PathBuf>),
    /// A received image, in memory.
    Image(ClipContent),
}

/// Something that happened, fed to [`Engine::handle`].
#[derive(Debug)]
pub enum Input {
    /// The watcher read a new item from the local clipboard at `at_ms`.
    LocalClip {
        /// The item.
        content: ClipContent,
        /// When it was read (this device's clock).
        at_ms: u64,
    },
    /// The watcher read a file list from the local clipboard.
    LocalFiles {
        /// Local paths, as copied.
        paths: Vec<PathBuf>,
        /// When it was read.
        at_ms: u64,
    },
    /// The clipboard watcher ended.
    WatcherStopped,
    /// An envelope from another device, opened by the driver (or not:
    /// `opened` is the open error's one line).
    Received {
        /// The path it came on.
        via: Via,
        /// The sending device (stamped by the relay or the link).
        from: DeviceId,
        /// Its header and item, or why it could not be opened.
        opened: Result<(ClipMeta, ClipItem), String>,
    },
    /// The relay link is up with these devices online.
    LinkUp {
        /// Devices online now (this one included).
        online: Vec<DeviceInfo>,
    },
    /// The relay link dropped; it is retried.
    LinkDown {
        /// One line.
        reason: String,
    },
    /// The online set changed.
    Presence {
        /// Devices online now.
        online: Vec<DeviceInfo>,
    },
    /// The direct-link manager's view of each peer changed.
    Peers(Vec<PeerStatus>),
    /// The relay acknowledged a publish with room sequence `seq`.
    Acked {
        /// Room sequence.
        seq: u64,
    },
    /// The relay reported an error.
    RelayError {
        /// Its message.
        message: String,
    },
    /// An [`Output::Publish`] could not be carried out (no sequence number,
    /// the link refused it).
    PublishFailed {
        /// The waiting `clipmesh send`, if any.
        ticket: Option<Ticket>,
        /// One line.
        message: String,
    },
    /// The outcome of a published `clipmesh send`: the room sequence, or why
    /// it did not get there.
    SendOutcome {
        /// Which send.
        ticket: Ticket,
        /// Room sequence (0 over direct links only) or one line.
        result: Result<u64, String>,
    },
    /// An upload published its reference early: publish `content` now.
    UploadAnnounced {
        /// Which upload.
        job: JobId,
        /// The item with blob references.
        content: ClipContent,
    },
    /// An upload finished.
    UploadDone {
        /// Which upload.
        job: JobId,
    },
    /// A download finished.
    Downloaded {
        /// Which download.
        job: JobId,
        /// What it produced.
        result: Downloaded,
    },
    /// An upload or download failed (already logged by the driver).
    TransferFailed {
        /// Which one.
        job: JobId,
        /// One line for status.
        message: String,
    },
    /// An [`Output::Apply`] or [`Output::ApplyFiles`] was carried out.
    Applied {
        /// The `clipmesh fetch` waiting for it, if any.
        ticket: Option<Ticket>,
        /// The clipboard's error, if it failed.
        result: Result<(), String>,
    },
    /// A control request (`clipmesh status`, `send`, `fetch`).
    Control {
        /// Its answer goes out as [`Output::Reply`] with this ticket.
        ticket: Ticket,
        /// The request.
        request: Request,
    },
    /// The device moved to key epoch `epoch` (protocol v2).
    KeyEpoch {
        /// The epoch it seals under now.
        epoch: u32,
    },
    /// Devices seen in the account for the first time: announced in the
    /// log and in status, never silently.
    DevicesAnnounced(Vec<crate::clipkeys::NewDevice>),
    /// The account's keys need attention (a refused key, an epoch this
    /// device cannot open); one line, already logged by the driver.
    KeyProblem {
        /// The line.
        message: String,
    },
    /// [`Engine::poll_timeout`]'s moment has come.
    Timeout,
}

/// Something the engine wants done, drained by [`Engine::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Reserve a sequence number, seal `item` and publish it: over every
    /// open direct link when `direct`, through the relay when `relay`
    /// (direct-only publishes report their outcome from the links).
    Publish {
        /// The item.
        item: ClipItem,
        /// Over direct links.
        direct: bool,
        /// Through the relay.
        relay: bool,
        /// The `clipmesh send` waiting for it: report
        /// [`Input::SendOutcome`].
        ticket: Option<Ticket>,
    },
    /// Put `content` on the clipboard; report [`Input::Applied`].
    Apply {
        /// The item.
        content: ClipContent,
        /// Passed back in [`Input::Applied`].
        ticket: Option<Ticket>,
    },
    /// Put these files on the clipboard; report [`Input::Applied`].
    ApplyFiles {
        /// Local paths (the download folder).
        paths: Vec<PathBuf>,
        /// Passed back in [`Input::Applied`].
        ticket: Option<Ticket>,
    },
    /// Upload a large image as a blob; announce its reference
    /// ([`Input::UploadAnnounced`]) as soon as it is declared.
    UploadImage {
        /// Job id for the reports.
        job: JobId,
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
        /// PNG bytes.
        png: Vec<u8>,
    },
    /// Upload a copied file list; announce its reference as soon as the
    /// blobs are declared.
    UploadFiles {
        /// Job id for the reports.
        job: JobId,
        /// Local paths.
        paths: Vec<PathBuf>,
        /// What may be sent.
        limits: SendLimits,
    },
    /// Download a received file list or image reference.
    Download {
        /// Job id for the reports.
        job: JobId,
        /// The received item (references and keys).
        item: ClipItem,
    },
    /// Write the replay state (before the apply that follows).
    SaveReplay(Replay),
    /// Write the newest room sequence seen.
    SaveLastSeen(u64),
    /// Tell the direct-link manager who is online (direct modes only).
    Online(Vec<DeviceId>),
    /// Answer a control request.
    Reply {
        /// Which request.
        ticket: Ticket,
        /// The answer. A `status` answer lacks the live transfer list,
        /// which the driver adds.
        response: Response,
    },
}

/// What a running job is for.
#[derive(Debug)]
enum Job {
    /// An upload of a local item read at `at_ms`; its publish is recorded
    /// as `dedupe_as` (the local item's hash) when set, else as the
    /// announced content.
    Upload {
        at_ms: u64,
        dedupe_as: Option<ContentHash>,
    },
    /// A download started at `generation`; `ticket` when `clipmesh fetch`
    /// waits for it.
    Download {
        generation: u64,
        ticket: Option<Ticket>,
    },
}

/// The device engine (see the module docs).
#[derive(Debug)]
pub struct Engine {
    /// This device.
    me: DeviceId,
    /// How clips travel.
    mode: Mode,
    /// What to sync and how large.
    opts: SyncOptions,
    /// New/echo/stale and newest-wins decisions, replay state.
    sync: SyncEngine,
    /// What `clipmesh status` shows (transfers excepted).
    status: Status,
    /// Bumped whenever the clipboard's item changes (sent or applied), so
    /// a download that finishes late does not replace something newer.
    generation: u64,
    /// A received item over `auto_download_max`, kept for `clipmesh fetch`.
    pending: Option<Pending>,
    /// Running uploads and downloads.
    jobs: HashMap<JobId, Job>,
    /// The next job id.
    next_job: u64,
    /// `clipmesh send`s waiting for the relay's ack: their deadlines.
    sends: HashMap<Ticket, u64>,
    /// What the driver has not drained yet.
    out: VecDeque<Output>,
}

impl Engine {
    /// An engine for device `me` in `mode` with `opts`, restoring the replay
    /// state an earlier run persisted.
    pub fn new(me: DeviceId, mode: Mode, opts: SyncOptions, replay: Option<&Replay>) -> Self {
        let mut sync = SyncEngine::new(me).with_ttl_ms(opts.clip_ttl_s.saturating_mul(1000));
        if let Some(r) = replay {
            sync.restore(r);
        }
        Self {
            me,
            mode,
            opts,
            sync,
            status: Status {
                path: if mode == Mode::P2p {
                    StatusPath::P2p
                } else {
                    StatusPath::Relay
                },
                mode: mode.as_str().into(),
                device_id: me.0,
                ..Status::default()
            },
            generation: 0,
            pending: None,
            jobs: HashMap::new(),
            next_job: 0,
            sends: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// The status model (transfers excepted).
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Other devices online now.
    pub fn online_others(&self) -> Vec<DeviceId> {
        self.status
            .online
            .iter()
            .map(|d| DeviceId(d.id))
            .filter(|d| *d != self.me)
            .collect()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When to feed [`Input::Timeout`] next (wall clock, ms).
    pub fn poll_timeout(&self) -> Option<u64> {
        self.sends.values().copied().min()
    }

    /// Feeds one input at `now_ms` (wall clock, ms since the epoch).
    pub fn handle(&mut self, input: Input, now_ms: u64) {
        match input {
            Input::LocalClip { content, at_ms } => self.on_local(content, at_ms, None, now_ms),
            Input::LocalFiles { paths, at_ms } => self.on_local_files(paths, at_ms),
            Input::WatcherStopped => {
                tracing::warn!("clipboard watcher stopped; receiving only");
                self.status.last_error = Some("clipboard watcher stopped".into());
            }
            Input::Received { via, from, opened } => {
                self.on_received(via, from, opened, now_ms);
                if let Via::Relay { seq } = via {
                    self.out.push_back(Output::SaveLastSeen(seq));
                }
            }
            Input::LinkUp { online } => {
                self.status.connected = true;
                self.set_online(&online);
            }
            Input::LinkDown { reason } => {
                self.status.connected = false;
                self.status.online.clear();
                self.status.last_error = Some(reason);
            }
            Input::Presence { online } => self.set_online(&online),
            Input::KeyEpoch { epoch } => self.status.key_epoch = Some(epoch),
            Input::DevicesAnnounced(devices) => {
                for d in devices {
                    tracing::warn!(
                        "new device in this account: {} \"{}\", safety number {}",
                        d.id.0,
                        d.name,
                        d.fingerprint
                    );
                    if self.status.new_devices.len() >= MAX_ANNOUNCED {
                        self.status.new_devices.remove(0);
                    }
                    self.status.new_devices.push(AnnouncedDevice {
                        id: d.id.0,
                        name: d.name,
                        fingerprint: d.fingerprint.to_string(),
                    });
                }
            }
            Input::KeyProblem { message } => self.status.last_error = Some(message),
            Input::Peers(peers) => {
                let any_open = peers.iter().any(|p| p.path == PeerPath::P2p);
                self.status.path = match self.mode {
                    Mode::P2p => StatusPath::P2p,
                    _ if any_open => StatusPath::RelayP2p,
                    _ => StatusPath::Relay,
                };
                self.status.peers = peers;
            }
            Input::Acked { seq } => {
                self.status.last_sync_ms = Some(now_ms);
                self.out.push_back(Output::SaveLastSeen(seq));
            }
            Input::RelayError { message } => self.status.last_error = Some(message),
            Input::PublishFailed { ticket, message } => {
                self.status.last_error = Some(message.clone());
                if let Some(t) = ticket {
                    self.sends.remove(&t);
                    self.reply(t, Response::error(message));
                }
            }
            Input::SendOutcome { ticket, result } => {
                if self.sends.remove(&ticket).is_none() {
                    return; // already answered (timed out)
                }
                let response = match result {
                    Ok(seq) => Response {
                        ok: true,
                        seq: Some(seq),
                        ..Response::default()
                    },
                    Err(e) => Response::error(e),
                };
                self.reply(ticket, response);
            }
            Input::UploadAnnounced { job, content } => {
                if let Some(Job::Upload { at_ms, dedupe_as }) = self.jobs.get(&job) {
                    let (at_ms, dedupe_as) = (*at_ms, *dedupe_as);
                    self.publish(content, dedupe_as, at_ms, None);
                }
            }
            Input::UploadDone { job } => {
                self.jobs.remove(&job);
                tracing::debug!("upload finished");
            }
            Input::Downloaded { job, result } => self.on_downloaded(job, result),
            Input::TransferFailed { job, message } => {
                self.status.last_error = Some(message.clone());
                if let Some(Job::Download {
                    ticket: Some(t), ..
                }) = self.jobs.remove(&job)
                {
                    self.reply(t, Response::error(message));
                }
            }
            Input::Applied { ticket, result } => match (result, ticket) {
                (Ok(()), t) => {
                    self.status.last_sync_ms = Some(now_ms);
                    match t {
                        Some(t) => {
                            tracing::info!("fetched item is on the clipboard");
                            self.reply(
                                t,
                                Response {
                                    ok: true,
                                    ..Response::default()
                                },
                            );
                        }
                        None => tracing::debug!("received item is on the clipboard"),
                    }
                }
                (Err(e), Some(t)) => {
                    self.status.last_error = Some(e.clone());
                    self.reply(t, Response::error(e));
                }
                (Err(e), None) => {
                    tracing::warn!(error = %e, "could not set the clipboard");
                    self.status.last_error = Some(format!("clipboard: {e}"));
                }
            },
            Input::Control { ticket, request } => self.on_control(ticket, request, now_ms),
            Input::Timeout => {
                let expired: Vec<Ticket> = self
                    .sends
                    .iter()
                    .filter(|(_, at)| **at <= now_ms)
                    .map(|(t, _)| *t)
                    .collect();
                for t in expired {
                    self.sends.remove(&t);
                    self.reply(
                        t,
                        Response::error(
                            "the relay did not acknowledge the clip in time; it will be retried",
                        ),
                    );
                }
            }
        }
    }

    fn reply(&mut self, ticket: Ticket, response: Response) {
        self.out.push_back(Output::Reply { ticket, response });
    }

    fn job(&mut self, job: Job) -> JobId {
        self.next_job += 1;
        let id = JobId(self.next_job);
        self.jobs.insert(id, job);
        id
    }

    fn set_online(&mut self, online: &[DeviceInfo]) {
        if self.mode.uses_direct_links() {
            self.out
                .push_back(Output::Online(online.iter().map(|d| d.id).collect()));
        }
        self.status.online = online
            .iter()
            .map(|d| OnlineDevice {
                id: d.id.0,
                name: d.name.clone(),
            })
            .collect();
    }

    /// Sets and logs a one-line status problem.
    fn problem(&mut self, msg: String) {
        tracing::info!("{msg}");
        self.status.last_error = Some(msg);
    }

    /// A local clipboard change, or `clipmesh send` when `explicit` names
    /// its ticket.
    fn on_local(
        &mut self,
        content: ClipContent,
        at_ms: u64,
        explicit: Option<Ticket>,
        now_ms: u64,
    ) {
        let kind = content.kind_name();
        let len = content.payload_len();
        if explicit.is_none() {
            match self.sync.on_local(&content, at_ms) {
                LocalDecision::Send => {}
                LocalDecision::Unchanged => {
                    tracing::trace!(kind, len, "local change is not new");
                    return;
                }
                LocalDecision::Stale => {
                    // Read before a remote item was put on the clipboard,
                    // which holds that item now.
                    tracing::debug!(kind, len, "local change superseded by a remote item");
                    return;
                }
            }
        }
        // Something new was copied here: a download still running must not
        // replace it when it finishes (newest wins).
        self.generation += 1;
        if explicit.is_none() && (self.opts.receive_only || !self.opts.allows(&content)) {
            tracing::debug!(
                kind,
                len,
                "local change not synced (receive-only or type off)"
            );
            self.sync.record_local_only(&content, at_ms);
            return;
        }
        if !self.opts.fits(&content) {
            tracing::info!(
                kind,
                len,
                max = self.opts.max_item_bytes,
                "local item too large; not synced"
            );
            self.sync.record_local_only(&content, at_ms);
            return;
        }
        if let ClipContent::Image { width, height, png } = &content {
            let large = png.len() as u64 >= self.opts.inline_threshold;
            if large && self.mode == Mode::P2p && png.len() > MAX_INLINE_IMAGE {
                self.problem(format!(
                    "image of {} bytes not sent: --mode p2p sends images inline over direct \
                     links up to {} bytes; larger ones travel through the relay's blob store \
                     (run with --mode auto to sync them)",
                    png.len(),
                    MAX_INLINE_IMAGE
                ));
                self.sync.record_local_only(&content, at_ms);
                return;
            }
            // In p2p mode a large image goes inline over the links.
            if large && self.mode != Mode::P2p {
                self.sync.record_local_only(&content, at_ms);
                let (width, height) = (*width, *height);
                let dedupe_as = Some(ContentHash::of(&content));
                let ClipContent::Image { png, .. } = content else {
                    return;
                };
                let job = self.job(Job::Upload { at_ms, dedupe_as });
                self.out.push_back(Output::UploadImage {
                    job,
                    width,
                    height,
                    png,
                });
                return;
            }
        }
        if let Some(t) = explicit {
            self.sends
                .insert(t, now_ms.saturating_add(SEND_ACK_TIMEOUT_MS));
        }
        self.publish(content, None, at_ms, explicit);
    }

    /// A copied file list: upload it, publish when its reference is known.
    fn on_local_files(&mut self, paths: Vec<PathBuf>, at_ms: u64) {
        if self.sync.on_local_files(&paths) == LocalDecision::Unchanged {
            tracing::trace!(count = paths.len(), "local file list is not new");
            return;
        }
        self.generation += 1;
        if self.opts.receive_only || !self.opts.files {
            tracing::debug!(
                count = paths.len(),
                "file list not synced (receive-only or files off)"
            );
            return;
        }
        if self.refuse_blob_in_p2p("file list") {
            return;
        }
        let job = self.job(Job::Upload {
            at_ms,
            dedupe_as: None,
        });
        let limits = SendLimits {
            inline_threshold: self.opts.inline_threshold,
            walk: WalkLimits {
                max_files: self.opts.max_files.min(clipmesh_proto::content::MAX_FILES),
                max_bytes: self.opts.max_item_bytes,
            },
        };
        self.out
            .push_back(Output::UploadFiles { job, paths, limits });
    }

    /// In p2p mode, large items (which travel through the relay's blob
    /// store) are refused with one line; returns true when refused.
    fn refuse_blob_in_p2p(&mut self, what: &str) -> bool {
        if self.mode != Mode::P2p {
            return false;
        }
        self.problem(format!(
            "{what} not sent: large images and files travel through the relay's blob store, \
             which --mode p2p does not use (run with --mode auto to sync them)"
        ));
        true
    }

    /// Publishes `content` (recording `dedupe_as`, default the content's own
    /// hash, as the clipboard's current item).
    fn publish(
        &mut self,
        content: ClipContent,
        dedupe_as: Option<ContentHash>,
        at_ms: u64,
        ticket: Option<Ticket>,
    ) {
        let hash = dedupe_as.unwrap_or_else(|| ContentHash::of(&content));
        self.sync.record_sent_hash(hash, at_ms);
        self.generation += 1;
        tracing::debug!(
            kind = content.kind_name(),
            len = content.payload_len(),
            "publishing local change"
        );
        self.out.push_back(Output::Publish {
            item: ClipItem {
                timestamp_ms: at_ms,
                content,
            },
            direct: self.mode.uses_direct_links(),
            relay: self.mode != Mode::P2p,
            ticket,
        });
    }

    /// An envelope from another device.
    fn on_received(
        &mut self,
        via: Via,
        from: DeviceId,
        opened: Result<(ClipMeta, ClipItem), String>,
        now_ms: u64,
    ) {
        if matches!(via, Via::Relay { .. }) && self.mode == Mode::P2p {
            // Published through the relay by a device in another mode: p2p
            // mode takes clips from direct links only.
            tracing::debug!(%from, "p2p mode: clip from the relay ignored");
            return;
        }
        if self.opts.send_only {
            tracing::debug!(%from, "send-only: received clip ignored");
            return;
        }
        let (meta, item) = match opened {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%from, "{e}");
                self.status.last_error = Some(e);
                return;
            }
        };
        let kind = item.content.kind_name();
        let len = item.content.payload_len();
        if !self.opts.allows(&item.content) {
            tracing::debug!(kind, len, "received clip not applied (type off)");
            return;
        }
        if !self.opts.fits(&item.content) {
            self.problem(format!(
                "received {kind} of {} bytes not applied: over the configured limits \
                 (max_item_bytes {}, max_files {}, max_image_bytes {})",
                item_size(&item.content),
                self.opts.max_item_bytes,
                self.opts.max_files,
                self.opts.max_image_bytes
            ));
            return;
        }
        let decision = self.sync.on_remote(meta, &item.content, now_ms);
        if !matches!(decision, RemoteDecision::Echo | RemoteDecision::Duplicate) {
            // Persisted before the clip is applied, so a crash right after
            // cannot let the same envelope be applied again.
            self.out
                .push_back(Output::SaveReplay(self.sync.replay_state()));
        }
        match decision {
            RemoteDecision::Apply
                if matches!(
                    item.content,
                    ClipContent::Files(_) | ClipContent::ImageBlob { .. }
                ) =>
            {
                self.generation += 1;
                self.start_download(item, from, now_ms);
            }
            RemoteDecision::Apply => {
                self.generation += 1;
                tracing::debug!(%from, seq = meta.seq, kind, len, "applying received clip");
                self.sync.record_applied(ContentHash::of(&item.content));
                self.out.push_back(Output::Apply {
                    content: item.content,
                    ticket: None,
                });
            }
            RemoteDecision::Expired => self.problem(format!(
                "received a clip from {} sealed {} s ago, older than clip_ttl_s ({}); not applied",
                meta.origin,
                now_ms.saturating_sub(meta.timestamp_ms) / 1000,
                self.opts.clip_ttl_s
            )),
            other => {
                tracing::debug!(%from, seq = meta.seq, decision = ?other, "received clip not applied")
            }
        }
    }

    /// A received file list or image reference: download it unless it is
    /// over `auto_download_max` (then keep it for `clipmesh fetch`).
    fn start_download(&mut self, item: ClipItem, from: DeviceId, now_ms: u64) {
        let size = item_size(&item.content);
        let kind = item.content.kind_name();
        if self.mode == Mode::P2p {
            self.problem(format!(
                "received {kind} of {size} bytes not downloaded: it is stored on the relay's blob \
                 store, which --mode p2p does not use (run with --mode auto to receive it)"
            ));
            return;
        }
        if size > self.opts.auto_download_max {
            self.problem(format!(
                "received {kind} of {size} bytes is over auto_download_max ({}); not downloaded \
                 (run `clipmesh fetch` to download it, or raise auto_download_max in [sync])",
                self.opts.auto_download_max
            ));
            self.pending = Some(Pending::new(item, from, now_ms));
            return;
        }
        self.download(item, None);
    }

    fn download(&mut self, item: ClipItem, ticket: Option<Ticket>) {
        let job = self.job(Job::Download {
            generation: self.generation,
            ticket,
        });
        self.out.push_back(Output::Download { job, item });
    }

    fn on_downloaded(&mut self, job: JobId, result: Downloaded) {
        let Some(Job::Download { generation, ticket }) = self.jobs.remove(&job) else {
            return;
        };
        // A fetch was asked for now: it is the newest item whatever came
        // since. Anything else yields to something newer.
        if ticket.is_none() && generation != self.generation {
            match result {
                Downloaded::Files(_) => tracing::info!(
                    "received files kept in the download folder; the clipboard has something newer"
                ),
                Downloaded::Image(_) => {
                    tracing::info!("received image dropped; the clipboard has something newer")
                }
            }
            return;
        }
        self.out.push_back(match result {
            Downloaded::Files(paths) => {
                tracing::info!(
                    entries = paths.len(),
                    "putting received files on the clipboard"
                );
                self.sync.record_applied(local_files_hash(&paths));
                Output::ApplyFiles { paths, ticket }
            }
            Downloaded::Image(content) => {
                self.sync.record_applied(ContentHash::of(&content));
                Output::Apply { content, ticket }
            }
        });
    }

    fn on_control(&mut self, ticket: Ticket, request: Request, now_ms: u64) {
        match request {
            Request::Fetch => match self.pending.take() {
                None => self.reply(
                    ticket,
                    Response::error(
                        "nothing to fetch: no received item is waiting (only images and files \
                         over auto_download_max wait for `clipmesh fetch`)",
                    ),
                ),
                Some(p) => {
                    tracing::info!(kind = %p.summary.kind, files = p.summary.files, bytes = p.summary.bytes, "fetching the waiting item");
                    // Asked for now: it is the newest item for the clipboard.
                    self.generation += 1;
                    self.download(p.item, Some(ticket));
                }
            },
            Request::Status => {
                let mut status = self.status.clone();
                status.pending = self.pending.as_ref().map(|p| p.summary.clone());
                self.reply(
                    ticket,
                    Response {
                        ok: true,
                        status: Some(status),
                        ..Response::default()
                    },
                );
            }
            Request::Send { text } => {
                let content = ClipContent::Text(text);
                if !self.opts.fits(&content) {
                    let msg = format!(
                        "text is larger than max_item_bytes ({})",
                        self.opts.max_item_bytes
                    );
                    self.reply(ticket, Response::error(msg));
                    return;
                }
                self.on_local(content, now_ms, Some(ticket), now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests;
