//! The IR graph: a `petgraph` StableDiGraph of ops. An edge runs from an operand to its user
//! and carries the operand index. Every node has a unique name (Keras' layer names,
//! `conv2d.kernel` for params) and one static output type. Weights are `param` nodes naming
//! tensors of a [`crate::ir::ParamStore`]; they are never copied into nodes.

use super::infer::infer_type;
use super::op::Op;
use super::types::TensorType;
use crate::error::{Error, Result};
use crate::ir::op::ModelOp;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// A node's index in its graph: stays valid when other nodes are removed (a
/// `StableDiGraph` index), and means nothing in another graph.
pub type NodeId = NodeIndex;

/// One op with its name and output type.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The operation and its attributes; operands are the node's incoming edges.
    pub op: Op,
    /// The node's name, unique in the graph (a layer name, or the param name for `param` nodes).
    /// Change it with [`Graph::rename`], which keeps the name index in step.
    pub name: String,
    /// The static type of the node's single output.
    pub ty: TensorType,
}

/// A named graph output.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// The output's name (the `.qir` output name and the exported signature output); it
    /// need not match the node's name.
    pub name: String,
    /// The node whose value the output returns.
    pub node: NodeId,
}

/// A state write-back of a train-step graph: after the step, param `param` takes the value
/// of `node` (new weights, optimizer moments, observer ranges, BatchNorm statistics).
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The name of the param (in the graph and the [`crate::ir::ParamStore`]) that is overwritten.
    pub param: String,
    /// The node computing the param's new value; it has the param's type.
    pub node: NodeId,
}

/// A dataflow graph of [`Node`]s with ordered operands, named inputs (in declaration order),
/// named outputs and, for train-step graphs, [`Update`]s. Node names are unique.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The model's name (errors name it; `.qir` and exports carry it).
    pub name: String,
    g: StableDiGraph<Node, usize>,
    inputs: Vec<NodeId>,
    outputs: Vec<Output>,
    updates: Vec<Update>,
    by_name: HashMap<String, NodeId>,
    /// Params training leaves as they are (Keras' non-trainable weights, preprocessing
    /// constants); `.qir` marks them `frozen`.
    frozen: BTreeSet<String>,
    /// Params whose initial values are not their op's default (`.qir`: `he_normal`).
    initializers: BTreeMap<String, Initializer>,
}

/// How a param starts when a graph's weights are initialized ([`crate::ir::builder`]); a
/// param without one gets its op's Keras default (Glorot uniform kernels, zero biases, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Initializer {
    /// `glorot_uniform` (Keras' default): `U(-l, l)`, `l = sqrt(6 / (fan_in + fan_out))`.
    #[default]
    GlorotUniform,
    /// `he_normal`: a normal of standard deviation `sqrt(2 / fan_in) / 0.8796…`, truncated
    /// at two standard deviations (Keras' `VarianceScaling(2, "fan_in", "truncated_normal")`).
    HeNormal,
}

impl Initializer {
    /// The spelling in `.qir` and Keras (`glorot_uniform`, `he_normal`).
    pub fn name(self) -> &'static str {
        match self {
            Initializer::GlorotUniform => "glorot_uniform",
            Initializer::HeNormal => "he_normal",
        }
    }

    /// Parses [`Initializer::name`]'s spelling.
    pub fn parse(s: &str) -> Option<Initializer> {
        [Initializer::GlorotUniform, Initializer::HeNormal]
            .into_iter()
            .find(|i| i.name() == s)
    }
}

impl Graph {
    /// An empty graph named `name`.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// An empty graph with room for `nodes` nodes and `edges` operand edges, so a graph of
    /// known size (a parsed file) is built without the peaks of growing its tables.
    pub fn with_capacity(name: impl Into<String>, nodes: usize, edges: usize) -> Graph {
        let mut by_name = HashMap::new();
        by_name.reserve(nodes);
        Graph {
            name: name.into(),
            g: StableDiGraph::with_capacity(nodes, edges),
            by_name,
            ..Graph::default()
        }
    }

    // ---- building ----------------------------------------------------------------------

    /// Adds a graph input (its first dimension is the batch).
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> Result<NodeId> {
        let id = self.insert(Op::Model(ModelOp::Input), name.into(), ty)?;
        self.inputs.push(id);
        Ok(id)
    }

    /// The node of param `name`, created with type `ty` if the graph has none yet.
    pub fn param(&mut self, name: impl Into<String>, ty: TensorType) -> Result<NodeId> {
        let name = name.into();
        if let Some(&id) = self.by_name.get(&name) {
            let node = &self.g[id];
            if node.op != Op::Model(ModelOp::Param) || node.ty != ty {
                return Err(self.graph_err(format!(
                    "param `{name}` of type {ty} clashes with node `{name}` ({}, {})",
                    node.op.name(),
                    node.ty
                )));
            }
            return Ok(id);
        }
        self.insert(Op::Model(ModelOp::Param), name, ty)
    }

    /// Marks param `name` as frozen: training leaves it as it is (it is still quantized and
    /// exported like any weight).
    pub fn freeze(&mut self, name: &str) -> Result<()> {
        match self.by_name.get(name) {
            Some(&id) if self.g[id].op == Op::Model(ModelOp::Param) => {
                self.frozen.insert(name.to_string());
                Ok(())
            }
            _ => Err(self.graph_err(format!("cannot freeze `{name}`: it is not a param"))),
        }
    }

    /// Gives param `name` the initializer `init` (the default one is not recorded).
    pub fn set_initializer(&mut self, name: &str, init: Initializer) -> Result<()> {
        match self.by_name.get(name) {
            Some(&id) if self.g[id].op == Op::Model(ModelOp::Param) => {
                if init == Initializer::default() {
                    self.initializers.remove(name);
                } else {
                    self.initializers.insert(name.to_string(), init);
                }
                Ok(())
            }
            _ => Err(self.graph_err(format!(
                "cannot give `{name}` an initializer: it is not a param"
            ))),
        }
    }

    /// The initializer of param `name` ([`Initializer::GlorotUniform`] unless set).
    pub fn initializer(&self, name: &str) -> Initializer {
        self.initializers.get(name).copied().unwrap_or_default()
    }

    /// Whether param `name` is frozen.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.contains(name)
    }

    /// The frozen params that are still in the graph, by name.
    pub fn frozen(&self) -> impl Iterator<Item = &str> {
        self.frozen
            .iter()
            .filter(|n| self.by_name.contains_key(n.as_str()))
            .map(String::as_str)
    }

    /// Adds an op, inferring its type from its operands.
    pub fn add(&mut self, op: Op, name: impl Into<String>, operands: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.g[o].ty).collect();
        let ty = infer_type(&op, &tys).map_err(|e| Error::op(&name, op.name(), e))?;
        self.add_typed(op, name, operands, ty)
    }

    /// Adds an op with a given type (the parser; the verifier checks it).
    pub fn add_typed(
        &mut self,
        op: Op,
        name: impl Into<String>,
        operands: &[NodeId],
        ty: TensorType,
    ) -> Result<NodeId> {
        let id = self.insert(op, name.into(), ty)?;
        for (i, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, id, i);
        }
        Ok(id)
    }

    fn insert(&mut self, op: Op, name: String, ty: TensorType) -> Result<NodeId> {
        if name.is_empty() {
            return Err(self.graph_err(format!("a {} node has an empty name", op.name())));
        }
        if let Some(&other) = self.by_name.get(&name) {
            return Err(self.graph_err(format!(
                "two nodes are named `{name}`: the {} and the {}; names are unique across \
                 params, inputs and ops",
                self.g[other].op.name(),
                op.name()
            )));
        }
        let id = self.g.add_node(Node {
            op,
            name: name.clone(),
            ty,
        });
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// Appends an output named `name` returning `node`; outputs keep insertion order.
    pub fn add_output(&mut self, name: impl Into<String>, node: NodeId) {
        self.outputs.push(Output {
            name: name.into(),
            node,
        });
    }

    /// Appends a state write-back: after a step, param `param` takes `node`'s value.
    pub fn add_update(&mut self, param: impl Into<String>, node: NodeId) {
        self.updates.push(Update {
            param: param.into(),
            node,
        });
    }

    /// A name not yet used in the graph: `base`, else `base_1`, `base_2`, …
    pub fn unique_name(&self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.by_name.contains_key(n))
            .expect("an unused name exists")
    }

    // ---- reading -----------------------------------------------------------------------

    /// The node `id`; panics if it was removed or belongs to another graph.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    /// The node `id`, mutably (to edit its op or type; call [`Graph::reinfer`] after an attribute
    /// change). Panics if `id` was removed.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id]
    }

    /// Whether `id` is a node of this graph (not removed).
    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    /// The node named `name`, if any.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// The input nodes in declaration order (the order executors and exports take them).
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// The named outputs in declaration order.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// The state write-backs of a train-step graph; empty for inference graphs.
    pub fn updates(&self) -> &[Update] {
        &self.updates
    }

    /// Every node, live or dead, in index order (see [`Graph::canonical_order`] for a stable,
    /// dependency-respecting order).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    /// The number of nodes, including dead ones [`Graph::dce`] would remove.
    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Operands of `id`, in operand order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut ops: Vec<(usize, NodeId)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        ops.sort();
        ops.into_iter().map(|(_, n)| n).collect()
    }

    /// Operand `i` of `id`.
    pub fn operand(&self, id: NodeId, i: usize) -> Option<NodeId> {
        self.g
            .edges_directed(id, Direction::Incoming)
            .find(|e| *e.weight() == i)
            .map(|e| e.source())
    }

    /// Users of `id` with the operand index they use it at, in a deterministic order.
    pub fn users(&self, id: NodeId) -> Vec<(NodeId, usize)> {
        let mut us: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        us.sort();
        us
    }

    /// Number of uses of `id` by ops, outputs and updates.
    pub fn use_count(&self, id: NodeId) -> usize {
        self.g.edges_directed(id, Direction::Outgoing).count()
            + self.outputs.iter().filter(|o| o.node == id).count()
            + self.updates.iter().filter(|u| u.node == id).count()
    }

    /// Param nodes by name.
    pub fn params(&self) -> BTreeMap<String, NodeId> {
        self.g
            .node_indices()
            .filter(|&n| self.g[n].op == Op::Model(ModelOp::Param))
            .map(|n| (self.g[n].name.clone(), n))
            .collect()
    }

    /// The canonical order of the live graph: inputs in declaration order, then a
    /// post-order walk from the outputs and updates that visits operands in operand order,
    /// then the params that updates write but nothing reads. It does not depend on node
    /// indices, so dumps are stable and diffable.
    pub fn canonical_order(&self) -> Vec<NodeId> {
        let mut order = Vec::with_capacity(self.g.node_count());
        let mut seen = HashSet::new();
        for &i in &self.inputs {
            if seen.insert(i) {
                order.push(i);
            }
        }
        let roots: Vec<NodeId> = self
            .outputs
            .iter()
            .map(|o| o.node)
            .chain(self.updates.iter().map(|u| u.node))
            .chain(self.updates.iter().filter_map(|u| self.find(&u.param)))
            .collect();
        for root in roots {
            // iterative post-order: (node, expanded?)
            let mut stack = vec![(root, false)];
            while let Some((n, expanded)) = stack.pop() {
                if expanded {
                    if seen.insert(n) {
                        order.push(n);
                    }
                    continue;
                }
                if seen.contains(&n) {
                    continue;
                }
                stack.push((n, true));
                for o in self.operands(n).into_iter().rev() {
                    if !seen.contains(&o) {
                        stack.push((o, false));
                    }
                }
            }
        }
        order
    }

    /// A topological order of every node (live or not); `Err` names a node on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        petgraph::algo::toposort(&self.g, None).map_err(|c| {
            self.graph_err(format!(
                "a cycle runs through node `{}`",
                self.g[c.node_id()].name
            ))
        })
    }

    // ---- editing -----------------------------------------------------------------------

    /// Points every user, output and update of `old` at `new` — except `new` itself, so
    /// a node inserted after `old` (`new = fake_quant(old)`) keeps reading it.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        for (user, i) in self.users(old) {
            if user != new {
                self.set_operand(user, i, new);
            }
        }
        for o in &mut self.outputs {
            if o.node == old {
                o.node = new;
            }
        }
        for u in &mut self.updates {
            if u.node == old {
                u.node = new;
            }
        }
    }

    /// Replaces operand `i` of `user` with `new`.
    pub fn set_operand(&mut self, user: NodeId, i: usize, new: NodeId) {
        let old: Vec<_> = self
            .g
            .edges_directed(user, Direction::Incoming)
            .filter(|e| *e.weight() == i)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        self.g.add_edge(new, user, i);
    }

    /// Renames a node (its name must be free).
    pub fn rename(&mut self, id: NodeId, name: impl Into<String>) -> Result<()> {
        let name = name.into();
        if self.g[id].name == name {
            return Ok(());
        }
        if self.by_name.contains_key(&name) {
            return Err(self.graph_err(format!("two nodes are named `{name}`")));
        }
        let old = std::mem::replace(&mut self.g[id].name, name.clone());
        self.by_name.remove(&old);
        self.by_name.insert(name, id);
        Ok(())
    }

    /// Removes a node and its edges; it must not be an input, output or update.
    pub fn remove_node(&mut self, id: NodeId) {
        if let Some(node) = self.g.remove_node(id) {
            self.by_name.remove(&node.name);
            self.inputs.retain(|&i| i != id);
        }
    }

    /// Removes every node that no output or update depends on (inputs stay).
    pub fn dce(&mut self) -> usize {
        let live: HashSet<NodeId> = self.canonical_order().into_iter().collect();
        let dead: Vec<NodeId> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &d in &dead {
            self.remove_node(d);
        }
        dead.len()
    }

    /// Re-infers every node's type in topological order (after an attribute edit).
    pub fn reinfer(&mut self) -> Result<()> {
        for id in self.topo_order()? {
            let node = &self.g[id];
            if matches!(
                node.op,
                Op::Model(ModelOp::Input) | Op::Model(ModelOp::Param)
            ) {
                continue;
            }
            let operands = self.operands(id);
            let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.g[o].ty).collect();
            let ty =
                infer_type(&node.op, &tys).map_err(|e| Error::op(&node.name, node.op.name(), e))?;
            self.g[id].ty = ty;
        }
        Ok(())
    }

    /// Sets every input's batch (first) dimension to `batch` and re-infers all types.
    pub fn rebatch(&mut self, batch: usize) -> Result<()> {
        for &i in &self.inputs.clone() {
            // scalar inputs (a step counter, a learning rate) have no batch
            if let Some(d) = self.g[i].ty.shape.first_mut() {
                *d = batch;
            }
        }
        self.reinfer()
    }

    /// The batch size: the first dimension of the first non-scalar input.
    pub fn batch(&self) -> Option<usize> {
        self.inputs
            .iter()
            .find_map(|&i| self.g[i].ty.shape.first().copied())
    }

    pub(crate) fn graph_err(&self, msg: String) -> Error {
        Error::Graph {
            graph: self.name.clone(),
            msg,
        }
    }

    /// Removes an output by name.
    pub fn remove_output(&mut self, name: &str) {
        self.outputs.retain(|o| o.name != name);
    }
}
