//! THE op vocabulary: every operation qatc knows, spelled the same way in [`Op`], the egg
//! language, the rule files, `.qir` text, IR dumps and snapshots.
//!
//! Ops come in five families, one enum each, so that every stage matches exhaustively over
//! just the ops it can meet:
//!
//! | family | enum | made by | seen by |
//! |---|---|---|---|
//! | model ops (`conv2d`, `relu`, `fake_quant`, …) | [`ModelOp`] | builders, `.qir`, importers, passes | every stage |
//! | pass helpers (`quant`, `bn_scale`, `scale_channels`) | [`PassOp`] | `annotate`, `fold_bn` | the passes that consume them |
//! | training forward ops (loss, batch statistics, dropout masks, reductions over data-parallel ranks) | [`TrainOp`] | `autodiff` | autodiff, JIT, interpreter |
//! | gradient ops (`*_grad`, `reduce_sum`, `slice`) | [`GradOp`] | `autodiff`'s rules | JIT, interpreter |
//! | state updates (optimizers, observers, moving statistics) | [`UpdateOp`] | `autodiff` | JIT, interpreter |
//!
//! [`OpKind`] is the spelling table: one row per op, in a fixed order that also orders
//! e-graph nodes (so extraction, and with it every dump, is deterministic).
//!
//! Shape rules live in [`crate::ir::infer`], reference semantics in [`crate::ir::interp`],
//! attribute text in [`crate::ir::attrs`]. To add a model op: a variant in [`ModelOp`] and a
//! row in [`OpKind`]; the compiler then names every other place (README's checklist).

mod common;
mod grad;
mod kind;
mod model;
mod pass;
mod train;
mod update;

pub use common::*;
pub use grad::GradOp;
pub use kind::{Family, OpKind};
pub use model::ModelOp;
pub use pass::PassOp;
pub use train::TrainOp;
pub use update::UpdateOp;

pub use crate::error::OpError;

/// An op with its attributes: one of the five families.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// What users write and model graphs hold.
    Model(ModelOp),
    /// A pass helper.
    Pass(PassOp),
    /// A training forward op.
    Train(TrainOp),
    /// A gradient op.
    Grad(GradOp),
    /// A state update.
    Update(UpdateOp),
}

impl From<ModelOp> for Op {
    fn from(op: ModelOp) -> Op {
        Op::Model(op)
    }
}
impl From<PassOp> for Op {
    fn from(op: PassOp) -> Op {
        Op::Pass(op)
    }
}
impl From<TrainOp> for Op {
    fn from(op: TrainOp) -> Op {
        Op::Train(op)
    }
}
impl From<GradOp> for Op {
    fn from(op: GradOp) -> Op {
        Op::Grad(op)
    }
}
impl From<UpdateOp> for Op {
    fn from(op: UpdateOp) -> Op {
        Op::Update(op)
    }
}

impl Op {
    /// A graph input.
    pub const fn input() -> Op {
        Op::Model(ModelOp::Input)
    }

    /// A param (weight) leaf.
    pub const fn param() -> Op {
        Op::Model(ModelOp::Param)
    }

    /// Whether this is a graph input.
    pub fn is_input(&self) -> bool {
        matches!(self, Op::Model(ModelOp::Input))
    }

    /// Whether this is a param leaf.
    pub fn is_param(&self) -> bool {
        matches!(self, Op::Model(ModelOp::Param))
    }

    /// The model op, if this is one.
    pub fn as_model(&self) -> Option<&ModelOp> {
        match self {
            Op::Model(m) => Some(m),
            Op::Pass(_) | Op::Train(_) | Op::Grad(_) | Op::Update(_) => None,
        }
    }

    /// The fake-quant spec of a `fake_quant` node.
    pub fn as_fake_quant(&self) -> Option<&FakeQuantAttrs> {
        match self {
            Op::Model(ModelOp::FakeQuant(q)) => Some(q),
            _ => None,
        }
    }

    /// The op's family.
    pub fn family(&self) -> Family {
        match self {
            Op::Model(_) => Family::Model,
            Op::Pass(_) => Family::Pass,
            Op::Train(_) => Family::Train,
            Op::Grad(_) => Family::Grad,
            Op::Update(_) => Family::Update,
        }
    }

    /// The op's kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Model(op) => op.kind(),
            Op::Pass(op) => op.kind(),
            Op::Train(op) => op.kind(),
            Op::Grad(op) => op.kind(),
            Op::Update(op) => op.kind(),
        }
    }

    /// The op's spelling.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The operands the op takes, by name; a trailing `?` marks an optional one and `*` a
    /// variadic list (one or more).
    pub fn operand_names(&self) -> &'static [&'static str] {
        match self {
            Op::Model(op) => op.operands(),
            Op::Pass(op) => op.operands(),
            Op::Train(op) => op.operands(),
            Op::Grad(op) => op.operands(),
            Op::Update(op) => op.operands(),
        }
    }

    /// The number of operands the op takes: `(min, max)`; `max == usize::MAX` is variadic.
    pub fn arity(&self) -> (usize, usize) {
        let names = self.operand_names();
        if names.last().is_some_and(|n| n.ends_with('*')) {
            return (names.len(), usize::MAX);
        }
        let required = names.iter().filter(|n| !n.ends_with('?')).count();
        (required, names.len())
    }

    /// A short name for operand `i`, for diagnostics ("conv2d operand 1 (kernel)").
    pub fn operand_name(&self, i: usize) -> &'static str {
        let names = self.operand_names();
        let name = match names.get(i) {
            Some(n) => n,
            None => match names.last() {
                Some(n) if n.ends_with('*') => n,
                _ => return "operand",
            },
        };
        name.trim_end_matches(['?', '*'])
    }

    /// The fused activation of ops that have one.
    pub fn activation(&self) -> Option<Activation> {
        self.as_model().and_then(ModelOp::activation)
    }

    /// Sets the fused activation (for ops that have one); `false` if the op has none.
    pub fn set_activation(&mut self, act: Activation) -> bool {
        match self {
            Op::Model(m) => m.set_activation(act),
            Op::Pass(_) | Op::Train(_) | Op::Grad(_) | Op::Update(_) => false,
        }
    }

    /// The activation TFLite can fuse into a producing conv/dense/add, if this op is one.
    pub fn as_fusable_activation(&self) -> Option<Activation> {
        self.as_model().and_then(ModelOp::as_fusable_activation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_name_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for &k in OpKind::ALL {
            assert_eq!(OpKind::from_name(k.name()), Some(k));
            assert!(seen.insert(k.name()), "duplicate op name {}", k.name());
            assert!(k
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }

    #[test]
    fn arity_follows_the_operand_names() {
        let conv = Op::Model(ModelOp::Conv2d(ConvAttrs::default()));
        assert_eq!(conv.arity(), (2, 3));
        assert_eq!(conv.operand_name(2), "bias");
        let concat = Op::Model(ModelOp::Concat { axis: 3 });
        assert_eq!(concat.arity(), (1, usize::MAX));
        assert_eq!(concat.operand_name(4), "inputs");
        assert_eq!(Op::input().arity(), (0, 0));
        assert_eq!(Op::Model(ModelOp::Relu).operand_name(7), "operand");
    }
}
