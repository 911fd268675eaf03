//! The model zoo: one [`BackboneConfig`] per architecture, like timm's `pretrained_cfg`.

use serde::{Deserialize, Serialize};

/// A backbone name that is not in the zoo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backbone `{0}`; available: resnet18, resnet34, resnet50, efficientnet-lite0, dinov2-small, dinov2-base, dinov2-large, clip-vit-b32, clip-vit-b16, clip-vit-l14")]
pub struct UnknownBackbone(pub String);

/// Resampling filter used by Resize, as in PIL / torchvision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Triangle filter (PIL `BILINEAR`), antialiased when downscaling.
    Bilinear,
    /// Cubic filter with a = -0.5 (PIL `BICUBIC`), antialiased when downscaling.
    Bicubic,
}

impl Interpolation {
    /// The name used in configs and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }
}

/// RandomResizedCrop + horizontal flip settings of the augmented views — the one type for them,
/// used by extraction and recorded in the cache manifest. Defaults are torchvision's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    /// Range of the crop's area as a fraction of the image.
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: [f64; 2],
    /// Probability of a horizontal flip.
    pub hflip_p: f64,
    /// Resize filter of the crop (torchvision's RandomResizedCrop default: bilinear).
    pub interpolation: Interpolation,
}

impl Default for AugmentParams {
    /// torchvision's: scale (0.08, 1), ratio (3/4, 4/3), flip p = 0.5, bilinear.
    fn default() -> Self {
        Self {
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip_p: 0.5,
            interpolation: Interpolation::Bilinear,
        }
    }
}

/// Which augmentation setting is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AugmentError {
    /// The crop-area range.
    #[error("scale range {0:?} must satisfy 0 < lo ≤ hi ≤ 1")]
    Scale([f64; 2]),
    /// The aspect-ratio range.
    #[error("ratio range {0:?} must satisfy 0 < lo ≤ hi")]
    Ratio([f64; 2]),
    /// The flip probability.
    #[error("flip probability {0} must be in [0, 1]")]
    Flip(f64),
}

impl AugmentParams {
    /// Checks the ranges; the error says which one is wrong.
    pub fn check(&self) -> Result<(), AugmentError> {
        let [lo, hi] = self.scale;
        if !(0.0 < lo && lo <= hi && hi <= 1.0) {
            return Err(AugmentError::Scale(self.scale));
        }
        let [lo, hi] = self.ratio;
        if !(0.0 < lo && lo <= hi && hi.is_finite()) {
            return Err(AugmentError::Ratio(self.ratio));
        }
        if !(0.0..=1.0).contains(&self.hflip_p) {
            return Err(AugmentError::Flip(self.hflip_p));
        }
        Ok(())
    }
}

/// The eval transform of a backbone: Resize(shorter side) → CenterCrop → ToTensor → Normalize.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Side of the square network input (CenterCrop and RandomResizedCrop size).
    pub input_size: u32,
    /// Shorter side after Resize, before CenterCrop.
    pub resize_size: u32,
    /// Resize filter.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub std: [f32; 3],
}

/// The precision of a backbone's forward pass. f32 is the default and the parity target
/// (features within 1e-4 of PyTorch's); f16 and bf16 run on a GPU, with f32 accumulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats (no TF32).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// Every precision, in `--dtype` order.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Whether this is the default, f32.
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which side of a dataset-defined split an image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// From a `train/` folder.
    Train,
    /// From a `val/` folder (or a `test/` folder when there is no `val/`).
    Val,
    /// From a `test/` folder beside `train/` and `val/`: kept out of training and validation,
    /// scored by `eval --split test`.
    Test,
}

/// The architectures in the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Architecture {
    /// torchvision ResNet-18.
    #[serde(rename = "resnet18")]
    ResNet18,
    /// torchvision ResNet-34.
    #[serde(rename = "resnet34")]
    ResNet34,
    /// torchvision ResNet-50 (v1.5: stride on the 3×3 convolution).
    #[serde(rename = "resnet50")]
    ResNet50,
    /// EfficientNet-Lite0 in `efficientnet_pytorch` naming.
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0,
    /// DINOv2 ViT-S/14 (`facebook/dinov2-small`).
    #[serde(rename = "dinov2-small")]
    DinoV2Small,
    /// DINOv2 ViT-B/14 (`facebook/dinov2-base`).
    #[serde(rename = "dinov2-base")]
    DinoV2Base,
    /// DINOv2 ViT-L/14 (`facebook/dinov2-large`).
    #[serde(rename = "dinov2-large")]
    DinoV2Large,
    /// CLIP ViT-B/32 image tower (`openai/clip-vit-base-patch32`).
    #[serde(rename = "clip-vit-b32")]
    ClipVitB32,
    /// CLIP ViT-B/16 image tower (`openai/clip-vit-base-patch16`).
    #[serde(rename = "clip-vit-b16")]
    ClipVitB16,
    /// CLIP ViT-L/14 image tower (`openai/clip-vit-large-patch14`).
    #[serde(rename = "clip-vit-l14")]
    ClipVitL14,
}

/// The family of a transformer backbone (its sizes come from `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransformerFamily {
    /// DINOv2 (`Dinov2Model`): features = concat(CLS, mean of patch tokens) after the final
    /// LayerNorm.
    DinoV2,
    /// CLIP's vision tower with its projection (`CLIPVisionModelWithProjection`): features =
    /// `image_embeds`.
    Clip,
}

impl Architecture {
    /// Every architecture, default first.
    pub const ALL: [Architecture; 10] = [
        Architecture::ResNet18,
        Architecture::ResNet34,
        Architecture::ResNet50,
        Architecture::EfficientNetLite0,
        Architecture::DinoV2Small,
        Architecture::DinoV2Base,
        Architecture::DinoV2Large,
        Architecture::ClipVitB32,
        Architecture::ClipVitB16,
        Architecture::ClipVitL14,
    ];

    /// The transformer family, or `None` for the CNNs.
    pub fn transformer(self) -> Option<TransformerFamily> {
        match self {
            Architecture::DinoV2Small | Architecture::DinoV2Base | Architecture::DinoV2Large => {
                Some(TransformerFamily::DinoV2)
            }
            Architecture::ClipVitB32 | Architecture::ClipVitB16 | Architecture::ClipVitL14 => {
                Some(TransformerFamily::Clip)
            }
            _ => None,
        }
    }

    /// Whether the pretrained weights carry an ImageNet classifier (`classify` needs one).
    pub fn has_imagenet_head(self) -> bool {
        self.transformer().is_none()
    }

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::ResNet18 => "resnet18",
            Architecture::ResNet34 => "resnet34",
            Architecture::ResNet50 => "resnet50",
            Architecture::EfficientNetLite0 => "efficientnet-lite0",
            Architecture::DinoV2Small => "dinov2-small",
            Architecture::DinoV2Base => "dinov2-base",
            Architecture::DinoV2Large => "dinov2-large",
            Architecture::ClipVitB32 => "clip-vit-b32",
            Architecture::ClipVitB16 => "clip-vit-b16",
            Architecture::ClipVitL14 => "clip-vit-l14",
        }
    }

    /// Parses a command-line name (case-insensitive; `_` and `-` are interchangeable).
    pub fn from_name(name: &str) -> Result<Self, UnknownBackbone> {
        let norm = name.trim().to_ascii_lowercase().replace('_', "-");
        Architecture::ALL
            .into_iter()
            .find(|a| a.name() == norm)
            .ok_or_else(|| UnknownBackbone(name.to_string()))
    }

    /// This architecture's configuration.
    pub fn config(self) -> BackboneConfig {
        const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
        const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
        let resnet = |name: &str, dim: usize, file: &str| BackboneConfig {
            name: name.to_string(),
            sizes: None,
            precision: Precision::F32,
            preprocess: PreprocessConfig {
                input_size: 224,
                resize_size: 256,
                interpolation: Interpolation::Bilinear,
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
            feature_dim: dim,
            num_classes: 1000,
            hub_repo: Some(format!("timm/{name}.tv_in1k")),
            hub_file: Some("model.safetensors".to_string()),
            torch_hub_file: Some(file.to_string()),
        };
        match self {
            Architecture::ResNet18 => resnet("resnet18", 512, "resnet18-f37072fd.pth"),
            Architecture::ResNet34 => resnet("resnet34", 512, "resnet34-b627a593.pth"),
            Architecture::ResNet50 => resnet("resnet50", 2048, "resnet50-0676ba61.pth"),
            Architecture::EfficientNetLite0 => BackboneConfig {
                name: "efficientnet-lite0".to_string(),
                sizes: None,
                precision: Precision::F32,
                preprocess: PreprocessConfig {
                    input_size: 224,
                    resize_size: 256,
                    interpolation: Interpolation::Bicubic,
                    mean: [0.5, 0.5, 0.5],
                    std: [0.5, 0.5, 0.5],
                },
                feature_dim: 1280,
                num_classes: 1000,
                hub_repo: None,
                hub_file: None,
                torch_hub_file: Some("efficientnet-lite0-57934424.pth".to_string()),
            },
            Architecture::DinoV2Small => transformer(self, "facebook/dinov2-small", 2 * 384),
            Architecture::DinoV2Base => transformer(self, "facebook/dinov2-base", 2 * 768),
            Architecture::DinoV2Large => transformer(self, "facebook/dinov2-large", 2 * 1024),
            Architecture::ClipVitB32 => transformer(self, "openai/clip-vit-base-patch32", 512),
            Architecture::ClipVitB16 => transformer(self, "openai/clip-vit-base-patch16", 512),
            Architecture::ClipVitL14 => transformer(self, "openai/clip-vit-large-patch14", 768),
        }
    }
}

/// CLIP's normalisation (`CLIPImageProcessor`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalisation (`CLIPImageProcessor`).
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The zoo entry of a transformer backbone: its hub repository, its preprocessing (DINOv2:
/// Resize 256 bicubic + CenterCrop 224, ImageNet mean/std; CLIP: Resize 224 bicubic + CenterCrop
/// 224, CLIP mean/std) and the feature width of the hub's sizes (a `config.json` beside the
/// weights may change it).
fn transformer(a: Architecture, repo: &str, feature_dim: usize) -> BackboneConfig {
    let clip = a.transformer() == Some(TransformerFamily::Clip);
    BackboneConfig {
        name: a.name().to_string(),
        sizes: None,
        precision: Precision::F32,
        preprocess: PreprocessConfig {
            input_size: 224,
            resize_size: if clip { 224 } else { 256 },
            interpolation: Interpolation::Bicubic,
            mean: if clip {
                CLIP_MEAN
            } else {
                [0.485, 0.456, 0.406]
            },
            std: if clip {
                CLIP_STD
            } else {
                [0.229, 0.224, 0.225]
            },
        },
        feature_dim,
        num_classes: 0,
        hub_repo: Some(repo.to_string()),
        hub_file: Some("model.safetensors".to_string()),
        torch_hub_file: None,
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Architecture {
    type Err = UnknownBackbone;
    fn from_str(s: &str) -> Result<Self, UnknownBackbone> {
        Architecture::from_name(s)
    }
}

/// Everything about a backbone that downstream crates record and check: like timm's `pretrained_cfg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneConfig {
    /// Architecture name (`resnet18`, …).
    pub name: String,
    /// For transformers: the sizes the model was built with (from `config.json`), so that a
    /// cache or head made with other sizes is told apart. Absent for the CNNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizes: Option<String>,
    /// The forward pass's precision when it is not f32 (`--dtype f16|bf16` on a GPU): features
    /// of another precision are never mixed into a cache or fed to a head unannounced.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Eval preprocessing.
    pub preprocess: PreprocessConfig,
    /// Width of the pooled feature vector.
    pub feature_dim: usize,
    /// Classes of the pretrained classifier (ImageNet-1k).
    pub num_classes: usize,
    /// Default Hugging Face repository holding the weights, if any.
    pub hub_repo: Option<String>,
    /// File inside `hub_repo`.
    pub hub_file: Option<String>,
    /// File name in the torch hub cache (`$TORCH_HOME/hub/checkpoints/`).
    pub torch_hub_file: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_dims_match_the_zoo() {
        for a in Architecture::ALL {
            assert_eq!(Architecture::from_name(a.name()).unwrap(), a);
        }
        assert_eq!(
            Architecture::from_name("EfficientNet_Lite0").unwrap(),
            Architecture::EfficientNetLite0
        );
        let dims: Vec<usize> = Architecture::ALL
            .iter()
            .map(|a| a.config().feature_dim)
            .collect();
        assert_eq!(
            dims,
            vec![512, 512, 2048, 1280, 768, 1536, 2048, 512, 512, 768]
        );
        let err = Architecture::from_name("vgg16").unwrap_err().to_string();
        assert!(err.contains("vgg16") && err.contains("resnet18"), "{err}");
    }
}
