//! Where training rows come from: memory when the selected rows fit the memory budget (the
//! fastest, and what L-BFGS needs), else the shards themselves, read row by row with positioned
//! reads so that the process holds only a batch (the page cache holds the rest). Both give the
//! same rows in the same order, so SGD trains the same head either way.

use std::rc::Rc;

use headstart_cache::reader::{read_shard, ShardData};
use headstart_cache::shard_file::ShardPool;
use headstart_cache::CacheIndex;

use crate::data::{Rows, ViewSelection};
use crate::{Error, Result};

/// Default memory budget for the selected rows: 2 GiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 2 << 30;

/// Rows that a training loop can read by index.
pub trait RowSource {
    /// Number of rows.
    fn len(&self) -> usize;
    /// True without rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Feature width.
    fn dim(&self) -> usize;
    /// Class of row `i`.
    fn label(&self, i: usize) -> u32;
    /// Appends the features of rows `idx` (in that order) to `out`.
    fn gather(&self, idx: &[u32], out: &mut Vec<f32>) -> Result<()>;
    /// The rows, when they are all in memory.
    fn in_memory(&self) -> Option<&Rows>;
}

impl RowSource for Rows {
    fn len(&self) -> usize {
        self.y.len()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn label(&self, i: usize) -> u32 {
        self.y[i]
    }
    fn gather(&self, idx: &[u32], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(idx.len() * self.dim);
        for &i in idx {
            let i = i as usize;
            out.extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
        }
        Ok(())
    }
    fn in_memory(&self) -> Option<&Rows> {
        Some(self)
    }
}

/// Class indices in the narrowest type that holds them (1 byte per row for up to 256 classes).
#[derive(Debug)]
enum Labels {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Labels {
    fn with_capacity(classes: usize, n: usize) -> Self {
        if classes <= 1 << 8 {
            Labels::U8(Vec::with_capacity(n))
        } else if classes <= 1 << 16 {
            Labels::U16(Vec::with_capacity(n))
        } else {
            Labels::U32(Vec::with_capacity(n))
        }
    }

    fn push(&mut self, y: u32) {
        match self {
            Labels::U8(v) => v.push(y as u8),
            Labels::U16(v) => v.push(y as u16),
            Labels::U32(v) => v.push(y),
        }
    }

    fn get(&self, i: usize) -> u32 {
        match self {
            Labels::U8(v) => v[i] as u32,
            Labels::U16(v) => v[i] as u32,
            Labels::U32(v) => v[i],
        }
    }

    fn len(&self) -> usize {
        match self {
            Labels::U8(v) => v.len(),
            Labels::U16(v) => v.len(),
            Labels::U32(v) => v.len(),
        }
    }
}

/// Rows left in the shards: per row only its position (4 bytes) and class (1 byte for up to
/// 256 classes).
#[derive(Debug)]
pub struct DiskRows {
    dim: usize,
    shards: Rc<ShardPool>,
    /// First global row of each shard, plus the total at the end.
    starts: Vec<u64>,
    /// Global row index of each selected row.
    rows: Vec<u32>,
    y: Labels,
}

impl RowSource for DiskRows {
    fn len(&self) -> usize {
        self.y.len()
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn label(&self, i: usize) -> u32 {
        self.y.get(i)
    }
    fn gather(&self, idx: &[u32], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(idx.len() * self.dim);
        for &i in idx {
            let g = self.rows[i as usize] as u64;
            let s = self.starts.partition_point(|&st| st <= g) - 1;
            self.shards
                .read_features(s, (g - self.starts[s]) as usize, out)?;
        }
        Ok(())
    }
    fn in_memory(&self) -> Option<&Rows> {
        None
    }
}

/// The training and validation rows of a split, and the L-BFGS sweep's when asked.
pub struct SplitRows {
    /// Training rows (the selected views of the training images).
    pub train: Box<dyn RowSource>,
    /// Validation rows (the eval view of the validation images).
    pub val: Box<dyn RowSource>,
    /// Whether the rows were left on disk (over the budget).
    pub streamed: bool,
    /// Bytes the selected rows take in memory.
    pub bytes: u64,
}

/// Which rows to take.
pub struct Selection<'a> {
    /// Training images.
    pub train: &'a [usize],
    /// Validation images.
    pub val: &'a [usize],
    /// Views of the training images.
    pub views: ViewSelection,
}

/// Reads the selected rows of `cache`, checking every shard's sha256 and its rows' image and
/// label indices against the manifest. In memory when they take at most `budget` bytes, else
/// left on disk (`require_memory` turns that case into an error naming the budget).
pub fn load_rows(
    cache: &CacheIndex,
    sel: &Selection<'_>,
    budget: u64,
    require_memory: Option<&str>,
) -> Result<SplitRows> {
    let dim = cache.settings().feature_dim;
    let rows_per_image = match sel.views {
        ViewSelection::All => cache.settings().augment.views as u64 + 1,
        ViewSelection::Eval => 1,
    };
    let n_rows = sel.train.len() as u64 * rows_per_image + sel.val.len() as u64;
    let bytes = n_rows * dim as u64 * 4;
    let in_memory = bytes <= budget;
    if !in_memory {
        if let Some(what) = require_memory {
            return Err(Error::Data(format!(
                "{what} needs every training row in memory: {:.0} MiB, over the memory budget of {:.0} MiB; raise the budget (--memory-budget) or train with SGD, which streams rows from the shards",
                bytes as f64 / (1u64 << 20) as f64,
                budget as f64 / (1u64 << 20) as f64
            )));
        }
    }
    // Which side each image is on: one byte per image.
    const TRAIN: u8 = 1;
    const VAL: u8 = 2;
    let mut side = vec![0u8; cache.images.len()];
    for &i in sel.train {
        side[i] |= TRAIN;
    }
    for &i in sel.val {
        side[i] |= VAL;
    }
    // Sized exactly (rows per image are fixed), so nothing grows by doubling.
    let n_train = (sel.train.len() as u64 * rows_per_image) as usize;
    let n_val = sel.val.len();
    let rows_with = |n: usize| {
        let n = if in_memory { n } else { 0 };
        Rows {
            dim,
            x: Vec::with_capacity(n * dim),
            y: Vec::with_capacity(n),
            image: Vec::with_capacity(n),
            view: Vec::with_capacity(n),
        }
    };
    let mut train = rows_with(n_train);
    let mut val = rows_with(n_val);
    let classes = cache.classes().len();
    let on_disk = |n: usize| if in_memory { 0 } else { n };
    let (mut train_at, mut val_at) = (
        Vec::with_capacity(on_disk(n_train)),
        Vec::with_capacity(on_disk(n_val)),
    );
    let (mut train_y, mut val_y) = (
        Labels::with_capacity(classes, on_disk(n_train)),
        Labels::with_capacity(classes, on_disk(n_val)),
    );
    let mut starts = vec![0u64];
    let classes_n = cache.classes().len();
    let label_of = |i: usize| {
        cache
            .images
            .label
            .get(i)
            .map(|&l| l as usize)
            .filter(|&l| l < classes_n)
    };
    for entry in cache.shards() {
        // One read per shard: checksum, structure and indices checked (the features are kept
        // only when the rows stay in memory).
        let ShardData {
            features,
            image,
            view,
            label,
        } = read_shard(&cache.dir, entry, dim, cache.settings().dtype, &label_of)?;
        let first = *starts.last().expect("starts with 0");
        for r in 0..entry.rows {
            let img = image[r] as usize;
            if cache.images.status[img] != headstart_cache::ImageStatus::Ok {
                continue;
            }
            let y = label[r] as u32;
            let targets = [
                (
                    side[img] & TRAIN != 0 && (sel.views == ViewSelection::All || view[r] == 0),
                    &mut train,
                    &mut train_at,
                    &mut train_y,
                ),
                (
                    side[img] & VAL != 0 && view[r] == 0,
                    &mut val,
                    &mut val_at,
                    &mut val_y,
                ),
            ];
            for (take, rows, at, ys) in targets {
                if !take {
                    continue;
                }
                if in_memory {
                    rows.y.push(y);
                    rows.x.extend_from_slice(&features[r * dim..(r + 1) * dim]);
                    rows.image.push(img);
                    rows.view.push(view[r] as u32);
                } else {
                    ys.push(y);
                    let g = first + r as u64;
                    at.push(u32::try_from(g).map_err(|_| {
                        Error::Data("more than 4 billion rows in one cache".into())
                    })?);
                }
            }
        }
        starts.push(first + entry.rows as u64);
    }
    if in_memory {
        return Ok(SplitRows {
            train: Box::new(train),
            val: Box::new(val),
            streamed: false,
            bytes,
        });
    }
    let shards = Rc::new(ShardPool::new(
        cache
            .shards()
            .iter()
            .map(|e| (cache.dir.join(&e.file), e.rows))
            .collect(),
        dim,
        cache.settings().dtype,
    ));
    Ok(SplitRows {
        train: Box::new(DiskRows {
            dim,
            shards: shards.clone(),
            starts: starts.clone(),
            rows: train_at,
            y: train_y,
        }),
        val: Box::new(DiskRows {
            dim,
            shards,
            starts,
            rows: val_at,
            y: val_y,
        }),
        streamed: true,
        bytes,
    })
}
