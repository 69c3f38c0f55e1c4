//! The one content hash: "is this the same clipboard item?".
//!
//! Every new/echo/stale decision on a device (the clipboard backends'
//! watchers, the device engine) compares [`ContentHash`]es, never bytes and
//! never two different hashes. It is SHA-256 over a length-prefixed,
//! domain-separated encoding of what a receiver would see:
//!
//! - the kind (`text`, `html`, `image`, `files`, or a caller's domain such as
//!   a local file list) and every field of it;
//! - for images and files, the SHA-256 of the bytes, so an inline image and
//!   the same image sent as a blob ([`ClipContent::ImageBlob`]) hash alike,
//!   and a blob's random id and key are left out (they differ per upload).
//!
//! The timestamp is not part of it. The hash is never sent or stored: it
//! only compares items inside one process, so its layout may change between
//! builds.

use crate::content::{ClipContent, FileBody};
use sha2::{Digest, Sha256};
use std::fmt;

/// SHA-256 naming a clipboard item's content (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl fmt::Debug for ContentHash {
    // A short prefix is enough to tell items apart in a debugger; the full
    // digest of a short text could be brute-forced back from a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// Builds a [`ContentHash`] field by field (each field length-prefixed, so
/// `("ab", "c")` and `("a", "bc")` differ).
#[derive(Clone)]
pub struct ContentHasher(Sha256);

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentHasher")
    }
}

impl ContentHasher {
    /// A hasher for items of kind `domain` (e.g. `"text"`, `"local files"`).
    pub fn new(domain: &str) -> Self {
        let mut h = Self(Sha256::new());
        h.bytes(domain.as_bytes());
        h
    }

    /// Adds one byte-string field.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.update((v.len() as u64).to_be_bytes());
        self.0.update(v);
        self
    }

    /// Adds one integer field.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(v.to_be_bytes());
        self
    }

    /// The hash.
    pub fn finish(self) -> ContentHash {
        ContentHash(self.0.finalize().into())
    }
}

impl ContentHash {
    /// Hashes `content` (see the module docs for what counts).
    pub fn of(content: &ClipContent) -> Self {
        match content {
            ClipContent::Text(t) => {
                let mut h = ContentHasher::new("text");
                h.bytes(t.as_bytes());
                h.finish()
            }
            ClipContent::Html { html, alt_text } => {
                let mut h = ContentHasher::new("html");
                h.bytes(html.as_bytes()).bytes(alt_text.as_bytes());
                h.finish()
            }
            ClipContent::Image { width, height, png } => {
                let digest: [u8; 32] = Sha256::digest(png).into();
                image(*width, *height, png.len() as u64, &digest)
            }
            ClipContent::ImageBlob {
                width,
                height,
                size,
                sha256,
                ..
            } => image(*width, *height, *size, sha256),
            ClipContent::Files(files) => {
                let mut h = ContentHasher::new("files");
                h.u64(files.len() as u64);
                for f in files {
                    let digest: [u8; 32] = match &f.body {
                        FileBody::Inline(d) => Sha256::digest(d).into(),
                        FileBody::Blob { sha256, .. } => *sha256,
                    };
                    h.bytes(f.name.as_bytes()).u64(f.size).bytes(&digest);
                }
                h.finish()
            }
        }
    }
}

fn image(width: u32, height: u32, size: u64, sha256: &[u8; 32]) -> ContentHash {
    let mut h = ContentHasher::new("image");
    h.u64(width.into())
        .u64(height.into())
        .u64(size)
        .bytes(sha256);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobId, BlobKey};
    use crate::content::FileEntry;

    fn text(s: &str) -> ContentHash {
        ContentHash::of(&ClipContent::Text(s.into()))
    }

    #[test]
    fn kind_and_every_field_count() {
        let h1 = ContentHash::of(&ClipContent::Html {
            html: "a".into(),
            alt_text: String::new(),
        });
        let h2 = ContentHash::of(&ClipContent::Html {
            html: String::new(),
            alt_text: "a".into(),
        });
        assert_ne!(text("a"), h1);
        assert_ne!(h1, h2);
        assert_eq!(text("a"), text("a"));
        assert_ne!(text("a"), text("b"));
        let mut a = ContentHasher::new("x");
        a.bytes(b"ab").bytes(b"c");
        let mut b = ContentHasher::new("x");
        b.bytes(b"a").bytes(b"bc");
        assert_ne!(a.finish(), b.finish());
        assert_ne!(ContentHasher::new("text").finish(), text(""));
    }

    #[test]
    fn an_image_and_its_blob_hash_alike_whatever_the_upload() {
        let png = vec![7u8; 100];
        let inline = ContentHash::of(&ClipContent::Image {
            width: 2,
            height: 3,
            png: png.clone(),
        });
        let blob = |id: u8| ClipContent::ImageBlob {
            width: 2,
            height: 3,
            size: 100,
            id: BlobId([id; 16]),
            sha256: Sha256::digest(&png).into(),
            key: BlobKey::generate(),
        };
        assert_eq!(inline, ContentHash::of(&blob(1)));
        assert_eq!(ContentHash::of(&blob(1)), ContentHash::of(&blob(2)));
        let other = ContentHash::of(&ClipContent::Image {
            width: 3,
            height: 2,
            png,
        });
        assert_ne!(inline, other);
    }

    #[test]
    fn files_hash_by_name_size_and_bytes() {
        let data = b"file body".to_vec();
        let inline = ClipContent::Files(vec![FileEntry {
            name: "a.txt".into(),
            size: 9,
            body: FileBody::Inline(data.clone()),
        }]);
        let blob = ClipContent::Files(vec![FileEntry {
            name: "a.txt".into(),
            size: 9,
            body: FileBody::Blob {
                id: BlobId([1; 16]),
                sha256: Sha256::digest(&data).into(),
                key: BlobKey::generate(),
            },
        }]);
        assert_eq!(ContentHash::of(&inline), ContentHash::of(&blob));
        let renamed = ClipContent::Files(vec![FileEntry {
            name: "b.txt".into(),
            size: 9,
            body: FileBody::Inline(data),
        }]);
        assert_ne!(ContentHash::of(&inline), ContentHash::of(&renamed));
    }

    #[test]
    fn debug_shows_a_prefix_only() {
        let s = format!("{:?}", text("secret"));
        assert!(s.len() < 24, "{s}");
    }
}
