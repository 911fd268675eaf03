//! Train/validation split by image, never by view: stratified and seeded, or the dataset's own.

use std::collections::BTreeMap;

use headstart_cache::{ImageStatus, ImageTable, Split as DatasetSplit};
use serde::Serialize;

use crate::rng::Shuffler;
use crate::{Error, Result};

/// Image indices (into the manifest's `images`) on each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSplit {
    /// Training images (all their views train the head).
    pub train: Vec<usize>,
    /// Validation images (only their eval view is scored).
    pub val: Vec<usize>,
    /// `stratified` or `dataset` (train/val folders).
    pub kind: String,
}

/// Stratified split of `(image, label)` pairs: per class, a seeded shuffle puts
/// `round(n · val_fraction)` images (at least 1 when the class has ≥ 2 and the fraction is > 0,
/// never all of them) on the validation side.
pub fn stratified(images: &[(usize, usize)], val_fraction: f64, seed: u64) -> ImageSplit {
    let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(img, label) in images {
        by_class.entry(label).or_default().push(img);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (label, mut imgs) in by_class {
        imgs.sort_unstable();
        Shuffler::new(seed, 1 + label as u64).shuffle(&mut imgs);
        let n = imgs.len();
        let mut n_val = (n as f64 * val_fraction).round() as usize;
        if val_fraction > 0.0 && n >= 2 {
            n_val = n_val.clamp(1, n - 1);
        } else {
            n_val = n_val.min(n.saturating_sub(1));
        }
        val.extend_from_slice(&imgs[..n_val]);
        train.extend_from_slice(&imgs[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    ImageSplit {
        train,
        val,
        kind: "stratified".into(),
    }
}

/// The split for a cache: the dataset's train/val folders when the manifest recorded them
/// (and `val_fraction` is not forced), else a stratified seeded split of the usable images.
pub fn split_cache(
    images: &ImageTable,
    classes: &[String],
    val_fraction: f64,
    seed: u64,
) -> Result<ImageSplit> {
    if !(0.0..1.0).contains(&val_fraction) {
        return Err(Error::InvalidParams {
            param: "val_fraction",
            problem: format!("{val_fraction} must be in [0, 1)"),
        });
    }
    // Images of a test/ folder are never trained or validated on (`eval --split test` scores them).
    let usable: Vec<(usize, usize)> = images
        .usable()
        .filter(|&i| images.split[i] != Some(DatasetSplit::Test))
        .map(|i| (i, images.label[i] as usize))
        .collect();
    if usable.is_empty() {
        return Err(Error::Data("the cache has no usable image".into()));
    }
    let has_dataset_split = (0..images.len())
        .any(|i| images.split[i] == Some(DatasetSplit::Val) && images.status[i] == ImageStatus::Ok);
    if has_dataset_split {
        let side = |s: DatasetSplit| {
            usable
                .iter()
                .filter(|(i, _)| images.split[*i] == Some(s))
                .map(|(i, _)| *i)
                .collect()
        };
        let split = ImageSplit {
            train: side(DatasetSplit::Train),
            val: side(DatasetSplit::Val),
            kind: "dataset".into(),
        };
        return check_every_class_trains(images, classes, split);
    }
    check_every_class_trains(images, classes, stratified(&usable, val_fraction, seed))
}

/// A head with a class that has no training image would never predict it: refuse, naming it.
fn check_every_class_trains(
    images: &ImageTable,
    classes: &[String],
    split: ImageSplit,
) -> Result<ImageSplit> {
    let mut counts = vec![0usize; classes.len()];
    for &i in &split.train {
        counts[images.label[i] as usize] += 1;
    }
    let empty: Vec<&str> = classes
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n == 0)
        .map(|(c, _)| c.as_str())
        .collect();
    if !empty.is_empty() && !split.train.is_empty() {
        return Err(Error::Data(format!(
            "class {} has no training image (no usable image in its folder{}): add images to it or remove the folder, then extract again",
            empty.join(", "),
            if split.kind == "dataset" { "'s train/ side" } else { "" }
        )));
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_is_seeded_disjoint_and_proportional() {
        let imgs: Vec<(usize, usize)> = (0..100).map(|i| (i, i % 4)).collect();
        let a = stratified(&imgs, 0.2, 43);
        assert_eq!(a, stratified(&imgs, 0.2, 43));
        assert_ne!(a, stratified(&imgs, 0.2, 44));
        assert_eq!(a.val.len(), 20);
        assert_eq!(a.train.len(), 80);
        for c in 0..4 {
            assert_eq!(a.val.iter().filter(|&&i| i % 4 == c).count(), 5);
        }
        assert!(a.train.iter().all(|i| !a.val.contains(i)));
    }

    #[test]
    fn tiny_classes_keep_a_training_image() {
        let imgs = vec![(0, 0), (1, 0), (2, 1)];
        let s = stratified(&imgs, 0.2, 1);
        assert_eq!(s.val.len(), 1);
        assert!(s.train.contains(&2));
        let s = stratified(&imgs, 0.0, 1);
        assert!(s.val.is_empty());
    }
}
