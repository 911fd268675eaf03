//! Pooling on channels-last activations.

use rayon::prelude::*;

use super::Act;
#[cfg(test)]
use super::Buffers;
use crate::{Error, Result};

/// Max-pool 3×3, stride 2, padding 1 (ResNet's stem). Padding is ignored, as PyTorch's −∞
/// padding is: every window holds at least one real pixel.
#[cfg(test)]
pub(crate) fn max_pool_3x3_s2(x: &Act, bufs: &mut Buffers) -> Result<Act> {
    let (oh, ow) = max_pool_size(x)?;
    let mut out = bufs.take(x.n * oh * ow * x.c);
    max_pool_3x3_s2_into(x, &mut out)?;
    Ok(Act {
        n: x.n,
        h: oh,
        w: ow,
        c: x.c,
        data: out,
    })
}

/// Output size of [`max_pool_3x3_s2`].
pub(crate) fn max_pool_size(x: &Act) -> Result<(usize, usize)> {
    if x.h == 0 || x.w == 0 {
        return Err(Error::Input("max-pool of an empty image".into()));
    }
    Ok(((x.h - 1) / 2 + 1, (x.w - 1) / 2 + 1))
}

/// [`max_pool_3x3_s2`] into `out` (`[N, OH, OW, C]`).
pub(crate) fn max_pool_3x3_s2_into(x: &Act, out: &mut [f32]) -> Result<()> {
    let (oh, ow) = max_pool_size(x)?;
    let c = x.c;
    if out.len() != x.n * oh * ow * c {
        return Err(Error::Input("max-pool output has the wrong size".into()));
    }
    out.par_chunks_mut(ow * c).enumerate().for_each(|(r, dst)| {
        let (n, oy) = (r / oh, r % oh);
        let y0 = (2 * oy).saturating_sub(1);
        let y1 = (2 * oy + 1).min(x.h - 1);
        for (ox, px) in dst.chunks_exact_mut(c).enumerate() {
            let x0 = (2 * ox).saturating_sub(1);
            let x1 = (2 * ox + 1).min(x.w - 1);
            px.fill(f32::NEG_INFINITY);
            for iy in y0..=y1 {
                let line = (n * x.h + iy) * x.w;
                for ix in x0..=x1 {
                    let src = &x.data[(line + ix) * c..(line + ix + 1) * c];
                    for (o, &v) in px.iter_mut().zip(src) {
                        *o = o.max(v);
                    }
                }
            }
        }
    });
    Ok(())
}

/// Global average pooling → `[N, C]` (row-major).
pub(crate) fn global_avg_pool(x: &Act) -> Vec<f32> {
    let (p, c) = (x.h * x.w, x.c);
    let mut out = vec![0f32; x.n * c];
    out.par_chunks_mut(c).enumerate().for_each(|(n, dst)| {
        let mut acc = vec![0f64; c];
        for px in x.data[n * p * c..(n + 1) * p * c].chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += v as f64;
            }
        }
        for (d, a) in dst.iter_mut().zip(acc) {
            *d = (a / p as f64) as f32;
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::models::cpu::test_util::{act_from, rel_max_diff, tensor_from};

    #[test]
    fn max_pool_equals_candle() {
        for (h, w) in [(8, 8), (7, 9), (1, 1), (2, 3)] {
            // After a ReLU (as in the stem) zero padding equals PyTorch's −∞ padding.
            let x = Tensor::randn(0f32, 1., (2, 5, h, w), &Device::Cpu)
                .unwrap()
                .relu()
                .unwrap();
            let got = max_pool_3x3_s2(&act_from(&x), &mut Buffers::default()).unwrap();
            let want = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap()
                .max_pool2d_with_stride(3, 2)
                .unwrap();
            assert_eq!(rel_max_diff(&tensor_from(&got), &want), 0.0);
        }
    }

    #[test]
    fn average_pool_is_the_mean() {
        let x = Tensor::randn(0f32, 1., (3, 7, 5, 4), &Device::Cpu).unwrap();
        let got = global_avg_pool(&act_from(&x));
        let got = Tensor::from_slice(&got, (3, 7), &Device::Cpu).unwrap();
        let want = x.mean((2, 3)).unwrap();
        assert!(rel_max_diff(&got, &want) < 1e-6);
    }
}
