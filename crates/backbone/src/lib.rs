//! Frozen ImageNet backbones for feature extraction, built on candle.
//!
//! - [`config`]: the model zoo (`resnet18`, `resnet34`, `resnet50`, `efficientnet-lite0`) and
//!   each model's preprocessing, like timm's `pretrained_cfg`.
//! - [`weights`]: reading `.safetensors` and `.pth` (zip and legacy) files, and resolving weights
//!   offline-first (explicit path → Hugging Face cache/hub → torch hub cache).
//! - [`models`]: torchvision-exact forward passes with batch-norm folded into the convolutions.
//! - [`preprocess`]: decoding and the PIL + torchvision eval transform.
//! - [`imagenet`]: the 1000 ImageNet class names.
//! - [`batch`]: files → eval transform → batches → a model, with per-file errors.
//! - [`device`]: CPU or CUDA, what this build and machine offer, opening a device.

pub mod batch;
pub mod config;
pub mod device;
pub mod error;
pub mod imagenet;
pub mod models;
pub mod preprocess;
pub mod weights;

pub use config::{Architecture, BackboneConfig, Interpolation, PreprocessConfig};
pub use device::DeviceChoice;
pub use error::{Error, Result};
pub use headstart_core::config::Precision;
pub use models::{Backbone, BackboneOptions, Engine};
