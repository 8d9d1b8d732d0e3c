//! `.qir`: the canonical text form of a graph, and a first-class input format.
//!
//! ```text
//! # comments run to the end of the line
//! model "mnist_cnn"
//! param @conv2d.kernel : f32[12,3,3,1]
//! %0 = input "x" : f32[1,28,28,1]
//! %1 = conv2d "conv2d" (%0, @conv2d.kernel) {stride=[1,1], padding=valid} : f32[1,26,26,12]
//! %2 = relu "relu" (%1)
//! output "logits" = %2
//! ```
//!
//! A value line is `%N = op "name" (operands) {attrs} : type`. The name, the attribute
//! block and the type may be omitted (a missing type is inferred; a given one is checked
//! by the verifier). `param` lines declare weights, `output` lines name results, `update`
//! lines (train-step graphs) write a value back into a param; both take a `%value` or a
//! `@param`. Strings escape `\\`, `\"`, `\n`, `\t`, `\r` and `\u{hex}`; a param name
//! other than letters, digits and `_ . / - :` is quoted (`@"my param"`). Numbers are
//! finite. The printer numbers values in
//! [`Graph::canonical_order`], so dumps are stable and diffable, and
//! `print(parse(print(g))) == print(g)`.

use super::attrs::{quote, AttrValue};
use super::graph::{Graph, Initializer, NodeId};
use super::infer::infer_type;
use super::op::{Op, OpKind};
use super::params::ParamStore;
use super::types::{DType, TensorType};
use crate::error::{read_file, Error, Result};
use crate::ir::op::ModelOp;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

// ---- printing ------------------------------------------------------------------------------

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':'))
}

fn param_ref(name: &str) -> String {
    if is_plain_name(name) {
        format!("@{name}")
    } else {
        format!("@{}", quote(name))
    }
}

/// Prints a graph as canonical `.qir` text.
pub fn print(g: &Graph) -> String {
    let order = g.canonical_order();
    let mut out = String::new();
    let _ = writeln!(out, "model {}", quote(&g.name));
    // params in order of first use, then values numbered in canonical order
    let mut numbering: HashMap<NodeId, String> = HashMap::new();
    let mut params = Vec::new();
    let mut next = 0usize;
    for &id in &order {
        let node = g.node(id);
        if node.op == Op::Model(ModelOp::Param) {
            numbering.insert(id, param_ref(&node.name));
            params.push(id);
        } else {
            numbering.insert(id, format!("%{next}"));
            next += 1;
        }
    }
    for &id in &params {
        let node = g.node(id);
        let frozen = if g.is_frozen(&node.name) {
            " frozen"
        } else {
            ""
        };
        let init = match g.initializer(&node.name) {
            Initializer::GlorotUniform => String::new(),
            other => format!(" {}", other.name()),
        };
        let _ = writeln!(
            out,
            "param {} : {}{frozen}{init}",
            param_ref(&node.name),
            node.ty
        );
    }
    for &id in &order {
        let node = g.node(id);
        if node.op == Op::Model(ModelOp::Param) {
            continue;
        }
        let _ = write!(
            out,
            "{} = {} {}",
            numbering[&id],
            node.op.name(),
            quote(&node.name)
        );
        let operands = g.operands(id);
        if !operands.is_empty() {
            let names: Vec<&str> = operands.iter().map(|o| numbering[o].as_str()).collect();
            let _ = write!(out, " ({})", names.join(", "));
        }
        let attrs = node.op.attrs();
        if !attrs.is_empty() {
            let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(out, " {{{}}}", parts.join(", "));
        }
        let _ = writeln!(out, " : {}", node.ty);
    }
    for o in g.outputs() {
        let _ = writeln!(out, "output {} = {}", quote(&o.name), numbering[&o.node]);
    }
    for u in g.updates() {
        let _ = writeln!(
            out,
            "update {} = {}",
            param_ref(&u.param),
            numbering[&u.node]
        );
    }
    out
}

// ---- lexing --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Value(String),
    Param(String),
    Str(String),
    Ident(String),
    Int(i64),
    Float(f32),
    Punct(char),
    Newline,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Value(v) => format!("`%{v}`"),
            Tok::Param(p) => format!("`@{p}`"),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Float(f) => format!("`{f:?}`"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
}

struct Spanned {
    tok: Tok,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn err(&self, file: &str, msg: String) -> Error {
        Error::Parse {
            file: file.to_string(),
            line: self.line,
            col: self.col,
            msg,
        }
    }

    fn bump(&mut self) -> u8 {
        let c = self.src[self.pos];
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        c
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn name_chars(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-' | b':') {
                self.bump();
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    fn string(&mut self, file: &str) -> Result<String> {
        // opening quote already consumed
        let mut s = String::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => {
                    return Err(
                        self.err(file, "unterminated string: expected a closing `\"`".into())
                    )
                }
                Some(b'"') => {
                    self.bump();
                    return Ok(s);
                }
                Some(b'\\') => {
                    self.bump();
                    match self.peek() {
                        Some(b'"') => s.push('"'),
                        Some(b'\\') => s.push('\\'),
                        Some(b'n') => s.push('\n'),
                        Some(b't') => s.push('\t'),
                        Some(b'r') => s.push('\r'),
                        Some(b'u') => {
                            self.bump();
                            s.push(self.unicode_escape(file)?);
                            continue;
                        }
                        other => {
                            let found = match other {
                                Some(c) if c.is_ascii_graphic() => format!("`\\{}`", c as char),
                                _ => "`\\`".into(),
                            };
                            return Err(self.err(
                                file,
                                format!(
                                    "unknown escape {found} in string: expected \\\\, \\\", \\n, \\t, \\r \
                                     or \\u{{hex}}"
                                ),
                            ));
                        }
                    }
                    self.bump();
                }
                Some(_) => {
                    // take one UTF-8 character (decoding only its bytes: decoding the rest of
                    // the file for every character made long strings quadratic)
                    let ch = next_char(&self.src[self.pos..])
                        .ok_or_else(|| self.err(file, "invalid UTF-8 in string".into()))?;
                    for _ in 0..ch.len_utf8() {
                        self.bump();
                    }
                    s.push(ch);
                }
            }
        }
    }

    /// The `{hex}` of a `\u{hex}` escape (the `\u` already consumed).
    fn unicode_escape(&mut self, file: &str) -> Result<char> {
        let bad = |l: &Self| l.err(file, "expected `{hex}` after `\\u` in string".into());
        if self.peek() != Some(b'{') {
            return Err(bad(self));
        }
        self.bump();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.bump();
        }
        let hex = std::str::from_utf8(&self.src[start..self.pos]).unwrap_or("");
        let code = u32::from_str_radix(hex, 16).ok();
        if self.peek() != Some(b'}') || hex.is_empty() || hex.len() > 6 {
            return Err(bad(self));
        }
        self.bump();
        code.and_then(char::from_u32)
            .ok_or_else(|| self.err(file, format!("`\\u{{{hex}}}` is not a Unicode character")))
    }

    fn next(&mut self, file: &str) -> Result<Spanned> {
        // skip blanks and comments (not newlines)
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r') => {
                    self.bump();
                }
                Some(b'#') => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        let (line, col) = (self.line, self.col);
        let tok = match self.peek() {
            None => Tok::Eof,
            Some(b'\n') => {
                self.bump();
                Tok::Newline
            }
            Some(b'%') => {
                self.bump();
                let n = self.name_chars();
                if n.is_empty() {
                    return Err(self.err(file, "expected a value name after `%`".into()));
                }
                Tok::Value(n)
            }
            Some(b'@') => {
                self.bump();
                if self.peek() == Some(b'"') {
                    self.bump();
                    Tok::Param(self.string(file)?)
                } else {
                    let n = self.name_chars();
                    if n.is_empty() {
                        return Err(self.err(file, "expected a param name after `@`".into()));
                    }
                    Tok::Param(n)
                }
            }
            Some(b'"') => {
                self.bump();
                Tok::Str(self.string(file)?)
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                let start = self.pos;
                self.bump();
                while let Some(c) = self.peek() {
                    let exp_sign =
                        matches!(c, b'-' | b'+') && matches!(self.src[self.pos - 1], b'e' | b'E');
                    if c.is_ascii_alphanumeric() || c == b'.' || exp_sign {
                        self.bump();
                    } else {
                        break;
                    }
                }
                let text = std::str::from_utf8(&self.src[start..self.pos]).unwrap();
                if let Ok(i) = text.parse::<i64>() {
                    Tok::Int(i)
                } else if let Ok(f) = text.parse::<f32>() {
                    if !f.is_finite() {
                        return Err(Error::Parse {
                            file: file.to_string(),
                            line,
                            col,
                            msg: format!("`{text}` is not a finite f32 number"),
                        });
                    }
                    Tok::Float(f)
                } else {
                    return Err(Error::Parse {
                        file: file.to_string(),
                        line,
                        col,
                        msg: format!("`{text}` is not a number"),
                    });
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
                {
                    self.bump();
                }
                Tok::Ident(String::from_utf8_lossy(&self.src[start..self.pos]).into_owned())
            }
            Some(c @ (b'(' | b')' | b'{' | b'}' | b'[' | b']' | b',' | b'=' | b':')) => {
                self.bump();
                Tok::Punct(c as char)
            }
            Some(c) => {
                let ch = next_char(&self.src[self.pos..]);
                let shown = match ch {
                    Some(ch) if !ch.is_control() => format!("`{ch}`"),
                    _ => format!("byte 0x{c:02x}"),
                };
                return Err(self.err(
                    file,
                    format!(
                        "unexpected character {shown}: expected %value, @param, \"string\", a \
                         number, a word or one of ( ) {{ }} [ ] , = :"
                    ),
                ));
            }
        };
        Ok(Spanned { tok, line, col })
    }
}

// ---- parsing -------------------------------------------------------------------------------

/// Parses one line at a time: `toks` holds the tokens of the current line, through its
/// newline (or the end of the file), so memory does not grow with the file's token count.
struct Parser<'a> {
    file: &'a str,
    lexer: Lexer<'a>,
    toks: Vec<Spanned>,
    pos: usize,
}

impl<'a> Parser<'a> {
    /// The current token; past the end of the line, the line's last token (its newline).
    fn current(&self) -> &Spanned {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn peek(&self) -> &Tok {
        &self.current().tok
    }

    fn here(&self) -> (usize, usize) {
        let t = self.current();
        (t.line, t.col)
    }

    /// Whether the current line is consumed (its newline too).
    fn line_done(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// Lexes the next line into `toks`.
    fn next_line(&mut self) -> Result<()> {
        self.toks.clear();
        self.pos = 0;
        loop {
            let t = self.lexer.next(self.file)?;
            let end = matches!(t.tok, Tok::Newline | Tok::Eof);
            self.toks.push(t);
            if end {
                return Ok(());
            }
        }
    }

    fn err_at(&self, (line, col): (usize, usize), msg: String) -> Error {
        Error::Parse {
            file: self.file.to_string(),
            line,
            col,
            msg,
        }
    }

    fn unexpected(&self, expected: &str) -> Error {
        self.err_at(
            self.here(),
            format!("expected {expected}, found {}", self.peek().describe()),
        )
    }

    fn advance(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if *self.peek() == Tok::Punct(c) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{c}`")))
        }
    }

    /// The `,` between list items, where the list could also end with `close`.
    fn expect_separator(&mut self, close: char) -> Result<()> {
        if self.eat_punct(',') {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`,` or `{close}`")))
        }
    }

    fn expect_str(&mut self, what: &str) -> Result<String> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.advance();
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn end_of_line(&mut self) -> Result<()> {
        match self.peek() {
            Tok::Newline => {
                self.advance();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => Err(self.unexpected("end of line")),
        }
    }

    fn ty(&mut self) -> Result<TensorType> {
        let at = self.here();
        let dtype = match self.advance() {
            Tok::Ident(s) => DType::from_name(&s).ok_or_else(|| {
                self.err_at(at, format!("expected a type (f32, i8, i32), found `{s}`"))
            })?,
            t => {
                return Err(self.err_at(
                    at,
                    format!(
                        "expected a type like f32[1,28,28,1], found {}",
                        t.describe()
                    ),
                ))
            }
        };
        if !self.eat_punct('[') {
            return Err(self.unexpected("`[` and the shape, as in f32[1,28,28,1]"));
        }
        let mut shape = Vec::new();
        if !self.eat_punct(']') {
            loop {
                let at = self.here();
                match self.advance() {
                    Tok::Int(i) if i >= 0 => shape.push(i as usize),
                    t => {
                        return Err(self.err_at(
                            at,
                            format!("expected a dimension size, found {}", t.describe()),
                        ))
                    }
                }
                if self.eat_punct(']') {
                    break;
                }
                self.expect_separator(']')?;
            }
        }
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if numel.is_none_or(|n| n > crate::ir::infer::MAX_ELEMENTS) {
            return Err(self.err_at(
                at,
                "the type has more than 2^32 elements (the most one tensor may hold)".into(),
            ));
        }
        Ok(TensorType { dtype, shape })
    }

    fn attr_value(&mut self, depth: usize) -> Result<AttrValue> {
        let at = self.here();
        if depth > MAX_NESTING {
            return Err(self.err_at(
                at,
                format!("attribute lists are nested more than {MAX_NESTING} deep"),
            ));
        }
        Ok(match self.advance() {
            Tok::Int(i) => AttrValue::Int(i),
            Tok::Float(f) => AttrValue::Float(f),
            Tok::Str(s) => AttrValue::Str(s),
            Tok::Ident(s) if s == "true" => AttrValue::Bool(true),
            Tok::Ident(s) if s == "false" => AttrValue::Bool(false),
            Tok::Ident(s) => AttrValue::Ident(s),
            Tok::Punct('[') => {
                let mut items = Vec::new();
                if !self.eat_punct(']') {
                    loop {
                        items.push(self.attr_value(depth + 1)?);
                        if self.eat_punct(']') {
                            break;
                        }
                        self.expect_separator(']')?;
                    }
                }
                AttrValue::List(items)
            }
            t => {
                return Err(self.err_at(
                    at,
                    format!(
                        "expected an attribute value (number, word, string or list), found {}",
                        t.describe()
                    ),
                ))
            }
        })
    }
}

/// The UTF-8 character at the start of `bytes`, decoding only its own bytes.
fn next_char(bytes: &[u8]) -> Option<char> {
    let len = match *bytes.first()? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    std::str::from_utf8(bytes.get(..len)?).ok()?.chars().next()
}

/// How deep attribute lists may nest (`pads=[[1,1],[2,2]]` is 2): enough for any op, and a
/// bound that keeps the parser's recursion off the end of the stack.
const MAX_NESTING: usize = 16;

/// The op whose name is within edit distance 2 of `s` (the closest), for "did you mean".
fn closest_op(s: &str) -> Option<OpKind> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, &cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    OpKind::ALL
        .iter()
        .map(|&k| (distance(s, k.name()), k))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// The param node `name`, if the graph declares one (params live in the graph's name
/// index; the parser keeps no second table of them).
fn declared_param(g: &Graph, name: &str) -> Option<NodeId> {
    g.find(name)
        .filter(|&id| g.node(id).op == Op::Model(ModelOp::Param))
}

/// Parses `.qir` text; `file` names the source in errors.
pub fn parse(src: &str, file: &str) -> Result<Graph> {
    let lexer = Lexer {
        src: src.as_bytes(),
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut p = Parser {
        file,
        lexer,
        toks: Vec::new(),
        pos: 0,
    };
    let stem = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    // every node and operand takes a line or a token: sized from the text up front, the
    // tables never grow (growing doubles them, and the old copy is live meanwhile)
    let lines = src.bytes().filter(|&b| b == b'\n').count() + 1;
    let commas = src.bytes().filter(|&b| b == b',').count();
    let mut g = Graph::with_capacity(stem, lines, lines.min(commas + lines));
    let mut values: HashMap<String, NodeId> = HashMap::new();
    let mut counters: HashMap<&'static str, usize> = HashMap::new();
    let mut seen_model = false;

    loop {
        if p.toks.is_empty() || p.line_done() {
            p.next_line()?;
        }
        let at = p.here();
        match p.peek().clone() {
            Tok::Eof => break,
            Tok::Newline => {
                p.advance();
            }
            Tok::Ident(kw) if kw == "model" => {
                p.advance();
                if seen_model {
                    return Err(p.err_at(at, "the model is named twice".into()));
                }
                seen_model = true;
                g.name = p.expect_str("the model name as a string")?;
                p.end_of_line()?;
            }
            Tok::Ident(kw) if kw == "param" => {
                p.advance();
                let name_at = p.here();
                let name = match p.advance() {
                    Tok::Param(n) => n,
                    t => return Err(p.err_at(name_at, format!("expected `@name` after `param`, found {}", t.describe()))),
                };
                if !p.eat_punct(':') {
                    if name.ends_with(':') {
                        // `@k: f32[..]`: the `:` was read as part of the name
                        return Err(p.err_at(name_at, format!(
                            "param names may contain `:`, so `@{name}` swallowed the `:` of its type: write `@{} : ...`",
                            name.trim_end_matches(':')
                        )));
                    }
                    return Err(p.unexpected("`:` and the param's type"));
                }
                let ty = p.ty()?;
                if declared_param(&g, &name).is_some() {
                    return Err(p.err_at(name_at, format!("param @{name} is declared twice")));
                }
                g.param(&name, ty).map_err(|e| p.err_at(at, e.to_string()))?;
                if matches!(p.peek(), Tok::Ident(w) if w == "frozen") {
                    p.advance();
                    g.freeze(&name).map_err(|e| p.err_at(at, e.to_string()))?;
                }
                let init = match p.peek() {
                    Tok::Ident(w) => Initializer::parse(w),
                    _ => None,
                };
                if let Some(init) = init {
                    p.advance();
                    g.set_initializer(&name, init)
                        .map_err(|e| p.err_at(at, e.to_string()))?;
                }
                p.end_of_line()?;
            }
            Tok::Ident(kw) if kw == "output" || kw == "update" => {
                p.advance();
                let target_at = p.here();
                let target = match p.advance() {
                    Tok::Str(s) if kw == "output" => s,
                    Tok::Param(s) if kw == "update" => s,
                    t => {
                        let want = if kw == "output" { "the output name as a string" } else { "`@param`" };
                        return Err(p.err_at(target_at, format!("expected {want}, found {}", t.describe())));
                    }
                };
                p.expect_punct('=')?;
                let vat = p.here();
                let node = match p.advance() {
                    Tok::Value(v) => *values
                        .get(&v)
                        .ok_or_else(|| p.err_at(vat, format!("use of undefined value %{v}")))?,
                    // a param can be an output or the new value of another param as is
                    Tok::Param(n) => declared_param(&g, &n).ok_or_else(|| {
                        p.err_at(vat, format!("param @{n} is not declared: add a line `param @{n} : f32[...]`"))
                    })?,
                    t => return Err(p.err_at(vat, format!("expected a value like %3 or @param, found {}", t.describe()))),
                };
                if kw == "output" {
                    g.add_output(target, node);
                } else {
                    if declared_param(&g, &target).is_none() {
                        return Err(p.err_at(target_at, format!("update of undeclared param @{target}: declare it with `param @{target} : f32[...]`")));
                    }
                    g.add_update(target, node);
                }
                p.end_of_line()?;
            }
            Tok::Value(v) => {
                p.advance();
                if values.contains_key(&v) {
                    return Err(p.err_at(at, format!("value %{v} is defined twice")));
                }
                p.expect_punct('=')?;
                let op_at = p.here();
                let kind = match p.advance() {
                    Tok::Ident(s) => OpKind::from_name(&s).ok_or_else(|| {
                        let hint = match closest_op(&s) {
                            Some(k) => format!("did you mean `{k}`?"),
                            None => "see src/ir/op.rs for the op table".into(),
                        };
                        p.err_at(op_at, format!("unknown op `{s}` ({hint})"))
                    })?,
                    t => return Err(p.err_at(op_at, format!("expected an op name, found {}", t.describe()))),
                };
                if kind == OpKind::Param {
                    return Err(p.err_at(op_at, "params are declared with `param @name : type` lines".into()));
                }
                let name = match p.peek().clone() {
                    Tok::Str(s) => {
                        p.advance();
                        s
                    }
                    _ => {
                        let c = counters.entry(kind.name()).or_insert(0);
                        *c += 1;
                        g.unique_name(&format!("{}_{}", kind.name(), c))
                    }
                };
                let mut operands = Vec::new();
                if p.eat_punct('(') && !p.eat_punct(')') {
                    loop {
                        let oat = p.here();
                        let id = match p.advance() {
                            Tok::Value(v) => *values
                                .get(&v)
                                .ok_or_else(|| p.err_at(oat, format!("use of undefined value %{v} (values must be defined before use)")))?,
                            Tok::Param(n) => declared_param(&g, &n).ok_or_else(|| {
                                p.err_at(oat, format!("param @{n} is not declared: add a line `param @{n} : f32[...]`"))
                            })?,
                            t => return Err(p.err_at(oat, format!("expected an operand (%value or @param), found {}", t.describe()))),
                        };
                        operands.push(id);
                        if p.eat_punct(')') {
                            break;
                        }
                        p.expect_separator(')')?;
                    }
                }
                let attrs_at = p.here();
                let mut attrs = Vec::new();
                if p.eat_punct('{') && !p.eat_punct('}') {
                    loop {
                        let kat = p.here();
                        let key = match p.advance() {
                            Tok::Ident(k) => k,
                            t => return Err(p.err_at(kat, format!("expected an attribute name, found {}", t.describe()))),
                        };
                        p.expect_punct('=')?;
                        let v = p.attr_value(1)?;
                        attrs.push((key, v));
                        if p.eat_punct('}') {
                            break;
                        }
                        p.expect_separator('}')?;
                    }
                }
                let op = Op::from_attrs(kind, attrs).map_err(|e| p.err_at(attrs_at, e.0))?;
                let ty = if p.eat_punct(':') {
                    Some(p.ty()?)
                } else {
                    None
                };
                let id = if op == Op::Model(ModelOp::Input) {
                    if !operands.is_empty() {
                        return Err(p.err_at(op_at, format!("node `{name}` (input): an input takes no operands, found {}", operands.len())));
                    }
                    let ty = ty.ok_or_else(|| p.err_at(at, "an input needs its type: `: f32[1,28,28,1]`".into()))?;
                    g.add_input(name, ty)
                } else {
                    let ty = match ty {
                        Some(t) => t,
                        None => {
                            let tys: Vec<&TensorType> = operands.iter().map(|&o| &g.node(o).ty).collect();
                            infer_type(&op, &tys).map_err(|m| {
                                let tys: Vec<String> = tys.iter().map(|t| t.to_string()).collect();
                                p.err_at(op_at, format!("node `{name}` ({}): {m}; operands ({})", op.name(), tys.join(", ")))
                            })?
                        }
                    };
                    g.add_typed(op, name, &operands, ty)
                }
                .map_err(|e| p.err_at(at, e.to_string()))?;
                values.insert(v, id);
                p.end_of_line()?;
            }
            t => {
                return Err(p.err_at(
                    at,
                    format!("expected a statement (`model`, `param`, `%N = op ...`, `output`, `update`), found {}", t.describe()),
                ))
            }
        }
    }
    if g.outputs().is_empty() {
        return Err(Error::Parse {
            file: file.to_string(),
            line: p.toks.last().map(|t| t.line).unwrap_or(1),
            col: 1,
            msg: "the graph has no `output \"name\" = %N` line".into(),
        });
    }
    Ok(g)
}

/// Reads and parses a `.qir` file.
pub fn parse_file(path: impl AsRef<Path>) -> Result<Graph> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    let src = String::from_utf8(bytes).map_err(|_| Error::file(path, "not UTF-8 text"))?;
    parse(&src, &path.display().to_string())
}

/// The weights file beside a `.qir` file: `model.qir` -> `model.safetensors`.
pub fn weights_path(qir: &Path) -> PathBuf {
    qir.with_extension("safetensors")
}

/// Loads a model: the `.qir` graph and, when it exists, its `.safetensors` weights
/// (an empty store otherwise).
pub fn load_model(path: impl AsRef<Path>) -> Result<(Graph, ParamStore)> {
    let path = path.as_ref();
    let g = parse_file(path)?;
    let wp = weights_path(path);
    let params = if wp.exists() {
        let p = ParamStore::load(&wp)?;
        p.check_graph(&g)?;
        p
    } else {
        ParamStore::new()
    };
    Ok((g, params))
}

/// Saves a model as a `.qir` + `.safetensors` pair, each written atomically.
pub fn save_model(g: &Graph, params: &ParamStore, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let weights = params.to_safetensors(None)?;
    let text = print(g);
    // both or neither: a .qir never lands without its weights
    crate::error::write_atomic_all(&[
        (weights_path(path).as_path(), &weights),
        (path, text.as_bytes()),
    ])
}
