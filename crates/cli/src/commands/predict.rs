//! `headstart predict`: a trained head on new images.

use std::path::{Path, PathBuf};

use anyhow::Result;
use headstart_backbone::weights::{resolve_weights, WeightMap};
use headstart_backbone::Architecture;
use headstart_head::HeadCheckpoint;
use headstart_predict::{collect_images, Predictor};

use crate::common::{default_batch, output_file, print_json, require_file, usage, RunArgs};
use crate::draw::{prediction_grid, GridCell};
use crate::progress::Bar;
use headstart_core::text::for_terminal;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Aligned text.
    Table,
    /// A JSON list of {"path", "top": [{"label", "score"}]} (or {"path", "error"}).
    Json,
    /// path,rank,label,score rows.
    Csv,
}

/// Options that load a head and its backbone (shared by predict and eval).
#[derive(Debug, Clone, clap::Args)]
pub struct HeadArgs {
    /// Directory written by `headstart train-head` (or its head.safetensors).
    #[arg(long, value_name = "HEAD_DIR")]
    pub head: PathBuf,
    /// Backbone weights (default: resolved as in `extract`); must be the ones the head was
    /// trained on.
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// Key prefix to strip from the weights' tensor names.
    #[arg(long, value_name = "PREFIX")]
    pub weights_prefix: Option<String>,
    /// Use weights whose sha256 differs from the head's (predictions may be meaningless).
    #[arg(long)]
    pub allow_weights_mismatch: bool,
    /// Images per forward pass [default: 32 on the CPU, 256 on a GPU].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: Option<u32>,
    /// Test-time augmentation: average the head's probabilities over the eval view and its
    /// mirror image (`flip`), plus N seeded crops drawn as extract draws its views (`crops:N`,
    /// N ≤ 64). Costs one forward pass per view.
    #[arg(long, value_name = "none|flip|crops:N", default_value = "none")]
    pub tta: headstart_backbone::preprocess::augment::Tta,
    /// Seed of the TTA crops (with each file's name and the crop's index).
    #[arg(long, default_value_t = 43)]
    pub tta_seed: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

impl HeadArgs {
    /// Loads head, weights and backbone.
    pub fn predictor(&self) -> Result<Predictor> {
        if !self.head.exists() {
            return Err(usage(format!(
                "--head {}: no such directory",
                self.head.display()
            )));
        }
        if let Some(w) = &self.weights {
            require_file(w, "--weights")?;
        }
        let head = HeadCheckpoint::load(&self.head)?;
        let arch = Architecture::from_name(&head.meta.backbone.name)?;
        let resolved = match resolve_weights(arch, self.weights.as_deref()) {
            Ok(r) => r,
            Err(e @ headstart_backbone::Error::WeightsNotFound { .. }) => {
                let sha = &head.meta.weights_sha256;
                let fix = match &head.meta.weights_file {
                    Some(f) => format!(
                        "pass --weights {f} (the file the head's features were extracted with, sha256 {}…)",
                        &sha[..sha.len().min(12)]
                    ),
                    None => format!(
                        "pass --weights PATH: the {} weights the head's cache was extracted with (sha256 {sha})",
                        arch
                    ),
                };
                return Err(crate::common::WithFix {
                    error: e.into(),
                    fix,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let map = WeightMap::from_file(&resolved.path, self.weights_prefix.as_deref())?;
        let mut p = Predictor::with_precision(
            head,
            &map,
            &resolved.sha256,
            self.allow_weights_mismatch,
            &self.run.open()?,
            self.run.dtype,
        )?;
        p.tta = headstart_backbone::preprocess::augment::TtaPlan {
            tta: self.tta,
            seed: self.tta_seed,
            ..Default::default()
        };
        Ok(p)
    }

    /// The batch size asked for, or the device's default.
    pub fn batch(&self, p: &Predictor) -> usize {
        self.batch_size
            .map_or_else(|| default_batch(p.backbone.device()), |b| b as usize)
    }
}

/// Classify new images with a trained head. PATHs are files or folders (searched recursively).
/// The backbone, its preprocessing and the class names come from the head; unreadable files are
/// reported and do not stop the run.
///
/// Example: headstart predict --head heads/flowers --format json photos/
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    head: HeadArgs,
    /// Classes to show per image.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    top_k: u16,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also draw a grid of thumbnails titled with the predictions (green = right, red = wrong
    /// when the parent folder names a known class).
    #[arg(long, value_name = "OUT.png")]
    grid: Option<PathBuf>,
    /// Image files or folders.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// The class named by the parent folder, if it is one of `classes`.
pub fn parent_class(path: &Path, classes: &[String]) -> Option<String> {
    let parent = path.parent()?.file_name()?.to_string_lossy().into_owned();
    classes.contains(&parent).then_some(parent)
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    a.head.run.threads.apply()?;
    for p in &a.paths {
        if !p.exists() {
            return Err(usage(format!("{}: no such file or directory", p.display())));
        }
    }
    if let Some(g) = &a.grid {
        output_file(g, "--grid")?;
    }
    let predictor = a.head.predictor()?;
    let paths = collect_images(&a.paths)?;
    if paths.is_empty() {
        return Err(usage("no image files found in the given paths"));
    }
    let bar = Bar::new("predict", a.format != Format::Table || paths.len() < 64);
    bar.set_len(paths.len() as u64);
    let preds = predictor.predict(&paths, a.head.batch(&predictor), a.top_k as usize, &bar)?;
    bar.done();
    match a.format {
        Format::Json => print_json(&preds)?,
        Format::Csv => {
            println!("path,rank,label,score,error");
            for p in &preds {
                let path = csv_field(&p.path);
                match (&p.top, &p.error) {
                    (Some(top), _) => top.iter().enumerate().for_each(|(k, t)| {
                        println!("{path},{},{},{:.6},", k + 1, csv_field(&t.label), t.score)
                    }),
                    (None, e) => println!("{path},,,,{}", csv_field(e.as_deref().unwrap_or(""))),
                }
            }
        }
        Format::Table => {
            for p in &preds {
                match &p.top {
                    Some(top) => {
                        let t: Vec<String> = top
                            .iter()
                            .map(|t| format!("{} {:.3}", t.label, t.score))
                            .collect();
                        println!("{}  {}", for_terminal(&p.path), for_terminal(&t.join("  ")));
                    }
                    None => println!(
                        "{}  error: {}",
                        for_terminal(&p.path),
                        for_terminal(p.error.as_deref().unwrap_or(""))
                    ),
                }
            }
        }
    }
    if let Some(out) = &a.grid {
        let classes = &predictor.head.meta.classes;
        let training = headstart_head::TrainingImages::of_head(&a.head.head).unwrap_or(None);
        let trained_on = |path: &Path| {
            training.as_ref().is_some_and(|t| {
                std::fs::read(path).is_ok_and(|b| {
                    t.contains_sha256(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)))
                })
            })
        };
        let cells: Vec<GridCell> = paths
            .iter()
            .zip(&preds)
            .filter_map(|(path, p)| {
                let top = p.top.as_ref()?;
                Some(GridCell {
                    path: path.clone(),
                    predicted: top[0].label.clone(),
                    score: top[0].score,
                    truth: parent_class(path, classes),
                    trained_on: trained_on(path),
                })
            })
            .collect();
        prediction_grid(&cells, out)?;
        eprintln!("grid → {}", out.display());
    }
    let errors = preds.iter().filter(|p| p.error.is_some()).count();
    if errors > 0 {
        eprintln!(
            "{errors} of {} file(s) could not be classified",
            preds.len()
        );
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
