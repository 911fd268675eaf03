//! Out-of-fold class probabilities: every usable image of a cache scored by a head that never
//! saw it — scikit-learn's `cross_val_predict(…, method="predict_proba")`, the input cleanlab's
//! label-issue search takes. Folds are stratified by class and cut by image
//! ([`crate::sweep::folds_by_image`]), so no view of a scored image trains its head; the
//! training folds' augmented views train too (they make the heads better, and they are free).
//! Every image counts here, whichever side of a split it is on: a wrong label in `val/` or
//! `test/` matters as much as one in `train/`.

use headstart_cache::CacheIndex;
use rayon::prelude::*;

use crate::data::ViewSelection;
use crate::sgd::SgdParams;
use crate::source::RowSource;
use crate::source::{load_rows, Selection};
use crate::sweep::{fold_rows, folds_by_image, Subset};
use crate::train::{probabilities_source, train_sgd};
use crate::{Error, Result};

/// How the out-of-fold heads are trained.
#[derive(Debug, Clone, PartialEq)]
pub struct OofConfig {
    /// K of the K-fold.
    pub folds: usize,
    /// Seed of the folds.
    pub seed: u64,
    /// The heads' SGD settings (train-head's recipe by default).
    pub sgd: SgdParams,
    /// Views of the training folds' images that train.
    pub views: ViewSelection,
    /// Bytes the rows may take in memory; beyond, they are read from the shards.
    pub memory_budget: u64,
}

impl Default for OofConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            seed: 43,
            sgd: SgdParams::default(),
            views: ViewSelection::All,
            memory_budget: crate::DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// Every usable image's out-of-fold probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct OofProbabilities {
    /// Image indices (into the manifest's images), ascending.
    pub images: Vec<usize>,
    /// Given label per image.
    pub labels: Vec<u32>,
    /// Class probabilities per image, from the head of the folds it is not in.
    pub probabilities: Vec<Vec<f32>>,
    /// The fold each image was scored in.
    pub fold: Vec<usize>,
}

/// An image index and its class probabilities.
type Scored = (usize, Vec<f32>);

/// Trains one head per fold (in parallel; each seeded, so the result does not depend on the
/// threads) and scores the fold's images with it. `on_fold` hears each finished fold.
pub fn out_of_fold(
    cache: &CacheIndex,
    cfg: &OofConfig,
    on_fold: &(dyn Fn(usize) + Sync),
) -> Result<OofProbabilities> {
    if cfg.folds < 2 {
        return Err(Error::InvalidParams {
            param: "folds",
            problem: format!("{} must be at least 2", cfg.folds),
        });
    }
    let sgd = cfg.sgd.clone().check()?;
    let classes = cache.classes().len();
    let usable: Vec<usize> = cache.images.usable().collect();
    if usable.len() < cfg.folds {
        return Err(Error::Data(format!(
            "{} usable images is fewer than the {} folds",
            usable.len(),
            cfg.folds
        )));
    }
    let fold_of = folds_by_image(
        &usable,
        &cache.images.label,
        cache.images.len(),
        cfg.folds,
        cfg.seed,
    );
    let rows = load_rows(
        cache,
        &Selection {
            train: &usable,
            val: &[],
            views: cfg.views,
            with_images: true,
        },
        cfg.memory_budget,
        None,
    )?;
    let all = &*rows.train;
    let per_fold: Vec<Result<Vec<Scored>>> = (0..cfg.folds)
        .into_par_iter()
        .map(|fold| {
            let f = fold_rows(all, &fold_of, fold, cfg.views);
            let train = Subset {
                base: all,
                idx: f.train,
            };
            let none = Subset {
                base: all,
                idx: Vec::new(),
            };
            let (head, _) = train_sgd(&train, &none, classes, &sgd, &mut |_| {})?;
            let scored = Subset {
                base: all,
                idx: f.scored,
            };
            let probs = probabilities_source(&head, &scored)?;
            let out = probs
                .into_iter()
                .enumerate()
                .map(|(i, p)| (scored.image(i).expect("rows keep their image"), p))
                .collect();
            on_fold(fold);
            Ok(out)
        })
        .collect();
    let mut by_image: Vec<Scored> = Vec::with_capacity(usable.len());
    for f in per_fold {
        by_image.extend(f?);
    }
    by_image.sort_by_key(|(i, _)| *i);
    Ok(OofProbabilities {
        labels: by_image
            .iter()
            .map(|(i, _)| cache.images.label[*i])
            .collect(),
        fold: by_image.iter().map(|(i, _)| fold_of[*i]).collect(),
        images: by_image.iter().map(|(i, _)| *i).collect(),
        probabilities: by_image.into_iter().map(|(_, p)| p).collect(),
    })
}
