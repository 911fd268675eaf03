//! Vision transformers with Hugging Face `transformers` weight names: DINOv2 (`Dinov2Model`) and
//! CLIP's image tower (`CLIPVisionModelWithProjection`), sizes read from the repository's
//! `config.json`.
//!
//! One implementation serves both families because they differ only in a few places: DINOv2 adds
//! a bias to the patch embedding, LayerScale after attention and MLP, exact GELU, no LayerNorm
//! before the encoder, and a 37×37 position grid trained at 518 px that is interpolated to the
//! input's grid; CLIP has a pre-encoder LayerNorm, quick-GELU, a position table that matches its
//! input size, and a projection of the final-LayerNorm CLS token.
//!
//! Why not candle-transformers: its DINOv2 interpolates position embeddings with
//! nearest-neighbour (transformers: bicubic, `align_corners=False`), hard-codes LayerNorm eps 1e-5
//! (the checkpoints: 1e-6) and requires a classifier head the hub's backbones do not have; its
//! CLIP tower is exact, but the dependency compiles every model candle-transformers has for
//! about 80 lines shared here with DINOv2.

use candle_core::{DType, Device, IndexOp, Tensor, D};
use rayon::prelude::*;
use serde_json::Value;

use super::Engine;
use crate::weights::WeightMap;
use crate::{Error, Result};
use headstart_core::config::{Architecture, TransformerFamily};

/// Activation of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (erf), `hidden_act: "gelu"`.
    Gelu,
    /// `x · sigmoid(1.702 x)`, `hidden_act: "quick_gelu"` (CLIP).
    QuickGelu,
}

/// Why a `config.json` cannot size a vision transformer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A size that is not a whole number.
    #[error("`{key}` is not a whole number")]
    NotANumber {
        /// The key.
        key: String,
    },
    /// An MLP activation this implementation does not have.
    #[error("hidden_act `{0}` is not supported (gelu, quick_gelu)")]
    Activation(String),
    /// Another model's config.
    #[error("model_type is `{found}`, expected `{expected}`")]
    ModelType {
        /// What the file says.
        found: String,
        /// What this family is.
        expected: &'static str,
    },
    /// DINOv2 giant's SwiGLU MLP.
    #[error("use_swiglu_ffn (DINOv2 giant) is not supported")]
    SwiGlu,
    /// LayerNorm's epsilon must be a small positive number.
    #[error(
        "layer_norm_eps {0} must be a finite number above 0 (the checkpoints use 1e-6 or 1e-5)"
    )]
    Eps(f64),
    /// Sizes that do not fit together.
    #[error("inconsistent sizes: {0}")]
    Inconsistent(String),
    /// A size beyond what any released checkpoint uses, refused before anything is allocated.
    #[error("{what} {value} is beyond what headstart builds (at most {limit})")]
    TooLarge {
        /// Which size.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The largest accepted.
        limit: usize,
    },
    /// The input cannot be cut into patches.
    #[error("a {input}×{input} input is smaller than one {patch}×{patch} patch")]
    NoPatches {
        /// The input side the model will be run at.
        input: usize,
        /// The patch side.
        patch: usize,
    },
    /// Attention that cannot fit in memory even for one image.
    #[error("{tokens} tokens ({grid}×{grid} patches of {patch} px at {input} px) need {gib:.1} GiB of attention scores per image, more than the {limit_gib} GiB headstart allows: use the checkpoint's own patch size")]
    AttentionTooLarge {
        /// Tokens per image.
        tokens: usize,
        /// Patch grid side.
        grid: usize,
        /// Patch side.
        patch: usize,
        /// Input side.
        input: usize,
        /// GiB the scores of one image take.
        gib: f64,
        /// The limit.
        limit_gib: u64,
    },
}

/// Limits on the sizes read from a `config.json` (the largest released checkpoints, ViT-G/14 and
/// DINOv2 giant, use hidden 1664/1536, 48/40 layers, 16/24 heads, MLP 8192, 518 px).
const MAX_HIDDEN: usize = 8192;
const MAX_LAYERS: usize = 128;
const MAX_HEADS: usize = 128;
const MAX_INTERMEDIATE: usize = 65536;
const MAX_IMAGE: usize = 4096;
/// Attention scores of one image may take at most this many GiB (f32).
const MAX_ATTENTION_GIB: u64 = 2;

/// The sizes of a vision transformer.
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// DINOv2 or CLIP.
    pub family: TransformerFamily,
    /// Token width.
    pub hidden: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Patch side in pixels.
    pub patch: usize,
    /// Training resolution (sets the position grid).
    pub image_size: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// MLP activation.
    pub act: Activation,
    /// CLIP's projection width (`image_embeds`).
    pub projection: usize,
}

impl VitConfig {
    /// The hub model's sizes for `arch` (what its `config.json` says).
    pub fn builtin(arch: Architecture) -> Option<Self> {
        let dino = |hidden, layers, heads| VitConfig {
            family: TransformerFamily::DinoV2,
            hidden,
            layers,
            heads,
            intermediate: 4 * hidden,
            patch: 14,
            image_size: 518,
            eps: 1e-6,
            act: Activation::Gelu,
            projection: 0,
        };
        let clip = |hidden, layers, heads, patch, projection| VitConfig {
            family: TransformerFamily::Clip,
            hidden,
            layers,
            heads,
            intermediate: 4 * hidden,
            patch,
            image_size: 224,
            eps: 1e-5,
            act: Activation::QuickGelu,
            projection,
        };
        Some(match arch {
            Architecture::DinoV2Small => dino(384, 12, 6),
            Architecture::DinoV2Base => dino(768, 12, 12),
            Architecture::DinoV2Large => dino(1024, 24, 16),
            Architecture::ClipVitB32 => clip(768, 12, 12, 32, 512),
            Architecture::ClipVitB16 => clip(768, 12, 12, 16, 512),
            Architecture::ClipVitL14 => clip(1024, 24, 16, 14, 768),
            _ => return None,
        })
    }

    /// Sizes from a Hugging Face `config.json`: a `Dinov2Model` config, a full `CLIPModel`
    /// config (its `vision_config` and `projection_dim`) or a `CLIPVisionConfig`.
    pub fn from_hf_json(
        family: TransformerFamily,
        json: &Value,
    ) -> std::result::Result<Self, ConfigError> {
        let (v, top) = match (family, json.get("vision_config")) {
            (TransformerFamily::Clip, Some(v)) => (v, json),
            _ => (json, json),
        };
        // A missing key takes transformers' default for it (Dinov2Config / CLIPVisionConfig).
        let int = |k: &str| -> std::result::Result<usize, ConfigError> {
            let default = match (family, k) {
                (_, "hidden_size") => 768,
                (_, "num_hidden_layers") | (_, "num_attention_heads") => 12,
                (TransformerFamily::DinoV2, "patch_size") => 14,
                (TransformerFamily::Clip, "patch_size") => 32,
                (_, "image_size") => 224,
                (TransformerFamily::Clip, "intermediate_size") => 3072,
                _ => 0,
            };
            match v.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| ConfigError::NotANumber { key: k.to_string() }),
            }
        };
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let act = match v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or(match family {
                TransformerFamily::DinoV2 => "gelu",
                TransformerFamily::Clip => "quick_gelu",
            }) {
            "gelu" => Activation::Gelu,
            "quick_gelu" => Activation::QuickGelu,
            other => return Err(ConfigError::Activation(other.to_string())),
        };
        let hidden = int("hidden_size")?;
        let heads = int("num_attention_heads")?;
        let c = match family {
            TransformerFamily::DinoV2 => {
                if !model_type.is_empty() && model_type != "dinov2" {
                    return Err(ConfigError::ModelType {
                        found: model_type.to_string(),
                        expected: "dinov2",
                    });
                }
                if v.get("use_swiglu_ffn").and_then(Value::as_bool) == Some(true) {
                    return Err(ConfigError::SwiGlu);
                }
                let ratio = v.get("mlp_ratio").and_then(Value::as_f64).unwrap_or(4.0);
                if !(ratio.is_finite() && ratio > 0.0 && ratio <= 64.0) {
                    return Err(ConfigError::Inconsistent(format!(
                        "mlp_ratio {ratio} must be above 0 and at most 64"
                    )));
                }
                VitConfig {
                    family,
                    hidden,
                    layers: int("num_hidden_layers")?,
                    heads,
                    intermediate: (hidden as f64 * ratio) as usize,
                    patch: int("patch_size")?,
                    image_size: int("image_size")?,
                    eps: v
                        .get("layer_norm_eps")
                        .and_then(Value::as_f64)
                        .unwrap_or(1e-6),
                    act,
                    projection: 0,
                }
            }
            TransformerFamily::Clip => {
                if !model_type.is_empty() && !model_type.starts_with("clip") {
                    return Err(ConfigError::ModelType {
                        found: model_type.to_string(),
                        expected: "clip",
                    });
                }
                // CLIPModel projects with its top-level projection_dim.
                let projection = top
                    .get("projection_dim")
                    .or_else(|| v.get("projection_dim"))
                    .and_then(Value::as_u64)
                    .unwrap_or(512) as usize;
                VitConfig {
                    family,
                    hidden,
                    layers: int("num_hidden_layers")?,
                    heads,
                    intermediate: int("intermediate_size")?,
                    patch: int("patch_size")?,
                    image_size: int("image_size")?,
                    eps: v
                        .get("layer_norm_eps")
                        .and_then(Value::as_f64)
                        .unwrap_or(1e-5),
                    act,
                    projection,
                }
            }
        };
        c.check()?;
        Ok(c)
    }

    /// Checks the sizes against each other and against what can be built: every size bounded
    /// (so no product of them overflows), LayerNorm's epsilon positive and finite.
    pub fn check(&self) -> std::result::Result<(), ConfigError> {
        let c = self;
        for (what, value, limit) in [
            ("hidden_size", c.hidden, MAX_HIDDEN),
            ("num_hidden_layers", c.layers, MAX_LAYERS),
            ("num_attention_heads", c.heads, MAX_HEADS),
            ("intermediate_size", c.intermediate, MAX_INTERMEDIATE),
            ("image_size", c.image_size, MAX_IMAGE),
            ("patch_size", c.patch, MAX_IMAGE),
            ("projection_dim", c.projection, MAX_HIDDEN),
        ] {
            if value > limit {
                return Err(ConfigError::TooLarge { what, value, limit });
            }
        }
        if !(c.eps.is_finite() && c.eps > 0.0 && c.eps < 1.0) {
            return Err(ConfigError::Eps(c.eps));
        }
        if c.hidden == 0
            || c.heads == 0
            || !c.hidden.is_multiple_of(c.heads)
            || c.patch == 0
            || c.layers == 0
            || c.image_size < c.patch
            || c.intermediate == 0
            || (c.family == TransformerFamily::Clip && c.projection == 0)
        {
            return Err(ConfigError::Inconsistent(format!(
                "hidden {} with {} heads, patch {}, image {}, {} layers, mlp {}, projection {}",
                c.hidden, c.heads, c.patch, c.image_size, c.layers, c.intermediate, c.projection
            )));
        }
        Ok(())
    }

    /// Checks that an `input`×`input` image can run: at least one patch, and the attention
    /// scores of one image within [`MAX_ATTENTION_GIB`].
    pub fn check_input(&self, input: usize) -> std::result::Result<(), ConfigError> {
        let grid = input / self.patch;
        if grid == 0 {
            return Err(ConfigError::NoPatches {
                input,
                patch: self.patch,
            });
        }
        let tokens = grid * grid + 1;
        let bytes = (self.heads * tokens * tokens * 4) as f64;
        let gib = bytes / (1u64 << 30) as f64;
        if gib > MAX_ATTENTION_GIB as f64 {
            return Err(ConfigError::AttentionTooLarge {
                tokens,
                grid,
                patch: self.patch,
                input,
                gib,
                limit_gib: MAX_ATTENTION_GIB,
            });
        }
        Ok(())
    }

    /// The sizes in one line (recorded in caches and heads, so other sizes are told apart).
    pub fn describe(&self) -> String {
        format!(
            "{} hidden {} layers {} heads {} mlp {} patch {} image {} eps {:e} act {} projection {}",
            match self.family {
                TransformerFamily::DinoV2 => "dinov2",
                TransformerFamily::Clip => "clip",
            },
            self.hidden,
            self.layers,
            self.heads,
            self.intermediate,
            self.patch,
            self.image_size,
            self.eps,
            match self.act {
                Activation::Gelu => "gelu",
                Activation::QuickGelu => "quick_gelu",
            },
            self.projection
        )
    }

    /// Width of the features: 2 × hidden for DINOv2 (CLS ‖ mean of patches), the projection for
    /// CLIP.
    pub fn feature_dim(&self) -> usize {
        match self.family {
            TransformerFamily::DinoV2 => 2 * self.hidden,
            TransformerFamily::Clip => self.projection,
        }
    }
}

#[derive(Debug)]
struct Linear {
    /// `[in, out]` (transposed once at load).
    wt: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, t, d) = x.dims3()?;
        let y = x.reshape((n * t, d))?.matmul(&self.wt)?;
        let y = match &self.b {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        Ok(y.reshape((n, t, ()))?)
    }
}

#[derive(Debug)]
struct LayerNorm {
    /// f32, on the device (the statistics are computed in f32 whatever the forward dtype).
    w: Tensor,
    b: Tensor,
    /// The same, on the host, for the fused CPU kernel.
    wv: Vec<f32>,
    bv: Vec<f32>,
    eps: f64,
    /// The fused CPU kernel (CPU device, [`Engine::Auto`]); else candle's operations.
    fused: bool,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.fused {
            // Two passes (mean, then the variance of the centred values), in f32.
            let dtype = x.dtype();
            let x = x.to_dtype(DType::F32)?;
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            let y = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
            let y = y.broadcast_mul(&self.w)?.broadcast_add(&self.b)?;
            return Ok(y.to_dtype(dtype)?);
        }
        // One pass over the data instead of seven tensor operations: per row, the mean, then
        // the variance of the centred values (two passes over the row, so no cancellation), in
        // f64.
        let dims = x.dims().to_vec();
        let d = *dims.last().expect("at least one dimension");
        let src = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; src.len()];
        let (w, b, eps) = (&self.wv, &self.bv, self.eps);
        out.par_chunks_mut(d)
            .zip(src.par_chunks(d))
            .for_each(|(o, s)| {
                let mean = s.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = s
                    .iter()
                    .map(|&v| {
                        let c = v as f64 - mean;
                        c * c
                    })
                    .sum::<f64>()
                    / d as f64;
                let inv = 1.0 / (var + eps).sqrt();
                for k in 0..d {
                    o[k] = (((s[k] as f64 - mean) * inv) as f32) * w[k] + b[k];
                }
            });
        Ok(Tensor::from_vec(out, dims, x.device())?)
    }
}

/// Softmax over the last dimension: fused on the CPU (max, exp, sum, scale per row), else
/// candle's operations in f32.
fn softmax_last(x: &Tensor, fused: bool) -> Result<Tensor> {
    if !fused {
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let max = x.max_keepdim(D::Minus1)?;
        let e = x.broadcast_sub(&max)?.exp()?;
        let s = e.sum_keepdim(D::Minus1)?;
        return Ok(e.broadcast_div(&s)?.to_dtype(dtype)?);
    }
    let dims = x.dims().to_vec();
    let d = *dims.last().expect("at least one dimension");
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    v.par_chunks_mut(d).for_each(|row| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for r in row.iter_mut() {
            *r = (*r - max).exp();
            sum += *r;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|r| *r *= inv);
    });
    Ok(Tensor::from_vec(v, dims, x.device())?)
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    /// Query, key and value in one product.
    qkv: Linear,
    out: Linear,
    scale1: Option<Tensor>,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    scale2: Option<Tensor>,
}

/// A DINOv2 or CLIP image tower.
#[derive(Debug)]
pub struct Vit {
    cfg: VitConfig,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    cls: Tensor,
    /// `[1 + grid², hidden]`.
    pos: Tensor,
    pre_norm: Option<LayerNorm>,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    /// CLIP: `[hidden, projection]`.
    proj: Option<Tensor>,
    /// The last interpolated position table and its grid (interpolation runs once per size).
    interpolated: std::sync::Mutex<Option<((usize, usize), Tensor)>>,
    /// Fused CPU kernels for LayerNorm and softmax.
    fused: bool,
    /// The forward pass's dtype.
    dtype: DType,
}

struct Loader<'a> {
    w: &'a WeightMap,
    name: &'a str,
    dev: &'a Device,
    dtype: DType,
    fused: bool,
}

impl Loader<'_> {
    /// A weight in the forward dtype.
    fn get(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.get_f32(key, shape)?.to_dtype(self.dtype)?)
    }
    /// A weight in f32 (LayerNorm parameters, the position table).
    fn get_f32(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        self.w.get(key, shape, self.name, self.dev)
    }
    fn linear(&self, key: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        Ok(Linear {
            wt: self
                .get(&format!("{key}.weight"), &[out, inp])?
                .t()?
                .contiguous()?,
            b: if bias {
                Some(self.get(&format!("{key}.bias"), &[out])?)
            } else {
                None
            },
        })
    }
    fn norm(&self, key: &str, d: usize, eps: f64) -> Result<LayerNorm> {
        let w = self.get_f32(&format!("{key}.weight"), &[d])?;
        let b = self.get_f32(&format!("{key}.bias"), &[d])?;
        Ok(LayerNorm {
            wv: w.to_device(&Device::Cpu)?.to_vec1()?,
            bv: b.to_device(&Device::Cpu)?.to_vec1()?,
            w,
            b,
            eps,
            fused: self.fused,
        })
    }

    /// Query, key and value projections as one `[in, 3·out]` product.
    fn qkv(&self, keys: [&str; 3], h: usize) -> Result<Linear> {
        let parts = keys
            .iter()
            .map(|k| self.linear(k, h, h, true))
            .collect::<Result<Vec<_>>>()?;
        let wt: Vec<&Tensor> = parts.iter().map(|l| &l.wt).collect();
        let b: Vec<&Tensor> = parts.iter().map(|l| l.b.as_ref().expect("bias")).collect();
        Ok(Linear {
            wt: Tensor::cat(&wt, 1)?.contiguous()?,
            b: Some(Tensor::cat(&b, 0)?),
        })
    }
}

impl Vit {
    /// Builds the tower from hub-named weights (`embeddings.*`, `encoder.layer.N.*`,
    /// `layernorm.*` for DINOv2; `vision_model.*` and `visual_projection.weight` for CLIP; any
    /// other tensor, a CLIP text tower say, is ignored).
    /// `engine` picks the fused CPU kernels ([`Engine::Auto`] on the CPU) or candle's
    /// operations; `dtype` is the forward pass's (LayerNorm and softmax compute in f32).
    pub fn load(
        cfg: VitConfig,
        weights: &WeightMap,
        name: &str,
        device: &Device,
        engine: Engine,
        dtype: DType,
    ) -> Result<Self> {
        let fused = device.is_cpu() && engine == Engine::Auto;
        let l = Loader {
            w: weights,
            name,
            dev: device,
            dtype,
            fused,
        };
        let (h, p, i) = (cfg.hidden, cfg.patch, cfg.intermediate);
        let grid = cfg.image_size / cfg.patch;
        let eps = cfg.eps;
        Ok(match cfg.family {
            TransformerFamily::DinoV2 => {
                let blocks = (0..cfg.layers)
                    .map(|k| {
                        let pre = format!("encoder.layer.{k}");
                        Ok(Block {
                            norm1: l.norm(&format!("{pre}.norm1"), h, eps)?,
                            qkv: l.qkv(
                                [
                                    &format!("{pre}.attention.attention.query"),
                                    &format!("{pre}.attention.attention.key"),
                                    &format!("{pre}.attention.attention.value"),
                                ],
                                h,
                            )?,
                            out: l.linear(&format!("{pre}.attention.output.dense"), h, h, true)?,
                            scale1: Some(l.get(&format!("{pre}.layer_scale1.lambda1"), &[h])?),
                            norm2: l.norm(&format!("{pre}.norm2"), h, eps)?,
                            fc1: l.linear(&format!("{pre}.mlp.fc1"), i, h, true)?,
                            fc2: l.linear(&format!("{pre}.mlp.fc2"), h, i, true)?,
                            scale2: Some(l.get(&format!("{pre}.layer_scale2.lambda1"), &[h])?),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Vit {
                    patch_w: l.get(
                        "embeddings.patch_embeddings.projection.weight",
                        &[h, 3, p, p],
                    )?,
                    patch_b: Some(l.get("embeddings.patch_embeddings.projection.bias", &[h])?),
                    cls: l.get("embeddings.cls_token", &[1, 1, h])?.reshape(h)?,
                    pos: l
                        .get_f32("embeddings.position_embeddings", &[1, 1 + grid * grid, h])?
                        .reshape((1 + grid * grid, h))?,
                    pre_norm: None,
                    blocks,
                    final_norm: l.norm("layernorm", h, eps)?,
                    proj: None,
                    interpolated: Default::default(),
                    fused,
                    dtype,
                    cfg,
                }
            }
            TransformerFamily::Clip => {
                let blocks = (0..cfg.layers)
                    .map(|k| {
                        let pre = format!("vision_model.encoder.layers.{k}");
                        Ok(Block {
                            norm1: l.norm(&format!("{pre}.layer_norm1"), h, eps)?,
                            qkv: l.qkv(
                                [
                                    &format!("{pre}.self_attn.q_proj"),
                                    &format!("{pre}.self_attn.k_proj"),
                                    &format!("{pre}.self_attn.v_proj"),
                                ],
                                h,
                            )?,
                            out: l.linear(&format!("{pre}.self_attn.out_proj"), h, h, true)?,
                            scale1: None,
                            norm2: l.norm(&format!("{pre}.layer_norm2"), h, eps)?,
                            fc1: l.linear(&format!("{pre}.mlp.fc1"), i, h, true)?,
                            fc2: l.linear(&format!("{pre}.mlp.fc2"), h, i, true)?,
                            scale2: None,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Vit {
                    patch_w: l.get(
                        "vision_model.embeddings.patch_embedding.weight",
                        &[h, 3, p, p],
                    )?,
                    patch_b: None,
                    cls: l.get("vision_model.embeddings.class_embedding", &[h])?,
                    pos: l.get_f32(
                        "vision_model.embeddings.position_embedding.weight",
                        &[1 + grid * grid, h],
                    )?,
                    pre_norm: Some(l.norm("vision_model.pre_layrnorm", h, eps)?),
                    blocks,
                    final_norm: l.norm("vision_model.post_layernorm", h, eps)?,
                    proj: Some(
                        l.get("visual_projection.weight", &[cfg.projection, h])?
                            .t()?
                            .contiguous()?,
                    ),
                    interpolated: Default::default(),
                    fused,
                    dtype,
                    cfg,
                }
            }
        })
    }

    /// The sizes.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Position embeddings for a `gh × gw` patch grid: the trained table when it matches, else
    /// (DINOv2) the patch part bicubic-interpolated as `transformers` does.
    fn positions(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let grid = self.cfg.image_size / self.cfg.patch;
        if gh == grid && gw == grid {
            return Ok(self.pos.clone());
        }
        if self.cfg.family == TransformerFamily::Clip {
            return Err(Error::Input(format!(
                "CLIP's position table is for a {grid}×{grid} patch grid ({} px); the input gives {gh}×{gw}",
                self.cfg.image_size
            )));
        }
        let mut cached = self.interpolated.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, t)) = cached.as_ref() {
            if *g == (gh, gw) {
                return Ok(t.clone());
            }
        }
        let h = self.cfg.hidden;
        let table: Vec<f32> = self.pos.i(1..)?.flatten_all()?.to_vec1()?;
        let out = bicubic_grid(&table, grid, grid, h, gh, gw);
        let patches = Tensor::from_vec(out, (gh * gw, h), self.pos.device())?;
        let t = Tensor::cat(&[&self.pos.i(0..1)?, &patches], 0)?;
        *cached = Some(((gh, gw), t.clone()));
        Ok(t)
    }

    /// Features `[N, 3, H, W] → [N, feature_dim]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let x = &x.to_dtype(self.dtype)?;
        let (n, _, hgt, wid) = x.dims4()?;
        let p = self.cfg.patch;
        let (gh, gw) = (hgt / p, wid / p);
        let h = self.cfg.hidden;
        // Patch embedding: a stride-p convolution.
        let mut e = x.conv2d(&self.patch_w, 0, p, 1, 1)?;
        if let Some(b) = &self.patch_b {
            e = e.broadcast_add(&b.reshape((1, h, 1, 1))?)?;
        }
        let e = e.flatten_from(2)?.transpose(1, 2)?; // [N, P, h]
        let cls = self.cls.reshape((1, 1, h))?.broadcast_as((n, 1, h))?;
        let tokens = Tensor::cat(&[&cls, &e], 1)?;
        let pos = self.positions(gh, gw)?.to_dtype(self.dtype)?;
        let mut t = tokens.broadcast_add(&pos.unsqueeze(0)?)?;
        if let Some(norm) = &self.pre_norm {
            t = norm.forward(&t)?;
        }
        for b in &self.blocks {
            t = self.block(b, &t)?;
        }
        match self.cfg.family {
            TransformerFamily::DinoV2 => {
                let t = self.final_norm.forward(&t)?;
                let cls = t.i((.., 0))?;
                let patches = t.i((.., 1..))?.to_dtype(DType::F32)?.mean(1)?;
                Ok(Tensor::cat(&[&cls.to_dtype(DType::F32)?, &patches], 1)?)
            }
            TransformerFamily::Clip => {
                let cls = t.i((.., 0..1))?;
                let pooled = self.final_norm.forward(&cls)?.squeeze(1)?;
                let proj = self.proj.as_ref().expect("CLIP has a projection");
                Ok(pooled.matmul(proj)?.to_dtype(DType::F32)?)
            }
        }
    }

    fn block(&self, b: &Block, x: &Tensor) -> Result<Tensor> {
        let (n, t, h) = x.dims3()?;
        let heads = self.cfg.heads;
        let hd = h / heads;
        let y = b.norm1.forward(x)?;
        // [n, t, 3h] → [3, n, heads, t, hd]: query, key and value, each head contiguous.
        let qkv = b
            .qkv
            .forward(&y)?
            .reshape((n, t, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.i(0)?, qkv.i(1)?, qkv.i(2)?);
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let probs = softmax_last(&scores, self.fused)?;
        let a = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((n, t, h))?;
        let mut a = b.out.forward(&a)?;
        if let Some(s) = &b.scale1 {
            a = a.broadcast_mul(s)?;
        }
        let x = (x + a)?;
        let y = b.fc1.forward(&b.norm2.forward(&x)?)?;
        let y = match self.cfg.act {
            Activation::Gelu => y.gelu_erf()?,
            Activation::QuickGelu => (&y * ((&y * -1.702)?.exp()? + 1.0)?.recip()?)?,
        };
        let mut y = b.fc2.forward(&y)?;
        if let Some(s) = &b.scale2 {
            y = y.broadcast_mul(s)?;
        }
        Ok((x + y)?)
    }
}

/// PyTorch's cubic convolution weights (A = −0.75) for offset `t` in [0, 1).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// `torch.nn.functional.interpolate(mode="bicubic", align_corners=False, antialias=False)` of a
/// row-major `[ih, iw, c]` grid to `[oh, ow, c]`, as for an explicit output size (scale = in/out,
/// border taps clamped). Computed in f64, returned as f32.
pub fn bicubic_grid(src: &[f32], ih: usize, iw: usize, c: usize, oh: usize, ow: usize) -> Vec<f32> {
    let taps = |inp: usize, out: usize, o: usize| -> ([usize; 4], [f64; 4]) {
        let scale = inp as f64 / out as f64;
        let x = (o as f64 + 0.5) * scale - 0.5;
        let x0 = x.floor();
        let w = cubic_weights(x - x0);
        let idx =
            std::array::from_fn(|k| (x0 as i64 - 1 + k as i64).clamp(0, inp as i64 - 1) as usize);
        (idx, w)
    };
    let mut out = vec![0f32; oh * ow * c];
    let mut row = vec![0f64; c];
    for oy in 0..oh {
        let (ys, wy) = taps(ih, oh, oy);
        for ox in 0..ow {
            let (xs, wx) = taps(iw, ow, ox);
            row.iter_mut().for_each(|v| *v = 0.0);
            for (a, &y) in ys.iter().enumerate() {
                for (b, &x) in xs.iter().enumerate() {
                    let w = wy[a] * wx[b];
                    let s = &src[(y * iw + x) * c..(y * iw + x + 1) * c];
                    for (r, &v) in row.iter_mut().zip(s) {
                        *r += w * v as f64;
                    }
                }
            }
            let o = &mut out[(oy * ow + ox) * c..(oy * ow + ox + 1) * c];
            for (d, &r) in o.iter_mut().zip(&row) {
                *d = r as f32;
            }
        }
    }
    out
}

/// The hub's tensor names and shapes for a tower of sizes `c` (a CLIP checkpoint's
/// `logit_scale` and a text-side tensor included, as a full CLIP checkpoint has them): what a
/// loader must accept, and what benchmarks fill with random values.
pub fn hub_tensor_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, p) = (c.hidden, c.intermediate, c.patch);
    let g = c.image_size / c.patch;
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let lin = |v: &mut Vec<(String, Vec<usize>)>, k: &str, o: usize, n: usize| {
        v.push((format!("{k}.weight"), vec![o, n]));
        v.push((format!("{k}.bias"), vec![o]));
    };
    let norm = |v: &mut Vec<(String, Vec<usize>)>, k: &str| {
        v.push((format!("{k}.weight"), vec![h]));
        v.push((format!("{k}.bias"), vec![h]));
    };
    match c.family {
        TransformerFamily::DinoV2 => {
            v.push(("embeddings.cls_token".into(), vec![1, 1, h]));
            v.push(("embeddings.mask_token".into(), vec![1, h]));
            v.push((
                "embeddings.patch_embeddings.projection.weight".into(),
                vec![h, 3, p, p],
            ));
            v.push((
                "embeddings.patch_embeddings.projection.bias".into(),
                vec![h],
            ));
            v.push((
                "embeddings.position_embeddings".into(),
                vec![1, 1 + g * g, h],
            ));
            for l in 0..c.layers {
                let pre = format!("encoder.layer.{l}");
                norm(&mut v, &format!("{pre}.norm1"));
                norm(&mut v, &format!("{pre}.norm2"));
                for n in ["query", "key", "value"] {
                    lin(&mut v, &format!("{pre}.attention.attention.{n}"), h, h);
                }
                lin(&mut v, &format!("{pre}.attention.output.dense"), h, h);
                lin(&mut v, &format!("{pre}.mlp.fc1"), i, h);
                lin(&mut v, &format!("{pre}.mlp.fc2"), h, i);
                v.push((format!("{pre}.layer_scale1.lambda1"), vec![h]));
                v.push((format!("{pre}.layer_scale2.lambda1"), vec![h]));
            }
            norm(&mut v, "layernorm");
        }
        TransformerFamily::Clip => {
            v.push(("vision_model.embeddings.class_embedding".into(), vec![h]));
            v.push((
                "vision_model.embeddings.patch_embedding.weight".into(),
                vec![h, 3, p, p],
            ));
            v.push((
                "vision_model.embeddings.position_embedding.weight".into(),
                vec![1 + g * g, h],
            ));
            norm(&mut v, "vision_model.pre_layrnorm");
            for l in 0..c.layers {
                let pre = format!("vision_model.encoder.layers.{l}");
                norm(&mut v, &format!("{pre}.layer_norm1"));
                norm(&mut v, &format!("{pre}.layer_norm2"));
                for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    lin(&mut v, &format!("{pre}.self_attn.{n}"), h, h);
                }
                lin(&mut v, &format!("{pre}.mlp.fc1"), i, h);
                lin(&mut v, &format!("{pre}.mlp.fc2"), h, i);
            }
            norm(&mut v, "vision_model.post_layernorm");
            v.push(("visual_projection.weight".into(), vec![c.projection, h]));
            v.push(("logit_scale".into(), vec![]));
            v.push(("text_projection.weight".into(), vec![c.projection, 16]));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_keeps_a_constant_and_a_same_size_grid() {
        let src = vec![2.5f32; 5 * 5 * 3];
        let out = bicubic_grid(&src, 5, 5, 3, 3, 4);
        assert!(out.iter().all(|&v| (v - 2.5).abs() < 1e-6));
        let src: Vec<f32> = (0..4 * 4).map(|v| v as f32).collect();
        assert_eq!(bicubic_grid(&src, 4, 4, 1, 4, 4), src);
    }

    #[test]
    fn hub_configs_parse_to_the_builtin_sizes() {
        let dino: Value = serde_json::from_str(
            r#"{"model_type":"dinov2","hidden_size":384,"num_hidden_layers":12,"num_attention_heads":6,
                "mlp_ratio":4,"patch_size":14,"image_size":518,"layer_norm_eps":1e-6,"hidden_act":"gelu"}"#,
        )
        .unwrap();
        assert_eq!(
            VitConfig::from_hf_json(TransformerFamily::DinoV2, &dino).unwrap(),
            VitConfig::builtin(Architecture::DinoV2Small).unwrap()
        );
        let clip: Value = serde_json::from_str(
            r#"{"model_type":"clip","projection_dim":512,"vision_config":{"hidden_size":768,"intermediate_size":3072,
                "num_hidden_layers":12,"num_attention_heads":12,"patch_size":32,"image_size":224,"hidden_act":"quick_gelu","layer_norm_eps":1e-5}}"#,
        )
        .unwrap();
        assert_eq!(
            VitConfig::from_hf_json(TransformerFamily::Clip, &clip).unwrap(),
            VitConfig::builtin(Architecture::ClipVitB32).unwrap()
        );
        let bad: Value = serde_json::from_str(r#"{"model_type":"bert","hidden_size":8}"#).unwrap();
        assert!(VitConfig::from_hf_json(TransformerFamily::DinoV2, &bad).is_err());
    }
}
