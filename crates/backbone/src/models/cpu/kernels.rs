//! The element-wise inner loops of the engine, compiled twice: for AVX2 + FMA (chosen at run time
//! when the CPU has them) and for the baseline target. Each loop works on fixed-size channel
//! chunks so that the compiler keeps them in vector registers.

use crate::models::layers::Activation;

/// Channels per vector chunk in the transforms.
pub(crate) const L: usize = 16;

/// Defines `pub(crate) fn $name(args)` whose body is compiled once with AVX2 + FMA enabled and
/// once for the baseline target; the body sees `const FMA: bool` telling which.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner<const FMA: bool>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn fast($($arg: $ty),*) {
                        inner::<true>($($arg),*)
                    }
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { fast($($arg),*) };
                }
            }
            inner::<false>($($arg),*)
        }
    };
}

/// max(v, 0) that keeps NaN (as candle's and PyTorch's ReLU do), so that a non-finite feature
/// is never hidden as 0.
#[inline(always)]
fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// `a·b + c`, fused where the CPU has FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

multiversion! {
    /// Applies `act` in place.
    fn activate(dst: &mut [f32], act: Activation) {
        let _ = FMA;
        match act {
            Activation::None => {}
            Activation::Relu => dst.iter_mut().for_each(|v| *v = relu(*v)),
            Activation::Relu6 => dst.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}

multiversion! {
    /// `dst[r][:] += Σ_k lhs[r][k] · w[k][:]` for a small inner dimension `k` (memory-bound
    /// 1×1 convolutions with few input channels, where gemm's packing costs more than it saves).
    /// `lhs` is `[rows, k]`, `w` is `[k, n]`, `dst` is `[rows, n]`, all row-major.
    fn small_k_gemm(lhs: &[f32], k: usize, w: &[f32], n: usize, dst: &mut [f32]) {
        const C: usize = 32;
        for (r, drow) in dst.chunks_exact_mut(n).enumerate() {
            let a = &lhs[r * k..(r + 1) * k];
            let mut j = 0;
            while j + C <= n {
                let mut acc = [0f32; C];
                acc.copy_from_slice(&drow[j..j + C]);
                for (kk, &av) in a.iter().enumerate() {
                    let wr = &w[kk * n + j..kk * n + j + C];
                    for l in 0..C {
                        acc[l] = madd::<FMA>(av, wr[l], acc[l]);
                    }
                }
                drow[j..j + C].copy_from_slice(&acc);
                j += C;
            }
            for (jj, d) in drow.iter_mut().enumerate().skip(j) {
                let mut s = *d;
                for (kk, &av) in a.iter().enumerate() {
                    s = madd::<FMA>(av, w[kk * n + jj], s);
                }
                *d = s;
            }
        }
    }
}

multiversion! {
    /// One output row of a channels-last depthwise convolution with bias and activation.
    /// `rows[ky]` is input row `oy·s + ky − top` (None where it falls in the padding), each
    /// `[w, c]`; `wt` is `[k·k, c]`; `dst` is `[ow, c]`.
    fn depthwise_row(
        rows: &[Option<&[f32]>],
        w: usize,
        c: usize,
        k: usize,
        stride: usize,
        left: usize,
        wt: &[f32],
        bias: &[f32],
        act: Activation,
        dst: &mut [f32],
    ) {
        for (ox, px) in dst.chunks_exact_mut(c).enumerate() {
            px.copy_from_slice(bias);
            for (ky, row) in rows.iter().enumerate() {
                let Some(row) = row else { continue };
                for kx in 0..k {
                    let ix = (ox * stride + kx) as isize - left as isize;
                    if ix < 0 || ix >= w as isize {
                        continue;
                    }
                    let src = &row[ix as usize * c..(ix as usize + 1) * c];
                    let wk = &wt[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                    for ((o, &x), &wv) in px.iter_mut().zip(src).zip(wk) {
                        *o = madd::<FMA>(x, wv, *o);
                    }
                }
            }
            match act {
                Activation::None => {}
                Activation::Relu => px.iter_mut().for_each(|v| *v = relu(*v)),
                Activation::Relu6 => px.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
            }
        }
    }
}

/// `Bᵀ·d` along one axis of a 6-point Winograd F(4, 3) input tile (Lavin & Gray's points
/// 0, ±1, ±2, ∞ with ±½ folded into the filter transform).
#[inline(always)]
fn bt6(d: [&[f32; L]; 6]) -> [[f32; L]; 6] {
    let mut r = [[0f32; L]; 6];
    for l in 0..L {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * (d1 + d2) + d3 + d4;
        r[2][l] = 4.0 * (d1 - d2) - d3 + d4;
        r[3][l] = 2.0 * (d3 - d1) - d2 + d4;
        r[4][l] = 2.0 * (d1 - d3) - d2 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `Aᵀ·m` along one axis of a Winograd F(4, 3) product tile: 6 points → 4 outputs.
#[inline(always)]
fn at6(m: [&[f32; L]; 6]) -> [[f32; L]; 4] {
    let mut r = [[0f32; L]; 4];
    for l in 0..L {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (a, b) = (m1 + m2, m1 - m2);
        let (c, d) = (m3 + m4, m3 - m4);
        r[0][l] = m0 + a + c;
        r[1][l] = b + 2.0 * d;
        r[2][l] = a + 4.0 * c;
        r[3][l] = b + 8.0 * d + m5;
    }
    r
}

multiversion! {
    /// Input transform `Bᵀ·d·B` of one 6×6 tile. `patch[i·6 + j]` is the input pixel (all its
    /// `c` channels) at tile position (i, j), or None in the padding. Writes position ξ's
    /// `c` values at `v[ξ·stride ..]`.
    fn winograd_input(patch: &[Option<&[f32]>; 36], c: usize, v: &mut [f32], stride: usize) {
        let _ = FMA;
        let zero = [0f32; L];
        let mut c0 = 0;
        while c0 + L <= c {
            let mut x = [[[0f32; L]; 6]; 6];
            for (p, px) in patch.iter().enumerate() {
                if let Some(px) = px {
                    x[p / 6][p % 6].copy_from_slice(&px[c0..c0 + L]);
                }
            }
            let _ = &zero;
            let mut t = [[[0f32; L]; 6]; 6];
            for j in 0..6 {
                let col = bt6([&x[0][j], &x[1][j], &x[2][j], &x[3][j], &x[4][j], &x[5][j]]);
                for i in 0..6 {
                    t[i][j] = col[i];
                }
            }
            for (i, ti) in t.iter().enumerate() {
                let row = bt6([&ti[0], &ti[1], &ti[2], &ti[3], &ti[4], &ti[5]]);
                for (j, r) in row.iter().enumerate() {
                    let at = (i * 6 + j) * stride + c0;
                    v[at..at + L].copy_from_slice(r);
                }
            }
            c0 += L;
        }
    }
}

multiversion! {
    /// Output transform `Aᵀ·m·A` of one tile, plus bias, residual and activation.
    /// `m[ξ·stride + ch]` holds the 36 products; `out[p]` is the output pixel at tile position
    /// `p = i·4 + j` (None outside the image), `res[p]` its residual.
    fn winograd_output(
        m: &[f32],
        stride: usize,
        c: usize,
        bias: &[f32],
        act: Activation,
        res: &[Option<&[f32]>; 16],
        out: &mut [Option<&mut [f32]>; 16],
    ) {
        let _ = FMA;
        let mut c0 = 0;
        while c0 + L <= c {
            let mut x = [[[0f32; L]; 6]; 6];
            for (xi, row) in x.iter_mut().enumerate() {
                for (xj, v) in row.iter_mut().enumerate() {
                    let at = (xi * 6 + xj) * stride + c0;
                    v.copy_from_slice(&m[at..at + L]);
                }
            }
            let mut s = [[[0f32; L]; 6]; 4];
            for j in 0..6 {
                let col = at6([&x[0][j], &x[1][j], &x[2][j], &x[3][j], &x[4][j], &x[5][j]]);
                for i in 0..4 {
                    s[i][j] = col[i];
                }
            }
            let b = &bias[c0..c0 + L];
            for (i, si) in s.iter().enumerate() {
                let row = at6([&si[0], &si[1], &si[2], &si[3], &si[4], &si[5]]);
                for (j, y) in row.iter().enumerate() {
                    let p = i * 4 + j;
                    let Some(dst) = out[p].as_deref_mut() else { continue };
                    let dst = &mut dst[c0..c0 + L];
                    match res[p] {
                        Some(r) => {
                            let r = &r[c0..c0 + L];
                            for l in 0..L {
                                dst[l] = y[l] + b[l] + r[l];
                            }
                        }
                        None => {
                            for l in 0..L {
                                dst[l] = y[l] + b[l];
                            }
                        }
                    }
                    match act {
                        Activation::None => {}
                        Activation::Relu => dst.iter_mut().for_each(|v| *v = relu(*v)),
                        Activation::Relu6 => dst.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
                    }
                }
            }
            c0 += L;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_keep_nan_so_non_finite_features_are_not_hidden() {
        let mut v = [f32::NAN, -1.0, 2.0, 7.0];
        activate(&mut v, Activation::Relu);
        assert!(v[0].is_nan() && v[1] == 0.0 && v[2] == 2.0 && v[3] == 7.0);
        let mut v = [f32::NAN, -1.0, 7.0];
        activate(&mut v, Activation::Relu6);
        assert!(v[0].is_nan() && v[1] == 0.0 && v[2] == 6.0);
    }
}
