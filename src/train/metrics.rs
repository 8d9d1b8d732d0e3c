//! What a training run reports: per-epoch loss, accuracy and throughput, and the loss of
//! every step, ready to plot.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// One finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    /// Training steps (batches) in the epoch.
    pub steps: u64,
    /// Training samples seen in the epoch (steps × batch size).
    pub samples: u64,
    /// Mean training loss over the epoch's steps (Keras' running mean at epoch end).
    pub loss: f64,
    /// Training accuracy over the epoch's batches, as the model was while training.
    pub accuracy: f64,
    /// Mean cross-entropy on the test set after the epoch; `None` without a test set.
    pub test_loss: Option<f64>,
    /// Top-1 accuracy on the test set after the epoch, in `[0, 1]`; `None` without a test set.
    pub test_accuracy: Option<f64>,
    /// The learning rate of the epoch's last step.
    pub lr: f32,
    /// Wall time of the epoch's training steps (batch assembly, the step, the NaN/Inf
    /// checks; evaluation and checkpoints excluded).
    pub seconds: f64,
    /// Training throughput: `samples / seconds` (0 if no time was measured).
    pub samples_per_s: f64,
    /// Seconds the training steps waited for the data loader (0 when prefetching keeps up).
    #[serde(default)]
    pub data_wait_seconds: f64,
    /// Seconds the loader thread spent assembling (and augmenting) the epoch's batches,
    /// overlapped with training.
    #[serde(default)]
    pub data_load_seconds: f64,
}

/// The metrics of a run; kept in checkpoints, so a resumed run reports the whole history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The finished epochs in order.
    pub epochs: Vec<EpochMetrics>,
    /// The training loss of every step, in step order.
    pub step_loss: Vec<f32>,
}

impl History {
    /// The last finished epoch.
    pub fn last(&self) -> Option<&EpochMetrics> {
        self.epochs.last()
    }

    /// One CSV row per epoch (`epoch,steps,loss,accuracy,test_loss,test_accuracy,lr,
    /// samples_per_s`), for a training-curve plot.
    pub fn epochs_csv(&self) -> String {
        let mut s =
            String::from("epoch,steps,loss,accuracy,test_loss,test_accuracy,lr,samples_per_s\n");
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for e in &self.epochs {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{:.1}",
                e.epoch,
                e.steps,
                e.loss,
                e.accuracy,
                opt(e.test_loss),
                opt(e.test_accuracy),
                e.lr,
                e.samples_per_s
            );
        }
        s
    }

    /// One CSV row per step (`step,loss`).
    pub fn steps_csv(&self) -> String {
        let mut s = String::from("step,loss\n");
        for (i, l) in self.step_loss.iter().enumerate() {
            let _ = writeln!(s, "{i},{l}");
        }
        s
    }
}

/// The running sums of an epoch in progress (checkpointed, so a resumed epoch reports the
/// same numbers as an uninterrupted one).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EpochSums {
    pub steps: u64,
    pub samples: u64,
    pub loss: f64,
    pub correct: u64,
    pub seconds: f64,
    /// Time the step waited for its batch (the loader was behind).
    #[serde(default)]
    pub data_wait: f64,
    /// Time the loader spent gathering and augmenting batches (overlapping the steps).
    #[serde(default)]
    pub data_build: f64,
}

impl EpochSums {
    pub fn finish(&self, epoch: usize, lr: f32) -> EpochMetrics {
        let steps = self.steps.max(1) as f64;
        let samples = self.samples.max(1) as f64;
        EpochMetrics {
            epoch,
            steps: self.steps,
            samples: self.samples,
            loss: self.loss / steps,
            accuracy: self.correct as f64 / samples,
            test_loss: None,
            test_accuracy: None,
            lr,
            seconds: self.seconds,
            samples_per_s: if self.seconds > 0.0 {
                self.samples as f64 / self.seconds
            } else {
                0.0
            },
            data_wait_seconds: self.data_wait,
            data_load_seconds: self.data_build,
        }
    }
}

/// Loss and accuracy of a model on a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean sparse categorical cross-entropy per sample (from logits, or from probabilities
    /// when the output is a softmax).
    pub loss: f64,
    /// Top-1 accuracy, as a fraction in `[0, 1]`.
    pub accuracy: f64,
    /// Samples evaluated (the whole dataset).
    pub samples: usize,
}
