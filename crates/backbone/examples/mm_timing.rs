//! Scratch: candle matmul throughput.
use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let (m, k, n) = (128usize, 1152usize, 784 * 16);
    let a = Tensor::randn(0f32, 1., (m, k), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1., (k, n), &Device::Cpu)?;
    a.matmul(&b)?;
    let t = Instant::now();
    for _ in 0..5 {
        a.matmul(&b)?;
    }
    let s = t.elapsed().as_secs_f64() / 5.0;
    println!(
        "matmul {m}x{k}x{n}: {:.3}s, {:.1} GFLOP/s",
        s,
        2.0 * (m * k * n) as f64 / s / 1e9
    );
    let x = Tensor::randn(0f32, 1., (16, 128, 28, 28), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 1., (128, 128, 3, 3), &Device::Cpu)?;
    x.conv2d(&w, 1, 1, 1, 1)?;
    let t = Instant::now();
    for _ in 0..5 {
        x.conv2d(&w, 1, 1, 1, 1)?;
    }
    let s = t.elapsed().as_secs_f64() / 5.0;
    println!(
        "conv 16x128x28x28 k3: {:.3}s, {:.1} GFLOP/s",
        s,
        2.0 * (128 * 1152 * 784 * 16) as f64 / s / 1e9
    );
    Ok(())
}
