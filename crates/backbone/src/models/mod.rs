//! The networks: torchvision-exact forward passes with batch-norm folded into the convolutions.
//!
//! Each convolutional network is described once ([`plan::CnnPlan`], built by [`resnet::plan`] and
//! [`lite0::plan`] in the candle-free vocabulary of [`layers`]); two executors run it: the CPU
//! engine (`cpu`, channels-last kernels) and the candle executor (`candle_net`, any device and
//! precision — the CUDA path, and the CPU reference). The vision transformers ([`vit`]) are
//! candle operations with fused CPU kernels for LayerNorm and softmax.

mod candle_net;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
mod cuda_kernels;
pub mod layers;
pub mod lite0;
pub mod plan;
pub mod resnet;
pub mod vit;

use candle_core::{Device, Tensor};
use headstart_core::config::Precision;

use crate::weights::WeightMap;
use crate::{Architecture, BackboneConfig, Error, Result};

/// Which implementation runs the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// On the CPU, headstart's own kernels (the CPU engine for the CNNs: channels-last,
    /// batched gemm, Winograd; fused LayerNorm and softmax for the ViTs); on a GPU, candle's
    /// operations and headstart's CUDA kernels.
    #[default]
    Auto,
    /// candle's generic operations everywhere: slower on the CPU; the reference the engine is
    /// tested against.
    Candle,
}

/// How to build a [`Backbone`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackboneOptions {
    /// Load the ImageNet classifier too (it must be present).
    pub with_classifier: bool,
    /// Which implementation runs the layers.
    pub engine: Engine,
    /// Precision of the forward pass (f16/bf16 on a GPU only).
    pub precision: Precision,
}

#[derive(Debug)]
enum Net {
    Cpu(cpu::net::CpuNet, Option<layers::Dense>),
    Candle(candle_net::CandleNet),
    Vit(Box<vit::Vit>),
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
        Self::load_with(
            arch,
            weights,
            device,
            &BackboneOptions {
                with_classifier,
                engine,
                precision: Precision::F32,
            },
        )
    }

    /// Builds `arch` from `weights` on `device` as `options` say.
    pub fn load_with(
        arch: Architecture,
        weights: &WeightMap,
        device: &Device,
        options: &BackboneOptions,
    ) -> Result<Self> {
        let name = arch.name();
        candle_net::check_precision(options.precision, device)?;
        let mut config = arch.config();
        config.precision = options.precision;
        let with_classifier = options.with_classifier;
        let plan = match arch {
            Architecture::ResNet18 => Some(resnet::plan(
                resnet::ResNetSpec::R18,
                weights,
                name,
                with_classifier,
            )?),
            Architecture::ResNet34 => Some(resnet::plan(
                resnet::ResNetSpec::R34,
                weights,
                name,
                with_classifier,
            )?),
            Architecture::ResNet50 => Some(resnet::plan(
                resnet::ResNetSpec::R50,
                weights,
                name,
                with_classifier,
            )?),
            Architecture::EfficientNetLite0 => Some(lite0::plan(weights, name, with_classifier)?),
            _ => None,
        };
        let net = match plan {
            Some(plan) if device.is_cpu() && options.engine == Engine::Auto => {
                let classifier = plan.classifier.clone();
                Net::Cpu(cpu::net::CpuNet::lower(&plan)?, classifier)
            }
            Some(plan) => Net::Candle(candle_net::CandleNet::lower(
                &plan,
                device,
                candle_net::dtype_of(options.precision),
            )?),
            None => {
                let family = arch.transformer().expect("a transformer");
                if with_classifier {
                    return Err(Error::Input(format!(
                        "{name} has no ImageNet classifier (it is a feature extractor)"
                    )));
                }
                // A config.json beside the weights sizes the model; else the hub model's sizes.
                let config_error = |reason: vit::ConfigError| Error::BadModelConfig {
                    path: weights
                        .config_path
                        .clone()
                        .unwrap_or_else(|| weights.source_desc.clone().into()),
                    backbone: name.to_string(),
                    reason: reason.to_string(),
                };
                let sizes = match weights.model_config(name)? {
                    Some(json) => {
                        vit::VitConfig::from_hf_json(family, &json).map_err(config_error)?
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
                // What `features` will compute must be computable: refused now, naming the size.
                sizes
                    .check_input(config.preprocess.input_size as usize)
                    .map_err(config_error)?;
                config.sizes = Some(sizes.describe());
                Net::Vit(Box::new(vit::Vit::load(
                    sizes,
                    weights,
                    name,
                    device,
                    options.engine,
                    candle_net::dtype_of(options.precision),
                )?))
            }
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
            Net::Cpu(n, _) => n.features(&images),
            Net::Candle(n) => n.features(&images),
            Net::Vit(n) => n.features(&images),
        }
    }

    /// ImageNet logits `[N, 1000]` from pooled features; `None` if built without the classifier.
    pub fn logits_from_features(&self, features: &Tensor) -> Result<Option<Tensor>> {
        match &self.net {
            Net::Cpu(_, fc) => fc
                .as_ref()
                .map(|fc| {
                    let f = features
                        .to_device(&Device::Cpu)?
                        .to_dtype(candle_core::DType::F32)?;
                    let w = Tensor::from_slice(&fc.weight, (fc.outputs, fc.inputs), &Device::Cpu)?;
                    let b = Tensor::from_slice(&fc.bias, fc.outputs, &Device::Cpu)?;
                    Ok(f.matmul(&w.t()?.contiguous()?)?.broadcast_add(&b)?)
                })
                .transpose(),
            Net::Candle(n) => n.classify(features),
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
