//! The CPU forward engine: channels-last (NHWC) activations in reused buffers, one gemm per
//! layer over the whole batch, Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions, and bias,
//! residual add and activation fused into each layer's epilogue.
//!
//! candle's `Tensor` stays the API at the model's edges: a batch comes in as `[N, 3, H, W]`, is
//! laid out channels-last once, runs through the layers here, and leaves as pooled `[N, D]`
//! features. Networks reach the engine as a [`crate::models::plan::CnnPlan`], lowered by
//! [`net::CpuNet`]; the CUDA path is the candle executor (`super::candle_net`).
//!
//! Threading: every layer splits its rows (or Winograd tiles) into blocks run on rayon's pool;
//! each block does its own im2col/transform into a per-thread scratch buffer and calls gemm
//! single-threaded, so the weights stay hot and no block waits on another. Nothing holds a
//! borrow across a rayon call, so the engine may be called from inside a rayon task.

pub(crate) mod conv;
pub(crate) mod depthwise;
mod kernels;
pub(crate) mod net;
pub(crate) mod pool;
pub(crate) mod winograd;

use std::cell::RefCell;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

pub(crate) use conv::DenseConv;
pub(crate) use depthwise::DepthwiseConv;
pub(crate) use winograd::WinogradConv;

/// A batch of activations in channels-last layout: `data[((n·h + y)·w + x)·c + ch]`.
#[derive(Debug, Default)]
pub(crate) struct Act {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Act {
    /// Images `i0 .. i1` of the batch, copied into a buffer from `bufs`.
    pub fn images(&self, i0: usize, i1: usize, bufs: &mut Buffers) -> Act {
        let per = self.h * self.w * self.c;
        let mut data = bufs.take((i1 - i0) * per);
        data.copy_from_slice(&self.data[i0 * per..i1 * per]);
        Act {
            n: i1 - i0,
            h: self.h,
            w: self.w,
            c: self.c,
            data,
        }
    }

    /// Lays out an `[N, C, H, W]` batch channels-last.
    pub fn from_nchw(
        src: &[f32],
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        bufs: &mut Buffers,
    ) -> Act {
        use rayon::prelude::*;
        let mut data = bufs.take(n * c * h * w);
        let plane = h * w;
        data.par_chunks_mut(plane * c)
            .zip(src.par_chunks(plane * c))
            .for_each(|(dst, img)| {
                for (p, px) in dst.chunks_exact_mut(c).enumerate() {
                    for (ch, v) in px.iter_mut().enumerate() {
                        *v = img[ch * plane + p];
                    }
                }
            });
        Act { n, h, w, c, data }
    }
}

/// Activation buffers kept between layers and batches: a layer takes one, the layer after
/// returns its input's. Buffers are handed out with stale (initialised) contents; every kernel
/// overwrites all of its output.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Free buffers, each at the full length it was ever initialised to.
    free: Vec<Vec<f32>>,
    /// Initialised length of each allocation handed out, by address, so that a buffer
    /// returned shorter gets its full length back without being written again.
    initialised: std::collections::HashMap<usize, usize>,
}

impl Buffers {
    /// A buffer of exactly `len` values (contents unspecified).
    pub fn take(&mut self, len: usize) -> Vec<f32> {
        // Best fit among the free buffers that are long enough, else grow the longest.
        let pick = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= len)
            .min_by_key(|(_, b)| b.len())
            .or_else(|| self.free.iter().enumerate().max_by_key(|(_, b)| b.len()))
            .map(|(i, _)| i);
        let mut v = match pick {
            Some(i) => self.free.swap_remove(i),
            None => Vec::new(),
        };
        if v.len() < len {
            self.initialised.remove(&(v.as_ptr() as usize));
            v.resize(len, 0.0);
        }
        self.initialised.insert(v.as_ptr() as usize, v.len());
        v.truncate(len);
        v
    }

    /// Returns an activation's buffer for reuse.
    pub fn give(&mut self, a: Act) {
        let mut v = a.data;
        if v.capacity() == 0 {
            return;
        }
        if let Some(init) = self.initialised.get(&(v.as_ptr() as usize)) {
            if *init > v.len() && *init <= v.capacity() {
                // SAFETY: this allocation held `init` initialised values when it was handed
                // out (recorded in `take`); truncating a Vec<f32> leaves them in place, and
                // f32 has no drop glue or invalid bit patterns.
                unsafe { v.set_len(*init) };
            }
        }
        self.free.push(v);
    }
}

/// A pool of [`Buffers`], one per concurrent caller, kept across batches.
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    idle: Mutex<Vec<Buffers>>,
}

impl BufferPool {
    /// Runs `f` with a set of buffers that no other caller is using.
    pub fn with<T>(&self, f: impl FnOnce(&mut Buffers) -> T) -> T {
        let mut bufs = self
            .idle
            .lock()
            .map(|mut v| v.pop())
            .unwrap_or(None)
            .unwrap_or_default();
        let out = f(&mut bufs);
        if let Ok(mut v) = self.idle.lock() {
            v.push(bufs);
        }
        out
    }
}

thread_local! {
    /// Per-thread scratch (im2col columns, Winograd tiles). Taken out of the cell for the
    /// duration of one block, so a nested call on the same thread gets a fresh one.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer grown to at least `len` values.
pub(crate) fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [f32]) -> T) -> T {
    let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.capacity() < buf.capacity() {
            *s = buf;
        }
    });
    out
}

/// One convolution layer of the CPU engine.
#[derive(Debug)]
pub(crate) enum CpuConv {
    /// im2col + gemm (or the activation itself for 1×1 stride 1).
    Dense(DenseConv),
    /// Winograd F(4×4, 3×3).
    Winograd(WinogradConv),
    /// Depthwise.
    Depthwise(DepthwiseConv),
}

impl CpuConv {
    /// `act(conv(x) + bias [+ residual])`.
    pub fn forward(&self, x: &Act, residual: Option<&Act>, bufs: &mut Buffers) -> Result<Act> {
        match self {
            CpuConv::Dense(c) => c.forward(x, residual, bufs),
            CpuConv::Winograd(c) => c.forward(x, residual, bufs),
            CpuConv::Depthwise(_) if residual.is_some() => Err(Error::Input(
                "the depthwise kernel takes no residual".into(),
            )),
            CpuConv::Depthwise(c) => c.forward(x, bufs),
        }
    }
}

/// A `[N, C, H, W]` f32 batch as a channels-last activation.
pub(crate) fn input_act(x: &Tensor, bufs: &mut Buffers) -> Result<Act> {
    let (n, c, h, w) = x.dims4()?;
    let x = x.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) = &*storage else {
        return Err(Error::Input("the CPU engine takes a CPU f32 tensor".into()));
    };
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Input("expected a contiguous batch".into()))?;
    Ok(Act::from_nchw(&v[start..end], n, c, h, w, bufs))
}

/// Pooled features of a channels-last activation as an `[N, C]` tensor.
pub(crate) fn pooled_features(x: &Act) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        pool::global_avg_pool(x),
        (x.n, x.c),
        &Device::Cpu,
    )?)
}

/// Whether the Winograd path is allowed (`HEADSTART_WINOGRAD=0` turns it off, for comparison).
pub(crate) fn winograd_enabled() -> bool {
    std::env::var("HEADSTART_WINOGRAD").map_or(true, |v| v != "0")
}

/// Layers whose weights hold more values than this run as a few large matrix products, each
/// spread over all threads (gemm packs the weights once per product); smaller layers run as many
/// independent blocks, one thread each.
pub(crate) const BIG_WEIGHTS: usize = 16 * 1024;

/// A raw pointer that may cross threads; users promise disjoint writes.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: only used for writes to disjoint regions, each by one thread (see the users).
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole wrapper).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Images per pass through the high-resolution layers: their activations are the largest (a
/// 112×112 map of 96 channels is 4.8 MB per image), and beyond a few images a larger batch no
/// longer helps those memory-bound layers — it only costs memory.
pub(crate) const MICRO_BATCH: usize = 8;

/// How many blocks of work to aim for per rayon thread (load balance vs per-block overhead).
pub(crate) const BLOCKS_PER_THREAD: usize = 4;

/// `dst[m×n] (+)= a[m×k] · b[k×n]`, all row-major with the given row strides, on `threads`
/// rayon threads (1: on the calling thread only).
///
/// # Safety
/// The three regions must be in bounds for the given sizes and strides, and `dst` must not
/// overlap `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    ldd: usize,
    accumulate: bool,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    threads: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ldd as isize,
        accumulate,
        a,
        1,
        lda as isize,
        b,
        1,
        ldb as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        },
    );
}

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Device, Tensor};

    use super::Act;

    /// `[N, C, H, W]` tensor → channels-last activation.
    pub fn act_from(x: &Tensor) -> Act {
        let (n, c, h, w) = x.dims4().unwrap();
        let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        Act::from_nchw(&v, n, c, h, w, &mut Default::default())
    }

    /// Channels-last activation → `[N, C, H, W]` tensor.
    pub fn tensor_from(a: &Act) -> Tensor {
        Tensor::from_slice(&a.data, (a.n, a.h, a.w, a.c), &Device::Cpu)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap()
            .contiguous()
            .unwrap()
    }

    /// ‖a − b‖ / ‖b‖.
    pub fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
        let n = b.sqr().unwrap().sum_all().unwrap();
        (d.to_scalar::<f32>().unwrap() / n.to_scalar::<f32>().unwrap().max(1e-30)).sqrt()
    }

    /// Largest |a − b| relative to the largest |b|.
    pub fn rel_max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let m = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / m.to_scalar::<f32>().unwrap().max(1e-12)
    }
}
