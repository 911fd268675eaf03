//! Weight files: reading every supported format into named tensors, and finding them.

mod pth;
pub mod resolve;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::TensorProblem;
use crate::{Error, Result};

pub use pth::read_pth;
pub use resolve::{resolve_weights, ResolvedWeights, WeightsSource};

/// Named tensors read from a weights file, with the common key prefix removed.
#[derive(Debug)]
pub struct WeightMap {
    tensors: HashMap<String, Tensor>,
    /// Human-readable origin, used in error messages.
    pub source_desc: String,
    /// The prefix that was stripped from every key (empty if none).
    pub stripped_prefix: String,
    /// Number of tensors in the file, `num_batches_tracked` included.
    pub file_tensors: usize,
    /// A model config given directly (it wins over [`config_path`](Self::config_path)).
    pub config_json: Option<serde_json::Value>,
    /// `config.json` beside the weights file, if there is one: a Hugging Face repository's model
    /// config, which sizes transformer backbones. Only they read it (a CNN's weights folder may
    /// hold any `config.json`).
    pub config_path: Option<std::path::PathBuf>,
}

/// Prefixes stripped automatically when every model tensor carries one of them.
pub const KNOWN_PREFIXES: [&str; 4] = ["module.", "backbone.", "model.", "encoder."];

impl WeightMap {
    /// Reads a weights file in any supported format (sniffed from the content, not the extension).
    ///
    /// `prefix`: strip exactly this prefix; `None` strips a known wrapper prefix
    /// (`module.`, `backbone.`, `model.`, `encoder.`) when every key carries it.
    pub fn from_file(path: &Path, prefix: Option<&str>) -> Result<Self> {
        let tensors = read_tensors(path)?;
        let mut map = Self::from_tensors(tensors, path.display().to_string(), prefix)?;
        let config = path.with_file_name("config.json");
        map.config_path = config.is_file().then_some(config);
        Ok(map)
    }

    /// Builds a map from already-read tensors.
    pub fn from_tensors(
        tensors: Vec<(String, Tensor)>,
        source_desc: String,
        prefix: Option<&str>,
    ) -> Result<Self> {
        let file_tensors = tensors.len();
        let keys: Vec<&str> = tensors
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .collect();
        let stripped_prefix = match prefix {
            Some(p) if !p.is_empty() && !keys.iter().any(|k| k.starts_with(p)) => {
                return Err(Error::PrefixNotFound {
                    source_desc,
                    prefix: p.to_string(),
                    example: keys.first().map(|k| k.to_string()).unwrap_or_default(),
                });
            }
            Some(p) => p.to_string(),
            None => KNOWN_PREFIXES
                .iter()
                .find(|p| !keys.is_empty() && keys.iter().all(|k| k.starts_with(*p)))
                .map(|p| p.to_string())
                .unwrap_or_default(),
        };
        let tensors = tensors
            .into_iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, t)| {
                let k = k
                    .strip_prefix(stripped_prefix.as_str())
                    .unwrap_or(&k)
                    .to_string();
                (k, t)
            })
            .collect();
        Ok(Self {
            tensors,
            source_desc,
            stripped_prefix,
            file_tensors,
            config_json: None,
            config_path: None,
        })
    }

    /// The model config: [`config_json`](Self::config_json), else `config.json` beside the
    /// file, parsed now; `None` without either.
    pub fn model_config(&self, backbone: &str) -> Result<Option<serde_json::Value>> {
        if let Some(j) = &self.config_json {
            return Ok(Some(j.clone()));
        }
        let Some(p) = &self.config_path else {
            return Ok(None);
        };
        let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::BadModelConfig {
                path: p.clone(),
                backbone: backbone.to_string(),
                reason: format!("not JSON: {e}"),
            })
    }

    /// Number of tensors (excluding `num_batches_tracked`).
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True if the file held no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// True if a tensor with this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Fetches a tensor, checks its shape, and converts it to f32 on `device`.
    pub fn get(
        &self,
        name: &str,
        shape: &[usize],
        backbone: &str,
        device: &Device,
    ) -> Result<Tensor> {
        let problem = |found: Vec<usize>| {
            Box::new(TensorProblem {
                source_desc: self.source_desc.clone(),
                backbone: backbone.to_string(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found,
            })
        };
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor(problem(Vec::new())))?;
        if t.dims() != shape {
            return Err(Error::ShapeMismatch(problem(t.dims().to_vec())));
        }
        Ok(t.to_dtype(DType::F32)?.to_device(device)?)
    }

    /// [`WeightMap::get`] as f32 values on the host, row-major.
    pub fn get_f32(&self, name: &str, shape: &[usize], backbone: &str) -> Result<Vec<f32>> {
        Ok(self
            .get(name, shape, backbone, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }
}

/// Reads every tensor of a `.safetensors`, zip `.pth` or legacy `.pth` file.
///
/// The format is sniffed from the first bytes; never panics on malformed input.
pub fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::BadWeightsFile {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.len() < 8 {
        return Err(bad(format!("only {} bytes", bytes.len())));
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes[0] == 0x80 {
        return read_pth(&bytes).map_err(|e| bad(e.to_string()));
    }
    read_safetensors(&bytes).map_err(|e| bad(e.to_string()))
}

/// Why bytes could not be read as a weights file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A zip or legacy `.pth` that the reader refused (the reason says where and why).
    #[error("{0}")]
    Pth(String),
    /// A `.safetensors` file that does not parse.
    #[error("safetensors: {0}")]
    Safetensors(String),
}

/// Parses safetensors bytes into tensors on the CPU, sorted by name.
pub fn read_safetensors(bytes: &[u8]) -> std::result::Result<Vec<(String, Tensor)>, FormatError> {
    let map = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
        .map_err(|e| FormatError::Safetensors(e.to_string()))?;
    let mut out: Vec<(String, Tensor)> = map.into_iter().collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
