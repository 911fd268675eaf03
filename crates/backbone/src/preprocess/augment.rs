//! Seeded augmentation: torchvision's RandomResizedCrop sampling rule and a horizontal flip,
//! with randomness derived only from (seed, image path, view index).

use headstart_core::config::AugmentParams;
use sha2::{Digest, Sha256};

/// The generator of augmentation draws: headstart's one SplitMix64 (in `headstart-core`).
pub type ViewRng = headstart_core::rng::SplitMix64;

/// The generator of one view: seeded from sha256(seed ‖ path bytes ‖ view), so a view's crop
/// depends only on these three, never on the order or the process that draws it.
pub fn view_rng(seed: u64, path: &[u8], view: u32) -> ViewRng {
    let mut h = Sha256::new();
    h.update(b"headstart-view-v1");
    h.update(seed.to_le_bytes());
    h.update((path.len() as u64).to_le_bytes());
    h.update(path);
    h.update(view.to_le_bytes());
    let d = h.finalize();
    let mut s = [0u8; 8];
    s.copy_from_slice(&d[..8]);
    ViewRng::from_state(u64::from_le_bytes(s))
}

/// A crop box in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// Left column.
    pub left: u32,
    /// Top row.
    pub top: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// torchvision `RandomResizedCrop.get_params`: up to 10 tries of (area fraction in `scale`,
/// log-uniform aspect ratio in `ratio`), accepted when the box fits; else the central crop
/// clamped to the ratio range. Sizes are rounded half-to-even as Python's `round`.
pub fn random_resized_crop(
    rng: &mut ViewRng,
    width: u32,
    height: u32,
    scale: [f64; 2],
    ratio: [f64; 2],
) -> CropBox {
    let (w_img, h_img) = (width as f64, height as f64);
    let area = w_img * h_img;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_range(scale[0], scale[1]);
        let aspect = rng.uniform_range(lr0, lr1).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= w_img && h > 0.0 && h <= h_img {
            let (w, h) = (w as u32, h as u32);
            let top = rng.below((height - h + 1) as u64) as u32;
            let left = rng.below((width - w + 1) as u64) as u32;
            return CropBox {
                left,
                top,
                width: w,
                height: h,
            };
        }
    }
    let in_ratio = w_img / h_img;
    let (w, h) = if in_ratio < ratio[0] {
        (width, ((w_img / ratio[0]).round_ties_even() as u32).max(1))
    } else if in_ratio > ratio[1] {
        (((h_img * ratio[1]).round_ties_even() as u32).max(1), height)
    } else {
        (width, height)
    };
    CropBox {
        left: (width - w) / 2,
        top: (height - h) / 2,
        width: w,
        height: h,
    }
}

/// Samples one augmented view of a `width × height` image: the crop box and whether to flip.
pub fn sample_view(
    seed: u64,
    path: &[u8],
    view: u32,
    width: u32,
    height: u32,
    p: &AugmentParams,
) -> (CropBox, bool) {
    let mut rng = view_rng(seed, path, view);
    let crop = random_resized_crop(&mut rng, width, height, p.scale, p.ratio);
    let flip = rng.unit() < p.hflip_p;
    (crop, flip)
}

/// Test-time augmentation: the views of an image whose class probabilities are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tta {
    /// The eval view only (no augmentation).
    #[default]
    None,
    /// The eval view and its mirror image.
    Flip,
    /// The eval view, its mirror image and this many seeded crops drawn as extract draws its
    /// augmented views ([`sample_view`]).
    Crops(u32),
}

/// The most crops `crops:N` takes.
pub const MAX_TTA_CROPS: u32 = 64;

impl std::str::FromStr for Tta {
    type Err = String;
    /// `none`, `flip` or `crops:N` (1 ≤ N ≤ 64).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Tta::None),
            "flip" => Ok(Tta::Flip),
            _ => {
                let n = s
                    .strip_prefix("crops:")
                    .ok_or_else(|| format!("`{s}`: none, flip or crops:N"))?;
                let n: u32 = n
                    .parse()
                    .map_err(|_| format!("`{s}`: N of crops:N must be a whole number"))?;
                if !(1..=MAX_TTA_CROPS).contains(&n) {
                    return Err(format!("`{s}`: N of crops:N must be 1 to {MAX_TTA_CROPS}"));
                }
                Ok(Tta::Crops(n))
            }
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tta::None => f.write_str("none"),
            Tta::Flip => f.write_str("flip"),
            Tta::Crops(n) => write!(f, "crops:{n}"),
        }
    }
}

/// How the test-time views of an image are made: which ones, and for crops the seed and the
/// crop rule (extract's: torchvision's RandomResizedCrop and flip by default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtaPlan {
    /// Which views.
    pub tta: Tta,
    /// Seed of the crops (with the file's name and the view index, as extract seeds views).
    pub seed: u64,
    /// The crop rule.
    pub augment: AugmentParams,
}

impl Default for TtaPlan {
    fn default() -> Self {
        Self {
            tta: Tta::None,
            seed: 43,
            augment: AugmentParams::default(),
        }
    }
}

impl TtaPlan {
    /// Views per image: 1, 2 or 2 + N.
    pub fn views(&self) -> usize {
        match self.tta {
            Tta::None => 1,
            Tta::Flip => 2,
            Tta::Crops(n) => 2 + n as usize,
        }
    }

    /// The network inputs of every view of `img` (CHW, `views() × 3 × S × S` values): the eval
    /// view first, then its mirror image, then crop `v = 1..=N` drawn by
    /// [`sample_view`]`(seed, name, v, …)` — `name` being what identifies the image (its file
    /// name, so that the crops do not depend on where the folder is).
    pub fn inputs(
        &self,
        img: &image::RgbImage,
        name: &[u8],
        cfg: &crate::PreprocessConfig,
    ) -> Vec<f32> {
        let s = cfg.input_size;
        let plane = 3 * (s as usize) * (s as usize);
        let mut out = vec![0f32; self.views() * plane];
        let mut eval = super::eval_crop(img, cfg);
        super::normalize_into(&eval, cfg, &mut out[..plane]);
        if self.views() == 1 {
            return out;
        }
        image::imageops::flip_horizontal_in_place(&mut eval);
        super::normalize_into(&eval, cfg, &mut out[plane..2 * plane]);
        let (w, h) = img.dimensions();
        for v in 1..=(self.views() - 2) as u32 {
            let (c, flip) = sample_view(self.seed, name, v, w, h, &self.augment);
            let mut crop = super::resized_crop(
                img,
                c.left,
                c.top,
                c.width,
                c.height,
                s,
                s,
                self.augment.interpolation,
            );
            if flip {
                image::imageops::flip_horizontal_in_place(&mut crop);
            }
            let k = v as usize + 1;
            super::normalize_into(&crop, cfg, &mut out[k * plane..(k + 1) * plane]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALE: [f64; 2] = [0.08, 1.0];
    const RATIO: [f64; 2] = [3.0 / 4.0, 4.0 / 3.0];

    #[test]
    fn same_inputs_same_view_different_inputs_differ() {
        let a = sample_view(43, b"daisy/1.jpg", 1, 500, 375, &AugmentParams::default());
        assert_eq!(
            a,
            sample_view(43, b"daisy/1.jpg", 1, 500, 375, &AugmentParams::default())
        );
        assert_ne!(
            a,
            sample_view(43, b"daisy/1.jpg", 2, 500, 375, &AugmentParams::default())
        );
        assert_ne!(
            a,
            sample_view(44, b"daisy/1.jpg", 1, 500, 375, &AugmentParams::default())
        );
    }

    #[test]
    fn boxes_fit_and_follow_the_scale_and_ratio_ranges() {
        let mut flips = 0;
        for v in 0..2000u32 {
            let (c, f) = sample_view(7, b"x.jpg", v, 320, 240, &AugmentParams::default());
            flips += f as u32;
            assert!(c.width >= 1 && c.height >= 1);
            assert!(c.left + c.width <= 320 && c.top + c.height <= 240, "{c:?}");
            let frac = (c.width * c.height) as f64 / (320.0 * 240.0);
            assert!((0.07..=1.0 + 1e-9).contains(&frac), "{frac}");
            let r = c.width as f64 / c.height as f64;
            assert!(r > 0.7 && r < 1.4, "{r}");
        }
        assert!((850..1150).contains(&flips), "{flips} flips of 2000");
    }

    #[test]
    fn fallback_is_the_central_crop_clamped_to_the_ratio() {
        // 4000×10: no sampled box can fit, so the fallback applies: ratio 400 > 4/3.
        let mut rng = view_rng(1, b"wide", 1);
        let c = random_resized_crop(&mut rng, 4000, 10, SCALE, RATIO);
        assert_eq!(
            c,
            CropBox {
                left: (4000 - 13) / 2,
                top: 0,
                width: 13,
                height: 10
            }
        );
        let mut rng = view_rng(1, b"one", 1);
        let c = random_resized_crop(&mut rng, 1, 1, SCALE, RATIO);
        assert_eq!(
            c,
            CropBox {
                left: 0,
                top: 0,
                width: 1,
                height: 1
            }
        );
    }

    #[test]
    fn below_is_in_range() {
        let mut r = view_rng(0, b"", 0);
        for n in [1u64, 2, 3, 1000] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
    }

    #[test]
    fn tta_parses_and_makes_its_views() {
        assert_eq!("flip".parse::<Tta>(), Ok(Tta::Flip));
        assert_eq!("crops:3".parse::<Tta>(), Ok(Tta::Crops(3)));
        assert_eq!("none".parse::<Tta>(), Ok(Tta::None));
        for bad in ["crops:0", "crops:65", "crops:x", "mirror", "crops"] {
            assert!(bad.parse::<Tta>().is_err(), "{bad}");
        }
        assert_eq!(Tta::Crops(4).to_string(), "crops:4");
        let cfg = crate::PreprocessConfig {
            input_size: 224,
            resize_size: 256,
            interpolation: headstart_core::config::Interpolation::Bilinear,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        };
        let img = image::RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        });
        let plan = TtaPlan {
            tta: Tta::Crops(2),
            ..Default::default()
        };
        let v = plan.inputs(&img, b"a.jpg", &cfg);
        let plane = 3 * 224 * 224;
        assert_eq!(v.len(), 4 * plane);
        // View 0 is the eval input; view 1 its mirror image (row by row reversed).
        let mut eval = vec![0f32; plane];
        crate::preprocess::normalize_into(
            &crate::preprocess::eval_crop(&img, &cfg),
            &cfg,
            &mut eval,
        );
        assert_eq!(&v[..plane], &eval[..]);
        for row in 0..224 {
            for x in 0..224 {
                assert_eq!(v[plane + row * 224 + x], eval[row * 224 + 223 - x]);
            }
        }
        // Crops are seeded: the same plan gives the same views, another seed other crops.
        assert_eq!(v, plan.inputs(&img, b"a.jpg", &cfg));
        let other = TtaPlan { seed: 7, ..plan };
        assert_ne!(
            v[2 * plane..],
            other.inputs(&img, b"a.jpg", &cfg)[2 * plane..]
        );
    }
}
