//! Checkpoints: one `.safetensors` file holding the whole training state.
//!
//! - **tensors**: every param the train step reads or updates — model params, optimizer
//!   slots (`<param>.adam_m`, …), quantizer ranges (`S.min`, `S.max`), BatchNorm moving
//!   statistics — under their ParamStore names, so any safetensors reader can open it;
//! - **metadata** (strings, JSON where structured):
//!   `format` (`qatc-checkpoint-1`), `model`, `step` (steps done), `epoch` (0-based,
//!   in progress), `batch` (next batch of that epoch), `run` (what must match to resume:
//!   batch size, seed, shuffling, optimizer, dataset size), `rng` (the shuffling
//!   generator's position), `epoch_sums` (running sums of the epoch in progress),
//!   `history` (finished epochs and per-step losses).
//!
//! The shuffling order of epoch `e` is a ChaCha8 stream derived from `(seed, e)` alone, so
//! `(seed, epoch, batch)` is the whole RNG position; dropout masks hash `(seed, step)` in
//! the graph. Files are written with [`crate::error::write_atomic`].

use super::metrics::{EpochSums, History};
use crate::autodiff::Optimizer;
use crate::error::{read_file, write_atomic, Error, Result};
use crate::ir::ParamStore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The `format` metadata value of the checkpoints this version writes and reads; a file
/// with another value is refused.
pub const FORMAT: &str = "qatc-checkpoint-1";

/// Where a run is: `step` steps done; the next one is batch `batch` of epoch `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Optimizer steps done since the run started (over all epochs).
    pub step: u64,
    /// The epoch in progress, 0-based.
    pub epoch: usize,
    /// The index of the next batch within `epoch`; 0 at an epoch boundary.
    pub batch: usize,
}

/// What a run must share with the run that wrote a checkpoint to resume from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    /// The graph's name.
    pub model: String,
    /// Samples per training batch.
    pub batch_size: usize,
    /// The seed of the shuffling order and the dropout masks.
    pub seed: u64,
    /// Whether each epoch visits the samples in a shuffled order.
    pub shuffle: bool,
    /// The optimizer and its hyperparameters (its slots are in the checkpoint's tensors).
    pub optimizer: Optimizer,
    /// The number of training samples (batches per epoch follow from it).
    pub samples: usize,
}

impl RunKey {
    /// An error naming the first difference, if any.
    pub fn check_resumable(&self, ckpt: &RunKey, path: &Path) -> Result<()> {
        let diffs = [
            ("model", ckpt.model.clone(), self.model.clone()),
            (
                "batch size",
                ckpt.batch_size.to_string(),
                self.batch_size.to_string(),
            ),
            ("seed", ckpt.seed.to_string(), self.seed.to_string()),
            (
                "shuffle",
                ckpt.shuffle.to_string(),
                self.shuffle.to_string(),
            ),
            (
                "optimizer",
                format!("{:?}", ckpt.optimizer),
                format!("{:?}", self.optimizer),
            ),
            (
                "training samples",
                ckpt.samples.to_string(),
                self.samples.to_string(),
            ),
        ];
        for (what, theirs, ours) in diffs {
            if theirs != ours {
                return Err(Error::file(
                    path,
                    format!(
                        "the checkpoint was written with {what} {theirs}, this run has {ours}: \
                         resume with the same settings, or start a new run"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A training state on disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Every tensor the train step reads or updates: model params, optimizer slots, quantizer
    /// ranges and BatchNorm moving statistics, by their param names.
    pub state: ParamStore,
    /// Where training stopped; a resumed run continues from here.
    pub position: Position,
    /// The settings a resuming run must repeat ([`RunKey::check_resumable`]).
    pub run: RunKey,
    /// Metrics of the finished epochs and the per-step losses so far.
    pub history: History,
    pub(crate) sums: EpochSums,
}

fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Usage(format!("cannot encode checkpoint: {e}")))
}

impl Checkpoint {
    /// Writes the checkpoint atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("model".to_string(), self.run.model.clone()),
            ("step".to_string(), self.position.step.to_string()),
            ("epoch".to_string(), self.position.epoch.to_string()),
            ("batch".to_string(), self.position.batch.to_string()),
            ("run".to_string(), json(&self.run)?),
            (
                "rng".to_string(),
                format!(
                    "chacha8 seed {} stream {} (epoch), word 0",
                    self.run.seed, self.position.epoch
                ),
            ),
            ("epoch_sums".to_string(), json(&self.sums)?),
            ("history".to_string(), json(&self.history)?),
        ]);
        write_atomic(path, &self.state.to_safetensors(Some(meta))?)
    }

    /// Reads a checkpoint, naming the file and the field in errors.
    pub fn load(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let meta = ParamStore::read_metadata(&bytes, path)?;
        let field = |k: &str| -> Result<&String> {
            meta.get(k).ok_or_else(|| {
                Error::file(
                    path,
                    format!("not a qatc checkpoint: the metadata has no `{k}`"),
                )
            })
        };
        if field("format")? != FORMAT {
            return Err(Error::file(
                path,
                format!(
                    "checkpoint format `{}`, this qatc reads `{FORMAT}`",
                    field("format")?
                ),
            ));
        }
        let bad = |k: &str, e: String| Error::file(path, format!("checkpoint field `{k}`: {e}"));
        let num = |k: &str| -> Result<u64> {
            field(k)?.parse::<u64>().map_err(|e| bad(k, e.to_string()))
        };
        fn parse<T: for<'a> Deserialize<'a>>(
            s: &str,
            k: &str,
            bad: &dyn Fn(&str, String) -> Error,
        ) -> Result<T> {
            serde_json::from_str(s).map_err(|e| bad(k, e.to_string()))
        }
        Ok(Checkpoint {
            position: Position {
                step: num("step")?,
                epoch: num("epoch")? as usize,
                batch: num("batch")? as usize,
            },
            run: parse(field("run")?, "run", &bad)?,
            sums: parse(field("epoch_sums")?, "epoch_sums", &bad)?,
            history: parse(field("history")?, "history", &bad)?,
            state: ParamStore::from_safetensors(&bytes, path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Tensor;

    fn sample() -> Checkpoint {
        let mut state = ParamStore::new();
        state.insert("w", Tensor::new(vec![2], vec![1.5, f32::MIN_POSITIVE]));
        state.insert("w.adam_m", Tensor::new(vec![2], vec![-0.0, 3.0e-39]));
        Checkpoint {
            state,
            position: Position {
                step: 17,
                epoch: 1,
                batch: 5,
            },
            run: RunKey {
                model: "m".into(),
                batch_size: 4,
                seed: 9,
                shuffle: true,
                optimizer: Optimizer::adam(),
                samples: 48,
            },
            history: History {
                epochs: vec![],
                step_loss: vec![2.5, 0.1],
            },
            sums: EpochSums {
                steps: 5,
                samples: 20,
                loss: 3.25,
                correct: 7,
                seconds: 0.5,
                data_wait: 0.25,
                data_build: 0.125,
            },
        }
    }

    #[test]
    fn round_trips_bit_exactly() {
        let dir = std::env::temp_dir().join(format!("qatc-ckpt-{}", std::process::id()));
        let path = dir.join("c.safetensors");
        let c = sample();
        c.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back, c);
        let bits: Vec<u32> = back
            .state
            .get("w.adam_m")
            .unwrap()
            .data
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(bits, [(-0.0f32).to_bits(), 3.0e-39f32.to_bits()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn mismatched_runs_are_refused_with_the_difference() {
        let c = sample();
        let mut other = c.run.clone();
        other.batch_size = 8;
        let err = other
            .check_resumable(&c.run, Path::new("c.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch size 4") && err.contains("has 8"),
            "{err}"
        );
    }

    #[test]
    fn plain_weights_are_not_a_checkpoint() {
        let dir = std::env::temp_dir().join(format!("qatc-ckpt2-{}", std::process::id()));
        let path = dir.join("w.safetensors");
        sample().state.save(&path).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a qatc checkpoint"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
