//! The clip content model: what lives *inside* an envelope's ciphertext.
//!
//! ```text
//! item    : version u8 = 1 | timestamp_ms u64 | content
//! content : tag u8 | body
//!   0x01 text   : text bytes
//!   0x02 html   : html bytes | alt_text bytes
//!   0x03 image  : width u32 | height u32 | png bytes
//!   0x04 files  : count u16 | entry*
//!   0x05 image blob : width u32 | height u32 | size u64 | id [16] | sha256 [32] | key [32]
//! entry   : name bytes | size u64 | body_tag u8 | (0x01 inline: data bytes
//!                                                | 0x02 blob: id [16] | sha256 [32] | key [32])
//! ```
//!
//! Origin device and per-device sequence number live in the envelope header
//! (authenticated as AAD); the timestamp lives here, hidden from the relay.
//! Together they give [`ClipMeta`], which receivers use to order items
//! "newest wins" and to drop duplicates and echoes.
//!
//! A [`FileBody::Blob`] or a [`ClipContent::ImageBlob`] refers to a blob
//! sealed by [`crate::blob`]; its key travels only here, inside the envelope, so the relay stores ciphertext it
//! cannot open.
//!
//! `Debug` prints lengths only, never contents or keys.

use crate::blob::{BlobId, BlobKey};
use crate::codec::{DecodeError, Reader, Writer};
use crate::ids::DeviceId;
use std::cmp::Ordering;
use std::fmt;

/// Content format version.
pub const CONTENT_VERSION: u8 = 1;
/// Longest file name (a relative path, `/`-separated), in bytes.
pub const MAX_FILE_NAME: usize = 4096;
/// Most entries in one file list.
pub const MAX_FILES: usize = 10_000;

const TAG_TEXT: u8 = 0x01;
const TAG_HTML: u8 = 0x02;
const TAG_IMAGE: u8 = 0x03;
const TAG_FILES: u8 = 0x04;
const TAG_IMAGE_BLOB: u8 = 0x05;
const BODY_INLINE: u8 = 0x01;
const BODY_BLOB: u8 = 0x02;
/// Bytes of a blob body after its tag: id, sha256, key.
const BLOB_BODY_LEN: usize = 16 + 32 + 32;

/// One clipboard item with its timestamp.
#[derive(Clone, PartialEq, Eq)]
pub struct ClipItem {
    /// When the item was copied, in ms since the Unix epoch (sender's clock).
    pub timestamp_ms: u64,
    /// What was copied.
    pub content: ClipContent,
}

/// What was copied.
#[derive(Clone, PartialEq, Eq)]
pub enum ClipContent {
    /// Plain UTF-8 text.
    Text(String),
    /// HTML with its plain-text alternative.
    Html {
        /// The HTML fragment.
        html: String,
        /// The plain-text rendering, for targets that take text only.
        alt_text: String,
    },
    /// An image, as PNG bytes.
    Image {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// PNG-encoded pixels.
        png: Vec<u8>,
    },
    /// A list of files (directories flattened to relative paths).
    Files(Vec<FileEntry>),
    /// A large image whose PNG bytes are a blob on the relay (sealed by
    /// [`crate::blob`]); receivers fetch and open it, then treat it as
    /// [`ClipContent::Image`].
    ImageBlob {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Length of the PNG bytes (the blob's plaintext length).
        size: u64,
        /// Blob id on the relay.
        id: BlobId,
        /// SHA-256 of the PNG bytes, checked by
        /// [`crate::blob::BlobOpener::finish`].
        sha256: [u8; 32],
        /// The blob's random key. Redacted in `Debug`, zeroized on drop.
        key: BlobKey,
    },
}

/// One file of a file list.
#[derive(Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path, `/`-separated, as named by the sender. Untrusted: the
    /// receiver must sanitise it before touching the file system.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The contents, inline or by reference.
    pub body: FileBody,
}

/// Where a file's bytes are.
#[derive(Clone, PartialEq, Eq)]
pub enum FileBody {
    /// The bytes themselves (small files).
    Inline(Vec<u8>),
    /// A reference to an encrypted blob on the relay (large files). The
    /// file's length is [`FileEntry::size`].
    Blob {
        /// Blob id on the relay (random; also bound into every chunk).
        id: BlobId,
        /// SHA-256 of the plaintext file, checked by
        /// [`crate::blob::BlobOpener::finish`].
        sha256: [u8; 32],
        /// The blob's random key. Redacted in `Debug`, zeroized on drop.
        key: BlobKey,
    },
}

impl fmt::Debug for ClipItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClipItem {{ timestamp_ms: {}, content: {:?} }}",
            self.timestamp_ms, self.content
        )
    }
}

impl fmt::Debug for ClipContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => write!(f, "Text({} bytes)", t.len()),
            Self::Html { html, alt_text } => {
                write!(f, "Html({} + {} bytes)", html.len(), alt_text.len())
            }
            Self::Image { width, height, png } => {
                write!(f, "Image({width}x{height}, {} bytes)", png.len())
            }
            Self::Files(files) => write!(f, "Files({} entries)", files.len()),
            Self::ImageBlob {
                width,
                height,
                size,
                id,
                ..
            } => write!(f, "ImageBlob({width}x{height}, {size} bytes, {id})"),
        }
    }
}

impl fmt::Debug for FileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileEntry({} bytes)", self.size)
    }
}

impl fmt::Debug for FileBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(d) => write!(f, "Inline({} bytes)", d.len()),
            Self::Blob { id, .. } => write!(f, "Blob({id})"),
        }
    }
}

impl ClipContent {
    /// A short name for the content type, for status output and logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Text(_) => "text",
            Self::Html { .. } => "html",
            Self::Image { .. } | Self::ImageBlob { .. } => "image",
            Self::Files(_) => "files",
        }
    }

    /// The plain-text form, where there is one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(t) => Some(t),
            Self::Html { alt_text, .. } => Some(alt_text),
            _ => None,
        }
    }

    /// Bytes of payload (for size limits).
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Html { html, alt_text } => html.len() + alt_text.len(),
            Self::Image { png, .. } => png.len(),
            Self::Files(files) => files
                .iter()
                .map(|f| match &f.body {
                    FileBody::Inline(d) => d.len() + f.name.len(),
                    FileBody::Blob { .. } => BLOB_BODY_LEN + f.name.len(),
                })
                .sum(),
            // The reference travels, not the image: 4 + 4 + 8 + id, sha256, key.
            Self::ImageBlob { .. } => 16 + BLOB_BODY_LEN,
        }
    }
}

impl ClipItem {
    /// Encodes the item (the plaintext of an envelope).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + self.content.payload_len());
        w.u8(CONTENT_VERSION);
        w.u64(self.timestamp_ms);
        match &self.content {
            ClipContent::Text(t) => {
                w.u8(TAG_TEXT);
                w.str(t);
            }
            ClipContent::Html { html, alt_text } => {
                w.u8(TAG_HTML);
                w.str(html);
                w.str(alt_text);
            }
            ClipContent::Image { width, height, png } => {
                w.u8(TAG_IMAGE);
                w.u32(*width);
                w.u32(*height);
                w.bytes(png);
            }
            ClipContent::Files(files) => {
                w.u8(TAG_FILES);
                let files = &files[..files.len().min(MAX_FILES)];
                w.count(files.len());
                for f in files {
                    w.str(crate::frame::truncate_str(&f.name, MAX_FILE_NAME));
                    w.u64(f.size);
                    match &f.body {
                        FileBody::Inline(d) => {
                            w.u8(BODY_INLINE);
                            w.bytes(d);
                        }
                        FileBody::Blob { id, sha256, key } => {
                            w.u8(BODY_BLOB);
                            w.raw(id.as_bytes());
                            w.raw(sha256);
                            w.raw(key.expose());
                        }
                    }
                }
            }
            ClipContent::ImageBlob {
                width,
                height,
                size,
                id,
                sha256,
                key,
            } => {
                w.u8(TAG_IMAGE_BLOB);
                w.u32(*width);
                w.u32(*height);
                w.u64(*size);
                w.raw(id.as_bytes());
                w.raw(sha256);
                w.raw(key.expose());
            }
        }
        w.into_inner()
    }

    /// Decodes an item. Never panics; allocates at most the input's size.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let version = r.u8()?;
        if version != CONTENT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let timestamp_ms = r.u64()?;
        let content = match r.u8()? {
            TAG_TEXT => ClipContent::Text(r.str_max(usize::MAX, "text")?.to_owned()),
            TAG_HTML => ClipContent::Html {
                html: r.str_max(usize::MAX, "html")?.to_owned(),
                alt_text: r.str_max(usize::MAX, "alt text")?.to_owned(),
            },
            TAG_IMAGE => ClipContent::Image {
                width: r.u32()?,
                height: r.u32()?,
                png: r.bytes()?.to_vec(),
            },
            TAG_FILES => {
                // name len (4) + size (8) + body tag (1) + body len (4)
                let n = r.count(17, "file list")?;
                if n > MAX_FILES {
                    return Err(DecodeError::Range("file list"));
                }
                let mut files = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.str_max(MAX_FILE_NAME, "file name")?.to_owned();
                    let size = r.u64()?;
                    let body = match r.u8()? {
                        BODY_INLINE => FileBody::Inline(r.bytes()?.to_vec()),
                        BODY_BLOB => FileBody::Blob {
                            id: BlobId(r.array()?),
                            sha256: r.array()?,
                            key: BlobKey::from_bytes(r.array()?),
                        },
                        tag => {
                            return Err(DecodeError::UnknownTag {
                                what: "file body",
                                tag,
                            })
                        }
                    };
                    files.push(FileEntry { name, size, body });
                }
                ClipContent::Files(files)
            }
            TAG_IMAGE_BLOB => ClipContent::ImageBlob {
                width: r.u32()?,
                height: r.u32()?,
                size: r.u64()?,
                id: BlobId(r.array()?),
                sha256: r.array()?,
                key: BlobKey::from_bytes(r.array()?),
            },
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "content",
                    tag,
                })
            }
        };
        r.finish()?;
        Ok(Self {
            timestamp_ms,
            content,
        })
    }
}

/// Where an item came from and when: enough to order and dedupe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClipMeta {
    /// The device that copied it (envelope header).
    pub origin: DeviceId,
    /// That device's sequence number (envelope header).
    pub seq: u64,
    /// Copy time in ms since the epoch (inside the ciphertext).
    pub timestamp_ms: u64,
}

impl ClipMeta {
    /// "Newest wins" order: later timestamp first; ties broken by origin
    /// device, then sequence, so every device picks the same winner.
    pub fn order(&self, other: &Self) -> Ordering {
        (self.timestamp_ms, self.origin, self.seq).cmp(&(
            other.timestamp_ms,
            other.origin,
            other.seq,
        ))
    }

    /// True when `self` should replace `other` on the clipboard.
    pub fn is_newer_than(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Greater
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_content() {
        let item = ClipItem {
            timestamp_ms: 1,
            content: ClipContent::Text("secret words".into()),
        };
        let s = format!("{item:?}");
        assert!(!s.contains("secret"));
        assert!(s.contains("12 bytes"));
    }

    #[test]
    fn newest_wins_is_total_and_deterministic() {
        let a = ClipMeta {
            origin: DeviceId(1),
            seq: 5,
            timestamp_ms: 100,
        };
        let b = ClipMeta {
            origin: DeviceId(2),
            seq: 1,
            timestamp_ms: 100,
        };
        assert!(b.is_newer_than(&a));
        assert!(!a.is_newer_than(&b));
        assert!(!a.is_newer_than(&a));
    }

    #[test]
    fn image_blob_debug_hides_key_and_digest() {
        let c = ClipContent::ImageBlob {
            width: 3,
            height: 2,
            size: 70_000,
            id: BlobId([0x11; 16]),
            sha256: [0xab; 32],
            key: BlobKey::from_bytes([0xcd; 32]),
        };
        let s = format!("{c:?}");
        assert!(
            !s.contains("cd") && !s.contains("ab") && !s.contains("205"),
            "{s}"
        );
        assert!(s.contains("3x2") && s.contains("70000 bytes"), "{s}");
        assert_eq!(c.kind_name(), "image");
        assert_eq!(c.as_text(), None);
    }

    #[test]
    fn hostile_file_count_is_rejected() {
        let mut buf = vec![CONTENT_VERSION];
        buf.extend_from_slice(&0u64.to_be_bytes());
        buf.extend_from_slice(&[TAG_FILES, 0xff, 0xff]);
        assert_eq!(ClipItem::decode(&buf), Err(DecodeError::Range("file list")));
    }
}
