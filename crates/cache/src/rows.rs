//! Feature rows of a cache selected for training: the rows of the training images (all views
//! or the eval view only) and the eval view of the validation images. In memory when they fit
//! the caller's budget (the fastest, and what L-BFGS needs), else left in the shards and read row
//! by row with positioned reads, so that the process holds only a batch (the page cache holds
//! the rest). Both give the same rows in the same order.
//!
//! Every shard is read once while selecting, its sha256, structure and indices checked against
//! the manifest ([`crate::reader::read_shard`]).

use std::collections::HashSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::reader::{read_shard, ShardData};
use crate::shard_file::{ShardPool, ShardSpec};
use crate::{CacheIndex, Error, ImageStatus, Result};

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
    shards: Arc<ShardPool>,
    /// First global row of each shard, plus the total at the end.
    starts: Vec<u64>,
    /// Global row index of each selected row.
    rows: Vec<u32>,
    y: Labels,
    /// Image and view of each row, when the selection asked for them
    /// ([`Selection::with_images`]); empty otherwise.
    image: Vec<u32>,
    view: Vec<u16>,
}

impl DiskRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.y.len() == 0
    }
    /// Feature width.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Class of row `i`.
    pub fn label(&self, i: usize) -> u32 {
        self.y.get(i)
    }
    /// Image of row `i` (index into the manifest's images), when the selection kept it.
    pub fn image(&self, i: usize) -> Option<usize> {
        self.image.get(i).map(|&v| v as usize)
    }
    /// View of row `i`, when the selection kept it.
    pub fn view(&self, i: usize) -> Option<u32> {
        self.view.get(i).map(|&v| v as u32)
    }
    /// Appends the features of rows `idx` (in that order) to `out`, read from the shards.
    pub fn gather(&self, idx: &[u32], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(idx.len() * self.dim);
        for &i in idx {
            let g = self.rows[i as usize] as u64;
            let s = self.starts.partition_point(|&st| st <= g) - 1;
            self.shards
                .read_features(s, (g - self.starts[s]) as usize, out)?;
        }
        Ok(())
    }
}

/// One side's rows: in memory, or left in the shards.
#[derive(Debug)]
pub enum SideRows {
    /// Every selected row in memory.
    Memory(Rows),
    /// Positions and classes only; features read on demand.
    Disk(DiskRows),
}

/// The training and validation rows of a split.
#[derive(Debug)]
pub struct SelectedRows {
    /// Training rows (the selected views of the training images).
    pub train: SideRows,
    /// Validation rows (the eval view of the validation images).
    pub val: SideRows,
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
    /// Keep each row's image and view also for rows left on disk (6 bytes a row; sweeps need
    /// them to form folds by image).
    pub with_images: bool,
}

impl Selection<'_> {
    /// Bytes the selected rows take in memory (f32 features).
    pub fn bytes(&self, cache: &CacheIndex) -> u64 {
        let rows_per_image = match self.views {
            ViewSelection::All => cache.settings().augment.views as u64 + 1,
            ViewSelection::Eval => 1,
        };
        let n_rows = self.train.len() as u64 * rows_per_image + self.val.len() as u64;
        n_rows * cache.settings().feature_dim as u64 * 4
    }
}

/// Reads the selected rows of `cache`, checking every shard's sha256 and its rows' image and
/// label indices against the manifest: in memory when they take at most `budget` bytes
/// ([`Selection::bytes`]), else left on disk.
pub fn load_rows(cache: &CacheIndex, sel: &Selection<'_>, budget: u64) -> Result<SelectedRows> {
    let dim = cache.settings().feature_dim;
    let rows_per_image = match sel.views {
        ViewSelection::All => cache.settings().augment.views as u64 + 1,
        ViewSelection::Eval => 1,
    };
    let bytes = sel.bytes(cache);
    let in_memory = bytes <= budget;
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
    let meta = |n: usize| if sel.with_images { on_disk(n) } else { 0 };
    let (mut train_iv, mut val_iv) = (
        (
            Vec::with_capacity(meta(n_train)),
            Vec::with_capacity(meta(n_train)),
        ),
        (
            Vec::with_capacity(meta(n_val)),
            Vec::with_capacity(meta(n_val)),
        ),
    );
    let mut starts = vec![0u64];
    let mut stamps = Vec::with_capacity(cache.shards().len());
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
            stamp,
        } = read_shard(&cache.dir, entry, dim, cache.settings().dtype, &label_of)?;
        stamps.push(stamp);
        let first = *starts.last().expect("starts with 0");
        for r in 0..entry.rows {
            let img = image[r] as usize;
            if cache.images.status[img] != ImageStatus::Ok {
                continue;
            }
            let y = label[r] as u32;
            let targets = [
                (
                    side[img] & TRAIN != 0 && (sel.views == ViewSelection::All || view[r] == 0),
                    &mut train,
                    &mut train_at,
                    &mut train_y,
                    &mut train_iv,
                ),
                (
                    side[img] & VAL != 0 && view[r] == 0,
                    &mut val,
                    &mut val_at,
                    &mut val_y,
                    &mut val_iv,
                ),
            ];
            for (take, rows, at, ys, iv) in targets {
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
                    if sel.with_images {
                        iv.0.push(img as u32);
                        iv.1.push(view[r].clamp(0, u16::MAX as i64) as u16);
                    }
                    let g = first + r as u64;
                    at.push(u32::try_from(g).map_err(|_| Error::TooLarge {
                        path: cache.dir.clone(),
                        what: "more than 4 billion rows in one cache".into(),
                    })?);
                }
            }
        }
        starts.push(first + entry.rows as u64);
    }
    if in_memory {
        return Ok(SelectedRows {
            train: SideRows::Memory(train),
            val: SideRows::Memory(val),
            streamed: false,
            bytes,
        });
    }
    // Each shard is read again later, row by row: it must still be the file verified now (a
    // shard rewritten in place mid-run is refused, naming it, instead of training on it).
    let shards = Arc::new(ShardPool::new(
        cache
            .shards()
            .iter()
            .zip(stamps)
            .map(|(e, stamp)| ShardSpec {
                path: cache.dir.join(&e.file),
                rows: e.rows,
                verified: Some(stamp),
            })
            .collect(),
        dim,
        cache.settings().dtype,
    ));
    Ok(SelectedRows {
        train: SideRows::Disk(DiskRows {
            dim,
            shards: shards.clone(),
            starts: starts.clone(),
            rows: train_at,
            y: train_y,
            image: train_iv.0,
            view: train_iv.1,
        }),
        val: SideRows::Disk(DiskRows {
            dim,
            shards,
            starts,
            rows: val_at,
            y: val_y,
            image: val_iv.0,
            view: val_iv.1,
        }),
        streamed: true,
        bytes,
    })
}
