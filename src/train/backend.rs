//! Where a graph runs: [`Backend`] turns a graph and its state into an [`Executor`].

use crate::error::Result;
use crate::exec::{Executor, InterpExecutor};
use crate::ir::{Graph, ParamStore};

/// Turns a graph and its initial state into an [`Executor`]: the interpreter
/// ([`ReferenceBackend`]), the JIT, or any closure `Fn(&Graph, ParamStore) -> Result<Box<dyn
/// Executor>>`:
///
/// ```
/// use qatc::exec::{Executor, InterpExecutor};
/// use qatc::ir::{Graph, ParamStore};
/// use qatc::train::Backend;
/// let backend = |g: &Graph, state: ParamStore| -> qatc::Result<Box<dyn Executor>> {
///     Ok(Box::new(InterpExecutor::new(g.clone(), state)?))
/// };
/// let _: &dyn Backend = &backend;
/// ```
pub trait Backend {
    /// An executor for `graph` (a train-step or inference graph) that owns `state`, every param
    /// the graph reads or updates.
    fn executor(&self, graph: &Graph, state: ParamStore) -> Result<Box<dyn Executor>>;
}

/// The reference interpreter as a backend (slow, exact: the oracle).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

impl Backend for ReferenceBackend {
    fn executor(&self, graph: &Graph, state: ParamStore) -> Result<Box<dyn Executor>> {
        Ok(Box::new(InterpExecutor::new(graph.clone(), state)?))
    }
}

impl<F> Backend for F
where
    F: Fn(&Graph, ParamStore) -> Result<Box<dyn Executor>>,
{
    fn executor(&self, graph: &Graph, state: ParamStore) -> Result<Box<dyn Executor>> {
        self(graph, state)
    }
}
