//! Rules as egg rewrites: patterns lowered to egg's, and a searcher that applies the rule's
//! conditions to every match.

use super::ast::{Pat, Rule, RuleFile};
use crate::error::{Error, Result};
use crate::ir::op::OpKind;
use crate::rewrite::analysis::{EGraph, QAnalysis};
use crate::rewrite::attr_fns::AttrFn;
use crate::rewrite::conditions::Condition;
use crate::rewrite::lang::QNode;
use egg::{
    ENodeOrVar, Id, Language, Pattern, PatternAst, RecExpr, Rewrite, SearchMatches, Searcher,
    Subst, Var,
};
use std::collections::HashSet;

fn var(name: &str) -> Var {
    format!("?{name}").parse().expect("a checked variable name")
}

/// Appends `p` to `ast`, returning its id; bindings are collected with their own sub-pattern.
fn lower(
    p: &Pat,
    ast: &mut RecExpr<ENodeOrVar<QNode>>,
    binds: &mut Vec<(Var, PatternAst<QNode>)>,
) -> Id {
    match p {
        Pat::Var(v, _) => ast.add(ENodeOrVar::Var(var(v))),
        Pat::Bind(v, inner, _) => {
            let mut sub = RecExpr::default();
            let mut nested = Vec::new();
            lower(inner, &mut sub, &mut nested);
            binds.push((var(v), sub));
            lower(inner, ast, binds)
        }
        Pat::Node(head, ch, _) => {
            let ids: Vec<Id> = ch.iter().map(|c| lower(c, ast, binds)).collect();
            let node = match AttrFn::from_name(head) {
                Some(f) => QNode::Fn(f, ids),
                None => QNode::Op(OpKind::from_name(head).expect("a checked op name"), ids),
            };
            ast.add(ENodeOrVar::ENode(node))
        }
    }
}

/// The class of pattern `ast` instantiated with `subst`, if the e-graph has it.
fn lookup(egraph: &EGraph, ast: &PatternAst<QNode>, subst: &Subst) -> Option<Id> {
    let mut ids: Vec<Id> = Vec::with_capacity(ast.len());
    for n in ast.iter() {
        let id = match n {
            ENodeOrVar::Var(v) => *subst.get(*v)?,
            ENodeOrVar::ENode(e) => {
                egraph.lookup(e.clone().map_children(|c| ids[usize::from(c)]))?
            }
        };
        ids.push(id);
    }
    ids.last().copied()
}

/// A rule's left side: an egg pattern, plus `?m@(...)` bindings and the `if` conditions,
/// checked while searching so that only real matches are reported.
pub struct RuleSearcher {
    pattern: Pattern<QNode>,
    /// The binding of the whole match (`?y@(...)` at the root).
    root_bind: Option<Var>,
    binds: Vec<(Var, PatternAst<QNode>)>,
    conditions: Vec<(&'static Condition, Vec<Var>)>,
}

impl Searcher<QNode, QAnalysis> for RuleSearcher {
    fn search_eclass_with_limit(
        &self,
        egraph: &EGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, QNode>> {
        let m = self
            .pattern
            .search_eclass_with_limit(egraph, eclass, limit)?;
        let substs: Vec<Subst> = m
            .substs
            .into_iter()
            .filter_map(|mut s| {
                if let Some(v) = self.root_bind {
                    s.insert(v, egraph.find(eclass));
                }
                for (v, ast) in &self.binds {
                    s.insert(*v, lookup(egraph, ast, &s)?);
                }
                let ok = self.conditions.iter().all(|(c, args)| {
                    let ids: Vec<Id> = args.iter().map(|a| egraph.find(s[*a])).collect();
                    (c.check)(egraph, &ids)
                });
                ok.then_some(s)
            })
            .collect();
        if substs.is_empty() {
            None
        } else {
            Some(SearchMatches {
                eclass: m.eclass,
                substs,
                ast: m.ast,
            })
        }
    }

    fn vars(&self) -> Vec<Var> {
        let mut vs = self.pattern.vars();
        vs.extend(self.root_bind);
        vs.extend(self.binds.iter().map(|(v, _)| *v));
        vs
    }
}

impl Rule {
    /// The egg rewrite of this rule.
    pub fn rewrite(&self) -> Result<Rewrite<QNode, QAnalysis>> {
        let mut binds = Vec::new();
        let (root_bind, lhs) = match &self.lhs {
            Pat::Bind(v, inner, _) => (Some(var(v)), inner.as_ref()),
            other => (None, other),
        };
        let mut ast = RecExpr::default();
        lower(lhs, &mut ast, &mut binds);
        let mut rhs_ast = RecExpr::default();
        lower(&self.rhs, &mut rhs_ast, &mut Vec::new());
        let searcher = RuleSearcher {
            pattern: Pattern::new(ast),
            root_bind,
            binds,
            conditions: self
                .conditions
                .iter()
                .map(|c| (c.condition, c.args.iter().map(|a| var(a)).collect()))
                .collect(),
        };
        Rewrite::new(self.name.as_str(), searcher, Pattern::new(rhs_ast))
            .map_err(|m| Error::Rewrite(format!("rule `{}`: {m}", self.name)))
    }
}

impl RuleFile {
    /// The egg rewrites of every rule, in file order.
    pub fn rewrites(&self) -> Result<Vec<Rewrite<QNode, QAnalysis>>> {
        self.rules.iter().map(|r| r.rewrite()).collect()
    }

    /// Only the named rules (rule unit tests run one rule at a time).
    pub fn only(&self, names: &[&str]) -> Result<RuleFile> {
        let known: HashSet<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
        if let Some(missing) = names.iter().find(|n| !known.contains(**n)) {
            return Err(Error::Rewrite(format!(
                "{} has no rule `{missing}`",
                self.file
            )));
        }
        Ok(RuleFile {
            file: self.file.clone(),
            rules: self
                .rules
                .iter()
                .filter(|r| names.contains(&r.name.as_str()))
                .cloned()
                .collect(),
        })
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}
