//! The one "network inputs → batches → model" loop ([`run_on_rows`], used by `extract` for its
//! eval and augmented views) and the files-in front of it ([`run_on_files`], used by `predict`,
//! `eval` and `classify`): files are decoded in parallel, the ones that decode are stacked into
//! batches, and a file that cannot be read or decoded gets its error without stopping the others.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::preprocess::{eval_input_from_file, DecodeLimits};
use crate::{Error, PreprocessConfig, Result};

/// Runs `model` on the eval inputs of `paths`, `batch_size` files at a time. `model` gets a
/// `[n, 3, S, S]` batch of the files that decoded and returns one output per row; the result has
/// one entry per path, in order: the output, or the reason the file was not usable.
/// `progress` is told how many files each batch finished.
pub fn run_on_files<T, E: From<Error>>(
    paths: &[PathBuf],
    cfg: &PreprocessConfig,
    limits: &DecodeLimits,
    batch_size: usize,
    model: &mut dyn FnMut(&Tensor) -> std::result::Result<Vec<T>, E>,
    progress: &dyn headstart_core::progress::Progress,
) -> std::result::Result<Vec<std::result::Result<T, Error>>, E> {
    let out = run_on_file_views(
        paths,
        cfg.input_size as usize,
        1,
        &|p| eval_input_from_file(p, cfg, limits),
        batch_size,
        model,
        progress,
    )?;
    Ok(out
        .into_iter()
        .map(|r| r.map(|mut v| v.pop().expect("one view")))
        .collect())
}

/// [`run_on_files`] with `views` network inputs per file, made by `prepare` (`views × 3 × S ×
/// S` values, CHW, view by view): `model` sees batches of at most `batch_size` rows and each
/// file gets its `views` outputs, in order.
pub fn run_on_file_views<T, E: From<Error>>(
    paths: &[PathBuf],
    side: usize,
    views: usize,
    prepare: &(dyn Fn(&Path) -> Result<Vec<f32>> + Sync),
    batch_size: usize,
    model: &mut dyn FnMut(&Tensor) -> std::result::Result<Vec<T>, E>,
    progress: &dyn headstart_core::progress::Progress,
) -> std::result::Result<Vec<std::result::Result<Vec<T>, Error>>, E> {
    let views = views.max(1);
    let plane = 3 * side * side;
    let files_per_chunk = (batch_size.max(1) / views).max(1);
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(files_per_chunk) {
        let inputs: Vec<Result<Vec<f32>>> = chunk
            .par_iter()
            .map(|p| {
                let v = prepare(p)?;
                if v.len() != views * plane {
                    return Err(Error::Input(format!(
                        "{} network input values for {views} views of 3 × {side} × {side}",
                        v.len()
                    )));
                }
                Ok(v)
            })
            .collect();
        let mut outputs = Vec::new();
        let decoded = inputs.iter().flatten().flat_map(|v| v.chunks_exact(plane));
        run_on_rows::<E>(decoded, side, batch_size.max(1), &mut |x| {
            let o = model(x)?;
            let rows = x.dim(0).map_err(Error::from)?;
            if o.len() != rows {
                return Err(Error::Input(format!(
                    "the model gave {} outputs for a batch of {rows}",
                    o.len()
                ))
                .into());
            }
            outputs.extend(o);
            Ok(())
        })?;
        let mut outputs = outputs.into_iter();
        for r in inputs {
            out.push(r.map(|_| outputs.by_ref().take(views).collect()));
        }
        progress.advance(chunk.len() as u64);
    }
    Ok(out)
}

/// Stacks `rows` (each one network input, `3 × side × side` values, CHW) into batches of at
/// most `batch_size`, copying each row once, and calls `model` on each `[n, 3, side, side]` batch
/// in order.
pub fn run_on_rows<'a, E: From<Error>>(
    rows: impl IntoIterator<Item = &'a [f32]>,
    side: usize,
    batch_size: usize,
    model: &mut dyn FnMut(&Tensor) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let plane = 3 * side * side;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let mut pixels = Vec::with_capacity(batch_size.max(1) * plane);
        for row in rows.by_ref().take(batch_size.max(1)) {
            if row.len() != plane {
                return Err(Error::Input(format!(
                    "a network input of {} values, expected 3 × {side} × {side}",
                    row.len()
                ))
                .into());
            }
            pixels.extend_from_slice(row);
        }
        let n = pixels.len() / plane;
        let x = Tensor::from_vec(pixels, (n, 3, side, side), &Device::Cpu).map_err(Error::from)?;
        model(&x)?;
    }
    Ok(())
}

/// Row-wise softmax of `[N, C]` logits.
pub fn softmax_rows(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(1)?;
    let e = logits.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(1)?)?)
}

/// Indices of the `k` largest scores, largest first (ties: lower index first).
pub fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k.max(1));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_ordered_with_stable_ties() {
        assert_eq!(top_k(&[0.1, 0.5, 0.5, 0.2], 3), vec![1, 2, 3]);
        assert_eq!(top_k(&[0.3], 5), vec![0]);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_survive_huge_logits() {
        let t = Tensor::new(&[[1000f32, 0., -1000.], [1., 2., 3.]], &Device::Cpu).unwrap();
        let p = softmax_rows(&t).unwrap().to_vec2::<f32>().unwrap();
        for r in &p {
            assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6 && r.iter().all(|v| v.is_finite()));
        }
        assert!(p[1][2] > p[1][1] && p[1][1] > p[1][0]);
    }

    #[test]
    fn unreadable_files_keep_their_place_and_their_reason() {
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("bad.jpg");
        std::fs::write(&bad, b"nope").unwrap();
        let mut img = image::RgbImage::new(30, 20);
        img.put_pixel(3, 3, image::Rgb([200, 10, 10]));
        let good = d.path().join("good.png");
        img.save(&good).unwrap();
        let cfg = crate::Architecture::ResNet18.config().preprocess;
        let paths = vec![good.clone(), bad, good];
        /// Records each batch's count.
        #[derive(Default)]
        struct Batches(std::sync::Mutex<Vec<u64>>);
        impl headstart_core::progress::Progress for Batches {
            fn advance(&self, n: u64) {
                self.0.lock().unwrap().push(n);
            }
        }
        let batches = Batches::default();
        let out = run_on_files(
            &paths,
            &cfg,
            &DecodeLimits::default(),
            2,
            &mut |x| Ok::<_, Error>((0..x.dim(0)?).map(|i| i * 10).collect()),
            &batches,
        )
        .unwrap();
        assert_eq!(*batches.0.lock().unwrap(), vec![2, 1]);
        assert_eq!(out[0].as_ref().unwrap(), &0);
        assert!(out[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("not an image"));
        assert_eq!(out[2].as_ref().unwrap(), &0);
    }
}
