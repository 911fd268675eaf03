//! Decoding and the eval transform, exactly like PIL + torchvision:
//!
//! ```text
//! Image.open(path).convert("RGB")                     → decode_rgb  (+ EXIF orientation)
//! Resize(resize_size, interpolation, antialias=True)  ┐
//! CenterCrop(input_size)                              ┘→ eval_crop
//! ToTensor(), Normalize(mean, std)                    → normalize_into
//! ```
//!
//! [`eval_input`] chains the three. The resampling reproduces Pillow's `Resample.c` bit for bit
//! (see [`resize`]); the residual difference from a Python pipeline comes from JPEG decoding
//! (zune-jpeg vs libjpeg-turbo) — `docs/preprocessing.md` has the measurements.

pub mod augment;
mod decode;
mod resample;

pub use decode::{decode_rgb, DecodeLimits, DEFAULT_MAX_PIXELS};
pub use resample::{resize, resized_crop};

use image::RgbImage;

use crate::config::PreprocessConfig;
use crate::{Error, Result};
use resample::{resample_window, Dest, View, Window};

/// Output size `(width, height)` of torchvision's `Resize(size)` with an `int` size: the shorter
/// side becomes `size` and the longer `int(size * long / short)` (truncated, computed in `f64`
/// like Python). Returned as `u64` because extreme aspect ratios overflow `u32` (a 100 000 × 1
/// image gives 25 600 000 × 256); [`eval_crop`] only computes the centre of such images.
pub fn resized_size(width: u32, height: u32, size: u32) -> (u64, u64) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    if short == 0 {
        return (u64::from(width), u64::from(height));
    }
    let new_long = (u64::from(size) * u64::from(long)) as f64 / f64::from(short);
    let new_long = new_long as u64;
    if width <= height {
        (u64::from(size), new_long)
    } else {
        (new_long, u64::from(size))
    }
}

/// One axis of torchvision's `CenterCrop(crop)` on an axis of length `len`: `(src_start, dst_start,
/// count)`, copying `count` pixels from `src_start` to `dst_start` of the crop. When the image is
/// smaller than the crop it is zero-padded by `(crop - len) // 2` before; otherwise the crop starts
/// at `int(round((len - crop) / 2.0))` with Python's round-half-to-even.
fn center_crop_axis(len: u64, crop: u32) -> (u64, u32, usize) {
    let crop64 = u64::from(crop);
    if crop64 > len {
        (0, ((crop64 - len) / 2) as u32, len as usize)
    } else {
        let d = len - crop64;
        let half = d / 2;
        let start = if d % 2 == 1 && half % 2 == 1 {
            half + 1
        } else {
            half
        };
        (start, 0, crop as usize)
    }
}

/// torchvision `Resize(resize_size, interpolation)` (shorter side, see [`resized_size`]) then
/// `CenterCrop(input_size)` on a PIL image: `crop_top = int(round((h - input_size) / 2.0))`
/// (round half to even) and likewise for the left; if the resized image is smaller than the crop
/// it is padded with black as torchvision does. Bit-identical to PIL + torchvision.
///
/// Only the cropped window of the resize is computed, so the cost is bounded by the crop size
/// whatever the aspect ratio (a 4000×10 image resizes to 102400×256, of which only 224×224 is
/// computed). The result is `input_size × input_size`.
pub fn eval_crop(img: &RgbImage, cfg: &PreprocessConfig) -> RgbImage {
    let crop = cfg.input_size;
    let mut out = RgbImage::new(crop, crop);
    if img.width() == 0 || img.height() == 0 || cfg.resize_size == 0 || crop == 0 {
        return out;
    }
    let (out_w, out_h) = resized_size(img.width(), img.height(), cfg.resize_size);
    let (src_x, dst_x, w) = center_crop_axis(out_w, crop);
    let (src_y, dst_y, h) = center_crop_axis(out_h, crop);
    let stride = crop as usize * 3;
    resample_window(
        &View::full(img),
        Window {
            out_w,
            out_h,
            x: src_x,
            y: src_y,
            w,
            h,
        },
        cfg.interpolation,
        &mut Dest {
            data: &mut out,
            stride,
            offset: dst_y as usize * stride + dst_x as usize * 3,
        },
    );
    out
}

/// torchvision `ToTensor()` + `Normalize(mean, std)`: writes `(v / 255 - mean[c]) / std[c]` in
/// `f32` (the same operations as torch, so bit-identical) into `out` in CHW order. `out` must
/// hold exactly `3 * width * height` values; nothing is allocated.
///
/// # Panics
/// If `out.len() != 3 * width * height`.
pub fn normalize_into(img: &RgbImage, cfg: &PreprocessConfig, out: &mut [f32]) {
    let plane = img.width() as usize * img.height() as usize;
    assert_eq!(
        out.len(),
        3 * plane,
        "normalize_into: output holds {} values, image needs 3×{}×{}",
        out.len(),
        img.width(),
        img.height()
    );
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, t) in table.iter_mut().enumerate() {
            *t = (v as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((px, r), g), b) in img.as_raw().chunks_exact(3).zip(r).zip(g).zip(b) {
        *r = lut[0][usize::from(px[0])];
        *g = lut[1][usize::from(px[1])];
        *b = lut[2][usize::from(px[2])];
    }
}

/// [`decode_rgb`] + [`eval_crop`] + [`normalize_into`]: the network input for one encoded image,
/// CHW, `3 × input_size × input_size` values.
pub fn eval_input(bytes: &[u8], cfg: &PreprocessConfig, limits: &DecodeLimits) -> Result<Vec<f32>> {
    let side = cfg.input_size as usize;
    let mut out = vec![0f32; 3 * side * side];
    eval_input_into(bytes, cfg, limits, &mut out)?;
    Ok(out)
}

/// Reads a file and runs [`eval_input`] on it, never panicking: an unreadable file, an
/// undecodable one, a FIFO or device, or a decoder panic all become [`Error::Image`] with a short
/// reason for reports.
pub fn eval_input_from_file(
    path: &std::path::Path,
    cfg: &PreprocessConfig,
    limits: &DecodeLimits,
) -> crate::Result<Vec<f32>> {
    let bytes = read_image_file(path)?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eval_input(&bytes, cfg, limits)
    }))
    .map_err(|_| Error::image("the decoder crashed on this file"))?
}

/// The test-time views of an image file ([`augment::TtaPlan::inputs`], seeded by the file's
/// name), never panicking, as [`eval_input_from_file`].
pub fn tta_inputs_from_file(
    path: &std::path::Path,
    cfg: &PreprocessConfig,
    limits: &DecodeLimits,
    plan: &augment::TtaPlan,
) -> crate::Result<Vec<f32>> {
    let bytes = read_image_file(path)?;
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let img = decode_rgb(&bytes, limits)?;
        Ok(plan.inputs(&img, name, cfg))
    }))
    .map_err(|_| Error::image("the decoder crashed on this file"))?
}

/// The bytes of an image file; only regular files are read (a FIFO would block and /dev/zero
/// never end).
fn read_image_file(path: &std::path::Path) -> crate::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::image(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(Error::image(
            "not a regular file (a directory, FIFO, socket or device); pass image files",
        ));
    }
    std::fs::read(path).map_err(|e| Error::image(format!("cannot read: {e}")))
}

/// [`eval_input`] writing into a caller-provided buffer of `3 × input_size × input_size` values
/// (for example a slice of a batch).
///
/// # Panics
/// If `out` has the wrong length.
pub fn eval_input_into(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    limits: &DecodeLimits,
    out: &mut [f32],
) -> Result<()> {
    let img = decode_rgb(bytes, limits)?;
    normalize_into(&eval_crop(&img, cfg), cfg, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Architecture, Interpolation};
    use std::path::PathBuf;

    fn shared() -> PathBuf {
        headstart_testkit::shared_dir()
    }

    fn synthetic(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = |c: u32| ((x * 37 + y * 91 + c * 53 + x * y * 11 + (x ^ y) * 29) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    fn cfg(resize_size: u32, input_size: u32, interpolation: Interpolation) -> PreprocessConfig {
        PreprocessConfig {
            input_size,
            resize_size,
            interpolation,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    #[test]
    fn resized_size_matches_torchvision() {
        // Values from torchvision's _compute_resized_output_size (int(size * long / short)).
        assert_eq!(resized_size(500, 335, 256), (382, 256));
        assert_eq!(resized_size(335, 500, 256), (256, 382));
        assert_eq!(resized_size(320, 213, 256), (384, 256));
        assert_eq!(resized_size(159, 240, 256), (256, 386));
        assert_eq!(resized_size(300, 300, 256), (256, 256));
        assert_eq!(resized_size(1, 1, 256), (256, 256));
        assert_eq!(resized_size(4000, 10, 256), (102_400, 256));
        assert_eq!(resized_size(100_000_000, 1, 256), (25_600_000_000, 256));
    }

    #[test]
    fn center_crop_rounds_half_to_even_and_pads() {
        assert_eq!(center_crop_axis(256, 224), (16, 0, 224));
        assert_eq!(center_crop_axis(27, 16), (6, 0, 16)); // round(5.5) = 6
        assert_eq!(center_crop_axis(25, 16), (4, 0, 16)); // round(4.5) = 4
        assert_eq!(center_crop_axis(383, 224), (80, 0, 224)); // round(79.5) = 80
        assert_eq!(center_crop_axis(385, 224), (80, 0, 224)); // round(80.5) = 80
        assert_eq!(center_crop_axis(12, 16), (0, 2, 12));
        assert_eq!(center_crop_axis(11, 16), (0, 2, 11)); // pad 2 before, 3 after
    }

    #[test]
    fn eval_crop_equals_full_resize_then_crop() {
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for (w, h) in [(41u32, 30u32), (30, 41), (64, 64), (19, 57)] {
                let img = synthetic(w, h);
                let c = cfg(20, 16, interp);
                let (rw, rh) = resized_size(w, h, 20);
                let full = resize(&img, rw as u32, rh as u32, interp);
                let (x, _, _) = center_crop_axis(rw, 16);
                let (y, _, _) = center_crop_axis(rh, 16);
                let expected = image::imageops::crop_imm(&full, x as u32, y as u32, 16, 16);
                assert_eq!(
                    eval_crop(&img, &c),
                    expected.to_image(),
                    "{w}x{h} {interp:?}"
                );
            }
        }
    }

    #[test]
    fn eval_crop_pads_like_torchvision_when_the_crop_is_larger() {
        // resize 11 < crop 16: 20×11 stays 20×11; columns 2..18 are kept, rows are padded 2 + 3.
        let img = synthetic(20, 11);
        let out = eval_crop(&img, &cfg(11, 16, Interpolation::Bilinear));
        for y in 0..16 {
            for x in 0..16 {
                let expected = if (2..13).contains(&y) {
                    *img.get_pixel(x + 2, y - 2)
                } else {
                    image::Rgb([0, 0, 0])
                };
                assert_eq!(*out.get_pixel(x, y), expected, "({x},{y})");
            }
        }
    }

    #[test]
    fn tiny_and_extreme_images_are_cheap() {
        let c = Architecture::ResNet18.config().preprocess;
        let one = RgbImage::from_pixel(1, 1, image::Rgb([9, 99, 199]));
        let out = eval_crop(&one, &c);
        assert_eq!(out.dimensions(), (224, 224));
        assert!(out.pixels().all(|p| *p == image::Rgb([9, 99, 199])));

        let start = std::time::Instant::now();
        let long = synthetic(4000, 10);
        let out = eval_crop(&long, &c);
        assert_eq!(out.dimensions(), (224, 224));
        let thin = RgbImage::from_fn(1, 200_000, |_, y| image::Rgb([(y % 256) as u8, 0, 0]));
        assert_eq!(eval_crop(&thin, &c).dimensions(), (224, 224));
        assert!(start.elapsed().as_secs_f64() < 2.0, "{:?}", start.elapsed());
        // The window of the 102400×256 resize equals that region of the full resize.
        let (rw, rh) = resized_size(4000, 10, 256);
        let (x, _, _) = center_crop_axis(rw, 224);
        let (y, _, _) = center_crop_axis(rh, 224);
        let full = resize(&long, rw as u32, rh as u32, c.interpolation);
        let expected = image::imageops::crop_imm(&full, x as u32, y as u32, 224, 224).to_image();
        assert_eq!(out, expected);
    }

    #[test]
    fn normalize_matches_to_tensor_then_normalize() {
        let img = synthetic(5, 3);
        let c = cfg(5, 3, Interpolation::Bilinear);
        let mut out = vec![0f32; 45];
        normalize_into(&img, &c, &mut out);
        for (i, p) in img.pixels().enumerate() {
            for ch in 0..3 {
                let expected = (f32::from(p[ch]) / 255.0 - c.mean[ch]) / c.std[ch];
                assert_eq!(out[ch * 15 + i].to_bits(), expected.to_bits());
            }
        }
    }

    /// The fixtures' `eval_input` and the photos it was computed from.
    fn fixture(model: &str) -> (Vec<PathBuf>, Vec<f32>) {
        let path = shared().join(format!("fixtures/{model}/expected.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let list = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("eval_images"))
            .expect("eval_images metadata");
        // Paths are relative to the shared directory (`data/flowers/...`).
        let images: Vec<String> = serde_json::from_str(list).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = tensors.tensor("eval_input").unwrap();
        assert_eq!(view.shape(), &[images.len(), 3, 224, 224]);
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (images.iter().map(|p| shared().join(p)).collect(), data)
    }

    fn check_fixture(model: &str, arch: Architecture) {
        let cfg = arch.config().preprocess;
        let (images, expected) = fixture(model);
        let n = 3 * 224 * 224;
        let mut worst = 0f64;
        for (i, path) in images.iter().enumerate() {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let got = eval_input(&bytes, &cfg, &DecodeLimits::default()).unwrap();
            let exp = &expected[i * n..(i + 1) * n];
            let diffs = got.iter().zip(exp).map(|(a, b)| f64::from((a - b).abs()));
            let (sum, max) = diffs.fold((0.0, 0f64), |(s, m), d| (s + d, m.max(d)));
            let mean = sum / n as f64;
            println!(
                "{model} {}: mean |Δ| {mean:.5}, max |Δ| {max:.4}",
                path.file_name().unwrap().to_string_lossy()
            );
            assert!(mean <= 0.02, "{}: mean |Δ| {mean}", path.display());
            worst = worst.max(mean);
        }
        println!("{model}: worst per-image mean |Δ| {worst:.5}");
    }

    #[test]
    fn eval_input_matches_pil_torchvision_resnet18_fixture() {
        check_fixture("resnet18", Architecture::ResNet18);
    }

    #[test]
    fn eval_input_matches_pil_torchvision_efficientnet_fixture() {
        check_fixture("efficientnet-lite0", Architecture::EfficientNetLite0);
    }

    /// Stage-by-stage comparison against a Pillow dump made by the script in
    /// `docs/preprocessing.md` (`HEADSTART_PIL_DUMP=/tmp/pildump cargo test -p
    /// headstart-backbone --lib pil_reference_dump -- --ignored --nocapture`): random resizes and
    /// resized crops must be bit-exact; decoding is compared separately from resampling.
    #[test]
    #[ignore = "needs a Pillow dump (HEADSTART_PIL_DUMP), see docs/preprocessing.md"]
    fn pil_reference_dump() {
        let dir = PathBuf::from(std::env::var("HEADSTART_PIL_DUMP").expect("HEADSTART_PIL_DUMP"));
        let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let rgb = |w: u32, h: u32, f: &str| RgbImage::from_raw(w, h, read(f)).unwrap();
        let (mut resizes, mut photo) = (0, 0);
        for line in manifest.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let num = |i: usize| f[i].parse::<u32>().unwrap();
            match f[0] {
                "resize" => {
                    let interp = match f[5] {
                        "bilinear" => Interpolation::Bilinear,
                        _ => Interpolation::Bicubic,
                    };
                    let img = rgb(num(1), num(2), f[10]);
                    let expected = rgb(num(3), num(4), f[11]);
                    let got =
                        resized_crop(&img, num(6), num(7), num(8), num(9), num(3), num(4), interp);
                    assert!(got == expected, "not bit-exact: {line}");
                    resizes += 1;
                }
                "photo" => {
                    let pil = rgb(num(2), num(3), f[4]);
                    let ours = decode_rgb(
                        &std::fs::read(shared().join(f[1])).unwrap(),
                        &DecodeLimits::default(),
                    )
                    .unwrap();
                    assert_eq!(ours.dimensions(), pil.dimensions());
                    let d: Vec<i32> = ours
                        .as_raw()
                        .iter()
                        .zip(pil.as_raw())
                        .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
                        .collect();
                    let differing = d.iter().filter(|&&x| x != 0).count();
                    println!(
                        "decode {}: {:.1}% of channel values differ, mean |Δ| {:.4}, max |Δ| {} (u8 levels)",
                        f[1],
                        100.0 * differing as f64 / d.len() as f64,
                        d.iter().sum::<i32>() as f64 / d.len() as f64,
                        d.iter().max().unwrap()
                    );
                    // Resampling + crop + normalisation from PIL's own pixels must reproduce the
                    // fixtures exactly.
                    for (model, arch) in [
                        ("resnet18", Architecture::ResNet18),
                        ("efficientnet-lite0", Architecture::EfficientNetLite0),
                    ] {
                        let cfg = arch.config().preprocess;
                        let (_, expected) = fixture(model);
                        let n = 3 * 224 * 224;
                        let mut out = vec![0f32; n];
                        normalize_into(&eval_crop(&pil, &cfg), &cfg, &mut out);
                        let exp = &expected[photo * n..(photo + 1) * n];
                        let max = out
                            .iter()
                            .zip(exp)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        println!("  {model}: from PIL-decoded pixels max |Δ| {max}");
                        assert_eq!(max, 0.0, "{model} {}", f[1]);
                    }
                    photo += 1;
                }
                other => panic!("unknown entry {other}"),
            }
        }
        println!("{resizes} resizes bit-exact, {photo} photos");
    }
}
