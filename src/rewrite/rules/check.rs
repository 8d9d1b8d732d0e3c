//! The checks a rule must pass besides parsing: arities, bound variables, conditions that
//! exist, right sides that only use what the left side binds.

use super::ast::{Pat, Pos, Rule};
use crate::error::{Error, Result};
use crate::ir::op::OpKind;
use crate::rewrite::attr_fns::AttrFn;
use crate::rewrite::lang::kind_arity;
use std::collections::BTreeSet;

pub(super) struct Checker<'a> {
    pub(super) file: &'a str,
}

impl Checker<'_> {
    fn err(&self, pos: Pos, msg: String) -> Error {
        Error::Parse {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            msg,
        }
    }

    /// Checks a pattern; `attr_slot` says the pattern stands where attributes go.
    fn check(&self, p: &Pat, lhs: bool, attr_slot: bool) -> Result<()> {
        match p {
            Pat::Var(..) => Ok(()),
            Pat::Bind(v, inner, pos) => {
                if !lhs {
                    return Err(self.err(*pos, format!("`?{v}@` bindings belong on the left side")));
                }
                if attr_slot {
                    return Err(self.err(*pos, "an attribute child cannot be a sub-pattern".into()));
                }
                self.check(inner, lhs, false)
            }
            Pat::Node(head, ch, pos) => {
                if let Some(f) = AttrFn::from_name(head) {
                    if lhs {
                        return Err(self.err(
                            *pos,
                            format!("attribute function `{head}` can only build attributes on the right side"),
                        ));
                    }
                    if !attr_slot {
                        return Err(self.err(
                            *pos,
                            format!("attribute function `{head}` must stand where an op's attributes go (its first child)"),
                        ));
                    }
                    if ch.len() != f.arity() {
                        return Err(self.err(
                            *pos,
                            format!(
                                "`{head}` takes {} argument(s), found {}",
                                f.arity(),
                                ch.len()
                            ),
                        ));
                    }
                    return ch.iter().try_for_each(|c| self.check(c, lhs, true));
                }
                let Some(kind) = OpKind::from_name(head) else {
                    let fns: Vec<&str> = AttrFn::ALL.iter().map(|f| f.name()).collect();
                    return Err(self.err(
                        *pos,
                        format!(
                            "unknown op `{head}` (ops are spelled as in src/ir/op.rs; attribute functions: {})",
                            fns.join(", ")
                        ),
                    ));
                };
                if attr_slot {
                    return Err(self.err(
                        *pos,
                        format!("an op `({head} ...)` cannot stand for attributes"),
                    ));
                }
                if matches!(kind, OpKind::Input | OpKind::Param) {
                    return Err(self.err(
                        *pos,
                        format!("`{head}` values are leaves: match them with a variable"),
                    ));
                }
                let Some((attrs, operands)) = ch.split_first() else {
                    return Err(self.err(
                        *pos,
                        format!("`({head} ...)` needs its attribute child first, e.g. `({head} ?a ...)`"),
                    ));
                };
                let (lo, hi) = kind_arity(kind);
                if operands.len() < lo || operands.len() > hi {
                    let want = if lo == hi {
                        lo.to_string()
                    } else if hi == usize::MAX {
                        format!("at least {lo}")
                    } else {
                        format!("{lo} to {hi}")
                    };
                    return Err(self.err(
                        *pos,
                        format!(
                            "{head} takes {want} operand(s) after its attribute child, found {}",
                            operands.len()
                        ),
                    ));
                }
                self.check(attrs, lhs, true)?;
                operands.iter().try_for_each(|c| self.check(c, lhs, false))
            }
        }
    }

    pub(super) fn rule(&self, r: &Rule) -> Result<()> {
        let root_ok = match &r.lhs {
            Pat::Node(..) => true,
            Pat::Bind(_, inner, _) => matches!(**inner, Pat::Node(..)),
            Pat::Var(..) => false,
        };
        if !root_ok {
            return Err(self.err(
                r.lhs.pos(),
                "the left side must be an op pattern, not a bare variable".into(),
            ));
        }
        self.check(&r.lhs, true, false)?;
        self.check(&r.rhs, false, false)?;
        // a binding's name must not be matched elsewhere
        let mut bound = BTreeSet::new();
        r.lhs.vars(&mut bound);
        let mut binds = Vec::new();
        collect_binds(&r.lhs, &mut binds);
        let mut plain = Vec::new();
        collect_plain_vars(&r.lhs, &mut plain);
        for (b, pos) in &binds {
            if plain.iter().any(|(v, _)| v == b) || binds.iter().filter(|(x, _)| x == b).count() > 1
            {
                return Err(self.err(
                    *pos,
                    format!("`?{b}` names a binding and is used again on the left side"),
                ));
            }
        }
        let mut rhs_vars = Vec::new();
        collect_plain_vars(&r.rhs, &mut rhs_vars);
        for (v, pos) in rhs_vars {
            if !bound.contains(&v) {
                return Err(self.err(pos, format!("`?{v}` is not bound by the left side")));
            }
        }
        for c in &r.conditions {
            for a in &c.args {
                if !bound.contains(a) {
                    return Err(self.err(
                        c.pos,
                        format!("condition argument `?{a}` is not bound by the left side"),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn collect_binds(p: &Pat, out: &mut Vec<(String, Pos)>) {
    match p {
        Pat::Var(..) => {}
        Pat::Bind(v, inner, pos) => {
            out.push((v.clone(), *pos));
            collect_binds(inner, out);
        }
        Pat::Node(_, ch, _) => ch.iter().for_each(|c| collect_binds(c, out)),
    }
}

fn collect_plain_vars(p: &Pat, out: &mut Vec<(String, Pos)>) {
    match p {
        Pat::Var(v, pos) => out.push((v.clone(), *pos)),
        Pat::Bind(_, inner, _) => collect_plain_vars(inner, out),
        Pat::Node(_, ch, _) => ch.iter().for_each(|c| collect_plain_vars(c, out)),
    }
}
