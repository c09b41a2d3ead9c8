//! The ONNX front end: an `.onnx` file (opsets 7 to 21) becomes a graph IR [`Graph`] and its
//! weights ([`TensorMap`], by constant name).
//!
//! The pipeline: [`proto`] decodes the protobuf; [`tensors`] decodes initializers (raw, typed
//! or external data); `Importer` walks the nodes in dependency order and translates each
//! (`ops` for operators on activations, `fold` for the shape arithmetic exporters emit,
//! evaluated at import). What must hold of the result:
//!
//! - **Layout.** ONNX activations are NCHW; the IR's are NHWC. Each imported value remembers how
//!   its ONNX axes map to the IR value's axes (`Act::perm`), so an ONNX `Transpose` costs
//!   nothing (tf2onnx's NHWC-input transpose pair folds away), convolution weights are transposed
//!   at import (OIHW to HWIO), and a real layout change is only emitted, as an IR `transpose`
//!   node named `<value>/to_nhwc` or `<value>/to_file_layout`, where an input in NCHW meets the
//!   first convolution or where a 4-D output leaves in the file's layout. [`Imported::notes`]
//!   says where that happened.
//! - **Shapes.** Every dimension is fixed at import: a symbolic input dimension takes its value
//!   from [`ImportOptions::input_shape`] (in the file's layout), or the import fails naming the
//!   input, the axis and the option that fixes it.
//! - **Names.** IR names are the ONNX value and initializer names, spelled as in the file (the
//!   text form quotes those outside its bare grammar: `%"onnx::Conv_12"`), made unique with a
//!   `_2` suffix where ONNX reuses a name for a transformed weight; [`Imported::outputs`] maps
//!   each ONNX output name to its IR value.
//! - **Errors.** A file that is not an ONNX model, an operator or attribute outside the supported
//!   set, a non-float32 tensor, a cycle or an undefined input is an [`Error::Format`] naming the
//!   file, the node, its op type and the opset; nothing panics on any input bytes.

mod fold;
mod ops;
pub mod proto;
pub mod tensors;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::graph::{Const, ConstDef, Graph, NameText, Op, TensorType, ValueId};
use crate::{Error, Result, Tensor, TensorMap};
use proto::{GraphProto, NodeProto, data_type};
use tensors::{ConstVal, ModelDir};

/// How to import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// The input's shape in the file's layout (`N,C,H,W` for an NCHW model): fixes the
    /// dimensions the file leaves symbolic, and must agree with those it fixes.
    pub input_shape: Option<Vec<usize>>,
}

/// An imported model.
#[derive(Clone, Debug)]
pub struct Imported {
    pub graph: Graph,
    /// The value of every parameter constant of `graph`.
    pub params: TensorMap,
    /// `(ONNX output name, IR value name)` in the file's output order.
    pub outputs: Vec<(String, String)>,
    /// `(ONNX input name, its shape in the file's layout)`, as fixed at import.
    pub inputs: Vec<(String, Vec<usize>)>,
    /// Where layouts were changed, one sentence each (for `--emit ir` and stderr).
    pub notes: Vec<String>,
}

/// The IR permutation of a value whose ONNX layout is NCHW and IR layout NHWC: ONNX axis `i` is
/// IR axis `NCHW_AS_NHWC[i]`.
const NCHW_AS_NHWC: [usize; 4] = [0, 3, 1, 2];

/// Reads and imports an `.onnx` file; external data is looked up next to it.
pub fn read(path: &Path, options: &ImportOptions) -> Result<Imported> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    import(&bytes, path, model_dir(path), options)
}

/// The directory external data of the model at `path` is read from.
pub fn model_dir(path: &Path) -> Option<&Path> {
    path.parent().map(|d| {
        if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        }
    })
}

/// Imports a model from bytes; `path` names it in messages, `dir` is where external data lives
/// (`None`: a model that references external data is an error).
pub fn import(
    bytes: &[u8],
    path: &Path,
    dir: ModelDir<'_>,
    options: &ImportOptions,
) -> Result<Imported> {
    let format = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let model = proto::decode_model(bytes)
        .map_err(|e| format(format!("not an ONNX model (protobuf decoding failed: {e})")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| format("not an ONNX model (no ai.onnx opset import)".into()))?;
    if !(7..=21).contains(&opset) {
        return Err(format(format!(
            "opset {opset} is not supported (mnv2c reads opsets 7 to 21)"
        )));
    }
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| format("not an ONNX model (no graph)".into()))?;
    let name = g.name.clone().unwrap_or_default();
    let mut imp = Importer {
        path,
        dir,
        opset,
        graph: Graph::new(graph_name(&name)),
        params: TensorMap::new(),
        vals: HashMap::new(),
        used: HashSet::new(),
        notes: Vec::new(),
    };
    imp.initializers(g)?;
    let inputs = imp.inputs(g, options)?;
    imp.nodes(g)?;
    let outputs = imp.outputs(g)?;
    crate::graph::verify(&imp.graph)?;
    Ok(Imported {
        graph: imp.graph,
        params: imp.params,
        outputs,
        inputs,
        notes: imp.notes,
    })
}

/// An activation: an IR value and how the ONNX axes map onto it (ONNX axis `i` is IR axis
/// `perm[i]`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Act {
    pub id: ValueId,
    pub perm: Vec<usize>,
}

/// Work that is folded into the value's consumer, or materialised when it cannot be.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Pending {
    /// Zero padding of H and W, `[top, left, bottom, right]`, folded into the next convolution.
    Pad { act: Act, pads: [usize; 4] },
    /// `x * scale[c] + shift[c]` per channel (Mul/Add/Sub/Div by constants, chained), emitted as
    /// one `batch_norm` (mean 0, variance 1, epsilon 0) that the passes fold into a conv.
    Affine {
        act: Act,
        scale: Vec<f32>,
        shift: Vec<f32>,
    },
}

/// What an ONNX value name stands for during import.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Act(Act),
    Const(ConstVal),
    Pending(Pending),
}

pub(crate) struct Importer<'a> {
    path: &'a Path,
    dir: ModelDir<'a>,
    pub opset: i64,
    pub graph: Graph,
    pub params: TensorMap,
    vals: HashMap<String, Val>,
    /// IR names handed out (values and constants share one space: lowering names buffers by them).
    used: HashSet<String>,
    pub notes: Vec<String>,
}

/// An ONNX name as an IR name: the same spelling (printed quoted when it is not a bare name),
/// control characters replaced by `_`, `v` for an empty name.
fn ir_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if s.is_empty() { "v".into() } else { s }
}

/// A graph name for the header (`graph NAME {`), which takes an identifier.
fn graph_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    match s.chars().next() {
        None => "onnx".into(),
        Some(c) if c.is_ascii_digit() => format!("_{s}"),
        Some(_) => s,
    }
}

impl Importer<'_> {
    /// An error about the file as a whole.
    pub fn format(&self, message: impl Into<String>) -> Error {
        Error::Format {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }

    /// An error about one node: `node 'NAME' (OpType, opset N): message`.
    pub fn node_error(&self, n: &NodeProto, message: impl std::fmt::Display) -> Error {
        let name = n.name.as_deref().filter(|s| !s.is_empty());
        let shown = name.or(n.output.first().map(String::as_str)).unwrap_or("?");
        self.format(format!(
            "node '{shown}' ({}, opset {}): {message}",
            n.op_type.as_deref().unwrap_or("?"),
            self.opset
        ))
    }

    /// A fresh IR name derived from an ONNX name.
    pub fn fresh(&mut self, base: &str) -> String {
        let base = ir_name(base);
        let mut name = base.clone();
        let mut k = 2;
        while self.used.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// Declares a parameter constant with its value; returns its IR name.
    pub fn param(&mut self, base: &str, dims: Vec<usize>, data: Vec<f32>) -> Result<String> {
        let name = self.fresh(base);
        let t = Tensor::new(dims.clone(), data)
            .map_err(|e| self.format(format!("constant '{base}': {e}")))?;
        self.graph.add_const(
            name.clone(),
            Const {
                ty: TensorType::new(dims),
                def: ConstDef::Param,
            },
        )?;
        self.params.insert(name.clone(), t);
        Ok(name)
    }

    /// Adds a typed IR node named after `base`.
    pub fn node(&mut self, base: &str, op: Op, operands: &[ValueId]) -> Result<ValueId> {
        let name = self.fresh(base);
        self.graph.add_typed(name, op, operands)
    }

    pub fn val(&self, name: &str) -> Option<&Val> {
        self.vals.get(name)
    }

    pub fn set(&mut self, name: &str, v: Val) {
        self.vals.insert(name.to_string(), v);
    }

    /// The ONNX dims of an activation.
    pub fn dims(&self, a: &Act) -> Vec<usize> {
        let ir = &self.graph.node(a.id).ty.dims;
        a.perm.iter().map(|&p| ir[p]).collect()
    }

    /// `a` with IR layout `want` (ONNX axis `i` at IR axis `want[i]`), inserting an IR transpose
    /// named `<base>/<what>` when the layout differs.
    pub fn relayout(&mut self, a: Act, want: &[usize], base: &str, what: &str) -> Result<Act> {
        if a.perm == want {
            return Ok(a);
        }
        // New IR axis want[i] holds ONNX axis i, which is old IR axis a.perm[i].
        let mut p = vec![0; want.len()];
        for (i, &w) in want.iter().enumerate() {
            p[w] = a.perm[i];
        }
        let ir_name = self.graph.node(a.id).name.clone();
        let id = self.node(&format!("{base}/{what}"), Op::Transpose(p.clone()), &[a.id])?;
        let new_name = self.graph.node(id).name.clone();
        self.notes.push(format!(
            "layout: %{} = transpose(%{}) {{perm = {p:?}}} changes '{base}' from {} to {}",
            NameText(&new_name),
            NameText(&ir_name),
            layout_name(&a.perm),
            layout_name(want)
        ));
        Ok(Act {
            id,
            perm: want.to_vec(),
        })
    }

    fn initializers(&mut self, g: &GraphProto) -> Result<()> {
        for t in &g.initializer {
            let name = t.name.clone().unwrap_or_default();
            let v = tensors::decode(t, self.dir)
                .map_err(|m| self.format(format!("initializer '{name}' {m}")))?;
            self.set(&name, Val::Const(v));
        }
        Ok(())
    }

    /// Declares the graph inputs (those that are not initializers), fixing symbolic dims.
    fn inputs(
        &mut self,
        g: &GraphProto,
        options: &ImportOptions,
    ) -> Result<Vec<(String, Vec<usize>)>> {
        let mut out = Vec::new();
        for vi in &g.input {
            let name = vi.name.clone().unwrap_or_default();
            if self.vals.contains_key(&name) {
                continue; // an initializer listed as an input (IR version < 4)
            }
            let tt = vi
                .r#type
                .as_ref()
                .and_then(|t| t.tensor_type.as_ref())
                .ok_or_else(|| self.format(format!("input '{name}' is not a tensor")))?;
            let code = tt.elem_type.unwrap_or(0);
            if code != data_type::FLOAT {
                return Err(self.format(format!(
                    "input '{name}' has element type {} (code {code}); mnv2c compiles float32 models",
                    data_type::name(code)
                )));
            }
            let dims = self.input_dims(&name, tt.shape.as_ref(), options.input_shape.as_deref())?;
            let ir = self.fresh(&name);
            let id = self
                .graph
                .add_node(ir, Op::Input, TensorType::new(dims.clone()), &[]);
            let perm = (0..dims.len()).collect();
            self.set(&name, Val::Act(Act { id, perm }));
            out.push((name, dims));
        }
        if out.len() != 1 {
            return Err(self.format(format!(
                "the model has {} inputs; mnv2c compiles models with exactly one",
                out.len()
            )));
        }
        Ok(out)
    }

    fn input_dims(
        &self,
        name: &str,
        shape: Option<&proto::TensorShapeProto>,
        given: Option<&[usize]>,
    ) -> Result<Vec<usize>> {
        let dims = shape.map(|s| s.dim.as_slice()).unwrap_or_default();
        if let Some(given) = given
            && given.len() != dims.len()
        {
            return Err(Error::Usage(format!(
                "--input-shape {given:?} has rank {}, but input '{name}' of {} has rank {}",
                given.len(),
                self.path.display(),
                dims.len()
            )));
        }
        let mut out = Vec::new();
        for (axis, d) in dims.iter().enumerate() {
            let fixed = d.dim_value.filter(|&v| v > 0).map(|v| v as usize);
            let want = given.map(|g| g[axis]);
            match (fixed, want) {
                (Some(f), Some(w)) if f != w => {
                    return Err(Error::Input(format!(
                        "input '{name}' of {} has dimension {axis} = {f}, but the given input shape says {w}",
                        self.path.display()
                    )));
                }
                (_, Some(0)) => {
                    return Err(Error::Usage(format!(
                        "input '{name}': dimension {axis} must be at least 1"
                    )));
                }
                (Some(f), _) | (None, Some(f)) => out.push(f),
                (None, None) => {
                    let sym = d.dim_param.clone().filter(|s| !s.is_empty());
                    let what = sym.map_or("unnamed".to_string(), |s| format!("'{s}'"));
                    return Err(Error::Usage(format!(
                        "input '{name}' of {}: dimension {axis} ({what}) is not fixed by the model; give the input's shape with --input-shape (in the file's layout, e.g. {}) or an --input array",
                        self.path.display(),
                        example_shape(dims)
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Translates the nodes, each once all its inputs are known (files list them in topological
    /// order; a cycle or an input no node or initializer defines is an error naming it).
    fn nodes(&mut self, g: &GraphProto) -> Result<()> {
        let produced: HashSet<&str> = g
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(String::as_str))
            .collect();
        let mut done = vec![false; g.node.len()];
        let mut remaining = g.node.len();
        while remaining > 0 {
            let before = remaining;
            for (i, n) in g.node.iter().enumerate() {
                let ready = n
                    .input
                    .iter()
                    .all(|s| s.is_empty() || self.vals.contains_key(s));
                if !done[i] && ready {
                    self.translate(n)?;
                    done[i] = true;
                    remaining -= 1;
                }
            }
            if remaining == before {
                return Err(self.stuck(g, &done, &produced));
            }
        }
        Ok(())
    }

    /// Why no remaining node can be translated: an input nobody defines, or else a cycle (every
    /// missing input is the output of a node that is itself waiting).
    fn stuck(&self, g: &GraphProto, done: &[bool], produced: &HashSet<&str>) -> Error {
        let waiting = || {
            g.node
                .iter()
                .zip(done)
                .filter(|(_, d)| !**d)
                .flat_map(|(n, _)| {
                    n.input
                        .iter()
                        .filter(|s| !s.is_empty() && !self.vals.contains_key(*s))
                        .map(move |s| (n, s))
                })
        };
        if let Some((n, s)) = waiting().find(|(_, s)| !produced.contains(s.as_str())) {
            return self.node_error(
                n,
                format!("input '{s}' is not defined by any node, initializer or graph input"),
            );
        }
        match waiting().next() {
            Some((n, s)) => self.node_error(
                n,
                format!("input '{s}' can never be computed: the graph has a cycle"),
            ),
            None => self.format("node bookkeeping failed"),
        }
    }

    fn translate(&mut self, n: &NodeProto) -> Result<()> {
        let domain = n.domain.as_deref().unwrap_or("");
        if !domain.is_empty() && domain != "ai.onnx" {
            return Err(self.node_error(
                n,
                format!("operators of domain '{domain}' are not supported"),
            ));
        }
        if fold::try_fold(self, n)? {
            return Ok(());
        }
        ops::translate(self, n)
    }

    /// The graph outputs, each in the file's layout; a 4-D NCHW output gets a transpose back.
    fn outputs(&mut self, g: &GraphProto) -> Result<Vec<(String, String)>> {
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for vi in &g.output {
            let name = vi.name.clone().unwrap_or_default();
            let v = self.val(&name).cloned().ok_or_else(|| {
                self.format(format!("output '{name}' is not computed by any node"))
            })?;
            let a = match v {
                Val::Const(_) => {
                    return Err(self.format(format!(
                        "output '{name}' is a constant; mnv2c compiles outputs computed from the input"
                    )));
                }
                other => self.act(other, &name)?,
            };
            let identity: Vec<usize> = (0..a.perm.len()).collect();
            let a = self.relayout(a, &identity, &name, "to_file_layout")?;
            if self.graph.node(a.id).op == Op::Input {
                return Err(self.format(format!("output '{name}' is the model's input unchanged")));
            }
            ids.push(a.id);
            names.push((name, self.graph.node(a.id).name.clone()));
        }
        if ids.is_empty() {
            return Err(self.format("the graph has no outputs"));
        }
        self.graph.set_outputs(ids);
        Ok(names)
    }
}

/// `NCHW`, `NHWC` or the permutation, for notes.
fn layout_name(perm: &[usize]) -> String {
    match perm {
        [0, 1, 2, 3] => "the file's layout (NCHW)".into(),
        [0, 3, 1, 2] => "NHWC".into(),
        p => format!("axes {p:?}"),
    }
}

/// An example `--input-shape` for an input with these dims: symbolic ones shown as 1.
fn example_shape(dims: &[proto::Dimension]) -> String {
    let items: Vec<String> = dims
        .iter()
        .map(|d| d.dim_value.filter(|&v| v > 0).unwrap_or(1).to_string())
        .collect();
    items.join(",")
}

/// The declared dims of the model's first input (`None` where the file leaves one symbolic),
/// without importing the graph: what a caller needs to choose an input shape.
pub fn declared_input(bytes: &[u8], path: &Path) -> Result<Vec<Option<usize>>> {
    let format = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let model = proto::decode_model(bytes)
        .map_err(|e| format(format!("not an ONNX model (protobuf decoding failed: {e})")))?;
    let g = model
        .graph
        .ok_or_else(|| format("not an ONNX model (no graph)".into()))?;
    let inits: HashSet<&str> = g
        .initializer
        .iter()
        .filter_map(|t| t.name.as_deref())
        .collect();
    let input = g
        .input
        .iter()
        .find(|v| !inits.contains(v.name.as_deref().unwrap_or_default()))
        .ok_or_else(|| format("the graph has no input".into()))?;
    let dims = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    Ok(dims
        .iter()
        .map(|d| {
            d.dim_value
                .and_then(|v| usize::try_from(v).ok())
                .filter(|&v| v > 0)
        })
        .collect())
}

/// Which outputs of a classifier are its logits and its probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    /// IR value names.
    pub logits: String,
    pub probs: String,
    /// Set when mnv2c added the softmax itself (said on stderr by the CLI).
    pub note: Option<String>,
}

impl Imported {
    /// The logits rule: when the first output is a softmax, its input is the logits and its
    /// output the probabilities; otherwise the first output is the logits and a softmax over its
    /// last axis is added for the probabilities (the note says so). The graph's outputs become
    /// `[logits, probs, other outputs...]`.
    pub fn classifier(&mut self) -> Result<Classifier> {
        let g = &mut self.graph;
        let first = *g
            .outputs()
            .first()
            .ok_or_else(|| Error::Usage("the model has no outputs".into()))?;
        let dims = g.node(first).ty.dims.clone();
        if dims.len() != 2 {
            return Err(Error::Usage(format!(
                "the first output %{} has shape {dims:?}; logits and probabilities need [N, classes]",
                g.node(first).name
            )));
        }
        let second = g.outputs().get(1).copied();
        // A Keras import already lists `[logits, softmax(logits)]`.
        let pair = second.filter(|&s| g.node(s).op == Op::Softmax && g.operands(s) == [first]);
        let (logits, probs, note) = if let Some(probs) = pair {
            (first, probs, None)
        } else if g.node(first).op == Op::Softmax {
            (g.operands(first)[0], first, None)
        } else {
            let base = format!("{}/softmax", g.node(first).name);
            let mut name = base.clone();
            let mut k = 2;
            while g.find(&name).is_some() || g.const_decl(&name).is_some() {
                name = format!("{base}_{k}");
                k += 1;
            }
            let probs = g.add_typed(name, Op::Softmax, &[first])?;
            let note = format!(
                "the model does not end in a softmax: its output %{} is taken as the logits, and the probabilities are its softmax over the last axis",
                g.node(first).name
            );
            (first, probs, Some(note))
        };
        let mut outs = vec![logits, probs];
        let rest: Vec<_> = g.outputs().iter().skip(1).copied().collect();
        outs.extend(rest.into_iter().filter(|o| *o != logits && *o != probs));
        g.set_outputs(outs);
        Ok(Classifier {
            logits: g.node(logits).name.clone(),
            probs: g.node(probs).name.clone(),
            note,
        })
    }
}
