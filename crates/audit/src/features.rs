//! The eval-view features of every usable image, L2-normalised (so a dot product is the cosine
//! similarity), with what the findings name: path, content hash, class and split.

use headstart_cache::rows::{load_rows, Selection, SideRows, ViewSelection};
use headstart_cache::CacheIndex;
use headstart_head::split::split_cache;

use crate::{Error, Result};

/// Which side of train-head's split an image is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Trains the head.
    Train,
    /// Validates it.
    Val,
    /// The dataset's `test/` folder.
    Test,
}

impl Side {
    /// `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Train => "train",
            Side::Val => "val",
            Side::Test => "test",
        }
    }
}

/// The audited rows: one per usable image, in the order of the cache's rows.
#[derive(Debug, Clone)]
pub struct EvalRows {
    /// Feature width.
    pub dim: usize,
    /// `len × dim` features, each row of unit length (a zero row stays zero).
    pub x: Vec<f32>,
    /// Image index into the manifest's images, per row.
    pub image: Vec<usize>,
    /// Class per row.
    pub label: Vec<u32>,
    /// Path relative to the dataset, per row.
    pub path: Vec<String>,
    /// sha256 of the file, per row.
    pub sha256: Vec<String>,
    /// train-head's side of the split, per row.
    pub side: Vec<Side>,
    /// Class names.
    pub classes: Vec<String>,
}

impl EvalRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.label.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.label.is_empty()
    }

    /// Row `i`'s features.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Reads the eval view of every usable image of `cache` (checksums verified), normalises
    /// it, and labels each row with train-head's split for `val_fraction` and `split_seed`
    /// (the dataset's folders when it has them). The rows must fit `memory_budget` bytes.
    pub fn load(
        cache: &CacheIndex,
        val_fraction: f64,
        split_seed: u64,
        memory_budget: u64,
    ) -> Result<Self> {
        let usable: Vec<usize> = cache.images.usable().collect();
        if usable.is_empty() {
            return Err(Error::Data(format!(
                "{}: the cache has no usable image to audit",
                cache.dir.display()
            )));
        }
        let sel = Selection {
            train: &usable,
            val: &[],
            views: ViewSelection::Eval,
            with_images: true,
        };
        let bytes = sel.bytes(cache);
        if bytes > memory_budget {
            return Err(Error::Data(format!(
                "the eval-view features take {:.0} MiB, over the memory budget of {:.0} MiB; raise the budget",
                bytes as f64 / (1u64 << 20) as f64,
                memory_budget as f64 / (1u64 << 20) as f64
            )));
        }
        let SideRows::Memory(rows) = load_rows(cache, &sel, memory_budget)?.train else {
            return Err(Error::Data("the rows were left on disk".into()));
        };
        let dim = rows.dim;
        let mut x = rows.x;
        for r in x.chunks_exact_mut(dim.max(1)) {
            let n = r
                .iter()
                .map(|v| (*v as f64) * (*v as f64))
                .sum::<f64>()
                .sqrt();
            if n > 0.0 {
                let k = (1.0 / n) as f32;
                r.iter_mut().for_each(|v| *v *= k);
            }
        }
        let entries = cache.image_entries(&rows.image)?;
        // The sides train-head would use (one class alone has no split: all train).
        let classes = cache.classes().to_vec();
        let mut side = vec![Side::Train; rows.image.len()];
        let mut of_image = std::collections::HashMap::new();
        if classes.len() >= 2 {
            if let Ok(split) = split_cache(&cache.images, &classes, val_fraction, split_seed) {
                for i in split.val {
                    of_image.insert(i, Side::Val);
                }
            }
        }
        for (k, &img) in rows.image.iter().enumerate() {
            if cache.images.split[img] == Some(headstart_cache::Split::Test) {
                side[k] = Side::Test;
            } else if let Some(&s) = of_image.get(&img) {
                side[k] = s;
            }
        }
        Ok(Self {
            dim,
            x,
            label: rows.y,
            path: entries.iter().map(|e| e.path.clone()).collect(),
            sha256: entries.into_iter().map(|e| e.sha256).collect(),
            image: rows.image,
            side,
            classes,
        })
    }
}
