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

mod ast;
mod check;
mod lexer;
mod parser;
mod search;

pub use ast::{Rule, RuleFile};

use crate::error::{Error, Result};
use check::Checker;
use lexer::{lex, Tok};
use parser::Parser;

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

/// The rule files compiled into qatc: `(stem, text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "canonicalize",
        include_str!("../../../passes/canonicalize.rules"),
    ),
    ("quantize", include_str!("../../../passes/quantize.rules")),
    (
        "fuse_fake_quant",
        include_str!("../../../passes/fuse_fake_quant.rules"),
    ),
    ("fold_bn", include_str!("../../../passes/fold_bn.rules")),
    (
        "fuse_activation",
        include_str!("../../../passes/fuse_activation.rules"),
    ),
];

/// The built-in rule file of pass `stem`, parsed once.
pub fn builtin(stem: &str) -> Result<&'static RuleFile> {
    use std::sync::OnceLock;
    static PARSED: OnceLock<Vec<(String, Result<RuleFile>)>> = OnceLock::new();
    let all = PARSED.get_or_init(|| {
        BUILTIN
            .iter()
            .map(|(stem, src)| {
                let file = format!("passes/{stem}.rules");
                (stem.to_string(), parse_rules(src, &file))
            })
            .collect()
    });
    match all.iter().find(|(s, _)| s == stem) {
        Some((_, Ok(f))) => Ok(f),
        Some((_, Err(e))) => Err(Error::Rewrite(e.to_string())),
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

    /// Nesting 100 000 deep used to overflow the stack; now it is a short error.
    #[test]
    fn deeply_nested_patterns_are_an_error_not_a_stack_overflow() {
        let deep = format!(
            "r: {}?x{} => ?x\n",
            "(relu ".repeat(100_000),
            ")".repeat(100_000)
        );
        let e = err(&deep);
        assert!(e.contains("nested more than"), "{e}");
        assert!(e.len() < 200, "{} bytes", e.len());
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
        assert_eq!(f.rules[1].pos, ast::Pos { line: 9, col: 1 });
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
