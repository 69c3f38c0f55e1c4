//! Images sync between displays: a PNG arrives with identical pixels, and a
//! source that offers only `image/bmp` arrives as `image/png` with the same
//! pixels. Both are small (under the 64 KiB inline threshold); large images
//! go through the relay's blob store and are tested with it.

use crate::world::{encode, sample, unique, wait_for_pixels, World, LOG};
use clipmesh_tests::wait::{poll_until, STEP};
use clipmesh_tests::xvfb::{xclip_offer, xclip_read, xclip_set};
use image::{ImageFormat, Rgba, RgbaImage};
use std::time::Duration;

const FRAMES: &str = "clipmesh_relay_frames_relayed_total";

#[test]
fn small_png_and_bmp_only_images_arrive_with_identical_pixels() {
    // Counts relay frames: relay mode (see `World::with_mode`).
    let w = World::with_mode(LOG, "relay").unwrap();
    let a = w
        .desk("alice-a", "alice", "alice pass phrase", true)
        .unwrap();
    let b = w
        .desk("alice-b", "alice", "alice pass phrase", false)
        .unwrap();
    let frames_before = w.relay.metric(FRAMES).unwrap();

    // A PNG copied on A is served on B byte for byte.
    let img1 = sample(1);
    let png1 = encode(&img1, ImageFormat::Png);
    assert!(png1.len() < 64 * 1024, "{} bytes", png1.len());
    xclip_offer(&a.display(), "image/png", &png1).unwrap();
    let got = wait_for_pixels(&b.display(), &img1).unwrap();
    assert_eq!(got, png1, "a PNG source is passed through unchanged");
    // B offers TARGETS with image/png...
    let targets = xclip_read(&b.display(), "TARGETS").unwrap().unwrap();
    let targets = String::from_utf8_lossy(&targets);
    assert!(targets.contains("image/png"), "{targets}");
    // ...and the same pixels as image/bmp, for readers that take only BMP.
    let bmp1 = xclip_read(&b.display(), "image/bmp").unwrap().unwrap();
    let from_bmp = image::load_from_memory_with_format(&bmp1, ImageFormat::Bmp)
        .unwrap()
        .to_rgba8();
    assert_eq!(from_bmp, img1);

    // A source that offers only BMP (as some Windows-born apps under Wine
    // do): B gets a PNG with the same pixels.
    let img2 = sample(2);
    let bmp = encode(&img2, ImageFormat::Bmp);
    xclip_offer(&b.display(), "image/bmp", &bmp).unwrap();
    let png2 = wait_for_pixels(&a.display(), &img2).unwrap();
    assert!(png2.starts_with(b"\x89PNG"));

    // No echoes: each applied image reads back on its display as what was
    // applied. A text copied on A afterwards is a barrier (a daemon that
    // re-published a received image would have done so before it), so the
    // relay delivered exactly three frames: image 1, image 2, the text.
    let mut b = b;
    let text = unique("after the images");
    xclip_set(&a.display(), &text).unwrap();
    b.watcher.wait_for_text(&text, STEP).unwrap();
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 3, "Deliver frames relayed");
}

/// An image that xclip serves to A's watcher by `INCR`, that goes through
/// the relay's blob store (above the inline threshold), and that B's own
/// selection owner serves by `INCR`, arrives byte for byte.
#[test]
fn image_above_inline_threshold_arrives_through_incr() {
    // Counts relay frames: relay mode (see `World::with_mode`).
    let w = World::with_mode(LOG, "relay").unwrap();
    let a = w
        .desk("alice-a", "alice", "alice pass phrase", true)
        .unwrap();
    let b = w
        .desk("alice-b", "alice", "alice pass phrase", false)
        .unwrap();
    // Noise does not compress: about 4 bytes a pixel.
    let img = RgbaImage::from_fn(700, 500, |x, y| {
        let v = (x * 7919 + y * 104_729 + 17).wrapping_mul(2_654_435_761);
        let u = v.rotate_left(13).wrapping_mul(2_246_822_519);
        Rgba([
            (v >> 24) as u8,
            (u >> 16) as u8,
            (v >> 8) as u8,
            (u >> 24) as u8,
        ])
    });
    let png = encode(&img, ImageFormat::Png);
    // Over xclip's INCR chunk (about 1 MiB with BIG-REQUESTS) and ours.
    assert!(png.len() > 5 << 18, "{} bytes", png.len());
    let frames_before = w.relay.metric(FRAMES).unwrap();
    xclip_offer(&a.display(), "image/png", &png).unwrap();
    let got = wait_for_pixels(&b.display(), &img).unwrap();
    assert_eq!(got, png);
    // B read its own INCR-served image back as an echo: a text copied on B
    // afterwards is the only other frame. (Checked with xclip -o: the test
    // harness's watcher on A does not follow xclip's INCR of the image.)
    let text = unique("after the big image");
    xclip_set(&b.display(), &text).unwrap();
    poll_until("the text on A", STEP, Duration::from_millis(100), || {
        Ok(
            (xclip_read(&a.display(), "UTF8_STRING")?.as_deref() == Some(text.as_bytes()))
                .then_some(()),
        )
    })
    .unwrap();
    let frames = w.relay.metric(FRAMES).unwrap() - frames_before;
    assert_eq!(frames, 2, "Deliver frames relayed");
}
