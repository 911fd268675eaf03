//! `headstart neighbors`: the cached images most like each query image.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use headstart_audit::similarity::nearest;
use headstart_audit::EvalRows;
use headstart_backbone::batch::run_on_files;
use headstart_backbone::preprocess::DecodeLimits;
use headstart_backbone::weights::{resolve_weights, WeightMap};
use headstart_backbone::Architecture;
use headstart_cache::CacheIndex;
use headstart_core::text::for_terminal;
use plotters::style::{RGBColor, BLACK};
use serde_json::json;

use crate::common::{print_json, require_dir, require_file, usage, RunArgs};
use crate::draw::{draw_grid, Tile};

/// Find the cached images most similar to each query image (cosine similarity of the eval-view
/// features). Queries go through the cache's own backbone and preprocessing, so a query that is
/// in the cache finds itself first, with similarity 1.
///
/// Example: headstart neighbors --cache cache/flowers --weights lite0.pth --k 5 photo.jpg
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The feature cache.
    #[arg(long, value_name = "CACHE_DIR")]
    cache: PathBuf,
    /// The backbone weights the cache was extracted with (default: resolved as in `extract`).
    #[arg(long, value_name = "PATH")]
    weights: Option<PathBuf>,
    /// Key prefix to strip from the weights' tensor names.
    #[arg(long, value_name = "PREFIX")]
    weights_prefix: Option<String>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    k: u32,
    /// Print [{"query", "neighbors": [{"path", "label", "similarity"}]}].
    #[arg(long)]
    json: bool,
    /// Also draw each query beside its neighbours (one row per query; needs --data).
    #[arg(long, value_name = "OUT.png", requires = "data")]
    grid: Option<PathBuf>,
    /// The image folder the cache was extracted from (for --grid's thumbnails).
    #[arg(long, value_name = "DATA_DIR")]
    data: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    /// Query images.
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.run.threads.apply()?;
    require_dir(&a.cache, "--cache")?;
    if let Some(d) = &a.data {
        require_dir(d, "--data")?;
    }
    if let Some(g) = &a.grid {
        crate::common::output_file(g, "--grid")?;
    }
    for p in &a.images {
        if !p.exists() {
            return Err(usage(format!("{}: no such file", p.display())));
        }
    }
    let cache = CacheIndex::open(&a.cache)?;
    let s = cache.settings();
    let arch = Architecture::from_name(&s.backbone.name)?;
    if let Some(w) = &a.weights {
        require_file(w, "--weights")?;
    }
    let resolved =
        resolve_weights(arch, a.weights.as_deref()).map_err(|e| crate::common::WithFix {
            error: e.into(),
            fix: format!(
                "pass --weights PATH: the {arch} weights the cache was extracted with{}",
                s.weights_file
                    .as_deref()
                    .map_or(String::new(), |f| format!(" ({f})"))
            ),
        })?;
    if resolved.sha256 != s.weights_sha256 {
        return Err(usage(format!(
            "--weights {}: sha256 {} is not the cache's ({}); queries must go through the backbone the cache was made with",
            resolved.path.display(),
            resolved.sha256,
            s.weights_sha256
        )));
    }
    let map = WeightMap::from_file(&resolved.path, a.weights_prefix.as_deref())?;
    let backbone = headstart_backbone::Backbone::load_with(
        arch,
        &map,
        &a.run.open()?,
        &headstart_backbone::BackboneOptions {
            precision: s.backbone.precision,
            ..Default::default()
        },
    )?;
    let rows = EvalRows::load(&cache, 0.2, 43, 8 << 30)?;
    let limits = DecodeLimits {
        max_pixels: s.max_pixels,
    };
    let feats = run_on_files::<_, headstart_backbone::Error>(
        &a.images,
        &backbone.config().preprocess,
        &limits,
        32,
        &mut |x| {
            Ok(backbone
                .features(x)?
                .to_device(&Device::Cpu)?
                .to_vec2::<f32>()?)
        },
        &headstart_core::progress::NoProgress,
    )?;
    let k = a.k as usize;
    let mut out = Vec::new();
    let mut tiles = Vec::new();
    for (q, f) in a.images.iter().zip(feats) {
        let query = q.display().to_string();
        match f {
            Ok(mut v) => {
                let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                if n > 0.0 {
                    v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
                }
                let nb = nearest(&rows, &v, k);
                let list: Vec<serde_json::Value> = nb
                    .iter()
                    .map(|n| {
                        json!({
                            "path": rows.path[n.row],
                            "label": rows.classes[rows.label[n.row] as usize],
                            "similarity": n.similarity,
                        })
                    })
                    .collect();
                if let (Some(data), true) = (&a.data, a.grid.is_some()) {
                    let load = |p: &std::path::Path| {
                        std::fs::read(p).ok().and_then(|b| {
                            headstart_backbone::preprocess::decode_rgb(&b, &limits).ok()
                        })
                    };
                    if let Some(img) = load(q) {
                        tiles.push(Tile {
                            image: img,
                            lines: vec![("query".into(), BLACK), (file_name(&query), BLACK)],
                        });
                        for n in &nb {
                            let img = super::audit::inside(data, &rows.path[n.row])
                                .and_then(|p| load(&p))
                                .unwrap_or_else(|| image::RgbImage::new(1, 1));
                            tiles.push(Tile {
                                image: img,
                                lines: vec![
                                    (format!("{:.3}", n.similarity), RGBColor(0, 90, 160)),
                                    (rows.classes[rows.label[n.row] as usize].clone(), BLACK),
                                ],
                            });
                        }
                    }
                }
                out.push(json!({"query": query, "neighbors": list}));
            }
            Err(e) => out.push(json!({"query": query, "error": e.to_string()})),
        }
    }
    if let Some(g) = &a.grid {
        draw_grid(&tiles, k as u32 + 1, g)?;
        eprintln!("grid → {}", g.display());
    }
    if a.json {
        return print_json(&out);
    }
    for r in &out {
        println!("{}", for_terminal(r["query"].as_str().unwrap_or_default()));
        match r["neighbors"].as_array() {
            Some(list) => {
                for (i, n) in list.iter().enumerate() {
                    println!(
                        "  {:>3}. {:.4}  {:<12} {}",
                        i + 1,
                        n["similarity"].as_f64().unwrap_or(0.0),
                        for_terminal(n["label"].as_str().unwrap_or_default()),
                        for_terminal(n["path"].as_str().unwrap_or_default())
                    );
                }
            }
            None => println!(
                "  error: {}",
                for_terminal(r["error"].as_str().unwrap_or_default())
            ),
        }
    }
    Ok(())
}

fn file_name(p: &str) -> String {
    std::path::Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}
