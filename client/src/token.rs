//! The device token, shared by every task of a running daemon that presents
//! it (the relay link, the blob client, the renewal task), so a renewed token
//! reaches all of them at once.

use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// A shared, replaceable device token. Prints as `<redacted>`.
#[derive(Clone)]
pub struct TokenCell(Arc<RwLock<Zeroizing<String>>>);

impl TokenCell {
    /// A cell holding `token`.
    pub fn new(token: Zeroizing<String>) -> Self {
        Self(Arc::new(RwLock::new(token)))
    }

    /// The current token.
    pub fn get(&self) -> Zeroizing<String> {
        // A reader or writer that panicked leaves a whole String behind.
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the token for everyone holding the cell.
    pub fn set(&self, token: Zeroizing<String>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }
}

impl From<Zeroizing<String>> for TokenCell {
    fn from(token: Zeroizing<String>) -> Self {
        Self::new(token)
    }
}

impl std::fmt::Debug for TokenCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCell(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_token_and_debug_redacts() {
        let a = TokenCell::new(Zeroizing::new("old".into()));
        let b = a.clone();
        b.set(Zeroizing::new("new".into()));
        assert_eq!(a.get().as_str(), "new");
        assert_eq!(format!("{a:?}"), "TokenCell(<redacted>)");
    }
}
