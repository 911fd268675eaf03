//! The layer vocabulary every network is described in and every executor understands: padding
//! rules, activations, convolution geometry, and convolutions with their batch-norm folded in.
//! Nothing here knows candle or a device: the CPU engine (`super::cpu`) and the candle executor
//! (`super::candle`) both lower these descriptions onto their own kernels.

use crate::weights::WeightMap;
use crate::{Error, Result};

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// PyTorch-style: the same number of zeros on every side.
    Symmetric(usize),
    /// TensorFlow "SAME": output = ceil(input / stride); an odd total puts the extra
    /// row/column at the bottom/right.
    Same,
}

/// Post-convolution activation, fused where the kernel allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// max(x, 0).
    Relu,
    /// min(max(x, 0), 6).
    Relu6,
}

/// TensorFlow "SAME" padding for one spatial axis: (before, after).
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Padding and output size of a convolution on an `h × w` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Zero rows above.
    pub top: usize,
    /// Zero rows below.
    pub bottom: usize,
    /// Zero columns on the left.
    pub left: usize,
    /// Zero columns on the right.
    pub right: usize,
    /// Output rows.
    pub out_h: usize,
    /// Output columns.
    pub out_w: usize,
}

impl Geometry {
    /// Whether every side gets the same padding (what `conv2d(padding = p)` can express).
    pub fn symmetric(&self) -> Option<usize> {
        (self.top == self.bottom && self.left == self.right && self.top == self.left)
            .then_some(self.top)
    }
}

/// Padding and output size of a `k × k`, stride-`s` convolution on an `h × w` input.
pub fn geometry(padding: Padding, h: usize, w: usize, k: usize, s: usize) -> Result<Geometry> {
    let (top, bottom, left, right) = match padding {
        Padding::Symmetric(p) => (p, p, p, p),
        Padding::Same => {
            let (t, b) = same_padding(h, k, s);
            let (l, r) = same_padding(w, k, s);
            (t, b, l, r)
        }
    };
    if s == 0 || h + top + bottom < k || w + left + right < k {
        return Err(Error::Input(format!(
            "convolution: {h}×{w} input is smaller than the {k}×{k} kernel"
        )));
    }
    Ok(Geometry {
        top,
        bottom,
        left,
        right,
        out_h: (h + top + bottom - k) / s + 1,
        out_w: (w + left + right - k) / s + 1,
    })
}

/// What a [`Conv`] is loaded from: tensor names and the layer's shape.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec<'a> {
    /// Name of the convolution weight tensor (`.weight` is appended).
    pub conv: &'a str,
    /// Prefix of the batch-norm tensors (`.weight`, `.bias`, `.running_mean`, `.running_var`).
    pub bn: &'a str,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding rule.
    pub padding: Padding,
    /// Groups (1 = dense, `in_channels` = depthwise).
    pub groups: usize,
    /// Batch-norm epsilon.
    pub eps: f64,
    /// Activation after the batch-norm.
    pub activation: Activation,
}

/// A 2-D convolution whose batch-norm has been folded into weight and bias at load time:
/// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)` (computed in f64, so the folded weights are the
/// correctly rounded f32 of the exact values), then an activation.
#[derive(Debug, Clone)]
pub struct Conv {
    /// Folded weights, `[out, in / groups, k, k]` row-major.
    pub weight: Vec<f32>,
    /// Folded bias, `[out]`.
    pub bias: Vec<f32>,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding rule.
    pub padding: Padding,
    /// Groups (1 = dense, `in_channels` = depthwise).
    pub groups: usize,
    /// Activation after the batch-norm.
    pub activation: Activation,
}

impl Conv {
    /// Loads conv + batch-norm tensors from `w` and folds them.
    pub fn load(w: &WeightMap, spec: ConvSpec<'_>, arch: &str) -> Result<Self> {
        if spec.groups == 0
            || !spec.in_channels.is_multiple_of(spec.groups)
            || !spec.out_channels.is_multiple_of(spec.groups)
        {
            return Err(Error::Input(format!(
                "{}: {} → {} channels cannot be split into {} groups",
                spec.conv, spec.in_channels, spec.out_channels, spec.groups
            )));
        }
        let cin_per_group = spec.in_channels / spec.groups;
        let (cout, k) = (spec.out_channels, spec.kernel);
        let weight = w.get_f32(
            &format!("{}.weight", spec.conv),
            &[cout, cin_per_group, k, k],
            arch,
        )?;
        let c = [cout];
        let gamma = w.get_f32(&format!("{}.weight", spec.bn), &c, arch)?;
        let beta = w.get_f32(&format!("{}.bias", spec.bn), &c, arch)?;
        let mean = w.get_f32(&format!("{}.running_mean", spec.bn), &c, arch)?;
        let var = w.get_f32(&format!("{}.running_var", spec.bn), &c, arch)?;
        let per_out = cin_per_group * k * k;
        let mut folded_w = Vec::with_capacity(weight.len());
        let mut folded_b = Vec::with_capacity(cout);
        for o in 0..cout {
            let scale = gamma[o] as f64 / (var[o] as f64 + spec.eps).sqrt();
            folded_b.push((beta[o] as f64 - mean[o] as f64 * scale) as f32);
            folded_w.extend(
                weight[o * per_out..(o + 1) * per_out]
                    .iter()
                    .map(|&v| (v as f64 * scale) as f32),
            );
        }
        Ok(Self {
            weight: folded_w,
            bias: folded_b,
            in_channels: spec.in_channels,
            out_channels: cout,
            kernel: k,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            activation: spec.activation,
        })
    }

    /// Whether this is a depthwise convolution (one filter per channel).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.in_channels == self.out_channels
    }
}

/// A fully connected layer `y = x Wᵀ + b` (the ImageNet classifier).
#[derive(Debug, Clone)]
pub struct Dense {
    /// `[out, in]` row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
}

impl Dense {
    /// Loads `{name}.weight` `[out, in]` and `{name}.bias` `[out]`.
    pub fn load(
        w: &WeightMap,
        name: &str,
        inputs: usize,
        outputs: usize,
        arch: &str,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.get_f32(&format!("{name}.weight"), &[outputs, inputs], arch)?,
            bias: w.get_f32(&format!("{name}.bias"), &[outputs], arch)?,
            inputs,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 3, 1), (1, 1));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 1, 1), (0, 0));
    }

    #[test]
    fn geometry_refuses_an_input_smaller_than_the_kernel() {
        assert!(geometry(Padding::Symmetric(0), 2, 2, 3, 1).is_err());
        let g = geometry(Padding::Same, 224, 224, 3, 2).unwrap();
        assert_eq!((g.out_h, g.out_w, g.top, g.bottom), (112, 112, 0, 1));
        assert_eq!(g.symmetric(), None);
        assert_eq!(
            geometry(Padding::Symmetric(1), 8, 8, 3, 1)
                .unwrap()
                .symmetric(),
            Some(1)
        );
    }
}
