//! The networks: torchvision-exact forward passes with batch-norm folded into the convolutions.

pub(crate) mod cpu;
pub mod lite0;
pub mod ops;
pub mod resnet;
pub mod vit;

use candle_core::{Device, Tensor};

use crate::weights::WeightMap;
use crate::{Architecture, BackboneConfig, Error, Result};

/// Which implementation runs the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The CPU engine on the CPU (channels-last, batched gemm, Winograd), candle's operations
    /// elsewhere.
    #[default]
    Auto,
    /// candle's generic operations everywhere: slower on the CPU; the reference the engine is
    /// tested against.
    Candle,
}

#[derive(Debug)]
enum Net {
    ResNet(resnet::ResNet),
    Lite0(lite0::EfficientNetLite0),
    Vit(vit::Vit),
}

/// A frozen, pretrained feature extractor.
#[derive(Debug)]
pub struct Backbone {
    arch: Architecture,
    config: BackboneConfig,
    net: Net,
    device: Device,
}

impl Backbone {
    /// Builds `arch` from `weights`. With `with_classifier`, the ImageNet classifier is loaded too
    /// (and must be present); otherwise classifier tensors are ignored.
    pub fn load(
        arch: Architecture,
        weights: &WeightMap,
        with_classifier: bool,
        device: &Device,
    ) -> Result<Self> {
        Self::load_with_engine(arch, weights, with_classifier, device, Engine::Auto)
    }

    /// [`Backbone::load`] with a choice of implementation.
    pub fn load_with_engine(
        arch: Architecture,
        weights: &WeightMap,
        with_classifier: bool,
        device: &Device,
        engine: Engine,
    ) -> Result<Self> {
        let name = arch.name();
        let mut config = arch.config();
        let net = match arch {
            Architecture::DinoV2Small
            | Architecture::DinoV2Base
            | Architecture::DinoV2Large
            | Architecture::ClipVitB32
            | Architecture::ClipVitB16
            | Architecture::ClipVitL14 => {
                let family = arch.transformer().expect("a transformer");
                if with_classifier {
                    return Err(Error::Input(format!(
                        "{name} has no ImageNet classifier (it is a feature extractor)"
                    )));
                }
                // A config.json beside the weights sizes the model; else the hub model's sizes.
                let sizes = match weights.model_config()? {
                    Some(json) => {
                        vit::VitConfig::from_hf_json(family, &json).map_err(|reason| {
                            Error::BadWeightsFile {
                                path: weights
                                    .config_path
                                    .clone()
                                    .unwrap_or_else(|| weights.source_desc.clone().into()),
                                reason: format!("as a {name} config.json: {reason}"),
                            }
                        })?
                    }
                    None => vit::VitConfig::builtin(arch).expect("a transformer"),
                };
                config.feature_dim = sizes.feature_dim();
                // CLIP checkpoints are trained (and preprocessed) at their config's resolution
                // (336 for the `-336` variants); DINOv2 interpolates its grid to any input.
                if family == headstart_core::config::TransformerFamily::Clip {
                    config.preprocess.input_size = sizes.image_size as u32;
                    config.preprocess.resize_size = sizes.image_size as u32;
                }
                config.sizes = Some(sizes.describe());
                Net::Vit(vit::Vit::load(sizes, weights, name, device)?)
            }
            Architecture::ResNet18 => Net::ResNet(resnet::ResNet::load(
                resnet::ResNetSpec::R18,
                weights,
                name,
                with_classifier,
                device,
                engine,
            )?),
            Architecture::ResNet34 => Net::ResNet(resnet::ResNet::load(
                resnet::ResNetSpec::R34,
                weights,
                name,
                with_classifier,
                device,
                engine,
            )?),
            Architecture::ResNet50 => Net::ResNet(resnet::ResNet::load(
                resnet::ResNetSpec::R50,
                weights,
                name,
                with_classifier,
                device,
                engine,
            )?),
            Architecture::EfficientNetLite0 => Net::Lite0(lite0::EfficientNetLite0::load(
                weights,
                name,
                with_classifier,
                device,
                engine,
            )?),
        };
        Ok(Self {
            arch,
            config,
            net,
            device: device.clone(),
        })
    }

    /// The architecture.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The configuration (preprocessing, feature width, …).
    pub fn config(&self) -> &BackboneConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Global-average-pooled features `[N, 3, H, W] → [N, D]`, before the classifier.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let images = images.to_device(&self.device)?;
        match &self.net {
            Net::ResNet(n) => n.features(&images),
            Net::Lite0(n) => n.features(&images),
            Net::Vit(n) => n.features(&images),
        }
    }

    /// ImageNet logits `[N, 1000]` from pooled features; `None` if built without the classifier.
    pub fn logits_from_features(&self, features: &Tensor) -> Result<Option<Tensor>> {
        match &self.net {
            Net::ResNet(n) => n.classify(features),
            Net::Lite0(n) => n.classify(features),
            Net::Vit(_) => Ok(None),
        }
    }

    /// Features and logits in one pass.
    pub fn forward(&self, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let f = self.features(images)?;
        let l = self.logits_from_features(&f)?;
        Ok((f, l))
    }
}
