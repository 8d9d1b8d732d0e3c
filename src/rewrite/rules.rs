//! Rule files (`passes/<pass>.rules`): the rewrite rules as data.
//!
//! ```text
//! # comments run to the end of the line; every rule carries an identity comment
//! name: lhs => rhs
//! name: lhs => rhs if condition(?var, ...), condition2(?var)
//! ```
//!
//! Patterns are s-expressions over the op spellings of `.qir`, with the attribute child
//! first: `(relu ?r (conv2d ?c ?x ?w ?b))`. `?var` matches any class; `?m@(quant ?q ?y)`
//! matches the sub-pattern and also binds its class to `?m` (for conditions such as
//! `single_use(?m)`). Right sides may call attribute functions
//! ([`super::attr_fns`]) where an attribute child goes. Conditions are named Rust predicates
//! ([`super::conditions`]). A rule may span lines; errors carry `file:line:col`.

use super::analysis::{EGraph, QAnalysis};
use super::attr_fns::AttrFn;
use super::conditions::{condition, Condition};
use super::lang::{kind_arity, QNode};
use crate::error::{Error, Result};
use crate::ir::op::OpKind;
use egg::{
    ENodeOrVar, Id, Language, Pattern, PatternAst, RecExpr, Rewrite, SearchMatches, Searcher,
    Subst, Var,
};
use std::collections::{BTreeSet, HashSet};

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
    fn pos(&self) -> Pos {
        match self {
            Pat::Var(_, p) | Pat::Bind(_, _, p) | Pat::Node(_, _, p) => *p,
        }
    }

    /// Every variable the pattern mentions (binding names included).
    fn vars(&self, out: &mut BTreeSet<String>) {
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

// ---- lexing --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Colon,
    At,
    Arrow,
    Var(String),
    Word(String),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Colon => "`:`".into(),
            Tok::At => "`@`".into(),
            Tok::Arrow => "`=>`".into(),
            Tok::Var(v) => format!("`?{v}`"),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Eof => "end of file".into(),
        }
    }
}

struct Spanned {
    tok: Tok,
    pos: Pos,
    /// The comment block that ended right before this token.
    comment: String,
}

fn lex(src: &str, file: &str) -> Result<Vec<Spanned>> {
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut toks = Vec::new();
    let mut comment = String::new();
    let err = |line, col, msg: String| Error::Parse {
        file: file.to_string(),
        line,
        col,
        msg,
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut blank_line = true;
    while i < chars.len() {
        let c = chars[i];
        if !matches!(c, ' ' | '\t' | '\r' | '\n') {
            blank_line = false;
        }
        let pos = Pos { line, col };
        let take = |n: usize, i: &mut usize, col: &mut usize| {
            *i += n;
            *col += n;
        };
        match c {
            '\n' => {
                // a blank line ends a comment block: only the block right above a rule is
                // its comment
                if blank_line {
                    comment.clear();
                }
                blank_line = true;
                i += 1;
                line += 1;
                col = 1;
                continue;
            }
            ' ' | '\t' | '\r' => take(1, &mut i, &mut col),
            '#' => {
                let start = i + 1;
                while i < chars.len() && chars[i] != '\n' {
                    take(1, &mut i, &mut col);
                }
                let text: String = chars[start..i].iter().collect();
                comment.push_str(text.trim());
                comment.push('\n');
            }
            '(' | ')' | ',' | ':' | '@' => {
                let tok = match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    ',' => Tok::Comma,
                    ':' => Tok::Colon,
                    _ => Tok::At,
                };
                take(1, &mut i, &mut col);
                toks.push(Spanned {
                    tok,
                    pos,
                    comment: std::mem::take(&mut comment),
                });
            }
            '=' if chars.get(i + 1) == Some(&'>') => {
                take(2, &mut i, &mut col);
                toks.push(Spanned {
                    tok: Tok::Arrow,
                    pos,
                    comment: std::mem::take(&mut comment),
                });
            }
            '?' => {
                take(1, &mut i, &mut col);
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    take(1, &mut i, &mut col);
                }
                if start == i {
                    return Err(err(
                        pos.line,
                        pos.col,
                        "expected a variable name after `?`".into(),
                    ));
                }
                toks.push(Spanned {
                    tok: Tok::Var(chars[start..i].iter().collect()),
                    pos,
                    comment: std::mem::take(&mut comment),
                });
            }
            c if ident(c) => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    take(1, &mut i, &mut col);
                }
                toks.push(Spanned {
                    tok: Tok::Word(chars[start..i].iter().collect()),
                    pos,
                    comment: std::mem::take(&mut comment),
                });
            }
            other => {
                return Err(err(
                    pos.line,
                    pos.col,
                    format!(
                    "unexpected character `{other}` (rules are `name: lhs => rhs [if cond(?x)]`)"
                ),
                ))
            }
        }
    }
    toks.push(Spanned {
        tok: Tok::Eof,
        pos: Pos { line, col },
        comment,
    });
    Ok(toks)
}

// ---- parsing -------------------------------------------------------------------------------

struct Parser<'a> {
    file: &'a str,
    toks: Vec<Spanned>,
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.at].tok
    }

    fn pos(&self) -> Pos {
        self.toks[self.at].pos
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].tok.clone();
        if self.at + 1 < self.toks.len() {
            self.at += 1;
        }
        t
    }

    fn err(&self, pos: Pos, msg: String) -> Error {
        Error::Parse {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            msg,
        }
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<()> {
        let pos = self.pos();
        let got = self.next();
        if got == want {
            Ok(())
        } else {
            Err(self.err(pos, format!("expected {what}, found {}", got.describe())))
        }
    }

    fn pattern(&mut self) -> Result<Pat> {
        let pos = self.pos();
        match self.next() {
            Tok::Var(v) => {
                if *self.peek() == Tok::At {
                    self.next();
                    let inner_pos = self.pos();
                    if *self.peek() != Tok::LParen {
                        return Err(self.err(
                            inner_pos,
                            format!("expected `(` after `?{v}@`: a binding names a sub-pattern"),
                        ));
                    }
                    let inner = self.pattern()?;
                    Ok(Pat::Bind(v, Box::new(inner), pos))
                } else {
                    Ok(Pat::Var(v, pos))
                }
            }
            Tok::LParen => {
                let hpos = self.pos();
                let head = match self.next() {
                    Tok::Word(w) => w,
                    t => {
                        return Err(self.err(
                            hpos,
                            format!("expected an op or attribute function name, found {}", t.describe()),
                        ))
                    }
                };
                let mut children = Vec::new();
                while *self.peek() != Tok::RParen {
                    if *self.peek() == Tok::Eof {
                        return Err(self.err(pos, "this `(` is never closed".into()));
                    }
                    children.push(self.pattern()?);
                }
                self.next();
                Ok(Pat::Node(head, children, pos))
            }
            Tok::Word(w) => Err(self.err(
                pos,
                format!("`{w}` must be in parentheses: write `({w} ?attrs ...)`, or `?{w}` for a variable"),
            )),
            t => Err(self.err(pos, format!("expected a pattern, found {}", t.describe()))),
        }
    }

    fn condition(&mut self) -> Result<CondCall> {
        let pos = self.pos();
        let name = match self.next() {
            Tok::Word(w) => w,
            t => {
                return Err(self.err(
                    pos,
                    format!("expected a condition name, found {}", t.describe()),
                ))
            }
        };
        let cond = condition(&name).ok_or_else(|| {
            let known: Vec<&str> = super::conditions::CONDITIONS
                .iter()
                .map(|c| c.name)
                .collect();
            self.err(
                pos,
                format!(
                    "unknown condition `{name}` (known: {}; add one in src/rewrite/conditions.rs)",
                    known.join(", ")
                ),
            )
        })?;
        self.expect(Tok::LParen, "`(` after the condition name")?;
        let mut args = Vec::new();
        if *self.peek() != Tok::RParen {
            loop {
                let apos = self.pos();
                match self.next() {
                    Tok::Var(v) => args.push(v),
                    t => {
                        return Err(self.err(
                            apos,
                            format!(
                                "condition arguments are variables like `?x`, found {}",
                                t.describe()
                            ),
                        ))
                    }
                }
                if *self.peek() == Tok::Comma {
                    self.next();
                } else {
                    break;
                }
            }
        }
        self.expect(Tok::RParen, "`)` closing the condition's arguments")?;
        if args.len() != cond.arity {
            return Err(self.err(
                pos,
                format!(
                    "condition `{name}` takes {} argument(s), found {} ({})",
                    cond.arity,
                    args.len(),
                    cond.doc
                ),
            ));
        }
        Ok(CondCall {
            condition: cond,
            args,
            pos,
        })
    }

    fn rule(&mut self) -> Result<Rule> {
        let pos = self.pos();
        let comment = self.toks[self.at].comment.trim().to_string();
        let name = match self.next() {
            Tok::Word(w) if w != "if" => w,
            t => {
                return Err(self.err(
                    pos,
                    format!(
                        "expected a rule name (`name: lhs => rhs`), found {}",
                        t.describe()
                    ),
                ))
            }
        };
        self.expect(Tok::Colon, "`:` after the rule name")?;
        let lhs = self.pattern()?;
        self.expect(Tok::Arrow, "`=>` between the two sides")?;
        let rhs = self.pattern()?;
        let mut conditions = Vec::new();
        if *self.peek() == Tok::Word("if".into()) {
            self.next();
            loop {
                conditions.push(self.condition()?);
                if *self.peek() == Tok::Comma {
                    self.next();
                } else {
                    break;
                }
            }
        }
        Ok(Rule {
            name,
            pos,
            lhs,
            rhs,
            conditions,
            comment,
        })
    }
}

// ---- checking ------------------------------------------------------------------------------

struct Checker<'a> {
    file: &'a str,
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

    fn rule(&self, r: &Rule) -> Result<()> {
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

/// Parses and checks a rule file. `file` names it in errors.
pub fn parse_rules(src: &str, file: &str) -> Result<RuleFile> {
    let toks = lex(src, file)?;
    let mut p = Parser { file, toks, at: 0 };
    let mut rules: Vec<Rule> = Vec::new();
    let checker = Checker { file };
    while *p.peek() != Tok::Eof {
        let r = p.rule()?;
        if let Some(prev) = rules.iter().find(|x| x.name == r.name) {
            return Err(p.err(
                r.pos,
                format!(
                    "rule `{}` is defined twice (first at line {})",
                    r.name, prev.pos.line
                ),
            ));
        }
        checker.rule(&r)?;
        rules.push(r);
    }
    Ok(RuleFile {
        file: file.to_string(),
        rules,
    })
}

// ---- egg rewrites --------------------------------------------------------------------------

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

// ---- the rule files of the passes ----------------------------------------------------------

/// The rule files compiled into qatc: `(stem, text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "canonicalize",
        include_str!("../../passes/canonicalize.rules"),
    ),
    ("quantize", include_str!("../../passes/quantize.rules")),
    (
        "fuse_fake_quant",
        include_str!("../../passes/fuse_fake_quant.rules"),
    ),
    ("fold_bn", include_str!("../../passes/fold_bn.rules")),
    (
        "fuse_activation",
        include_str!("../../passes/fuse_activation.rules"),
    ),
];

/// The built-in rule file of pass `stem`, parsed once.
pub fn builtin(stem: &str) -> Result<&'static RuleFile> {
    use std::sync::OnceLock;
    static PARSED: OnceLock<Vec<(String, std::result::Result<RuleFile, String>)>> = OnceLock::new();
    let all = PARSED.get_or_init(|| {
        BUILTIN
            .iter()
            .map(|(stem, src)| {
                let file = format!("passes/{stem}.rules");
                (
                    stem.to_string(),
                    parse_rules(src, &file).map_err(|e| e.to_string()),
                )
            })
            .collect()
    });
    match all.iter().find(|(s, _)| s == stem) {
        Some((_, Ok(f))) => Ok(f),
        Some((_, Err(e))) => Err(Error::Rewrite(e.clone())),
        None => Err(Error::Rewrite(format!("no rule file passes/{stem}.rules"))),
    }
}

/// Reads `dir/<stem>.rules` (rule development without rebuilding qatc).
pub fn load(dir: &std::path::Path, stem: &str) -> Result<RuleFile> {
    let path = dir.join(format!("{stem}.rules"));
    let bytes = crate::error::read_file(&path)?;
    let src = String::from_utf8(bytes).map_err(|_| Error::file(&path, "not UTF-8 text"))?;
    parse_rules(&src, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        parse_rules(src, "t.rules").unwrap_err().to_string()
    }

    #[test]
    fn parses_rules_with_bindings_conditions_and_comments() {
        let f = parse_rules(
            "# file header\n\n# relu(q(y)) = relu(y)\nfused: (relu ?r ?m@(quant ?q ?y))\n  => (relu ?r ?y)\n  if single_use(?m), fuses_activation(?y)\n\n# second\nr2: (dropout ?d ?x) => ?x if eval_mode()\n",
            "t.rules",
        )
        .unwrap();
        assert_eq!(f.rules.len(), 2);
        let r = &f.rules[0];
        assert_eq!(r.name, "fused");
        assert_eq!(r.comment, "relu(q(y)) = relu(y)");
        assert_eq!(r.conditions.len(), 2);
        assert_eq!(f.rules[1].pos, Pos { line: 9, col: 1 });
        assert_eq!(f.rules[1].comment, "second");
        f.rewrites().unwrap();
    }

    #[test]
    fn errors_point_at_file_line_col() {
        assert_eq!(
            err("a: (relu ?r ?x) => (relu ?r ?y)"),
            "t.rules:1:29: `?y` is not bound by the left side"
        );
        assert_eq!(
            err("\n  a: (rellu ?r ?x) => ?x"),
            "t.rules:2:6: unknown op `rellu` (ops are spelled as in src/ir/op.rs; attribute functions: with_activation, bn_scale_of, kernel_scaling, bias_through_bn, bias_from_mean, mean_scaling)"
        );
        assert!(err("a: (relu ?r ?x) => ?x if nope(?x)")
            .starts_with("t.rules:1:26: unknown condition `nope`"));
        assert!(err("a: (relu ?r ?x) => ?x if single_use(?x, ?r)").contains("takes 1 argument"));
        assert!(err("a: (relu ?r ?x ?y) => ?x").contains("relu takes 1 operand(s)"));
        assert!(err("a: (relu ?r ?x => ?x").contains("expected a pattern, found `=>`"));
        assert!(err("a: ?x => ?x").contains("left side must be an op pattern"));
        assert!(
            err("a: (relu ?r ?x) => (relu (with_activation ?r) ?x)").contains("takes 2 argument")
        );
        assert!(err("a: (relu ?r ?x) => ?x\na: (relu ?r ?x) => ?x").contains("defined twice"));
        assert!(err("a: (relu ?r ?m@(relu ?s ?m)) => ?m").contains("binding"));
        assert!(err("a: (relu ?r ?x) => ?m@(relu ?r ?x)").contains("left side"));
        assert!(err("a: (relu) => ?x").contains("attribute child first"));
        assert!(err("a: (relu ?r (param ?p)) => ?r").contains("leaves"));
        assert!(err("a: (relu ?r $) => ?r").starts_with("t.rules:1:13: unexpected character `$`"));
    }
}
