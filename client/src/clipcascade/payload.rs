//! ClipCascade message contents ↔ clipmesh clip content.
//!
//! The plaintext before encryption, per ClipCascade `type`:
//!
//! - `text`: the text itself (HTML travels as its plain-text alternative);
//! - `image`: base64 of the image file's bytes, any format: we send PNG, and
//!   on receipt sniff the format and keep PNG as it is, convert BMP and
//!   TIFF to PNG, and refuse others (the client's image decoders are PNG,
//!   BMP and TIFF only);
//! - `files`: a JSON object `{"<file name>": "<base64 content>", …}`. The
//!   names come from the sender: each is sanitised to one safe file name
//!   component ([`clipmesh_proto::filename::sanitize_component`]).
//!
//! Limits: an item larger than L (the server's `/max-size`, or our own
//! `max_item_bytes`, whichever is smaller) is neither sent nor accepted;
//! images also obey `max_image_bytes`, file lists `max_files`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use clipmesh_proto::content::FileBody;
use clipmesh_proto::filename::sanitize_component;
use clipmesh_proto::{ClipContent, FileEntry};
use image::{ImageFormat, ImageReader};
use std::collections::BTreeMap;
use std::io::Cursor;
use thiserror::Error;

/// Bounds on what is sent and accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest raw item, bytes (L).
    pub max_size: u64,
    /// Largest image, bytes.
    pub max_image_bytes: u64,
    /// Most files in one item.
    pub max_files: usize,
}

/// Why an item cannot travel.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    /// Over a size or count limit.
    #[error("item too large for the ClipCascade profile ({0} bytes)")]
    TooLarge(u64),
    /// A kind ClipCascade cannot carry (blobs are clipmesh-only).
    #[error("this kind of item cannot travel on the ClipCascade profile")]
    Unsupported,
    /// The received item is malformed.
    #[error("malformed ClipCascade item: {0}")]
    Malformed(&'static str),
}

/// Pixel and memory bounds for decoding a received image.
fn image_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(16_384);
    l.max_image_height = Some(16_384);
    l.max_alloc = Some(512 * 1024 * 1024);
    l
}

/// The ClipCascade `type` and plaintext for `content`.
pub fn to_wire(
    content: &ClipContent,
    limits: &Limits,
) -> Result<(&'static str, Vec<u8>), PayloadError> {
    let check = |n: usize, max: u64| {
        if n as u64 > max {
            Err(PayloadError::TooLarge(n as u64))
        } else {
            Ok(())
        }
    };
    match content {
        ClipContent::Text(t) => {
            check(t.len(), limits.max_size)?;
            Ok(("text", t.as_bytes().to_vec()))
        }
        ClipContent::Html { alt_text, .. } => {
            check(alt_text.len(), limits.max_size)?;
            Ok(("text", alt_text.as_bytes().to_vec()))
        }
        ClipContent::Image { png, .. } => {
            check(png.len(), limits.max_size.min(limits.max_image_bytes))?;
            Ok(("image", B64.encode(png).into_bytes()))
        }
        ClipContent::Files(entries) => {
            if entries.len() > limits.max_files {
                return Err(PayloadError::TooLarge(entries.len() as u64));
            }
            let mut map = BTreeMap::new();
            let mut total = 0usize;
            for e in entries {
                let FileBody::Inline(bytes) = &e.body else {
                    return Err(PayloadError::Unsupported);
                };
                total = total.saturating_add(bytes.len());
                check(total, limits.max_size)?;
                let name = e.name.rsplit('/').next().unwrap_or(&e.name).to_owned();
                map.insert(name, B64.encode(bytes));
            }
            let json = serde_json::to_vec(&map).map_err(|_| PayloadError::Malformed("files"))?;
            Ok(("files", json))
        }
        ClipContent::ImageBlob { .. } => Err(PayloadError::Unsupported),
    }
}

/// Clip content from a received `type` and plaintext. Files come back as
/// [`ClipContent::Files`] with inline bodies and sanitised flat names.
pub fn from_wire(
    kind: &str,
    plaintext: Vec<u8>,
    limits: &Limits,
) -> Result<ClipContent, PayloadError> {
    // base64 grows 4/3; JSON adds names and quotes.
    let max_encoded = limits.max_size.saturating_mul(4) / 3 + 64 * 1024;
    if plaintext.len() as u64 > max_encoded {
        return Err(PayloadError::TooLarge(plaintext.len() as u64));
    }
    match kind {
        "text" => {
            if plaintext.len() as u64 > limits.max_size {
                return Err(PayloadError::TooLarge(plaintext.len() as u64));
            }
            String::from_utf8(plaintext)
                .map(ClipContent::Text)
                .map_err(|_| PayloadError::Malformed("text is not UTF-8"))
        }
        "image" => {
            let bytes = B64
                .decode(&plaintext)
                .map_err(|_| PayloadError::Malformed("image is not base64"))?;
            if bytes.len() as u64 > limits.max_size.min(limits.max_image_bytes) {
                return Err(PayloadError::TooLarge(bytes.len() as u64));
            }
            image_to_png(bytes)
        }
        "files" => {
            let map: BTreeMap<String, String> = serde_json::from_slice(&plaintext)
                .map_err(|_| PayloadError::Malformed("files is not a name → base64 object"))?;
            if map.len() > limits.max_files {
                return Err(PayloadError::TooLarge(map.len() as u64));
            }
            let mut total = 0u64;
            let mut entries = Vec::with_capacity(map.len());
            let mut used = std::collections::HashSet::new();
            for (raw_name, b64) in map {
                let bytes = B64
                    .decode(b64.as_bytes())
                    .map_err(|_| PayloadError::Malformed("file is not base64"))?;
                total = total.saturating_add(bytes.len() as u64);
                if total > limits.max_size {
                    return Err(PayloadError::TooLarge(total));
                }
                let base = sanitize_component(&raw_name).unwrap_or_else(|| "file".to_owned());
                let name = clipmesh_proto::unique_name(&base, |n| used.contains(n))
                    .ok_or(PayloadError::Malformed("file names"))?;
                used.insert(name.clone());
                entries.push(FileEntry {
                    name,
                    size: bytes.len() as u64,
                    body: FileBody::Inline(bytes),
                });
            }
            Ok(ClipContent::Files(entries))
        }
        _ => Err(PayloadError::Unsupported),
    }
}

/// Sniffs an image and returns it as PNG content.
fn image_to_png(bytes: Vec<u8>) -> Result<ClipContent, PayloadError> {
    let format =
        image::guess_format(&bytes).map_err(|_| PayloadError::Malformed("unknown image format"))?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Tiff
    ) {
        return Err(PayloadError::Malformed(
            "image format not supported (PNG, BMP, TIFF)",
        ));
    }
    let mut r = ImageReader::with_format(Cursor::new(&bytes[..]), format);
    r.limits(image_limits());
    if format == ImageFormat::Png {
        let (width, height) = r
            .into_dimensions()
            .map_err(|_| PayloadError::Malformed("bad PNG"))?;
        return Ok(ClipContent::Image {
            width,
            height,
            png: bytes,
        });
    }
    let img = r
        .decode()
        .map_err(|_| PayloadError::Malformed("bad image"))?;
    let (width, height) = (img.width(), img.height());
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|_| PayloadError::Malformed("bad image"))?;
    Ok(ClipContent::Image { width, height, png })
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_size: 1 << 20,
        max_image_bytes: 1 << 20,
        max_files: 4,
    };

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_pixel(w, h, image::Rgba([1, 2, 3, 255]));
        let mut out = Vec::new();
        image::DynamicImage::ImageRgba8(img)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn text_image_and_files_round_trip() {
        let t = ClipContent::Text("héllo\nworld".into());
        let (k, p) = to_wire(&t, &L).unwrap();
        assert_eq!((k, p.as_slice()), ("text", "héllo\nworld".as_bytes()));
        assert_eq!(from_wire(k, p, &L).unwrap(), t);
        let img = ClipContent::Image {
            width: 3,
            height: 2,
            png: png(3, 2),
        };
        let (k, p) = to_wire(&img, &L).unwrap();
        assert_eq!(k, "image");
        assert_eq!(from_wire(k, p, &L).unwrap(), img);
        let files = ClipContent::Files(vec![FileEntry {
            name: "dir/a.txt".into(),
            size: 2,
            body: FileBody::Inline(b"hi".to_vec()),
        }]);
        let (k, p) = to_wire(&files, &L).unwrap();
        assert_eq!(p, br#"{"a.txt":"aGk="}"#);
        let ClipContent::Files(back) = from_wire(k, p, &L).unwrap() else {
            panic!()
        };
        assert_eq!(back[0].name, "a.txt");
    }

    #[test]
    fn bmp_becomes_png_and_other_formats_are_refused() {
        let img = image::RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]));
        let mut bmp = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut bmp), ImageFormat::Bmp)
            .unwrap();
        let got = from_wire("image", B64.encode(&bmp).into_bytes(), &L).unwrap();
        assert!(
            matches!(got, ClipContent::Image { width: 2, height: 2, ref png } if png.starts_with(b"\x89PNG"))
        );
        let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;";
        assert!(from_wire("image", B64.encode(gif).into_bytes(), &L).is_err());
        assert!(from_wire("image", b"%%%".to_vec(), &L).is_err());
    }

    #[test]
    fn hostile_file_names_are_sanitised() {
        let json = serde_json::json!({
            "../../etc/passwd": B64.encode(b"x"),
            "..": B64.encode(b"y"),
            "C:\\evil.exe": B64.encode(b"z"),
            "": B64.encode(b"w"),
        })
        .to_string();
        let ClipContent::Files(f) = from_wire("files", json.into_bytes(), &L).unwrap() else {
            panic!()
        };
        assert_eq!(f.len(), 4);
        let mut names: Vec<_> = f.iter().map(|e| e.name.clone()).collect();
        names.sort();
        for n in &names {
            assert!(
                !n.contains('/') && !n.contains('\\') && n != ".." && !n.is_empty(),
                "{n}"
            );
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), 4, "{names:?}");
    }

    #[test]
    fn limits_apply_both_ways() {
        let small = Limits {
            max_size: 4,
            max_image_bytes: 4,
            max_files: 1,
        };
        assert!(matches!(
            to_wire(&ClipContent::Text("12345".into()), &small),
            Err(PayloadError::TooLarge(5))
        ));
        assert!(from_wire("text", b"12345".to_vec(), &small).is_err());
        let big_img = B64.encode(png(4, 4)).into_bytes();
        assert!(matches!(
            from_wire("image", big_img, &small),
            Err(PayloadError::TooLarge(_))
        ));
        let two = serde_json::json!({"a": "", "b": ""})
            .to_string()
            .into_bytes();
        assert!(from_wire("files", two, &small).is_err());
        assert_eq!(
            from_wire("video", vec![], &L),
            Err(PayloadError::Unsupported)
        );
    }
}
