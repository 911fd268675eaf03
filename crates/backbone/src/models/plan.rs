//! One description per convolutional network: the sequence of layers a ResNet or an
//! EfficientNet-Lite0 computes, with its folded weights, built once from a weights file.
//! Executors walk it: the CPU engine (`super::cpu::CpuNet`) and the candle executor
//! (`super::candle::CandleNet`, the CUDA path and the CPU reference), so the topology is written
//! once, in `resnet.rs` and `lite0.rs`.

use super::layers::{Activation, Conv, Dense};
use crate::{Error, Result};

/// What a residual block adds to its body's output.
#[derive(Debug, Clone)]
pub enum Shortcut {
    /// Nothing: the block is a plain sequence.
    None,
    /// The block's input.
    Identity,
    /// A convolution of the block's input (ResNet's downsample).
    Conv(Conv),
}

/// One step of a network.
#[derive(Debug, Clone)]
pub enum Step {
    /// A convolution (batch-norm folded) and its activation.
    Conv(Conv),
    /// 3×3 max-pool, stride 2, padding 1, on a non-negative input (after a ReLU, where zero
    /// padding equals −∞ padding).
    MaxPool3x3S2,
    /// `activation(body(x) + shortcut(x))`. The body's last convolution has no activation of
    /// its own when there is a shortcut (it is applied after the sum); without one, `activation`
    /// is [`Activation::None`] and the last convolution's own applies.
    Block {
        /// The convolutions, in order.
        body: Vec<Conv>,
        /// What is added to the body's output.
        shortcut: Shortcut,
        /// Applied after the sum.
        activation: Activation,
    },
}

/// A convolutional network: steps, then global average pooling, then (optionally) the
/// ImageNet classifier.
#[derive(Debug, Clone)]
pub struct CnnPlan {
    /// The layers up to the pooled features.
    pub steps: Vec<Step>,
    /// Width of the pooled features.
    pub feature_dim: usize,
    /// The ImageNet classifier, when loaded.
    pub classifier: Option<Dense>,
    /// How many leading steps the CPU engine runs a few images at a time (their activations are
    /// the largest, and memory-bound layers gain nothing from a larger batch); the rest run on
    /// the whole batch. `usize::MAX`: the whole network.
    pub micro_batched_steps: usize,
}

impl CnnPlan {
    /// Checks the rules the executors rely on (see [`Step::Block`]) and that the channel
    /// counts chain from 3 to `feature_dim`.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Input(format!("network description: {msg}")));
        let mut channels = 3;
        let chain = |c: &Conv, channels: &mut usize| {
            if c.in_channels != *channels {
                return bad(format!(
                    "a convolution takes {} channels but receives {channels}",
                    c.in_channels
                ));
            }
            *channels = c.out_channels;
            Ok(())
        };
        for s in &self.steps {
            match s {
                Step::Conv(c) => chain(c, &mut channels)?,
                Step::MaxPool3x3S2 => {}
                Step::Block {
                    body,
                    shortcut,
                    activation,
                } => {
                    let Some(last) = body.last() else {
                        return bad("a block without convolutions".into());
                    };
                    let input = channels;
                    for c in body {
                        chain(c, &mut channels)?;
                    }
                    match shortcut {
                        Shortcut::None if *activation != Activation::None => {
                            return bad("a block without shortcut has its own activation".into())
                        }
                        Shortcut::Identity | Shortcut::Conv(_) if last.is_depthwise() => {
                            return bad("a residual sum after a depthwise convolution".into())
                        }
                        Shortcut::Identity | Shortcut::Conv(_)
                            if last.activation != Activation::None =>
                        {
                            return bad(
                                "the convolution before a residual sum has an activation".into()
                            )
                        }
                        Shortcut::Identity if input != channels => {
                            return bad(format!(
                                "an identity shortcut from {input} to {channels} channels"
                            ))
                        }
                        Shortcut::Conv(c)
                            if c.in_channels != input || c.out_channels != channels =>
                        {
                            return bad("a shortcut convolution of the wrong width".into())
                        }
                        _ => {}
                    }
                }
            }
        }
        if channels != self.feature_dim {
            return bad(format!(
                "ends with {channels} channels, not the {} features",
                self.feature_dim
            ));
        }
        if let Some(fc) = &self.classifier {
            if fc.inputs != self.feature_dim {
                return bad("the classifier's width differs from the features'".into());
            }
        }
        Ok(())
    }
}
