//! 2-D maps of the eval-view features: PCA (the two directions of largest variance, by power
//! iteration on the covariance; deterministic), and t-SNE (Barnes-Hut, the `bhtsne` crate)
//! started from the PCA map scaled as scikit-learn's `init="pca"` does, so it is seeded by the
//! data, not by a random draw.

use crate::features::EvalRows;
use crate::{Error, Result};

/// The most points t-SNE embeds; beyond, `map` shows PCA (t-SNE's cost and its picture both
/// stop improving long before a million points).
pub const MAX_TSNE_POINTS: usize = 20_000;

/// Rows used to fit the PCA directions (an evenly spaced sample beyond this; all are projected).
const PCA_FIT_ROWS: usize = 50_000;

/// Row-major `n × 2` coordinates of every row on its first two principal components.
pub fn pca2(rows: &EvalRows) -> Vec<f32> {
    let (n, d) = (rows.len(), rows.dim);
    if n == 0 || d == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(PCA_FIT_ROWS).max(1);
    let fit: Vec<usize> = (0..n).step_by(step).collect();
    let mut mean = vec![0f64; d];
    for &i in &fit {
        for (m, &v) in mean.iter_mut().zip(rows.row(i)) {
            *m += v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= fit.len() as f64);
    // Covariance-vector products without forming the d × d matrix: C v = Xᵀ (X v) / n.
    let cov_times = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0f64; d];
        for &i in &fit {
            let r = rows.row(i);
            let dot: f64 = r
                .iter()
                .zip(&mean)
                .zip(v)
                .map(|((&x, m), w)| (x as f64 - m) * w)
                .sum();
            for ((o, &x), m) in out.iter_mut().zip(r).zip(&mean) {
                *o += (x as f64 - m) * dot;
            }
        }
        out.iter_mut().for_each(|o| *o /= fit.len() as f64);
        out
    };
    let normalise = |v: &mut Vec<f64>| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 {
            v.iter_mut().for_each(|x| *x /= n);
        }
    };
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for c in 0..2 {
        // A fixed, data-independent start (not orthogonal to anything in general).
        let mut v: Vec<f64> = (0..d)
            .map(|j| 1.0 + ((j * 7 + c * 13) % 11) as f64 / 11.0)
            .collect();
        normalise(&mut v);
        for _ in 0..200 {
            let mut w = cov_times(&v);
            for p in &comps {
                let dot: f64 = w.iter().zip(p).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(p).for_each(|(a, b)| *a -= dot * b);
            }
            normalise(&mut w);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if delta < 1e-10 {
                break;
            }
        }
        // Sign fixed so the largest component is positive (stable pictures).
        let big = v
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, _)| i)
            .unwrap_or(0);
        if v[big] < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        comps.push(v);
    }
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let r = rows.row(i);
        for p in &comps {
            let s: f64 = r
                .iter()
                .zip(&mean)
                .zip(p)
                .map(|((&x, m), w)| (x as f64 - m) * w)
                .sum();
            out.push(s as f32);
        }
    }
    out
}

/// t-SNE settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TsneParams {
    /// Perplexity (lowered to (n − 1) / 3 for small sets).
    pub perplexity: f32,
    /// Iterations.
    pub epochs: usize,
    /// Barnes-Hut θ (0.5 as in scikit-learn).
    pub theta: f32,
}

impl Default for TsneParams {
    fn default() -> Self {
        Self {
            perplexity: 30.0,
            epochs: 1000,
            theta: 0.5,
        }
    }
}

/// Row-major `n × 2` t-SNE coordinates, started from `pca` (as returned by [`pca2`]).
pub fn tsne2(rows: &EvalRows, pca: &[f32], p: &TsneParams) -> Result<Vec<f32>> {
    let n = rows.len();
    if n > MAX_TSNE_POINTS {
        return Err(Error::InvalidParams {
            param: "tsne",
            problem: format!("{n} points is more than t-SNE's {MAX_TSNE_POINTS}; use the PCA map"),
        });
    }
    if n < 5 {
        return Err(Error::Data(format!(
            "t-SNE needs at least 5 images, not {n}"
        )));
    }
    let perplexity = p.perplexity.min((n as f32 - 1.0) / 3.0 - 1e-3).max(1.0);
    // scikit-learn's init="pca": the PCA map scaled to a standard deviation of 1e-4.
    let sd = {
        let m = pca.iter().step_by(2).sum::<f32>() / n as f32;
        (pca.iter().step_by(2).map(|x| (x - m).powi(2)).sum::<f32>() / n as f32).sqrt()
    };
    let init: Vec<f32> = pca.iter().map(|v| v / sd.max(1e-12) * 1e-4).collect();
    let points: Vec<&[f32]> = rows.x.chunks_exact(rows.dim).collect();
    let fit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut t = bhtsne::tSNE::<f32, &[f32], 2>::new(&points);
        t.perplexity(perplexity)
            .epochs(p.epochs)
            .initial_embedding(init)
            .barnes_hut(p.theta, |a, b| {
                // Euclidean distance of unit vectors (a metric, as Barnes-Hut needs).
                let d2: f32 = a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum();
                d2.max(0.0).sqrt()
            });
        t.embedding()
    }));
    let y = fit.map_err(|_| Error::Data("t-SNE failed on these features".into()))?;
    if y.len() != 2 * n || y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Data(
            "t-SNE gave no usable map for these features".into(),
        ));
    }
    Ok(y)
}
