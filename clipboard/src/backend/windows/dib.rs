//! Windows device-independent bitmaps (`CF_DIB`, `CF_DIBV5`) to and from
//! PNG. Pure, so it is tested on Linux.
//!
//! A DIB is a BMP file without its 14-byte `BITMAPFILEHEADER`: a
//! `BITMAPINFOHEADER` (40 bytes) or a V4/V5 header (108/124 bytes), then
//! colour masks or a palette, then the pixel rows. Reading puts a file
//! header in front (with the pixel offset computed here, which also settles
//! the "are there 12 bytes of masks after the header" question from the
//! sizes) and lets the `image` crate's BMP decoder do the rest, within
//! [`crate::picture::DECODE_LIMIT`]. A V5 DIB that embeds a PNG (`BI_PNG`)
//! passes the PNG through unchanged.
//!
//! Writing makes a bottom-up 32-bit `BI_RGB` DIB with a
//! `BITMAPINFOHEADER` — the layout every Windows reader accepts. The alpha
//! byte is filled in (readers that honour it keep transparency; the others
//! treat it as reserved), and the exact image travels in the "PNG" format
//! next to it.

use crate::picture::{decode_rgba, to_png_content, PictureError, BMP_TARGET, PNG_TARGET};
use clipmesh_proto::ClipContent;
use image::ImageFormat;

const FILE_HEADER_LEN: usize = 14;
const INFO_HEADER_LEN: u32 = 40;
const BI_RGB: u32 = 0;
const BI_BITFIELDS: u32 = 3;
const BI_PNG: u32 = 5;
const BI_ALPHABITFIELDS: u32 = 6;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Converts a `CF_DIB` or `CF_DIBV5` payload to PNG content.
pub(crate) fn dib_to_png(dib: &[u8]) -> Result<ClipContent, PictureError> {
    let bad = || PictureError::Decode("dib");
    let header_len = u32_at(dib, 0).ok_or_else(bad)?;
    // BITMAPCOREHEADER (12 bytes) and the INFO..V5 headers.
    if !(header_len == 12 || (INFO_HEADER_LEN..=124).contains(&header_len)) {
        return Err(bad());
    }
    let hl = header_len as usize;
    if dib.len() < hl {
        return Err(bad());
    }
    let (bit_count, compression, colors_used, height) = if header_len == 12 {
        (u16_at(dib, 10).ok_or_else(bad)?, BI_RGB, 0, 0)
    } else {
        (
            u16_at(dib, 14).ok_or_else(bad)?,
            u32_at(dib, 16).ok_or_else(bad)?,
            u32_at(dib, 32).ok_or_else(bad)?,
            i32_at(dib, 8).ok_or_else(bad)?,
        )
    };
    if compression == BI_PNG {
        let size = u32_at(dib, 20).ok_or_else(bad)? as usize;
        let png = dib.get(hl..hl.saturating_add(size)).ok_or_else(bad)?;
        return to_png_content(PNG_TARGET, png.to_vec());
    }
    let palette_entries = if bit_count <= 8 {
        if colors_used == 0 {
            1usize << bit_count
        } else {
            colors_used as usize
        }
    } else {
        colors_used as usize
    };
    if palette_entries > 256 {
        return Err(bad());
    }
    let entry = if header_len == 12 { 3 } else { 4 };
    let mut offset = hl + palette_entries * entry;
    if compression == BI_BITFIELDS || compression == BI_ALPHABITFIELDS {
        let masks = if compression == BI_BITFIELDS { 12 } else { 16 };
        if header_len == INFO_HEADER_LEN {
            offset += masks;
        } else if compression == BI_BITFIELDS && header_len > INFO_HEADER_LEN {
            // The masks are inside a V4/V5 header, but some writers repeat
            // them after it. Tell by the size of what follows.
            let width = i32_at(dib, 4).ok_or_else(bad)?.unsigned_abs() as usize;
            let rows = height.unsigned_abs() as usize;
            let pixels = width
                .checked_mul(usize::from(bit_count))
                .map(|bits| bits.div_ceil(32) * 4)
                .and_then(|stride| stride.checked_mul(rows))
                .ok_or_else(bad)?;
            if dib.len().saturating_sub(offset) == pixels + 12 {
                offset += 12;
            }
        }
    }
    if offset > dib.len() {
        return Err(bad());
    }
    let total = FILE_HEADER_LEN + dib.len();
    let mut bmp = Vec::with_capacity(total);
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&u32::try_from(total).map_err(|_| bad())?.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(
        &u32::try_from(FILE_HEADER_LEN + offset)
            .map_err(|_| bad())?
            .to_le_bytes(),
    );
    bmp.extend_from_slice(dib);
    to_png_content(BMP_TARGET, bmp).map_err(|_| bad())
}

/// Converts a PNG to a `CF_DIB` payload (32-bit, bottom-up,
/// `BITMAPINFOHEADER`); `None` if it does not decode or its canvas does not
/// fit [`crate::picture::DECODE_LIMIT`] as RGBA (checked from the header first).
pub(crate) fn png_to_dib(png: &[u8]) -> Option<Vec<u8>> {
    let img = decode_rgba(png, ImageFormat::Png)?;
    let (w, h) = img.dimensions();
    let row = usize::try_from(w).ok()?.checked_mul(4)?;
    let size = row.checked_mul(usize::try_from(h).ok()?)?;
    let mut out = Vec::with_capacity(INFO_HEADER_LEN as usize + size);
    out.extend_from_slice(&INFO_HEADER_LEN.to_le_bytes());
    out.extend_from_slice(&i32::try_from(w).ok()?.to_le_bytes());
    // Positive height: bottom-up rows, the orientation all readers expect.
    out.extend_from_slice(&i32::try_from(h).ok()?.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // planes
    out.extend_from_slice(&32u16.to_le_bytes()); // bits per pixel
    out.extend_from_slice(&BI_RGB.to_le_bytes());
    out.extend_from_slice(&u32::try_from(size).ok()?.to_le_bytes());
    out.extend_from_slice(&2835i32.to_le_bytes()); // 72 dpi
    out.extend_from_slice(&2835i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // colours used
    out.extend_from_slice(&0u32.to_le_bytes()); // important colours
    for y in (0..h).rev() {
        for x in 0..w {
            let [r, g, b, a] = img.get_pixel(x, y).0;
            out.extend_from_slice(&[b, g, r, a]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};
    use std::io::Cursor;

    fn sample(alpha: bool) -> RgbaImage {
        RgbaImage::from_fn(7, 5, |x, y| {
            Rgba([
                (x * 30) as u8,
                (y * 50) as u8,
                (x * y * 9) as u8,
                if alpha { (40 + x * 20) as u8 } else { 255 },
            ])
        })
    }

    fn png_of(img: &RgbaImage) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(img.clone())
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    fn pixels(c: &ClipContent) -> RgbaImage {
        let ClipContent::Image { png, width, height } = c else {
            panic!("not an image");
        };
        let img = image::load_from_memory_with_format(png, ImageFormat::Png)
            .unwrap()
            .to_rgba8();
        assert_eq!(img.dimensions(), (*width, *height));
        img
    }

    #[test]
    fn png_to_dib_and_back_keeps_opaque_pixels() {
        let img = sample(false);
        let dib = png_to_dib(&png_of(&img)).unwrap();
        assert_eq!(u32_at(&dib, 0), Some(40));
        assert_eq!(dib.len(), 40 + 7 * 5 * 4);
        // Bottom-up: the first row stored is the image's last.
        let Rgba([r, g, b, a]) = *img.get_pixel(0, 4);
        assert_eq!(&dib[40..44], &[b, g, r, a]);
        // 32-bit BI_RGB reads back as opaque RGB with the same colours.
        assert_eq!(pixels(&dib_to_png(&dib).unwrap()), img);
    }

    /// A V5 header with BI_BITFIELDS and an alpha mask, top-down, as
    /// browsers write `CF_DIBV5`; `extra_masks` repeats the masks after it.
    fn v5(img: &RgbaImage, extra_masks: bool) -> Vec<u8> {
        let (w, h) = img.dimensions();
        let mut d = Vec::new();
        d.extend_from_slice(&124u32.to_le_bytes());
        d.extend_from_slice(&(w as i32).to_le_bytes());
        d.extend_from_slice(&(-(h as i32)).to_le_bytes());
        d.extend_from_slice(&1u16.to_le_bytes());
        d.extend_from_slice(&32u16.to_le_bytes());
        d.extend_from_slice(&BI_BITFIELDS.to_le_bytes());
        d.extend_from_slice(&(w * h * 4).to_le_bytes());
        d.extend_from_slice(&[0; 16]); // resolution, colours used/important
        for m in [0x00ff_0000u32, 0x0000_ff00, 0x0000_00ff, 0xff00_0000] {
            d.extend_from_slice(&m.to_le_bytes());
        }
        d.extend_from_slice(&0x7352_4742u32.to_le_bytes()); // LCS_sRGB
        d.resize(124, 0);
        if extra_masks {
            for m in [0x00ff_0000u32, 0x0000_ff00, 0x0000_00ff] {
                d.extend_from_slice(&m.to_le_bytes());
            }
        }
        for p in img.pixels() {
            let [r, g, b, a] = p.0;
            d.extend_from_slice(&[b, g, r, a]);
        }
        d
    }

    #[test]
    fn dibv5_with_alpha_top_down_with_and_without_repeated_masks() {
        let img = sample(true);
        for extra in [false, true] {
            assert_eq!(pixels(&dib_to_png(&v5(&img, extra)).unwrap()), img);
        }
    }

    #[test]
    fn dibv5_embedding_a_png_passes_it_through() {
        let png = png_of(&sample(true));
        let mut d = vec![0u8; 124];
        d[0..4].copy_from_slice(&124u32.to_le_bytes());
        d[4..8].copy_from_slice(&7i32.to_le_bytes());
        d[8..12].copy_from_slice(&5i32.to_le_bytes());
        d[12..14].copy_from_slice(&1u16.to_le_bytes());
        d[16..20].copy_from_slice(&BI_PNG.to_le_bytes());
        d[20..24].copy_from_slice(&(png.len() as u32).to_le_bytes());
        d.extend_from_slice(&png);
        let ClipContent::Image { png: out, .. } = dib_to_png(&d).unwrap() else {
            panic!()
        };
        assert_eq!(out, png);
    }

    #[test]
    fn info_header_24_bit_padded_rows_and_bitfields_masks() {
        // 24-bit, 3 px wide: 9 bytes of pixels padded to 12 per row.
        let img = RgbImage::from_fn(3, 2, |x, y| Rgb([x as u8 * 80, y as u8 * 90, 7]));
        let mut d = vec![0u8; 40];
        d[0..4].copy_from_slice(&40u32.to_le_bytes());
        d[4..8].copy_from_slice(&3i32.to_le_bytes());
        d[8..12].copy_from_slice(&2i32.to_le_bytes());
        d[12..14].copy_from_slice(&1u16.to_le_bytes());
        d[14..16].copy_from_slice(&24u16.to_le_bytes());
        for y in (0..2).rev() {
            for x in 0..3 {
                let [r, g, b] = img.get_pixel(x, y).0;
                d.extend_from_slice(&[b, g, r]);
            }
            d.extend_from_slice(&[0; 3]);
        }
        let got = pixels(&dib_to_png(&d).unwrap());
        assert_eq!(DynamicImage::ImageRgba8(got).to_rgb8(), img);

        // 32-bit BI_BITFIELDS with a 40-byte header: masks follow it.
        let img = sample(false);
        let mut d = png_to_dib(&png_of(&img)).unwrap();
        d[16..20].copy_from_slice(&BI_BITFIELDS.to_le_bytes());
        let masks: Vec<u8> = [0x00ff_0000u32, 0x0000_ff00, 0x0000_00ff]
            .iter()
            .flat_map(|m| m.to_le_bytes())
            .collect();
        d.splice(40..40, masks);
        assert_eq!(pixels(&dib_to_png(&d).unwrap()), img);
    }

    #[test]
    fn hostile_dibs_are_errors_not_panics() {
        let good = png_to_dib(&png_of(&sample(false))).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![40, 0],
            good[..30].to_vec(),
            good[..60].to_vec(),
        ];
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        huge[8..12].copy_from_slice(&i32::MIN.to_le_bytes());
        cases.push(huge);
        let mut odd_header = good.clone();
        odd_header[0..4].copy_from_slice(&1000u32.to_le_bytes());
        cases.push(odd_header);
        let mut palette = good.clone();
        palette[14..16].copy_from_slice(&8u16.to_le_bytes());
        palette[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(palette);
        let mut png_past_end = vec![0u8; 124];
        png_past_end[0..4].copy_from_slice(&124u32.to_le_bytes());
        png_past_end[16..20].copy_from_slice(&BI_PNG.to_le_bytes());
        png_past_end[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(png_past_end);
        for c in cases {
            assert!(dib_to_png(&c).is_err(), "{} bytes", c.len());
        }
        assert_eq!(png_to_dib(b"not a png"), None);
    }
}
