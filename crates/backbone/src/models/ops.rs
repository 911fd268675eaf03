//! Building blocks shared by the models: convolutions with batch-norm folded in, TensorFlow
//! "SAME" padding, and a fused depthwise convolution for the CPU.

use candle_core::{CpuStorage, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

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
    fn apply(self, x: Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::None => x,
            Activation::Relu => x.relu()?,
            Activation::Relu6 => x.clamp(0f32, 6f32)?,
        })
    }

    #[inline]
    fn scalar(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }
}

/// TensorFlow "SAME" padding for one spatial axis: (before, after).
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// A 2-D convolution whose batch-norm has been folded into weight and bias at load time:
/// `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`.
#[derive(Debug, Clone)]
pub struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: Padding,
    groups: usize,
    kernel: usize,
    activation: Activation,
    /// CPU fast path for depthwise convolutions (`groups == channels`).
    depthwise: Option<std::sync::Arc<DepthwiseKernel>>,
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
        let depthwise = if spec.groups > 1
            && spec.groups == spec.in_channels
            && spec.in_channels == spec.out_channels
            && device.is_cpu()
        {
            Some(std::sync::Arc::new(DepthwiseKernel {
                weight: weight.flatten_all()?.to_vec1::<f32>()?,
                bias: bias.to_vec1::<f32>()?,
                kernel: spec.kernel,
                stride: spec.stride,
                padding: spec.padding,
                activation: spec.activation,
            }))
        } else {
            None
        };
        Ok(Self {
            weight: weight.to_device(device)?,
            bias: bias
                .reshape((1, spec.out_channels, 1, 1))?
                .to_device(device)?,
            stride: spec.stride,
            padding: spec.padding,
            groups: spec.groups,
            kernel: spec.kernel,
            activation: spec.activation,
            depthwise,
        })
    }

    /// Applies convolution, folded batch-norm and activation to an `[N, C, H, W]` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(dw) = &self.depthwise {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                return Ok(x.apply_op1_no_bwd(dw.as_ref())?);
            }
        }
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
}

/// Depthwise convolution + bias + activation in one pass over the input (CPU, f32).
///
/// candle runs grouped convolutions as one convolution per group, which for a depthwise layer of
/// 1 152 channels means 1 152 tiny convolutions; this kernel is a direct loop instead.
#[derive(Debug)]
pub struct DepthwiseKernel {
    weight: Vec<f32>,
    bias: Vec<f32>,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
}

impl candle_core::CustomOp1 for DepthwiseKernel {
    fn name(&self) -> &'static str {
        "depthwise-conv-bn-act"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = match storage {
            CpuStorage::F32(v) => v.as_slice(),
            _ => candle_core::bail!("depthwise kernel expects f32 input"),
        };
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("depthwise kernel expects a contiguous input".into())
        })?;
        let src = &src[start..end];
        let (n, c, h, w) = layout.shape().dims4()?;
        let k = self.kernel;
        let s = self.stride;
        let ((pt, _), (pl, _), oh, ow) = match self.padding {
            Padding::Symmetric(p) => (
                (p, p),
                (p, p),
                (h + 2 * p - k) / s + 1,
                (w + 2 * p - k) / s + 1,
            ),
            Padding::Same => (
                same_padding(h, k, s),
                same_padding(w, k, s),
                h.div_ceil(s),
                w.div_ceil(s),
            ),
        };
        if c * k * k != self.weight.len() {
            candle_core::bail!(
                "depthwise kernel: {c} channels but weights for {}",
                self.weight.len() / (k * k)
            );
        }
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(nc, dst)| {
                let ch = nc % c;
                let plane = &src[nc * h * w..(nc + 1) * h * w];
                let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
                let b = self.bias[ch];
                for oy in 0..oh {
                    let iy0 = (oy * s) as isize - pt as isize;
                    for ox in 0..ow {
                        let ix0 = (ox * s) as isize - pl as isize;
                        let mut acc = 0f32;
                        for ky in 0..k {
                            let iy = iy0 + ky as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let row = &plane[iy as usize * w..(iy as usize + 1) * w];
                            let wrow = &wk[ky * k..(ky + 1) * k];
                            for (kx, wv) in wrow.iter().enumerate() {
                                let ix = ix0 + kx as isize;
                                if ix >= 0 && ix < w as isize {
                                    acc += row[ix as usize] * wv;
                                }
                            }
                        }
                        dst[oy * ow + ox] = self.activation.scalar(acc + b);
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
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
    /// Loads `{name}.weight` [out, in] and `{name}.bias` [out].
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

    fn dw_reference(x: &Tensor, wt: &Tensor, b: &Tensor, stride: usize, pad: Padding) -> Tensor {
        let (_, c, h, w) = x.dims4().unwrap();
        let k = wt.dim(2).unwrap();
        let (pt, pb) = match pad {
            Padding::Same => same_padding(h, k, stride),
            Padding::Symmetric(p) => (p, p),
        };
        let (pl, pr) = match pad {
            Padding::Same => same_padding(w, k, stride),
            Padding::Symmetric(p) => (p, p),
        };
        let xp = x
            .pad_with_zeros(2, pt, pb)
            .unwrap()
            .pad_with_zeros(3, pl, pr)
            .unwrap();
        xp.conv2d(wt, 0, stride, 1, c)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .clamp(0f32, 6f32)
            .unwrap()
    }

    #[test]
    fn fused_depthwise_equals_grouped_conv() {
        let dev = Device::Cpu;
        for (k, stride, pad, h, w) in [
            (3, 1, Padding::Same, 9, 7),
            (3, 2, Padding::Same, 10, 9),
            (5, 2, Padding::Same, 11, 12),
            (5, 1, Padding::Symmetric(2), 8, 8),
        ] {
            let c = 6;
            let x = Tensor::randn(0f32, 2., (2, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., c, &dev).unwrap();
            let op = DepthwiseKernel {
                weight: wt.flatten_all().unwrap().to_vec1().unwrap(),
                bias: b.to_vec1().unwrap(),
                kernel: k,
                stride,
                padding: pad,
                activation: Activation::Relu6,
            };
            let got = x.apply_op1_no_bwd(&op).unwrap();
            let want = dw_reference(&x, &wt, &b, stride, pad);
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "k={k} s={stride}: max diff {diff}");
        }
    }
}
