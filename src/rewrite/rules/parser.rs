//! Rules from tokens: names, patterns, conditions; errors at `file:line:col`.

use super::ast::{CondCall, Pat, Pos, Rule};
use super::lexer::{Spanned, Tok};
use crate::error::{Error, Result};
use crate::rewrite::conditions::condition;

pub(super) struct Parser<'a> {
    pub(super) file: &'a str,
    pub(super) toks: Vec<Spanned>,
    pub(super) at: usize,
}

/// How deep a rule's patterns may nest: far beyond any rule, and a bound that keeps the
/// parser's recursion off the end of the stack.
const MAX_PATTERN_DEPTH: usize = 64;

impl Parser<'_> {
    pub(super) fn peek(&self) -> &Tok {
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

    pub(super) fn err(&self, pos: Pos, msg: String) -> Error {
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
        self.pattern_at(0)
    }

    fn pattern_at(&mut self, depth: usize) -> Result<Pat> {
        let pos = self.pos();
        if depth > MAX_PATTERN_DEPTH {
            return Err(self.err(
                pos,
                format!("patterns are nested more than {MAX_PATTERN_DEPTH} deep"),
            ));
        }
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
                    let inner = self.pattern_at(depth + 1)?;
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
                    children.push(self.pattern_at(depth + 1)?);
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
            let known: Vec<&str> = crate::rewrite::conditions::CONDITIONS
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

    pub(super) fn rule(&mut self) -> Result<Rule> {
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
