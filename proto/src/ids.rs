//! Identifiers for users and devices.
//!
//! Both are assigned by the relay (SQLite row ids) and travel as `u64`. They
//! carry no secret: a device id is printed in logs and shown to users.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A user account on one relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub u64);

/// One logged-in device of a user. Unique across the relay, not only per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "u{}", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_short() {
        assert_eq!(UserId(7).to_string(), "u7");
        assert_eq!(DeviceId(42).to_string(), "d42");
    }
}
