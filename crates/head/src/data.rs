//! Design matrices for training and scoring, built from cache rows and an image split.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// Which rows of a training image train the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewSelection {
    /// The eval view and every augmented view.
    All,
    /// The eval view only.
    Eval,
}

/// Rows selected for one side of the split.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    /// Feature width.
    pub dim: usize,
    /// `len × dim` features.
    pub x: Vec<f32>,
    /// Class per row.
    pub y: Vec<u32>,
    /// Image index per row.
    pub image: Vec<usize>,
    /// View index per row (0 = eval view).
    pub view: Vec<u32>,
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The rows of `images` (all views or only view 0), in their order here.
    pub fn filter(&self, images: &[usize], views: ViewSelection) -> Self {
        let set: HashSet<usize> = images.iter().copied().collect();
        let idx: Vec<usize> = (0..self.len())
            .filter(|&i| {
                set.contains(&self.image[i])
                    && (views == ViewSelection::All || self.view.get(i).copied().unwrap_or(0) == 0)
            })
            .collect();
        self.subset(&idx)
    }

    /// The subset of rows at `idx`.
    pub fn subset(&self, idx: &[usize]) -> Self {
        let mut out = Rows {
            dim: self.dim,
            ..Default::default()
        };
        for &i in idx {
            out.x
                .extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
            out.y.push(self.y[i]);
            out.image.push(self.image[i]);
            if let Some(&v) = self.view.get(i) {
                out.view.push(v);
            }
        }
        out
    }
}
