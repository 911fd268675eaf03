//! PIL-exact resampling: a re-implementation of the 8-bit path of Pillow's
//! `src/libImaging/Resample.c`, which `Image.resize(size, BILINEAR | BICUBIC)` and therefore
//! torchvision's `Resize` on PIL images use.
//!
//! The algorithm, reproduced step by step so that the output is bit-identical:
//!
//! - separable: a horizontal pass into an 8-bit intermediate image, then a vertical pass (or the
//!   other way round when the height shrinks much more than the width, as Pillow ≥ 13 does, see
//!   [`horizontal_first`]); each pass rounds and clips to `u8`;
//! - the filter support is scaled by the downscale factor (antialiasing), `center = (x + 0.5) *
//!   scale`, the taps span `[int(center - support + 0.5), int(center + support + 0.5))` clipped to
//!   the image, and the weights `filter((x - center + 0.5) / filterscale)` are computed in `f64`
//!   and normalised to sum to one;
//! - the weights are then converted to fixed point with 22 fractional bits (`PRECISION_BITS = 32 -
//!   8 - 2`, rounding half away from zero) and the sums are accumulated in `i32` starting at
//!   `1 << 21`, then shifted and clipped;
//! - the first pass only covers the source rows (or columns) that the second pass reads.
//!
//! On top of Pillow, every function here can compute an arbitrary *window* of the resized image
//! without computing the rest: each output pixel only depends on its own coefficients, so a window
//! is bit-identical to the same region of the full resize. [`super::eval_crop`] uses this to resize
//! and centre-crop in one step, which keeps extreme aspect ratios (a 4000×10 image "resizes" to
//! 102400×256) cheap.

use image::RgbImage;

use crate::config::Interpolation;

/// Fixed-point precision of the weights for 8-bit images, as in Pillow.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// `1 << PRECISION_BITS` as `f64`.
const ONE: f64 = (1u32 << PRECISION_BITS) as f64;
/// Rounding offset added to every accumulator.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// A resampling filter: kernel and support (half-width) at scale 1.
#[derive(Clone, Copy)]
struct Filter {
    support: f64,
    kernel: fn(f64) -> f64,
}

/// Pillow's `bilinear_filter` (triangle).
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Pillow's `bicubic_filter`: Keys' cubic convolution with `a = -0.5`, evaluated with the same
/// operation order as the C code.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn filter_of(interp: Interpolation) -> Filter {
    match interp {
        Interpolation::Bilinear => Filter {
            support: 1.0,
            kernel: triangle,
        },
        Interpolation::Bicubic => Filter {
            support: 2.0,
            kernel: cubic,
        },
    }
}

/// Fixed-point coefficients for a window of output positions along one axis.
struct Coeffs {
    /// Stride of `weights` (Pillow's `ksize`).
    ksize: usize,
    /// Per output position: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `bounds.len() * ksize` weights with `PRECISION_BITS` fractional bits.
    weights: Vec<i32>,
}

impl Coeffs {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)` resized to
    /// `out_size`, restricted to output positions `first .. first + count`.
    fn new(in_size: usize, out_size: u64, first: u64, count: usize, filter: Filter) -> Coeffs {
        // Pillow keeps the source box in `float`; `in1 - in0` is a float subtraction.
        let in1 = in_size as f32;
        let scale = f64::from(in1) / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = filter.support * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let ss = 1.0 / filterscale;

        let mut bounds = Vec::with_capacity(count);
        let mut weights = vec![0i32; count * ksize];
        let mut w = vec![0f64; ksize];
        for (i, xx) in (first..first + count as u64).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, like `as`.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = ((xmax - xmin).max(0) as usize).min(ksize);
            let xmin = xmin as usize;
            let mut ww = 0.0;
            for (x, wx) in w[..n].iter_mut().enumerate() {
                let v = (filter.kernel)(((x + xmin) as f64 - center + 0.5) * ss);
                *wx = v;
                ww += v;
            }
            let row = &mut weights[i * ksize..i * ksize + n];
            for (dst, &wx) in row.iter_mut().zip(&w[..n]) {
                let k = if ww != 0.0 { wx / ww } else { wx };
                *dst = if k < 0.0 {
                    (-0.5 + k * ONE) as i32
                } else {
                    (0.5 + k * ONE) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Coeffs {
            ksize,
            bounds,
            weights,
        }
    }

    /// Taps of output position `i` (window-relative): first source index and weights.
    #[inline]
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        (start, &self.weights[i * self.ksize..i * self.ksize + n])
    }

    /// Makes the source indices relative to `origin` (after cropping the source at `origin`).
    fn shift(&mut self, origin: usize) {
        for b in &mut self.bounds {
            b.0 -= origin;
        }
    }

    /// Source range `[first, last)` read by all positions.
    fn span(&self) -> (usize, usize) {
        let first = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let last = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
        (first, last)
    }
}

/// Pillow's `clip8`: drop the fractional bits and clamp to `0..=255`.
#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A rectangle of a packed RGB8 buffer.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    /// Whole buffer, rows of `stride` bytes.
    pub data: &'a [u8],
    /// Bytes per row of `data`.
    pub stride: usize,
    /// Left column of the rectangle.
    pub x0: usize,
    /// Top row of the rectangle.
    pub y0: usize,
    /// Width of the rectangle.
    pub w: usize,
    /// Height of the rectangle.
    pub h: usize,
}

impl<'a> View<'a> {
    /// The whole image.
    pub fn full(img: &'a RgbImage) -> Self {
        View {
            data: img.as_raw(),
            stride: img.width() as usize * 3,
            x0: 0,
            y0: 0,
            w: img.width() as usize,
            h: img.height() as usize,
        }
    }

    /// Row `y` of the rectangle, starting at its left column.
    #[inline]
    fn row(&self, y: usize) -> &'a [u8] {
        let start = (self.y0 + y) * self.stride + self.x0 * 3;
        &self.data[start..start + self.w * 3]
    }
}

/// Where a window is written: rows of `stride` bytes, starting at byte `offset` of `data`.
pub(crate) struct Dest<'a> {
    /// Destination buffer.
    pub data: &'a mut [u8],
    /// Bytes per row of `data`.
    pub stride: usize,
    /// Byte offset of the window's top-left pixel.
    pub offset: usize,
}

impl Dest<'_> {
    #[inline]
    fn row(&mut self, y: usize, len: usize) -> &mut [u8] {
        let start = self.offset + y * self.stride;
        &mut self.data[start..start + len]
    }
}

/// Output window of a resize: columns `x .. x + w` and rows `y .. y + h` of the full
/// `out_w × out_h` result.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    /// Full output width (may exceed `u32`: only the window is computed).
    pub out_w: u64,
    /// Full output height.
    pub out_h: u64,
    /// First output column computed.
    pub x: u64,
    /// First output row computed.
    pub y: u64,
    /// Number of columns computed.
    pub w: usize,
    /// Number of rows computed.
    pub h: usize,
}

/// Horizontal pass over view rows `rows_from .. rows_from + rows`, into `dst` rows `0..rows`.
fn horizontal(src: &View, rows_from: usize, rows: usize, c: &Coeffs, dst: &mut Dest) {
    let out_len = c.bounds.len() * 3;
    for r in 0..rows {
        let line = src.row(rows_from + r);
        let out = dst.row(r, out_len);
        for (i, px) in out.chunks_exact_mut(3).enumerate() {
            let (start, k) = c.taps(i);
            let taps = &line[start * 3..(start + k.len()) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (p, &w) in taps.chunks_exact(3).zip(k) {
                s0 += i32::from(p[0]) * w;
                s1 += i32::from(p[1]) * w;
                s2 += i32::from(p[2]) * w;
            }
            px[0] = clip8(s0);
            px[1] = clip8(s1);
            px[2] = clip8(s2);
        }
    }
}

/// Vertical pass. `row_of(y)` returns source row `y` (already restricted to the window columns);
/// `c` holds source-row indices.
fn vertical<'s>(row_of: impl Fn(usize) -> &'s [u8], len: usize, c: &Coeffs, dst: &mut Dest) {
    let mut acc = vec![0i32; len];
    for j in 0..c.bounds.len() {
        let (start, k) = c.taps(j);
        acc.fill(HALF);
        for (t, &w) in k.iter().enumerate() {
            let src = &row_of(start + t)[..len];
            for (a, &p) in acc.iter_mut().zip(src) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in dst.row(j, len).iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Resizes `src` to `win.out_w × win.out_h` like Pillow, computing only the window `win` and
/// writing it to `dst`. `src` must be non-empty and the window inside the output.
pub(crate) fn resample_window(src: &View, win: Window, interp: Interpolation, dst: &mut Dest) {
    if win.w == 0 || win.h == 0 {
        return;
    }
    debug_assert!(src.w > 0 && src.h > 0);
    debug_assert!(win.x + win.w as u64 <= win.out_w && win.y + win.h as u64 <= win.out_h);
    let filter = filter_of(interp);
    let need_h = win.out_w != src.w as u64;
    let need_v = win.out_h != src.h as u64;
    let len = win.w * 3;
    match (need_h, need_v) {
        (false, false) => {
            let x = win.x as usize * 3;
            for j in 0..win.h {
                let row = &src.row(win.y as usize + j)[x..x + len];
                dst.row(j, len).copy_from_slice(row);
            }
        }
        (true, false) => {
            let hc = Coeffs::new(src.w, win.out_w, win.x, win.w, filter);
            horizontal(src, win.y as usize, win.h, &hc, dst);
        }
        (false, true) => {
            let vc = Coeffs::new(src.h, win.out_h, win.y, win.h, filter);
            let x = win.x as usize * 3;
            vertical(|y| &src.row(y)[x..x + len], len, &vc, dst);
        }
        (true, true) if horizontal_first(src, win) => {
            let vc = Coeffs::new(src.h, win.out_h, win.y, win.h, filter);
            let hc = Coeffs::new(src.w, win.out_w, win.x, win.w, filter);
            // Like Pillow's `ybox`: only the source rows the vertical pass reads.
            let (first, last) = vc.span();
            let rows = last - first;
            let mut tmp = vec![0u8; rows * len];
            horizontal(
                src,
                first,
                rows,
                &hc,
                &mut Dest {
                    data: &mut tmp,
                    stride: len,
                    offset: 0,
                },
            );
            let tmp = &tmp;
            vertical(
                |y| &tmp[(y - first) * len..(y - first + 1) * len],
                len,
                &vc,
                dst,
            );
        }
        (true, true) => {
            let vc = Coeffs::new(src.h, win.out_h, win.y, win.h, filter);
            let mut hc = Coeffs::new(src.w, win.out_w, win.x, win.w, filter);
            // Vertical pass over the source columns the horizontal pass reads.
            let (first, last) = hc.span();
            hc.shift(first);
            let cols = last - first;
            let tmp_len = cols * 3;
            let mut tmp = vec![0u8; win.h * tmp_len];
            vertical(
                |y| &src.row(y)[first * 3..last * 3],
                tmp_len,
                &vc,
                &mut Dest {
                    data: &mut tmp,
                    stride: tmp_len,
                    offset: 0,
                },
            );
            let tmp_view = View {
                data: &tmp,
                stride: tmp_len,
                x0: 0,
                y0: 0,
                w: cols,
                h: win.h,
            };
            horizontal(&tmp_view, 0, win.h, &hc, dst);
        }
    }
}

/// Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice as many
/// pixels as the width (`(in_h - out_h) > 0 && (in_h - out_h) > (in_w - out_w) * 2`, in pixels of
/// the whole output, not of the window). Earlier Pillow always went horizontal first; the two
/// orders differ by the rounding of the 8-bit intermediate image (a level here and there), and
/// for an aspect-preserving downscale only images more than twice as tall as wide are affected.
fn horizontal_first(src: &View, win: Window) -> bool {
    let dh = src.h as i128 - i128::from(win.out_h);
    let dw = src.w as i128 - i128::from(win.out_w);
    !(dh > 0 && dh > dw * 2)
}

/// PIL-exact resize: `Image.resize((width, height), resample)` on an RGB image with the default
/// `box` and `reducing_gap=None` (which is what torchvision's `Resize` calls; `antialias=True` is
/// PIL's only behaviour). The output is bit-identical to Pillow 13's, including its choice of
/// running the vertical pass first when the height shrinks by more than twice as many pixels as
/// the width; Pillow < 13 always starts with the horizontal pass, so in that case it differs by
/// a level here and there.
///
/// Pillow rejects zero sizes; here a zero `width` or `height` gives an empty image, and an empty
/// input gives a black one.
pub fn resize(img: &RgbImage, width: u32, height: u32, interp: Interpolation) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return out;
    }
    let stride = width as usize * 3;
    resample_window(
        &View::full(img),
        Window {
            out_w: u64::from(width),
            out_h: u64::from(height),
            x: 0,
            y: 0,
            w: width as usize,
            h: height as usize,
        },
        interp,
        &mut Dest {
            data: &mut out,
            stride,
            offset: 0,
        },
    );
    out
}

/// torchvision `F.resized_crop` on a PIL image: `img.crop((left, top, left + width, top +
/// height))` then `resize((out_w, out_h), interp)`. The crop box is in pixels of `img`; the parts
/// of the box outside the image read as black, as with PIL's `crop`. Unlike a resize with a `box`
/// argument, pixels outside the box never contribute (torchvision crops first). Bit-identical to
/// Pillow. An empty box gives a black image; a zero output size gives an empty one.
///
/// This is the primitive behind `RandomResizedCrop`.
#[allow(clippy::too_many_arguments)]
pub fn resized_crop(
    img: &RgbImage,
    left: u32,
    top: u32,
    width: u32,
    height: u32,
    out_w: u32,
    out_h: u32,
    interp: Interpolation,
) -> RgbImage {
    let mut out = RgbImage::new(out_w, out_h);
    if out_w == 0 || out_h == 0 || width == 0 || height == 0 {
        return out;
    }
    let inside = u64::from(left) + u64::from(width) <= u64::from(img.width())
        && u64::from(top) + u64::from(height) <= u64::from(img.height());
    let padded;
    let view = if inside {
        View {
            x0: left as usize,
            y0: top as usize,
            w: width as usize,
            h: height as usize,
            ..View::full(img)
        }
    } else {
        padded = crop_padded(img, left, top, width, height);
        View::full(&padded)
    };
    let stride = out_w as usize * 3;
    resample_window(
        &view,
        Window {
            out_w: u64::from(out_w),
            out_h: u64::from(out_h),
            x: 0,
            y: 0,
            w: out_w as usize,
            h: out_h as usize,
        },
        interp,
        &mut Dest {
            data: &mut out,
            stride,
            offset: 0,
        },
    );
    out
}

/// PIL `crop` with a box that may extend past the image: the outside is black.
fn crop_padded(img: &RgbImage, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    let x_end = (u64::from(left) + u64::from(width)).min(u64::from(img.width()));
    let y_end = (u64::from(top) + u64::from(height)).min(u64::from(img.height()));
    if u64::from(left) >= x_end || u64::from(top) >= y_end {
        return out;
    }
    let n = (x_end - u64::from(left)) as usize * 3;
    let src = View::full(img);
    let stride = width as usize * 3;
    for y in u64::from(top)..y_end {
        let row = &src.row(y as usize)[left as usize * 3..left as usize * 3 + n];
        let o = (y - u64::from(top)) as usize * stride;
        (*out)[o..o + n].copy_from_slice(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deterministic 7×5 test image of the Pillow references below.
    fn synthetic(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = |c: u32| ((x * 37 + y * 91 + c * 53 + x * y * 11 + (x ^ y) * 29) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    // Pillow references, produced once with Pillow 13.0.0 (python3 -m venv v && v/bin/pip install
    // pillow) by:
    //
    //   from PIL import Image
    //   def synthetic(w, h):
    //       im = Image.new("RGB", (w, h))
    //       im.putdata([tuple((x*37 + y*91 + c*53 + x*y*11 + (x ^ y)*29) % 256 for c in range(3))
    //                   for y in range(h) for x in range(w)])
    //       return im
    //   im = synthetic(7, 5)
    //   for f in (Image.BILINEAR, Image.BICUBIC):
    //       for size in ((3, 4), (11, 9), (6, 2)):
    //           print(list(im.resize(size, f).tobytes()))
    //       print(list(im.crop((1, 1, 6, 4)).resize((4, 4), f).tobytes()))
    //
    // 7×5 → 6×2 takes Pillow 13's vertical-first order (Pillow < 13 gives different values).

    const BILINEAR_3X4: [u8; 36] = [
        69, 122, 175, 112, 165, 120, 98, 151, 163, 114, 129, 182, 87, 140, 143, 142, 195, 106, 134,
        149, 170, 160, 117, 128, 110, 131, 138, 150, 134, 132, 133, 145, 93, 98, 138, 149,
    ];
    const BILINEAR_11X9: [u8; 297] = [
        0, 53, 106, 30, 83, 136, 72, 125, 178, 114, 167, 220, 156, 209, 169, 198, 251, 48, 77, 130,
        90, 26, 79, 132, 68, 121, 174, 110, 163, 216, 140, 193, 246, 40, 93, 146, 63, 116, 169, 91,
        144, 197, 93, 146, 199, 112, 165, 156, 144, 197, 80, 92, 145, 82, 76, 129, 97, 108, 161,
        129, 115, 168, 182, 117, 170, 223, 107, 160, 213, 118, 171, 224, 122, 175, 228, 58, 111,
        164, 40, 93, 135, 55, 108, 132, 118, 171, 69, 160, 213, 39, 176, 229, 54, 123, 176, 126,
        78, 131, 184, 173, 113, 166, 145, 135, 188, 102, 155, 208, 51, 104, 157, 48, 101, 154, 79,
        132, 185, 112, 165, 128, 145, 198, 77, 176, 229, 36, 137, 190, 127, 101, 154, 207, 240, 37,
        90, 164, 77, 130, 69, 122, 175, 52, 105, 158, 76, 129, 182, 132, 185, 238, 99, 152, 205,
        104, 157, 140, 160, 213, 33, 153, 206, 142, 140, 193, 246, 164, 104, 157, 141, 132, 185,
        113, 166, 206, 120, 173, 123, 145, 147, 109, 185, 96, 149, 176, 87, 140, 149, 99, 121, 98,
        138, 87, 96, 149, 150, 101, 154, 207, 117, 142, 195, 127, 164, 217, 142, 195, 224, 173,
        226, 93, 194, 164, 54, 206, 32, 85, 226, 51, 86, 180, 67, 100, 48, 80, 130, 55, 108, 161,
        78, 131, 184, 184, 66, 119, 146, 106, 159, 108, 161, 191, 164, 217, 84, 157, 179, 69, 104,
        71, 124, 164, 132, 76, 152, 143, 72, 45, 90, 128, 77, 130, 183, 117, 170, 223, 224, 21, 74,
        158, 71, 124, 88, 141, 171, 158, 211, 78, 135, 188, 78, 42, 95, 148, 127, 180, 70, 136,
        189, 56, 43, 96, 126, 90, 143, 196, 140, 193, 246,
    ];
    const BILINEAR_CROP_4X4: [u8; 48] = [
        109, 162, 215, 26, 79, 132, 116, 169, 72, 186, 239, 36, 82, 135, 188, 60, 113, 166, 107,
        160, 157, 161, 214, 51, 99, 152, 181, 127, 140, 137, 153, 110, 163, 122, 151, 84, 155, 208,
        197, 203, 149, 53, 237, 34, 87, 83, 72, 125,
    ];
    const BILINEAR_6X2: [u8; 36] = [
        107, 113, 166, 91, 144, 193, 90, 138, 148, 109, 151, 109, 129, 178, 87, 114, 167, 190, 161,
        101, 154, 120, 173, 167, 143, 150, 99, 163, 111, 111, 104, 124, 100, 101, 154, 193,
    ];
    const BICUBIC_6X2: [u8; 36] = [
        104, 111, 164, 87, 142, 200, 87, 137, 154, 107, 152, 108, 132, 183, 81, 115, 169, 198, 171,
        93, 153, 117, 179, 171, 142, 151, 89, 171, 105, 117, 99, 124, 94, 99, 156, 201,
    ];
    const BICUBIC_3X4: [u8; 36] = [
        65, 123, 178, 115, 167, 113, 95, 148, 167, 116, 125, 187, 73, 140, 142, 150, 206, 101, 134,
        152, 171, 171, 112, 124, 107, 124, 144, 151, 131, 134, 138, 154, 76, 93, 132, 156,
    ];
    const BICUBIC_11X9: [u8; 297] = [
        0, 38, 91, 15, 68, 121, 67, 120, 174, 120, 173, 245, 180, 233, 181, 211, 255, 40, 64, 117,
        80, 0, 46, 142, 57, 110, 185, 116, 169, 230, 152, 205, 255, 28, 87, 140, 53, 111, 164, 91,
        144, 198, 95, 148, 214, 122, 175, 161, 150, 203, 71, 86, 139, 69, 61, 114, 95, 103, 156,
        136, 116, 169, 193, 119, 172, 230, 104, 169, 222, 124, 183, 236, 131, 184, 237, 51, 103,
        158, 19, 72, 128, 45, 98, 131, 124, 177, 56, 179, 232, 18, 186, 239, 46, 119, 172, 128, 64,
        117, 187, 193, 113, 166, 161, 141, 193, 103, 160, 214, 30, 86, 149, 19, 77, 153, 62, 129,
        199, 108, 177, 136, 156, 220, 61, 197, 251, 12, 143, 195, 122, 92, 145, 215, 252, 31, 84,
        172, 75, 128, 64, 126, 179, 39, 99, 152, 73, 126, 179, 132, 185, 238, 94, 147, 219, 97,
        150, 138, 164, 217, 19, 156, 209, 142, 138, 191, 255, 164, 103, 156, 141, 132, 192, 113,
        171, 215, 116, 184, 114, 154, 153, 96, 204, 94, 147, 192, 63, 154, 151, 78, 129, 92, 135,
        82, 90, 151, 151, 100, 153, 210, 105, 148, 201, 120, 168, 234, 147, 202, 238, 181, 251, 79,
        203, 174, 29, 217, 22, 75, 253, 30, 79, 196, 57, 96, 34, 73, 135, 41, 106, 165, 76, 129,
        182, 192, 56, 109, 145, 95, 161, 101, 161, 198, 176, 239, 68, 163, 190, 54, 96, 70, 123,
        174, 139, 65, 165, 157, 55, 32, 80, 131, 71, 128, 194, 125, 178, 231, 245, 2, 55, 161, 52,
        118, 73, 137, 174, 170, 228, 65, 137, 197, 72, 27, 101, 154, 126, 203, 61, 145, 214, 34,
        35, 89, 125, 91, 143, 210, 154, 207, 255,
    ];
    const BICUBIC_CROP_4X4: [u8; 48] = [
        118, 171, 224, 11, 64, 132, 121, 174, 61, 196, 249, 30, 76, 128, 185, 47, 107, 177, 99,
        171, 171, 171, 228, 35, 92, 149, 179, 130, 146, 137, 155, 104, 179, 116, 151, 78, 156, 222,
        210, 208, 157, 37, 255, 14, 81, 66, 68, 132,
    ];

    #[test]
    fn resize_matches_pillow_bit_for_bit() {
        let img = synthetic(7, 5);
        let cases: [(Interpolation, u32, u32, &[u8]); 6] = [
            (Interpolation::Bilinear, 3, 4, &BILINEAR_3X4),
            (Interpolation::Bilinear, 11, 9, &BILINEAR_11X9),
            (Interpolation::Bilinear, 6, 2, &BILINEAR_6X2),
            (Interpolation::Bicubic, 3, 4, &BICUBIC_3X4),
            (Interpolation::Bicubic, 11, 9, &BICUBIC_11X9),
            (Interpolation::Bicubic, 6, 2, &BICUBIC_6X2),
        ];
        for (interp, w, h, expected) in cases {
            let out = resize(&img, w, h, interp);
            assert_eq!(out.as_raw().as_slice(), expected, "{interp:?} {w}x{h}");
        }
    }

    #[test]
    fn resized_crop_matches_pillow_crop_then_resize() {
        let img = synthetic(7, 5);
        for (interp, expected) in [
            (Interpolation::Bilinear, &BILINEAR_CROP_4X4),
            (Interpolation::Bicubic, &BICUBIC_CROP_4X4),
        ] {
            let out = resized_crop(&img, 1, 1, 5, 3, 4, 4, interp);
            assert_eq!(out.as_raw().as_slice(), expected.as_slice(), "{interp:?}");
        }
    }

    #[test]
    fn resized_crop_equals_crop_then_resize_and_pads_outside() {
        let img = synthetic(23, 17);
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            let cropped = image::imageops::crop_imm(&img, 3, 2, 15, 11).to_image();
            assert_eq!(
                resized_crop(&img, 3, 2, 15, 11, 9, 13, interp),
                resize(&cropped, 9, 13, interp)
            );
            // A box past the right/bottom edge reads black there, like PIL's crop.
            let padded = crop_padded(&img, 20, 15, 6, 4);
            assert_eq!(padded.get_pixel(0, 0), img.get_pixel(20, 15));
            assert_eq!(padded.get_pixel(3, 1), &image::Rgb([0, 0, 0]));
            assert_eq!(padded.get_pixel(0, 2), &image::Rgb([0, 0, 0]));
            assert_eq!(
                resized_crop(&img, 20, 15, 6, 4, 5, 5, interp),
                resize(&padded, 5, 5, interp)
            );
        }
    }

    #[test]
    fn window_equals_region_of_full_resize() {
        let img = synthetic(31, 19);
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            for (ow, oh) in [
                (13u32, 40u32),
                (31, 7),
                (50, 19),
                (31, 19),
                (8, 8),
                (40, 5),
                (25, 4),
            ] {
                let full = resize(&img, ow, oh, interp);
                let (x, y, w, h) = (ow / 4, oh / 3, ow / 2, oh / 2);
                let mut out = RgbImage::new(w, h);
                let stride = w as usize * 3;
                resample_window(
                    &View::full(&img),
                    Window {
                        out_w: u64::from(ow),
                        out_h: u64::from(oh),
                        x: u64::from(x),
                        y: u64::from(y),
                        w: w as usize,
                        h: h as usize,
                    },
                    interp,
                    &mut Dest {
                        data: &mut out,
                        stride,
                        offset: 0,
                    },
                );
                let expected = image::imageops::crop_imm(&full, x, y, w, h).to_image();
                assert_eq!(out, expected, "{interp:?} {ow}x{oh}");
            }
        }
    }

    #[test]
    fn same_size_resize_is_identity_and_degenerate_sizes_do_not_panic() {
        let img = synthetic(9, 6);
        for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
            assert_eq!(resize(&img, 9, 6, interp), img);
            assert_eq!(resize(&img, 0, 5, interp).width(), 0);
            let one = RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30]));
            let up = resize(&one, 5, 3, interp);
            assert!(up.pixels().all(|p| *p == image::Rgb([10, 200, 30])));
            let empty = RgbImage::new(0, 0);
            assert_eq!(resize(&empty, 2, 2, interp), RgbImage::new(2, 2));
            assert_eq!(
                resized_crop(&img, 2, 2, 0, 3, 4, 4, interp),
                RgbImage::new(4, 4)
            );
        }
    }
}
