//! Heads side by side: the settings that differ, validation accuracy (Wilson interval) and
//! macro-F1 (bootstrap interval), per-class F1, and for heads scored on the same images the
//! exact McNemar test of their disagreements. Images are matched by content (sha256), so heads
//! on different backbones or caches of the same photos compare too.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::HeadCheckpoint;
use crate::head_dir::read_run_record;
use crate::metrics::ClassMetrics;
use crate::stats::{bootstrap_macro_f1, mcnemar_exact, wilson_interval, BOOTSTRAP_RESAMPLES};
use crate::validation::ValidationFile;
use crate::{Report, Result};

/// A score with its 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// The score.
    pub value: f64,
    /// Its 95 % confidence interval.
    pub ci95: [f64; 2],
}

/// One head's side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct HeadScores {
    /// The head directory.
    pub head: PathBuf,
    /// Every recorded setting, flattened (`solver.sgd.lr`, `views`, `backbone`, `cache`, …).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Validation images scored.
    pub n: usize,
    /// Validation accuracy, Wilson 95 % interval.
    pub accuracy: Interval,
    /// Validation macro-F1, percentile-bootstrap 95 % interval (no interval without
    /// `validation.json`).
    pub macro_f1: Interval,
    /// Validation accuracy with test-time augmentation on the cache, when it was scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_tta: Option<Interval>,
    /// Per-class precision, recall, F1 and support.
    pub per_class: Vec<ClassMetrics>,
    /// Whether the head has per-image predictions (`validation.json`); without them only its
    /// recorded accuracy is known.
    pub per_image: bool,
}

/// McNemar's test of two heads on the images both scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairTest {
    /// Index of the first head.
    pub a: usize,
    /// Index of the second.
    pub b: usize,
    /// Images both scored (matched by content).
    pub shared_images: usize,
    /// Whether both scored exactly the same images.
    pub same_images: bool,
    /// Shared images only `a` got right.
    pub only_a_right: usize,
    /// Shared images only `b` got right.
    pub only_b_right: usize,
    /// Exact McNemar p-value: how likely a split of the disagreements at least this uneven is
    /// if the two heads were equally good.
    pub mcnemar_p: f64,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Every head, in the order given.
    pub heads: Vec<HeadScores>,
    /// Settings whose values are not the same for every head.
    pub differing_settings: Vec<String>,
    /// McNemar's test for every pair of heads that share validation images.
    pub pairs: Vec<PairTest>,
    /// With exactly two heads sharing validation images: their McNemar p-value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcnemar_p: Option<f64>,
    /// What could not be compared, and why.
    pub notes: Vec<String>,
}

/// The seed of the bootstrap (fixed: the same heads give the same intervals).
const BOOTSTRAP_SEED: u64 = 43;

/// Compares the heads in `dirs` on their validation images.
pub fn compare(dirs: &[PathBuf]) -> Result<Comparison> {
    let mut heads = Vec::with_capacity(dirs.len());
    let mut validations = Vec::with_capacity(dirs.len());
    let mut notes = Vec::new();
    for dir in dirs {
        let (scores, validation) = head_scores(dir)?;
        if validation.is_none() {
            notes.push(format!(
                "{}: no validation.json (written by an older headstart, or trained without validation images): only its recorded accuracy is compared; `headstart train-head --from {}/run.json --out NEW` makes one",
                dir.display(),
                dir.display()
            ));
        }
        heads.push(scores);
        validations.push(validation);
    }
    // Settings that differ.
    let keys: std::collections::BTreeSet<&String> =
        heads.iter().flat_map(|h| h.settings.keys()).collect();
    let differing_settings: Vec<String> = keys
        .into_iter()
        .filter(|k| {
            let first = heads[0].settings.get(*k);
            heads.iter().any(|h| h.settings.get(*k) != first)
        })
        .cloned()
        .collect();
    let mut pairs = Vec::new();
    for a in 0..heads.len() {
        for b in a + 1..heads.len() {
            let (Some(va), Some(vb)) = (&validations[a], &validations[b]) else {
                continue;
            };
            if let Some(t) = pair_test(a, b, va, vb) {
                pairs.push(t);
            } else {
                notes.push(format!(
                    "{} and {} share no validation image: no McNemar test",
                    dirs[a].display(),
                    dirs[b].display()
                ));
            }
        }
    }
    let mcnemar_p = (heads.len() == 2)
        .then(|| pairs.first().map(|p| p.mcnemar_p))
        .flatten();
    Ok(Comparison {
        heads,
        differing_settings,
        pairs,
        mcnemar_p,
        notes,
    })
}

/// One head's scores and, when it has one, its `validation.json`.
fn head_scores(dir: &Path) -> Result<(HeadScores, Option<ValidationFile>)> {
    let ck = HeadCheckpoint::load(dir)?;
    let mut settings = BTreeMap::new();
    settings.insert("backbone".into(), ck.meta.backbone.name.clone().into());
    settings.insert(
        "weights_sha256".into(),
        ck.meta.weights_sha256.clone().into(),
    );
    settings.insert("classes".into(), ck.meta.classes.join(",").into());
    let config = match read_run_record(dir) {
        Ok(run) => {
            settings.insert("cache".into(), run.cache.display().to_string().into());
            settings.insert(
                "cache_manifest_sha256".into(),
                run.cache_manifest_sha256.into(),
            );
            settings.insert("split".into(), run.split.kind.into());
            Some(run.config)
        }
        Err(_) => ck.meta.config.clone(),
    };
    if let Some(c) = &config {
        settings.insert("solver".into(), c.solver.name().into());
        flatten(
            "",
            &serde_json::to_value(c).unwrap_or_default(),
            &mut settings,
        );
    }
    // A head without validation images has nothing to compare per image.
    let validation = ValidationFile::read(dir)?.filter(|v| !v.images.is_empty());
    let scores = match &validation {
        Some(v) => {
            let truth: Vec<u32> = v.images.iter().map(|p| p.label).collect();
            let pred: Vec<u32> = v.images.iter().map(|p| p.predicted).collect();
            let as_usize = |x: &[u32]| x.iter().map(|&c| c as usize).collect::<Vec<_>>();
            let report = Report::new(&v.classes, &as_usize(&truth), &as_usize(&pred));
            let n = truth.len();
            let correct = truth.iter().zip(&pred).filter(|(t, p)| t == p).count();
            let accuracy_tta = v.accuracy_tta().map(|a| {
                let k = (a * n as f64).round() as usize;
                Interval {
                    value: a,
                    ci95: wilson_interval(k, n),
                }
            });
            HeadScores {
                head: dir.to_path_buf(),
                settings,
                n,
                accuracy: Interval {
                    value: report.accuracy,
                    ci95: wilson_interval(correct, n),
                },
                macro_f1: Interval {
                    value: report.macro_f1,
                    ci95: bootstrap_macro_f1(
                        &truth,
                        &pred,
                        v.classes.len(),
                        BOOTSTRAP_RESAMPLES,
                        BOOTSTRAP_SEED,
                    ),
                },
                accuracy_tta,
                per_class: report.per_class,
                per_image: true,
            }
        }
        None => {
            let m = ck.meta.val_metrics.clone();
            let (acc, f1, n) = m
                .as_ref()
                .map_or((0.0, 0.0, 0), |m| (m.accuracy, m.macro_f1, m.n));
            let correct = (acc * n as f64).round() as usize;
            HeadScores {
                head: dir.to_path_buf(),
                settings,
                n,
                accuracy: Interval {
                    value: acc,
                    ci95: wilson_interval(correct, n),
                },
                macro_f1: Interval {
                    value: f1,
                    ci95: [f1, f1],
                },
                accuracy_tta: None,
                per_class: Vec::new(),
                per_image: false,
            }
        }
    };
    Ok((scores, validation))
}

/// McNemar's test on the images both heads scored (by content), or `None` when they share none.
fn pair_test(a: usize, b: usize, va: &ValidationFile, vb: &ValidationFile) -> Option<PairTest> {
    // Right or wrong, by image content. The same content twice (a duplicate photo) counts
    // once per head: the first occurrence.
    let right = |v: &ValidationFile| -> HashMap<String, bool> {
        let mut m = HashMap::new();
        for p in &v.images {
            let truth = &v.classes[p.label as usize];
            let guess = &v.classes[p.predicted as usize];
            m.entry(p.sha256.clone()).or_insert(truth == guess);
        }
        m
    };
    let (ra, rb) = (right(va), right(vb));
    let (mut shared, mut only_a, mut only_b) = (0usize, 0usize, 0usize);
    for (sha, &ok_a) in &ra {
        if let Some(&ok_b) = rb.get(sha) {
            shared += 1;
            only_a += (ok_a && !ok_b) as usize;
            only_b += (ok_b && !ok_a) as usize;
        }
    }
    (shared > 0).then(|| PairTest {
        a,
        b,
        shared_images: shared,
        same_images: shared == ra.len() && shared == rb.len(),
        only_a_right: only_a,
        only_b_right: only_b,
        mcnemar_p: mcnemar_exact(only_a, only_b),
    })
}

/// `{"solver": {"sgd": {"lr": 0.001}}}` → `solver.sgd.lr = 0.001`.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{ValPrediction, VALIDATION_FORMAT};

    fn file(rights: &[(u8, bool)]) -> ValidationFile {
        ValidationFile {
            format: VALIDATION_FORMAT.into(),
            classes: vec!["a".into(), "b".into()],
            cache_manifest_sha256: String::new(),
            tta_views: None,
            images: rights
                .iter()
                .map(|&(id, ok)| ValPrediction {
                    path: format!("{id}.jpg"),
                    sha256: format!("{id:064}"),
                    label: 0,
                    predicted: if ok { 0 } else { 1 },
                    probabilities: vec![0.5, 0.5],
                    predicted_tta: None,
                })
                .collect(),
        }
    }

    #[test]
    fn pairs_are_matched_by_content_and_counted() {
        // Images 0..10: a right on 0..8, b right on 2..10 → only a: 0, 1; only b: 8, 9.
        let a = file(&(0..10).map(|i| (i, i < 8)).collect::<Vec<_>>());
        let b = file(&(0..10).rev().map(|i| (i, i >= 2)).collect::<Vec<_>>());
        let t = pair_test(0, 1, &a, &b).unwrap();
        assert_eq!(
            (t.shared_images, t.only_a_right, t.only_b_right),
            (10, 2, 2)
        );
        assert!(t.same_images);
        assert_eq!(t.mcnemar_p, 1.0);
        // Partly overlapping sets are tested on the overlap and said to differ.
        let c = file(&(5..15).map(|i| (i, true)).collect::<Vec<_>>());
        let t = pair_test(0, 1, &a, &c).unwrap();
        assert_eq!((t.shared_images, t.same_images), (5, false));
        assert_eq!((t.only_a_right, t.only_b_right), (0, 2));
        let d = file(&[(99, true)]);
        assert!(pair_test(0, 1, &a, &d).is_none());
    }

    #[test]
    fn settings_flatten_to_dotted_keys() {
        let mut out = BTreeMap::new();
        flatten(
            "",
            &serde_json::json!({"solver": {"sgd": {"lr": 0.001}}, "views": "all"}),
            &mut out,
        );
        assert_eq!(out["solver.sgd.lr"], serde_json::json!(0.001));
        assert_eq!(out["views"], serde_json::json!("all"));
    }
}
