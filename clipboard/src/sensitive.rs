//! Which clipboard items are marked sensitive by their source (sans-IO).
//!
//! Password managers mark what they copy so that clipboard managers and
//! sync tools leave it alone. clipmesh never sends such an item. The
//! markers are extra clipboard formats (X11 targets, Windows formats, macOS
//! pasteboard types) offered next to the data:
//!
//! | marker | who sets it | rule |
//! |---|---|---|
//! | `x-kde-passwordManagerHint` | KDE Klipper convention; KeePassXC, Bitwarden desktop, arboard `exclude_from_history` | sensitive when its value is `secret`, or when the value cannot be read (fail closed) |
//! | `org.nspasteboard.ConcealedType` | nspasteboard.org convention (macOS password managers; some cross-platform apps also offer it on X11) | sensitive when offered |
//! | `org.nspasteboard.TransientType` | nspasteboard.org: data that is only briefly on the pasteboard | treated as sensitive |
//! | `ExcludeClipboardContentFromMonitorProcessing` | Windows: "clipboard monitors must ignore this" | sensitive when offered |
//! | `CanIncludeInClipboardHistory`, `CanUploadToCloudClipboard` | Windows: DWORD 0 forbids history / cloud sync | only meaningful on Windows (not yet supported by this build) |
//!
//! Target names are compared exactly (they are case-sensitive atoms).
//! (Windows checks its own table, `backend/windows/markers.rs`.)
#![cfg_attr(windows, allow(dead_code))]

/// KDE's password-manager hint target; its value `secret` marks the item.
pub(crate) const KDE_PASSWORD_HINT: &str = "x-kde-passwordManagerHint";

/// The value of [`KDE_PASSWORD_HINT`] that marks an item as secret.
pub(crate) const KDE_SECRET_VALUE: &[u8] = b"secret";

/// Targets whose mere presence marks the item as sensitive.
pub(crate) const CONCEALED_MARKERS: &[&str] = &[
    "org.nspasteboard.ConcealedType",
    "org.nspasteboard.TransientType",
    "ExcludeClipboardContentFromMonitorProcessing",
];

/// Every marker [`classify`] honours (for [`crate::Capabilities`]).
pub(crate) const ALL_MARKERS: &[&str] = &[
    KDE_PASSWORD_HINT,
    "org.nspasteboard.ConcealedType",
    "org.nspasteboard.TransientType",
    "ExcludeClipboardContentFromMonitorProcessing",
];

/// What the offered targets say about an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sensitivity {
    /// No marker: the item may be synced.
    Public,
    /// A presence marker: never sync.
    Secret,
    /// The KDE hint is offered: read its value and ask [`hint_is_secret`].
    CheckKdeHint,
}

/// Classifies an item by the names of the targets it is offered in.
pub(crate) fn classify<S: AsRef<str>>(targets: &[S]) -> Sensitivity {
    let mut kde = false;
    for t in targets {
        let t = t.as_ref();
        if CONCEALED_MARKERS.contains(&t) {
            return Sensitivity::Secret;
        }
        kde |= t == KDE_PASSWORD_HINT;
    }
    if kde {
        Sensitivity::CheckKdeHint
    } else {
        Sensitivity::Public
    }
}

/// Decides on the value of the KDE hint; `None` means it could not be read,
/// which counts as secret (fail closed).
pub(crate) fn hint_is_secret(value: Option<&[u8]>) -> bool {
    match value {
        None => true,
        Some(v) => v.trim_ascii() == KDE_SECRET_VALUE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_marker_is_listed() {
        for m in CONCEALED_MARKERS {
            assert!(ALL_MARKERS.contains(m), "{m}");
        }
        assert!(ALL_MARKERS.contains(&KDE_PASSWORD_HINT));
    }

    #[test]
    fn plain_targets_are_public() {
        assert_eq!(
            classify(&["TARGETS", "UTF8_STRING", "text/html"]),
            Sensitivity::Public
        );
        let none: [&str; 0] = [];
        assert_eq!(classify(&none), Sensitivity::Public);
    }

    #[test]
    fn presence_markers_are_secret() {
        for m in CONCEALED_MARKERS {
            assert_eq!(classify(&["UTF8_STRING", m]), Sensitivity::Secret, "{m}");
        }
    }

    #[test]
    fn kde_hint_needs_its_value() {
        assert_eq!(
            classify(&["UTF8_STRING", "x-kde-passwordManagerHint"]),
            Sensitivity::CheckKdeHint
        );
        assert!(hint_is_secret(Some(b"secret")));
        assert!(hint_is_secret(Some(b"secret\n")));
        assert!(hint_is_secret(None));
        assert!(!hint_is_secret(Some(b"public")));
    }

    #[test]
    fn names_are_case_sensitive() {
        assert_eq!(
            classify(&[
                "X-KDE-PASSWORDMANAGERHINT",
                "org.nspasteboard.concealedtype"
            ]),
            Sensitivity::Public
        );
    }
}
