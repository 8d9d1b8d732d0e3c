//! One error type for the whole crate. Every variant names its culprit (file:line:col,
//! node and op, tensor, step) and, where there is one, the fix. Nothing in qatc panics on
//! user input.

use std::path::{Path, PathBuf};

/// qatc's result: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Defines a context-free error of one domain: what is wrong, in a sentence, before the
/// caller says where (which node, operator, file). `From<String>` and `From<&str>` let a
/// function build it from a message; the caller wraps it with `#[source]` into [`Error`].
#[macro_export]
macro_rules! message_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::error::Error for $name {}

        impl From<String> for $name {
            fn from(msg: String) -> $name {
                $name(msg)
            }
        }

        impl From<&str> for $name {
            fn from(msg: &str) -> $name {
                $name(msg.to_string())
            }
        }
    };
}

message_error! {
    /// What is wrong with an op's operands, attributes or values, before the caller names
    /// the node ([`Error::Op`] wraps it). The IR's shape rules, reference semantics and
    /// attribute parser return it (`qatc::ir::op::OpError`).
    OpError
}

/// Everything that can go wrong in qatc, each naming its culprit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed text input (`.qir`, `.rules`, TOML config).
    #[error("{file}:{line}:{col}: {msg}")]
    Parse {
        /// The file (or the name the text was given).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        col: usize,
        /// What was found and what was expected.
        msg: String,
    },

    /// A node that is wrong: bad arity, shapes, dtypes, attributes, quantization params.
    #[error("node `{node}` ({op}): {msg}")]
    Node {
        /// The node's name.
        node: String,
        /// The op's spelling.
        op: String,
        /// What is wrong.
        msg: String,
    },

    /// An op of a node that is wrong (shapes, attributes, values), from the op's rules.
    #[error("node `{node}` ({op}): {source}")]
    Op {
        /// The node's name.
        node: String,
        /// The op's spelling.
        op: String,
        /// What is wrong.
        #[source]
        source: OpError,
    },

    /// A graph-level problem (no outputs, a cycle, a dangling name).
    #[error("graph `{graph}`: {msg}")]
    Graph {
        /// The graph's name.
        graph: String,
        /// What is wrong.
        msg: String,
    },

    /// A layer or op a pass, the JIT or the exporter does not handle, with what to do.
    #[error("node `{node}` ({op}) is not supported by {what}: {hint}")]
    Unsupported {
        /// The node's name.
        node: String,
        /// The op's spelling.
        op: String,
        /// What refuses it (`the JIT`, `the TFLite exporter`, a scheme).
        what: String,
        /// Why, and what to do instead.
        hint: String,
    },

    /// A parameter that is missing or has the wrong shape.
    #[error("parameter `{name}`: {msg}")]
    Param {
        /// The parameter's name.
        name: String,
        /// What is wrong.
        msg: String,
    },

    /// A file that exists but whose contents are wrong (IDX, safetensors, .tflite, .npy).
    #[error("{}: {msg}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// A file that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Training diverged or failed at a step.
    #[error("training step {step}: {msg}")]
    Training {
        /// The step (0-based, counted over the whole run).
        step: u64,
        /// What happened.
        msg: String,
    },

    /// A pipeline step left the graph in another form than it promises.
    #[error("after pass `{pass}` the graph is not in {form}: {source}")]
    Form {
        /// The pass that just ran.
        pass: String,
        /// The form it promises.
        form: &'static str,
        /// What is wrong, naming the node.
        #[source]
        source: Box<Error>,
    },

    /// The rewriting engine (rules, saturation).
    #[error("rewrite: {0}")]
    Rewrite(String),

    /// The JIT compiler.
    #[error("jit: {0}")]
    Jit(String),

    /// An operator of a TFLite model that the int8 interpreter cannot prepare or run, or
    /// that the importer cannot read.
    #[error("tflite: operator #{index} {op}{output}: {source}")]
    Operator {
        /// The operator's index in the subgraph.
        index: usize,
        /// The operator's name (`CONV_2D`).
        op: String,
        /// ` (output `name`)`, naming its output tensor, or empty.
        output: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A TFLite model that cannot be read, written or run.
    #[error("tflite: {0}")]
    Tflite(String),

    /// A bad command-line or library argument.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A file whose contents are wrong.
    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Error {
        Error::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A node that is wrong.
    pub fn node(node: impl Into<String>, op: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Node {
            node: node.into(),
            op: op.into(),
            msg: msg.into(),
        }
    }

    /// An op error of node `node`.
    pub fn op(node: impl Into<String>, op: impl Into<String>, source: OpError) -> Error {
        Error::Op {
            node: node.into(),
            op: op.into(),
            source,
        }
    }

    /// A parameter that is missing or wrong.
    pub fn param(name: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Param {
            name: name.into(),
            msg: msg.into(),
        }
    }
}

/// Writes a file atomically: to a temporary sibling, then renamed over the target, so a
/// crash or error never leaves a partial file behind.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
