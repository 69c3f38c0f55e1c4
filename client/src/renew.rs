//! Keeping the device's session alive while the daemon runs: the relay
//! ends a session `auth.session_max_s` after its token was issued (and
//! after `session_idle_s` without use), so a running daemon renews its token
//! (`POST /api/v1/session/renew`) when it starts and then every quarter of
//! the lifetime the relay reports, at most once a day. The new token is
//! saved to the secret store first and only then handed to the link and the
//! blob client (one [`TokenCell`]); the relay keeps accepting the old token
//! until the new one is first used, so a crash between the two loses
//! nothing.

use crate::api::{Api, ApiError};
use crate::secrets::{self, StoreKind};
use crate::token::TokenCell;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// Longest time between two renewals.
pub const RENEW_EVERY_MAX: Duration = Duration::from_secs(24 * 3600);
/// Shortest time between two renewals (a relay configured with a tiny
/// lifetime does not make the daemon spin).
pub const RENEW_EVERY_MIN: Duration = Duration::from_secs(1);
/// Wait before trying again after a renewal failed (relay unreachable).
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(600);

/// What the renewal task needs.
#[derive(Debug)]
pub struct Renewal {
    /// The device's config directory (the secret store lives there or is
    /// keyed by it).
    pub dir: PathBuf,
    /// Where the secrets are kept.
    pub store: StoreKind,
    /// The relay API.
    pub api: Api,
}

/// How long to wait before the next renewal, from the lifetime the relay
/// reported.
pub fn next_renewal(max_lifetime_s: u64) -> Duration {
    Duration::from_secs(max_lifetime_s / 4).clamp(RENEW_EVERY_MIN, RENEW_EVERY_MAX)
}

/// Renews now and then on schedule until `cancel` or until the relay says
/// the session is over (the link then reports the revocation).
pub async fn run(r: Renewal, token: TokenCell, cancel: CancellationToken) {
    let r = std::sync::Arc::new(r);
    loop {
        let wait = match renew_once(&r, &token).await {
            Ok(max_lifetime_s) => next_renewal(max_lifetime_s),
            Err(ApiError::Unauthorized) => {
                tracing::warn!("the relay ended this device's session; not renewing");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the session failed; will retry");
                RETRY_AFTER_FAILURE
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One renewal: ask, save, then switch. Returns the relay's
/// `max_lifetime_s`.
async fn renew_once(r: &std::sync::Arc<Renewal>, token: &TokenCell) -> Result<u64, ApiError> {
    let r = std::sync::Arc::clone(r);
    let old = token.get();
    let (new, max) = tokio::task::spawn_blocking(move || {
        let resp = r.api.renew(&old)?;
        let new = Zeroizing::new(resp.token);
        // The store holds the token with the keys: read what is there now
        // (the keys may have changed since start) and replace the token only.
        let mut secrets = secrets::load(&r.dir, r.store)
            .map_err(|e| ApiError::BadResponse(format!("reading the secret store: {e}")))?;
        secrets.token = new.clone();
        let kind = secrets::save(&r.dir, &secrets)
            .map_err(|e| ApiError::BadResponse(format!("saving the renewed token: {e}")))?;
        if kind != r.store {
            // Loaded from one store, saved to another: the next start would
            // read the old token. Keep using the old one (the relay accepts
            // it until the new one is used) and try again later.
            return Err(ApiError::BadResponse(format!(
                "the renewed token went to the {} store, not the {} one",
                kind.as_str(),
                r.store.as_str()
            )));
        }
        Ok::<_, ApiError>((new, resp.max_lifetime_s))
    })
    .await
    .map_err(|e| ApiError::BadResponse(e.to_string()))??;
    token.set(new);
    tracing::debug!("session renewed");
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_a_quarter_of_the_lifetime_within_bounds() {
        assert_eq!(next_renewal(90 * 24 * 3600), RENEW_EVERY_MAX);
        assert_eq!(next_renewal(8), Duration::from_secs(2));
        assert_eq!(next_renewal(0), RENEW_EVERY_MIN);
    }
}
