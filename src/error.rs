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

    /// A rank of a data-parallel run ([`crate::dist`]) failed, or lost touch with a peer.
    #[error("rank {rank}: {msg}")]
    Distributed {
        /// The rank reporting the failure.
        rank: usize,
        /// What happened, naming the peer rank when one is to blame.
        msg: String,
    },

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

/// Writes a file atomically: to a temporary sibling, flushed to disk, then renamed over the
/// target, so a crash or error never leaves a partial file behind (and a failed write, such
/// as a full disk, removes the temporary file and names the path and the OS error).
///
/// What `path` names is respected: through a symlink the link's target is written (the link
/// stays), a device or pipe (`/dev/stdout`) is written to directly, a directory is refused.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    write_atomic_all(&[(path.as_ref(), bytes)])
}

/// Writes several files that belong together (a `.qir` and its `.safetensors`): every file
/// is first written to a temporary sibling and flushed, and only when all of them are on
/// disk are they renamed into place, so a full disk or a write error changes none of them
/// (the temporary files are removed, the error names the path and the OS error). See
/// [`write_atomic`] for symlinks, devices and directories.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<()> {
    enum Staged {
        /// A device or pipe, written in the commit phase.
        Direct(std::path::PathBuf, usize),
        /// A temporary file to rename over the target.
        Temp(std::path::PathBuf, std::path::PathBuf),
    }
    let mut staged: Vec<Staged> = Vec::with_capacity(files.len());
    let cleanup = |staged: &[Staged]| {
        for s in staged {
            if let Staged::Temp(tmp, _) = s {
                let _ = std::fs::remove_file(tmp);
            }
        }
    };
    for (k, &(path, bytes)) in files.iter().enumerate() {
        let path = match resolve_output(path) {
            Ok(p) => p,
            Err(e) => {
                cleanup(&staged);
                return Err(e);
            }
        };
        let stage = (|| -> Result<Staged> {
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_dir() {
                    return Err(Error::Usage(format!(
                        "{} is a directory: give a file path",
                        path.display()
                    )));
                }
                if !meta.is_file() {
                    // a device or a pipe: no rename, the bytes go where the user pointed
                    return Ok(Staged::Direct(path.clone(), k));
                }
            }
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
            let written = std::fs::File::create(&tmp).and_then(|mut f| {
                std::io::Write::write_all(&mut f, bytes)?;
                f.sync_all()
            });
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(&path, e));
            }
            Ok(Staged::Temp(tmp, path.clone()))
        })();
        match stage {
            Ok(s) => staged.push(s),
            Err(e) => {
                cleanup(&staged);
                return Err(e);
            }
        }
    }
    for (i, s) in staged.iter().enumerate() {
        let done = match s {
            Staged::Direct(path, k) => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, files[*k].1))
                .map_err(|e| Error::io(path, e)),
            Staged::Temp(tmp, path) => std::fs::rename(tmp, path).map_err(|e| Error::io(path, e)),
        };
        if let Err(e) = done {
            cleanup(&staged[i..]);
            return Err(e);
        }
    }
    Ok(())
}

/// The file a write to `path` should replace: `path` itself, or the end of its chain of
/// symlinks (a dangling link's target included), so that links are written through, not
/// replaced.
fn resolve_output(path: &Path) -> Result<std::path::PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(Error::Usage(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("qatc-write-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// `-o link` writes through the link into its target's directory; the link stays a link
    /// (it used to be replaced by a plain file).
    #[cfg(unix)]
    #[test]
    fn a_symlink_is_written_through_not_replaced() {
        let d = scratch("link");
        std::fs::create_dir_all(d.join("real")).unwrap();
        std::fs::write(d.join("real/model.tflite"), b"old").unwrap();
        std::os::unix::fs::symlink("real/model.tflite", d.join("link.tflite")).unwrap();
        write_atomic(d.join("link.tflite"), b"new").unwrap();
        let meta = std::fs::symlink_metadata(d.join("link.tflite")).unwrap();
        assert!(meta.file_type().is_symlink());
        assert_eq!(std::fs::read(d.join("real/model.tflite")).unwrap(), b"new");
        // a dangling link creates its target
        std::os::unix::fs::symlink("real/fresh.bin", d.join("dangling")).unwrap();
        write_atomic(d.join("dangling"), b"x").unwrap();
        assert_eq!(std::fs::read(d.join("real/fresh.bin")).unwrap(), b"x");
        assert!(std::fs::symlink_metadata(d.join("dangling"))
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A device node is written to, never replaced by a regular file.
    #[cfg(unix)]
    #[test]
    fn a_device_is_written_to_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        write_atomic("/dev/null", b"bytes").unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(meta.file_type().is_char_device());
    }

    #[test]
    fn a_directory_is_refused_and_no_temp_file_is_left() {
        let d = scratch("dir");
        let err = write_atomic(&d, b"x").unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        // a write that fails (here: the parent is a file) leaves nothing behind
        std::fs::write(d.join("file"), b"").unwrap();
        assert!(write_atomic(d.join("file/child"), b"x").is_err());
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Files that belong together land together: when the second cannot be written (as on a
    /// full disk), the first is not changed and no temporary file is left (a `.qir` used to
    /// land without its `.safetensors`).
    #[test]
    fn a_pair_is_written_both_or_neither() {
        let d = scratch("pair");
        std::fs::write(d.join("m.safetensors"), b"old weights").unwrap();
        std::fs::write(d.join("blocker"), b"").unwrap();
        let bad = d.join("blocker/m.qir");
        let err = write_atomic_all(&[
            (d.join("m.safetensors").as_path(), b"new weights"),
            (bad.as_path(), b"text"),
        ]);
        assert!(err.is_err());
        assert_eq!(
            std::fs::read(d.join("m.safetensors")).unwrap(),
            b"old weights"
        );
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["blocker", "m.safetensors"]);
        write_atomic_all(&[
            (d.join("m.safetensors").as_path(), b"new weights"),
            (d.join("m.qir").as_path(), b"text"),
        ])
        .unwrap();
        assert_eq!(
            std::fs::read(d.join("m.safetensors")).unwrap(),
            b"new weights"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
