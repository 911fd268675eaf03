//! The SGD training loop and scoring helpers.

use candle_core::{Device, Tensor};

use crate::data::Rows;
use crate::history::EpochRecord;
use crate::linear::{cross_entropy_with_grad, one_hot, LinearHead};
use crate::rng::Shuffler;
use crate::sgd::{ClassWeight, Sgd, ValidSgdParams};
use crate::source::RowSource;
use crate::{Error, Result};

/// Rows as a `[N, dim]` tensor.
pub fn features_tensor(rows: &Rows) -> Result<Tensor> {
    Ok(Tensor::from_slice(
        &rows.x,
        (rows.len(), rows.dim),
        &Device::Cpu,
    )?)
}

/// Per-class weights `n / (classes · count)` for "balanced" weighting (0 for absent classes).
pub fn balanced_class_weights(y: &[u32], classes: usize) -> Vec<f32> {
    weights_from_counts(y.len(), classes, y.iter().map(|&c| c as usize))
}

/// [`balanced_class_weights`] of `n` labels given one by one.
fn weights_from_counts(n: usize, classes: usize, labels: impl Iterator<Item = usize>) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for c in labels {
        counts[c] += 1;
    }
    counts
        .iter()
        .map(|&k| {
            if k == 0 {
                0.0
            } else {
                n as f32 / (classes * k) as f32
            }
        })
        .collect()
}

/// Loss, accuracy and predicted classes of `head` on `rows`.
pub fn score(head: &LinearHead, rows: &Rows) -> Result<(f64, f64, Vec<usize>)> {
    if rows.is_empty() {
        return Ok((0.0, 0.0, Vec::new()));
    }
    let logits = head.logits(&features_tensor(rows)?)?;
    let (loss, _) = cross_entropy_with_grad(&logits, &one_hot(&rows.y, head.classes())?, None)?;
    let pred: Vec<usize> = logits
        .argmax(1)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|p| p as usize)
        .collect();
    let correct = pred
        .iter()
        .zip(&rows.y)
        .filter(|(p, y)| **p == **y as usize)
        .count();
    Ok((loss, correct as f64 / rows.len() as f64, pred))
}

/// Rows scored per pass when they are read from the shards.
const SCORE_CHUNK: usize = 1024;

/// Loss, accuracy and predicted classes of `head` on rows from any source: in one pass when
/// they are in memory (exactly [`score`]), else in chunks of 1024 rows (a few MB).
pub fn score_source(head: &LinearHead, rows: &dyn RowSource) -> Result<(f64, f64, Vec<usize>)> {
    if let Some(r) = rows.in_memory() {
        return score(head, r);
    }
    let n = rows.len();
    if n == 0 {
        return Ok((0.0, 0.0, Vec::new()));
    }
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    let mut pred_all = Vec::with_capacity(n);
    let mut buf = Vec::new();
    let idx: Vec<u32> = (0..n as u32).collect();
    for chunk in idx.chunks(SCORE_CHUNK) {
        buf.clear();
        rows.gather(chunk, &mut buf)?;
        let x = Tensor::from_slice(&buf, (chunk.len(), rows.dim()), &Device::Cpu)?;
        let y: Vec<u32> = chunk.iter().map(|&i| rows.label(i as usize)).collect();
        let logits = head.logits(&x)?;
        let (loss, _) = cross_entropy_with_grad(&logits, &one_hot(&y, head.classes())?, None)?;
        loss_sum += loss * chunk.len() as f64;
        for (p, t) in logits.argmax(1)?.to_vec1::<u32>()?.into_iter().zip(&y) {
            correct += (p == *t) as usize;
            pred_all.push(p as usize);
        }
    }
    Ok((loss_sum / n as f64, correct as f64 / n as f64, pred_all))
}

/// Class probabilities of `head` on every row of `rows` (one vector per row, in row order),
/// 1024 rows at a time.
pub fn probabilities_source(head: &LinearHead, rows: &dyn RowSource) -> Result<Vec<Vec<f32>>> {
    let n = rows.len();
    let mut out = Vec::with_capacity(n);
    let mut buf = Vec::new();
    let idx: Vec<u32> = (0..n as u32).collect();
    for chunk in idx.chunks(SCORE_CHUNK) {
        buf.clear();
        rows.gather(chunk, &mut buf)?;
        let x = Tensor::from_slice(&buf, (chunk.len(), rows.dim()), &Device::Cpu)?;
        out.extend(head.probabilities(&x)?.to_vec2::<f32>()?);
    }
    Ok(out)
}

/// Test-time augmentation on cached views: per image (by [`RowSource::image`]; rows without
/// one count as their own image), its class and the mean of its rows' probabilities, by image
/// index.
pub fn mean_probabilities_by_image(
    head: &LinearHead,
    rows: &dyn RowSource,
) -> Result<std::collections::BTreeMap<usize, (u32, Vec<f32>)>> {
    let probs = probabilities_source(head, rows)?;
    let mut sums: std::collections::BTreeMap<usize, (u32, u32, Vec<f64>)> = Default::default();
    for (i, p) in probs.into_iter().enumerate() {
        let img = rows.image(i).unwrap_or(i);
        let e = sums
            .entry(img)
            .or_insert_with(|| (rows.label(i), 0, vec![0.0; p.len()]));
        e.1 += 1;
        for (s, v) in e.2.iter_mut().zip(p) {
            *s += v as f64;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(img, (y, n, s))| {
            (
                img,
                (y, s.into_iter().map(|v| (v / n as f64) as f32).collect()),
            )
        })
        .collect())
}

/// The index of the largest value (ties: the first).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (k, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = k;
        }
    }
    best
}

/// Trains a linear head with mini-batch SGD (seeded init and shuffles). `on_epoch` sees every
/// epoch's record as soon as it is computed. Rows are gathered batch by batch, so `train` may
/// live on disk; the result does not depend on where the rows are.
pub fn train_sgd(
    train: &dyn RowSource,
    val: &dyn RowSource,
    classes: usize,
    p: &ValidSgdParams,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<(LinearHead, Vec<EpochRecord>)> {
    if train.is_empty() {
        return Err(Error::Data("no training rows".into()));
    }
    let n = train.len();
    let dim = train.dim();
    let class_weights = match p.class_weight {
        ClassWeight::None => None,
        ClassWeight::Balanced => Some(weights_from_counts(
            n,
            classes,
            (0..n).map(|i| train.label(i) as usize),
        )),
    };
    let mut xbuf: Vec<f32> = Vec::with_capacity(p.batch_size.min(n) * dim);
    let mut head = LinearHead::init(classes, dim, p.seed)?;
    let mut opt = Sgd::new(p, 2);
    // Grown as epochs finish: the epoch count is the user's and may be huge.
    let mut history = Vec::new();
    let mut order: Vec<u32> = (0..n as u32).collect();
    for epoch in 1..=p.epochs {
        Shuffler::new(p.seed, 0x5EED_0000 + epoch as u64).shuffle(&mut order);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        for batch in order.chunks(p.batch_size) {
            xbuf.clear();
            train.gather(batch, &mut xbuf)?;
            let xb = Tensor::from_slice(&xbuf, (batch.len(), dim), &Device::Cpu)?;
            let yv: Vec<u32> = batch.iter().map(|&i| train.label(i as usize)).collect();
            let yb = one_hot(&yv, classes)?;
            let wb = class_weights
                .as_ref()
                .map(|cw| {
                    let w: Vec<f32> = yv.iter().map(|&c| cw[c as usize]).collect();
                    Tensor::from_vec(w, batch.len(), &Device::Cpu)
                })
                .transpose()?;
            let logits = head.logits(&xb)?;
            let (loss, dlogits) = cross_entropy_with_grad(&logits, &yb, wb.as_ref())?;
            loss_sum += loss * batch.len() as f64;
            let pred = logits.argmax(1)?.to_vec1::<u32>()?;
            correct += pred.iter().zip(&yv).filter(|(p, &t)| **p == t).count();
            let gw = dlogits.t()?.matmul(&xb)?;
            let gb = dlogits.sum(0)?;
            let LinearHead { weight, bias } = &mut head;
            opt.step(&mut [weight, bias], &[gw, gb])?;
        }
        let (val_loss, val_accuracy) = if val.is_empty() {
            (None, None)
        } else {
            let (l, a, _) = score_source(&head, val)?;
            (Some(l), Some(a))
        };
        let train_loss = loss_sum / n as f64;
        if !train_loss.is_finite() || !head.is_finite()? {
            return Err(Error::Diverged {
                epoch,
                loss: train_loss,
                lr: p.lr,
            });
        }
        let rec = EpochRecord {
            epoch,
            train_loss,
            train_accuracy: correct as f64 / n as f64,
            val_loss,
            val_accuracy,
        };
        on_epoch(&rec);
        history.push(rec);
    }
    Ok((head, history))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sgd::SgdParams;

    fn blobs(n_per: usize, seed: u64) -> Rows {
        let mut r = Shuffler::new(seed, 9);
        let mut rows = Rows {
            dim: 4,
            ..Default::default()
        };
        for c in 0..3u32 {
            for i in 0..n_per {
                for d in 0..4 {
                    let centre = if d as u32 == c { 3.0 } else { 0.0 };
                    rows.x.push(centre + (r.unit() as f32 - 0.5));
                }
                rows.y.push(c);
                rows.image.push(c as usize * 1000 + i);
            }
        }
        rows
    }

    #[test]
    fn learns_separable_blobs_and_is_deterministic() {
        let train = blobs(40, 1);
        let val = blobs(10, 2);
        let p = SgdParams {
            lr: 0.05,
            epochs: 10,
            ..Default::default()
        }
        .check()
        .unwrap();
        let (h1, hist) = train_sgd(&train, &val, 3, &p, &mut |_| {}).unwrap();
        assert_eq!(hist.len(), 10);
        assert!(hist[9].val_accuracy.unwrap() > 0.95, "{hist:?}");
        assert!(hist[9].train_loss < hist[0].train_loss);
        let (h2, _) = train_sgd(&train, &val, 3, &p, &mut |_| {}).unwrap();
        let a: Vec<f32> = h1.weight.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = h2.weight.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_diverging_run_stops_with_the_epoch_instead_of_writing_nan() {
        let train = blobs(40, 1);
        let p = SgdParams {
            lr: 1e38,
            epochs: 5,
            ..Default::default()
        }
        .check()
        .unwrap();
        let err = train_sgd(&train, &Rows::default(), 3, &p, &mut |_| {}).unwrap_err();
        assert!(matches!(err, Error::Diverged { epoch: 1..=5, .. }), "{err}");
        assert!(err.to_string().contains("smaller learning rate"), "{err}");
    }

    #[test]
    fn a_huge_epoch_count_allocates_nothing_up_front() {
        let train = blobs(2, 1);
        let p = SgdParams {
            epochs: usize::MAX,
            lr: 1e38,
            ..Default::default()
        }
        .check()
        .unwrap();
        // Would abort allocating the history if it were reserved up front; diverges instead.
        assert!(train_sgd(&train, &Rows::default(), 3, &p, &mut |_| {}).is_err());
    }

    #[test]
    fn balanced_weights_follow_sklearn() {
        assert_eq!(
            balanced_class_weights(&[0, 0, 0, 1], 2),
            vec![4.0 / 6.0, 2.0]
        );
    }
}
