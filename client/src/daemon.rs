//! `clipmesh run`: the driver of the device engine.
//!
//! ```text
//! clipboard watcher ─LocalEvent─┐                       ┌─Publish─▶ seal ─▶ link (relay) / p2p (direct links)
//! link ─LinkEvent (opened)──────┤                       ├─Apply(Files)─▶ clipboard
//! p2p ─Deliver (opened)/Peers───┼─Input─▶ engine ─Output┼─Upload/Download─▶ transfer task ─┐
//! control socket ─Request───────┤                       ├─SaveReplay/SaveLastSeen─▶ replay.json, state.json
//! transfer tasks, ack waiters ──┘  (poll_timeout)       └─Online─▶ p2p; Reply─▶ control
//!        ▲                                                                                   │
//!        └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Every decision is the [`Engine`]'s (sans-IO, [`crate::engine`]). This
//! file only moves things: one `select!` loop turns what arrives into
//! [`Input`]s (opening envelopes on the way: sealing and opening stay here,
//! at the crypto boundary), then carries out the engine's [`Output`]s in
//! order: seal and publish, put items on the clipboard, run uploads and
//! downloads as blocking transfer tasks ([`crate::transfer`]) that report
//! back as inputs, write the replay and state files, answer the control
//! socket.
//!
//! The account's key listing (an unknown sender, a newer epoch, a join or
//! presence change) is fetched by a task too, when [`KeyFetch`] says so;
//! clips that need it wait in it and reach the engine when it arrives.
//!
//! The engine and the files are owned by one task, the loop in
//! [`run_daemon_mode`]; the link, the direct-link manager, the control
//! socket, transfer tasks and ack waiters are tasks in its [`TaskTracker`],
//! all stopped through one [`CancellationToken`] and awaited before it
//! returns.

use crate::account::Device;
use crate::clipboard::LocalEvent;
use crate::clipkeys::{ClipKeys, Fetched, Listing, Opened};
use crate::clock::now_ms;
use crate::control::{ControlError, ControlServer, Incoming, Response};
use crate::engine::{Downloaded, Engine, Input, JobId, Output, Ticket, Via};
use crate::keyfetch::{self, KeyFetch, Why};
use crate::link::{self, LinkConfig, LinkEvent, LinkExit, LinkHandle, PublishError};
use crate::p2p::{self, Mode, P2pEvent, P2pHandle};
use crate::replay::ReplayFile;
use crate::state::State;
use crate::transfer::{self, BlobClient, TransferError, Transfers};
use clipmesh_proto::content::ClipMeta;
use clipmesh_proto::{ClipContent, ClipItem, DeviceId};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::engine::SEND_ACK_TIMEOUT;

/// Why the daemon stopped with an error.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// The relay revoked this device.
    #[error("this device's session was revoked; run `clipmesh login` again")]
    Revoked,
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The CA file is unusable.
    #[error("{0}")]
    Tls(String),
    /// The state file could not be read or written.
    #[error("state file: {0}")]
    State(#[from] std::io::Error),
}

/// Depth of the queue from transfer tasks and ack waiters to the loop.
pub const FINISHED_QUEUE: usize = 8;

/// What the daemon needs from the OS clipboard: a way to put an item on it.
/// [`crate::clipboard::ClipboardHandle`] is the real one; tests use fakes.
pub trait ClipboardSink {
    /// Puts `content` on the clipboard.
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>>;

    /// Puts a list of local files on the clipboard (received files, in the
    /// download folder). The default refuses.
    fn apply_files(&self, paths: Vec<PathBuf>) -> impl Future<Output = Result<(), String>> {
        let n = paths.len();
        async move { Err(format!("cannot put {n} files on this clipboard")) }
    }
}

impl ClipboardSink for crate::clipboard::ClipboardHandle {
    fn apply(&self, content: ClipContent) -> impl Future<Output = Result<(), String>> {
        let fut = crate::clipboard::ClipboardHandle::apply(self, content);
        async move { fut.await.map_err(|e| e.to_string()) }
    }

    fn apply_files(&self, paths: Vec<PathBuf>) -> impl Future<Output = Result<(), String>> {
        let fut = crate::clipboard::ClipboardHandle::apply_files(self, paths);
        async move { fut.await.map_err(|e| e.to_string()) }
    }
}

/// Runs the daemon for the logged-in device in `dir` until `cancel`, with
/// `clipboard` as the sink and `local` as the stream of local changes,
/// through the relay only ([`Mode::Relay`]).
pub async fn run_daemon<C: ClipboardSink>(
    dir: &Path,
    device: Device,
    clipboard: C,
    local: mpsc::Receiver<LocalEvent>,
    cancel: CancellationToken,
) -> Result<(), DaemonError> {
    let transport = Transport {
        mode: Mode::Relay,
        bind: String::new(),
        idle_close: None,
    };
    run_daemon_mode(dir, device, clipboard, local, cancel, transport).await
}

/// How the daemon moves clips (`clipmesh run --mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Relay, auto or p2p.
    pub mode: Mode,
    /// Local UDP address for direct links (see [`p2p::bind_from_env`]).
    pub bind: String,
    /// Auto mode: close a direct link after this long without a clip.
    pub idle_close: Option<std::time::Duration>,
}

impl Transport {
    /// `mode`, with the bind address from the environment.
    pub fn from_env(mode: Mode) -> Self {
        Self {
            mode,
            bind: p2p::bind_from_env(),
            idle_close: (mode == Mode::Auto).then_some(p2p::IDLE_CLOSE),
        }
    }
}

/// A received clip waiting for the account's key listing.
#[derive(Debug)]
struct Parked {
    via: Via,
    from: DeviceId,
    envelope: Vec<u8>,
}

/// What carries the engine's outputs out: the IO half of the daemon.
struct Driver<C> {
    /// Seals and opens clips; the roster senders are checked against.
    keys: ClipKeys,
    /// When the key listing is fetched (one at a time, throttled), and the
    /// clips waiting for it.
    fetch: KeyFetch<Parked>,
    /// Where a listing fetch task reports (one in flight at a time).
    listings: mpsc::Sender<Fetched>,
    /// The link dropped with 1012: its next connection spreads the fetch.
    after_rekey: bool,
    /// The relay's API, for the key listing ([`Driver::spawn_fetch`]).
    api: crate::api::Api,
    /// The device token (renewed by [`crate::renew`]).
    token: crate::token::TokenCell,
    /// Where the secrets are, to store a new epoch key.
    secrets: (PathBuf, crate::secrets::StoreKind),
    /// False once the relay answered `/api/v2` with 404 (no key listing).
    v2_offered: bool,
    /// Inputs learnt while opening or refreshing, fed to the engine after
    /// the one being handled.
    extra: Vec<Input>,
    opts: crate::config::SyncOptions,
    state: State,
    /// Where the engine's replay state persists (see [`crate::replay`]).
    replay: ReplayFile,
    link: LinkHandle,
    /// The direct-link manager (auto and p2p modes).
    p2p: Option<P2pHandle>,
    clipboard: C,
    tracker: TaskTracker,
    /// Stops transfer tasks and ack waiters.
    cancel: CancellationToken,
    /// Blob store client for large items.
    blobs: BlobClient,
    /// Running transfers, for status.
    transfers: Transfers,
    /// Where transfer tasks and ack waiters report back.
    inputs: mpsc::Sender<Input>,
    /// Control requests waiting for their answer.
    answers: HashMap<Ticket, oneshot::Sender<Response>>,
    next_ticket: u64,
}

/// [`run_daemon`] with a transport mode (`clipmesh run --mode`).
pub async fn run_daemon_mode<C: ClipboardSink>(
    dir: &Path,
    device: Device,
    clipboard: C,
    mut local: mpsc::Receiver<LocalEvent>,
    cancel: CancellationToken,
    transport: Transport,
) -> Result<(), DaemonError> {
    let mode = transport.mode;
    let control = ControlServer::bind(dir).await?;
    let state = State::load(dir)?;
    let replay = ReplayFile::new(dir);
    let device_id = DeviceId(device.account.device_id);
    let restored = replay
        .load()
        .map_err(|e| {
            tracing::warn!(
                error = %e,
                "replay state unreadable; starting without it (an old clip replayed now could be applied once)"
            )
        })
        .ok();
    let mut engine = Engine::new(
        device_id,
        mode,
        device.config.sync.clone(),
        restored.as_ref(),
    );
    let store_kind = crate::secrets::StoreKind::parse(&device.account.secret_store)
        .unwrap_or(crate::secrets::StoreKind::File);
    let keys = crate::clipkeys::for_device(dir, &device)?;
    let tracker = TaskTracker::new();
    let (link_handle, commands) = link::channel();
    let (events_tx, mut events) = mpsc::channel(link::EVENT_QUEUE);
    let (control_tx, mut control_rx) = mpsc::channel::<Incoming>(crate::control::REQUEST_QUEUE);
    let roots = device
        .roots()
        .map_err(|e| DaemonError::Tls(e.to_string()))?;
    // One token for the link, the blob client and the renewal task.
    let token = crate::token::TokenCell::new(device.secrets.token.clone());
    let link_cfg = LinkConfig {
        server: device.account.server.clone(),
        token: token.clone(),
        last_seen: state.last_seen(),
        seed: rand::random(),
        roots: roots.clone(),
    };
    let blobs = BlobClient::with_token(&device.account.server, token.clone(), &roots);
    let renewal = crate::renew::Renewal {
        dir: dir.to_path_buf(),
        store: crate::secrets::StoreKind::parse(&device.account.secret_store)
            .unwrap_or(crate::secrets::StoreKind::File),
        api: crate::api::Api::with_roots(&device.account.server, &roots),
    };
    tracker.spawn(crate::renew::run(renewal, token.clone(), cancel.clone()));
    let (inputs_tx, mut inputs_rx) = mpsc::channel(FINISHED_QUEUE);
    let mut link_task = tracker.spawn(link::run(link_cfg, commands, events_tx, cancel.clone()));
    tracker.spawn(control.serve(control_tx, cancel.clone()));
    let (p2p_tx, mut p2p_rx) = mpsc::channel(p2p::EVENT_QUEUE);
    let p2p = if mode.uses_direct_links() {
        let (handle, commands) = p2p::channel();
        let cfg = p2p::P2pConfig {
            me: device_id,
            mode,
            keys: keys.signal_keys(),
            signer: keys.device_secrets().cloned(),
            bind: transport.bind,
            idle: transport.idle_close,
        };
        tracker.spawn(p2p::run(
            cfg,
            commands,
            p2p_tx,
            link_handle.clone(),
            cancel.clone(),
        ));
        Some(handle)
    } else {
        drop(p2p_tx);
        None
    };
    let (listings_tx, mut listings_rx) = mpsc::channel::<Fetched>(1);
    let mut d = Driver {
        keys,
        fetch: KeyFetch::new(rand::random()),
        listings: listings_tx,
        after_rekey: false,
        api: crate::api::Api::with_roots(&device.account.server, &roots),
        token: token.clone(),
        secrets: (dir.to_path_buf(), store_kind),
        v2_offered: true,
        extra: Vec::new(),
        opts: device.config.sync.clone(),
        state,
        replay,
        link: link_handle,
        p2p,
        clipboard,
        tracker: tracker.clone(),
        cancel: cancel.clone(),
        blobs,
        transfers: Transfers::default(),
        inputs: inputs_tx,
        answers: HashMap::new(),
        next_ticket: 0,
    };
    tracing::info!(device = %device_id, epoch = d.keys.epoch().0, signs = d.keys.signs(), "daemon started");
    // Devices that joined (or an epoch that started) while this one was off
    // are announced (or adopted) by the fetch the link's first connection
    // asks for; a clip that needs them waits for it.
    let mut local_open = true;
    let mut events_open = true;
    let mut control_open = true;
    let result = loop {
        while let Some(o) = engine.poll_output() {
            d.carry_out(o, &mut engine).await;
        }
        let timer = sleep_until_ms(engine.poll_timeout());
        let fetch_timer = sleep_until_ms(d.fetch.poll_timeout());
        let input = tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            exit = &mut link_task => {
                break match exit {
                    Ok(LinkExit::Revoked) => Err(DaemonError::Revoked),
                    Ok(LinkExit::Cancelled) => Ok(()),
                    Err(e) => {
                        tracing::error!(error = %e, "link task failed");
                        Ok(())
                    }
                };
            }
            ch = local.recv(), if local_open => match ch {
                Some(LocalEvent::Clip(c)) => Some(Input::LocalClip { content: c.content, at_ms: c.at_ms }),
                Some(LocalEvent::Files(f)) => Some(Input::LocalFiles { paths: f.paths, at_ms: f.at_ms }),
                None => {
                    local_open = false;
                    Some(Input::WatcherStopped)
                }
            },
            ev = events.recv(), if events_open => match ev {
                Some(ev) => d.on_link(ev).await,
                // The link ended; its task result arrives next.
                None => {
                    events_open = false;
                    None
                }
            },
            req = control_rx.recv(), if control_open => match req {
                Some((request, answer)) => {
                    d.next_ticket += 1;
                    let ticket = Ticket(d.next_ticket);
                    d.answers.insert(ticket, answer);
                    Some(Input::Control { ticket, request })
                }
                None => {
                    control_open = false;
                    None
                }
            },
            Some(input) = inputs_rx.recv() => Some(input),
            Some(ev) = p2p_rx.recv() => match ev {
                P2pEvent::Deliver { from, envelope } => d.opened(Via::Direct, from, envelope),
                P2pEvent::Peers(peers) => Some(Input::Peers(peers)),
            },
            Some(fetched) = listings_rx.recv() => {
                d.on_listing(fetched);
                None
            }
            () = fetch_timer => {
                d.fetch.handle_timeout(now_ms());
                d.pump_fetch();
                None
            }
            () = timer => Some(Input::Timeout),
        };
        if let Some(input) = input {
            engine.handle(input, now_ms());
        }
        // What opening, a listing or a reopened clip produced.
        for input in d.extra.drain(..) {
            engine.handle(input, now_ms());
        }
    };
    // Transfer tasks may still report; nobody listens any more.
    drop(inputs_rx);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("daemon stopped");
    result
}

impl<C: ClipboardSink> Driver<C> {
    /// Opens an envelope for the engine. One from an unknown sender or
    /// under a newer epoch waits for the account's key listing
    /// ([`KeyFetch`]: one fetch at a time, throttled) and reaches the engine
    /// through [`Driver::pump_fetch`] (`None` now).
    fn opened(&mut self, via: Via, from: DeviceId, envelope: Vec<u8>) -> Option<Input> {
        let opened = match self.keys.open(from, &envelope, false) {
            Opened::Refresh(need) if self.v2_offered => {
                let parked = Parked {
                    via,
                    from,
                    envelope,
                };
                match self.fetch.handle_clip(need, parked, now_ms()) {
                    Ok(()) => {
                        self.pump_fetch();
                        return None;
                    }
                    Err(_) => Err(format!(
                        "clip from device {from} refused: {} clips are already waiting for the account's device listing",
                        keyfetch::MAX_WAITING
                    )),
                }
            }
            Opened::Refresh(_) => self.open_listed(from, &envelope),
            Opened::Clip(meta, item) => Ok((meta, item)),
            Opened::Refused(line) => Err(line),
        };
        Some(Input::Received { via, from, opened })
    }

    /// Opens an envelope with the listing this device has: an unknown
    /// sender or a newer epoch is refused.
    fn open_listed(&self, from: DeviceId, envelope: &[u8]) -> Result<(ClipMeta, ClipItem), String> {
        match self.keys.open(from, envelope, true) {
            Opened::Clip(meta, item) => Ok((meta, item)),
            Opened::Refused(line) => Err(line),
            Opened::Refresh(_) => Err(format!("clip from device {from} refused")),
        }
    }

    /// Asks for the key listing (protocol v2).
    fn want_listing(&mut self, why: Why) {
        if self.v2_offered {
            self.fetch.handle_want(why, now_ms());
            self.pump_fetch();
        }
    }

    /// Carries out what the fetch scheduler wants: start a fetch, or hand a
    /// parked clip to the engine (through [`Driver::extra`]).
    fn pump_fetch(&mut self) {
        while let Some(o) = self.fetch.poll_output() {
            match o {
                keyfetch::Output::Fetch => self.spawn_fetch(),
                keyfetch::Output::Reopen { item, listed } => {
                    let Parked {
                        via,
                        from,
                        envelope,
                    } = item;
                    let opened = if listed || !self.v2_offered {
                        self.open_listed(from, &envelope)
                    } else {
                        Err(format!(
                            "clip from device {from} refused: opening it needs the account's device listing, which could not be fetched"
                        ))
                    };
                    self.extra.push(Input::Received { via, from, opened });
                }
            }
        }
    }

    /// Fetches the relay's key listing in a task of the tracker (the HTTP
    /// calls in a blocking thread); the loop gets it on `listings`.
    fn spawn_fetch(&self) {
        let (api, token, holds) = (self.api.clone(), self.token.get(), self.keys.epoch());
        let (tx, cancel) = (self.listings.clone(), self.cancel.clone());
        self.tracker.spawn(async move {
            if let Some(fetched) =
                crate::clipkeys::fetch_listing_until(&api, &token, holds, &cancel).await
            {
                let _ = tx.send(fetched).await;
            }
        });
    }

    /// A fetch ended: takes the listing, then hands the clips that waited
    /// for it to the engine.
    fn on_listing(&mut self, fetched: Fetched) {
        let listed = match fetched {
            Ok(Some(listing)) => {
                self.take_listing(&listing);
                true
            }
            Ok(None) => {
                tracing::debug!("the relay has no v2 key listing");
                self.v2_offered = false;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the account's device keys");
                false
            }
        };
        self.fetch.handle_done(listed, now_ms());
        if !self.v2_offered {
            self.fetch.give_up();
        }
        self.pump_fetch();
    }

    /// Takes the relay's key listing (protocol v2): a newer epoch's key
    /// wrapped to this device is opened and stored, new devices are
    /// announced (log and status), refused keys get one line each.
    fn take_listing(&mut self, listing: &Listing) {
        let result = self.keys.refresh(listing);
        let refreshed = match result {
            Ok(r) => r,
            Err(line) => {
                tracing::warn!("{line}");
                self.extra.push(Input::KeyProblem { message: line });
                return;
            }
        };
        if let Some(epoch) = refreshed.moved_to {
            let (dir, kind) = &self.secrets;
            match crate::secrets::set_epoch(dir, *kind, epoch.0, self.keys.epoch_key()) {
                Ok(()) => tracing::info!(epoch = epoch.0, "moved to a new key epoch"),
                Err(e) => tracing::error!(error = %e, "cannot store the new epoch key"),
            }
            self.extra.push(Input::KeyEpoch { epoch: epoch.0 });
        }
        for line in &refreshed.refused {
            tracing::warn!("{line}");
        }
        if let Some(line) = refreshed.refused.last() {
            self.extra.push(Input::KeyProblem {
                message: line.clone(),
            });
        }
        if let Some(p2p) = &self.p2p {
            // A new epoch's signal key, newly pinned peers.
            p2p.set_keys(self.keys.signal_keys());
        }
        if !refreshed.new_devices.is_empty() {
            self.extra
                .push(Input::DevicesAnnounced(refreshed.new_devices));
        }
    }

    /// A link event as an engine input; signals go straight to the
    /// direct-link manager.
    async fn on_link(&mut self, ev: LinkEvent) -> Option<Input> {
        Some(match ev {
            LinkEvent::Connected { online, .. } => {
                // Offline devices pick up a new epoch (and new devices) on
                // join; after a 1012 every device of the account does so at
                // once, so the fetch is spread.
                let rekey = std::mem::take(&mut self.after_rekey);
                self.want_listing(Why::Joined { rekey });
                Input::LinkUp { online }
            }
            LinkEvent::Disconnected {
                reason,
                retry_in,
                rekey,
            } => {
                tracing::info!(%reason, retry_in_ms = retry_in.as_millis() as u64, "relay link down");
                self.after_rekey |= rekey;
                Input::LinkDown { reason }
            }
            LinkEvent::Presence { online } => {
                // A device came or went (a revoke ends its connection
                // after the new epoch is stored): look at the listing.
                self.want_listing(Why::Presence);
                Input::Presence { online }
            }
            LinkEvent::Signal {
                from,
                kind,
                payload,
            } => {
                match &self.p2p {
                    Some(p2p) => p2p.signal(from, kind, payload).await,
                    None => tracing::debug!(%from, ?kind, "relay mode: signal ignored"),
                }
                return None;
            }
            LinkEvent::Published { seq } => Input::Acked { seq },
            LinkEvent::RelayError { message } => Input::RelayError { message },
            LinkEvent::Deliver {
                seq,
                from,
                envelope,
            } => return self.opened(Via::Relay { seq }, from, envelope),
        })
    }

    /// Carries out one output; what it learns at once goes back into
    /// `engine`.
    async fn carry_out(&mut self, o: Output, engine: &mut Engine) {
        match o {
            Output::Publish {
                item,
                direct,
                relay,
                ticket,
            } => {
                if let Err(message) = self.publish(item, direct, relay, ticket, engine).await {
                    engine.handle(Input::PublishFailed { ticket, message }, now_ms());
                }
            }
            Output::Apply { content, ticket } => {
                let result = self.clipboard.apply(content).await;
                engine.handle(Input::Applied { ticket, result }, now_ms());
            }
            Output::ApplyFiles { paths, ticket } => {
                let result = self.clipboard.apply_files(paths).await;
                engine.handle(Input::Applied { ticket, result }, now_ms());
            }
            Output::UploadImage {
                job,
                width,
                height,
                png,
            } => {
                let (blobs, transfers) = (self.blobs.clone(), self.transfers.clone());
                self.spawn_transfer(job, move |cancel, announce| {
                    transfer::send_image(&blobs, &transfers, width, height, &png, cancel, announce)
                        .map(|_| Input::UploadDone { job })
                        .map_err(|e| ("image not sent", e))
                });
            }
            Output::UploadFiles { job, paths, limits } => {
                let (blobs, transfers) = (self.blobs.clone(), self.transfers.clone());
                self.spawn_transfer(job, move |cancel, announce| {
                    transfer::send_files(&blobs, &transfers, &paths, limits, cancel, announce)
                        .map(|_| Input::UploadDone { job })
                        .map_err(|e| ("file list not sent", e))
                });
            }
            Output::Download { job, item } => self.download(job, item, engine),
            Output::SaveReplay(r) => {
                if let Err(e) = self.replay.save(&r) {
                    tracing::warn!(error = %e, "cannot write replay state");
                }
            }
            Output::SaveLastSeen(seq) => {
                if let Err(e) = self.state.set_last_seen(seq) {
                    tracing::warn!(error = %e, "cannot write state file");
                }
            }
            Output::Online(ids) => {
                if let Some(p2p) = &self.p2p {
                    p2p.online(ids).await;
                }
            }
            Output::Reply {
                ticket,
                mut response,
            } => {
                if let Some(status) = &mut response.status {
                    status.transfers = self.transfers.snapshot();
                }
                if let Some(answer) = self.answers.remove(&ticket) {
                    let _ = answer.send(response);
                }
            }
        }
    }

    /// Reserves a sequence number, seals `item` and sends it on the paths
    /// the engine chose; a waiting `clipmesh send` hears the outcome
    /// through [`Input::SendOutcome`]. Errs with the one line for status.
    async fn publish(
        &mut self,
        item: ClipItem,
        direct: bool,
        relay: bool,
        ticket: Option<Ticket>,
        engine: &Engine,
    ) -> Result<(), String> {
        let seq = self.state.next_seq().map_err(|e| {
            tracing::error!(error = %e, "cannot reserve a sequence number");
            format!("state file: {e}")
        })?;
        let env = self.keys.seal(seq, &item);
        tracing::trace!(seq, "sealed");
        if direct {
            if let Some(p2p) = &self.p2p {
                let sent = p2p.send(env.clone()).await;
                if !relay {
                    self.direct_outcome(sent, engine.online_others(), ticket);
                    return Ok(());
                }
            }
        }
        let acked = self.link.publish(env).await.map_err(|e| e.to_string())?;
        if let Some(ticket) = ticket {
            self.report(ticket, async move {
                match acked.await {
                    Ok(Ok(seq)) => Ok(seq),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("daemon is shutting down".into()),
                }
            });
        }
        Ok(())
    }

    /// Runs `outcome` in a task (until cancelled) and reports it for
    /// `ticket`.
    fn report(
        &self,
        ticket: Ticket,
        outcome: impl Future<Output = Result<u64, String>> + Send + 'static,
    ) {
        let (tx, cancel) = (self.inputs.clone(), self.cancel.clone());
        self.tracker.spawn(async move {
            let result = tokio::select! {
                r = outcome => r,
                _ = cancel.cancelled() => return,
            };
            let _ = tx.send(Input::SendOutcome { ticket, result }).await;
        });
    }

    /// p2p mode: logs which online devices did not get the clip over a
    /// direct link, and reports the outcome of a waiting send.
    fn direct_outcome(
        &self,
        sent: oneshot::Receiver<Vec<DeviceId>>,
        online: Vec<DeviceId>,
        ticket: Option<Ticket>,
    ) {
        let outcome = async move {
            let to = sent.await.map_err(|_| PublishError::Stopped.to_string())?;
            let missed = online.iter().filter(|id| !to.contains(id)).count();
            if missed > 0 {
                tracing::info!(
                    sent = to.len(),
                    missed,
                    "p2p mode: devices online without an open direct link did not get the clip"
                );
            }
            if to.is_empty() {
                Err(PublishError::NoDirectLink.to_string())
            } else {
                tracing::debug!(peers = to.len(), "clip sent over direct links");
                Ok(0)
            }
        };
        match ticket {
            Some(t) => self.report(t, outcome),
            None => {
                let cancel = self.cancel.clone();
                self.tracker.spawn(async move {
                    tokio::select! {
                        _ = outcome => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
        }
    }

    /// Downloads a received file list or image in a transfer task.
    fn download(&mut self, job: JobId, item: ClipItem, engine: &mut Engine) {
        let (blobs, transfers) = (self.blobs.clone(), self.transfers.clone());
        match item.content {
            ClipContent::Files(entries) => {
                let Some(dir) = self.opts.download_dir() else {
                    let message = "no download folder: set download_dir in [sync]".to_owned();
                    engine.handle(Input::TransferFailed { job, message }, now_ms());
                    return;
                };
                let at_ms = item.timestamp_ms;
                self.spawn_transfer(job, move |cancel, _| {
                    transfer::receive_file_list(&blobs, &transfers, &entries, &dir, at_ms, cancel)
                        .map(|paths| Input::Downloaded {
                            job,
                            result: Downloaded::Files(paths),
                        })
                        .map_err(|e| ("received files discarded", e))
                });
            }
            content => {
                let max = self.opts.max_image_bytes;
                self.spawn_transfer(job, move |cancel, _| {
                    transfer::receive_image(&blobs, &transfers, &content, max, cancel)
                        .map(|content| Input::Downloaded {
                            job,
                            result: Downloaded::Image(content),
                        })
                        .map_err(|e| ("received image discarded", e))
                });
            }
        }
    }

    /// Runs `work` as a blocking transfer task that reports to the loop:
    /// at the end, and on the way through the announce callback it is
    /// given (an upload publishing its reference before the bytes are up).
    fn spawn_transfer(
        &self,
        job: JobId,
        work: impl FnOnce(
                &CancellationToken,
                transfer::Announce<'_>,
            ) -> Result<Input, (&'static str, TransferError)>
            + Send
            + 'static,
    ) {
        let tx = self.inputs.clone();
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            let early = tx.clone();
            let blocking = tokio::task::spawn_blocking(move || {
                let mut announce = |content: ClipContent| {
                    early
                        .blocking_send(Input::UploadAnnounced { job, content })
                        .is_ok()
                };
                work(&cancel, &mut announce)
            });
            let input = match blocking.await {
                Ok(Ok(input)) => input,
                Ok(Err((what, e))) => {
                    if matches!(e, TransferError::Cancelled) {
                        tracing::debug!("{what}: {e}");
                    } else {
                        tracing::error!("{what}: {e}");
                    }
                    Input::TransferFailed {
                        job,
                        message: format!("{what}: {e}"),
                    }
                }
                Err(e) => Input::TransferFailed {
                    job,
                    message: format!("transfer task failed: {e}"),
                },
            };
            let _ = tx.send(input).await;
        });
    }
}

/// Sleeps until `at` (Unix ms, the sans-IO cores' `poll_timeout`), or
/// forever when there is no deadline.
async fn sleep_until_ms(at: Option<u64>) {
    match at {
        Some(at) => {
            let ms = at.saturating_sub(now_ms());
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        None => std::future::pending().await,
    }
}
