//! A [`CnnPlan`] lowered onto the CPU engine's kernels: each convolution picks its kernel
//! (Winograd, im2col + gemm, depthwise), and the residual sum and activation after a block's
//! last convolution move into that convolution's epilogue.

use candle_core::Tensor;

use super::{input_act, pool, pooled_features, winograd_enabled, Act, BufferPool, Buffers};
use super::{CpuConv, DenseConv, DepthwiseConv, WinogradConv, MICRO_BATCH};
use crate::models::layers::{Activation, Conv};
use crate::models::plan::{CnnPlan, Shortcut, Step};
use crate::{Error, Result};

/// One step of the lowered network.
#[derive(Debug)]
enum CpuStep {
    Conv(CpuConv),
    MaxPool,
    /// The last convolution of `body` adds the shortcut (when there is one) and applies the
    /// block's activation in its epilogue.
    Block {
        body: Vec<CpuConv>,
        shortcut: CpuShortcut,
    },
}

#[derive(Debug)]
enum CpuShortcut {
    None,
    Identity,
    Conv(CpuConv),
}

/// A convolutional network in the CPU engine.
#[derive(Debug)]
pub(crate) struct CpuNet {
    steps: Vec<CpuStep>,
    micro_batched_steps: usize,
    buffers: BufferPool,
}

/// The CPU kernel for `c`, with `activation` (and any residual sum) in its epilogue.
fn lower_conv(c: &Conv, activation: Activation, winograd: bool) -> Result<CpuConv> {
    let (cin, cout, k) = (c.in_channels, c.out_channels, c.kernel);
    let (w, b) = (&c.weight, c.bias.clone());
    Ok(if c.groups == 1 {
        if winograd && WinogradConv::supports(cin, cout, k, c.stride, c.padding) {
            CpuConv::Winograd(WinogradConv::new(w, b, cin, cout, activation))
        } else {
            CpuConv::Dense(DenseConv::new(
                w, b, cin, cout, k, c.stride, c.padding, activation,
            ))
        }
    } else if c.is_depthwise() && DepthwiseConv::supports(k) {
        CpuConv::Depthwise(DepthwiseConv::new(
            w, b, cin, k, c.stride, c.padding, activation,
        ))
    } else {
        return Err(Error::Input(format!(
            "no CPU kernel for a {k}×{k} convolution with {} groups",
            c.groups
        )));
    })
}

impl CpuNet {
    /// Lowers `plan` (validated first).
    pub fn lower(plan: &CnnPlan) -> Result<Self> {
        plan.validate()?;
        let winograd = winograd_enabled();
        let steps = plan
            .steps
            .iter()
            .map(|s| {
                Ok(match s {
                    Step::Conv(c) => CpuStep::Conv(lower_conv(c, c.activation, winograd)?),
                    Step::MaxPool3x3S2 => CpuStep::MaxPool,
                    Step::Block {
                        body,
                        shortcut,
                        activation,
                    } => {
                        let n = body.len();
                        let residual = !matches!(shortcut, Shortcut::None);
                        let body = body
                            .iter()
                            .enumerate()
                            .map(|(i, c)| {
                                let act = if i + 1 == n && residual {
                                    *activation
                                } else {
                                    c.activation
                                };
                                lower_conv(c, act, winograd)
                            })
                            .collect::<Result<Vec<_>>>()?;
                        if residual && matches!(body.last(), Some(CpuConv::Depthwise(_))) {
                            return Err(Error::Input(
                                "a residual sum after a depthwise convolution".into(),
                            ));
                        }
                        CpuStep::Block {
                            body,
                            shortcut: match shortcut {
                                Shortcut::None => CpuShortcut::None,
                                Shortcut::Identity => CpuShortcut::Identity,
                                Shortcut::Conv(c) => {
                                    CpuShortcut::Conv(lower_conv(c, c.activation, winograd)?)
                                }
                            },
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            micro_batched_steps: plan.micro_batched_steps.min(steps.len()),
            steps,
            buffers: BufferPool::default(),
        })
    }

    /// Pooled features `[N, 3, H, W] → [N, D]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.buffers.with(|bufs| {
            let input = input_act(x, bufs)?;
            let n = input.n;
            if n == 0 {
                bufs.give(input);
                return Err(Error::Input("an empty batch".into()));
            }
            let (prefix, rest) = self.steps.split_at(self.micro_batched_steps);
            if rest.is_empty() {
                // The whole network a few images at a time; pool each part.
                let mut features = Vec::with_capacity(n.div_ceil(MICRO_BATCH));
                for i0 in (0..n).step_by(MICRO_BATCH) {
                    let part = input.images(i0, (i0 + MICRO_BATCH).min(n), bufs);
                    let y = run(prefix, part, bufs)?;
                    features.push(pooled_features(&y)?);
                    bufs.give(y);
                }
                bufs.give(input);
                return Ok(Tensor::cat(&features, 0)?);
            }
            // The prefix a few images at a time into one batch for the rest; a trailing
            // max-pool writes straight into that batch.
            let (prefix, pool_last) = match prefix.split_last() {
                Some((CpuStep::MaxPool, head)) => (head, true),
                _ => (prefix, false),
            };
            let mut batch: Option<Act> = None;
            for i0 in (0..n).step_by(MICRO_BATCH) {
                let i1 = (i0 + MICRO_BATCH).min(n);
                let part = input.images(i0, i1, bufs);
                let y = run(prefix, part, bufs)?;
                let (h, w) = if pool_last {
                    pool::max_pool_size(&y)?
                } else {
                    (y.h, y.w)
                };
                let per = h * w * y.c;
                let all = batch.get_or_insert_with(|| Act {
                    n,
                    h,
                    w,
                    c: y.c,
                    data: bufs.take(n * per),
                });
                let dst = &mut all.data[i0 * per..i1 * per];
                if pool_last {
                    pool::max_pool_3x3_s2_into(&y, dst)?;
                } else {
                    dst.copy_from_slice(&y.data);
                }
                bufs.give(y);
            }
            bufs.give(input);
            let batch = batch.expect("a non-empty batch");
            let y = run(rest, batch, bufs)?;
            let f = pooled_features(&y);
            bufs.give(y);
            f
        })
    }
}

/// Runs `steps` on `x`, returning buffers to `bufs` as they are freed.
fn run(steps: &[CpuStep], mut x: Act, bufs: &mut Buffers) -> Result<Act> {
    for s in steps {
        x = match s {
            CpuStep::Conv(c) => {
                let y = c.forward(&x, None, bufs)?;
                bufs.give(x);
                y
            }
            CpuStep::MaxPool => {
                let (h, w) = pool::max_pool_size(&x)?;
                let mut data = bufs.take(x.n * h * w * x.c);
                pool::max_pool_3x3_s2_into(&x, &mut data)?;
                let y = Act {
                    n: x.n,
                    h,
                    w,
                    c: x.c,
                    data,
                };
                bufs.give(x);
                y
            }
            CpuStep::Block { body, shortcut } => block(body, shortcut, x, bufs)?,
        };
    }
    Ok(x)
}

fn block(body: &[CpuConv], shortcut: &CpuShortcut, x: Act, bufs: &mut Buffers) -> Result<Act> {
    let (last, inner) = body.split_last().expect("a block has convolutions");
    let mut y: Option<Act> = None;
    for c in inner {
        let next = c.forward(y.as_ref().unwrap_or(&x), None, bufs)?;
        if let Some(old) = y.replace(next) {
            bufs.give(old);
        }
    }
    let projected = match shortcut {
        CpuShortcut::Conv(d) => Some(d.forward(&x, None, bufs)?),
        _ => None,
    };
    let residual = match shortcut {
        CpuShortcut::None => None,
        CpuShortcut::Identity => Some(&x),
        CpuShortcut::Conv(_) => projected.as_ref(),
    };
    let out = last.forward(y.as_ref().unwrap_or(&x), residual, bufs)?;
    for a in [y, projected, Some(x)].into_iter().flatten() {
        bufs.give(a);
    }
    Ok(out)
}
