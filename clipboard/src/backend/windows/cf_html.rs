//! The Windows "HTML Format" (CF_HTML) clipboard payload: a short ASCII
//! header of byte offsets, then the HTML. Pure, so it is tested on Linux.
//!
//! ```text
//! Version:0.9
//! StartHTML:0000000105
//! EndHTML:0000000120
//! StartFragment:0000000105
//! EndFragment:0000000120
//! <b>hello</b>...
//! ```
//!
//! Offsets count bytes from the start of the payload; the HTML is UTF-8.
//! [`parse`] returns the fragment (`StartFragment..EndFragment`), falling
//! back to the `<!--StartFragment-->` comments and then to the whole
//! `StartHTML..EndHTML` context when the offsets are missing. [`write`]
//! makes the fragment the whole context (`StartHTML = StartFragment`), so
//! readers that take the context (Wine's X11 bridge exports
//! `StartHTML..EndHTML` as `text/html`) and readers that take the fragment
//! (browsers, Office) get the same bytes, and an item survives a round
//! trip byte for byte.

use thiserror::Error;

/// Why a CF_HTML payload is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum CfHtmlError {
    /// No `Version:` header line.
    #[error("CF_HTML: no header")]
    NoHeader,
    /// An offset lies outside the payload or ends before it starts.
    #[error("CF_HTML: offsets out of range")]
    BadOffsets,
    /// The selected HTML is not UTF-8.
    #[error("CF_HTML: HTML is not UTF-8")]
    NotUtf8,
}

const START_FRAGMENT_COMMENT: &str = "<!--StartFragment-->";
const END_FRAGMENT_COMMENT: &str = "<!--EndFragment-->";
/// The header never runs longer than this (it is a few short lines).
const MAX_HEADER: usize = 4096;

/// The offsets a header names (`None` when absent or unreadable).
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    start_html: Option<usize>,
    end_html: Option<usize>,
    start_fragment: Option<usize>,
    end_fragment: Option<usize>,
    /// Where the header lines end (the first byte that is not a
    /// `Key:value` line).
    end: usize,
}

fn parse_header(data: &[u8]) -> Result<Header, CfHtmlError> {
    let mut h = Header::default();
    let mut pos = 0;
    let mut saw_version = false;
    while pos < data.len() && pos < MAX_HEADER {
        let rest = &data[pos..];
        let line_end = rest
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .unwrap_or(rest.len());
        let line = &rest[..line_end];
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let key = &line[..colon];
        if key.is_empty() || !key.iter().all(u8::is_ascii_alphanumeric) {
            break;
        }
        let value = std::str::from_utf8(&line[colon + 1..])
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(|v| usize::try_from(v).ok());
        match key {
            b"Version" => saw_version = true,
            b"StartHTML" => h.start_html = value,
            b"EndHTML" => h.end_html = value,
            b"StartFragment" => h.start_fragment = value,
            b"EndFragment" => h.end_fragment = value,
            _ => {}
        }
        pos += line_end;
        // One line break: "\r\n", "\n" or "\r".
        if data.get(pos) == Some(&b'\r') {
            pos += 1;
        }
        if data.get(pos) == Some(&b'\n') {
            pos += 1;
        }
    }
    if !saw_version {
        return Err(CfHtmlError::NoHeader);
    }
    h.end = pos;
    Ok(h)
}

/// The HTML fragment of a CF_HTML payload. Trailing NULs (clipboard
/// buffers are often padded) are ignored.
pub(crate) fn parse(payload: &[u8]) -> Result<String, CfHtmlError> {
    let len = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let data = &payload[..len];
    let h = parse_header(data)?;
    let range = |s: usize, e: usize| -> Result<&[u8], CfHtmlError> {
        if s < h.end || s > e || e > data.len() {
            return Err(CfHtmlError::BadOffsets);
        }
        Ok(&data[s..e])
    };
    let bytes = match (h.start_fragment, h.end_fragment) {
        (Some(s), Some(e)) => {
            let frag = range(s, e)?;
            // Wine's X11 bridge writes "\n<!--EndFragment-->" after the
            // HTML and counts that newline into the fragment (EndFragment
            // is one too far); there the comment ends the context.
            let rest = &data[e..];
            let wine_layout = h.end_html == Some(e + END_FRAGMENT_COMMENT.len())
                && rest.eq_ignore_ascii_case(END_FRAGMENT_COMMENT.as_bytes());
            match frag.strip_suffix(b"\n") {
                Some(f) if wine_layout => f,
                _ => frag,
            }
        }
        _ => {
            let (s, e) = match (h.start_html, h.end_html) {
                (Some(s), Some(e)) => (s, e),
                // Some writers put -1 or nothing for the context.
                _ => (h.end, data.len()),
            };
            let context = range(s, e)?;
            fragment_by_comments(context).unwrap_or(context)
        }
    };
    String::from_utf8(bytes.to_vec()).map_err(|_| CfHtmlError::NotUtf8)
}

/// The bytes between `<!--StartFragment-->` and `<!--EndFragment-->`.
fn fragment_by_comments(context: &[u8]) -> Option<&[u8]> {
    let find = |hay: &[u8], needle: &str| {
        hay.windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    let s = find(context, START_FRAGMENT_COMMENT)? + START_FRAGMENT_COMMENT.len();
    let e = s + find(&context[s..], END_FRAGMENT_COMMENT)?;
    Some(&context[s..e])
}

/// A CF_HTML payload whose context and fragment are both exactly `html`.
pub(crate) fn write(html: &str) -> Vec<u8> {
    // Every offset is 10 digits, so the header length is fixed.
    const HEADER_LEN: usize = "Version:0.9\r\n".len()
        + "StartHTML:\r\n".len()
        + "EndHTML:\r\n".len()
        + "StartFragment:\r\n".len()
        + "EndFragment:\r\n".len()
        + 4 * 10;
    let start = HEADER_LEN;
    let end = start + html.len();
    let mut out = format!(
        "Version:0.9\r\nStartHTML:{start:010}\r\nEndHTML:{end:010}\r\n\
         StartFragment:{start:010}\r\nEndFragment:{end:010}\r\n"
    )
    .into_bytes();
    debug_assert_eq!(out.len(), HEADER_LEN);
    out.extend_from_slice(html.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse_is_identity_and_offsets_point_at_the_html() {
        for html in ["", "<b>hi</b>", "<p>Grüße — 日本語 🎉</p>\r\n<i>x</i>"] {
            let payload = write(html);
            assert_eq!(parse(&payload).unwrap(), html);
            let h = parse_header(&payload).unwrap();
            let (s, e) = (h.start_fragment.unwrap(), h.end_fragment.unwrap());
            assert_eq!(&payload[s..e], html.as_bytes());
            assert_eq!((h.start_html, h.end_html), (Some(s), Some(e)));
            assert_eq!(h.end, s, "the HTML follows the header directly");
            assert_eq!(e, payload.len());
        }
    }

    #[test]
    fn browser_style_payload_yields_the_fragment() {
        // Shape written by Chromium: full document, fragment comments,
        // offsets to the bytes between them.
        let before = "<html>\r\n<body>\r\n<!--StartFragment-->";
        let frag = "<b>bold</b> é";
        let after = "<!--EndFragment-->\r\n</body>\r\n</html>";
        let header_len = 105;
        let sh = header_len;
        let sf = sh + before.len();
        let ef = sf + frag.len();
        let eh = ef + after.len();
        let header = format!(
            "Version:0.9\r\nStartHTML:{sh:010}\r\nEndHTML:{eh:010}\r\nStartFragment:{sf:010}\r\nEndFragment:{ef:010}\r\n"
        );
        assert_eq!(header.len(), header_len);
        let payload = format!("{header}{before}{frag}{after}\0\0");
        assert_eq!(parse(payload.as_bytes()).unwrap(), frag);
    }

    #[test]
    fn wine_payload_loses_the_newline_its_end_offset_counts() {
        // What Wine 8's X11 bridge makes of `text/html` from X: "\n" line
        // ends, EndFragment one past the HTML (it counts the "\n" of the
        // trailer), EndHTML at the end of the trailer.
        let frag = "<i>from X</i>";
        let head_fmt = |eh: usize, sf: usize, ef: usize| {
            format!("Version:0.9\nStartHTML:0000000100\nEndHTML:{eh:010}\nStartFragment:{sf:010}\nEndFragment:{ef:010}\n<!--StartFragment-->")
        };
        let len = head_fmt(0, 0, 0).len();
        let trailer = "\n<!--EndFragment-->";
        let payload = format!(
            "{}{frag}{trailer}",
            head_fmt(len + frag.len() + trailer.len(), len, len + frag.len() + 1)
        );
        assert_eq!(parse(payload.as_bytes()).unwrap(), frag);
        // A fragment that really ends in a newline, written correctly, keeps it.
        let with_nl = "<p>x</p>\n";
        let payload = format!(
            "{}{with_nl}<!--EndFragment-->\n</html>",
            head_fmt(len + with_nl.len() + 26, len, len + with_nl.len())
        );
        assert_eq!(parse(payload.as_bytes()).unwrap(), with_nl);
    }

    #[test]
    fn missing_fragment_offsets_fall_back_to_comments_then_context() {
        let p = "Version:1.0\r\nStartHTML:-1\r\nEndHTML:-1\r\n<html><!--StartFragment-->x<!--EndFragment--></html>";
        assert_eq!(parse(p.as_bytes()).unwrap(), "x");
        let p = "Version:1.0\r\n<p>whole</p>";
        assert_eq!(parse(p.as_bytes()).unwrap(), "<p>whole</p>");
    }

    #[test]
    fn hostile_payloads_are_errors_not_panics() {
        assert_eq!(parse(b""), Err(CfHtmlError::NoHeader));
        assert_eq!(parse(b"<b>no header</b>"), Err(CfHtmlError::NoHeader));
        let past_end = "Version:0.9\r\nStartFragment:0000000030\r\nEndFragment:0000099999\r\nab";
        assert_eq!(parse(past_end.as_bytes()), Err(CfHtmlError::BadOffsets));
        let reversed =
            "Version:0.9\r\nStartFragment:0000000060\r\nEndFragment:0000000058\r\nabcdefgh";
        assert_eq!(parse(reversed.as_bytes()), Err(CfHtmlError::BadOffsets));
        let into_header =
            "Version:0.9\r\nStartFragment:0000000000\r\nEndFragment:0000000005\r\nabc";
        assert_eq!(parse(into_header.as_bytes()), Err(CfHtmlError::BadOffsets));
        let huge = "Version:0.9\r\nStartFragment:99999999999999999999999\r\nEndFragment:1\r\nab";
        // An unreadable offset counts as absent: the context is used.
        assert_eq!(parse(huge.as_bytes()).unwrap(), "ab");
        let mut bad_utf8 = write("ab");
        let n = bad_utf8.len();
        bad_utf8[n - 1] = 0xff;
        assert_eq!(parse(&bad_utf8), Err(CfHtmlError::NotUtf8));
    }
}
