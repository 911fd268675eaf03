//! Dense convolution on channels-last activations: the output `[N·OH·OW, Cout]` is one matrix
//! product of the im2col rows `[N·OH·OW, K·K·Cin]` and the weights `[K·K·Cin, Cout]`, computed
//! in row blocks. A 1×1 stride-1 convolution uses the activation itself as the left operand.

use rayon::prelude::*;

use super::kernels;
use super::{sgemm, with_scratch, Act, Buffers, BIG_WEIGHTS, BLOCKS_PER_THREAD};
use crate::models::layers::{geometry, Activation, Geometry, Padding};
use crate::{Error, Result};

/// Inner dimensions up to this use the direct small-K loop instead of gemm.
const SMALL_K: usize = 32;
/// Target size of one block's im2col columns, in values.
const COLUMN_BUDGET: usize = 64 * 1024;
/// Largest im2col chunk of a large-weight layer, in values.
const CHUNK_BUDGET: usize = 4 * 1024 * 1024;

/// A convolution with batch-norm folded in, weights laid out `[(ky, kx, ci), co]`.
#[derive(Debug)]
pub(crate) struct DenseConv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    weight: Vec<f32>,
    bias: Vec<f32>,
    act: Activation,
}

impl DenseConv {
    /// From PyTorch-layout folded weights `[cout, cin, k, k]` and bias `[cout]`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        oihw: &[f32],
        bias: Vec<f32>,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: Padding,
        act: Activation,
    ) -> Self {
        assert_eq!(oihw.len(), cout * cin * k * k);
        assert_eq!(bias.len(), cout);
        let mut weight = vec![0f32; oihw.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        weight[((ky * k + kx) * cin + ci) * cout + co] =
                            oihw[((co * cin + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
        Self {
            cin,
            cout,
            k,
            stride,
            padding,
            weight,
            bias,
            act,
        }
    }

    /// `act(conv(x) + bias [+ residual])`; the residual has the output's shape.
    pub fn forward(&self, x: &Act, residual: Option<&Act>, bufs: &mut Buffers) -> Result<Act> {
        if x.c != self.cin {
            return Err(Error::Input(format!(
                "convolution expects {} input channels, got {}",
                self.cin, x.c
            )));
        }
        let g = geometry(self.padding, x.h, x.w, self.k, self.stride)?;
        let (cout, kk) = (self.cout, self.k * self.k * self.cin);
        let m = x.n * g.out_h * g.out_w;
        if let Some(r) = residual {
            if r.data.len() != m * cout {
                return Err(Error::Input("residual does not match the output".into()));
            }
        }
        let direct = self.k == 1 && self.stride == 1;
        let threads = rayon::current_num_threads().max(1);
        if kk > SMALL_K && kk * cout > BIG_WEIGHTS {
            return Ok(self.forward_chunked(x, residual, &g, bufs));
        }
        let rows = (COLUMN_BUDGET / kk)
            .clamp(16, 1024)
            .min(m.div_ceil(threads * BLOCKS_PER_THREAD))
            .max(8);
        let mut out = bufs.take(m * cout);
        out.par_chunks_mut(rows * cout)
            .enumerate()
            .for_each(|(b, dst)| {
                let r0 = b * rows;
                let nr = dst.len() / cout;
                self.init_rows(dst, residual, r0);
                if direct {
                    self.multiply(&x.data[r0 * kk..(r0 + nr) * kk], dst, 1);
                } else {
                    with_scratch(nr * kk, |cols| {
                        self.im2col(x, &g, r0, cols);
                        self.multiply(cols, dst, 1);
                    });
                }
                kernels::activate(dst, self.act);
            });
        Ok(Act {
            n: x.n,
            h: g.out_h,
            w: g.out_w,
            c: cout,
            data: out,
        })
    }

    /// Layers with large weights: the rows in a few large chunks, each chunk's im2col built in
    /// parallel and multiplied in one gemm spread over all threads.
    fn forward_chunked(
        &self,
        x: &Act,
        residual: Option<&Act>,
        g: &Geometry,
        bufs: &mut Buffers,
    ) -> Act {
        const SUB: usize = 64;
        let (cout, kk) = (self.cout, self.k * self.k * self.cin);
        let m = x.n * g.out_h * g.out_w;
        let direct = self.k == 1 && self.stride == 1;
        let threads = rayon::current_num_threads().max(1);
        let chunk = (CHUNK_BUDGET / kk).max(SUB).min(m);
        let mut out = bufs.take(m * cout);
        let mut cols = if direct {
            Vec::new()
        } else {
            bufs.take(chunk * kk)
        };
        for (ci, dst) in out.chunks_mut(chunk * cout).enumerate() {
            let r0 = ci * chunk;
            let nr = dst.len() / cout;
            dst.par_chunks_mut(SUB * cout)
                .enumerate()
                .for_each(|(b, d)| self.init_rows(d, residual, r0 + b * SUB));
            if !direct {
                cols[..nr * kk]
                    .par_chunks_mut(SUB * kk)
                    .enumerate()
                    .for_each(|(b, c)| self.im2col(x, g, r0 + b * SUB, c));
            }
            let lhs = if direct {
                &x.data[r0 * kk..(r0 + nr) * kk]
            } else {
                &cols[..nr * kk]
            };
            self.multiply(lhs, dst, threads);
            dst.par_chunks_mut(SUB * cout)
                .for_each(|d| kernels::activate(d, self.act));
        }
        bufs.give(Act {
            data: cols,
            ..Default::default()
        });
        Act {
            n: x.n,
            h: g.out_h,
            w: g.out_w,
            c: cout,
            data: out,
        }
    }

    /// `dst [rows, cout] += lhs [rows, kk] · weight`, on `threads` threads (the small-K loop
    /// for tiny inner dimensions, gemm otherwise).
    fn multiply(&self, lhs: &[f32], dst: &mut [f32], threads: usize) {
        let (cout, kk) = (self.cout, self.k * self.k * self.cin);
        let rows = dst.len() / cout;
        assert!(lhs.len() >= rows * kk && self.weight.len() == kk * cout);
        if kk <= SMALL_K {
            kernels::small_k_gemm(lhs, kk, &self.weight, cout, dst);
            return;
        }
        // SAFETY: lhs is [rows, kk], weight [kk, cout], dst [rows, cout], row-major, in bounds
        // (asserted) and disjoint.
        unsafe {
            sgemm(
                rows,
                cout,
                kk,
                dst.as_mut_ptr(),
                cout,
                true,
                lhs.as_ptr(),
                kk,
                self.weight.as_ptr(),
                cout,
                threads,
            )
        }
    }

    /// Fills output rows from `r0` with the bias, plus the residual's rows if there is one.
    fn init_rows(&self, dst: &mut [f32], residual: Option<&Act>, r0: usize) {
        let cout = self.cout;
        match residual {
            Some(res) => {
                let res = &res.data[r0 * cout..r0 * cout + dst.len()];
                for (row, rrow) in dst.chunks_exact_mut(cout).zip(res.chunks_exact(cout)) {
                    for ((o, &b), &r) in row.iter_mut().zip(&self.bias).zip(rrow) {
                        *o = b + r;
                    }
                }
            }
            None => dst
                .chunks_exact_mut(cout)
                .for_each(|row| row.copy_from_slice(&self.bias)),
        }
    }

    /// The im2col rows `r0 .. r0 + cols.len() / kk` (columns ordered ky, kx, ci).
    fn im2col(&self, x: &Act, g: &Geometry, r0: usize, cols: &mut [f32]) {
        let (k, s, cin) = (self.k, self.stride, self.cin);
        let kk = k * k * cin;
        let per_image = g.out_h * g.out_w;
        for (i, row) in cols.chunks_exact_mut(kk).enumerate() {
            let r = r0 + i;
            let (n, p) = (r / per_image, r % per_image);
            let (oy, ox) = (p / g.out_w, p % g.out_w);
            for ky in 0..k {
                let iy = (oy * s + ky) as isize - g.top as isize;
                let seg = &mut row[ky * k * cin..(ky + 1) * k * cin];
                if iy < 0 || iy >= x.h as isize {
                    seg.fill(0.0);
                    continue;
                }
                let line = (n * x.h + iy as usize) * x.w;
                for kx in 0..k {
                    let ix = (ox * s + kx) as isize - g.left as isize;
                    let d = &mut seg[kx * cin..(kx + 1) * cin];
                    if ix < 0 || ix >= x.w as isize {
                        d.fill(0.0);
                    } else {
                        let at = (line + ix as usize) * cin;
                        d.copy_from_slice(&x.data[at..at + cin]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::models::cpu::test_util::{act_from, rel_max_diff, tensor_from};

    fn reference(
        x: &Tensor,
        wt: &Tensor,
        b: &Tensor,
        stride: usize,
        pad: Padding,
        res: Option<&Tensor>,
        act: Activation,
    ) -> Tensor {
        let (_, _, h, w) = x.dims4().unwrap();
        let g = geometry(pad, h, w, wt.dim(2).unwrap(), stride).unwrap();
        let xp = x
            .pad_with_zeros(2, g.top, g.bottom)
            .unwrap()
            .pad_with_zeros(3, g.left, g.right)
            .unwrap();
        let cout = wt.dim(0).unwrap();
        let mut y = xp
            .conv2d(wt, 0, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        if let Some(r) = res {
            y = (y + r).unwrap();
        }
        crate::models::candle_net::apply(act, y).unwrap()
    }

    #[test]
    fn dense_conv_equals_candle_conv() {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, pad, h, w, act, with_res) in [
            (
                5,
                4,
                3,
                1,
                Padding::Symmetric(1),
                9,
                7,
                Activation::Relu,
                true,
            ),
            (
                3,
                8,
                7,
                2,
                Padding::Symmetric(3),
                17,
                15,
                Activation::Relu,
                false,
            ),
            (
                40,
                24,
                1,
                2,
                Padding::Symmetric(0),
                8,
                9,
                Activation::None,
                false,
            ),
            (
                16,
                48,
                1,
                1,
                Padding::Symmetric(0),
                5,
                6,
                Activation::Relu6,
                false,
            ),
            (
                48,
                16,
                1,
                1,
                Padding::Symmetric(0),
                5,
                6,
                Activation::None,
                true,
            ),
            (3, 32, 3, 2, Padding::Same, 10, 9, Activation::Relu6, false),
            (
                64,
                40,
                3,
                2,
                Padding::Symmetric(1),
                13,
                11,
                Activation::Relu,
                false,
            ),
        ] {
            let x = Tensor::randn(0f32, 1., (3, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (cout, cin, k, k), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., cout, &dev).unwrap();
            let op = DenseConv::new(
                &wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.to_vec1().unwrap(),
                cin,
                cout,
                k,
                stride,
                pad,
                act,
            );
            let g = geometry(pad, h, w, k, stride).unwrap();
            let res = with_res
                .then(|| Tensor::randn(0f32, 1., (3, cout, g.out_h, g.out_w), &dev).unwrap());
            let res_act = res.as_ref().map(act_from);
            let mut bufs = Buffers::default();
            let got = op
                .forward(&act_from(&x), res_act.as_ref(), &mut bufs)
                .unwrap();
            let want = reference(&x, &wt, &b, stride, pad, res.as_ref(), act);
            let diff = rel_max_diff(&tensor_from(&got), &want);
            assert!(diff < 1e-5, "cin={cin} k={k} s={stride}: rel diff {diff}");
        }
    }

    #[test]
    fn wrong_channel_count_is_an_error() {
        let op = DenseConv::new(
            &[0.0; 12],
            vec![0.0; 4],
            3,
            4,
            1,
            1,
            Padding::Symmetric(0),
            Activation::None,
        );
        let x = Act {
            n: 1,
            h: 2,
            w: 2,
            c: 2,
            data: vec![0.0; 8],
        };
        assert!(op.forward(&x, None, &mut Buffers::default()).is_err());
    }
}
