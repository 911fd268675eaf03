// headstart's CUDA kernels: the layers candle has no fast kernel for. They know no model; the
// candle executor (src/models/candle_net.rs) calls them. NCHW layout, f32 accumulation for every
// storage type, one thread per output value.
//
// Built to PTX by build.rs (feature `cuda`) with the same nvcc and compute capability as candle's
// own kernels, and loaded once per device.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float load(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half *p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store(__half *p, int64_t i, float v) { p[i] = __float2half(v); }
__device__ __forceinline__ void store(__nv_bfloat16 *p, int64_t i, float v) { p[i] = __float2bfloat16(v); }

// 0: none, 1: ReLU, 2: ReLU6.
__device__ __forceinline__ float activate(float v, int act) {
    if (act == 1) return fmaxf(v, 0.0f);
    if (act == 2) return fminf(fmaxf(v, 0.0f), 6.0f);
    return v;
}

// Depthwise k×k convolution: y[n,c,oy,ox] = act(b[c] + Σ w[c,ky,kx] · x[n,c,oy·s+ky−top,ox·s+kx−left])
// (zero outside the input), for `total` = N·C·OH·OW outputs.
template <typename T>
__device__ void depthwise(const T *x, const T *w, const T *b, T *y, int64_t total, int c, int h,
                          int wd, int oh, int ow, int k, int s, int top, int left, int act) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)blockDim.x * gridDim.x) {
        int ox = i % ow;
        int oy = (i / ow) % oh;
        int64_t plane = i / ((int64_t)ow * oh);  // n·C + c
        int ch = plane % c;
        const T *src = x + plane * h * wd;
        const T *f = w + (int64_t)ch * k * k;
        float acc = 0.0f;
        int y0 = oy * s - top, x0 = ox * s - left;
        for (int ky = 0; ky < k; ++ky) {
            int iy = y0 + ky;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < k; ++kx) {
                int ix = x0 + kx;
                if (ix < 0 || ix >= wd) continue;
                acc += load(f, ky * k + kx) * load(src, (int64_t)iy * wd + ix);
            }
        }
        store(y, i, activate(acc + load(b, ch), act));
    }
}

// y = act(x + b[c] (+ r when has_r)) over an NCHW tensor of `total` values, `hw` = H·W.
template <typename T>
__device__ void bias_act(const T *x, const T *b, const T *r, T *y, int64_t total, int c, int64_t hw,
                         int act, int has_r) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)blockDim.x * gridDim.x) {
        float v = load(x, i) + load(b, (i / hw) % c);
        if (has_r) v += load(r, i);
        store(y, i, activate(v, act));
    }
}

#define KERNELS(T, SUFFIX)                                                                       \
    extern "C" __global__ void depthwise_##SUFFIX(const T *x, const T *w, const T *b, T *y,      \
                                                  int64_t total, int c, int h, int wd, int oh,   \
                                                  int ow, int k, int s, int top, int left,       \
                                                  int act) {                                     \
        depthwise<T>(x, w, b, y, total, c, h, wd, oh, ow, k, s, top, left, act);                 \
    }                                                                                            \
    extern "C" __global__ void bias_act_##SUFFIX(const T *x, const T *b, const T *r, T *y,       \
                                                 int64_t total, int c, int64_t hw, int act,      \
                                                 int has_r) {                                    \
        bias_act<T>(x, b, r, y, total, c, hw, act, has_r);                                       \
    }

KERNELS(float, f32)
KERNELS(__half, f16)
KERNELS(__nv_bfloat16, bf16)
