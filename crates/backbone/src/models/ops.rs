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
    /// CPU fast path: a fused kernel (depthwise or dense im2col + gemm).
    cpu: Option<CpuKernel>,
}

/// The fused CPU kernels.
#[derive(Debug, Clone)]
enum CpuKernel {
    Depthwise(std::sync::Arc<DepthwiseKernel>),
    Dense(std::sync::Arc<DenseKernel>),
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
        let cpu = if !device.is_cpu() {
            None
        } else if spec.groups > 1
            && spec.groups == spec.in_channels
            && spec.in_channels == spec.out_channels
        {
            Some(CpuKernel::Depthwise(std::sync::Arc::new(DepthwiseKernel {
                weight: weight.flatten_all()?.to_vec1::<f32>()?,
                bias: bias.to_vec1::<f32>()?,
                kernel: spec.kernel,
                stride: spec.stride,
                padding: spec.padding,
                activation: spec.activation,
            })))
        } else if spec.groups == 1 {
            Some(CpuKernel::Dense(std::sync::Arc::new(DenseKernel {
                weight: weight.flatten_all()?.to_vec1::<f32>()?,
                bias: bias.to_vec1::<f32>()?,
                in_channels: spec.in_channels,
                out_channels: spec.out_channels,
                kernel: spec.kernel,
                stride: spec.stride,
                padding: spec.padding,
                activation: spec.activation,
            })))
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
            cpu,
        })
    }

    /// Applies convolution, folded batch-norm and activation to an `[N, C, H, W]` tensor.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(k) = &self.cpu {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                let x = x.contiguous()?;
                return Ok(match k {
                    CpuKernel::Depthwise(dw) => x.apply_op1_no_bwd(dw.as_ref())?,
                    CpuKernel::Dense(d) => x.apply_op1_no_bwd(d.as_ref())?,
                });
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

/// The f32 values of a contiguous CPU tensor, or an error naming the kernel.
fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    kernel: &str,
) -> candle_core::Result<&'a [f32]> {
    let src = match storage {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{kernel} expects f32 input"),
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{kernel} expects a contiguous input")))?;
    Ok(&src[start..end])
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
        let src = contiguous_f32(storage, layout, self.name())?;
        let (n, c, h, w) = layout.shape().dims4()?;
        let k = self.kernel;
        let s = self.stride;
        let Geometry {
            top: pt,
            left: pl,
            out_h: oh,
            out_w: ow,
            ..
        } = geometry(self.padding, h, w, k, s)?;
        if c * k * k != self.weight.len() {
            candle_core::bail!(
                "depthwise kernel: {c} channels but weights for {}",
                self.weight.len() / (k * k)
            );
        }
        let (ph, pw) = ((oh - 1) * s + k, (ow - 1) * s + k);
        let mut out = vec![0f32; n * c * oh * ow];
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(nc, dst)| {
                let ch = nc % c;
                let plane = &src[nc * h * w..(nc + 1) * h * w];
                let wk = &self.weight[ch * k * k..(ch + 1) * k * k];
                // Zero-padded copy of the plane (reused per thread), so the inner loops have no
                // bounds checks and vectorise.
                PADDED.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    buf.clear();
                    buf.resize(ph * pw, 0.0);
                    let n_copy = w.min(pw.saturating_sub(pl));
                    for y in 0..h.min(ph.saturating_sub(pt)) {
                        let at = (y + pt) * pw + pl;
                        buf[at..at + n_copy].copy_from_slice(&plane[y * w..y * w + n_copy]);
                    }
                    dst.fill(self.bias[ch]);
                    for ky in 0..k {
                        for kx in 0..k {
                            let wv = wk[ky * k + kx];
                            for oy in 0..oh {
                                let row = &buf[(oy * s + ky) * pw + kx..];
                                let out_row = &mut dst[oy * ow..(oy + 1) * ow];
                                if s == 1 {
                                    for (o, i) in out_row.iter_mut().zip(&row[..ow]) {
                                        *o += wv * i;
                                    }
                                } else {
                                    for (o, i) in out_row.iter_mut().zip(row.iter().step_by(s)) {
                                        *o += wv * i;
                                    }
                                }
                            }
                        }
                    }
                });
                if self.activation != Activation::None {
                    dst.iter_mut().for_each(|v| *v = self.activation.scalar(*v));
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, c, oh, ow))))
    }
}

/// Padding and output size of a convolution on an `h × w` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    top: usize,
    bottom: usize,
    left: usize,
    right: usize,
    out_h: usize,
    out_w: usize,
}

fn geometry(
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

thread_local! {
    /// A zero-padded input plane of the depthwise kernel, reused per thread.
    static PADDED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The im2col buffer, reused across layers and batches (no allocation per convolution).
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Dense convolution + bias + activation: im2col into a reused buffer, then one gemm per image
/// with the bias pre-loaded into the output (CPU, f32). 1×1 stride-1 convolutions skip im2col.
#[derive(Debug)]
pub struct DenseKernel {
    weight: Vec<f32>,
    bias: Vec<f32>,
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
}

impl DenseKernel {
    /// Fills `cols` ([cin·k·k, oh·ow], row-major) from one image plane set `src` ([cin, h, w]).
    #[allow(clippy::too_many_arguments)]
    fn im2col(
        &self,
        src: &[f32],
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        top: usize,
        left: usize,
        cols: &mut [f32],
    ) {
        let (k, s) = (self.kernel, self.stride);
        let p = oh * ow;
        cols.par_chunks_mut(k * k * p)
            .enumerate()
            .for_each(|(c, block)| {
                let plane = &src[c * h * w..(c + 1) * h * w];
                for ky in 0..k {
                    for kx in 0..k {
                        let row = &mut block[(ky * k + kx) * p..(ky * k + kx + 1) * p];
                        for oy in 0..oh {
                            let iy = (oy * s + ky) as isize - top as isize;
                            let dst = &mut row[oy * ow..(oy + 1) * ow];
                            if iy < 0 || iy >= h as isize {
                                dst.fill(0.0);
                                continue;
                            }
                            let line = &plane[iy as usize * w..(iy as usize + 1) * w];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - left as isize;
                                *d = if ix >= 0 && ix < w as isize {
                                    line[ix as usize]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            });
    }
}

impl candle_core::CustomOp1 for DenseKernel {
    fn name(&self) -> &'static str {
        "dense-conv-bn-act"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name())?;
        let (n, c, h, w) = layout.shape().dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "convolution expects {} input channels, got {c}",
                self.in_channels
            );
        }
        let (k, cout) = (self.kernel, self.out_channels);
        let Geometry {
            top,
            left,
            out_h: oh,
            out_w: ow,
            ..
        } = geometry(self.padding, h, w, k, self.stride)?;
        let p = oh * ow;
        let kk = c * k * k;
        let direct = k == 1 && self.stride == 1;
        let mut out = vec![0f32; n * cout * p];
        let threads = rayon::current_num_threads();
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        COLUMNS.with(|cols| {
            let mut cols = cols.borrow_mut();
            if !direct && cols.len() < kk * p {
                cols.resize(kk * p, 0.0);
            }
            for i in 0..n {
                let img = &src[i * c * h * w..(i + 1) * c * h * w];
                let rhs: &[f32] = if direct {
                    img
                } else {
                    self.im2col(img, h, w, oh, ow, top, left, &mut cols[..kk * p]);
                    &cols[..kk * p]
                };
                let dst = &mut out[i * cout * p..(i + 1) * cout * p];
                for (o, row) in dst.chunks_mut(p).enumerate() {
                    row.fill(self.bias[o]);
                }
                // SAFETY: dst is [cout, p], weight [cout, kk], rhs [kk, p], all row-major and in
                // bounds; the three buffers do not overlap.
                unsafe {
                    gemm::gemm(
                        cout,
                        p,
                        kk,
                        dst.as_mut_ptr(),
                        1,
                        p as isize,
                        true,
                        self.weight.as_ptr(),
                        1,
                        kk as isize,
                        rhs.as_ptr(),
                        1,
                        p as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        par,
                    );
                }
                if self.activation != Activation::None {
                    dst.iter_mut().for_each(|v| *v = self.activation.scalar(*v));
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, cout, oh, ow))))
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

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn dw_reference(x: &Tensor, wt: &Tensor, b: &Tensor, stride: usize, pad: Padding) -> Tensor {
        let (_, c, h, w) = x.dims4().unwrap();
        let g = geometry(pad, h, w, wt.dim(2).unwrap(), stride).unwrap();
        let xp = x
            .pad_with_zeros(2, g.top, g.bottom)
            .unwrap()
            .pad_with_zeros(3, g.left, g.right)
            .unwrap();
        xp.conv2d(wt, 0, stride, 1, c)
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .clamp(0f32, 6f32)
            .unwrap()
    }

    #[test]
    fn fused_dense_conv_equals_candle_conv() {
        let dev = Device::Cpu;
        for (k, stride, pad, h, w, act) in [
            (3, 1, Padding::Symmetric(1), 9, 7, Activation::Relu),
            (7, 2, Padding::Symmetric(3), 17, 15, Activation::None),
            (1, 2, Padding::Symmetric(0), 8, 9, Activation::None),
            (1, 1, Padding::Symmetric(0), 5, 6, Activation::Relu6),
            (3, 2, Padding::Same, 10, 9, Activation::Relu6),
        ] {
            let (cin, cout) = (5, 4);
            let x = Tensor::randn(0f32, 1., (2, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (cout, cin, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., cout, &dev).unwrap();
            let op = DenseKernel {
                weight: wt.flatten_all().unwrap().to_vec1().unwrap(),
                bias: b.to_vec1().unwrap(),
                in_channels: cin,
                out_channels: cout,
                kernel: k,
                stride,
                padding: pad,
                activation: act,
            };
            let got = x.apply_op1_no_bwd(&op).unwrap();
            let g = geometry(pad, h, w, k, stride).unwrap();
            let xp = x
                .pad_with_zeros(2, g.top, g.bottom)
                .unwrap()
                .pad_with_zeros(3, g.left, g.right)
                .unwrap();
            let want = xp
                .conv2d(&wt, 0, stride, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            let want = act.apply(want).unwrap();
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "k={k} s={stride}: max diff {diff}");
        }
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
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-4, "k={k} s={stride}: max diff {diff}");
        }
    }
}
