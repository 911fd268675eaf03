//! Outliers: images far from every neighbour of their own class. An image's score is its mean
//! cosine distance (`1 − similarity`) to its `k` most similar images of the same class; an image
//! is flagged when its score exceeds the median of all scores by more than 3 robust standard
//! deviations (1.4826 × the median absolute deviation) — a screenshot among flowers, a photo of
//! the wrong subject, a blank frame. An image alone in its class has no neighbour: it is
//! reported with score 1 and `neighbors` 0.

use serde::Serialize;

use crate::features::EvalRows;
use crate::similarity::Neighbour;

/// One outlier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outlier {
    /// The image, relative to the dataset.
    pub path: String,
    /// Its class.
    pub label: String,
    /// Mean cosine distance to its nearest same-class neighbours (higher is more outlying).
    pub score: f32,
    /// How many neighbours the score averages (fewer than `k` in a small class).
    pub neighbors: usize,
    /// Its nearest same-class image, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearest: Option<String>,
    /// Its side of train-head's split.
    pub split: &'static str,
}

/// Every row's outlier score (`None` for an image alone in its class).
pub fn scores(same_class: &[Vec<Neighbour>]) -> Vec<Option<f32>> {
    same_class
        .iter()
        .map(|nb| {
            (!nb.is_empty())
                .then(|| nb.iter().map(|n| 1.0 - n.similarity).sum::<f32>() / nb.len() as f32)
        })
        .collect()
}

/// The flagged outliers, most outlying first, and the cut-off used.
pub fn outliers(rows: &EvalRows, same_class: &[Vec<Neighbour>]) -> (Vec<Outlier>, f32) {
    let s = scores(same_class);
    let mut known: Vec<f32> = s.iter().flatten().copied().collect();
    known.sort_by(f32::total_cmp);
    let median = |v: &[f32]| if v.is_empty() { 0.0 } else { v[v.len() / 2] };
    let m = median(&known);
    let mut dev: Vec<f32> = known.iter().map(|x| (x - m).abs()).collect();
    dev.sort_by(f32::total_cmp);
    let cut = m + 3.0 * 1.4826 * median(&dev);
    let mut out: Vec<Outlier> = s
        .iter()
        .enumerate()
        .filter(|(_, sc)| sc.is_none_or(|v| v > cut))
        .map(|(r, sc)| Outlier {
            path: rows.path[r].clone(),
            label: rows.classes[rows.label[r] as usize].clone(),
            score: sc.unwrap_or(1.0),
            neighbors: same_class[r].len(),
            nearest: same_class[r].first().map(|n| rows.path[n.row].clone()),
            split: rows.side[r].name(),
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.path.cmp(&b.path)));
    (out, cut)
}
