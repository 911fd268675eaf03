//! Building blocks shared by the models: convolutions with batch-norm folded in, TensorFlow
//! "SAME" padding, in candle's operations (the CPU engine lives in `super::cpu`).

use candle_core::{DType, Device, Tensor};

use super::cpu::{CpuConv, DenseConv, DepthwiseConv, WinogradConv};
use crate::weights::WeightMap;
use crate::Result;

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

impl Activation {
    /// Applies the activation with candle's operations.
    pub(crate) fn apply(self, x: Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::None => x,
            Activation::Relu => x.relu()?,
            Activation::Relu6 => x.clamp(0f32, 6f32)?,
        })
    }
}

/// TensorFlow "SAME" padding for one spatial axis: (before, after).
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// A 2-D convolution whose batch-norm has been folded into weight and bias at load time:
/// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`. Runs with candle's operations (the CUDA path and
/// the reference for the CPU engine); [`ConvBn::to_cpu`] turns it into a CPU engine layer.
#[derive(Debug, Clone)]
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    padding: Padding,
    groups: usize,
    kernel: usize,
    activation: Activation,
}

/// What a [`ConvBn`] is built from.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec<'a> {
    /// Name of the convolution weight tensor (`…weight` is appended).
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

impl ConvBn {
    /// Loads conv + batch-norm tensors from `w` and folds them.
    pub fn load(w: &WeightMap, spec: ConvSpec<'_>, arch: &str, device: &Device) -> Result<Self> {
        let cin_per_group = spec.in_channels / spec.groups;
        let weight = w.get(
            &format!("{}.weight", spec.conv),
            &[spec.out_channels, cin_per_group, spec.kernel, spec.kernel],
            arch,
            &Device::Cpu,
        )?;
        let c = [spec.out_channels];
        let gamma = w.get(&format!("{}.weight", spec.bn), &c, arch, &Device::Cpu)?;
        let beta = w.get(&format!("{}.bias", spec.bn), &c, arch, &Device::Cpu)?;
        let mean = w.get(&format!("{}.running_mean", spec.bn), &c, arch, &Device::Cpu)?;
        let var = w.get(&format!("{}.running_var", spec.bn), &c, arch, &Device::Cpu)?;
        // Fold in f64 so that the folded weights are the correctly rounded f32 of the exact value.
        let gamma = gamma.to_dtype(DType::F64)?;
        let scale = gamma.broadcast_div(&(var.to_dtype(DType::F64)? + spec.eps)?.sqrt()?)?;
        let bias = (beta.to_dtype(DType::F64)? - mean.to_dtype(DType::F64)?.mul(&scale)?)?;
        let weight = weight
            .to_dtype(DType::F64)?
            .broadcast_mul(&scale.reshape((spec.out_channels, 1, 1, 1))?)?
            .to_dtype(DType::F32)?;
        let bias = bias.to_dtype(DType::F32)?;
        Ok(Self {
            weight: weight.to_device(device)?,
            bias: bias
                .reshape((1, spec.out_channels, 1, 1))?
                .to_device(device)?,
            in_channels: spec.in_channels,
            out_channels: spec.out_channels,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            kernel: spec.kernel,
            activation: spec.activation,
        })
    }

    /// Applies convolution, folded batch-norm and activation to an `[N, C, H, W]` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (x, pad) = match self.padding {
            Padding::Symmetric(p) => (x.clone(), p),
            Padding::Same => {
                let (_, _, h, w) = x.dims4()?;
                let (top, bottom) = same_padding(h, self.kernel, self.stride);
                let (left, right) = same_padding(w, self.kernel, self.stride);
                if top == bottom && left == right && top == left {
                    (x.clone(), top)
                } else {
                    let x = x
                        .pad_with_zeros(2, top, bottom)?
                        .pad_with_zeros(3, left, right)?;
                    (x, 0)
                }
            }
        };
        let y = x.conv2d(&self.weight, pad, self.stride, 1, self.groups)?;
        self.activation.apply(y.broadcast_add(&self.bias)?)
    }

    /// The same layer for the CPU engine, with `activation` applied after the (optional)
    /// residual add. `winograd` allows the Winograd path for 3×3 stride-1 layers.
    pub(crate) fn to_cpu(&self, activation: Activation, winograd: bool) -> Result<CpuConv> {
        let w = self
            .weight
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = self
            .bias
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (cin, cout, k) = (self.in_channels, self.out_channels, self.kernel);
        Ok(if self.groups == 1 {
            if winograd && WinogradConv::supports(cin, cout, k, self.stride, self.padding) {
                CpuConv::Winograd(WinogradConv::new(&w, b, cin, cout, activation))
            } else {
                CpuConv::Dense(DenseConv::new(
                    &w,
                    b,
                    cin,
                    cout,
                    k,
                    self.stride,
                    self.padding,
                    activation,
                ))
            }
        } else if self.groups == cin && cin == cout && DepthwiseConv::supports(k) {
            CpuConv::Depthwise(DepthwiseConv::new(
                &w,
                b,
                cin,
                k,
                self.stride,
                self.padding,
                activation,
            ))
        } else {
            return Err(crate::Error::Input(format!(
                "no CPU kernel for a {k}×{k} convolution with {} groups",
                self.groups
            )));
        })
    }

    /// The activation after the batch-norm.
    pub fn activation(&self) -> Activation {
        self.activation
    }
}

/// Padding and output size of a convolution on an `h × w` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// Padding and output size of a `k × k`, stride-`s` convolution on an `h × w` input.
pub(crate) fn geometry(
    padding: Padding,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
) -> candle_core::Result<Geometry> {
    let (top, bottom, left, right) = match padding {
        Padding::Symmetric(p) => (p, p, p, p),
        Padding::Same => {
            let (t, b) = same_padding(h, k, s);
            let (l, r) = same_padding(w, k, s);
            (t, b, l, r)
        }
    };
    if h + top + bottom < k || w + left + right < k {
        candle_core::bail!("convolution: {h}×{w} input is smaller than the {k}×{k} kernel");
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

/// Global average pooling `[N, C, H, W] → [N, C]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}

/// A fully connected layer `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Tensor,
}

impl Linear {
    /// Loads `{name}.weight` `[out, in]` and `{name}.bias` `[out]`.
    pub fn load(
        w: &WeightMap,
        name: &str,
        inp: usize,
        out: usize,
        arch: &str,
        device: &Device,
    ) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out, inp], arch, device)?;
        let bias = w.get(&format!("{name}.bias"), &[out], arch, device)?;
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// Applies the layer to `[N, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?)
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
}
