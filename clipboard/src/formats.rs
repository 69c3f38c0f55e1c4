//! Choosing and decoding clipboard formats (sans-IO).
//!
//! A clipboard owner offers its data in several formats ("targets" on X11).
//! [`ReadPlan::from_targets`] picks which ones to fetch, and the `decode_*`
//! functions turn raw bytes into strings. One item becomes one event, so
//! when an owner offers several kinds the plan picks one:
//!
//! 1. a file list (`text/uri-list`, `x-special/gnome-copied-files`): file
//!    managers also offer the paths as text, which is not what was copied;
//! 2. text and/or HTML, when plain text is offered: office suites offer a
//!    rendered picture of copied cells next to their text, and the text is
//!    what the user means;
//! 3. an image (`clipboard/picture.rs`), also when only HTML is offered
//!    besides it (a browser's "copy image" offers `<img src=...>`);
//! 4. HTML alone.
//!
//! The Windows backend has no targets to plan from (it asks for each
//! format); it uses [`ReadPlan::assemble`] only.
#![cfg_attr(windows, allow(dead_code))]

use crate::picture::choose_image_target;
use clipmesh_proto::ClipContent;

/// The standard file-list target (parsed in `backend/linux/uri_list.rs`).
pub(crate) const URI_LIST_TARGET: &str = "text/uri-list";
/// GNOME's (Nautilus, Nemo, Caja) target: `copy` or `cut`, then one URI a line.
pub(crate) const GNOME_FILES_TARGET: &str = "x-special/gnome-copied-files";
/// File-list targets, best first.
pub(crate) const FILE_TARGETS: &[&str] = &[URI_LIST_TARGET, GNOME_FILES_TARGET];

/// Text targets, best first. `UTF8_STRING` is the X11 norm; `STRING` is
/// ISO Latin-1; `TEXT` and `text/plain` have no declared charset and are
/// read as UTF-8 with replacement.
pub(crate) const TEXT_TARGETS: &[&str] = &[
    "UTF8_STRING",
    "text/plain;charset=utf-8",
    "text/plain;charset=UTF-8",
    "STRING",
    "TEXT",
    "text/plain",
];

/// The HTML target.
pub(crate) const HTML_TARGET: &str = "text/html";

/// Which targets to read for one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadPlan {
    /// The text target to read, if any is offered.
    pub(crate) text: Option<&'static str>,
    /// Whether HTML is offered.
    pub(crate) html: bool,
    /// The image target to read instead of text and HTML, if any.
    pub(crate) image: Option<&'static str>,
    /// The file-list target to read instead of everything else, if any.
    pub(crate) files: Option<&'static str>,
}

impl ReadPlan {
    /// Picks targets from what the owner offers.
    pub(crate) fn from_targets<S: AsRef<str>>(targets: &[S]) -> Self {
        let has = |name: &str| targets.iter().any(|t| t.as_ref() == name);
        let text = TEXT_TARGETS.iter().copied().find(|t| has(t));
        let files = FILE_TARGETS.iter().copied().find(|t| has(t));
        let image = choose_image_target(targets).filter(|_| text.is_none() && files.is_none());
        Self {
            text: text.filter(|_| files.is_none() && image.is_none()),
            html: has(HTML_TARGET) && files.is_none() && image.is_none(),
            image,
            files,
        }
    }

    /// The plan for owners that do not answer `TARGETS` (old clients):
    /// `UTF8_STRING` (the reader falls back to `STRING` when refused).
    pub(crate) fn fallback() -> Self {
        Self {
            text: Some("UTF8_STRING"),
            html: false,
            image: None,
            files: None,
        }
    }

    /// True when nothing this build syncs is offered.
    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_none() && !self.html && self.image.is_none() && self.files.is_none()
    }

    /// Builds the content from what was read. Empty items are `None`:
    /// clearing the clipboard is not synced.
    pub(crate) fn assemble(text: Option<String>, html: Option<String>) -> Option<ClipContent> {
        match (html, text) {
            (Some(html), text) if !html.trim().is_empty() => {
                let alt_text = text.unwrap_or_else(|| html_to_text(&html));
                Some(ClipContent::Html { html, alt_text })
            }
            (_, Some(text)) if !text.is_empty() => Some(ClipContent::Text(text)),
            _ => None,
        }
    }
}

/// Decodes bytes read from a text target.
pub(crate) fn decode_text(target: &str, bytes: Vec<u8>) -> String {
    if target == "STRING" {
        // ISO Latin-1: every byte is the code point of the same value.
        bytes.into_iter().map(char::from).collect()
    } else {
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// Decodes `text/html` bytes: UTF-8, or UTF-16 when a byte-order mark says
/// so (older Firefox versions offer UTF-16LE with a BOM).
pub(crate) fn decode_html(bytes: Vec<u8>) -> String {
    let utf16 = |b: &[u8], le: bool| -> String {
        let units = b.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    };
    match bytes.as_slice() {
        [0xff, 0xfe, rest @ ..] => utf16(rest, true),
        [0xfe, 0xff, rest @ ..] => utf16(rest, false),
        [0xef, 0xbb, 0xbf, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => decode_text(HTML_TARGET, bytes),
    }
}

/// A crude plain-text rendering of HTML for owners that offer no text:
/// drops tags and decodes the five basic entities.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_prefers_utf8_and_sees_html() {
        let p = ReadPlan::from_targets(&["TARGETS", "STRING", "UTF8_STRING", "text/html"]);
        assert_eq!(p.text, Some("UTF8_STRING"));
        assert!(p.html);
        let p = ReadPlan::from_targets(&["STRING"]);
        assert_eq!(p.text, Some("STRING"));
        assert!(!p.html);
        let p = ReadPlan::from_targets(&["application/x-foo", "TARGETS"]);
        assert!(p.is_empty());
    }

    #[test]
    fn plan_picks_one_kind() {
        // A file manager: files, not the paths as text.
        let p = ReadPlan::from_targets(&[
            "TARGETS",
            "x-special/gnome-copied-files",
            "text/uri-list",
            "UTF8_STRING",
        ]);
        assert_eq!(p.files, Some("text/uri-list"));
        assert_eq!((p.text, p.html, p.image), (None, false, None));
        // An office suite: text wins over the rendered picture.
        let p = ReadPlan::from_targets(&["UTF8_STRING", "text/html", "image/png"]);
        assert_eq!((p.text, p.html, p.image), (Some("UTF8_STRING"), true, None));
        // A browser's "copy image": the image wins over <img> HTML.
        let p = ReadPlan::from_targets(&["text/html", "image/bmp", "image/png"]);
        assert_eq!((p.text, p.html, p.image), (None, false, Some("image/png")));
        assert!(!p.is_empty());
        // Only a BMP.
        let p = ReadPlan::from_targets(&["TARGETS", "image/bmp"]);
        assert_eq!(p.image, Some("image/bmp"));
    }

    #[test]
    fn assemble_prefers_html_with_text_alt() {
        let c = ReadPlan::assemble(Some("hi".into()), Some("<b>hi</b>".into()));
        assert_eq!(
            c,
            Some(ClipContent::Html {
                html: "<b>hi</b>".into(),
                alt_text: "hi".into()
            })
        );
        let c = ReadPlan::assemble(None, Some("<b>a &amp; b</b>".into()));
        assert_eq!(
            c,
            Some(ClipContent::Html {
                html: "<b>a &amp; b</b>".into(),
                alt_text: "a & b".into()
            })
        );
        assert_eq!(
            ReadPlan::assemble(Some("t".into()), None),
            Some(ClipContent::Text("t".into()))
        );
        assert_eq!(ReadPlan::assemble(Some(String::new()), None), None);
        assert_eq!(
            ReadPlan::assemble(Some("t".into()), Some("  ".into())),
            Some(ClipContent::Text("t".into()))
        );
    }

    #[test]
    fn decoders_handle_latin1_bad_utf8_and_bom() {
        assert_eq!(decode_text("STRING", vec![0x63, 0x61, 0x66, 0xe9]), "café");
        assert_eq!(decode_text("UTF8_STRING", vec![0x61, 0xff]), "a\u{fffd}");
        assert_eq!(
            decode_html(vec![0xff, 0xfe, b'<', 0, b'p', 0, b'>', 0]),
            "<p>"
        );
        assert_eq!(decode_html(vec![0xef, 0xbb, 0xbf, b'x']), "x");
        assert_eq!(decode_html(b"<i>y</i>".to_vec()), "<i>y</i>");
    }
}
