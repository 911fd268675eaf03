//! Likely label errors, from out-of-fold probabilities ([`headstart_head::oof`]): every image
//! scored by a head trained on the folds it is not in.
//!
//! - **Which images are flagged: confident learning** (Northcutt et al., 2021; cleanlab's
//!   `filter_by="confident_learning"`). Each class `k` gets a threshold `t_k`, the mean
//!   probability of `k` over the images labelled `k` (how sure the model is of that class when
//!   it is right). An image's *confident class* is the most probable of the classes whose
//!   probability reaches their threshold; an image whose confident class is not its label is
//!   flagged. Per-class thresholds, not one cut-off, because a model is more confident on some
//!   classes than on others: a fixed cut-off would flag every image of a hard class.
//! - **How they are ranked: self-confidence**, the probability of the given label (cleanlab's
//!   default `rank_by="self_confidence"`): the lower, the less the label is believed. `score`
//!   is `1 − self-confidence`, so that higher is more suspicious, as for outliers.

use serde::Serialize;

use crate::features::EvalRows;

/// One likely label error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelIssue {
    /// The image, relative to the dataset.
    pub path: String,
    /// Its given class.
    pub label: String,
    /// The class the out-of-fold head believes.
    pub suggested: String,
    /// `1 − P(given label)`: higher is more suspicious.
    pub score: f32,
    /// `P(given label)`.
    pub self_confidence: f32,
    /// `P(suggested)`.
    pub suggested_probability: f32,
    /// Its side of train-head's split.
    pub split: &'static str,
}

/// Flags and ranks the label issues. `probabilities[r]` belongs to row `r` of `rows`.
pub fn label_issues(rows: &EvalRows, probabilities: &[Vec<f32>]) -> Vec<LabelIssue> {
    let k = rows.classes.len();
    let (mut sum, mut count) = (vec![0f64; k], vec![0usize; k]);
    for (r, p) in probabilities.iter().enumerate() {
        let y = rows.label[r] as usize;
        sum[y] += p[y] as f64;
        count[y] += 1;
    }
    // A class nobody carries can never be confident.
    let t: Vec<f32> = (0..k)
        .map(|c| {
            if count[c] == 0 {
                f32::INFINITY
            } else {
                (sum[c] / count[c] as f64) as f32
            }
        })
        .collect();
    let mut out: Vec<(usize, LabelIssue)> = Vec::new();
    for (r, p) in probabilities.iter().enumerate() {
        let y = rows.label[r] as usize;
        let confident = (0..k)
            .filter(|&c| p[c] >= t[c])
            .max_by(|&a, &b| p[a].total_cmp(&p[b]).then(b.cmp(&a)));
        if let Some(c) = confident.filter(|&c| c != y) {
            out.push((
                r,
                LabelIssue {
                    path: rows.path[r].clone(),
                    label: rows.classes[y].clone(),
                    suggested: rows.classes[c].clone(),
                    score: 1.0 - p[y],
                    self_confidence: p[y],
                    suggested_probability: p[c],
                    split: rows.side[r].name(),
                },
            ));
        }
    }
    out.sort_by(|(ra, a), (rb, b)| {
        a.self_confidence
            .total_cmp(&b.self_confidence)
            .then(rows.path[*ra].cmp(&rows.path[*rb]))
    });
    out.into_iter().map(|(_, i)| i).collect()
}
