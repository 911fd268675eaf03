//! Duplicates: images whose files are byte-identical (same sha256), and images whose eval-view
//! features have a cosine similarity at or above a threshold (re-encoded, resized or lightly
//! cropped copies), merged into clusters. A cluster that spans train/val/test **leaks**: the
//! validation score counts images the head has, in effect, trained on. A cluster that spans
//! classes has **conflicting labels**: one of them is wrong, or the classes overlap.

use serde::Serialize;

use crate::features::EvalRows;
use crate::similarity::UnionFind;

/// Clusters above this size have their similarity measured from their first member only.
const LARGE_CLUSTER: usize = 512;

/// One cluster of duplicates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateCluster {
    /// The images, as paths relative to the dataset.
    pub paths: Vec<String>,
    /// Their classes.
    pub labels: Vec<String>,
    /// Their sides of train-head's split (`train`, `val`, `test`).
    pub splits: Vec<&'static str>,
    /// The lowest cosine similarity between two members (1 for identical files); in clusters of
    /// more than 512 members, the lowest between the first member and another.
    pub similarity: f32,
    /// Every member is the same file, byte for byte.
    pub exact: bool,
    /// The members are on more than one side of the split (leakage).
    pub cross_split: bool,
    /// The members are labelled with more than one class.
    pub cross_class: bool,
}

/// The clusters: `near` holds the rows linked by the similarity pass; byte-identical files are
/// linked too, whatever their features. Sorted: leaking and conflicting first, then larger,
/// then by first path.
pub fn clusters(rows: &EvalRows, mut near: UnionFind) -> Vec<DuplicateCluster> {
    let mut by_hash: std::collections::HashMap<&str, usize> = Default::default();
    for i in 0..rows.len() {
        match by_hash.get(rows.sha256[i].as_str()) {
            Some(&first) => near.union(first, i),
            None => {
                by_hash.insert(&rows.sha256[i], i);
            }
        }
    }
    let mut out: Vec<DuplicateCluster> = near
        .groups()
        .into_iter()
        .map(|mut g| {
            g.sort_by(|&a, &b| rows.path[a].cmp(&rows.path[b]));
            let mut min = 1.0f32;
            // Every pair of a small cluster; a large one (a folder of near-blank frames) is
            // measured against its first member, so the cost stays linear.
            let pairs_of = |x: usize| {
                if g.len() <= LARGE_CLUSTER {
                    x + 1
                } else if x == 0 {
                    1
                } else {
                    g.len()
                }
            };
            for (x, &a) in g.iter().enumerate() {
                for &b in &g[pairs_of(x).min(g.len())..] {
                    let s = if rows.sha256[a] == rows.sha256[b] {
                        1.0
                    } else {
                        rows.row(a)
                            .iter()
                            .zip(rows.row(b))
                            .map(|(p, q)| p * q)
                            .sum()
                    };
                    min = min.min(s);
                }
            }
            let distinct = |f: &dyn Fn(usize) -> String| {
                let mut v: Vec<String> = g.iter().map(|&i| f(i)).collect();
                v.sort();
                v.dedup();
                v.len() > 1
            };
            DuplicateCluster {
                paths: g.iter().map(|&i| rows.path[i].clone()).collect(),
                labels: g
                    .iter()
                    .map(|&i| rows.classes[rows.label[i] as usize].clone())
                    .collect(),
                splits: g.iter().map(|&i| rows.side[i].name()).collect(),
                similarity: min,
                exact: g.iter().all(|&i| rows.sha256[i] == rows.sha256[g[0]]),
                cross_split: distinct(&|i| rows.side[i].name().to_string()),
                cross_class: distinct(&|i| rows.label[i].to_string()),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.cross_split || b.cross_class)
            .cmp(&(a.cross_split || a.cross_class))
            .then(b.paths.len().cmp(&a.paths.len()))
            .then(a.paths.cmp(&b.paths))
    });
    out
}
