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
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Per-class metrics.
    pub per_class: Vec<ClassMetrics>,
}

impl Report {
    /// Builds the report from true and predicted class indices.
    pub fn new(classes: &[String], truth: &[usize], pred: &[usize]) -> Self {
        let c = classes.len();
        let mut confusion = vec![vec![0usize; c]; c];
        for (&t, &p) in truth.iter().zip(pred) {
            confusion[t][p] += 1;
        }
        let n = truth.len();
        let correct: usize = (0..c).map(|i| confusion[i][i]).sum();
        let per_class: Vec<ClassMetrics> = (0..c)
            .map(|i| {
                let tp = confusion[i][i] as f64;
                let support: usize = confusion[i].iter().sum();
                let predicted: usize = (0..c).map(|r| confusion[r][i]).sum();
                let precision = if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    tp / support as f64
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
                    support,
                }
            })
            .collect();
        let with_support: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
        let macro_f1 = if with_support.is_empty() {
            0.0
        } else {
            with_support.iter().map(|m| m.f1).sum::<f64>() / with_support.len() as f64
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
            per_class,
        }
    }

    /// A plain-text rendering: summary, per-class table, confusion matrix with class names.
    pub fn to_text(&self) -> String {
        let w = self
            .classes
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(5)
            .max(9);
        let mut s = format!(
            "accuracy {:.4}   macro-F1 {:.4}   n {}\n\n",
            self.accuracy, self.macro_f1, self.n
        );
        s += &format!("{:<w$}  precision  recall     f1  support\n", "class");
        for m in &self.per_class {
            s += &format!(
                "{:<w$}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}\n",
                m.class, m.precision, m.recall, m.f1, m.support
            );
        }
        s += "\nconfusion matrix (rows: true class, columns: predicted)\n";
        let cw = self
            .classes
            .iter()
            .map(|c| c.len())
            .max()
            .unwrap_or(1)
            .max(5);
        s += &format!("{:<w$}", "");
        for c in &self.classes {
            s += &format!("  {c:>cw$}");
        }
        s.push('\n');
        for (i, row) in self.confusion.iter().enumerate() {
            s += &format!("{:<w$}", self.classes[i]);
            for v in row {
                s += &format!("  {v:>cw$}");
            }
            s.push('\n');
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
}
