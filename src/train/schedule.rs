//! Learning-rate schedules (Keras' `LearningRateSchedule`s), evaluated per global step.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The learning rate as a function of the 0-based global step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant {
        /// The rate of every step (Keras' Adam default is 1e-3).
        lr: f32,
    },
    /// `keras.optimizers.schedules.CosineDecay(initial, decay_steps, alpha)`:
    /// `initial * ((1 - alpha) * (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2
    /// + alpha)`. `decay_steps: None` decays over the whole run.
    Cosine {
        /// The rate at step 0.
        initial: f32,
        /// Steps over which the rate decays (it stays at the floor after); `None` is the whole run.
        decay_steps: Option<u64>,
        /// The floor, as a fraction of `initial`.
        alpha: f32,
    },
}

impl Default for LrSchedule {
    /// Keras' Adam default, 1e-3, constant.
    fn default() -> LrSchedule {
        LrSchedule::constant(1e-3)
    }
}

impl LrSchedule {
    /// A constant learning rate `lr`.
    pub fn constant(lr: f32) -> LrSchedule {
        LrSchedule::Constant { lr }
    }

    /// Cosine decay to `alpha * initial` over the whole run.
    pub fn cosine(initial: f32, alpha: f32) -> LrSchedule {
        LrSchedule::Cosine {
            initial,
            decay_steps: None,
            alpha,
        }
    }

    /// The learning rate at `step` of a run of `total_steps` steps.
    pub fn at(&self, step: u64, total_steps: u64) -> f32 {
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Cosine {
                initial,
                decay_steps,
                alpha,
            } => {
                let decay = decay_steps.unwrap_or(total_steps).max(1) as f64;
                let t = (step as f64).min(decay) / decay;
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (initial as f64 * ((1.0 - alpha as f64) * cosine + alpha as f64)) as f32
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let ok = match *self {
            LrSchedule::Constant { lr } => lr.is_finite() && lr >= 0.0,
            LrSchedule::Cosine { initial, alpha, .. } => {
                initial.is_finite() && initial >= 0.0 && (0.0..=1.0).contains(&alpha)
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "learning-rate schedule {self:?}: rates must be finite and >= 0, alpha in [0, 1]"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_decay_like_keras() {
        let s = LrSchedule::Cosine {
            initial: 0.1,
            decay_steps: Some(100),
            alpha: 0.1,
        };
        assert!((s.at(0, 0) - 0.1).abs() < 1e-9);
        // halfway: cos(pi/2) = 0 -> (0.9 * 0.5 + 0.1) * 0.1 = 0.055
        assert!((s.at(50, 0) - 0.055).abs() < 1e-8);
        // at and after the end: alpha * initial
        assert!((s.at(100, 0) - 0.01).abs() < 1e-9);
        assert!((s.at(1000, 0) - 0.01).abs() < 1e-9);
        // over the whole run
        let s = LrSchedule::cosine(1.0, 0.0);
        assert!((s.at(10, 20) - 0.5).abs() < 1e-7);
        assert_eq!(LrSchedule::constant(0.3).at(77, 100), 0.3);
        assert!(LrSchedule::cosine(1.0, 2.0).validate().is_err());
    }
}
