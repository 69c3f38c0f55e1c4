//! The tray icons, one per [`IconState`], drawn for this project by
//! `installers/icons/make-icons.sh` (into `trayshell/icons/`) and compiled
//! into the binary.

use crate::menu::IconState;

/// A decoded icon: RGBA pixels, row by row.
#[derive(Clone, PartialEq, Eq)]
pub struct Rgba {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub pixels: Vec<u8>,
}

impl std::fmt::Debug for Rgba {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rgba({}x{})", self.width, self.height)
    }
}

/// The PNG file for a state.
pub fn png(state: IconState) -> &'static [u8] {
    match state {
        IconState::Connected => include_bytes!("../icons/connected.png"),
        IconState::Direct => include_bytes!("../icons/direct.png"),
        IconState::Connecting => include_bytes!("../icons/connecting.png"),
        IconState::Offline => include_bytes!("../icons/offline.png"),
        IconState::Paused => include_bytes!("../icons/paused.png"),
        IconState::Error => include_bytes!("../icons/error.png"),
    }
}

/// The application icon (64 px), for windows.
pub fn app_png() -> &'static [u8] {
    include_bytes!("../../installers/icons/hicolor/64x64/apps/clipmesh.png")
}

/// Decodes a PNG into RGBA pixels.
pub fn decode(png: &[u8]) -> Result<Rgba, image::ImageError> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)?.into_rgba8();
    Ok(Rgba {
        width: img.width(),
        height: img.height(),
        pixels: img.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_distinct_64px_icon() {
        let mut seen = Vec::new();
        for s in IconState::ALL {
            let i = decode(png(s)).unwrap();
            assert_eq!(
                (i.width, i.height, i.pixels.len()),
                (64, 64, 64 * 64 * 4),
                "{s:?}"
            );
            // Transparent corners, opaque middle.
            assert_eq!(i.pixels[3], 0, "{s:?}");
            assert_eq!(i.pixels[(32 * 64 + 32) * 4 + 3], 255, "{s:?}");
            assert!(!seen.contains(&i.pixels), "{s:?} looks like another state");
            seen.push(i.pixels);
        }
        assert_eq!(decode(app_png()).unwrap().width, 64);
    }
}
