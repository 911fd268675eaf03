//! Prediction: the backbone and a trained head chained on new images.
//!
//! - [`Predictor`]: checks that the weights are the ones the head was trained on, decodes images
//!   in parallel, runs batched forward passes and returns top-k labels with softmax scores.
//! - [`evaluate`]: accuracy, confusion matrix and per-class metrics on a labelled ImageFolder.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use headstart_backbone::preprocess::augment::TtaPlan;
use headstart_backbone::preprocess::DecodeLimits;
use headstart_backbone::weights::WeightMap;
use headstart_backbone::{Architecture, Backbone};
use headstart_data::Dataset;
use headstart_head::{HeadCheckpoint, Report};
use serde::Serialize;

/// Errors of prediction.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Backbone failure.
    #[error(transparent)]
    Backbone(#[from] headstart_backbone::Error),
    /// Head failure.
    #[error(transparent)]
    Head(#[from] headstart_head::Error),
    /// Dataset failure.
    #[error(transparent)]
    Data(#[from] headstart_data::Error),
    /// Tensor failure.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The weights are not the ones the head was trained on.
    #[error(
        "the backbone weights ({found}) are not the ones this head was trained on ({expected})"
    )]
    WeightsMismatch {
        /// sha256 recorded in the head.
        expected: String,
        /// sha256 of the weights given.
        found: String,
        /// The file the head's cache was made from, when it recorded one.
        trained_with: Option<String>,
    },
    /// The head does not fit the backbone.
    #[error("{0}")]
    HeadMismatch(String),
    /// An input path does not exist.
    #[error("{}: no such file or directory", .0.display())]
    MissingPath(PathBuf),
    /// Nothing in the folder could be scored.
    #[error("{0}")]
    NothingToScore(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// One scored label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// Class index.
    pub index: usize,
    /// Class name.
    pub label: String,
    /// Softmax probability.
    pub score: f32,
}

/// The prediction for one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The path as given or found.
    pub path: String,
    /// Best classes first (empty when `error` is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<Scored>>,
    /// Why the file could not be classified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Expands files and folders (recursively, sorted, hidden entries skipped) into image paths.
pub fn collect_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            // The dataset scan's walker: one set of rules for what counts as an image.
            out.extend(headstart_data::folder::find_images(p).0);
        } else if p.exists() {
            out.push(p.clone()); // an explicit file is tried whatever its extension
        } else {
            return Err(Error::MissingPath(p.clone()));
        }
    }
    Ok(out)
}

/// Backbone + head, ready to classify images.
#[derive(Debug)]
pub struct Predictor {
    /// The feature extractor.
    pub backbone: Backbone,
    /// The head and its metadata.
    pub head: HeadCheckpoint,
    /// Decoder limits.
    pub limits: DecodeLimits,
    /// Test-time augmentation: the views whose probabilities are averaged (none by default).
    pub tta: TtaPlan,
}

impl Predictor {
    /// Builds the backbone named in the head's metadata from `weights` (whose sha256 is
    /// `weights_sha256`), refusing weights other than the head's unless `allow_mismatch`.
    pub fn new(
        head: HeadCheckpoint,
        weights: &WeightMap,
        weights_sha256: &str,
        allow_mismatch: bool,
        device: &Device,
    ) -> Result<Self> {
        Self::with_precision(
            head,
            weights,
            weights_sha256,
            allow_mismatch,
            device,
            headstart_backbone::Precision::F32,
        )
    }

    /// [`Predictor::new`] with the forward pass in `precision` (f16/bf16 on a GPU).
    pub fn with_precision(
        head: HeadCheckpoint,
        weights: &WeightMap,
        weights_sha256: &str,
        allow_mismatch: bool,
        device: &Device,
        precision: headstart_backbone::Precision,
    ) -> Result<Self> {
        if !allow_mismatch && weights_sha256 != head.meta.weights_sha256 {
            return Err(Error::WeightsMismatch {
                expected: head.meta.weights_sha256.clone(),
                found: weights_sha256.to_string(),
                trained_with: head.meta.weights_file.clone(),
            });
        }
        let arch = Architecture::from_name(&head.meta.backbone.name)
            .map_err(headstart_backbone::Error::from)?;
        let backbone = Backbone::load_with(
            arch,
            weights,
            device,
            &headstart_backbone::BackboneOptions {
                precision,
                ..Default::default()
            },
        )?;
        // The head's features came from the backbone it recorded: the same sizes and the same
        // preprocessing, or its predictions mean nothing.
        let (had, now) = (&head.meta.backbone, backbone.config());
        let mut differs = Vec::new();
        if had.sizes != now.sizes {
            differs.push(format!(
                "sizes: the head's {}, these weights' {}",
                had.sizes.as_deref().unwrap_or("the built-in ones"),
                now.sizes.as_deref().unwrap_or("the built-in ones")
            ));
        }
        if had.preprocess != now.preprocess {
            let say = |p: &headstart_backbone::PreprocessConfig| {
                format!(
                    "resize {} {:?} → crop {}, mean {:?}, std {:?}",
                    p.resize_size, p.interpolation, p.input_size, p.mean, p.std
                )
            };
            differs.push(format!(
                "preprocessing: the head's {}, now {}",
                say(&had.preprocess),
                say(&now.preprocess)
            ));
        }
        if !differs.is_empty() {
            return Err(Error::HeadMismatch(format!(
                "the head was trained on {} features computed differently: {}",
                arch,
                differs.join("; ")
            )));
        }
        if backbone.config().feature_dim != head.head.dim() {
            return Err(Error::HeadMismatch(format!(
                "the head takes {}-d features but {} gives {}-d ones",
                head.head.dim(),
                arch,
                backbone.config().feature_dim
            )));
        }
        Ok(Self {
            backbone,
            head,
            limits: DecodeLimits::default(),
            tta: TtaPlan::default(),
        })
    }

    /// Class probabilities `[N, classes]` of preprocessed `[N, 3, H, W]` inputs.
    pub fn probabilities(&self, inputs: &Tensor) -> Result<Tensor> {
        let f = self.backbone.features(inputs)?.to_device(&Device::Cpu)?;
        Ok(self.head.head.probabilities(&f)?)
    }

    /// Classifies `paths` in batches; unreadable files get an `error` and do not stop the run.
    /// `progress` is told how many files each batch finished.
    pub fn predict(
        &self,
        paths: &[PathBuf],
        batch_size: usize,
        top_k: usize,
        progress: &dyn headstart_core::progress::Progress,
    ) -> Result<Vec<Prediction>> {
        let cfg = self.backbone.config().preprocess.clone();
        let results = if self.tta.views() == 1 {
            headstart_backbone::batch::run_on_files(
                paths,
                &cfg,
                &self.limits,
                batch_size,
                &mut |x| Ok::<_, Error>(self.probabilities(x)?.to_vec2::<f32>()?),
                progress,
            )?
        } else {
            // Every view of a file through the network, its probabilities averaged.
            let plan = self.tta;
            let limits = self.limits;
            headstart_backbone::batch::run_on_file_views(
                paths,
                cfg.input_size as usize,
                plan.views(),
                &|p| headstart_backbone::preprocess::tta_inputs_from_file(p, &cfg, &limits, &plan),
                batch_size,
                &mut |x| Ok::<_, Error>(self.probabilities(x)?.to_vec2::<f32>()?),
                progress,
            )?
            .into_iter()
            .map(|r| r.map(|views| mean_rows(&views)))
            .collect()
        };
        Ok(paths
            .iter()
            .zip(results)
            .map(|(p, r)| {
                let path = p.display().to_string();
                match r {
                    Ok(probs) => Prediction {
                        path,
                        top: Some(self.top_k(&probs, top_k)),
                        error: None,
                    },
                    Err(e) => Prediction {
                        path,
                        top: None,
                        error: Some(e.to_string()),
                    },
                }
            })
            .collect())
    }

    fn top_k(&self, probs: &[f32], k: usize) -> Vec<Scored> {
        headstart_backbone::batch::top_k(probs, k)
            .into_iter()
            .map(|i| Scored {
                index: i,
                label: self.head.meta.classes[i].clone(),
                score: probs[i],
            })
            .collect()
    }
}

/// The mean of equal-length rows (accumulated in f64).
fn mean_rows(rows: &[Vec<f32>]) -> Vec<f32> {
    let k = rows.first().map_or(0, Vec::len);
    let mut sum = vec![0f64; k];
    for r in rows {
        for (s, &v) in sum.iter_mut().zip(r) {
            *s += v as f64;
        }
    }
    let n = rows.len().max(1) as f64;
    sum.into_iter().map(|s| (s / n) as f32).collect()
}

/// The result of evaluating a head on a labelled folder.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Accuracy, confusion, per-class metrics over the images of known classes.
    #[serde(flatten)]
    pub report: Report,
    /// Class folders whose name the head does not know (their images are not scored).
    pub unknown_classes: Vec<String>,
    /// Files that could not be classified.
    pub errors: Vec<Prediction>,
    /// Per-image predictions of the scored images, in sorted path order.
    pub predictions: Vec<Prediction>,
    /// Whether the head's training images could be checked against (its cache was found).
    pub training_checked: bool,
    /// Scored images the head was trained on (their paths): their score is not held-out.
    pub in_training: Vec<String>,
    /// The test-time augmentation scored with (`none`, `flip`, `crops:N`).
    pub tta: String,
}

/// Evaluates on an ImageFolder: class folders are matched to the head's classes by name. With
/// `train/` + `val/` (+ `test/`) folders only the held-out side named by `split` is scored
/// (`Val` or `Test`); a folder without split folders is scored whole. An evaluation that scores
/// no image is an error.
pub fn evaluate(
    predictor: &Predictor,
    data_dir: &Path,
    split: headstart_data::folder::Split,
    batch_size: usize,
    training: Option<&headstart_head::TrainingImages>,
    progress: &dyn headstart_core::progress::Progress,
) -> Result<Evaluation> {
    use headstart_data::folder::Split;
    let ds = Dataset::scan(data_dir)?;
    let has = |s: Split| ds.items.iter().any(|i| i.split == Some(s));
    // With train/ + test/ and no val/, test/ is the held-out side: asking for it scores it.
    let test_is_val = ds
        .items
        .iter()
        .any(|i| i.split == Some(Split::Val) && i.rel_bytes.starts_with(b"test/"));
    let split = if split == Split::Test && !has(Split::Test) && test_is_val {
        Split::Val
    } else {
        split
    };
    if split == Split::Test && !has(Split::Test) {
        return Err(Error::NothingToScore(if ds.has_split {
            format!(
                "{}: no test/ folder to score (it has train/ and val/ only); score the validation split instead",
                data_dir.display()
            )
        } else {
            format!(
                "{}: no train/, val/ and test/ folders, so there is no test split to score; a folder without them is scored whole (as the validation side)",
                data_dir.display()
            )
        }));
    }
    let classes = &predictor.head.meta.classes;
    let unknown_classes: Vec<String> = ds
        .classes
        .iter()
        .filter(|c| !classes.contains(c))
        .cloned()
        .collect();
    let items: Vec<_> = ds
        .items
        .iter()
        .filter(|it| classes.contains(&ds.classes[it.label]))
        // With train/ and val/ (or test/) folders, only the held-out side is scored.
        .filter(|it| !ds.has_split || it.split == Some(split))
        .collect();
    if items.is_empty() {
        return Err(Error::NothingToScore(format!(
            "{}: no image of the head's classes ({}) to score{}",
            data_dir.display(),
            classes.join(", "),
            if unknown_classes.is_empty() {
                String::new()
            } else {
                format!("; the folder's classes are {}", unknown_classes.join(", "))
            }
        )));
    }
    let paths: Vec<PathBuf> = items.iter().map(|it| it.path.clone()).collect();
    let preds = predictor.predict(&paths, batch_size, 1, progress)?;
    let (mut truth, mut guess, mut errors, mut scored) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (it, p) in items.iter().zip(preds) {
        match &p.top {
            Some(top) => {
                truth.push(
                    classes
                        .iter()
                        .position(|c| *c == ds.classes[it.label])
                        .unwrap_or(0),
                );
                guess.push(top[0].index);
                scored.push(p);
            }
            None => errors.push(p),
        }
    }
    // Which scored images trained the head (by content, so a copy under another name counts).
    let seen_in_training = training.map(|t| {
        use rayon::prelude::*;
        scored
            .par_iter()
            .filter(|p| {
                std::fs::read(&p.path)
                    .map(|b| {
                        t.contains_sha256(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&b)))
                    })
                    .unwrap_or(false)
            })
            .map(|p| p.path.clone())
            .collect::<Vec<_>>()
    });
    Ok(Evaluation {
        report: Report::new(classes, &truth, &guess),
        unknown_classes,
        errors,
        predictions: scored,
        training_checked: seen_in_training.is_some(),
        in_training: seen_in_training.unwrap_or_default(),
        tta: predictor.tta.tta.to_string(),
    })
}
