//! Tokens of a rule file, with their positions.

use super::ast::Pos;
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
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
    pub(super) fn describe(&self) -> String {
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

pub(super) struct Spanned {
    pub(super) tok: Tok,
    pub(super) pos: Pos,
    /// The comment block that ended right before this token.
    pub(super) comment: String,
}

pub(super) fn lex(src: &str, file: &str) -> Result<Vec<Spanned>> {
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
