//! Multinomial logistic regression to convergence with L-BFGS and an L2 penalty, plus the CLIP
//! linear-probe protocol: sweep the penalty on a validation slice, then refit.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::Rows;
use crate::linear::{cross_entropy_with_grad, one_hot, LinearHead};
use crate::train::{features_tensor, score};
use crate::{Error, Result};

/// L-BFGS settings (unchecked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbfgsParams {
    /// L2 penalty λ on the weights (objective: mean cross-entropy + λ/2·‖W‖²); `None` = sweep.
    pub l2: Option<f64>,
    /// Candidate penalties of the sweep.
    pub sweep: Vec<f64>,
    /// Maximum iterations per fit.
    pub max_iter: usize,
    /// Stop when the largest gradient component is below this.
    pub gtol: f64,
    /// History size of the L-BFGS approximation.
    pub memory: usize,
}

impl Default for LbfgsParams {
    fn default() -> Self {
        Self {
            l2: None,
            sweep: (0..11).map(|k| 10f64.powf(-0.5 * k as f64)).collect(),
            max_iter: 500,
            gtol: 1e-5,
            memory: 10,
        }
    }
}

/// Parameters that passed [`LbfgsParams::check`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidLbfgsParams(LbfgsParams);

impl std::ops::Deref for ValidLbfgsParams {
    type Target = LbfgsParams;
    fn deref(&self) -> &LbfgsParams {
        &self.0
    }
}

impl LbfgsParams {
    /// Validates once.
    pub fn check(self) -> Result<ValidLbfgsParams> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if let Some(l2) = self.l2 {
            if !ok(l2) {
                return Err(Error::InvalidParams {
                    param: "l2",
                    problem: format!("{l2} must be ≥ 0"),
                });
            }
        } else if self.sweep.is_empty() || !self.sweep.iter().all(|&v| ok(v)) {
            return Err(Error::InvalidParams {
                param: "sweep",
                problem: "needs at least one value ≥ 0".into(),
            });
        }
        if self.max_iter == 0 || self.memory == 0 {
            return Err(Error::InvalidParams {
                param: if self.max_iter == 0 {
                    "max_iter"
                } else {
                    "memory"
                },
                problem: "must be at least 1".into(),
            });
        }
        Ok(ValidLbfgsParams(self))
    }
}

/// What the fit did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LbfgsReport {
    /// The penalty of the final fit.
    pub l2: f64,
    /// `(λ, validation accuracy, validation cross-entropy)` of each sweep candidate (empty when
    /// λ was given). The candidate with the lowest cross-entropy wins: on a small validation
    /// slice it is a far less noisy criterion than accuracy.
    pub sweep: Vec<(f64, f64, f64)>,
    /// Iterations of the final fit.
    pub iterations: usize,
    /// Whether the final fit met the gradient tolerance.
    pub converged: bool,
    /// Final objective value.
    pub objective: f64,
    /// The objective of the final fit at its start and after every iteration.
    #[serde(default)]
    pub objective_trace: Vec<f64>,
}

struct Problem {
    x: Tensor,
    onehot: Tensor,
    classes: usize,
    dim: usize,
    l2: f64,
}

impl Problem {
    fn head(&self, theta: &[f64]) -> Result<LinearHead> {
        let (w, b) = theta.split_at(self.classes * self.dim);
        LinearHead::from_vecs(
            w.iter().map(|&v| v as f32).collect(),
            b.iter().map(|&v| v as f32).collect(),
            self.classes,
            self.dim,
        )
    }

    /// Objective and gradient at θ = [W (row-major), b].
    fn eval(&self, theta: &[f64]) -> Result<(f64, Vec<f64>)> {
        let head = self.head(theta)?;
        let (loss, dlogits) = cross_entropy_with_grad(&head.logits(&self.x)?, &self.onehot, None)?;
        let gw: Vec<f32> = dlogits.t()?.matmul(&self.x)?.flatten_all()?.to_vec1()?;
        let gb: Vec<f32> = dlogits.sum(0)?.to_vec1()?;
        let nw = self.classes * self.dim;
        let mut g: Vec<f64> = gw.iter().chain(&gb).map(|&v| v as f64).collect();
        let mut penalty = 0.0;
        for i in 0..nw {
            penalty += theta[i] * theta[i];
            g[i] += self.l2 * theta[i];
        }
        Ok((loss + 0.5 * self.l2 * penalty, g))
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises the problem from `theta` with L-BFGS (two-loop recursion, backtracking Armijo line
/// search). Returns (θ, iterations, converged, objective, the objective after each iteration).
type Minimum = (Vec<f64>, usize, bool, f64, Vec<f64>);

fn minimise(prob: &Problem, mut theta: Vec<f64>, p: &LbfgsParams) -> Result<Minimum> {
    let (mut f, mut g) = prob.eval(&theta)?;
    let mut trace = vec![f];
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    for it in 0..p.max_iter {
        let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs()));
        if gmax < p.gtol {
            return Ok((theta, it, true, f, trace));
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push((rho, a));
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y),
            _ => 1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y), (rho, a)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        let d = if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            let sd: Vec<f64> = g.iter().map(|v| -v * gamma.min(1.0)).collect();
            slope = dot(&g, &sd);
            sd
        } else {
            d
        };
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..40 {
            let cand: Vec<f64> = theta.iter().zip(&d).map(|(t, di)| t + step * di).collect();
            let (fc, gc) = prob.eval(&cand)?;
            if fc.is_finite() && fc <= f + 1e-4 * step * slope {
                accepted = Some((cand, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc, gc)) = accepted else {
            return Ok((theta, it, false, f, trace)); // no progress possible at f32 precision
        };
        let s: Vec<f64> = cand.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gc.iter().zip(&g).map(|(a, b)| a - b).collect();
        let converged_f = (f - fc).abs() <= 1e-10 * f.abs().max(1.0);
        if dot(&s, &y) > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > p.memory {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        theta = cand;
        f = fc;
        g = gc;
        trace.push(f);
        if converged_f {
            // The objective no longer moves at f32 precision: stop, and say whether the gradient
            // criterion is met too.
            let gmax = g.iter().fold(0f64, |m, v| m.max(v.abs()));
            return Ok((theta, it + 1, gmax < p.gtol, f, trace));
        }
    }
    Ok((theta, p.max_iter, false, f, trace))
}

/// One L-BFGS fit: the head, its parameter vector (to warm-start the next), and how it went.
struct Fit {
    head: LinearHead,
    theta: Vec<f64>,
    iterations: usize,
    converged: bool,
    objective: f64,
    trace: Vec<f64>,
}

fn fit(
    train: &Rows,
    classes: usize,
    l2: f64,
    start: Option<Vec<f64>>,
    p: &LbfgsParams,
) -> Result<Fit> {
    let prob = Problem {
        x: features_tensor(train)?,
        onehot: one_hot(&train.y, classes)?,
        classes,
        dim: train.dim,
        l2,
    };
    let theta0 = start.unwrap_or_else(|| vec![0.0; classes * train.dim + classes]);
    let (theta, iterations, converged, objective, trace) = minimise(&prob, theta0, p)?;
    Ok(Fit {
        head: prob.head(&theta)?,
        theta,
        iterations,
        converged,
        objective,
        trace,
    })
}

/// Fits the head. With `p.l2 = None`, each sweep value (largest first, warm-started) is fitted on
/// `sweep_train` and scored on `sweep_val`; the best is refitted on all of `train`.
pub fn train_lbfgs(
    train: &Rows,
    sweep_train: &Rows,
    sweep_val: &Rows,
    classes: usize,
    p: &ValidLbfgsParams,
) -> Result<(LinearHead, LbfgsReport)> {
    if train.is_empty() {
        return Err(Error::Data("no training rows".into()));
    }
    let mut sweep = Vec::new();
    let l2 =
        match p.l2 {
            Some(l2) => l2,
            None if sweep_val.is_empty() || sweep_train.is_empty() => return Err(Error::Data(
                "the L2 sweep needs a validation slice: fix the penalty (l2), or use more images"
                    .into(),
            )),
            None => {
                let mut values = p.sweep.clone();
                values.sort_by(|a, b| b.total_cmp(a));
                let mut warm = None;
                let mut best = (f64::INFINITY, values[0]);
                for &l2 in &values {
                    let Fit { head, theta, .. } = fit(sweep_train, classes, l2, warm.take(), p)?;
                    let (loss, acc, _) = score(&head, sweep_val)?;
                    sweep.push((l2, acc, loss));
                    // Ties go to the larger penalty (earlier in the list): the simpler model.
                    if loss < best.0 {
                        best = (loss, l2);
                    }
                    warm = Some(theta);
                }
                best.1
            }
        };
    let Fit {
        head,
        iterations,
        converged,
        objective,
        trace: objective_trace,
        ..
    } = fit(train, classes, l2, None, p)?;
    if !objective.is_finite() || !head.is_finite()? {
        return Err(Error::Data(format!(
            "L-BFGS ended with a non-finite objective ({objective}) at L2 {l2}: the features hold non-finite values or the penalty is too small"
        )));
    }
    Ok((
        head,
        LbfgsReport {
            l2,
            sweep,
            iterations,
            converged,
            objective,
            objective_trace,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_stationary_point_of_the_penalised_objective() {
        let mut rows = Rows {
            dim: 2,
            ..Default::default()
        };
        let pts = [
            (0.0, 0.0, 0),
            (1.0, 0.2, 0),
            (0.1, 1.0, 1),
            (1.2, 1.1, 1),
            (2.0, 0.1, 2),
            (2.2, 1.0, 2),
            (0.5, 0.5, 0),
            (1.5, 0.6, 2),
        ];
        for (i, &(a, b, c)) in pts.iter().enumerate() {
            rows.x.extend([a as f32, b as f32]);
            rows.y.push(c);
            rows.image.push(i);
        }
        let p = LbfgsParams {
            l2: Some(0.1),
            ..Default::default()
        }
        .check()
        .unwrap();
        let (head, rep) = train_lbfgs(&rows, &Rows::default(), &Rows::default(), 3, &p).unwrap();
        assert!(rep.converged, "{rep:?}");
        // The gradient at the solution is ~0: check by finite differences of the objective.
        let prob = Problem {
            x: features_tensor(&rows).unwrap(),
            onehot: one_hot(&rows.y, 3).unwrap(),
            classes: 3,
            dim: 2,
            l2: 0.1,
        };
        let w: Vec<f32> = head.weight.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = head.bias.to_vec1().unwrap();
        let theta: Vec<f64> = w.iter().chain(&b).map(|&v| v as f64).collect();
        let (_, g) = prob.eval(&theta).unwrap();
        assert!(g.iter().all(|v| v.abs() < 1e-3), "{g:?}");
    }
}
