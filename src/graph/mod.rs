//! The graph IR: a dataflow graph of tensor operations on a petgraph `StableDiGraph`.
//!
//! ## What a graph is
//! A [`Graph`] is a set of nodes, each computing exactly one value (a tensor), a table of named
//! constants (the weights), and an ordered list of outputs. Edges run from a value to the nodes
//! that use it; an edge's weight is the operand slot it fills. A node's [`Op`] holds the op's
//! attributes and the names of the constants it reads; its value operands are its incoming
//! edges. The graph is a `StableDiGraph`, so passes can delete nodes without renumbering the rest.
//!
//! ## Invariants (checked by [`verify`](verify::verify), relied on by every later stage)
//! 1. **Operands.** A node has exactly [`Op::num_operands`] incoming edges, one per slot
//!    `0..n`, each from a live node.
//! 2. **Types.** Every type is `f32` with a static shape whose dimensions are all at least 1 and
//!    whose element count (and byte size) fits in `usize`/`isize`. Activations are NHWC.
//!    A node's type is exactly what [`infer_type`] computes from its op and its operands' types;
//!    input nodes carry their declared type.
//! 3. **Acyclic.** The graph is a DAG.
//! 4. **Names.** Node names are unique among nodes, constant names unique among constants (the
//!    two are separate namespaces: `%conv` and `@conv` may coexist); names use only
//!    `[A-Za-z0-9_./-]` and are not empty. Names the compiler makes cannot collide with them
//!    (`docs/ir.md`, "Names"). Names are the stable identity of values: the
//!    front end uses the seed's scopes (`res5_1/pw_linear`), passes derive new names from old.
//! 5. **Outputs.** There is at least one output; each names a live node.
//! 6. **Constants.** Every constant an op references is declared, with the shape its typing rule
//!    requires; a derived constant ([`ConstDef`]) references declared parameters of fitting shapes.
//!
//! ## What a graph does not hold
//! Weight *values*. A parameter constant is bound by name at compile or run time (from a
//! `.safetensors` file or seeded initialisation); a derived constant (what `fold-batchnorm`
//! creates) is an expression over parameters, evaluated when the weights are bound. So the text
//! form is complete, weight-free and round-trips exactly.

pub mod consts;
pub mod interp;
pub mod op;
pub mod parse;
pub mod print;
pub mod verify;

use std::fmt;

use indexmap::IndexMap;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

pub use op::{BatchNorm, ConstTypes, Conv2d, ConvGeometry, Epilogue, Op, Pads, infer_type};
pub use parse::parse;
pub use verify::verify;

/// The handle of a node (a value). Stable across node removal.
pub type ValueId = NodeIndex;

/// A static f32 tensor type; activations are NHWC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dims: Vec<usize>,
}

impl TensorType {
    pub fn new(dims: Vec<usize>) -> TensorType {
        TensorType { dims }
    }

    /// The number of elements, or `None` if it overflows `usize`.
    pub fn num_elements(&self) -> Option<usize> {
        crate::tensor::checked_product(&self.dims)
    }

    /// The size in bytes (f32), or `None` if it does not fit in `isize`.
    pub fn num_bytes(&self) -> Option<usize> {
        self.num_elements()?
            .checked_mul(4)
            .filter(|&b| b <= isize::MAX as usize)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "f32[")?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// One value: its stable name, the op computing it, and its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub ty: TensorType,
}

/// How a constant gets its value.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstDef {
    /// Bound by name from the weights.
    Param,
    /// Batch norm folded into convolution weights:
    /// `w'[.., co] = w[.., co] * gamma[co] / sqrt(variance[co] + epsilon)`, where `co` is the
    /// output channel (the flat index modulo `cout`). Computed in f64, rounded once to f32.
    FoldBnWeight {
        weight: String,
        gamma: String,
        variance: String,
        epsilon: f32,
    },
    /// The bias that batch norm leaves after folding:
    /// `b'[co] = beta[co] + (bias[co] - mean[co]) * gamma[co] / sqrt(variance[co] + epsilon)`,
    /// with `bias = 0` when the conv had none. Computed in f64, rounded once to f32.
    FoldBnBias {
        bias: Option<String>,
        gamma: String,
        beta: String,
        mean: String,
        variance: String,
        epsilon: f32,
    },
}

impl ConstDef {
    /// The constants this definition reads.
    pub fn operands(&self) -> Vec<&str> {
        match self {
            ConstDef::Param => Vec::new(),
            ConstDef::FoldBnWeight {
                weight,
                gamma,
                variance,
                ..
            } => vec![weight, gamma, variance],
            ConstDef::FoldBnBias {
                bias,
                gamma,
                beta,
                mean,
                variance,
                ..
            } => bias
                .as_deref()
                .into_iter()
                .chain([gamma.as_str(), beta, mean, variance])
                .collect(),
        }
    }
}

/// A named constant: its type and how it gets its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Const {
    pub ty: TensorType,
    pub def: ConstDef,
}

/// A dataflow graph; see the module doc for what must hold.
#[derive(Clone, Debug)]
pub struct Graph {
    /// The graph's name, printed in its header.
    pub name: String,
    dag: StableDiGraph<Node, usize>,
    consts: IndexMap<String, Const>,
    outputs: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            dag: StableDiGraph::new(),
            consts: IndexMap::new(),
            outputs: Vec::new(),
        }
    }

    /// Adds a node whose operands fill slots `0..operands.len()` in order. Types are not checked
    /// here: builders call [`infer_type`], and [`verify()`] checks the result.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        ty: TensorType,
        operands: &[ValueId],
    ) -> ValueId {
        let id = self.dag.add_node(Node {
            name: name.into(),
            op,
            ty,
        });
        for (slot, &src) in operands.iter().enumerate() {
            self.dag.add_edge(src, id, slot);
        }
        id
    }

    /// Adds a node typed by [`infer_type`]. The error names the node as printed.
    pub fn add_typed(
        &mut self,
        name: impl Into<String>,
        op: Op,
        operands: &[ValueId],
    ) -> crate::Result<ValueId> {
        let name = name.into();
        let tys: Vec<&TensorType> = operands.iter().map(|&v| &self.dag[v].ty).collect();
        let ty =
            infer_type(&op, &tys, self).map_err(|m| crate::Error::verify(format!("%{name}"), m))?;
        Ok(self.add_node(name, op, ty, operands))
    }

    /// Declares a constant. Fails if the name is taken.
    pub fn add_const(&mut self, name: impl Into<String>, c: Const) -> crate::Result<()> {
        let name = name.into();
        if self.consts.contains_key(&name) {
            return Err(crate::Error::verify(
                format!("@{name}"),
                "constant declared twice",
            ));
        }
        self.consts.insert(name, c);
        Ok(())
    }

    /// Removes a constant declaration (the caller makes sure nothing references it).
    pub fn remove_const(&mut self, name: &str) -> Option<Const> {
        self.consts.shift_remove(name)
    }

    /// The constants in declaration order.
    pub fn consts(&self) -> impl Iterator<Item = (&str, &Const)> {
        self.consts.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn const_decl(&self, name: &str) -> Option<&Const> {
        self.consts.get(name)
    }

    pub fn node(&self, id: ValueId) -> &Node {
        &self.dag[id]
    }

    pub fn node_mut(&mut self, id: ValueId) -> &mut Node {
        &mut self.dag[id]
    }

    pub fn contains(&self, id: ValueId) -> bool {
        self.dag.contains_node(id)
    }

    /// All live nodes, in index (creation) order.
    pub fn node_ids(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.dag.node_indices()
    }

    pub fn num_nodes(&self) -> usize {
        self.dag.node_count()
    }

    /// The node with this name, if any (a linear scan).
    pub fn find(&self, name: &str) -> Option<ValueId> {
        self.dag.node_indices().find(|&i| self.dag[i].name == name)
    }

    /// The operands of a node, ordered by slot.
    pub fn operands(&self, id: ValueId) -> Vec<ValueId> {
        let mut edges: Vec<(usize, ValueId)> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// The operand slots of a node as `(slot, source)`, unsorted and unchecked (for the verifier).
    pub(crate) fn operand_edges(&self, id: ValueId) -> Vec<(usize, ValueId)> {
        self.dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect()
    }

    /// The nodes using `id`, as `(user, slot)`, ordered by user index then slot.
    pub fn users(&self, id: ValueId) -> Vec<(ValueId, usize)> {
        let mut users: Vec<(ValueId, usize)> = self
            .dag
            .edges_directed(id, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        users.sort();
        users
    }

    /// How many uses `id` has: operand slots plus appearances in the output list.
    pub fn num_uses(&self, id: ValueId) -> usize {
        self.dag.edges_directed(id, Direction::Outgoing).count()
            + self.outputs.iter().filter(|&&o| o == id).count()
    }

    /// Replaces a node's operands (all slots) with `operands`.
    pub fn set_operands(&mut self, id: ValueId, operands: &[ValueId]) {
        let old: Vec<_> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.dag.remove_edge(e);
        }
        for (slot, &src) in operands.iter().enumerate() {
            self.dag.add_edge(src, id, slot);
        }
    }

    /// Makes every use of `old` (operands and outputs) a use of `new`.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        let uses: Vec<_> = self
            .dag
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (edge, user, slot) in uses {
            self.dag.remove_edge(edge);
            self.dag.add_edge(new, user, slot);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Removes a node and its edges. The caller makes sure it has no remaining uses.
    pub fn remove_node(&mut self, id: ValueId) -> Option<Node> {
        self.dag.remove_node(id)
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    /// The input nodes, in index order.
    pub fn inputs(&self) -> Vec<ValueId> {
        self.dag
            .node_indices()
            .filter(|&i| self.dag[i].op == Op::Input)
            .collect()
    }

    /// The nodes in a topological order; ties are broken by index, so the order is
    /// deterministic and a parsed graph lists its nodes in file order. `Err` holds a node on a
    /// cycle.
    pub fn topo_order(&self) -> Result<Vec<ValueId>, ValueId> {
        use std::cmp::Reverse;
        use std::collections::{BinaryHeap, HashMap};
        let mut indegree: HashMap<ValueId, usize> = self
            .dag
            .node_indices()
            .map(|i| (i, self.dag.edges_directed(i, Direction::Incoming).count()))
            .collect();
        let mut ready: BinaryHeap<Reverse<ValueId>> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(&i, _)| Reverse(i))
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for e in self.dag.edges_directed(i, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target()).expect("edge to a live node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        if order.len() == indegree.len() {
            Ok(order)
        } else {
            let stuck = self
                .dag
                .node_indices()
                .find(|i| indegree[i] > 0)
                .expect("a node left over");
            Err(stuck)
        }
    }
}

impl ConstTypes for Graph {
    fn const_type(&self, name: &str) -> Option<&TensorType> {
        self.consts.get(name).map(|c| &c.ty)
    }
}

/// Structural equality: same name, constants (in order), and nodes listed in topological order
/// with the same names, ops, types and operands (by name), and the same outputs. Node indices do
/// not matter, so `parse(print(g)) == g`.
impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        let listing = |g: &Graph| {
            let order = g.topo_order().unwrap_or_else(|_| g.node_ids().collect());
            order
                .into_iter()
                .map(|i| {
                    let operands: Vec<String> = g
                        .operands(i)
                        .into_iter()
                        .map(|o| g.node(o).name.clone())
                        .collect();
                    (g.node(i).clone(), operands)
                })
                .collect::<Vec<_>>()
        };
        let outputs = |g: &Graph| {
            g.outputs
                .iter()
                .map(|&o| g.node(o).name.clone())
                .collect::<Vec<_>>()
        };
        self.name == other.name
            && self.consts.len() == other.consts.len()
            && self.consts.iter().eq(other.consts.iter())
            && outputs(self) == outputs(other)
            && listing(self) == listing(other)
    }
}

/// Whether `name` is a valid value or constant name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(is_name_char)
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}
