//! Attribute functions: the named Rust functions a rule's right side calls to make the
//! attributes (and the name) of a node it creates, e.g.
//! `(conv2d (with_activation ?c ?r) ?x ?w ?b)`. Their arguments are attribute classes; the
//! analysis evaluates them and adds the resulting attribute leaf to their class, so the
//! extractor (which gives function nodes infinite cost) always picks the leaf.
//!
//! To add one: a variant, its name and arity in [`AttrFn::ALL`]/[`AttrFn::name`], its doc,
//! and an arm in [`AttrFn::eval`]; `passes/README.md` lists them.

use super::attr_leaf::{AttrError, AttrLeaf};
use crate::ir::op::{Activation, Op};
use crate::ir::op::{ModelOp, PassOp};
use std::fmt;

/// A named attribute function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrFn {
    /// `with_activation(op, act)`: `op`'s attributes with `act` (a `relu` or `relu6` node's
    /// leaf) as its fused activation; keeps `op`'s name.
    WithActivation,
    /// `bn_scale_of(bn)`: a `bn_scale` with the BatchNorm's epsilon, named `<bn>.scale`.
    BnScaleOf,
    /// `kernel_scaling(op)`: a `scale_channels` over the output-channel axis of `op`'s kernel
    /// (0 for conv2d and dense, 3 for depthwise_conv2d), named `<op>.folded_kernel`.
    KernelScaling,
    /// `bias_through_bn(op, bn)`: the BatchNorm's attributes for the BatchNorm applied to
    /// `op`'s bias vector, named `<op>.folded_bias`.
    BiasThroughBn,
    /// `bias_from_mean(op)`: a `sub` (`beta - mean * scale`) named `<op>.folded_bias`.
    BiasFromMean,
    /// `mean_scaling(op)`: a `mul` (`mean * scale`) named `<op>.folded_bias.mean_scaled`.
    MeanScaling,
}

impl AttrFn {
    pub const ALL: &'static [AttrFn] = &[
        AttrFn::WithActivation,
        AttrFn::BnScaleOf,
        AttrFn::KernelScaling,
        AttrFn::BiasThroughBn,
        AttrFn::BiasFromMean,
        AttrFn::MeanScaling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AttrFn::WithActivation => "with_activation",
            AttrFn::BnScaleOf => "bn_scale_of",
            AttrFn::KernelScaling => "kernel_scaling",
            AttrFn::BiasThroughBn => "bias_through_bn",
            AttrFn::BiasFromMean => "bias_from_mean",
            AttrFn::MeanScaling => "mean_scaling",
        }
    }

    pub fn from_name(s: &str) -> Option<AttrFn> {
        AttrFn::ALL.iter().copied().find(|f| f.name() == s)
    }

    /// The number of attribute arguments.
    pub fn arity(self) -> usize {
        match self {
            AttrFn::WithActivation | AttrFn::BiasThroughBn => 2,
            _ => 1,
        }
    }

    /// Evaluates the function; the error says why the arguments do not fit.
    pub fn eval(self, args: &[&AttrLeaf]) -> Result<AttrLeaf, AttrError> {
        if args.len() != self.arity() {
            return Err(format!(
                "{} takes {} arguments, found {}",
                self.name(),
                self.arity(),
                args.len()
            )
            .into());
        }
        let a = args[0];
        match self {
            AttrFn::WithActivation => {
                let act = args[1].op.as_fusable_activation().ok_or_else(|| {
                    format!(
                        "with_activation: `{}` is a {}, not relu or relu6",
                        args[1].name,
                        args[1].op.name()
                    )
                })?;
                let mut op = a.op.clone();
                match op.activation() {
                    Some(Activation::None) => {}
                    Some(other) => {
                        return Err(format!(
                            "with_activation: `{}` already has activation {}",
                            a.name,
                            other.name()
                        )
                        .into())
                    }
                    None => {
                        return Err(format!(
                            "with_activation: a {} has no fused activation",
                            a.op.name()
                        )
                        .into())
                    }
                }
                op.set_activation(act);
                Ok(AttrLeaf::new(op, a.name.clone()))
            }
            AttrFn::BnScaleOf => match &a.op {
                Op::Model(ModelOp::BatchNorm { epsilon, .. }) => Ok(AttrLeaf::new(
                    Op::Pass(PassOp::BnScale { epsilon: *epsilon }),
                    format!("{}.scale", a.name),
                )),
                other => Err(format!("bn_scale_of: `{}` is a {}", a.name, other.name()).into()),
            },
            AttrFn::KernelScaling => {
                let axis = crate::ir::verify::kernel_quant_axis(&a.op).ok_or_else(|| {
                    AttrError(format!("kernel_scaling: a {} has no kernel", a.op.name()))
                })?;
                Ok(AttrLeaf::new(
                    Op::Pass(PassOp::ScaleChannels { axis }),
                    format!("{}.folded_kernel", a.name),
                ))
            }
            AttrFn::BiasThroughBn => match &args[1].op {
                op @ Op::Model(ModelOp::BatchNorm { .. }) => {
                    Ok(AttrLeaf::new(op.clone(), format!("{}.folded_bias", a.name)))
                }
                other => {
                    Err(format!("bias_through_bn: `{}` is a {}", args[1].name, other.name()).into())
                }
            },
            AttrFn::BiasFromMean => Ok(AttrLeaf::new(
                Op::Model(ModelOp::Sub {
                    activation: Activation::None,
                }),
                format!("{}.folded_bias", a.name),
            )),
            AttrFn::MeanScaling => Ok(AttrLeaf::new(
                Op::Model(ModelOp::Mul {
                    activation: Activation::None,
                }),
                format!("{}.folded_bias.mean_scaled", a.name),
            )),
        }
    }
}

impl fmt::Display for AttrFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::{ConvAttrs, F32};

    fn leaf(op: Op, name: &str) -> AttrLeaf {
        AttrLeaf::new(op, name)
    }

    #[test]
    fn names_round_trip() {
        for &f in AttrFn::ALL {
            assert_eq!(AttrFn::from_name(f.name()), Some(f));
        }
    }

    #[test]
    fn with_activation_fuses_once() {
        let conv = leaf(Op::Model(ModelOp::Conv2d(ConvAttrs::default())), "c");
        let fused = AttrFn::WithActivation
            .eval(&[&conv, &leaf(Op::Model(ModelOp::Relu6), "r")])
            .unwrap();
        assert_eq!(fused.name, "c");
        assert_eq!(fused.op.activation(), Some(Activation::Relu6));
        let err = AttrFn::WithActivation
            .eval(&[&fused, &leaf(Op::Model(ModelOp::Relu), "r")])
            .unwrap_err();
        assert!(err.0.contains("already"), "{err}");
        let err = AttrFn::WithActivation
            .eval(&[&conv, &leaf(Op::Model(ModelOp::Sigmoid), "s")])
            .unwrap_err();
        assert!(err.0.contains("not relu"), "{err}");
    }

    #[test]
    fn kernel_scaling_uses_the_output_channel_axis() {
        let dw = leaf(
            Op::Model(ModelOp::DepthwiseConv2d(ConvAttrs::default())),
            "dw",
        );
        let s = AttrFn::KernelScaling.eval(&[&dw]).unwrap();
        assert_eq!(s.op, Op::Pass(PassOp::ScaleChannels { axis: 3 }));
        assert_eq!(s.name, "dw.folded_kernel");
        let bn = leaf(
            Op::Model(ModelOp::BatchNorm {
                epsilon: F32(1e-3),
                momentum: F32(0.99),
            }),
            "bn",
        );
        assert_eq!(
            AttrFn::BnScaleOf.eval(&[&bn]).unwrap().op,
            Op::Pass(PassOp::BnScale { epsilon: F32(1e-3) })
        );
        assert!(AttrFn::KernelScaling.eval(&[&bn]).is_err());
    }
}
