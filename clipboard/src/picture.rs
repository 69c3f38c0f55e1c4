//! Images on the clipboard (sans-IO): which image target to read, and
//! turning what was read into a [`ClipContent::Image`] (PNG).
//!
//! PNG sources are passed through unchanged (only the header is decoded, for
//! the size), so what a peer pastes is byte for byte what was copied. Other
//! formats the `image` crate decodes (BMP, TIFF) are converted to PNG with
//! the same pixels. Decoding is bounded by [`DECODE_LIMIT`], so a hostile
//! header cannot make us allocate gigabytes, and so is every conversion
//! after it: an image is decoded only if its canvas as 8-bit RGBA
//! (width × height × 4) fits the same limit, checked from the header before
//! any pixel is allocated ([`decode_rgba`]). A small PNG (a few KiB of
//! compressed grey) can declare a canvas whose RGBA copy and BMP encoding
//! would take gigabytes.

use clipmesh_proto::ClipContent;
use image::{ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// The image target every peer writes and prefers to read.
pub(crate) const PNG_TARGET: &str = "image/png";
/// The BMP target, also served (converted on demand) when applying an image.
pub(crate) const BMP_TARGET: &str = "image/bmp";

/// Image targets, best first, with their formats. PNG needs no conversion;
/// the others are decoded and re-encoded as PNG.
pub(crate) const IMAGE_TARGETS: &[(&str, ImageFormat)] = &[
    (PNG_TARGET, ImageFormat::Png),
    (BMP_TARGET, ImageFormat::Bmp),
    ("image/x-bmp", ImageFormat::Bmp),
    ("image/x-MS-bmp", ImageFormat::Bmp),
    ("image/x-win-bitmap", ImageFormat::Bmp),
    ("image/tiff", ImageFormat::Tiff),
    ("image/x-tiff", ImageFormat::Tiff),
];

/// Most bytes a conversion may allocate for decoded pixels (a 8192×8192
/// RGBA image is 256 MiB).
pub(crate) const DECODE_LIMIT: u64 = 256 * 1024 * 1024;

/// Why an image could not be taken from the clipboard.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PictureError {
    /// Not a valid image of the announced format (or over [`DECODE_LIMIT`]).
    #[error("cannot decode the {0} image on the clipboard")]
    Decode(&'static str),
    /// The target is not one of [`IMAGE_TARGETS`].
    #[error("unknown image format")]
    UnknownTarget,
}

/// The best offered image target.
#[cfg_attr(windows, allow(dead_code))]
#[cfg_attr(target_os = "macos", allow(dead_code))] // macOS reads UTIs (`pasteboard.rs`)
pub(crate) fn choose_image_target<S: AsRef<str>>(targets: &[S]) -> Option<&'static str> {
    IMAGE_TARGETS
        .iter()
        .map(|(t, _)| *t)
        .find(|t| targets.iter().any(|o| o.as_ref() == *t))
}

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_alloc = Some(DECODE_LIMIT);
    l
}

/// Whether a `width` × `height` canvas fits [`DECODE_LIMIT`] as 8-bit RGBA
/// (the largest form any conversion here makes of it).
pub(crate) fn fits_rgba(width: u32, height: u32) -> bool {
    u64::from(width)
        .saturating_mul(u64::from(height))
        .saturating_mul(4)
        <= DECODE_LIMIT
}

/// Decodes `bytes` as `format` into 8-bit RGBA, or `None` if it does not
/// decode or its canvas does not fit [`DECODE_LIMIT`] as RGBA. The size is
/// read from the header first, so an oversized canvas allocates nothing.
pub(crate) fn decode_rgba(bytes: &[u8], format: ImageFormat) -> Option<image::RgbaImage> {
    let img = decode_bounded(bytes, format)?;
    Some(img.into_rgba8())
}

/// Decodes `bytes` as `format` if its canvas fits [`DECODE_LIMIT`] as RGBA.
fn decode_bounded(bytes: &[u8], format: ImageFormat) -> Option<image::DynamicImage> {
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    r.limits(limits());
    let (w, h) = r.into_dimensions().ok()?;
    if !fits_rgba(w, h) {
        return None;
    }
    let mut r = ImageReader::with_format(Cursor::new(bytes), format);
    r.limits(limits());
    r.decode().ok()
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "png",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => "image",
    }
}

/// Turns the bytes of image target `target` into PNG content.
pub(crate) fn to_png_content(target: &str, bytes: Vec<u8>) -> Result<ClipContent, PictureError> {
    let format = IMAGE_TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, f)| *f)
        .ok_or(PictureError::UnknownTarget)?;
    let name = format_name(format);
    if format == ImageFormat::Png {
        let mut r = ImageReader::with_format(Cursor::new(&bytes[..]), ImageFormat::Png);
        r.limits(limits());
        let (width, height) = r
            .into_dimensions()
            .map_err(|_| PictureError::Decode(name))?;
        return Ok(ClipContent::Image {
            width,
            height,
            png: bytes,
        });
    }
    let img = decode_bounded(&bytes, format).ok_or(PictureError::Decode(name))?;
    drop(bytes);
    let (width, height) = (img.width(), img.height());
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|_| PictureError::Decode(name))?;
    Ok(ClipContent::Image { width, height, png })
}

/// Checks that `png` is a PNG of the stated size before it is served (a
/// peer's item is untrusted; a wrong size would only confuse, but a non-PNG
/// served as `image/png` can crash naive readers).
pub(crate) fn check_png(width: u32, height: u32, png: &[u8]) -> Result<(), PictureError> {
    let mut r = ImageReader::with_format(Cursor::new(png), ImageFormat::Png);
    r.limits(limits());
    match r.into_dimensions() {
        Ok(dims) if dims == (width, height) => Ok(()),
        _ => Err(PictureError::Decode("png")),
    }
}

/// Converts a PNG to BMP with the same pixels; `None` if it does not
/// decode or its canvas does not fit [`DECODE_LIMIT`] as RGBA. (X11 serves
/// `image/bmp` with it; the Windows backend writes a DIB through
/// `windows/dib.rs` instead.)
#[cfg_attr(windows, allow(dead_code))]
#[cfg_attr(target_os = "macos", allow(dead_code))] // the pasteboard gets PNG only
pub(crate) fn png_to_bmp(png: &[u8]) -> Option<Vec<u8>> {
    // BMP holds 8-bit RGB(A); 16-bit or grey PNGs are widened/narrowed.
    let img = image::DynamicImage::ImageRgba8(decode_rgba(png, ImageFormat::Png)?);
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Bmp)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgba, RgbaImage};

    fn sample() -> RgbaImage {
        RgbaImage::from_fn(7, 5, |x, y| {
            Rgba([(x * 30) as u8, (y * 50) as u8, (x * y) as u8, 255])
        })
    }

    fn encode(img: &RgbaImage, f: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(img.clone())
            .write_to(&mut Cursor::new(&mut out), f)
            .unwrap();
        out
    }

    fn rgba_of_png(png: &[u8]) -> RgbaImage {
        image::load_from_memory_with_format(png, ImageFormat::Png)
            .unwrap()
            .to_rgba8()
    }

    #[test]
    fn png_passes_through_unchanged() {
        let png = encode(&sample(), ImageFormat::Png);
        let c = to_png_content(PNG_TARGET, png.clone()).unwrap();
        assert_eq!(
            c,
            ClipContent::Image {
                width: 7,
                height: 5,
                png
            }
        );
    }

    #[test]
    fn bmp_and_tiff_become_png_with_identical_pixels() {
        for (target, f) in [
            ("image/bmp", ImageFormat::Bmp),
            ("image/tiff", ImageFormat::Tiff),
        ] {
            let src = encode(&sample(), f);
            let Ok(ClipContent::Image { width, height, png }) = to_png_content(target, src) else {
                panic!("{target} not converted");
            };
            assert_eq!((width, height), (7, 5));
            assert!(png.starts_with(b"\x89PNG"));
            assert_eq!(rgba_of_png(&png), sample(), "{target}");
            check_png(7, 5, &png).unwrap();
        }
    }

    #[test]
    fn png_to_bmp_keeps_pixels() {
        let png = encode(&sample(), ImageFormat::Png);
        let bmp = png_to_bmp(&png).unwrap();
        assert!(bmp.starts_with(b"BM"));
        let back = image::load_from_memory_with_format(&bmp, ImageFormat::Bmp)
            .unwrap()
            .to_rgba8();
        assert_eq!(back, sample());
        assert_eq!(png_to_bmp(b"nope"), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(
            to_png_content(PNG_TARGET, b"\x89PNG nope".to_vec()),
            Err(PictureError::Decode("png"))
        );
        assert_eq!(
            to_png_content("image/bmp", b"BM".to_vec()),
            Err(PictureError::Decode("bmp"))
        );
        assert_eq!(
            to_png_content("image/gif", vec![]),
            Err(PictureError::UnknownTarget)
        );
        let png = encode(&sample(), ImageFormat::Png);
        assert!(check_png(8, 5, &png).is_err());
        assert!(check_png(7, 5, b"nope").is_err());
    }

    /// A grey PNG of 8192 × 8193 compresses to a few hundred KiB and
    /// decodes within [`DECODE_LIMIT`] (64 MiB at one byte a pixel), but its
    /// RGBA copy and its BMP would each be just over the limit: refused from
    /// the header, before any pixel is decoded. (16384 × 16384 would be 1 GiB
    /// each, from the same few hundred KiB.)
    #[test]
    fn small_png_of_a_huge_canvas_is_refused_before_conversion() {
        let (w, h) = (8192, 8193);
        let mut png = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut png, w, h);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut writer = enc.write_header().unwrap();
            let mut stream = writer.stream_writer().unwrap();
            let row = vec![0u8; w as usize];
            for _ in 0..h {
                std::io::Write::write_all(&mut stream, &row).unwrap();
            }
            stream.finish().unwrap();
        }
        assert!(png.len() < 4 << 20, "small input: {} bytes", png.len());
        // The header is fine and passes through as PNG content...
        assert!(check_png(w, h, &png).is_ok());
        assert!(!fits_rgba(w, h));
        // ...but no conversion touches its pixels.
        assert!(
            png_to_bmp(&png).is_none(),
            "converted a canvas over the limit"
        );
        assert!(decode_rgba(&png, ImageFormat::Png).is_none());
        // Within the limit the same shape converts.
        assert!(fits_rgba(8192, 8192));
        assert!(!fits_rgba(8192, 8193));
    }

    #[test]
    fn png_is_preferred_over_conversions() {
        assert_eq!(
            choose_image_target(&["image/bmp", "TARGETS", "image/png"]),
            Some(PNG_TARGET)
        );
        assert_eq!(
            choose_image_target(&["image/tiff", "image/x-bmp"]),
            Some("image/x-bmp")
        );
        assert_eq!(choose_image_target(&["image/gif", "UTF8_STRING"]), None);
    }
}
