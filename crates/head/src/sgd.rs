//! Stochastic gradient descent with momentum, PyTorch semantics, and its checked parameters.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How classes are weighted in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    /// Every row counts the same.
    None,
    /// Rows weighted by `n / (classes · count(class))` (scikit-learn's "balanced").
    Balanced,
}

/// SGD hyper-parameters (unchecked). Defaults are the tutorial's recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdParams {
    /// Learning rate.
    pub lr: f64,
    /// Momentum μ.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Rows per step.
    pub batch_size: usize,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Seed of the initialisation and the per-epoch shuffles.
    pub seed: u64,
    /// Class weighting of the loss.
    pub class_weight: ClassWeight,
}

impl Default for SgdParams {
    fn default() -> Self {
        Self {
            lr: 0.001,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            batch_size: 32,
            epochs: 20,
            seed: 43,
            class_weight: ClassWeight::None,
        }
    }
}

/// Parameters that passed [`SgdParams::check`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidSgdParams(SgdParams);

impl std::ops::Deref for ValidSgdParams {
    type Target = SgdParams;
    fn deref(&self) -> &SgdParams {
        &self.0
    }
}

impl SgdParams {
    /// Validates once; training code relies on the result.
    pub fn check(self) -> Result<ValidSgdParams> {
        let bad =
            |param: &'static str, problem: String| Err(Error::InvalidParams { param, problem });
        // The weights are f32: a rate that is finite as f64 but not as f32 (1e39) is no rate.
        if !(self.lr.is_finite() && self.lr > 0.0 && (self.lr as f32).is_finite()) {
            return bad(
                "lr",
                format!("{} must be a positive number below {:e}", self.lr, f32::MAX),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("momentum", format!("{} must be in [0, 1)", self.momentum));
        }
        if self.nesterov && self.momentum == 0.0 {
            return bad("nesterov", "needs a momentum > 0".into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", format!("{} must be ≥ 0", self.weight_decay));
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        Ok(ValidSgdParams(self))
    }
}

/// The optimizer state: one momentum buffer per parameter.
#[derive(Debug)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// A fresh optimizer for `n_params` parameters.
    pub fn new(p: &SgdParams, n_params: usize) -> Self {
        Self {
            lr: p.lr,
            momentum: p.momentum,
            nesterov: p.nesterov,
            weight_decay: p.weight_decay,
            buffers: vec![None; n_params],
        }
    }

    /// One update, exactly `torch.optim.SGD` (dampening 0):
    /// `g ← ∇ + wd·w; v ← μ·v + g (v ← g at the first step); d ← g + μ·v if Nesterov else v;
    /// w ← w − lr·d`.
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[Tensor]) -> Result<()> {
        for (i, (w, g)) in params.iter_mut().zip(grads).enumerate() {
            let mut g = g.clone();
            if self.weight_decay != 0.0 {
                g = (g + (&**w * self.weight_decay)?)?;
            }
            let d = if self.momentum != 0.0 {
                let v = match self.buffers[i].take() {
                    None => g.clone(),
                    Some(v) => ((v * self.momentum)? + &g)?,
                };
                let d = if self.nesterov {
                    (&g + (&v * self.momentum)?)?
                } else {
                    v.clone()
                };
                self.buffers[i] = Some(v);
                d
            } else {
                g
            };
            **w = (&**w - (d * self.lr)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(p: SgdParams, grads: &[f32]) -> Vec<f32> {
        let mut w = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = Sgd::new(&p, 1);
        let mut out = Vec::new();
        for &g in grads {
            let g = Tensor::new(&[g], &Device::Cpu).unwrap();
            opt.step(&mut [&mut w], &[g]).unwrap();
            out.push(w.to_vec1::<f32>().unwrap()[0]);
        }
        out
    }

    #[test]
    fn momentum_matches_a_hand_computed_sequence() {
        // lr 0.1, μ 0.9, grads 1, 2, 3:
        // v1 = 1        → w = 1 − 0.1      = 0.9
        // v2 = 0.9 + 2 = 2.9  → w = 0.9 − 0.29  = 0.61
        // v3 = 2.61 + 3 = 5.61 → w = 0.61 − 0.561 = 0.049
        let p = SgdParams {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let w = run(p, &[1.0, 2.0, 3.0]);
        for (a, b) in w.iter().zip([0.9f32, 0.61, 0.049]) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn nesterov_and_weight_decay_follow_pytorch() {
        // wd 0.5, w0 = 1: g1 = 1 + 0.5 = 1.5, v1 = 1.5, d1 = 1.5 + 0.9·1.5 = 2.85, w1 = 1 − 0.285 = 0.715
        // g2 = 1 + 0.3575 = 1.3575, v2 = 1.35 + 1.3575 = 2.7075, d2 = 1.3575 + 2.43675 = 3.79425,
        // w2 = 0.715 − 0.379425 = 0.335575
        let p = SgdParams {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.5,
            ..Default::default()
        };
        let w = run(p, &[1.0, 1.0]);
        assert!(
            (w[0] - 0.715).abs() < 1e-6 && (w[1] - 0.335575).abs() < 1e-6,
            "{w:?}"
        );
    }

    #[test]
    fn bad_params_are_rejected_once() {
        assert!(SgdParams {
            lr: 0.0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(SgdParams {
            lr: 1e39,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(SgdParams {
            momentum: 1.0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(SgdParams {
            batch_size: 0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(SgdParams {
            nesterov: true,
            momentum: 0.0,
            ..Default::default()
        }
        .check()
        .is_err());
        assert!(SgdParams::default().check().is_ok());
    }
}
