//! Optimizers with Keras semantics, emitted as update ops of the train-step graph.

use super::emit::Emit;
use crate::error::{Error, Result};
use crate::ir::op::{Activation, F32};
use crate::ir::op::{ModelOp, UpdateOp};
use crate::ir::{NodeId, Op};
use serde::{Deserialize, Serialize};

/// A Keras optimizer. The learning rate is not part of it: it is the train step's `lr`
/// input (see [`Optimizer::lr_input`]), so schedules need no graph change.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    /// `keras.optimizers.SGD(momentum=m)`: `v = m*v - lr*g; p = p + v` (no Nesterov).
    Sgd {
        /// The velocity's decay `m`, in `[0, 1)`; 0 is plain SGD. The velocity is slot
        /// `<param>.velocity`.
        momentum: f32,
    },
    /// `keras.optimizers.Adam`: `m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    /// p = p - lr_t * m / (sqrt(v) + epsilon)` with the bias correction folded into
    /// `lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)`, `t = step + 1` (epsilon not corrected).
    Adam {
        /// Decay of the first moment `m` (slot `<param>.adam_m`); Keras' default 0.9.
        beta1: f32,
        /// Decay of the second moment `v` (slot `<param>.adam_v`); Keras' default 0.999.
        beta2: f32,
        /// Added to `sqrt(v)` to keep the step finite; Keras' default 1e-7.
        epsilon: f32,
    },
}

impl Default for Optimizer {
    /// Keras' `"adam"`.
    fn default() -> Optimizer {
        Optimizer::adam()
    }
}

impl Optimizer {
    /// Keras' Adam defaults: beta1 0.9, beta2 0.999, epsilon 1e-7.
    pub fn adam() -> Optimizer {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        }
    }

    /// Keras' SGD with momentum (0.0 is Keras' default, plain SGD).
    pub fn sgd(momentum: f32) -> Optimizer {
        Optimizer::Sgd { momentum }
    }

    /// The name of the optimizer, as checkpoints record it.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// The value to feed the train step's `lr` input at 0-based step `step` for the
    /// learning rate `lr` (Adam: bias correction folded in, computed in f64).
    pub fn lr_input(&self, lr: f32, step: u64) -> f32 {
        match *self {
            Optimizer::Sgd { .. } => lr,
            Optimizer::Adam { beta1, beta2, .. } => {
                let t = (step + 1) as f64;
                let c = (1.0 - (beta2 as f64).powf(t)).sqrt() / (1.0 - (beta1 as f64).powf(t));
                (lr as f64 * c) as f32
            }
        }
    }

    /// The state slots each trained param gets: params `<param>.<slot>`, zeros at start.
    pub fn slots(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { .. } => &["velocity"],
            Optimizer::Adam { .. } => &["adam_m", "adam_v"],
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Usage(format!("optimizer {}: {what}", self.name())));
        match *self {
            Optimizer::Sgd { momentum } if !(0.0..1.0).contains(&momentum) => {
                bad("momentum must be in [0, 1)")
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && epsilon > 0.0) => {
                bad("beta1 and beta2 must be in [0, 1) and epsilon > 0")
            }
            _ => Ok(()),
        }
    }

    /// Emits the update of param `p` (named `name`) with gradient `grad`: returns the new
    /// param value and `(slot param, slot node, new slot value)` for each slot.
    pub(crate) fn emit(
        &self,
        e: &mut Emit,
        name: &str,
        p: NodeId,
        grad: NodeId,
        lr: NodeId,
    ) -> Result<(NodeId, Vec<(String, NodeId)>)> {
        let ty = e.g.node(p).ty.clone();
        let slot = |e: &mut Emit, s: &str| -> Result<(String, NodeId)> {
            let pname = format!("{name}.{s}");
            let id = e.g.param(&pname, ty.clone())?;
            Ok((pname, id))
        };
        match *self {
            Optimizer::Sgd { momentum } => {
                let (vname, v) = slot(e, "velocity")?;
                let v_next = e.op(
                    Op::Update(UpdateOp::SgdVelocity {
                        momentum: F32(momentum),
                    }),
                    &format!("{vname}.next"),
                    &[v, grad, lr],
                )?;
                let add = Op::Model(ModelOp::Add {
                    activation: Activation::None,
                });
                let p_next = e.op(add, &format!("{name}.next"), &[p, v_next])?;
                Ok((p_next, vec![(vname, v_next)]))
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                let (mname, m) = slot(e, "adam_m")?;
                let (vname, v) = slot(e, "adam_v")?;
                let m_next = e.op(
                    Op::Update(UpdateOp::AdamMoment { beta: F32(beta1) }),
                    &format!("{mname}.next"),
                    &[m, grad],
                )?;
                let v_next = e.op(
                    Op::Update(UpdateOp::AdamMomentSq { beta: F32(beta2) }),
                    &format!("{vname}.next"),
                    &[v, grad],
                )?;
                let p_next = e.op(
                    Op::Update(UpdateOp::AdamApply {
                        epsilon: F32(epsilon),
                    }),
                    &format!("{name}.next"),
                    &[p, m_next, v_next, lr],
                )?;
                Ok((p_next, vec![(mname, m_next), (vname, v_next)]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_bias_correction_matches_keras() {
        // step 0: t = 1, sqrt(1 - 0.999) / (1 - 0.9) = 0.0316228 / 0.1 = 0.316228 (betas
        // are f32 as in Keras, so 1 - 0.999 is 0.00099998713: 1e-5 relative)
        let a = Optimizer::adam();
        assert!((a.lr_input(1e-3, 0) / 3.162_278e-4 - 1.0).abs() < 2e-5);
        // it tends to lr
        assert!((a.lr_input(1e-3, 100_000) - 1e-3).abs() < 1e-9);
        assert_eq!(Optimizer::sgd(0.9).lr_input(0.1, 7), 0.1);
    }

    #[test]
    fn bad_hyperparameters_are_refused() {
        assert!(Optimizer::sgd(1.5).validate().is_err());
        assert!(Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 0.0
        }
        .validate()
        .is_err());
        assert!(Optimizer::adam().validate().is_ok());
    }
}
