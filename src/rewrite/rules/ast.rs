//! What a rule file holds: rules with their patterns, conditions and positions.

use crate::ir::op::OpKind;
use crate::rewrite::conditions::Condition;
use std::collections::BTreeSet;

/// A position in a rule file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A parsed pattern.
#[derive(Clone, Debug, PartialEq)]
pub enum Pat {
    /// `?x`
    Var(String, Pos),
    /// `?m@(...)`: the sub-pattern, its class also bound to `?m`.
    Bind(String, Box<Pat>, Pos),
    /// `(head child...)`: an op (attribute child first) or an attribute function.
    Node(String, Vec<Pat>, Pos),
}

impl Pat {
    pub(super) fn pos(&self) -> Pos {
        match self {
            Pat::Var(_, p) | Pat::Bind(_, _, p) | Pat::Node(_, _, p) => *p,
        }
    }

    /// Every variable the pattern mentions (binding names included).
    pub(super) fn vars(&self, out: &mut BTreeSet<String>) {
        match self {
            Pat::Var(v, _) => {
                out.insert(v.clone());
            }
            Pat::Bind(v, p, _) => {
                out.insert(v.clone());
                p.vars(out);
            }
            Pat::Node(_, ch, _) => ch.iter().for_each(|c| c.vars(out)),
        }
    }

    /// The op kinds the pattern mentions.
    pub fn op_kinds(&self, out: &mut BTreeSet<OpKind>) {
        match self {
            Pat::Var(..) => {}
            Pat::Bind(_, p, _) => p.op_kinds(out),
            Pat::Node(h, ch, _) => {
                if let Some(k) = OpKind::from_name(h) {
                    out.insert(k);
                }
                ch.iter().for_each(|c| c.op_kinds(out));
            }
        }
    }
}

/// A condition call in an `if` clause.
#[derive(Clone, Debug)]
pub struct CondCall {
    pub condition: &'static Condition,
    pub args: Vec<String>,
    pub pos: Pos,
}

/// One rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub pos: Pos,
    pub lhs: Pat,
    pub rhs: Pat,
    pub conditions: Vec<CondCall>,
    /// The comment lines right above the rule (its identity).
    pub comment: String,
}

/// A parsed rule file.
#[derive(Clone, Debug)]
pub struct RuleFile {
    /// The file name used in errors (`passes/quantize.rules`).
    pub file: String,
    pub rules: Vec<Rule>,
}
