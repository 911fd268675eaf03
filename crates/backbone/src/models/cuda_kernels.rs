//! headstart's own CUDA kernels (`kernels/convolution.cu`, compiled to PTX by build.rs) as candle
//! custom operations: a depthwise convolution with its bias and activation, and the epilogue of
//! every other convolution (bias, optional residual, activation) in one pass. f32, f16 and bf16
//! storage, f32 arithmetic. Inputs are made contiguous; outputs are fresh device buffers.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::layers::{Activation, Geometry};
use crate::Result;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/convolution.ptx"));
const MODULE: &str = "headstart_convolution";

fn act_code(a: Activation) -> i32 {
    match a {
        Activation::None => 0,
        Activation::Relu => 1,
        Activation::Relu6 => 2,
    }
}

/// A grid-stride launch over `total` outputs.
fn launch_config(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn view<'a, T>(s: &'a CudaSlice<T>, l: &Layout) -> candle_core::Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.slice(a..b)),
        None => candle_core::bail!("headstart kernel: a non-contiguous input"),
    }
}

/// A storage type the kernels take: f32, f16, bf16.
trait Elem: candle_core::cuda_backend::cudarc::driver::DeviceRepr + Sized {
    /// The kernels' name suffix.
    const SUFFIX: &'static str;
    /// This type's buffer, if `s` holds this type.
    fn of(s: &CudaStorageSlice) -> candle_core::Result<&CudaSlice<Self>>;
    /// The storage holding `s`.
    fn wrap(s: CudaSlice<Self>) -> CudaStorageSlice;
}

macro_rules! elem {
    ($t:ty, $variant:ident, $sfx:literal) => {
        impl Elem for $t {
            const SUFFIX: &'static str = $sfx;
            fn of(s: &CudaStorageSlice) -> candle_core::Result<&CudaSlice<Self>> {
                match s {
                    CudaStorageSlice::$variant(v) => Ok(v),
                    _ => candle_core::bail!("headstart kernel: inputs of mixed dtypes"),
                }
            }
            fn wrap(s: CudaSlice<Self>) -> CudaStorageSlice {
                CudaStorageSlice::$variant(s)
            }
        }
    };
}
elem!(f32, F32, "f32");
elem!(half::f16, F16, "f16");
elem!(half::bf16, BF16, "bf16");

/// Calls `$f::<T>` for the element type of `$slice`.
macro_rules! dispatch {
    ($slice:expr, $f:ident ( $($arg:expr),* )) => {
        match $slice {
            CudaStorageSlice::F32(_) => $f::<f32>($($arg),*),
            CudaStorageSlice::F16(_) => $f::<half::f16>($($arg),*),
            CudaStorageSlice::BF16(_) => $f::<half::bf16>($($arg),*),
            _ => candle_core::bail!("headstart kernel: f32, f16 or bf16 only"),
        }
    };
}

/// Depthwise convolution + bias + activation.
struct Depthwise {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    k: usize,
    stride: usize,
    top: usize,
    left: usize,
    act: i32,
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "headstart-depthwise"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("headstart-depthwise runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let slice = dispatch!(&x.slice, depthwise_t(self, &dev, x, xl, w, wl, b, bl))?;
        Ok((
            CudaStorage { slice, device: dev },
            Shape::from((self.n, self.c, self.oh, self.ow)),
        ))
    }
}

#[allow(clippy::too_many_arguments)]
fn depthwise_t<T: Elem>(
    op: &Depthwise,
    dev: &candle_core::CudaDevice,
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    b: &CudaStorage,
    bl: &Layout,
) -> candle_core::Result<CudaStorageSlice> {
    let total = op.n * op.c * op.oh * op.ow;
    let (xs, ws, bs) = (
        view(T::of(&x.slice)?, xl)?,
        view(T::of(&w.slice)?, wl)?,
        view(T::of(&b.slice)?, bl)?,
    );
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { dev.alloc::<T>(total)? };
    let func = dev.get_or_load_custom_func(&format!("depthwise_{}", T::SUFFIX), MODULE, PTX)?;
    let mut launch = func.builder();
    let ints = [
        op.c, op.h, op.w, op.oh, op.ow, op.k, op.stride, op.top, op.left,
    ]
    .map(|v| v as i32);
    let total64 = total as i64;
    launch.arg(&xs).arg(&ws).arg(&bs).arg(&out).arg(&total64);
    for v in &ints {
        launch.arg(v);
    }
    launch.arg(&op.act);
    // SAFETY: the arguments match the kernel's signature; the buffers hold N·C·H·W, C·k·k, C and
    // `total` values.
    unsafe { launch.launch(launch_config(total)) }.w()?;
    Ok(T::wrap(out))
}

/// `act(x + bias[c] (+ residual))`.
struct BiasAct {
    c: usize,
    hw: usize,
    act: i32,
}

impl BiasAct {
    fn run(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
        r: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = x.device().clone();
        let slice = dispatch!(&x.slice, bias_act_t(self, &dev, x, xl, b, bl, r))?;
        Ok((CudaStorage { slice, device: dev }, xl.shape().clone()))
    }
}

fn bias_act_t<T: Elem>(
    op: &BiasAct,
    dev: &candle_core::CudaDevice,
    x: &CudaStorage,
    xl: &Layout,
    b: &CudaStorage,
    bl: &Layout,
    r: Option<(&CudaStorage, &Layout)>,
) -> candle_core::Result<CudaStorageSlice> {
    let total = xl.shape().elem_count();
    let xs = view(T::of(&x.slice)?, xl)?;
    let bs = view(T::of(&b.slice)?, bl)?;
    let rs = match r {
        Some((r, rl)) => {
            if rl.shape() != xl.shape() {
                candle_core::bail!("headstart kernel: a residual of another shape");
            }
            view(T::of(&r.slice)?, rl)?
        }
        None => view(T::of(&x.slice)?, xl)?,
    };
    // SAFETY: every element is written by the kernel below.
    let out = unsafe { dev.alloc::<T>(total)? };
    let func = dev.get_or_load_custom_func(&format!("bias_act_{}", T::SUFFIX), MODULE, PTX)?;
    let mut launch = func.builder();
    let (total64, c, hw64, has_r) = (total as i64, op.c as i32, op.hw as i64, r.is_some() as i32);
    launch
        .arg(&xs)
        .arg(&bs)
        .arg(&rs)
        .arg(&out)
        .arg(&total64)
        .arg(&c)
        .arg(&hw64)
        .arg(&op.act)
        .arg(&has_r);
    // SAFETY: the arguments match the kernel's signature; x, r and out hold `total` values, b
    // holds C.
    unsafe { launch.launch(launch_config(total)) }.w()?;
    Ok(T::wrap(out))
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "headstart-bias-act"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("headstart-bias-act runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.run(x, xl, b, bl, None)
    }
}

impl CustomOp3 for BiasAct {
    fn name(&self) -> &'static str {
        "headstart-bias-act-residual"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("headstart-bias-act runs on CUDA devices only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
        r: &CudaStorage,
        rl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.run(x, xl, b, bl, Some((r, rl)))
    }
}

/// Depthwise `k × k` convolution of `x` `[N, C, H, W]` with `w` `[C, 1, k, k]`, plus `b` `[C]`,
/// then `act`; padding and output size from `g`.
pub(crate) fn depthwise(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    g: &Geometry,
    stride: usize,
    act: Activation,
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (_, _, k, _) = w.dims4()?;
    let op = Depthwise {
        n,
        c,
        h,
        w: wd,
        oh: g.out_h,
        ow: g.out_w,
        k,
        stride,
        top: g.top,
        left: g.left,
        act: act_code(act),
    };
    Ok(x.contiguous()?.apply_op3_no_bwd(w, b, &op)?)
}

/// `act(x + b[c] (+ residual))` for `x` `[N, C, H, W]`, `b` `[C]`.
pub(crate) fn bias_act(
    x: &Tensor,
    b: &Tensor,
    residual: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    let op = BiasAct {
        c,
        hw: h * w,
        act: act_code(act),
    };
    let x = x.contiguous()?;
    Ok(match residual {
        None => x.apply_op2_no_bwd(b, &op)?,
        Some(r) => x.apply_op3_no_bwd(b, &r.contiguous()?, &op)?,
    })
}
