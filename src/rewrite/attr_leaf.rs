//! Attribute leaves: the e-graph leaf that carries an op node's attributes and name (the
//! first child of every op node of [`super::lang::QNode`]).

use crate::ir::op::{Op, OpKind};

crate::message_error! {
    /// Why an attribute leaf or attribute function cannot make the attributes a rule
    /// asks for.
    AttrError
}

/// The attributes and name of one op node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttrLeaf {
    /// The op whose attributes this is. Its kind need not be the kind of the node using the
    /// leaf: `(fake_quant ?q ?x)` reuses the attributes of a `quant` marker.
    pub op: Op,
    /// The graph node's name.
    pub name: String,
}

impl AttrLeaf {
    pub fn new(op: Op, name: impl Into<String>) -> AttrLeaf {
        AttrLeaf {
            op,
            name: name.into(),
        }
    }

    /// The op of kind `kind` with these attributes (the leaf's own op when the kinds agree).
    pub fn op_of_kind(&self, kind: OpKind) -> Result<Op, AttrError> {
        if self.op.kind() == kind {
            return Ok(self.op.clone());
        }
        let attrs = self
            .op
            .attrs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Op::from_attrs(kind, attrs).map_err(|m| {
            AttrError(format!(
                "the attributes of {} `{}` do not fit a {kind} node: {m}",
                self.op.name(),
                self.name
            ))
        })
    }
}
