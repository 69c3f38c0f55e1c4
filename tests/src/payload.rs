//! Large test payloads and checks on what arrived: random images and files,
//! streamed SHA-256, and finding a received file in a download folder.
//! Shared by the large-item e2e test and `clipmesh-transfer-bench`.

use anyhow::{Context, Result};
use image::{DynamicImage, ImageFormat, RgbaImage};
use sha2::{Digest, Sha256};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

/// A 1280×1040 image of random pixels and its PNG (which does not
/// compress: a little over 5 MiB).
pub fn random_image() -> Result<(RgbaImage, Vec<u8>)> {
    let (w, h) = (1280u32, 1040u32);
    let mut raw = vec![0u8; (w * h * 4) as usize];
    rand::Rng::fill(&mut rand::thread_rng(), &mut raw[..]);
    let img = RgbaImage::from_raw(w, h, raw).context("image buffer")?;
    let mut png = Vec::new();
    DynamicImage::ImageRgba8(img.clone()).write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
    Ok((img, png))
}

/// Writes `len` random bytes to `path` 1 MiB at a time; returns the SHA-256.
pub fn random_file(path: &Path, len: usize) -> Result<[u8; 32]> {
    let mut f = std::fs::File::create(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        rand::Rng::fill(&mut rand::thread_rng(), &mut buf[..n]);
        sha.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n;
    }
    f.sync_all()?;
    Ok(sha.finalize().into())
}

/// SHA-256 of a file, read 1 MiB at a time.
pub fn file_sha256(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(sha.finalize().into());
        }
        sha.update(&buf[..n]);
    }
}

/// The received file called `name` anywhere in `dl`'s per-transfer
/// folders, once complete (received files appear under their final name
/// only after verification).
pub fn find_received(dl: &Path, name: &str) -> Result<Option<PathBuf>> {
    let Ok(rd) = std::fs::read_dir(dl) else {
        return Ok(None);
    };
    for folder in rd {
        let p = folder?.path().join(name);
        if p.is_file() {
            return Ok(Some(p));
        }
    }
    Ok(None)
}
