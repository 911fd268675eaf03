//! EfficientNet-Lite0 in `efficientnet_pytorch` naming: MBConv without squeeze-and-excitation,
//! ReLU6, batch-norm ε = 1e-3, TensorFlow "SAME" padding; batch-norm folded at load time.

use candle_core::{Device, Tensor};

use super::cpu::{self, Act, BufferPool, Buffers, CpuConv};
use super::ops::{global_avg_pool, Activation, ConvBn, ConvSpec, Linear, Padding};
use super::Engine;
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

#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    skip: bool,
}

impl MbConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let y = self.depthwise.forward(&y)?;
        let y = self.project.forward(&y)?;
        Ok(if self.skip { (y + x)? } else { y })
    }
}

/// An MBConv block for the CPU engine; the projection adds the skip in its epilogue.
#[derive(Debug)]
struct CpuMbConv {
    expand: Option<CpuConv>,
    depthwise: CpuConv,
    project: CpuConv,
    skip: bool,
}

impl CpuMbConv {
    fn forward(&self, x: Act, bufs: &mut Buffers) -> Result<Act> {
        let e = self
            .expand
            .as_ref()
            .map(|e| e.forward(&x, None, bufs))
            .transpose()?;
        let d = self
            .depthwise
            .forward(e.as_ref().unwrap_or(&x), None, bufs)?;
        if let Some(e) = e {
            bufs.give(e);
        }
        let out = self
            .project
            .forward(&d, if self.skip { Some(&x) } else { None }, bufs)?;
        bufs.give(d);
        bufs.give(x);
        Ok(out)
    }
}

/// The layers, in candle's operations or in the CPU engine.
#[derive(Debug)]
enum Layers {
    Candle {
        stem: ConvBn,
        blocks: Vec<MbConv>,
        head: ConvBn,
    },
    Cpu {
        stem: CpuConv,
        blocks: Vec<CpuMbConv>,
        head: CpuConv,
        buffers: BufferPool,
    },
}

/// A loaded EfficientNet-Lite0.
#[derive(Debug)]
pub struct EfficientNetLite0 {
    layers: Layers,
    fc: Option<Linear>,
}

#[allow(clippy::too_many_arguments)]
fn conv(
    w: &WeightMap,
    arch: &str,
    dev: &Device,
    conv: &str,
    bn: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
    act: Activation,
) -> Result<ConvBn> {
    ConvBn::load(
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
        dev,
    )
}

impl EfficientNetLite0 {
    /// Builds the network; `with_fc` also loads the ImageNet classifier `_fc`. On the CPU with
    /// [`Engine::Auto`] the layers run in the CPU engine.
    pub fn load(
        w: &WeightMap,
        arch: &str,
        with_fc: bool,
        dev: &Device,
        engine: Engine,
    ) -> Result<Self> {
        let relu6 = Activation::Relu6;
        let stem = conv(w, arch, dev, "_conv_stem", "_bn0", 3, STEM, 3, 2, 1, relu6)?;
        let mut blocks = Vec::new();
        for &(repeats, k, stride, expand, cin0, cout) in &STAGES {
            for r in 0..repeats {
                let (cin, s) = if r == 0 { (cin0, stride) } else { (cout, 1) };
                let p = format!("_blocks.{}", blocks.len());
                let mid = cin * expand;
                let expand_conv = if expand != 1 {
                    Some(conv(
                        w,
                        arch,
                        dev,
                        &format!("{p}._expand_conv"),
                        &format!("{p}._bn0"),
                        cin,
                        mid,
                        1,
                        1,
                        1,
                        relu6,
                    )?)
                } else {
                    None
                };
                let depthwise = conv(
                    w,
                    arch,
                    dev,
                    &format!("{p}._depthwise_conv"),
                    &format!("{p}._bn1"),
                    mid,
                    mid,
                    k,
                    s,
                    mid,
                    relu6,
                )?;
                let project = conv(
                    w,
                    arch,
                    dev,
                    &format!("{p}._project_conv"),
                    &format!("{p}._bn2"),
                    mid,
                    cout,
                    1,
                    1,
                    1,
                    Activation::None,
                )?;
                blocks.push(MbConv {
                    expand: expand_conv,
                    depthwise,
                    project,
                    skip: s == 1 && cin == cout,
                });
            }
        }
        let head = conv(
            w,
            arch,
            dev,
            "_conv_head",
            "_bn1",
            320,
            HEAD,
            1,
            1,
            1,
            relu6,
        )?;
        let fc = if with_fc {
            Some(Linear::load(w, "_fc", HEAD, 1000, arch, dev)?)
        } else {
            None
        };
        let layers = if dev.is_cpu() && engine == Engine::Auto {
            let cpu = |c: &ConvBn| c.to_cpu(c.activation(), false);
            Layers::Cpu {
                stem: cpu(&stem)?,
                blocks: blocks
                    .iter()
                    .map(|b| {
                        Ok(CpuMbConv {
                            expand: b.expand.as_ref().map(cpu).transpose()?,
                            depthwise: cpu(&b.depthwise)?,
                            project: cpu(&b.project)?,
                            skip: b.skip,
                        })
                    })
                    .collect::<Result<_>>()?,
                head: cpu(&head)?,
                buffers: BufferPool::default(),
            }
        } else {
            Layers::Candle { stem, blocks, head }
        };
        Ok(Self { layers, fc })
    }

    /// Pooled features `[N, 3, H, W] → [N, 1280]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        match &self.layers {
            Layers::Candle { stem, blocks, head } => {
                let mut x = stem.forward(x)?;
                for b in blocks {
                    x = b.forward(&x)?;
                }
                global_avg_pool(&head.forward(&x)?)
            }
            Layers::Cpu {
                stem,
                blocks,
                head,
                buffers,
            } => buffers.with(|bufs| {
                // A few images at a time through the whole network: its layers are
                // memory-bound, so this is as fast as the full batch and needs a fraction of
                // the memory.
                let input = cpu::input_act(x, bufs)?;
                let mut features = Vec::with_capacity(input.n);
                for i0 in (0..input.n).step_by(cpu::MICRO_BATCH) {
                    let i1 = (i0 + cpu::MICRO_BATCH).min(input.n);
                    let part = input.images(i0, i1, bufs);
                    let mut y = stem.forward(&part, None, bufs)?;
                    bufs.give(part);
                    for b in blocks {
                        y = b.forward(y, bufs)?;
                    }
                    let h = head.forward(&y, None, bufs)?;
                    bufs.give(y);
                    features.push(cpu::pooled_features(&h)?);
                    bufs.give(h);
                }
                bufs.give(input);
                Ok(Tensor::cat(&features, 0)?)
            }),
        }
    }

    /// ImageNet logits from pooled features, if the classifier was loaded.
    pub fn classify(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.fc.as_ref().map(|fc| fc.forward(features)).transpose()
    }
}
