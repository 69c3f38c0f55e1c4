//! The client side of `clipmesh fetch`: ask the daemon what is waiting,
//! ask it to fetch that, and report the download's progress (read from
//! `status` on a second connection) until the daemon answers.

use super::{Direction, PendingItem, TransferStatus};
use crate::control::{self, ControlError, Request};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

/// How often progress is read while a fetch runs.
pub const FETCH_PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Why `clipmesh fetch` failed. One line each.
#[derive(Debug, Error)]
pub enum FetchError {
    /// No daemon, or its socket failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Nothing is waiting.
    #[error(
        "nothing to fetch: no received item is waiting (only images and files over \
         auto_download_max wait for `clipmesh fetch`)"
    )]
    Nothing,
    /// The daemon tried and failed (its one-line reason).
    #[error("{0}")]
    Failed(String),
}

/// Fetches the item waiting in the daemon of `dir`. `started` is called
/// once with what is being fetched, `progress` with the download's state
/// from time to time. Returns when the item is on the clipboard.
pub async fn fetch_waiting(
    dir: &Path,
    started: impl FnOnce(&PendingItem),
    mut progress: impl FnMut(&TransferStatus),
) -> Result<PendingItem, FetchError> {
    let status = control::request(dir, &Request::Status).await?;
    let Some(item) = status.status.and_then(|s| s.pending) else {
        return Err(FetchError::Nothing);
    };
    started(&item);
    let fetch = control::request(dir, &Request::Fetch);
    tokio::pin!(fetch);
    let mut tick = tokio::time::interval(FETCH_PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the transfer is not registered yet.
    tick.tick().await;
    let resp = loop {
        tokio::select! {
            r = &mut fetch => break r?,
            _ = tick.tick() => {
                let st = control::request(dir, &Request::Status).await.ok().and_then(|r| r.status);
                let t = st.and_then(|s| {
                    s.transfers
                        .into_iter()
                        .filter(|t| t.direction == Direction::Receive)
                        .max_by_key(|t| t.id)
                });
                if let Some(t) = t {
                    progress(&t);
                }
            }
        }
    };
    if resp.ok {
        Ok(item)
    } else {
        match resp.error {
            Some(e) if e.starts_with("nothing to fetch") => Err(FetchError::Nothing),
            Some(e) => Err(FetchError::Failed(e)),
            None => Err(FetchError::Failed(
                "the daemon could not fetch the item".into(),
            )),
        }
    }
}
