//! EfficientNet-Lite0 in `efficientnet_pytorch` naming: MBConv without squeeze-and-excitation,
//! ReLU6, batch-norm ε = 1e-3, TensorFlow "SAME" padding; batch-norm folded at load time;
//! described once as a [`CnnPlan`].

use super::layers::{Activation, Conv, ConvSpec, Dense, Padding};
use super::plan::{CnnPlan, Shortcut, Step};
use crate::weights::WeightMap;
use crate::Result;

const EPS: f64 = 1e-3;
const STEM: usize = 32;
const HEAD: usize = 1280;

/// (repeats, kernel, stride, expand ratio, input channels, output channels) per stage:
/// r1_k3_s11_e1_i32_o16, r2_k3_s22_e6_i16_o24, r2_k5_s22_e6_i24_o40, r3_k3_s22_e6_i40_o80,
/// r3_k5_s11_e6_i80_o112, r4_k5_s22_e6_i112_o192, r1_k3_s11_e6_i192_o320.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// A "SAME"-padded convolution `conv` + batch-norm `bn`.
#[allow(clippy::too_many_arguments)]
fn conv(
    w: &WeightMap,
    arch: &str,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    act: Activation,
) -> Result<Conv> {
    Conv::load(
        w,
        ConvSpec {
            conv,
            bn,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding: Padding::Same,
            groups,
            eps: EPS,
            activation: act,
        },
        arch,
    )
}

/// The network; `with_fc` also loads the ImageNet classifier `_fc`.
pub fn plan(w: &WeightMap, arch: &str, with_fc: bool) -> Result<CnnPlan> {
    let relu6 = Activation::Relu6;
    let mut steps = vec![Step::Conv(conv(
        w,
        arch,
        "_conv_stem",
        "_bn0",
        3,
        STEM,
        3,
        2,
        1,
        relu6,
    )?)];
    let mut index = 0;
    for &(repeats, k, stride, expand, cin0, cout) in &STAGES {
        for r in 0..repeats {
            let (cin, s) = if r == 0 { (cin0, stride) } else { (cout, 1) };
            let p = format!("_blocks.{index}");
            index += 1;
            let mid = cin * expand;
            let mut body = Vec::with_capacity(3);
            if expand != 1 {
                body.push(conv(
                    w,
                    arch,
                    &format!("{p}._expand_conv"),
                    &format!("{p}._bn0"),
                    cin,
                    mid,
                    1,
                    1,
                    1,
                    relu6,
                )?);
            }
            body.push(conv(
                w,
                arch,
                &format!("{p}._depthwise_conv"),
                &format!("{p}._bn1"),
                mid,
                mid,
                k,
                s,
                mid,
                relu6,
            )?);
            body.push(conv(
                w,
                arch,
                &format!("{p}._project_conv"),
                &format!("{p}._bn2"),
                mid,
                cout,
                1,
                1,
                1,
                Activation::None,
            )?);
            steps.push(Step::Block {
                body,
                shortcut: if s == 1 && cin == cout {
                    Shortcut::Identity
                } else {
                    Shortcut::None
                },
                activation: Activation::None,
            });
        }
    }
    steps.push(Step::Conv(conv(
        w,
        arch,
        "_conv_head",
        "_bn1",
        320,
        HEAD,
        1,
        1,
        1,
        relu6,
    )?));
    let classifier = if with_fc {
        Some(Dense::load(w, "_fc", HEAD, 1000, arch)?)
    } else {
        None
    };
    Ok(CnnPlan {
        steps,
        feature_dim: HEAD,
        classifier,
        // Memory-bound layers throughout: a few images at a time through the whole network
        // is as fast as the full batch and needs a fraction of the memory.
        micro_batched_steps: usize::MAX,
    })
}
