//! 3×3 stride-1 convolution by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray, 2016):
//! each 4×4 output tile costs 36 multiplications per (input, output) channel pair instead of 144.
//!
//! Per block of tiles: the input transform `V = Bᵀ·d·B` writes 36 matrices `[tiles, Cin]`, 36
//! gemms multiply them by the filter transforms `U = G·g·Gᵀ` (`[Cin, Cout]`, computed once at load
//! in f64), and the output transform `Y = Aᵀ·M·A` adds bias and residual and applies the
//! activation as it writes the output. The error stays within a few 1e-6 relative per layer
//! (see the tests and docs/performance.md).

use rayon::prelude::*;

use super::kernels::{self, L};
use super::{
    sgemm, with_scratch, Act, Buffers, DenseConv, SharedMut, BIG_WEIGHTS, BLOCKS_PER_THREAD,
};
use crate::models::layers::{Activation, Padding};
use crate::{Error, Result};

/// Target size of one block's transformed tiles (input + products), in values.
const TILE_BUDGET: usize = 512 * 1024;

/// The filter transform G of F(4, 3).
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3×3, stride-1, padding-1 convolution with batch-norm folded in, run by Winograd F(4×4, 3×3).
#[derive(Debug)]
pub(crate) struct WinogradConv {
    cin: usize,
    cout: usize,
    /// `[36, Cin, Cout]`: the transformed filters.
    u: Vec<f32>,
    bias: Vec<f32>,
    act: Activation,
    /// The same layer as im2col + gemm, for batches with few tiles: there, packing 36 filter
    /// transforms per product costs more than the multiplications Winograd saves.
    direct: Box<DenseConv>,
}

/// Below this many tiles in a batch, the direct path is faster (measured on ResNet-18 at
/// batch 1, where layer 3 has 16 tiles and layer 4 has 4).
const MIN_TILES: usize = 32;

impl WinogradConv {
    /// Whether a convolution of this shape can run here.
    pub fn supports(cin: usize, cout: usize, k: usize, stride: usize, padding: Padding) -> bool {
        k == 3
            && stride == 1
            && padding == Padding::Symmetric(1)
            && cin.is_multiple_of(L)
            && cout.is_multiple_of(L)
    }

    /// From PyTorch-layout folded weights `[cout, cin, 3, 3]` and bias `[cout]`.
    pub fn new(oihw: &[f32], bias: Vec<f32>, cin: usize, cout: usize, act: Activation) -> Self {
        assert_eq!(oihw.len(), cout * cin * 9);
        assert_eq!(bias.len(), cout);
        let mut u = vec![0f32; 36 * cin * cout];
        for co in 0..cout {
            for ci in 0..cin {
                let g = &oihw[(co * cin + ci) * 9..(co * cin + ci + 1) * 9];
                // G·g (6×3), then (G·g)·Gᵀ (6×6), in f64.
                let mut gg = [[0f64; 3]; 6];
                for (i, row) in gg.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[i][k] * g[k * 3 + j] as f64).sum();
                    }
                }
                for i in 0..6 {
                    for j in 0..6 {
                        let v: f64 = (0..3).map(|k| gg[i][k] * G[j][k]).sum();
                        u[((i * 6 + j) * cin + ci) * cout + co] = v as f32;
                    }
                }
            }
        }
        let direct = Box::new(DenseConv::new(
            oihw,
            bias.clone(),
            cin,
            cout,
            3,
            1,
            Padding::Symmetric(1),
            act,
        ));
        Self {
            cin,
            cout,
            u,
            bias,
            act,
            direct,
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
        let (n, h, w, cout) = (x.n, x.h, x.w, self.cout);
        if let Some(r) = residual {
            if r.data.len() != n * h * w * cout {
                return Err(Error::Input("residual does not match the output".into()));
            }
        }
        if n * h.div_ceil(4) * w.div_ceil(4) < MIN_TILES {
            return self.direct.forward(x, residual, bufs);
        }
        self.forward_tiles(x, residual, bufs)
    }

    /// The Winograd path, whatever the batch (checked inputs).
    fn forward_tiles(&self, x: &Act, residual: Option<&Act>, bufs: &mut Buffers) -> Result<Act> {
        let (n, h, w, cout) = (x.n, x.h, x.w, self.cout);
        let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
        let tile_rows = n * th;
        let threads = rayon::current_num_threads().max(1);
        let tiles = (TILE_BUDGET / (36 * (self.cin + cout)))
            .clamp(32, 256)
            .min((tile_rows * tw).div_ceil(threads * BLOCKS_PER_THREAD));
        let rows_per_block = (tiles / tw).max(1);
        let row_len = w * cout;
        // Offset in the output of global tile row g (image g / th, tile row g % th).
        let start = |g: usize| ((g / th) * h + (g % th) * 4).min((g / th) * h + h) * row_len;
        let mut out = bufs.take(n * h * w * cout);
        let mut blocks = Vec::with_capacity(tile_rows.div_ceil(rows_per_block));
        let mut rest: &mut [f32] = &mut out;
        let mut g = 0;
        while g < tile_rows {
            let g1 = (g + rows_per_block).min(tile_rows);
            let end = if g1 == tile_rows {
                n * h * row_len
            } else {
                start(g1)
            };
            let (a, b) = rest.split_at_mut(end - start(g));
            blocks.push((g, g1, a));
            rest = b;
            g = g1;
        }
        if self.cin * cout > BIG_WEIGHTS {
            // Large filters: transform every tile, then 36 whole-layer products (each filter
            // packed once), then the output transform.
            // Layout [tile][ξ][channel]: a block's tiles are one contiguous run of V (no two
            // tasks ever hold overlapping slices), and product ξ reads rows of stride 36·cin.
            let (cin, nt) = (self.cin, tile_rows * tw);
            let mut v = bufs.take(36 * nt * cin);
            let mut m = bufs.take(36 * nt * cout);
            let mut parts = Vec::with_capacity(blocks.len());
            let mut rest: &mut [f32] = &mut v;
            for (g0, g1, _) in &blocks {
                let (part, tail) = rest.split_at_mut((g1 - g0) * tw * 36 * cin);
                parts.push((*g0, *g1, part));
                rest = tail;
            }
            parts.into_par_iter().for_each(|(g0, g1, part)| {
                self.transform_in(x, g0, g1, part, cin, 36 * cin);
            });
            let threads = rayon::current_num_threads().max(1);
            let per = 36usize.div_ceil(threads * 3);
            let (mp, vp) = (SharedMut(m.as_mut_ptr()), SharedMut(v.as_mut_ptr()));
            (0..36).into_par_iter().step_by(per).for_each(|xi0| {
                for xi in xi0..(xi0 + per).min(36) {
                    // SAFETY: M and V are [nt, 36, c] buffers of the sizes taken above; product ξ
                    // reads V's column block ξ and writes M's column block ξ only (disjoint from
                    // every other ξ's), through raw pointers: no references overlap.
                    unsafe {
                        sgemm(
                            nt,
                            cout,
                            cin,
                            mp.get().add(xi * cout),
                            36 * cout,
                            false,
                            vp.get().add(xi * cin),
                            36 * cin,
                            self.u[xi * cin * cout..].as_ptr(),
                            cout,
                            1,
                        );
                    }
                }
            });
            blocks.into_par_iter().for_each(|(g0, g1, dst)| {
                let base = start(g0);
                self.transform_out(
                    x.h,
                    x.w,
                    residual,
                    g0,
                    g1,
                    &m[g0 * tw * 36 * cout..],
                    (cout, 36 * cout),
                    dst,
                    base,
                );
            });
            bufs.give(Act {
                data: v,
                ..Default::default()
            });
            bufs.give(Act {
                data: m,
                ..Default::default()
            });
        } else {
            blocks.into_par_iter().for_each(|(g0, g1, dst)| {
                let nt = (g1 - g0) * tw;
                let (cin, cout) = (self.cin, self.cout);
                with_scratch(36 * nt * (cin + cout), |scratch| {
                    let (v, m) = scratch.split_at_mut(36 * nt * cin);
                    self.transform_in(x, g0, g1, v, nt * cin, cin);
                    self.multiply(v, nt, m);
                    let strides = (nt * cout, cout);
                    self.transform_out(x.h, x.w, residual, g0, g1, m, strides, dst, start(g0));
                });
            });
        }
        Ok(Act {
            n,
            h,
            w,
            c: cout,
            data: out,
        })
    }

    /// Input transform of tile rows `g0 .. g1` into `v`: position ξ of tile t (counted from
    /// the block's first tile) at `v[ξ·stride + t·tile_stride]`.
    fn transform_in(
        &self,
        x: &Act,
        g0: usize,
        g1: usize,
        v: &mut [f32],
        stride: usize,
        tile_stride: usize,
    ) {
        let (h, w, cin) = (x.h, x.w, self.cin);
        let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
        for ti in 0..(g1 - g0) * tw {
            let g = g0 + ti / tw;
            let (img, ty, tx) = (g / th, g % th, ti % tw);
            let mut patch: [Option<&[f32]>; 36] = [None; 36];
            for i in 0..6 {
                let iy = (ty * 4 + i) as isize - 1;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                for j in 0..6 {
                    let ix = (tx * 4 + j) as isize - 1;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let at = ((img * h + iy as usize) * w + ix as usize) * cin;
                    patch[i * 6 + j] = Some(&x.data[at..at + cin]);
                }
            }
            kernels::winograd_input(&patch, cin, &mut v[ti * tile_stride..], stride);
        }
    }

    /// Products `M_ξ = V_ξ · U_ξ` over `nt` tiles, planes of `nt·cin` (V) and `nt·cout` (M)
    /// values, on this thread.
    fn multiply(&self, v: &[f32], nt: usize, m: &mut [f32]) {
        let (cin, cout) = (self.cin, self.cout);
        assert!(v.len() >= 36 * nt * cin && m.len() >= 36 * nt * cout);
        for xi in 0..36 {
            // SAFETY: V_ξ is [nt, cin], U_ξ [cin, cout], M_ξ [nt, cout]; all in bounds
            // (asserted) and disjoint.
            unsafe {
                sgemm(
                    nt,
                    cout,
                    cin,
                    m[xi * nt * cout..].as_mut_ptr(),
                    cout,
                    false,
                    v[xi * nt * cin..].as_ptr(),
                    cin,
                    self.u[xi * cin * cout..].as_ptr(),
                    cout,
                    1,
                );
            }
        }
    }

    /// Output transform of tile rows `g0 .. g1` from `m` (position ξ of tile t at
    /// `m[ξ·stride + t·tile_stride]`) into `dst`, which starts at output offset `base`.
    #[allow(clippy::too_many_arguments)]
    fn transform_out(
        &self,
        h: usize,
        w: usize,
        residual: Option<&Act>,
        g0: usize,
        g1: usize,
        m: &[f32],
        (stride, tile_stride): (usize, usize),
        dst: &mut [f32],
        base: usize,
    ) {
        let cout = self.cout;
        let (th, tw) = (h.div_ceil(4), w.div_ceil(4));
        let ptr = dst.as_mut_ptr();
        let len = dst.len();
        for ti in 0..(g1 - g0) * tw {
            let g = g0 + ti / tw;
            let (img, ty, tx) = (g / th, g % th, ti % tw);
            let mut out: [Option<&mut [f32]>; 16] = Default::default();
            let mut res: [Option<&[f32]>; 16] = [None; 16];
            for i in 0..4 {
                let oy = ty * 4 + i;
                if oy >= h {
                    break;
                }
                for j in 0..4 {
                    let ox = tx * 4 + j;
                    if ox >= w {
                        break;
                    }
                    let at = ((img * h + oy) * w + ox) * cout;
                    let local = at - base;
                    assert!(local + cout <= len);
                    // SAFETY: in bounds (asserted); each (oy, ox) is a distinct pixel, so the
                    // 16 slices are disjoint, and `dst` is not otherwise used meanwhile.
                    out[i * 4 + j] =
                        Some(unsafe { std::slice::from_raw_parts_mut(ptr.add(local), cout) });
                    res[i * 4 + j] = residual.map(|r| &r.data[at..at + cout]);
                }
            }
            kernels::winograd_output(
                &m[ti * tile_stride..],
                stride,
                cout,
                &self.bias,
                self.act,
                &res,
                &mut out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::models::cpu::test_util::{act_from, rel_l2, rel_max_diff, tensor_from};

    #[test]
    fn winograd_equals_direct_convolution() {
        let dev = Device::Cpu;
        for (cin, cout, h, w, n, with_res) in [
            (16, 16, 8, 8, 1, false),
            (16, 32, 7, 7, 3, true),
            (32, 16, 14, 9, 2, true),
            (64, 64, 5, 13, 2, false),
            (16, 16, 1, 1, 2, true),
            (16, 16, 2, 3, 1, false),
            // Large filters (the whole-layer path).
            (256, 128, 7, 7, 3, true),
            (128, 256, 6, 9, 2, false),
        ] {
            let x = Tensor::randn(0f32, 1., (n, cin, h, w), &dev).unwrap();
            // He-initialised filters, as in a trained network's scale.
            let std = (2.0 / (9 * cin) as f32).sqrt();
            let wt = Tensor::randn(0f32, std, (cout, cin, 3, 3), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., cout, &dev).unwrap();
            let res = with_res.then(|| Tensor::randn(0f32, 1., (n, cout, h, w), &dev).unwrap());
            let op = WinogradConv::new(
                &wt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.to_vec1().unwrap(),
                cin,
                cout,
                Activation::Relu,
            );
            let res_act = res.as_ref().map(act_from);
            // The Winograd path itself (whatever the tile count), and the public entry point,
            // which takes the direct path for small batches.
            let got = op
                .forward_tiles(&act_from(&x), res_act.as_ref(), &mut Buffers::default())
                .unwrap();
            let via_forward = op
                .forward(&act_from(&x), res_act.as_ref(), &mut Buffers::default())
                .unwrap();
            let mut want = x
                .conv2d(&wt, 1, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, cout, 1, 1)).unwrap())
                .unwrap();
            if let Some(r) = &res {
                want = (want + r).unwrap();
            }
            let want = want.relu().unwrap();
            // Winograd's transforms round more than a direct sum: bounded by a few 1e-6
            // relative in L2 and a few 1e-5 in the worst element.
            let got = tensor_from(&got);
            assert!(rel_l2(&tensor_from(&via_forward), &want) < 1e-5);
            let diff = rel_max_diff(&got, &want);
            let l2 = rel_l2(&got, &want);
            assert!(
                diff < 5e-5 && l2 < 1e-5,
                "{cin}→{cout} {h}×{w}: worst element {diff}, L2 {l2}"
            );
        }
    }

    #[test]
    fn only_3x3_stride_1_padding_1_is_supported() {
        assert!(WinogradConv::supports(64, 64, 3, 1, Padding::Symmetric(1)));
        assert!(!WinogradConv::supports(64, 64, 3, 2, Padding::Symmetric(1)));
        assert!(!WinogradConv::supports(64, 64, 3, 1, Padding::Same));
        assert!(!WinogradConv::supports(3, 64, 3, 1, Padding::Symmetric(1)));
    }
}
