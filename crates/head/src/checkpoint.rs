//! `head.safetensors`: the trained head plus everything needed to use it on new images.

use std::collections::BTreeMap;
use std::path::Path;

use headstart_cache::st::{serialize, Data, NamedTensor};
use headstart_core::config::BackboneConfig;
use serde::{Deserialize, Serialize};

use crate::config::{TrainConfig, ValMetrics};
use crate::linear::LinearHead;
use crate::{Error, Result};

/// The `format` metadata value of head files.
pub const HEAD_FORMAT: &str = "headstart-linear-head";
/// Current head format version.
pub const HEAD_FORMAT_VERSION: u32 = 1;
/// File name of the head inside a head directory.
pub const HEAD_FILE: &str = headstart_core::files::HEAD_FILE;

/// The largest head file read (a 100,000-class head on 4096-wide features is 1.6 GB).
const MAX_HEAD_BYTES: u64 = 8 << 30;

/// What a head knows about how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetadata {
    /// Class names in output order.
    pub classes: Vec<String>,
    /// The backbone (name, preprocessing, feature width) the features came from.
    pub backbone: BackboneConfig,
    /// sha256 of the backbone weights the features came from.
    pub weights_sha256: String,
    /// Feature width.
    pub feature_dim: usize,
    /// How the head was trained (`None` for heads written before the config was recorded as a
    /// type: their `training` metadata is kept in the file but not interpreted).
    #[serde(default)]
    pub config: Option<TrainConfig>,
    /// Validation metrics at the end of training (`None` without validation images).
    #[serde(default)]
    pub val_metrics: Option<ValMetrics>,
    /// Where the cache's weights were read from when it was created (to name the file
    /// `predict` needs); absent for heads and caches from before it was recorded.
    #[serde(default)]
    pub weights_file: Option<String>,
}

/// A head with its metadata.
#[derive(Debug, Clone)]
pub struct HeadCheckpoint {
    /// The weights.
    pub head: LinearHead,
    /// The metadata.
    pub meta: HeadMetadata,
}

impl HeadCheckpoint {
    /// Serialises to deterministic safetensors bytes (`weight` [C, D], `bias` [C]; metadata as
    /// JSON strings under `classes`, `backbone`, `backbone_config`, `preprocess`, …).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let w: Vec<f32> = self.head.weight.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = self.head.bias.to_vec1()?;
        let (c, d) = (self.head.classes(), self.head.dim());
        let j = |v: &dyn erased::Json| v.json();
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), HEAD_FORMAT.to_string());
        meta.insert("format_version".into(), HEAD_FORMAT_VERSION.to_string());
        meta.insert("classes".into(), j(&self.meta.classes));
        meta.insert("backbone".into(), self.meta.backbone.name.clone());
        meta.insert("backbone_config".into(), j(&self.meta.backbone));
        meta.insert("preprocess".into(), j(&self.meta.backbone.preprocess));
        meta.insert("weights_sha256".into(), self.meta.weights_sha256.clone());
        meta.insert("feature_dim".into(), self.meta.feature_dim.to_string());
        meta.insert("training".into(), j(&self.meta.config));
        meta.insert("val_metrics".into(), j(&self.meta.val_metrics));
        if let Some(f) = &self.meta.weights_file {
            meta.insert("weights_file".into(), f.clone());
        }
        let tensors = [
            NamedTensor {
                name: "weight",
                shape: vec![c, d],
                data: Data::F32(&w),
            },
            NamedTensor {
                name: "bias",
                shape: vec![c],
                data: Data::F32(&b),
            },
        ];
        Ok(serialize(&tensors, &meta)?)
    }

    /// Parses head bytes; `path` is only used in error messages. Never panics.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::BadHead {
            path: path.to_path_buf(),
            reason,
        };
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
        let (_, md) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let md = md.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            md.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("metadata `{k}` missing: not a headstart head")))
        };
        if get("format")? != HEAD_FORMAT {
            return Err(bad("not a headstart head (format metadata differs)".into()));
        }
        let version: u32 = get("format_version")?
            .parse()
            .map_err(|_| bad("bad format_version".into()))?;
        if version > HEAD_FORMAT_VERSION {
            return Err(bad(format!(
                "head format {version} is newer than this headstart understands; upgrade headstart"
            )));
        }
        let parse = |k: &str| -> Result<serde_json::Value> {
            serde_json::from_str(&get(k)?).map_err(|e| bad(format!("metadata `{k}`: {e}")))
        };
        let meta = HeadMetadata {
            classes: serde_json::from_value(parse("classes")?)
                .map_err(|e| bad(format!("classes: {e}")))?,
            backbone: serde_json::from_value(parse("backbone_config")?)
                .map_err(|e| bad(format!("backbone_config: {e}")))?,
            weights_sha256: get("weights_sha256")?,
            feature_dim: get("feature_dim")?
                .parse()
                .map_err(|_| bad("bad feature_dim".into()))?,
            // Heads from before the typed config hold another shape here: not an error.
            config: parse("training")
                .ok()
                .and_then(|v| serde_json::from_value(v).ok()),
            val_metrics: parse("val_metrics")
                .ok()
                .and_then(|v| serde_json::from_value(v).ok()),
            weights_file: md.get("weights_file").cloned(),
        };
        let f32s = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor `{name}` missing")))?;
            if t.dtype() != safetensors::Dtype::F32 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let (c, d) = (meta.classes.len(), meta.feature_dim);
        if c < 2 || d == 0 {
            return Err(bad(format!(
                "{c} classes and feature width {d}: a head needs at least 2 classes and 1 feature"
            )));
        }
        let (weight, bias) = (f32s("weight", &[c, d])?, f32s("bias", &[c])?);
        if let Some(v) = weight.iter().chain(&bias).find(|v| !v.is_finite()) {
            return Err(bad(format!(
                "the head holds a non-finite weight ({v}); it came from a diverged training run — train it again with a smaller learning rate"
            )));
        }
        let head = LinearHead::from_vecs(weight, bias, c, d)?;
        Ok(Self { head, meta })
    }

    /// Reads `dir/head.safetensors` (or a file path directly). Inside a head folder the file is
    /// opened without following links; either way only a regular file of bounded size is read.
    pub fn load(path: &Path) -> Result<Self> {
        let (file, inside) = if path.is_dir() {
            (path.join(HEAD_FILE), true)
        } else {
            (path.to_path_buf(), false)
        };
        let read = if inside {
            headstart_cache::safe_fs::read_regular(&file, MAX_HEAD_BYTES)
        } else {
            std::fs::File::open(&file).and_then(|f| {
                if f.metadata()?.is_file() {
                    drop(f);
                    headstart_cache::safe_fs::read_regular(
                        &std::fs::canonicalize(&file)?,
                        MAX_HEAD_BYTES,
                    )
                } else {
                    Err(std::io::Error::other("not a regular file"))
                }
            })
        };
        let bytes = read.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoHead { path: file.clone() },
            _ => Error::io(&file, e),
        })?;
        Self::from_bytes(&bytes, &file)
    }

    /// Writes `dir/head.safetensors` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        headstart_cache::atomic::write_atomic(&dir.join(HEAD_FILE), &self.to_bytes()?)?;
        Ok(())
    }
}

mod erased {
    /// Anything serialisable to a compact JSON string.
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headstart_core::config::Architecture;

    #[test]
    fn round_trip_is_exact_and_bytes_are_stable() {
        let head = LinearHead::init(3, 8, 5).unwrap();
        let ck = HeadCheckpoint {
            head,
            meta: HeadMetadata {
                classes: vec!["a".into(), "b".into(), "c".into()],
                backbone: Architecture::EfficientNetLite0.config(),
                weights_sha256: "00".repeat(32),
                feature_dim: 8,
                config: Some(TrainConfig::default()),
                val_metrics: Some(ValMetrics {
                    accuracy: 0.5,
                    macro_f1: 0.4,
                    n: 10,
                    loss: Some(1.0),
                    accuracy_tta: None,
                }),
                weights_file: Some("/w/lite0.pth".into()),
            },
        };
        let bytes = ck.to_bytes().unwrap();
        assert_eq!(bytes, ck.to_bytes().unwrap());
        let back = HeadCheckpoint::from_bytes(&bytes, Path::new("h")).unwrap();
        assert_eq!(back.meta, ck.meta);
        assert_eq!(back.to_bytes().unwrap(), bytes);
        for cut in (0..bytes.len()).step_by(61) {
            assert!(HeadCheckpoint::from_bytes(&bytes[..cut], Path::new("h")).is_err());
        }
    }

    #[test]
    fn a_head_with_nan_weights_is_refused() {
        let mut w = vec![0.1f32; 3 * 8];
        w[5] = f32::NAN;
        let ck = HeadCheckpoint {
            head: LinearHead::from_vecs(w, vec![0.0; 3], 3, 8).unwrap(),
            meta: HeadMetadata {
                classes: vec!["a".into(), "b".into(), "c".into()],
                backbone: Architecture::EfficientNetLite0.config(),
                weights_sha256: "00".repeat(32),
                feature_dim: 8,
                config: None,
                val_metrics: None,
                weights_file: None,
            },
        };
        let err = HeadCheckpoint::from_bytes(&ck.to_bytes().unwrap(), Path::new("h"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("non-finite"), "{err}");
    }
}
