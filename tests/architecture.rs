//! The crate's dependency structure, checked from the source: no two files of `src/` import
//! each other in a loop (directly or through others), and every top-level module uses only
//! the modules before it in [`LAYERS`] — the layer order README's "Architecture" section
//! describes. Test-only modules (`#[cfg(test)] mod …;` files and inline test modules) are
//! not counted: tests may reach across layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first: each may use only the ones before it.
const LAYERS: &[&str] = &[
    "error", "cpu", "ir", "dist", "models", "data", "rewrite", "quant", "pass", "exec", "autodiff",
    "train", "jit", "tflite", "int8", "export", "import", "analyze", "workflow", "cli",
];

type Module = Vec<String>;

/// The module path of a source file (`src/ir/op/mod.rs` → `ir::op`).
fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments, string literals and inline `#[cfg(test)] mod … { … }`.
fn code_of(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i + 1 < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // a char literal ('x' or '\n'), not a lifetime
            i += if b[i + 1] == b'\\' { 4 } else { 3 };
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    // inline test modules run to the end of the file in this crate's style
    if let Some(at) = out.find("#[cfg(test)]\nmod tests {") {
        out.truncate(at);
    }
    out
}

/// The `mod x;` declarations of a file, and which of them are test-only.
fn child_modules(code: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut all, mut tests) = (BTreeSet::new(), BTreeSet::new());
    let lines: Vec<&str> = code.lines().map(str::trim).collect();
    for (k, line) in lines.iter().enumerate() {
        let decl = line
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ");
        if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
            all.insert(name.to_string());
            if k > 0 && lines[k - 1] == "#[cfg(test)]" {
                tests.insert(name.to_string());
            }
        }
    }
    (all, tests)
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree);
        return vec![path.split_whitespace().collect()];
    };
    let close = tree.rfind('}').unwrap_or(tree.len());
    let prefix: String = tree[..open].split_whitespace().collect();
    let inner = &tree[open + 1..close];
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in inner.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p))
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Every path a file mentions that starts at `crate`, `super`, `self` or a child module.
fn paths_in(code: &str, children: &BTreeSet<String>) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            paths.extend(expand(&rest[..end]));
        }
    }
    let starts: Vec<&str> = ["crate", "super", "self"]
        .into_iter()
        .chain(children.iter().map(String::as_str))
        .collect();
    let bytes = code.as_bytes();
    for start in starts {
        let pat = format!("{start}::");
        let mut from = 0;
        while let Some(i) = code[from..].find(&pat) {
            let i = from + i;
            from = i + pat.len();
            let prev = if i == 0 { b' ' } else { bytes[i - 1] };
            if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                continue;
            }
            if !code[from..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // `super::{…}`: a use tree, expanded above
            }
            let end = code[i..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| i + e);
            paths.push(code[i..end].trim_end_matches(':').to_string());
        }
    }
    paths
}

/// The module a path names (its longest prefix that is a module), from module `cur`.
fn resolve(
    cur: &Module,
    path: &str,
    children: &BTreeSet<String>,
    modules: &BTreeSet<Module>,
) -> Option<Module> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let (mut base, rest): (Module, &[&str]) = match segs.first()? {
        &"crate" => (vec![], &segs[1..]),
        &"self" => (cur.clone(), &segs[1..]),
        &"super" => {
            let mut b = cur.clone();
            let mut k = 0;
            while segs.get(k) == Some(&"super") {
                b.pop();
                k += 1;
            }
            (b, &segs[k..])
        }
        s if children.contains(*s) => (cur.clone(), &segs[..]),
        _ => return None,
    };
    base.extend(rest.iter().map(|s| s.to_string()));
    (0..=base.len())
        .rev()
        .map(|n| base[..n].to_vec())
        .find(|m| modules.contains(m))
}

struct Crate {
    /// File-level edges: module → modules it uses.
    edges: BTreeMap<Module, BTreeSet<Module>>,
}

fn crate_graph() -> Crate {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut sources: BTreeMap<Module, String> = BTreeMap::new();
    for f in &files {
        sources.insert(
            module_of(&root, f),
            code_of(&std::fs::read_to_string(f).unwrap()),
        );
    }
    let modules: BTreeSet<Module> = sources.keys().cloned().collect();
    // test-only files
    let mut test_only = BTreeSet::new();
    for (m, code) in &sources {
        for t in child_modules(code).1 {
            let mut c = m.clone();
            c.push(t);
            test_only.insert(c);
        }
    }
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (m, code) in &sources {
        if test_only.iter().any(|t| m.starts_with(t)) {
            continue;
        }
        let children = child_modules(code).0;
        for p in paths_in(code, &children) {
            if let Some(t) = resolve(m, &p, &children, &modules) {
                if &t != m && !t.is_empty() && !test_only.contains(&t) {
                    edges.entry(m.clone()).or_default().insert(t);
                }
            }
        }
    }
    Crate { edges }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct T<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(t: &mut T, v: &Module) {
        let i = t.index.len();
        t.index.insert(v.clone(), i);
        t.low.insert(v.clone(), i);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        for w in t.edges.get(v).cloned().unwrap_or_default() {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let l = t.low[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            } else if t.on.contains(&w) {
                let l = t.index[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(&w);
                let done = &w == v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<Module> = edges
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a.clone()).chain(bs.iter().cloned()))
        .collect();
    for n in nodes {
        if !t.index.contains_key(&n) {
            visit(&mut t, &n);
        }
    }
    t.out
}

fn name(m: &Module) -> String {
    m.join("::")
}

#[test]
fn no_source_file_imports_itself_through_others() {
    let c = crate_graph();
    let found: Vec<String> = cycles(&c.edges)
        .iter()
        .map(|comp| {
            let mut names: Vec<String> = comp.iter().map(name).collect();
            names.sort();
            names.join(" -> ")
        })
        .collect();
    assert!(found.is_empty(), "module cycles:\n  {}", found.join("\n  "));
}

#[test]
fn top_level_modules_use_only_the_layers_below() {
    let c = crate_graph();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (from, tos) in &c.edges {
        let Some(top) = from.first() else { continue };
        if top == "main" {
            continue;
        }
        let r = rank(top).unwrap_or_else(|| panic!("module `{top}` is not in LAYERS"));
        for to in tos {
            let t = &to[0];
            let rt = rank(t).unwrap_or_else(|| panic!("module `{t}` is not in LAYERS"));
            if t != top && rt > r {
                wrong.push(format!(
                    "{} uses {} ({top} is below {t})",
                    name(from),
                    name(to)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layering violations:\n  {}",
        wrong.join("\n  ")
    );
}

/// The checker finds what it looks for (a guard against a parser that sees nothing).
#[test]
fn the_checker_sees_the_crate() {
    let c = crate_graph();
    let ir_op = vec!["ir".to_string(), "op".to_string()];
    let uses_ir_op = c.edges.values().filter(|t| t.contains(&ir_op)).count();
    assert!(uses_ir_op > 20, "only {uses_ir_op} modules use ir::op");
    let mut e = BTreeMap::new();
    let (a, b) = (vec!["a".to_string()], vec!["b".to_string()]);
    e.insert(a.clone(), BTreeSet::from([b.clone()]));
    e.insert(b, BTreeSet::from([a]));
    assert_eq!(cycles(&e).len(), 1);
    assert_eq!(expand("super::{a::B, c::{d, e as f}}").len(), 3);
}
