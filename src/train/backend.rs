//! Where a graph runs: [`Backend`] turns a graph and its state into an [`Executor`].

use crate::dist::GroupHandle;
use crate::error::{Error, Result};
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

    /// An executor for a data-parallel train step whose `all_reduce` nodes and BatchNorm
    /// statistics combine over `group` ([`crate::dist`]). Backends that run one process
    /// only accept the group of one.
    fn executor_in(
        &self,
        graph: &Graph,
        state: ParamStore,
        group: &GroupHandle,
    ) -> Result<Box<dyn Executor>> {
        if group.size() == 1 {
            return self.executor(graph, state);
        }
        Err(Error::Usage(format!(
            "{group:?}: this backend runs one process; data-parallel training runs on the JIT \
             (`qatc::jit::Jit`, the default backend of `qatc train`)"
        )))
    }
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
