//! torchvision ResNet-18/34/50 (v1.5: the stride sits on the 3×3 convolution), batch-norm folded,
//! described once as a [`CnnPlan`].

use super::layers::{Activation, Conv, ConvSpec, Dense, Padding};
use super::plan::{CnnPlan, Shortcut, Step};
use crate::weights::WeightMap;
use crate::Result;

const EPS: f64 = 1e-5;

/// Block type and blocks per stage.
#[derive(Debug, Clone, Copy)]
pub struct ResNetSpec {
    /// Bottleneck blocks (ResNet-50) instead of basic blocks.
    pub bottleneck: bool,
    /// Blocks in layer1..layer4.
    pub layers: [usize; 4],
}

impl ResNetSpec {
    /// ResNet-18.
    pub const R18: ResNetSpec = ResNetSpec {
        bottleneck: false,
        layers: [2, 2, 2, 2],
    };
    /// ResNet-34.
    pub const R34: ResNetSpec = ResNetSpec {
        bottleneck: false,
        layers: [3, 4, 6, 3],
    };
    /// ResNet-50.
    pub const R50: ResNetSpec = ResNetSpec {
        bottleneck: true,
        layers: [3, 4, 6, 3],
    };

    /// Channels of the pooled features.
    pub fn feature_dim(&self) -> usize {
        if self.bottleneck {
            2048
        } else {
            512
        }
    }
}

/// `{prefix}conv{idx}` + `{prefix}bn{idx}`, PyTorch padding k/2.
#[allow(clippy::too_many_arguments)]
fn conv(
    w: &WeightMap,
    arch: &str,
    prefix: &str,
    idx: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    act: Activation,
) -> Result<Conv> {
    Conv::load(
        w,
        ConvSpec {
            conv: &format!("{prefix}conv{idx}"),
            bn: &format!("{prefix}bn{idx}"),
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding: Padding::Symmetric(k / 2),
            groups: 1,
            eps: EPS,
            activation: act,
        },
        arch,
    )
}

/// The network from torchvision-named tensors; `with_fc` also loads the classifier `fc`.
pub fn plan(spec: ResNetSpec, w: &WeightMap, arch: &str, with_fc: bool) -> Result<CnnPlan> {
    let relu = Activation::Relu;
    let mut steps = vec![
        Step::Conv(conv(w, arch, "", 1, 3, 64, 7, 2, relu)?),
        Step::MaxPool3x3S2,
    ];
    let expansion = if spec.bottleneck { 4 } else { 1 };
    let mut cin = 64;
    for (li, &n) in spec.layers.iter().enumerate() {
        let width = 64 << li;
        let cout = width * expansion;
        for bi in 0..n {
            let stride = if bi == 0 && li > 0 { 2 } else { 1 };
            let p = format!("layer{}.{bi}.", li + 1);
            let body = if spec.bottleneck {
                vec![
                    conv(w, arch, &p, 1, cin, width, 1, 1, relu)?,
                    conv(w, arch, &p, 2, width, width, 3, stride, relu)?,
                    conv(w, arch, &p, 3, width, cout, 1, 1, Activation::None)?,
                ]
            } else {
                vec![
                    conv(w, arch, &p, 1, cin, width, 3, stride, relu)?,
                    conv(w, arch, &p, 2, width, width, 3, 1, Activation::None)?,
                ]
            };
            let shortcut = if stride != 1 || cin != cout {
                Shortcut::Conv(Conv::load(
                    w,
                    ConvSpec {
                        conv: &format!("{p}downsample.0"),
                        bn: &format!("{p}downsample.1"),
                        in_channels: cin,
                        out_channels: cout,
                        kernel: 1,
                        stride,
                        padding: Padding::Symmetric(0),
                        groups: 1,
                        eps: EPS,
                        activation: Activation::None,
                    },
                    arch,
                )?)
            } else {
                Shortcut::Identity
            };
            steps.push(Step::Block {
                body,
                shortcut,
                activation: relu,
            });
            cin = cout;
        }
    }
    let feature_dim = spec.feature_dim();
    let classifier = if with_fc {
        Some(Dense::load(w, "fc", feature_dim, 1000, arch)?)
    } else {
        None
    };
    Ok(CnnPlan {
        steps,
        feature_dim,
        classifier,
        // The stem's 112×112×64 output is the largest activation: stem and max-pool a few
        // images at a time, the rest on the pooled batch.
        micro_batched_steps: 2,
    })
}
