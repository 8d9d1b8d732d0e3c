//! State updates: what a train step writes back after its forward and backward halves —
//! optimizer slots and weights, quantizer observers, BatchNorm moving statistics (form 4).
//! Their values feed `update @param = %N` lines; nothing differentiates through them.

use super::common::*;
use super::kind::OpKind;

/// A state update op with its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpdateOp {
    /// `(old, value) -> momentum*old + (1-momentum)*value` (BatchNorm moving statistics).
    MovingAverage {
        /// The weight of the old value.
        momentum: F32,
    },
    /// `(v, g, lr[]) -> momentum*v - lr*g` (Keras SGD); the param update is `add(p, v')`.
    SgdVelocity {
        /// The weight of the old velocity.
        momentum: F32,
    },
    /// `(m, g) -> beta*m + (1-beta)*g`
    AdamMoment {
        /// Adam's beta_1.
        beta: F32,
    },
    /// `(v, g) -> beta*v + (1-beta)*g^2`
    AdamMomentSq {
        /// Adam's beta_2.
        beta: F32,
    },
    /// `(p, m, v, lr_t[]) -> p - lr_t*m/(sqrt(v)+epsilon)`; the host folds bias correction
    /// into `lr_t`.
    AdamApply {
        /// Adam's epsilon.
        epsilon: F32,
    },
    /// `(x) -> min(min(x), 0)`, per `axis` when set.
    ObserveMin {
        /// Observe per channel of this axis.
        axis: Option<usize>,
    },
    /// `(x) -> max(max(x), 0)`, per `axis` when set.
    ObserveMax {
        /// Observe per channel of this axis.
        axis: Option<usize>,
    },
    /// `(old, value, step[]) -> value` at step 0, else `decay*old + (1-decay)*value`.
    EmaUpdate {
        /// The weight of the old value.
        decay: F32,
    },
    /// `(old, value, step[]) -> value` at step 0, else `min(old, value)`.
    RunningMin,
    /// `(old, value, step[]) -> value` at step 0, else `max(old, value)`.
    RunningMax,
}

impl UpdateOp {
    /// The op's kind: its spelling in `.qir`, rule files and dumps.
    pub fn kind(&self) -> OpKind {
        use UpdateOp::*;
        match self {
            MovingAverage { .. } => OpKind::MovingAverage,
            SgdVelocity { .. } => OpKind::SgdVelocity,
            AdamMoment { .. } => OpKind::AdamMoment,
            AdamMomentSq { .. } => OpKind::AdamMomentSq,
            AdamApply { .. } => OpKind::AdamApply,
            ObserveMin { .. } => OpKind::ObserveMin,
            ObserveMax { .. } => OpKind::ObserveMax,
            EmaUpdate { .. } => OpKind::EmaUpdate,
            RunningMin => OpKind::RunningMin,
            RunningMax => OpKind::RunningMax,
        }
    }

    /// The operands the op takes, by name.
    pub fn operands(&self) -> &'static [&'static str] {
        use UpdateOp::*;
        match self {
            MovingAverage { .. } => &["old", "value"],
            SgdVelocity { .. } => &["velocity", "grad", "lr"],
            AdamMoment { .. } | AdamMomentSq { .. } => &["old", "grad"],
            AdamApply { .. } => &["param", "m", "v", "lr"],
            ObserveMin { .. } | ObserveMax { .. } => &["input"],
            EmaUpdate { .. } | RunningMin | RunningMax => &["old", "value", "step"],
        }
    }
}
