//! Publishing one clip without a daemon (`clipmesh send` when no `run` is
//! active): connect, publish, wait for the relay's ack, disconnect.
//!
//! It uses the same [`crate::link`] as the daemon, so a dropped connection
//! is retried with back-off until the deadline, and a revoked session stops
//! it at once.

use crate::account::{AccountError, Device};
use crate::clock::now_ms;
use crate::link::{self, LinkConfig, LinkEvent, LinkExit, PublishError};
use crate::state::State;
use clipmesh_proto::{ClipContent, ClipItem};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a one-shot publish failed. `Display` is the line the CLI prints.
#[derive(Debug, Error)]
pub enum OneshotError {
    /// The item is over `max_item_bytes`.
    #[error("text is larger than max_item_bytes ({0})")]
    TooLarge(u64),
    /// The state file could not be used.
    #[error("state file: {0}")]
    State(#[from] std::io::Error),
    /// The CA file is unusable.
    #[error(transparent)]
    Account(#[from] AccountError),
    /// The relay revoked this device.
    #[error("this device's session was revoked; run `clipmesh login` again")]
    Revoked,
    /// The relay refused the clip, or it is too large for the relay.
    #[error(transparent)]
    Publish(PublishError),
    /// No ack before the deadline.
    #[error("{reason} (gave up after {secs} s)")]
    Timeout {
        /// The last connection problem, or that no ack came.
        reason: String,
        /// The deadline in seconds.
        secs: u64,
    },
}

/// Seals `content` as the device in `dir`, publishes it and waits up to
/// `timeout` for the ack. Returns the room sequence number.
pub async fn publish_once(
    dir: &Path,
    device: &Device,
    content: ClipContent,
    timeout: Duration,
) -> Result<u64, OneshotError> {
    if !device.config.sync.fits(&content) {
        return Err(OneshotError::TooLarge(device.config.sync.max_item_bytes));
    }
    let d = dir.to_path_buf();
    let (seq, last_seen) = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, u64)> {
        let mut st = State::load(&d)?;
        Ok((st.next_seq()?, st.last_seen()))
    })
    .await
    .map_err(std::io::Error::other)??;
    let item = ClipItem {
        timestamp_ms: now_ms(),
        content,
    };
    // Seal under the account's newest epoch: take the relay's listing first.
    let mut keys = crate::clipkeys::for_device(dir, device)?;
    if keys.signs() {
        let (api, token, holds) = (device.api()?, device.secrets.token.clone(), keys.epoch());
        match tokio::task::spawn_blocking(move || {
            crate::clipkeys::fetch_listing(&api, &token, holds)
        })
        .await
        .map_err(std::io::Error::other)?
        {
            Ok(Some(listing)) => match keys.refresh(&listing) {
                Ok(r) => {
                    if let Some(e) = r.moved_to {
                        let kind = crate::secrets::StoreKind::parse(&device.account.secret_store)
                            .unwrap_or(crate::secrets::StoreKind::File);
                        if let Err(err) =
                            crate::secrets::set_epoch(dir, kind, e.0, keys.epoch_key())
                        {
                            tracing::warn!(error = %err, "cannot store the new epoch key");
                        }
                    }
                }
                Err(line) => tracing::warn!("{line}"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot fetch the account's device keys"),
        }
    }
    let env = keys.seal(seq, &item);
    let cancel = CancellationToken::new();
    let (handle, commands) = link::channel();
    let (etx, mut erx) = mpsc::channel(link::EVENT_QUEUE);
    let tracker = TaskTracker::new();
    let mut link_task = tracker.spawn(link::run(
        LinkConfig {
            server: device.account.server.clone(),
            token: device.secrets.token.clone().into(),
            last_seen,
            seed: rand::random(),
            roots: device.roots()?,
        },
        commands,
        etx,
        cancel.clone(),
    ));
    let result = match handle.publish(env).await {
        // The link ended before it took the clip (a revoked session can
        // end it that fast): its exit says why.
        Err(_) => Err(gave_up((&mut link_task).await)),
        Ok(ack) => {
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            tokio::pin!(ack);
            let mut last_problem = None;
            let mut events_open = true;
            loop {
                tokio::select! {
                    r = &mut ack => break match r {
                        Ok(Ok(seq)) => Ok(seq),
                        // The link gave up: its exit says why.
                        Ok(Err(PublishError::Stopped)) | Err(_) => Err(gave_up((&mut link_task).await)),
                        Ok(Err(e)) => Err(OneshotError::Publish(e)),
                    },
                    exit = &mut link_task => break Err(gave_up(exit)),
                    ev = erx.recv(), if events_open => match ev {
                        Some(LinkEvent::Disconnected { reason, .. }) => last_problem = Some(reason),
                        Some(_) => {}
                        None => events_open = false,
                    },
                    _ = &mut deadline => break Err(OneshotError::Timeout {
                        reason: last_problem
                            .unwrap_or_else(|| "the relay did not acknowledge the clip".into()),
                        secs: timeout.as_secs(),
                    }),
                }
            }
        }
    };
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    result
}

/// Why the link stopped before the clip was acknowledged, from its exit.
fn gave_up(exit: Result<LinkExit, tokio::task::JoinError>) -> OneshotError {
    match exit {
        Ok(LinkExit::Revoked) => OneshotError::Revoked,
        _ => OneshotError::Publish(PublishError::Stopped),
    }
}
