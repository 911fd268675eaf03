//! The linear head `logits = x Wᵀ + b` and its loss.

use candle_core::{DType, Device, Tensor, D};

use crate::rng::Shuffler;
use crate::Result;

/// A linear classifier over feature vectors.
#[derive(Debug, Clone)]
pub struct LinearHead {
    /// `[classes, dim]`.
    pub weight: Tensor,
    /// `[classes]`.
    pub bias: Tensor,
}

impl LinearHead {
    /// PyTorch `nn.Linear` initialisation: W, b ~ U(−1/√dim, 1/√dim), seeded.
    pub fn init(classes: usize, dim: usize, seed: u64) -> Result<Self> {
        let bound = 1.0 / (dim as f64).sqrt();
        let mut rng = Shuffler::new(seed, 0x1417);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let w = draw(classes * dim);
        let b = draw(classes);
        Ok(Self {
            weight: Tensor::from_vec(w, (classes, dim), &Device::Cpu)?,
            bias: Tensor::from_vec(b, classes, &Device::Cpu)?,
        })
    }

    /// From explicit values.
    pub fn from_vecs(weight: Vec<f32>, bias: Vec<f32>, classes: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: Tensor::from_vec(weight, (classes, dim), &Device::Cpu)?,
            bias: Tensor::from_vec(bias, classes, &Device::Cpu)?,
        })
    }

    /// Whether every weight and bias is finite (a diverged run's are not).
    pub fn is_finite(&self) -> Result<bool> {
        let finite = |t: &Tensor| -> Result<bool> {
            Ok(t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .all(|v| v.is_finite()))
        };
        Ok(finite(&self.weight)? && finite(&self.bias)?)
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.dims()[0]
    }

    /// Feature width.
    pub fn dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Logits `[N, classes]` of `[N, dim]` features.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    /// Softmax probabilities `[N, classes]`.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax_last_dim(&self.logits(x)?)?)
    }
}

/// Mean softmax cross-entropy of `logits` `[N, C]` against `targets` and its gradient with
/// respect to the logits, computed stably (log-sum-exp). `sample_weights` (per row) turn it
/// into PyTorch's weighted mean `Σ wᵢ ℓᵢ / Σ wᵢ`.
pub fn cross_entropy_with_grad(
    logits: &Tensor,
    onehot: &Tensor,
    sample_weights: Option<&Tensor>,
) -> Result<(f64, Tensor)> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let p = logp.exp()?;
    let per_row = (onehot * &logp)?.sum(D::Minus1)?.neg()?; // [N]
    let n = logits.dims()[0] as f64;
    let (loss, scale) = match sample_weights {
        None => (
            per_row
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?
                / n,
            None,
        ),
        Some(w) => {
            let total = w.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let l = (&per_row * w)?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?
                / total;
            (l, Some((w / total)?))
        }
    };
    let diff = (p - onehot)?;
    let grad = match scale {
        None => (diff / n)?,
        Some(s) => diff.broadcast_mul(&s.unsqueeze(1)?)?,
    };
    Ok((loss, grad))
}

/// One-hot `[N, C]` f32 matrix of class indices.
pub fn one_hot(y: &[u32], classes: usize) -> Result<Tensor> {
    let mut v = vec![0f32; y.len() * classes];
    for (i, &c) in y.iter().enumerate() {
        v[i * classes + c as usize] = 1.0;
    }
    Ok(Tensor::from_vec(v, (y.len(), classes), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_of(logits: &[f64], y: &[u32], c: usize) -> f64 {
        let n = y.len();
        let mut total = 0.0;
        for i in 0..n {
            let row = &logits[i * c..(i + 1) * c];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            total += lse - row[y[i] as usize];
        }
        total / n as f64
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (n, c) = (4, 3);
        let logits: Vec<f64> = (0..n * c)
            .map(|i| ((i * 7) % 5) as f64 * 0.9 - 1.7)
            .collect();
        let y = [0u32, 2, 1, 2];
        let t = Tensor::from_vec(
            logits.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (n, c),
            &Device::Cpu,
        )
        .unwrap();
        let (loss, grad) = cross_entropy_with_grad(&t, &one_hot(&y, c).unwrap(), None).unwrap();
        assert!((loss - loss_of(&logits, &y, c)).abs() < 1e-5);
        let grad: Vec<f32> = grad.flatten_all().unwrap().to_vec1().unwrap();
        let h = 1e-5;
        for k in 0..n * c {
            let mut up = logits.clone();
            up[k] += h;
            let mut dn = logits.clone();
            dn[k] -= h;
            let fd = (loss_of(&up, &y, c) - loss_of(&dn, &y, c)) / (2.0 * h);
            assert!(
                (fd - grad[k] as f64).abs() < 1e-4,
                "k={k}: fd {fd} vs {}",
                grad[k]
            );
        }
    }

    #[test]
    fn huge_logits_stay_finite() {
        let t =
            Tensor::from_vec(vec![1000f32, -1000.0, 0.0, 3000.0], (2, 2), &Device::Cpu).unwrap();
        let (loss, grad) =
            cross_entropy_with_grad(&t, &one_hot(&[1, 0], 2).unwrap(), None).unwrap();
        assert!(loss.is_finite() && (loss - 2500.0).abs() < 1e-3, "{loss}");
        assert!(grad
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|g| g.is_finite()));
    }

    #[test]
    fn weighted_loss_is_the_weighted_mean() {
        let t = Tensor::from_vec(vec![2f32, 0.0, 0.0, 2.0], (2, 2), &Device::Cpu).unwrap();
        let oh = one_hot(&[0, 0], 2).unwrap();
        let w = Tensor::from_vec(vec![3f32, 1.0], 2, &Device::Cpu).unwrap();
        let (l, _) = cross_entropy_with_grad(&t, &oh, Some(&w)).unwrap();
        let l0 = (1.0 + (-2f64).exp()).ln();
        let l1 = (1.0 + 2f64.exp()).ln();
        assert!((l - (3.0 * l0 + l1) / 4.0).abs() < 1e-5);
    }
}
