//! One blocked pass over all pairs of rows: the cosine similarity of every pair is computed
//! exactly, a block of rows against a block of rows at a time (a matrix product of at most
//! 512 × 4096 similarities, 8 MB), so memory stays flat whatever the number of rows. From the
//! pass come each row's nearest neighbours of its own class (for outliers) and the pairs at or
//! above a threshold (near duplicates), merged into clusters as they are found.
//!
//! Cost: N² · D multiply-adds (each block pair is computed once per side, so that every row
//! sees all of its neighbours). Measured on this project's 2-core machine with 1280-d rows
//! (`headstart audit` on synthetic caches, the similarity step alone): 20,000 rows 7.8 s,
//! 60,000 rows 122 s (75 GFLOP/s). By N², 100,000 rows take about 6 minutes and 1,000,000
//! about 10 hours: that is where exact search stops being the tool. Beyond, a user audits a
//! sample (a cache per subset) or uses an approximate index; none is built in.

use candle_core::{Device, Tensor};

use crate::features::EvalRows;
use crate::Result;

/// Query rows per block.
const QUERY_BLOCK: usize = 512;
/// Key rows per block.
const KEY_BLOCK: usize = 4096;

/// A neighbour: its row and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Row index.
    pub row: usize,
    /// Cosine similarity.
    pub similarity: f32,
}

/// What the pass found.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Per row, its up to `k` most similar rows of the same class (itself excluded), most
    /// similar first (ties: lower row first).
    pub same_class: Vec<Vec<Neighbour>>,
    /// Disjoint sets of rows linked by a similarity at or above the threshold.
    pub clusters: UnionFind,
}

/// Union-find over row indices (path halving, union by size).
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    /// `n` singletons.
    pub fn new(n: usize) -> Self {
        Self {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    /// The representative of `i`'s set.
    pub fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    /// Joins the sets of `a` and `b`.
    pub fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }

    /// Every set of more than one element, each sorted, sets ordered by their first element.
    pub fn groups(&mut self) -> Vec<Vec<usize>> {
        let n = self.parent.len();
        let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for i in 0..n {
            let r = self.find(i);
            by_root.entry(r).or_default().push(i);
        }
        let mut out: Vec<Vec<usize>> = by_root.into_values().filter(|g| g.len() > 1).collect();
        out.sort_by_key(|g| g[0]);
        out
    }
}

/// Keeps the `k` best neighbours, best first.
fn keep(top: &mut Vec<Neighbour>, k: usize, n: Neighbour) {
    if k == 0 {
        return;
    }
    let better = |a: &Neighbour, b: &Neighbour| {
        a.similarity > b.similarity || (a.similarity == b.similarity && a.row < b.row)
    };
    if top.len() == k && !better(&n, top.last().expect("k > 0")) {
        return;
    }
    let at = top.partition_point(|t| better(t, &n));
    top.insert(at, n);
    top.truncate(k);
}

/// The blocked pass: top-`k` same-class neighbours per row, and clusters of rows whose
/// similarity is at least `threshold`. `on_block` hears the query rows done so far.
pub fn scan(rows: &EvalRows, k: usize, threshold: f32, on_block: &dyn Fn(usize)) -> Result<Scan> {
    let n = rows.len();
    let d = rows.dim;
    let mut same_class: Vec<Vec<Neighbour>> = vec![Vec::new(); n];
    let mut clusters = UnionFind::new(n);
    let block = |lo: usize, hi: usize| -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &rows.x[lo * d..hi * d],
            (hi - lo, d),
            &Device::Cpu,
        )?)
    };
    for q0 in (0..n).step_by(QUERY_BLOCK) {
        let q1 = (q0 + QUERY_BLOCK).min(n);
        let q = block(q0, q1)?;
        for k0 in (0..n).step_by(KEY_BLOCK) {
            let k1 = (k0 + KEY_BLOCK).min(n);
            let keys = block(k0, k1)?;
            let sims = q.matmul(&keys.t()?)?.to_vec2::<f32>()?;
            for (a, row) in sims.iter().enumerate() {
                let i = q0 + a;
                for (b, &s) in row.iter().enumerate() {
                    let j = k0 + b;
                    if i == j {
                        continue;
                    }
                    if rows.label[i] == rows.label[j] {
                        keep(
                            &mut same_class[i],
                            k,
                            Neighbour {
                                row: j,
                                similarity: s,
                            },
                        );
                    }
                    if j > i && s >= threshold {
                        clusters.union(i, j);
                    }
                }
            }
        }
        on_block(q1);
    }
    Ok(Scan {
        same_class,
        clusters,
    })
}

/// The `k` rows most similar to `query` (a unit vector of the rows' width), most similar first.
pub fn nearest(rows: &EvalRows, query: &[f32], k: usize) -> Vec<Neighbour> {
    let mut top = Vec::with_capacity(k + 1);
    for i in 0..rows.len() {
        let s: f32 = rows.row(i).iter().zip(query).map(|(a, b)| a * b).sum();
        keep(
            &mut top,
            k,
            Neighbour {
                row: i,
                similarity: s,
            },
        );
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_holds_the_best_k_in_order() {
        let mut t = Vec::new();
        for (row, s) in [(0, 0.1), (1, 0.9), (2, 0.5), (3, 0.9), (4, 0.2)] {
            keep(&mut t, 3, Neighbour { row, similarity: s });
        }
        let rows: Vec<usize> = t.iter().map(|n| n.row).collect();
        assert_eq!(rows, vec![1, 3, 2]);
    }

    #[test]
    fn union_find_groups_linked_rows() {
        let mut u = UnionFind::new(6);
        u.union(4, 1);
        u.union(1, 5);
        u.union(2, 3);
        assert_eq!(u.groups(), vec![vec![1, 4, 5], vec![2, 3]]);
    }
}
