//! Per-epoch training history, written as JSON and CSV.

use serde::{Deserialize, Serialize};

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's training batches.
    pub train_loss: f64,
    /// Accuracy over the epoch's training batches (as the tutorial reports it).
    pub train_accuracy: f64,
    /// Cross-entropy on the validation images' eval view (None without validation).
    pub val_loss: Option<f64>,
    /// Accuracy on the validation images' eval view.
    pub val_accuracy: Option<f64>,
}

/// CSV with a header line; empty cells where there is no validation.
pub fn to_csv(history: &[EpochRecord]) -> String {
    let mut s = String::from("epoch,train_loss,train_accuracy,val_loss,val_accuracy\n");
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.6}")).unwrap_or_default();
    for r in history {
        s += &format!(
            "{},{:.6},{:.6},{},{}\n",
            r.epoch,
            r.train_loss,
            r.train_accuracy,
            opt(r.val_loss),
            opt(r.val_accuracy)
        );
    }
    s
}
