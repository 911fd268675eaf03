//! Where training rows come from, as the training loops see them: [`RowSource`], implemented
//! by the cache's rows in memory and on disk (`headstart_cache::rows`); same rows, same order,
//! so SGD trains the same head either way.

use headstart_cache::rows::{self, DiskRows, SideRows};
use headstart_cache::CacheIndex;

pub use headstart_cache::rows::Selection;

use crate::data::Rows;
use crate::{Error, Result};

/// Default memory budget for the selected rows: 2 GiB.
pub const DEFAULT_MEMORY_BUDGET: u64 = 2 << 30;

/// Rows that a training loop can read by index.
pub trait RowSource: Sync {
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
    /// Image of row `i` (index into the manifest's images), when the source knows it.
    fn image(&self, _i: usize) -> Option<usize> {
        None
    }
    /// View of row `i`, when the source knows it.
    fn view(&self, _i: usize) -> Option<u32> {
        None
    }
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
    fn image(&self, i: usize) -> Option<usize> {
        self.image.get(i).copied()
    }
    fn view(&self, i: usize) -> Option<u32> {
        self.view.get(i).copied()
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

impl RowSource for DiskRows {
    fn len(&self) -> usize {
        DiskRows::len(self)
    }
    fn dim(&self) -> usize {
        DiskRows::dim(self)
    }
    fn label(&self, i: usize) -> u32 {
        DiskRows::label(self, i)
    }
    fn image(&self, i: usize) -> Option<usize> {
        DiskRows::image(self, i)
    }
    fn view(&self, i: usize) -> Option<u32> {
        DiskRows::view(self, i)
    }
    fn gather(&self, idx: &[u32], out: &mut Vec<f32>) -> Result<()> {
        Ok(DiskRows::gather(self, idx, out)?)
    }
    fn in_memory(&self) -> Option<&Rows> {
        None
    }
}

/// The training and validation rows of a split.
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

/// A side's rows as a [`RowSource`].
pub(crate) fn boxed(r: SideRows) -> Box<dyn RowSource> {
    match r {
        SideRows::Memory(m) => Box::new(m),
        SideRows::Disk(d) => Box::new(d),
    }
}

/// The selected rows of `cache` ([`rows::load_rows`]): in memory when they take at most
/// `budget` bytes, else left on disk — unless `require_memory` names a solver that needs them in
/// memory, which makes that case an error naming the budget.
pub fn load_rows(
    cache: &CacheIndex,
    sel: &Selection<'_>,
    budget: u64,
    require_memory: Option<&str>,
) -> Result<SplitRows> {
    let bytes = sel.bytes(cache);
    if bytes > budget {
        if let Some(what) = require_memory {
            return Err(Error::Data(format!(
                "{what} needs every training row in memory: {:.0} MiB, over the memory budget of {:.0} MiB; raise the budget (--memory-budget) or train with SGD, which streams rows from the shards",
                bytes as f64 / (1u64 << 20) as f64,
                budget as f64 / (1u64 << 20) as f64
            )));
        }
    }
    let r = rows::load_rows(cache, sel, budget)?;
    Ok(SplitRows {
        train: boxed(r.train),
        val: boxed(r.val),
        streamed: r.streamed,
        bytes: r.bytes,
    })
}
