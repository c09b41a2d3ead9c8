//! The verifier: the gate every graph passes before a later stage may rely on it.
//!
//! It checks, in this order, and reports the first failure as an [`Error::Verify`] naming the
//! value (`%name`) or constant (`@name`) as printed:
//! 1. names: every node and constant name is valid (`[A-Za-z0-9_./-]+`); node names are unique;
//! 2. constants: every dimension is at least 1 and the byte size fits in `isize`; a derived
//!    constant reads only constants declared before it (so definitions cannot form a cycle), with
//!    the shapes its rule needs (see [`ConstDef`]);
//! 3. nodes: every node has exactly one operand per slot `0..n` of its op; every type has
//!    dimensions of at least 1 and a byte size that fits in `isize`; a non-input node's type is
//!    exactly what [`infer_type`] computes, which checks the op's attributes and the constants it
//!    references (declared, with the right shapes);
//! 4. the graph is acyclic;
//! 5. there is at least one output.
//!
//! The verifier's limits are lowering's limits: a graph it accepts compiles at every `--emit`
//! level (`tests/compile_always.rs`). The conv typing rule carries the two limits that exist
//! only for lowering's sake: a stride whose index range (stride x padded input) overflows, and
//! more than [`MAX_CONV_SEGMENT_PAIRS`](super::op::MAX_CONV_SEGMENT_PAIRS) border nests, are
//! rejected here rather than failing (or taking minutes) in lowering.
//!
//! Not checked: that constants are used (dead ones are `dce`'s job), and weight values (those
//! are checked when weights are bound).

use std::collections::HashSet;

use super::{ConstDef, Graph, Op, TensorType, infer_type, is_valid_name};
use crate::{Error, Result};

/// Checks every invariant of the module doc of [`graph`](super).
pub fn verify(graph: &Graph) -> Result<()> {
    verify_consts(graph)?;
    let mut seen = HashSet::new();
    for id in graph.node_ids() {
        let node = graph.node(id);
        let value = format!("%{}", node.name);
        if !is_valid_name(&node.name) {
            return Err(Error::verify(value, "invalid value name"));
        }
        if !seen.insert(node.name.as_str()) {
            return Err(Error::verify(value, "value name is defined twice"));
        }
        check_type(&node.ty).map_err(|m| Error::verify(&value, m))?;

        let mut edges = graph.operand_edges(id);
        edges.sort();
        let slots: Vec<usize> = edges.iter().map(|&(s, _)| s).collect();
        let expected: Vec<usize> = (0..node.op.num_operands()).collect();
        if slots != expected {
            return Err(Error::verify(
                value,
                format!(
                    "{} takes {} operand(s), has {}",
                    node.op.mnemonic(),
                    node.op.num_operands(),
                    slots.len()
                ),
            ));
        }
        if node.op == Op::Input {
            continue;
        }
        let operand_types: Vec<&TensorType> =
            edges.iter().map(|&(_, src)| &graph.node(src).ty).collect();
        let inferred =
            infer_type(&node.op, &operand_types, graph).map_err(|m| Error::verify(&value, m))?;
        if inferred != node.ty {
            return Err(Error::verify(
                value,
                format!("declared type {} but the operands give {inferred}", node.ty),
            ));
        }
    }
    if let Err(on_cycle) = graph.topo_order() {
        return Err(Error::verify(
            format!("%{}", graph.node(on_cycle).name),
            "is on a cycle: a value depends on itself",
        ));
    }
    if graph.outputs().is_empty() {
        return Err(Error::verify(
            format!("graph {}", graph.name),
            "has no outputs",
        ));
    }
    Ok(())
}

fn check_type(ty: &TensorType) -> Result<(), String> {
    if ty.dims.is_empty() {
        return Err("a tensor needs rank at least 1".into());
    }
    if ty.dims.contains(&0) {
        return Err(format!("type {ty} has a zero-sized dimension"));
    }
    if ty.num_bytes().is_none() {
        return Err(format!("type {ty} is too large: its byte size overflows"));
    }
    Ok(())
}

fn verify_consts(graph: &Graph) -> Result<()> {
    let mut declared: HashSet<&str> = HashSet::new();
    for (name, c) in graph.consts() {
        let at = format!("@{name}");
        if !is_valid_name(name) {
            return Err(Error::verify(at, "invalid constant name"));
        }
        check_type(&c.ty).map_err(|m| Error::verify(&at, m))?;
        for operand in c.def.operands() {
            if !declared.contains(operand) {
                return Err(Error::verify(
                    at,
                    format!("reads @{operand}, which is not declared before it"),
                ));
            }
        }
        check_const_def(graph, &c.ty, &c.def).map_err(|m| Error::verify(&at, m))?;
        declared.insert(name);
    }
    Ok(())
}

fn check_const_def(graph: &Graph, ty: &TensorType, def: &ConstDef) -> Result<(), String> {
    let shape = |n: &str| {
        graph
            .const_decl(n)
            .map(|c| c.ty.clone())
            .ok_or_else(|| format!("@{n} is not declared"))
    };
    let expect = |n: &str, want: &TensorType| -> Result<(), String> {
        let got = shape(n)?;
        if &got == want {
            Ok(())
        } else {
            Err(format!("@{n} has type {got}, expected {want}"))
        }
    };
    let epsilon_ok = |e: f32| {
        if e.is_finite() && e >= 0.0 {
            Ok(())
        } else {
            Err(format!("epsilon must be finite and >= 0, got {e}"))
        }
    };
    match def {
        ConstDef::Param => Ok(()),
        ConstDef::FoldBnWeight {
            weight,
            gamma,
            variance,
            epsilon,
        } => {
            expect(weight, ty)?;
            let [_, _, a, b] = ty.dims[..] else {
                return Err(format!("fold_bn_weight needs a rank-4 weight, got {ty}"));
            };
            let channels = shape(gamma)?;
            // The output channel is the last axis, or (TF depthwise layout) the last two.
            let fits = channels.dims.len() == 1
                && (channels.dims[0] == b || Some(channels.dims[0]) == a.checked_mul(b));
            if !fits {
                return Err(format!(
                    "@{gamma} has type {channels}, which matches no output-channel count of {ty}"
                ));
            }
            expect(variance, &channels)?;
            epsilon_ok(*epsilon)
        }
        ConstDef::FoldBnBias {
            bias,
            gamma,
            beta,
            mean,
            variance,
            epsilon,
        } => {
            if ty.dims.len() != 1 {
                return Err(format!("fold_bn_bias must have rank 1, got {ty}"));
            }
            for n in bias.iter().chain([gamma, beta, mean, variance]) {
                expect(n, ty)?;
            }
            epsilon_ok(*epsilon)
        }
    }
}
