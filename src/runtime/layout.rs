//! Where every kernel argument lives at run time: the memory plan applied to a lowered program.
//!
//! [`Layout::new`] plans the activation arena ([`memplan`]) and resolves each buffer a kernel
//! declares to a [`Slot`]: an arena range, a constant buffer, or a graph input read in place
//! (flatten is a view of its operand's storage). Both runners use it: [`CompiledModel`]
//! (the JIT) and the ahead-of-time object's entry function, which walks the same calls.
//!
//! What must hold, and is checked here once per kernel so a planning bug is an error, never
//! aliasing: each kernel writes exactly one buffer, an arena range, passed once; no buffer it
//! reads overlaps that range; it takes at most [`MAX_KERNEL_BUFFERS`] buffers.
//!
//! [`CompiledModel`]: super::CompiledModel

use std::collections::BTreeMap;
use std::ops::Range;

use super::memplan::{self, MemPlan, Request};
use crate::loops::{BufferKind, MAX_KERNEL_BUFFERS, Program, Role};
use crate::{Error, Result};

/// Where a kernel's buffer lives at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A range of the arena (in f32 elements).
    Arena(Range<usize>),
    /// One of the constant buffers ([`Layout::consts`]).
    Const(usize),
    /// The caller's input tensor number `i`.
    Input(usize),
}

/// One kernel call.
#[derive(Debug)]
pub(crate) struct Call {
    /// One slot per buffer the kernel declares, in declaration order.
    pub slots: Vec<Slot>,
    /// The single buffer the kernel writes (an arena range).
    pub output: Range<usize>,
}

/// A value the caller sees: a graph input or output, with its shape and where it lives.
#[derive(Clone, Debug)]
pub(crate) struct Port {
    pub name: String,
    pub dims: Vec<usize>,
    pub slot: Slot,
}

/// The resolved arguments of every kernel, in execution order; see the module doc.
#[derive(Debug)]
pub(crate) struct Layout {
    pub calls: Vec<Call>,
    /// The constant buffers (weights, folded and packed at compile time), by name order.
    pub consts: Vec<Vec<f32>>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub plan: MemPlan,
    /// Arena length in f32 elements.
    pub arena_len: usize,
}

impl Layout {
    /// Plans memory for `program` and resolves every kernel argument. The program's constants
    /// move into the layout (`program.constants` is left empty).
    pub(crate) fn new(program: &mut Program) -> Result<Layout> {
        let plan = plan_arena(program)?;
        let arena_len = plan.arena_bytes / 4;
        let const_names: Vec<String> = program.constants.keys().cloned().collect();
        let consts = const_names
            .iter()
            .map(|name| program.constants.remove(name).unwrap_or_default())
            .collect();
        let slot_of = |name: &str| -> Result<Slot> {
            let storage = program.storage_of(name);
            if let Some(p) = plan.placements.iter().find(|p| p.request.name == storage) {
                let start = p.offset / 4;
                return Ok(Slot::Arena(start..start + p.request.bytes / 4));
            }
            if let Ok(i) = const_names.binary_search_by(|c| c.as_str().cmp(storage)) {
                return Ok(Slot::Const(i));
            }
            if let Some(i) = program.inputs.iter().position(|x| x == storage) {
                return Ok(Slot::Input(i));
            }
            Err(Error::Codegen(format!("buffer {name} has no storage")))
        };
        let calls = program
            .kernels
            .iter()
            .map(|k| {
                let slots = k
                    .buffers
                    .iter()
                    .map(|b| slot_of(&b.name))
                    .collect::<Result<Vec<_>>>()?;
                check_call(k, slots)
            })
            .collect::<Result<Vec<_>>>()?;
        let port = |name: &String| -> Result<Port> {
            let (dims, _) = program
                .buffers
                .get(name)
                .ok_or_else(|| Error::Codegen(format!("no buffer {name}")))?;
            Ok(Port {
                name: name.clone(),
                dims: dims.clone(),
                slot: slot_of(name)?,
            })
        };
        let inputs = program.inputs.iter().map(port).collect::<Result<_>>()?;
        let outputs = program.outputs.iter().map(port).collect::<Result<_>>()?;
        Ok(Layout {
            calls,
            consts,
            inputs,
            outputs,
            plan,
            arena_len,
        })
    }
}

/// Liveness of each activation's storage (written at its kernel, read until its last reader;
/// graph outputs live to the end, step `n`), then the greedy plan.
fn plan_arena(program: &Program) -> Result<MemPlan> {
    let n = program.kernels.len();
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, k) in program.kernels.iter().enumerate() {
        for b in &k.buffers {
            let storage = program.storage_of(&b.name);
            if b.role.writable() {
                first.entry(storage).or_insert(i);
            }
            let l = last.entry(storage).or_insert(i);
            *l = (*l).max(i);
        }
    }
    for o in &program.outputs {
        last.insert(program.storage_of(o), n);
    }
    let mut requests = Vec::new();
    for (name, (dims, kind)) in &program.buffers {
        let is_view = program.views.iter().any(|(v, _)| v == name);
        if *kind != BufferKind::Activation || is_view {
            continue;
        }
        let Some(&f) = first.get(name.as_str()) else {
            return Err(Error::Codegen(format!("{name} is never computed")));
        };
        let bytes = crate::tensor::checked_product(dims)
            .and_then(|e| e.checked_mul(4))
            .ok_or_else(|| {
                Error::TooLarge(format!("{name} needs more bytes than fit in memory"))
            })?;
        requests.push(Request {
            name: name.clone(),
            bytes,
            first: f,
            last: last.get(name.as_str()).copied().unwrap_or(f),
        });
    }
    memplan::plan(&requests)
        .ok_or_else(|| Error::TooLarge("the activation arena's size overflows".into()))
}

/// Checks one kernel's resolved arguments (see the module doc) and finds its output range.
fn check_call(k: &crate::loops::Kernel, slots: Vec<Slot>) -> Result<Call> {
    let written: Vec<&Slot> = k
        .buffers
        .iter()
        .zip(&slots)
        .filter(|(b, _)| b.role.writable())
        .map(|(_, s)| s)
        .collect();
    let [Slot::Arena(output)] = written[..] else {
        return Err(Error::Codegen(format!(
            "kernel '{}' must write exactly one activation",
            k.name
        )));
    };
    let output = output.clone();
    let writes_output = slots.iter().filter(|s| **s == Slot::Arena(output.clone()));
    if slots.len() > MAX_KERNEL_BUFFERS || writes_output.count() != 1 {
        return Err(Error::Codegen(format!(
            "kernel '{}' takes {} buffers (at most {MAX_KERNEL_BUFFERS}, the output once)",
            k.name,
            slots.len()
        )));
    }
    // The memory plan's promise, checked: nothing the kernel reads overlaps its output.
    for (b, s) in k.buffers.iter().zip(&slots) {
        if let (Role::Input, Slot::Arena(r)) = (b.role, s)
            && r.start < output.end
            && output.start < r.end
        {
            return Err(Error::Codegen(format!(
                "kernel '{}': {} overlaps its output in the arena",
                k.name, b.name
            )));
        }
    }
    Ok(Call { slots, output })
}
