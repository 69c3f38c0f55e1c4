//! Turning a file name chosen by a peer into a safe relative path.
//!
//! A [`crate::FileEntry::name`] comes from another device, which may be
//! compromised or running a different OS. [`SafePath::new`] maps any string
//! to a list of components that, joined under a download folder, stay inside
//! it on Linux, macOS and Windows:
//!
//! - both `/` and `\` separate components, so neither survives inside one;
//! - empty, `.` and `..` components are dropped (never "popped"), so nothing
//!   climbs out; a leading `/`, `\\server\share` or `C:` loses its meaning
//!   (`:` is replaced, empty components vanish);
//! - control characters (C0, DEL, C1), the characters Windows forbids
//!   (`< > : " | ? *`) and Unicode bidi controls (which can disguise an
//!   extension) become `_`;
//! - trailing dots and spaces and leading spaces are trimmed (Windows strips
//!   them, which would alias names);
//! - Windows device names (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`,
//!   `LPT0`–`LPT9`, the superscript-digit forms, `CONIN$`, `CONOUT$`,
//!   `CLOCK$`), with or without an extension and in any case, get a `_`
//!   prefix;
//! - a component is at most [`MAX_COMPONENT_BYTES`] bytes (the extension is
//!   kept when cutting), a path at most [`MAX_DEPTH`] components and
//!   [`MAX_PATH_BYTES`] bytes;
//! - a name that sanitises to nothing becomes `unnamed`.
//!
//! The mapping is idempotent: a sanitised path sanitises to itself.
//!
//! [`numbered_name`] and [`unique_name`] pick `name (1).ext`-style
//! alternatives so a received file never replaces an existing one. The
//! predicate only narrows the search: the writer must still create the file
//! with `create_new` (`O_EXCL`) and try the next number on "already exists",
//! because the directory can change between the check and the write.
//!
//! A safe name is not the whole story. The writer should also create the
//! directories itself below a folder it made for this transfer, so that a
//! symlink already in the download folder is never followed, and write to a
//! temporary name that it renames into place only after the blob opened
//! completely ([`crate::blob::BlobOpener::finish`]).
//!
//! Names are content: `Debug` of [`SafePath`] prints only its shape.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest component, in UTF-8 bytes (the common file-system limit).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Most components in one path (directories plus the file name).
pub const MAX_DEPTH: usize = 16;
/// Longest path, in bytes, components joined with `/`.
pub const MAX_PATH_BYTES: usize = 1024;
/// The name used when nothing of the peer's name survives.
pub const UNNAMED: &str = "unnamed";
/// Longest extension kept whole when a component is cut to length.
const MAX_KEPT_EXTENSION: usize = 32;
/// Highest number [`unique_name`] tries before giving up.
pub const MAX_NUMBERED: u32 = 9_999;

const DEVICE_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$", "COM0", "COM1", "COM2", "COM3",
    "COM4", "COM5", "COM6", "COM7", "COM8", "COM9", "COM¹", "COM²", "COM³", "LPT0", "LPT1", "LPT2",
    "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9", "LPT¹", "LPT²", "LPT³",
];

/// A relative path whose every component is safe to create under a
/// directory on any supported OS. Never empty.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafePath(Vec<String>);

impl fmt::Debug for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SafePath({} components, {} bytes)",
            self.0.len(),
            self.to_relative_string().len()
        )
    }
}

impl SafePath {
    /// Sanitises a peer-supplied relative path (see the module docs).
    pub fn new(peer_path: &str) -> Self {
        let mut parts: Vec<String> = peer_path
            .split(['/', '\\'])
            .filter_map(sanitize_component)
            .collect();
        if parts.is_empty() {
            parts.push(UNNAMED.to_owned());
        }
        // Depth cap: keep the outermost directories and the file name.
        if parts.len() > MAX_DEPTH {
            let name = parts.pop().unwrap_or_else(|| UNNAMED.to_owned());
            parts.truncate(MAX_DEPTH - 1);
            parts.push(name);
        }
        // Length cap: drop the innermost directories until it fits. A lone
        // component is at most MAX_COMPONENT_BYTES, below the cap.
        while parts.len() > 1 && joined_len(&parts) > MAX_PATH_BYTES {
            parts.remove(parts.len() - 2);
        }
        Self(parts)
    }

    /// The components, outermost first; the last is the file name.
    pub fn components(&self) -> &[String] {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.last().map_or(UNNAMED, String::as_str)
    }

    /// The directory components (possibly none).
    pub fn dirs(&self) -> &[String] {
        &self.0[..self.0.len().saturating_sub(1)]
    }

    /// The same directories with another (sanitised) file name, e.g. one
    /// chosen by [`unique_name`].
    pub fn with_file_name(&self, name: &str) -> Self {
        let mut parts = self.dirs().to_vec();
        parts.push(sanitize_component(name).unwrap_or_else(|| UNNAMED.to_owned()));
        Self(parts)
    }

    /// The components joined with `/`.
    pub fn to_relative_string(&self) -> String {
        self.0.join("/")
    }

    /// `base` with every component pushed onto it. Pure path arithmetic: no
    /// file-system access.
    pub fn join_to(&self, base: &Path) -> PathBuf {
        let mut p = base.to_path_buf();
        for c in &self.0 {
            p.push(c);
        }
        p
    }
}

fn joined_len(parts: &[String]) -> usize {
    parts.iter().map(String::len).sum::<usize>() + parts.len().saturating_sub(1)
}

/// Sanitises one component; `None` when nothing is left of it (empty, only
/// dots and spaces). Any `/` or `\` inside becomes `_`.
pub fn sanitize_component(raw: &str) -> Option<String> {
    let mapped: String = raw
        .chars()
        .map(|c| if is_forbidden(c) { '_' } else { c })
        .collect();
    let mut s = trim(&mapped).to_owned();
    if s.is_empty() {
        return None;
    }
    if s.len() > MAX_COMPONENT_BYTES {
        s = trim(&cut_keeping_extension(&s, MAX_COMPONENT_BYTES)).to_owned();
        if s.is_empty() {
            return None;
        }
    }
    if is_device_name(&s) {
        s.insert(0, '_');
        if s.len() > MAX_COMPONENT_BYTES {
            // Starts with '_': cannot become a device name or empty again.
            s = trim(&cut_keeping_extension(&s, MAX_COMPONENT_BYTES)).to_owned();
        }
    }
    Some(s)
}

fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Trims leading spaces and trailing dots and spaces.
fn trim(s: &str) -> &str {
    s.trim_start_matches(' ').trim_end_matches(['.', ' '])
}

/// Windows reserves device names whatever the extension and case, and
/// ignores trailing spaces before the extension (`"con .txt"`).
fn is_device_name(s: &str) -> bool {
    let stem = s.split('.').next().unwrap_or(s).trim_end_matches(' ');
    DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem))
}

/// The last `.ext` of `s` (at most [`MAX_KEPT_EXTENSION`] bytes, not the
/// whole name), or `""`.
fn extension(s: &str) -> &str {
    match s.rfind('.') {
        Some(i) if i > 0 && s.len() - i <= MAX_KEPT_EXTENSION => &s[i..],
        _ => "",
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary, keeping its
/// extension when there is room.
fn cut_keeping_extension(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let ext = extension(s);
    let stem = &s[..s.len() - ext.len()];
    let room = max.saturating_sub(ext.len());
    let cut = floor_char_boundary(stem, room);
    if cut == 0 {
        return s[..floor_char_boundary(s, max)].to_owned();
    }
    format!("{}{ext}", &stem[..cut])
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// Alternative `n` for a file name: `n = 0` is the (sanitised) name itself,
/// then `stem (n).ext`, cut so the result stays within
/// [`MAX_COMPONENT_BYTES`]. Always a sanitised component.
pub fn numbered_name(name: &str, n: u32) -> String {
    let name = sanitize_component(name).unwrap_or_else(|| UNNAMED.to_owned());
    if n == 0 {
        return name;
    }
    let ext = extension(&name);
    let stem = &name[..name.len() - ext.len()];
    let suffix = format!(" ({n})");
    let room = MAX_COMPONENT_BYTES.saturating_sub(ext.len() + suffix.len());
    let stem = trim(&stem[..floor_char_boundary(stem, room)]);
    let out = format!("{stem}{suffix}{ext}");
    sanitize_component(&out).unwrap_or_else(|| UNNAMED.to_owned())
}

/// The first of `name`, `name (1)`, `name (2)`, … for which `exists` is
/// false, or `None` after [`MAX_NUMBERED`] tries. `exists` is asked about
/// the candidate file name in the target directory.
pub fn unique_name(name: &str, mut exists: impl FnMut(&str) -> bool) -> Option<String> {
    (0..=MAX_NUMBERED)
        .map(|n| numbered_name(name, n))
        .find(|c| !exists(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn s(p: &str) -> String {
        SafePath::new(p).to_relative_string()
    }

    #[test]
    fn plain_names_are_untouched() {
        for p in [
            "report.pdf",
            "a/b/c.txt",
            ".bashrc",
            "photo 2024.jpeg",
            "日本語.txt",
            "x..y",
            "archive.tar.gz",
        ] {
            assert_eq!(s(p), p);
        }
    }

    #[test]
    fn traversal_and_absolute_paths_stay_inside() {
        let cases = [
            ("../../etc/passwd", "etc/passwd"),
            ("..", "unnamed"),
            ("a/../../b", "a/b"),
            ("/etc/shadow", "etc/shadow"),
            ("\\Windows\\System32\\x.dll", "Windows/System32/x.dll"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("C:\\Users\\me\\x", "C_/Users/me/x"),
            ("C:x", "C_x"),
            ("\\\\server\\share\\f", "server/share/f"),
            ("\\\\?\\C:\\f", "_/C_/f"),
            ("\\\\.\\pipe\\x", "pipe/x"),
            ("./a/./b", "a/b"),
            ("a//b", "a/b"),
            ("....", "unnamed"),
            ("a/.../b", "a/b"),
            ("", "unnamed"),
            ("/", "unnamed"),
            (" ", "unnamed"),
            ("~/x", "~/x"),
        ];
        for (input, want) in cases {
            assert_eq!(s(input), want, "{input:?}");
        }
    }

    #[test]
    fn forbidden_characters_are_replaced() {
        assert_eq!(s("a\0b"), "a_b");
        assert_eq!(s("line\nbreak\r.txt"), "line_break_.txt");
        assert_eq!(s("esc\u{1b}[31m"), "esc_[31m");
        assert_eq!(s("c1\u{85}\u{9b}"), "c1__");
        assert_eq!(s("del\u{7f}"), "del_");
        assert_eq!(s("a<b>c:d\"e|f?g*h"), "a_b_c_d_e_f_g_h");
        assert_eq!(s("file:stream:$DATA"), "file_stream_$DATA");
        // Right-to-left override disguising "exe" as "txt".
        assert_eq!(s("invoice\u{202e}txt.exe"), "invoice_txt.exe");
        assert_eq!(s("a\u{2066}b\u{200f}"), "a_b_");
    }

    #[test]
    fn windows_trailing_dots_and_spaces_are_trimmed() {
        assert_eq!(s("name."), "name");
        assert_eq!(s("name. . "), "name");
        assert_eq!(s("  lead"), "lead");
        assert_eq!(s("dir. /file "), "dir/file");
        assert_eq!(s("a. b"), "a. b");
    }

    #[test]
    fn device_names_are_prefixed_in_any_form() {
        for d in [
            "CON",
            "con",
            "Con.txt",
            "PRN.tar.gz",
            "aux",
            "NUL",
            "nul.",
            "COM1",
            "com9.log",
            "LPT1",
            "lpt3.x",
            "COM0",
            "COM¹",
            "lpt²",
            "CONIN$",
            "conout$.txt",
            "CLOCK$",
            "con .txt",
            "NUL ",
        ] {
            let out = s(d);
            assert!(out.starts_with('_'), "{d:?} -> {out:?}");
            assert!(!is_device_name(&out), "{d:?} -> {out:?}");
        }
        assert_eq!(s("CON.txt"), "_CON.txt");
        assert_eq!(s("dir/aux/x"), "dir/_aux/x");
        for ok in ["CONSOLE", "COM10", "LPT", "nullable.txt", "_CON", "acon"] {
            assert_eq!(s(ok), ok);
        }
    }

    #[test]
    fn long_components_are_cut_keeping_the_extension() {
        let long = format!("{}.pdf", "a".repeat(400));
        let out = s(&long);
        assert_eq!(out.len(), MAX_COMPONENT_BYTES);
        assert!(out.ends_with("aaa.pdf"));
        // Multi-byte characters are never split.
        let wide = format!("{}.txt", "é".repeat(300));
        let out = s(&wide);
        assert!(out.len() <= MAX_COMPONENT_BYTES && out.ends_with(".txt"));
        // A long device name with a long extension.
        let dev = format!("CON.{}", "x".repeat(300));
        let out = s(&dev);
        assert!(out.starts_with("_CON") && out.len() <= MAX_COMPONENT_BYTES);
        // Cutting that leaves a trailing space trims it.
        let sp = format!("{} b", "a".repeat(254));
        assert_eq!(s(&sp), "a".repeat(254));
    }

    #[test]
    fn depth_and_total_length_are_capped() {
        let deep = (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("/");
        let p = SafePath::new(&deep);
        assert_eq!(p.components().len(), MAX_DEPTH);
        assert_eq!(p.file_name(), "99");
        assert_eq!(p.dirs()[0], "0");
        let wide = vec!["d".repeat(250); 10].join("/") + "/f.txt";
        let p = SafePath::new(&wide);
        assert!(p.to_relative_string().len() <= MAX_PATH_BYTES);
        assert_eq!(p.file_name(), "f.txt");
    }

    #[test]
    fn join_to_stays_under_base() {
        let base = Path::new("downloads");
        let p = SafePath::new("../../x/../y.txt").join_to(base);
        assert_eq!(p, base.join("x").join("y.txt"));
        assert!(p.starts_with(base));
    }

    #[test]
    fn debug_hides_the_name() {
        let p = SafePath::new("secret-plans/SECRET.txt");
        let d = format!("{p:?}");
        assert!(!d.to_lowercase().contains("secret"), "{d}");
        assert_eq!(d, "SafePath(2 components, 23 bytes)");
    }

    #[test]
    fn numbered_names_insert_before_the_extension() {
        assert_eq!(numbered_name("a.txt", 0), "a.txt");
        assert_eq!(numbered_name("a.txt", 1), "a (1).txt");
        assert_eq!(numbered_name("a.tar.gz", 2), "a.tar (2).gz");
        assert_eq!(numbered_name(".bashrc", 1), ".bashrc (1)");
        assert_eq!(numbered_name("noext", 12), "noext (12)");
        assert_eq!(numbered_name("", 1), "unnamed (1)");
        assert_eq!(numbered_name("CON", 1), "_CON (1)");
        let long = format!("{}.txt", "b".repeat(300));
        let n = numbered_name(&long, 9999);
        assert!(
            n.len() <= MAX_COMPONENT_BYTES && n.ends_with(" (9999).txt"),
            "{n}"
        );
    }

    #[test]
    fn unique_name_never_picks_an_existing_one() {
        let taken: HashSet<String> = ["a.txt", "a (1).txt", "a (2).txt"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            unique_name("a.txt", |c| taken.contains(c)).as_deref(),
            Some("a (3).txt")
        );
        assert_eq!(
            unique_name("b.txt", |c| taken.contains(c)).as_deref(),
            Some("b.txt")
        );
        assert_eq!(unique_name("a.txt", |_| true), None);
    }
}
