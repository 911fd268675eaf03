//! Depthwise convolution on channels-last activations, with bias and activation fused: each
//! output pixel accumulates `k·k` channel vectors, so the inner loop runs over contiguous
//! channels and vectorises.

use rayon::prelude::*;

use super::kernels;
use super::{Act, Buffers};
use crate::models::layers::{geometry, Activation, Padding};
use crate::{Error, Result};

/// A depthwise convolution with batch-norm folded in, weights laid out `[(ky, kx), c]`.
#[derive(Debug)]
pub(crate) struct DepthwiseConv {
    c: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    weight: Vec<f32>,
    bias: Vec<f32>,
    act: Activation,
}

impl DepthwiseConv {
    /// From PyTorch-layout folded weights `[c, 1, k, k]` and bias `[c]`.
    pub fn new(
        oihw: &[f32],
        bias: Vec<f32>,
        c: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        act: Activation,
    ) -> Self {
        assert_eq!(oihw.len(), c * k * k);
        assert_eq!(bias.len(), c);
        let mut weight = vec![0f32; oihw.len()];
        for ch in 0..c {
            for p in 0..k * k {
                weight[p * c + ch] = oihw[ch * k * k + p];
            }
        }
        Self {
            c,
            k,
            stride,
            padding,
            weight,
            bias,
            act,
        }
    }

    /// `act(depthwise(x) + bias)`.
    pub fn forward(&self, x: &Act, bufs: &mut Buffers) -> Result<Act> {
        if x.c != self.c {
            return Err(Error::Input(format!(
                "depthwise convolution expects {} channels, got {}",
                self.c, x.c
            )));
        }
        let (k, s, c) = (self.k, self.stride, self.c);
        let g = geometry(self.padding, x.h, x.w, k, s)?;
        let mut out = bufs.take(x.n * g.out_h * g.out_w * c);
        let image = x.h * x.w * c;
        out.par_chunks_mut(g.out_w * c)
            .enumerate()
            .for_each(|(r, dst)| {
                let (n, oy) = (r / g.out_h, r % g.out_h);
                let mut rows: [Option<&[f32]>; 8] = [None; 8];
                for (ky, row) in rows.iter_mut().enumerate().take(k) {
                    let iy = (oy * s + ky) as isize - g.top as isize;
                    if iy >= 0 && iy < x.h as isize {
                        let at = n * image + iy as usize * x.w * c;
                        *row = Some(&x.data[at..at + x.w * c]);
                    }
                }
                kernels::depthwise_row(
                    &rows[..k],
                    x.w,
                    c,
                    k,
                    s,
                    g.left,
                    &self.weight,
                    &self.bias,
                    self.act,
                    dst,
                );
            });
        Ok(Act {
            n: x.n,
            h: g.out_h,
            w: g.out_w,
            c,
            data: out,
        })
    }

    /// Whether a kernel of this size can run here (rows are gathered in a fixed array).
    pub fn supports(k: usize) -> bool {
        (1..=8).contains(&k)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::models::cpu::test_util::{act_from, rel_max_diff, tensor_from};

    #[test]
    fn depthwise_equals_grouped_conv() {
        let dev = Device::Cpu;
        for (k, stride, pad, h, w, c) in [
            (3, 1, Padding::Same, 9, 7, 6),
            (3, 2, Padding::Same, 10, 9, 40),
            (5, 2, Padding::Same, 11, 12, 33),
            (5, 1, Padding::Symmetric(2), 8, 8, 96),
        ] {
            let x = Tensor::randn(0f32, 2., (2, c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (c, 1, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., c, &dev).unwrap();
            let op = DepthwiseConv::new(
                &wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.to_vec1().unwrap(),
                c,
                k,
                stride,
                pad,
                Activation::Relu6,
            );
            let got = op.forward(&act_from(&x), &mut Buffers::default()).unwrap();
            let g = geometry(pad, h, w, k, stride).unwrap();
            let want = x
                .pad_with_zeros(2, g.top, g.bottom)
                .unwrap()
                .pad_with_zeros(3, g.left, g.right)
                .unwrap()
                .conv2d(&wt, 0, stride, 1, c)
                .unwrap()
                .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
                .unwrap()
                .clamp(0f32, 6f32)
                .unwrap();
            let diff = rel_max_diff(&tensor_from(&got), &want);
            assert!(diff < 1e-5, "k={k} s={stride}: rel diff {diff}");
        }
    }
}
