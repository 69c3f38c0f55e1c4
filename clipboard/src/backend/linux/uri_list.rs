//! File lists on the clipboard (sans-IO): `text/uri-list` (RFC 2483) and
//! GNOME's `x-special/gnome-copied-files`, to and from local paths.
//!
//! Reading keeps only `file:` URIs naming this machine (`file:///p` or
//! `file://localhost/p`); other schemes and remote hosts are ignored, as are
//! comment and empty lines. Paths are percent-decoded byte for byte, so
//! names that are not UTF-8 survive. Writing percent-encodes every byte
//! outside RFC 3986's unreserved set and `/`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

pub(crate) use crate::formats::{FILE_TARGETS, GNOME_FILES_TARGET, URI_LIST_TARGET};

/// Local paths named by a `text/uri-list` body.
pub(crate) fn parse_uri_list(body: &[u8]) -> Vec<PathBuf> {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .filter_map(file_uri_to_path)
        .collect()
}

/// Local paths named by an `x-special/gnome-copied-files` body (the first
/// line, `copy` or `cut`, is skipped; a cut is synced as a copy).
pub(crate) fn parse_gnome_copied_files(body: &[u8]) -> Vec<PathBuf> {
    let rest = match body.iter().position(|&b| b == b'\n') {
        Some(i) if matches!(&body[..i], b"copy" | b"cut" | b"copy\r" | b"cut\r") => &body[i + 1..],
        _ => body,
    };
    parse_uri_list(rest)
}

/// Parses the body of `target` (one of [`FILE_TARGETS`]).
pub(crate) fn parse_files(target: &str, body: &[u8]) -> Vec<PathBuf> {
    if target == GNOME_FILES_TARGET {
        parse_gnome_copied_files(body)
    } else {
        parse_uri_list(body)
    }
}

/// One `file:` URI to a local absolute path; `None` for anything else.
fn file_uri_to_path(uri: &[u8]) -> Option<PathBuf> {
    let rest = strip_prefix_ignore_case(uri, b"file://")?;
    let path = if rest.starts_with(b"/") {
        rest
    } else {
        strip_prefix_ignore_case(rest, b"localhost/").map(|p| &rest[rest.len() - p.len() - 1..])?
    };
    // A fragment or query is not part of a file name ('#' and '?' in names
    // are percent-encoded by every writer).
    let end = path
        .iter()
        .position(|&b| b == b'#' || b == b'?')
        .unwrap_or(path.len());
    let bytes = percent_decode(&path[..end])?;
    if bytes.contains(&0) {
        return None;
    }
    Some(PathBuf::from(OsString::from_vec(bytes)))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// Decodes `%XX` escapes; `None` for a malformed escape.
fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hi = hex(*s.get(i + 1)?)?;
            let lo = hex(*s.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// `file://` URI of an absolute path.
pub(crate) fn path_to_uri(path: &Path) -> String {
    let mut out = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `text/uri-list` body for `paths` (CRLF line ends, per RFC 2483).
pub(crate) fn encode_uri_list(paths: &[PathBuf]) -> Vec<u8> {
    let mut out = String::new();
    for p in paths {
        out.push_str(&path_to_uri(p));
        out.push_str("\r\n");
    }
    out.into_bytes()
}

/// The `x-special/gnome-copied-files` body for `paths`.
pub(crate) fn encode_gnome_copied_files(paths: &[PathBuf]) -> Vec<u8> {
    let uris: Vec<String> = paths.iter().map(|p| path_to_uri(p)).collect();
    format!("copy\n{}", uris.join("\n")).into_bytes()
}

/// The paths as plain text, one a line (for text targets of a file list).
pub(crate) fn encode_plain_paths(paths: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(p.as_os_str().as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_uris_and_ignores_the_rest() {
        let body = b"# comment\r\nfile:///home/a/My%20File.txt\r\n\
                     https://example.org/x\r\nfile://otherhost/etc/passwd\r\n\
                     FILE://localhost/tmp/b\r\n\r\nfile:///c%2Fd\n";
        assert_eq!(
            parse_uri_list(body),
            vec![
                PathBuf::from("/home/a/My File.txt"),
                PathBuf::from("/tmp/b"),
                PathBuf::from("/c/d"),
            ]
        );
    }

    #[test]
    fn malformed_escapes_and_nul_are_dropped() {
        assert!(parse_uri_list(b"file:///a%2\nfile:///b%zz\nfile:///c%00d").is_empty());
    }

    #[test]
    fn unicode_spaces_and_reserved_bytes_round_trip() {
        let paths = vec![
            PathBuf::from("/home/ü ser/日本語 file.png"),
            PathBuf::from("/tmp/100% #1?.txt"),
            PathBuf::from(OsString::from_vec(b"/tmp/not-utf8-\xff".to_vec())),
        ];
        let list = encode_uri_list(&paths);
        let text = String::from_utf8(list.clone()).unwrap();
        assert!(
            text.starts_with("file:///home/%C3%BC%20ser/%E6%97%A5"),
            "{text}"
        );
        assert!(text.contains("/tmp/100%25%20%231%3F.txt\r\n"), "{text}");
        assert_eq!(parse_uri_list(&list), paths);
        let gnome = encode_gnome_copied_files(&paths);
        assert!(gnome.starts_with(b"copy\nfile:///"));
        assert_eq!(parse_gnome_copied_files(&gnome), paths);
        assert_eq!(parse_files(GNOME_FILES_TARGET, &gnome), paths);
        assert_eq!(parse_files(URI_LIST_TARGET, &list), paths);
    }

    #[test]
    fn gnome_cut_is_read_like_copy() {
        assert_eq!(
            parse_gnome_copied_files(b"cut\nfile:///a\nfile:///b"),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[test]
    fn plain_paths_are_one_a_line() {
        let paths = vec![PathBuf::from("/a b"), PathBuf::from("/c")];
        assert_eq!(encode_plain_paths(&paths), b"/a b\n/c");
    }
}
