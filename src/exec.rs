//! Running a graph repeatedly with state: the interface the training loop drives, served by
//! the reference interpreter ([`InterpExecutor`]) and by the JIT.
//!
//! An executor owns the graph's parameter state. Each [`Executor::run`] feeds the graph's
//! inputs by name, returns its outputs in graph order, and then applies the graph's
//! `update`s (new weights, optimizer moments, observer ranges) to the state, so a
//! train-step graph run in a loop trains the model.

use crate::error::{Error, Result};
use crate::ir::interp::{self, Value};
use crate::ir::{Graph, ParamStore, Tensor};

/// One input value; its shape is the one the graph declares for that input.
#[derive(Clone, Copy, Debug)]
pub enum Feed<'a> {
    /// f32 elements, row-major (images, the step's `lr` and `step` scalars).
    F32(&'a [f32]),
    /// i32 elements (a train step's class `labels`).
    I32(&'a [i32]),
}

/// A graph compiled or prepared once and run many times, owning its param state; see the
/// module docs. Implemented by [`InterpExecutor`] and the JIT's executor.
pub trait Executor {
    /// Runs the graph once and applies its updates to the state.
    fn run(&mut self, feeds: &[(&str, Feed)]) -> Result<Vec<Tensor>>;
    /// A copy of the current state (every param the graph reads or updates).
    fn params(&self) -> ParamStore;
    /// Replaces state tensors by name; each must exist in the graph with the same shape.
    fn set_params(&mut self, params: &ParamStore) -> Result<()>;
}

/// The reference executor: [`crate::ir::interp`] with a [`ParamStore`].
pub struct InterpExecutor {
    graph: Graph,
    params: ParamStore,
}

impl InterpExecutor {
    /// An executor for `graph` owning `params`; errors if a param the graph declares is missing
    /// or has another shape.
    pub fn new(graph: Graph, params: ParamStore) -> Result<InterpExecutor> {
        params.check_graph(&graph)?;
        Ok(InterpExecutor { graph, params })
    }
}

/// Converts feeds into interpreter values with the shapes `graph` declares.
pub fn feeds_to_values(graph: &Graph, feeds: &[(&str, Feed)]) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for &(name, feed) in feeds {
        let id = graph
            .find(name)
            .filter(|&i| graph.inputs().contains(&i))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "graph `{}` has no input named `{name}`",
                    graph.name
                ))
            })?;
        let ty = &graph.node(id).ty;
        let (len, v) = match feed {
            Feed::F32(d) => (
                d.len(),
                Value::F32(Tensor {
                    shape: ty.shape.clone(),
                    data: d.to_vec(),
                }),
            ),
            Feed::I32(d) => (
                d.len(),
                Value::I32 {
                    shape: ty.shape.clone(),
                    data: d.to_vec(),
                },
            ),
        };
        if len != ty.numel() {
            return Err(Error::node(
                name,
                "input",
                format!("fed {len} values for type {ty}"),
            ));
        }
        out.push((name.to_string(), v));
    }
    Ok(out)
}

impl Executor for InterpExecutor {
    fn run(&mut self, feeds: &[(&str, Feed)]) -> Result<Vec<Tensor>> {
        let values = feeds_to_values(&self.graph, feeds)?;
        let refs: Vec<(&str, Value)> = values
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        let r = interp::run(&self.graph, &self.params, &refs)?;
        for (name, t) in r.updates {
            self.params.insert(name, t);
        }
        r.outputs
            .into_iter()
            .map(|(name, v)| {
                v.into_f32()
                    .ok_or_else(|| Error::Usage(format!("output `{name}` is not f32")))
            })
            .collect()
    }

    fn params(&self) -> ParamStore {
        self.params.clone()
    }

    fn set_params(&mut self, params: &ParamStore) -> Result<()> {
        let declared = self.graph.params();
        for (name, t) in params.iter() {
            let Some(&id) = declared.get(name) else {
                return Err(Error::param(name, "the graph has no such param"));
            };
            if self.graph.node(id).ty.shape != t.shape {
                return Err(Error::param(
                    name,
                    format!(
                        "shape {:?} does not match {}",
                        t.shape,
                        self.graph.node(id).ty
                    ),
                ));
            }
            self.params.insert(name.clone(), t.clone());
        }
        Ok(())
    }
}
