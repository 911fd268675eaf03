//! `validation.json` of a head directory: the head's prediction for every validation image,
//! named by path and content hash, so that two heads can be compared on the same images
//! (`headstart compare`: McNemar's test on their disagreements) and a label can be checked
//! against what the head thinks of it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The format tag of `validation.json`.
pub const VALIDATION_FORMAT: &str = "headstart-validation";

/// One validation image as the head saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValPrediction {
    /// Path relative to the dataset, as the cache's manifest has it.
    pub path: String,
    /// sha256 of the file (what identifies the image across caches and backbones).
    pub sha256: String,
    /// The labelled class (index into `classes`).
    pub label: u32,
    /// The predicted class (argmax on the eval view).
    pub predicted: u32,
    /// Class probabilities on the eval view.
    pub probabilities: Vec<f32>,
    /// The predicted class with every cached view's probabilities averaged (`--val-tta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_tta: Option<u32>,
}

/// `validation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationFile {
    /// [`VALIDATION_FORMAT`].
    pub format: String,
    /// Class names, in output order.
    pub classes: Vec<String>,
    /// sha256 of the cache's manifest the head was trained on.
    pub cache_manifest_sha256: String,
    /// Rows per image averaged by `predicted_tta` (absent without `--val-tta`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tta_views: Option<usize>,
    /// Every validation image, in the cache's image order.
    pub images: Vec<ValPrediction>,
}

impl ValidationFile {
    /// Accuracy on the eval view (0 without images).
    pub fn accuracy(&self) -> f64 {
        if self.images.is_empty() {
            return 0.0;
        }
        self.images
            .iter()
            .filter(|p| p.label == p.predicted)
            .count() as f64
            / self.images.len() as f64
    }

    /// Accuracy with test-time augmentation, when it was scored.
    pub fn accuracy_tta(&self) -> Option<f64> {
        let tta: Vec<bool> = self
            .images
            .iter()
            .map(|p| p.predicted_tta.map(|t| t == p.label))
            .collect::<Option<_>>()?;
        (!tta.is_empty()).then(|| tta.iter().filter(|&&c| c).count() as f64 / tta.len() as f64)
    }

    /// Reads `dir/validation.json` (`Ok(None)` when the head has none: heads written before
    /// it existed, or trained without validation images).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join("validation.json");
        let bytes = match headstart_cache::safe_fs::read_regular(&path, 1 << 30) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let v: Self = serde_json::from_slice(&bytes).map_err(|e| Error::BadHead {
            path: path.clone(),
            reason: format!("validation.json: {e}"),
        })?;
        if v.format != VALIDATION_FORMAT {
            return Err(Error::BadHead {
                path,
                reason: format!(
                    "validation.json: format `{}`, expected `{VALIDATION_FORMAT}`",
                    v.format
                ),
            });
        }
        let k = v.classes.len() as u32;
        if let Some(p) = v.images.iter().find(|p| {
            p.label >= k
                || p.predicted >= k
                || p.predicted_tta.is_some_and(|t| t >= k)
                || p.probabilities.len() != k as usize
        }) {
            return Err(Error::BadHead {
                path,
                reason: format!(
                    "validation.json: {} has a class index or probabilities that do not fit its {k} classes",
                    headstart_core::text::for_terminal(&p.path)
                ),
            });
        }
        Ok(Some(v))
    }
}
