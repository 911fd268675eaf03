//! torchvision ResNet-18/34/50 (v1.5: the stride sits on the 3×3 convolution), batch-norm folded.

use candle_core::{Device, Tensor};

use super::cpu::{self, pool, Act, BufferPool, Buffers, CpuConv};
use super::ops::{global_avg_pool, Activation, ConvBn, ConvSpec, Linear, Padding};
use super::Engine;
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

#[derive(Debug)]
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for c in &self.convs {
            y = c.forward(&y)?;
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        Ok((y + identity)?.relu()?)
    }
}

/// A residual block for the CPU engine: the last convolution adds the identity (or the
/// downsampled input) and applies the ReLU in its epilogue.
#[derive(Debug)]
struct CpuBlock {
    convs: Vec<CpuConv>,
    downsample: Option<CpuConv>,
}

impl CpuBlock {
    fn forward(&self, x: Act, bufs: &mut Buffers) -> Result<Act> {
        let (last, inner) = self.convs.split_last().expect("a block has convolutions");
        let mut y: Option<Act> = None;
        for c in inner {
            let next = c.forward(y.as_ref().unwrap_or(&x), None, bufs)?;
            if let Some(old) = y.replace(next) {
                bufs.give(old);
            }
        }
        let identity = self
            .downsample
            .as_ref()
            .map(|d| d.forward(&x, None, bufs))
            .transpose()?;
        let out = last.forward(
            y.as_ref().unwrap_or(&x),
            Some(identity.as_ref().unwrap_or(&x)),
            bufs,
        )?;
        for a in [y, identity, Some(x)].into_iter().flatten() {
            bufs.give(a);
        }
        Ok(out)
    }
}

/// The layers, in candle's operations or in the CPU engine.
#[derive(Debug)]
enum Layers {
    Candle {
        stem: ConvBn,
        blocks: Vec<Block>,
    },
    Cpu {
        stem: CpuConv,
        blocks: Vec<CpuBlock>,
        buffers: BufferPool,
    },
}

/// A loaded ResNet.
#[derive(Debug)]
pub struct ResNet {
    layers: Layers,
    fc: Option<Linear>,
    feature_dim: usize,
}

#[allow(clippy::too_many_arguments)]
fn conv(
    w: &WeightMap,
    arch: &str,
    dev: &Device,
    prefix: &str,
    idx: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    act: Activation,
) -> Result<ConvBn> {
    ConvBn::load(
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
        dev,
    )
}

impl ResNet {
    /// Builds the network from torchvision-named tensors; `with_fc` also loads the classifier.
    /// On the CPU with [`Engine::Auto`] the layers run in the CPU engine.
    pub fn load(
        spec: ResNetSpec,
        w: &WeightMap,
        arch: &str,
        with_fc: bool,
        dev: &Device,
        engine: Engine,
    ) -> Result<Self> {
        let stem = conv(w, arch, dev, "", 1, 3, 64, 7, 2, Activation::Relu)?;
        let expansion = if spec.bottleneck { 4 } else { 1 };
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (li, &n) in spec.layers.iter().enumerate() {
            let width = 64 << li;
            let cout = width * expansion;
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let p = format!("layer{}.{bi}.", li + 1);
                let convs = if spec.bottleneck {
                    vec![
                        conv(w, arch, dev, &p, 1, cin, width, 1, 1, Activation::Relu)?,
                        conv(
                            w,
                            arch,
                            dev,
                            &p,
                            2,
                            width,
                            width,
                            3,
                            stride,
                            Activation::Relu,
                        )?,
                        conv(w, arch, dev, &p, 3, width, cout, 1, 1, Activation::None)?,
                    ]
                } else {
                    vec![
                        conv(w, arch, dev, &p, 1, cin, width, 3, stride, Activation::Relu)?,
                        conv(w, arch, dev, &p, 2, width, width, 3, 1, Activation::None)?,
                    ]
                };
                let downsample = if stride != 1 || cin != cout {
                    Some(ConvBn::load(
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
                        dev,
                    )?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                cin = cout;
            }
        }
        let feature_dim = spec.feature_dim();
        let fc = if with_fc {
            Some(Linear::load(w, "fc", feature_dim, 1000, arch, dev)?)
        } else {
            None
        };
        let layers = if dev.is_cpu() && engine == Engine::Auto {
            let winograd = cpu::winograd_enabled();
            let relu = Activation::Relu;
            Layers::Cpu {
                stem: stem.to_cpu(relu, winograd)?,
                blocks: blocks
                    .iter()
                    .map(|b| {
                        let n = b.convs.len();
                        Ok(CpuBlock {
                            convs: b
                                .convs
                                .iter()
                                .enumerate()
                                .map(|(i, c)| {
                                    let act = if i + 1 == n { relu } else { c.activation() };
                                    c.to_cpu(act, winograd)
                                })
                                .collect::<Result<_>>()?,
                            downsample: b
                                .downsample
                                .as_ref()
                                .map(|d| d.to_cpu(Activation::None, winograd))
                                .transpose()?,
                        })
                    })
                    .collect::<Result<_>>()?,
                buffers: BufferPool::default(),
            }
        } else {
            Layers::Candle { stem, blocks }
        };
        Ok(Self {
            layers,
            fc,
            feature_dim,
        })
    }

    /// Pooled features `[N, 3, H, W] → [N, D]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (stem, blocks) = match &self.layers {
            Layers::Candle { stem, blocks } => (stem, blocks),
            Layers::Cpu {
                stem,
                blocks,
                buffers,
            } => {
                return buffers.with(|bufs| {
                    let input = cpu::input_act(x, bufs)?;
                    // Stem and max-pool a few images at a time (the stem's 112×112×64 output
                    // is the largest activation), into one pooled batch for the rest.
                    let mut x: Option<Act> = None;
                    for i0 in (0..input.n).step_by(cpu::MICRO_BATCH) {
                        let i1 = (i0 + cpu::MICRO_BATCH).min(input.n);
                        let part = input.images(i0, i1, bufs);
                        let y = stem.forward(&part, None, bufs)?;
                        bufs.give(part);
                        let (ph, pw) = pool::max_pool_size(&y)?;
                        let pooled = x.get_or_insert_with(|| Act {
                            n: input.n,
                            h: ph,
                            w: pw,
                            c: y.c,
                            data: bufs.take(input.n * ph * pw * y.c),
                        });
                        let per = ph * pw * y.c;
                        pool::max_pool_3x3_s2_into(&y, &mut pooled.data[i0 * per..i1 * per])?;
                        bufs.give(y);
                    }
                    bufs.give(input);
                    let mut x = x.ok_or_else(|| crate::Error::Input("an empty batch".into()))?;
                    for b in blocks {
                        x = b.forward(x, bufs)?;
                    }
                    let f = cpu::pooled_features(&x);
                    bufs.give(x);
                    f
                });
            }
        };
        let x = stem.forward(x)?;
        // Max-pool 3×3, stride 2, padding 1. After the ReLU every value is ≥ 0 and each window holds
        // at least one real pixel, so zero padding gives the same result as −∞ padding.
        let x = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        for b in blocks {
            x = b.forward(&x)?;
        }
        global_avg_pool(&x)
    }

    /// ImageNet logits from pooled features, if the classifier was loaded.
    pub fn classify(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.fc.as_ref().map(|fc| fc.forward(features)).transpose()
    }

    /// Width of the pooled features.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}
