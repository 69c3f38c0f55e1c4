//! The clipboard formats that mark a Windows clipboard item as sensitive
//! (pure, tested on Linux). Password managers set them; an item carrying
//! one is never read.
//!
//! | Format | Meaning | Source |
//! |---|---|---|
//! | `ExcludeClipboardContentFromMonitorProcessing` | present: do not monitor | Microsoft, "Clipboard formats" (cloud clipboard and history formats) |
//! | `Clipboard Viewer Ignore` | present: viewers should ignore it | the older convention (KeePass, Ditto) |
//! | `CanIncludeInClipboardHistory` | DWORD 0: keep out of history | Microsoft, as above |
//! | `CanUploadToCloudClipboard` | DWORD 0: keep out of the cloud clipboard | Microsoft, as above |
//!
//! A DWORD marker whose value cannot be read counts as 0 (sensitive).
//! Format names compare without case, as `RegisterClipboardFormat` does.

/// Present: do not monitor this item.
pub(crate) const EXCLUDE_MONITOR: &str = "ExcludeClipboardContentFromMonitorProcessing";
/// Present: clipboard viewers ignore this item.
pub(crate) const VIEWER_IGNORE: &str = "Clipboard Viewer Ignore";
/// DWORD 0: keep out of Windows' clipboard history.
pub(crate) const HISTORY: &str = "CanIncludeInClipboardHistory";
/// DWORD 0: keep out of Windows' cloud clipboard (clipmesh also writes it).
pub(crate) const CLOUD: &str = "CanUploadToCloudClipboard";

/// Every marker (for [`crate::Capabilities::sensitive_markers`]).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) const ALL: &[&str] = &[EXCLUDE_MONITOR, VIEWER_IGNORE, HISTORY, CLOUD];

const PRESENCE: &[&str] = &[EXCLUDE_MONITOR, VIEWER_IGNORE];
const DWORD_ZERO: &[&str] = &[HISTORY, CLOUD];

/// Whether a registered format name is one of the markers.
pub(crate) fn is_marker(name: &str) -> bool {
    PRESENCE
        .iter()
        .chain(DWORD_ZERO)
        .any(|m| m.eq_ignore_ascii_case(name))
}

/// Whether an item offering these markers (name, data if readable) is
/// sensitive.
pub(crate) fn is_sensitive(present: &[(&str, Option<Vec<u8>>)]) -> bool {
    present.iter().any(|(name, data)| {
        if PRESENCE.iter().any(|m| m.eq_ignore_ascii_case(name)) {
            return true;
        }
        if DWORD_ZERO.iter().any(|m| m.eq_ignore_ascii_case(name)) {
            return match data.as_deref().and_then(|d| d.get(..4)) {
                Some(d) => d == [0, 0, 0, 0],
                None => true,
            };
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_markers_are_sensitive_whatever_their_data() {
        for m in [EXCLUDE_MONITOR, VIEWER_IGNORE, "clipboard viewer ignore"] {
            assert!(is_marker(m));
            assert!(is_sensitive(&[(m, None)]));
            assert!(is_sensitive(&[(m, Some(vec![1, 0, 0, 0]))]));
        }
    }

    #[test]
    fn dword_markers_are_sensitive_only_when_zero_or_unreadable() {
        for m in [HISTORY, CLOUD] {
            assert!(is_sensitive(&[(m, Some(vec![0, 0, 0, 0]))]));
            assert!(is_sensitive(&[(m, Some(vec![0, 0]))]));
            assert!(is_sensitive(&[(m, None)]));
            assert!(!is_sensitive(&[(m, Some(vec![1, 0, 0, 0]))]));
        }
    }

    #[test]
    fn ordinary_items_are_not_sensitive() {
        assert!(!is_marker("HTML Format"));
        assert!(!is_sensitive(&[]));
        assert!(!is_sensitive(&[("PNG", None)]));
    }
}
