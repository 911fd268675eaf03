//! Classification metrics: accuracy, confusion matrix, per-class precision/recall/F1, macro-F1.

use serde::{Deserialize, Serialize};

/// Metrics of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// TP / (TP + FP); 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class has no sample.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Number of samples of this class.
    pub support: usize,
}

/// Up to this many classes the report holds the dense confusion matrix (and prints it); beyond,
/// only the non-zero cells (at most one per sample), so memory grows with the samples, not with
/// the square of the classes.
pub const DENSE_CONFUSION_MAX_CLASSES: usize = 100;

/// A full classification report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean of the per-class F1 over classes with support.
    pub macro_f1: f64,
    /// Number of samples.
    pub n: usize,
    /// Class names (rows and columns of `confusion`).
    pub classes: Vec<String>,
    /// `confusion[true][predicted]` counts, for up to [`DENSE_CONFUSION_MAX_CLASSES`] classes
    /// (empty beyond: see `confusion_sparse`).
    #[serde(default)]
    pub confusion: Vec<Vec<usize>>,
    /// Beyond [`DENSE_CONFUSION_MAX_CLASSES`] classes: the non-zero cells `[true, predicted,
    /// count]`, largest off-diagonal counts first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confusion_sparse: Vec<[usize; 3]>,
    /// Per-class metrics.
    pub per_class: Vec<ClassMetrics>,
}

impl Report {
    /// Builds the report from true and predicted class indices.
    pub fn new(classes: &[String], truth: &[usize], pred: &[usize]) -> Self {
        let c = classes.len();
        let (mut tp, mut support, mut predicted) =
            (vec![0usize; c], vec![0usize; c], vec![0usize; c]);
        let mut cells: std::collections::HashMap<(usize, usize), usize> = Default::default();
        for (&t, &p) in truth.iter().zip(pred) {
            support[t] += 1;
            predicted[p] += 1;
            if t == p {
                tp[t] += 1;
            }
            *cells.entry((t, p)).or_default() += 1;
        }
        let n = truth.len();
        let correct: usize = tp.iter().sum();
        let per_class: Vec<ClassMetrics> = (0..c)
            .map(|i| {
                let precision = if predicted[i] > 0 {
                    tp[i] as f64 / predicted[i] as f64
                } else {
                    0.0
                };
                let recall = if support[i] > 0 {
                    tp[i] as f64 / support[i] as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    class: classes[i].clone(),
                    precision,
                    recall,
                    f1,
                    support: support[i],
                }
            })
            .collect();
        let with_support: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
        let macro_f1 = if with_support.is_empty() {
            0.0
        } else {
            with_support.iter().map(|m| m.f1).sum::<f64>() / with_support.len() as f64
        };
        let (confusion, confusion_sparse) = if c <= DENSE_CONFUSION_MAX_CLASSES {
            let mut m = vec![vec![0usize; c]; c];
            for (&(t, p), &k) in &cells {
                m[t][p] = k;
            }
            (m, Vec::new())
        } else {
            let mut v: Vec<[usize; 3]> = cells.into_iter().map(|((t, p), k)| [t, p, k]).collect();
            // Confusions first (largest count), then the diagonal; ties in index order.
            v.sort_by(|a, b| {
                (a[0] == a[1])
                    .cmp(&(b[0] == b[1]))
                    .then(b[2].cmp(&a[2]))
                    .then(a.cmp(b))
            });
            (Vec::new(), v)
        };
        Self {
            accuracy: if n > 0 {
                correct as f64 / n as f64
            } else {
                0.0
            },
            macro_f1,
            n,
            classes: classes.to_vec(),
            confusion,
            confusion_sparse,
            per_class,
        }
    }

    /// A plain-text rendering: summary, per-class table, and the confusion matrix with class
    /// names (for many classes, the most frequent confusions instead). Class names are shown
    /// escaped: a name with a newline or a terminal escape cannot forge a line of the report.
    pub fn to_text(&self) -> String {
        let names: Vec<String> = self
            .classes
            .iter()
            .map(|c| headstart_core::text::for_terminal(c).into_owned())
            .collect();
        let width = |s: &String| s.chars().count();
        let w = names.iter().map(width).max().unwrap_or(5).max(9);
        let mut s = format!(
            "accuracy {:.4}   macro-F1 {:.4}   n {}\n\n",
            self.accuracy, self.macro_f1, self.n
        );
        s += &format!("{:<w$}  precision  recall     f1  support\n", "class");
        for (m, name) in self.per_class.iter().zip(&names) {
            s += &format!(
                "{:<w$}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}\n",
                name, m.precision, m.recall, m.f1, m.support
            );
        }
        if !self.confusion.is_empty() {
            s += "\nconfusion matrix (rows: true class, columns: predicted)\n";
            let cw = names.iter().map(width).max().unwrap_or(1).max(5);
            s += &format!("{:<w$}", "");
            for c in &names {
                s += &format!("  {c:>cw$}");
            }
            s.push('\n');
            for (i, row) in self.confusion.iter().enumerate() {
                s += &format!("{:<w$}", names[i]);
                for v in row {
                    s += &format!("  {v:>cw$}");
                }
                s.push('\n');
            }
        } else {
            let off: Vec<&[usize; 3]> = self
                .confusion_sparse
                .iter()
                .filter(|x| x[0] != x[1])
                .take(20)
                .collect();
            s += &format!(
                "\nmost frequent confusions ({} classes: no full matrix)\n",
                self.classes.len()
            );
            for x in off {
                s += &format!("{:>7}  {} → {}\n", x[2], names[x[0]], names[x[1]]);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_report() {
        let classes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0, 1, 1, 1, 2, 0];
        let r = Report::new(&classes, &truth, &pred);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]
        );
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((r.per_class[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.per_class[1].recall - 1.0).abs() < 1e-12);
        assert!((r.per_class[0].f1 - 0.5).abs() < 1e-12);
        let f1s = [0.5, 0.8, 2.0 / 3.0];
        assert!((r.macro_f1 - f1s.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        assert!(r.to_text().contains("confusion matrix"));
    }

    #[test]
    fn many_classes_keep_only_the_cells_that_occur() {
        let c = 70_000;
        let classes: Vec<String> = (0..c).map(|i| format!("c{i}")).collect();
        let truth: Vec<usize> = (0..1000).map(|i| i * 7 % c).collect();
        let pred: Vec<usize> = truth
            .iter()
            .map(|&t| if t % 3 == 0 { (t + 1) % c } else { t })
            .collect();
        let r = Report::new(&classes, &truth, &pred);
        assert!(r.confusion.is_empty());
        assert_eq!(r.confusion_sparse.iter().map(|x| x[2]).sum::<usize>(), 1000);
        let wrong = truth.iter().zip(&pred).filter(|(t, p)| t != p).count();
        assert!((r.accuracy - (1000 - wrong) as f64 / 1000.0).abs() < 1e-12);
        assert!(r.to_text().contains("most frequent confusions"));
    }

    #[test]
    fn class_names_cannot_forge_report_lines() {
        let classes = vec!["ok".to_string(), "evil\naccuracy 1.0000\x1b[2J".to_string()];
        let r = Report::new(&classes, &[0, 1], &[1, 0]);
        let t = r.to_text();
        assert!(!t.contains('\x1b'), "{t}");
        assert_eq!(
            t.lines().filter(|l| l.starts_with("accuracy")).count(),
            1,
            "{t}"
        );
        assert!(t.contains("evil\\naccuracy"), "{t}");
    }
}
