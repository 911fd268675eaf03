//! The statistics of comparing classifiers: a confidence interval for an accuracy (Wilson's),
//! one for a macro-F1 (a seeded percentile bootstrap over images), and the exact McNemar test
//! of two classifiers scored on the same images.

use crate::rng::Shuffler;

/// The 97.5 % quantile of the standard normal.
pub const Z975: f64 = 1.959_963_984_540_054;

/// Wilson's 95 % score interval for `correct` successes out of `n` (`[0, 1]` when `n` is 0).
/// Unlike the normal approximation it stays inside [0, 1] and behaves at 0 and n.
pub fn wilson_interval(correct: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (k, n) = (correct as f64, n as f64);
    let p = k / n;
    let z2 = Z975 * Z975;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z975 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

/// The exact (binomial) McNemar test: `b` images only the first classifier got right, `c` only
/// the second. Two-sided p-value `min(1, 2·P[X ≤ min(b, c)])` for `X ~ Binomial(b + c, ½)` —
/// statsmodels' `mcnemar(table, exact=True)`. 1 when they never disagree.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let k = b.min(c);
    // Σ_{i ≤ k} C(n, i) / 2^n in log space (n may be large).
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_c = 0.0f64; // ln C(n, 0)
    let mut terms = Vec::with_capacity(k + 1);
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(ln_c + ln_half_n);
    }
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let tail = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// Macro-F1 (the mean F1 of the classes with support) of `pred` against `truth` over `k`
/// classes, the definition of [`crate::Report`].
pub fn macro_f1(truth: &[u32], pred: &[u32], k: usize) -> f64 {
    let (mut tp, mut support, mut predicted) = (vec![0u32; k], vec![0u32; k], vec![0u32; k]);
    for (&t, &p) in truth.iter().zip(pred) {
        support[t as usize] += 1;
        predicted[p as usize] += 1;
        tp[t as usize] += (t == p) as u32;
    }
    let (mut sum, mut classes) = (0.0, 0usize);
    for i in 0..k {
        if support[i] == 0 {
            continue;
        }
        classes += 1;
        let precision = if predicted[i] > 0 {
            tp[i] as f64 / predicted[i] as f64
        } else {
            0.0
        };
        let recall = tp[i] as f64 / support[i] as f64;
        if precision + recall > 0.0 {
            sum += 2.0 * precision * recall / (precision + recall);
        }
    }
    if classes == 0 {
        0.0
    } else {
        sum / classes as f64
    }
}

/// Resamples of [`bootstrap_macro_f1`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A 95 % percentile-bootstrap interval of the macro-F1: `resamples` draws of n images with
/// replacement (seeded: the same inputs give the same interval), the 2.5 % and 97.5 %
/// quantiles of their macro-F1.
pub fn bootstrap_macro_f1(
    truth: &[u32],
    pred: &[u32],
    k: usize,
    resamples: usize,
    seed: u64,
) -> [f64; 2] {
    let n = truth.len();
    if n == 0 || resamples == 0 {
        return [0.0, 1.0];
    }
    let mut rng = Shuffler::new(seed, 0xB007_57A9);
    let (mut t, mut p) = (vec![0u32; n], vec![0u32; n]);
    let mut scores: Vec<f64> = (0..resamples)
        .map(|_| {
            for j in 0..n {
                let i = rng.below(n as u64) as usize;
                t[j] = truth[i];
                p[j] = pred[i];
            }
            macro_f1(&t, &p, k)
        })
        .collect();
    scores.sort_by(f64::total_cmp);
    let q = |f: f64| scores[((f * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    [q(0.025), q(0.975)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_matches_the_binomial_tables() {
        // statsmodels.stats.contingency_tables.mcnemar([[a, 1], [5, d]], exact=True).pvalue
        // = 2 · (C(6,0) + C(6,1)) / 2^6 = 0.21875.
        assert!((mcnemar_exact(1, 5) - 0.21875).abs() < 1e-12);
        assert!((mcnemar_exact(5, 1) - 0.21875).abs() < 1e-12);
        // b = c: the p-value is 1 (capped).
        assert_eq!(mcnemar_exact(4, 4), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // 0 vs 10: 2 / 1024.
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-15);
        // A large table stays finite and tiny: 100 vs 200.
        let p = mcnemar_exact(100, 200);
        assert!(p > 0.0 && p < 1e-8, "{p}");
        // 2 · Σ_{i ≤ 10} C(40, i) / 2^40 = 0.0022214337...
        assert!((mcnemar_exact(10, 30) - 0.002_221_433_773_229_364).abs() < 1e-12);
    }

    #[test]
    fn wilson_interval_is_the_score_interval() {
        // statsmodels proportion_confint(90, 100, method="wilson") = (0.8256, 0.9448).
        let [lo, hi] = wilson_interval(90, 100);
        assert!((lo - 0.825_634).abs() < 1e-5, "{lo}");
        assert!((hi - 0.944_77).abs() < 1e-4, "{hi}");
        let [lo, hi] = wilson_interval(10, 10);
        assert!(lo > 0.69 && (hi - 1.0).abs() < 1e-12, "{lo} {hi}");
        assert_eq!(wilson_interval(0, 0), [0.0, 1.0]);
    }

    #[test]
    fn macro_f1_agrees_with_the_report_and_the_bootstrap_brackets_it() {
        let truth: Vec<u32> = (0..200).map(|i| (i % 4) as u32).collect();
        let pred: Vec<u32> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| if i % 7 == 0 { (t + 1) % 4 } else { t })
            .collect();
        let names: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let r = crate::Report::new(
            &names,
            &truth.iter().map(|&t| t as usize).collect::<Vec<_>>(),
            &pred.iter().map(|&p| p as usize).collect::<Vec<_>>(),
        );
        let f = macro_f1(&truth, &pred, 4);
        assert!((f - r.macro_f1).abs() < 1e-12);
        let [lo, hi] = bootstrap_macro_f1(&truth, &pred, 4, 500, 1);
        assert!(lo < f && f < hi && hi - lo < 0.2, "{lo} {f} {hi}");
        assert_eq!([lo, hi], bootstrap_macro_f1(&truth, &pred, 4, 500, 1));
    }
}
