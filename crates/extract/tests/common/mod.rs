//! Shared fixtures of the extract integration tests.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::sync::OnceLock;

use candle_core::Device;
use headstart_backbone::weights::WeightMap;
use headstart_backbone::{Architecture, Backbone};

pub use headstart_testkit::{shared, snapshot};

/// ResNet-18 with the fixture's random weights (fast, deterministic), and a fake weights hash.
pub fn resnet18() -> &'static Backbone {
    static B: OnceLock<Backbone> = OnceLock::new();
    B.get_or_init(|| {
        let w =
            WeightMap::from_file(&shared("fixtures/resnet18/weights.safetensors"), None).unwrap();
        Backbone::load(Architecture::ResNet18, &w, false, &Device::Cpu).unwrap()
    })
}

pub const SHA: &str = "1e1b97247070ed3aee14dff9f3cfb8b1e196086fdcfc3b47f8b8087526dae9cc";

/// A small deterministic RGB picture.
pub fn picture(w: u32, h: u32, salt: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(31 + salt) ^ y.wrapping_mul(17 + 3 * salt);
        image::Rgb([
            (v % 251) as u8,
            ((x + salt * 40) % 256) as u8,
            ((y * 3 + salt) % 256) as u8,
        ])
    })
}

/// Writes `n` PNGs per class into `root/<class>/`.
pub fn make_dataset(root: &Path, classes: &[&str], n: u32) {
    for (c, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..n {
            let img = picture(48 + 8 * i, 40 + 4 * c as u32, i * 7 + c as u32);
            img.save(root.join(class).join(format!("img{i:02}.png")))
                .unwrap();
        }
    }
}
