//! A [`CnnPlan`] lowered onto candle's operations, on any device, in f32, f16 or bf16: the CUDA
//! path, and on the CPU the reference the CPU engine is tested against.
//!
//! On a CUDA device, depthwise convolutions and the bias + residual + activation after every
//! convolution run as headstart's own kernels (`kernels/convolution.cu`): candle would split a
//! depthwise convolution into one convolution per channel (thousands of launches per image
//! batch) and spend three passes on the epilogue. Everything is queued on the device's stream;
//! nothing synchronises until the caller reads the pooled features.

use candle_core::{DType, Device, Tensor};

use super::layers::{geometry, Activation, Conv, Dense, Padding};
use super::plan::{CnnPlan, Shortcut, Step};
use crate::{Error, Result};

/// A convolution's tensors on the device.
#[derive(Debug)]
struct DeviceConv {
    weight: Tensor,
    /// `[C]` (the CUDA kernels) or `[1, C, 1, 1]` (candle's broadcast).
    bias: Tensor,
    kernel: usize,
    stride: usize,
    padding: Padding,
    groups: usize,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    depthwise: bool,
}

#[derive(Debug)]
enum DeviceStep {
    Conv(DeviceConv, Activation),
    MaxPool,
    Block {
        body: Vec<(DeviceConv, Activation)>,
        shortcut: DeviceShortcut,
        activation: Activation,
    },
}

#[derive(Debug)]
enum DeviceShortcut {
    None,
    Identity,
    Conv(DeviceConv),
}

/// A convolutional network in candle's operations.
#[derive(Debug)]
pub(crate) struct CandleNet {
    steps: Vec<DeviceStep>,
    classifier: Option<(Tensor, Tensor)>,
    dtype: DType,
    device: Device,
    /// headstart's CUDA kernels are used (a CUDA device, and not turned off).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    kernels: bool,
}

/// Whether headstart's own CUDA kernels run on CUDA devices (`HEADSTART_CUDA_KERNELS=0` falls
/// back to candle's operations everywhere, to compare the two).
pub(crate) fn cuda_kernels_enabled() -> bool {
    std::env::var("HEADSTART_CUDA_KERNELS").map_or(true, |v| v != "0")
}

impl CandleNet {
    /// Uploads `plan`'s weights to `device` in `dtype` (validated first).
    pub fn lower(plan: &CnnPlan, device: &Device, dtype: DType) -> Result<Self> {
        plan.validate()?;
        let kernels = device.is_cuda() && cuda_kernels_enabled();
        let conv = |c: &Conv| -> Result<DeviceConv> {
            let k = c.kernel;
            let weight = Tensor::from_slice(
                &c.weight,
                (c.out_channels, c.in_channels / c.groups, k, k),
                &Device::Cpu,
            )?;
            let bias = Tensor::from_slice(&c.bias, c.out_channels, &Device::Cpu)?;
            let bias = if kernels {
                bias
            } else {
                bias.reshape((1, c.out_channels, 1, 1))?
            };
            Ok(DeviceConv {
                weight: weight.to_dtype(dtype)?.to_device(device)?,
                bias: bias.to_dtype(dtype)?.to_device(device)?,
                kernel: k,
                stride: c.stride,
                padding: c.padding,
                groups: c.groups,
                depthwise: c.is_depthwise(),
            })
        };
        let steps = plan
            .steps
            .iter()
            .map(|s| {
                Ok(match s {
                    Step::Conv(c) => DeviceStep::Conv(conv(c)?, c.activation),
                    Step::MaxPool3x3S2 => DeviceStep::MaxPool,
                    Step::Block {
                        body,
                        shortcut,
                        activation,
                    } => DeviceStep::Block {
                        body: body
                            .iter()
                            .map(|c| Ok((conv(c)?, c.activation)))
                            .collect::<Result<_>>()?,
                        shortcut: match shortcut {
                            Shortcut::None => DeviceShortcut::None,
                            Shortcut::Identity => DeviceShortcut::Identity,
                            Shortcut::Conv(c) => DeviceShortcut::Conv(conv(c)?),
                        },
                        activation: *activation,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let classifier = plan
            .classifier
            .as_ref()
            .map(|d: &Dense| -> Result<(Tensor, Tensor)> {
                let w = Tensor::from_slice(&d.weight, (d.outputs, d.inputs), &Device::Cpu)?;
                let b = Tensor::from_slice(&d.bias, d.outputs, &Device::Cpu)?;
                Ok((
                    w.t()?.contiguous()?.to_device(device)?,
                    b.to_device(device)?,
                ))
            })
            .transpose()?;
        Ok(Self {
            steps,
            classifier,
            dtype,
            device: device.clone(),
            kernels,
        })
    }

    /// Pooled f32 features `[N, 3, H, W] → [N, D]`, on the device.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.to_device(&self.device)?.to_dtype(self.dtype)?;
        for s in &self.steps {
            x = match s {
                DeviceStep::Conv(c, act) => self.conv(c, &x, None, *act)?,
                DeviceStep::MaxPool => {
                    // After a ReLU every value is ≥ 0 and each window holds at least one real
                    // pixel, so zero padding gives the same result as −∞ padding.
                    let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
                    x.max_pool2d_with_stride(3, 2)?
                }
                DeviceStep::Block {
                    body,
                    shortcut,
                    activation,
                } => {
                    let (last, inner) = body.split_last().expect("a validated block");
                    let mut y = x.clone();
                    for (c, act) in inner {
                        y = self.conv(c, &y, None, *act)?;
                    }
                    match shortcut {
                        DeviceShortcut::None => self.conv(&last.0, &y, None, last.1)?,
                        DeviceShortcut::Identity => {
                            self.conv(&last.0, &y, Some(&x), *activation)?
                        }
                        DeviceShortcut::Conv(d) => {
                            let r = self.conv(d, &x, None, Activation::None)?;
                            self.conv(&last.0, &y, Some(&r), *activation)?
                        }
                    }
                }
            };
        }
        // Pool in f32 whatever the forward dtype.
        Ok(x.to_dtype(DType::F32)?.mean((2, 3))?)
    }

    /// ImageNet logits from pooled f32 features, if the classifier was loaded.
    pub fn classify(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.classifier
            .as_ref()
            .map(|(wt, b)| {
                let f = features.to_device(&self.device)?.to_dtype(DType::F32)?;
                Ok(f.matmul(wt)?.broadcast_add(b)?)
            })
            .transpose()
    }

    /// `act(conv(x) + bias [+ residual])`.
    fn conv(
        &self,
        c: &DeviceConv,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let g = geometry(c.padding, h, w, c.kernel, c.stride)?;
        #[cfg(feature = "cuda")]
        if self.kernels {
            if c.depthwise {
                // A validated plan never adds a residual to a depthwise convolution.
                debug_assert!(residual.is_none());
                return super::cuda_kernels::depthwise(x, &c.weight, &c.bias, &g, c.stride, act);
            }
            let y = raw_conv(x, c, &g)?;
            return super::cuda_kernels::bias_act(&y, &c.bias, residual, act);
        }
        let y = raw_conv(x, c, &g)?.broadcast_add(&c.bias)?;
        let y = match residual {
            Some(r) => (y + r)?,
            None => y,
        };
        apply(act, y)
    }
}

/// The convolution alone (no bias), padding as `g` says.
fn raw_conv(x: &Tensor, c: &DeviceConv, g: &super::layers::Geometry) -> Result<Tensor> {
    let (x, pad) = match g.symmetric() {
        Some(p) => (x.clone(), p),
        None => (
            x.pad_with_zeros(2, g.top, g.bottom)?
                .pad_with_zeros(3, g.left, g.right)?,
            0,
        ),
    };
    Ok(x.conv2d(&c.weight, pad, c.stride, 1, c.groups)?)
}

/// An activation in candle's operations.
pub(crate) fn apply(act: Activation, x: Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::None => x,
        Activation::Relu => x.relu()?,
        Activation::Relu6 => x.clamp(0f32, 6f32)?,
    })
}

/// The candle dtype of a forward precision.
pub(crate) fn dtype_of(p: headstart_core::config::Precision) -> DType {
    use headstart_core::config::Precision;
    match p {
        Precision::F32 => DType::F32,
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    }
}

/// Refuses reduced precision where it cannot run.
pub(crate) fn check_precision(p: headstart_core::config::Precision, device: &Device) -> Result<()> {
    if p != headstart_core::config::Precision::F32 && !device.is_cuda() {
        return Err(Error::Input(format!(
            "{} forward passes run on a GPU only; on the CPU the forward pass is f32",
            p.name()
        )));
    }
    Ok(())
}
