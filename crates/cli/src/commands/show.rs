//! `headstart show`: the tutorial's "visualize the dataset" grid.

use std::path::PathBuf;

use anyhow::Result;
use headstart_backbone::preprocess::{decode_rgb, resized_crop, DecodeLimits};
use headstart_core::config::AugmentParams;
use headstart_extract::augment::sample_view;
use headstart_extract::Dataset;
use plotters::style::BLACK;

use crate::common::{output_file, require_dir};
use crate::draw::{draw_grid, Tile};

/// Draw a grid of dataset thumbnails with their class names (a seeded sample), or of augmented
/// views as `extract` makes them (--augmented).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image folder.
    #[arg(value_name = "DATA_DIR")]
    data_dir: PathBuf,
    /// Output PNG.
    #[arg(long, value_name = "OUT.png")]
    grid: PathBuf,
    /// Rows of thumbnails.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=32))]
    rows: u32,
    /// Columns of thumbnails.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=32))]
    cols: u32,
    /// Show augmented views (RandomResizedCrop + flip, seeded as in `extract`).
    #[arg(long)]
    augmented: bool,
    /// Seed of the sample and of the augmentation.
    #[arg(long, default_value_t = 43)]
    seed: u64,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    require_dir(&a.data_dir, "DATA_DIR")?;
    output_file(&a.grid, "--grid")?;
    let ds = Dataset::scan(&a.data_dir)?;
    let n = (a.rows * a.cols) as usize;
    // A seeded sample spread over the classes: item order shuffled by a hash of (seed, path).
    let mut order: Vec<usize> = (0..ds.items.len()).collect();
    order.sort_by_key(|&i| headstart_core::rng::fnv1a64(a.seed, &ds.items[i].rel_bytes));
    let limits = DecodeLimits::default();
    let mut tiles = Vec::new();
    for &i in &order {
        if tiles.len() == n {
            break;
        }
        let it = &ds.items[i];
        let Ok(bytes) = std::fs::read(&it.path) else {
            continue;
        };
        let Ok(img) = decode_rgb(&bytes, &limits) else {
            continue;
        };
        let class = ds.classes[it.label].clone();
        let (image, title) = if a.augmented {
            let (w, h) = img.dimensions();
            let aug = AugmentParams::default();
            let (c, flip) = sample_view(a.seed, &it.rel_bytes, 1, w, h, &aug);
            let mut v = resized_crop(
                &img,
                c.left,
                c.top,
                c.width,
                c.height,
                224,
                224,
                aug.interpolation,
            );
            if flip {
                image::imageops::flip_horizontal_in_place(&mut v);
            }
            (v, format!("{class}{}", if flip { " (flip)" } else { "" }))
        } else {
            (img, class)
        };
        tiles.push(Tile {
            image,
            lines: vec![(title, BLACK)],
        });
    }
    if tiles.is_empty() {
        return Err(anyhow::anyhow!(
            "{}: no decodable image",
            a.data_dir.display()
        ));
    }
    let (w, h) = draw_grid(&tiles, a.cols, &a.grid)?;
    println!(
        "{} thumbnails → {} ({w}×{h})",
        tiles.len(),
        a.grid.display()
    );
    Ok(())
}
