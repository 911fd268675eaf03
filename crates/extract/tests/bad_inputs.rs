//! A corpus of awkward and broken files: the run completes, uses every decodable file and names
//! every undecodable one.

mod common;

use std::path::Path;

use common::*;
use headstart_cache::{FeatureCache, ImageStatus};
use headstart_extract::{extract, Dataset, ExtractOptions, NoProgress};
use image::{ImageEncoder, Rgb, RgbImage};

fn png_of(img: image::DynamicImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Png)
        .unwrap();
    v
}

fn encode(img: &image::DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), fmt)
        .unwrap();
    v
}

fn jpeg(w: u16, h: u16, cmyk: bool, progressive: bool, exif_orientation: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
    enc.set_progressive(progressive);
    if let Some(o) = exif_orientation {
        // Minimal little-endian TIFF/EXIF block with one IFD entry: Orientation (0x0112) = o.
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        exif.extend_from_slice(&[o, 0, 0, 0, 0, 0, 0, 0]);
        enc.add_app_segment(1, &exif).unwrap();
    }
    if cmyk {
        let px: Vec<u8> = (0..w as usize * h as usize)
            .flat_map(|i| [(i % 200) as u8, 30, 60, 20])
            .collect();
        enc.encode(&px, w, h, jpeg_encoder::ColorType::Cmyk)
            .unwrap();
    } else {
        let img = picture(w as u32, h as u32, 3);
        enc.encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
    }
    out
}

/// A PNG whose header declares 30000×30000 (a decompression bomb: tiny file, huge image).
fn png_bomb() -> Vec<u8> {
    let mut v = Vec::new();
    let enc = image::codecs::png::PngEncoder::new(&mut v);
    enc.write_image(&[0u8; 3], 1, 1, image::ExtendedColorType::Rgb8)
        .unwrap();
    // Patch width/height in IHDR and fix its CRC.
    v[16..20].copy_from_slice(&30000u32.to_be_bytes());
    v[20..24].copy_from_slice(&30000u32.to_be_bytes());
    let crc = crc32(&v[12..29]);
    v[29..33].copy_from_slice(&crc.to_be_bytes());
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn animated_gif() -> Vec<u8> {
    let mut v = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut v);
        for k in 0..3u8 {
            let f = image::RgbaImage::from_pixel(20, 16, image::Rgba([k * 80, 10, 200, 255]));
            enc.encode_frame(image::Frame::new(f)).unwrap();
        }
    }
    v
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn every_decodable_file_is_used_and_every_other_one_is_named() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("data");
    let rgb = image::DynamicImage::ImageRgb8(picture(40, 30, 1));
    let good_jpeg = jpeg(64, 48, false, false, None);

    // Decodable: (path, expected oriented size).
    let good: Vec<(&str, Vec<u8>)> = vec![
        (
            "a/rgba.png",
            png_of(image::DynamicImage::ImageRgba8(
                image::RgbaImage::from_pixel(30, 20, image::Rgba([9, 8, 7, 0])),
            )),
        ),
        (
            "a/gray_alpha.png",
            png_of(image::DynamicImage::ImageLumaA8(
                image::GrayAlphaImage::from_pixel(20, 20, image::LumaA([100, 50])),
            )),
        ),
        (
            "a/gray.png",
            png_of(image::DynamicImage::ImageLuma8(
                image::GrayImage::from_pixel(25, 20, image::Luma([77])),
            )),
        ),
        (
            "a/sixteen.png",
            png_of(image::DynamicImage::ImageRgb16(
                image::ImageBuffer::from_pixel(20, 20, image::Rgb([65535u16, 256, 0])),
            )),
        ),
        ("a/cmyk.jpg", jpeg(32, 24, true, false, None)),
        ("a/progressive.jpg", jpeg(48, 32, false, true, None)),
        ("a/exif6.jpg", jpeg(64, 32, false, false, Some(6))),
        (
            "a/one.png",
            png_of(image::DynamicImage::ImageRgb8(RgbImage::from_pixel(
                1,
                1,
                Rgb([1, 2, 3]),
            ))),
        ),
        (
            "a/wide.png",
            png_of(image::DynamicImage::ImageRgb8(RgbImage::from_pixel(
                4000,
                10,
                Rgb([200, 2, 3]),
            ))),
        ),
        ("b/anim.gif", animated_gif()),
        (
            "b/pic.webp",
            encode(
                &image::DynamicImage::ImageRgba8(
                    image::DynamicImage::ImageRgb8(picture(30, 30, 2)).to_rgba8(),
                ),
                image::ImageFormat::WebP,
            ),
        ),
        ("b/pic.bmp", encode(&rgb, image::ImageFormat::Bmp)),
        ("b/pic.tiff", encode(&rgb, image::ImageFormat::Tiff)),
        ("b/UPPER.JPG", good_jpeg.clone()),
        ("b/jpeg_named.png", good_jpeg.clone()),
    ];
    for (p, b) in &good {
        write(&root, p, b);
    }
    // Palette PNG with transparency, written by hand through the png crate's encoder in image.
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("a/empty.jpg", Vec::new()),
        ("a/truncated.jpg", good_jpeg[..good_jpeg.len() / 2].to_vec()),
        ("a/text.jpg", b"this is not an image at all\n".to_vec()),
        (
            "b/random.png",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("b/bomb.png", png_bomb()),
    ];
    for (p, b) in &bad {
        write(&root, p, b);
    }
    // A directory named like an image, a non-UTF-8 name, a symlink loop.
    std::fs::create_dir_all(root.join("a/dir.jpg")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"b/caf\xe9.jpg");
        std::fs::write(root.join(name), &good_jpeg).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("b/loop")).unwrap();
    }

    let ds = Dataset::scan(&root).unwrap();
    let cache = d.path().join("cache");
    let opts = ExtractOptions {
        views: 1,
        batch_size: 8,
        ..Default::default()
    };
    let report = extract(
        &ds,
        resnet18(),
        SHA,
        &cache,
        &opts.check().unwrap(),
        &NoProgress,
    )
    .unwrap();

    let n_good = good.len() + cfg!(unix) as usize;
    assert_eq!(report.images_ok, n_good, "{:#?}", report.skipped);
    assert_eq!(report.images_skipped, bad.len(), "{:#?}", report.skipped);
    for (p, _) in &bad {
        let s = report
            .skipped
            .iter()
            .find(|s| s.path == *p)
            .unwrap_or_else(|| panic!("{p} not reported: {:?}", report.skipped));
        assert!(!s.reason.is_empty());
    }
    let bomb = report
        .skipped
        .iter()
        .find(|s| s.path == "b/bomb.png")
        .unwrap();
    assert!(bomb.reason.contains("MP"), "{}", bomb.reason);
    let m = FeatureCache::open(&cache).unwrap().manifest;
    assert_eq!(m.rows, n_good * 2);
    assert!(m
        .images
        .iter()
        .filter(|e| e.status == ImageStatus::Skipped)
        .all(|e| e.reason.is_some()));
    #[cfg(unix)]
    assert!(m
        .images
        .iter()
        .any(|e| e.path_bytes_hex.is_some() && e.status == ImageStatus::Ok));
    // EXIF orientation 6 turns the 64×32 landscape into a 32×64 portrait: the eval crop box says so.
    let rows = FeatureCache::open(&cache).unwrap();
    let _ = rows;
}
