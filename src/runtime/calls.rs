//! Where every kernel argument lives at run time: the memory plan applied to a lowered program.
//!
//! [`CallPlan::new`] plans the activation arena ([`memplan`]) and resolves each buffer a kernel
//! declares to a [`Slot`]: an arena range, a fold window (`runtime::fold`), a constant buffer,
//! or a graph input read in place (flatten is a view of its operand's storage). Both runners use
//! it: [`CompiledModel`] (the JIT) and the ahead-of-time object's entry function, which walks
//! the same calls.
//!
//! What must hold, and is checked here once per kernel so a planning bug is an error, never
//! aliasing: each kernel writes exactly one buffer, an arena range or a fold window, passed
//! once; no buffer it reads overlaps it; it takes at most [`MAX_KERNEL_BUFFERS`] buffers.
//!
//! [`CompiledModel`]: super::CompiledModel

use std::collections::HashMap;
use std::ops::Range;

use super::bands::{self, Schedule};
use super::fold::{self, Fold};
use super::memplan::{self, MemPlan, Request};
use crate::loops::{BufferKind, Kernel, MAX_KERNEL_BUFFERS, Program, Role};
use crate::{Error, Result};

/// Where a kernel's buffer lives at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A range of the arena (in f32 elements).
    Arena(Range<usize>),
    /// Fold window number `i` of the call plan's [`folds`](CallPlan::folds).
    Fold(usize),
    /// One of the constant buffers ([`CallPlan::consts`]).
    Const(usize),
    /// The caller's input tensor number `i`.
    Input(usize),
}

/// One kernel call.
#[derive(Debug)]
pub(crate) struct Call {
    /// One slot per buffer the kernel declares, in declaration order.
    pub slots: Vec<Slot>,
    /// The single buffer the kernel writes: an arena range or a fold window.
    pub output: Slot,
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
pub(crate) struct CallPlan {
    pub calls: Vec<Call>,
    /// The constant buffers (weights, folded and packed at compile time), by name order.
    pub consts: Vec<Vec<f32>>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub plan: MemPlan,
    /// The order of the kernel calls (the memory plan's lifetimes are in its runs).
    pub schedule: Schedule,
    /// The folded activations, which live in fold windows instead of the arena.
    pub folds: Vec<Fold>,
    /// Arena length in f32 elements.
    pub arena_len: usize,
}

impl CallPlan {
    /// Plans memory for `program` and resolves every kernel argument. The program's constants
    /// move into the layout (`program.constants` is left empty). `banded`: run the kernels in
    /// the band schedule (`runtime::bands`), else layer by layer; `folded`: fold what the
    /// schedule allows (`runtime::fold`; the caller makes the windows).
    pub(crate) fn new(program: &mut Program, banded: bool, folded: bool) -> Result<CallPlan> {
        let schedule = if banded {
            bands::schedule(program)
        } else {
            bands::layer_by_layer(program)
        };
        let folds = if folded {
            fold::plan(program, &schedule)
        } else {
            Vec::new()
        };
        fold::check(program, &schedule, &folds)?;
        let plan = plan_with(program, &schedule, &folds)?;
        let arena_len = plan.arena_bytes / 4;
        let (names, consts): (Vec<String>, Vec<Vec<f32>>) =
            std::mem::take(&mut program.constants).into_iter().unzip();
        let slots = Slots::new(program, &plan, &folds, &names);
        let calls = program
            .kernels
            .iter()
            .map(|k| call(k, &slots))
            .collect::<Result<Vec<_>>>()?;
        let port = |name: &String| -> Result<Port> {
            let (dims, _) = program
                .buffers
                .get(name)
                .ok_or_else(|| Error::Internal(format!("no buffer {name}")))?;
            Ok(Port {
                name: name.clone(),
                dims: dims.clone(),
                slot: slots.of(name)?,
            })
        };
        let inputs = program.inputs.iter().map(port).collect::<Result<_>>()?;
        let outputs = program.outputs.iter().map(port).collect::<Result<_>>()?;
        Ok(CallPlan {
            calls,
            consts,
            inputs,
            outputs,
            plan,
            schedule,
            folds,
            arena_len,
        })
    }
}

/// The static memory plan of a lowered program run in `schedule` with `folds` in fold
/// windows: what a model compiled from it would use (`--emit memplan` prints it without
/// compiling the kernels).
pub fn plan_memory(program: &Program, schedule: &Schedule, folds: &[Fold]) -> Result<MemPlan> {
    plan_with(program, schedule, folds)
}

fn plan_with(program: &Program, schedule: &Schedule, folds: &[Fold]) -> Result<MemPlan> {
    let mut requests = requests(program, schedule)?;
    requests.retain(|r| !folds.iter().any(|f| f.storage == r.name));
    memplan::plan(&requests)
        .ok_or_else(|| Error::TooLarge("the activation arena's size overflows".into()))
}

/// The memory plan's requests: every activation that owns storage (views do not), with its
/// liveness in the schedule's runs: from its writer's first run to its last reader's last run;
/// graph outputs live to the end (step `runs`).
fn requests(program: &Program, schedule: &Schedule) -> Result<Vec<Request>> {
    let n = schedule.runs.len();
    let views: HashMap<&str, &str> = program
        .views
        .iter()
        .map(|(v, s)| (v.as_str(), s.as_str()))
        .collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, run) in schedule.runs.iter().enumerate() {
        let Some(k) = program.kernels.get(run.kernel) else {
            return Err(Error::Internal(format!("no kernel {}", run.kernel)));
        };
        for b in &k.buffers {
            let storage = storage_of(&views, &b.name);
            if b.role.writable() {
                first.entry(storage).or_insert(i);
            }
            let l = last.entry(storage).or_insert(i);
            *l = (*l).max(i);
        }
    }
    for o in &program.outputs {
        last.insert(storage_of(&views, o), n);
    }
    let mut requests = Vec::new();
    for (name, (dims, kind)) in &program.buffers {
        if *kind != BufferKind::Activation || views.contains_key(name.as_str()) {
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
    Ok(requests)
}

/// The buffer holding `name`'s data: `name` itself, or the source of the view chain it starts.
fn storage_of<'a>(views: &HashMap<&'a str, &'a str>, name: &'a str) -> &'a str {
    let mut cur = name;
    // Each view names an earlier buffer, so chains end; the bound is belt and braces.
    for _ in 0..=views.len() {
        match views.get(cur) {
            Some(src) => cur = src,
            None => break,
        }
    }
    cur
}

/// Where every program buffer lives at run time, by name (maps, so resolving all of them is
/// near-linear in their number).
struct Slots {
    views: HashMap<String, String>,
    by_name: HashMap<String, Slot>,
}

impl Slots {
    /// `constants` are the constant buffers' names in the order of the model's `consts`.
    fn new(program: &Program, plan: &MemPlan, folds: &[Fold], constants: &[String]) -> Slots {
        let views = program.views.iter().cloned().collect();
        let mut by_name: HashMap<String, Slot> = HashMap::new();
        for (i, f) in folds.iter().enumerate() {
            by_name.insert(f.storage.clone(), Slot::Fold(i));
        }
        for p in &plan.placements {
            let start = p.offset / 4;
            let range = start..start + p.request.bytes / 4;
            by_name.insert(p.request.name.clone(), Slot::Arena(range));
        }
        for (i, name) in constants.iter().enumerate() {
            by_name.entry(name.clone()).or_insert(Slot::Const(i));
        }
        for (i, name) in program.inputs.iter().enumerate() {
            by_name.entry(name.clone()).or_insert(Slot::Input(i));
        }
        Slots { views, by_name }
    }

    fn of(&self, name: &str) -> Result<Slot> {
        let mut cur = name;
        // Each view names an earlier buffer, so chains end; the bound is belt and braces.
        for _ in 0..=self.views.len() {
            match self.views.get(cur) {
                Some(src) => cur = src,
                None => break,
            }
        }
        self.by_name
            .get(cur)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("buffer {name} has no storage")))
    }
}

/// One kernel's call: the slot of each of its buffers, checked to write exactly one activation
/// that no buffer it reads overlaps (the memory plan's promise, checked once more).
fn call(k: &Kernel, slots: &Slots) -> Result<Call> {
    let slots = k
        .buffers
        .iter()
        .map(|b| slots.of(&b.name))
        .collect::<Result<Vec<_>>>()?;
    let written: Vec<&Slot> = k
        .buffers
        .iter()
        .zip(&slots)
        .filter(|(b, _)| b.role.writable())
        .map(|(_, s)| s)
        .collect();
    let output = match written[..] {
        [s @ (Slot::Arena(_) | Slot::Fold(_))] => s.clone(),
        _ => {
            return Err(Error::Internal(format!(
                "kernel '{}' must write exactly one activation",
                k.name
            )));
        }
    };
    let writes_output = slots.iter().filter(|s| **s == output);
    if slots.len() > MAX_KERNEL_BUFFERS || writes_output.count() != 1 {
        return Err(Error::Internal(format!(
            "kernel '{}' takes {} buffers (at most {MAX_KERNEL_BUFFERS}, the output once)",
            k.name,
            slots.len()
        )));
    }
    for (b, s) in k.buffers.iter().zip(&slots) {
        let overlaps = match (s, &output) {
            (Slot::Arena(r), Slot::Arena(o)) => r.start < o.end && o.start < r.end,
            (Slot::Fold(f), Slot::Fold(g)) => f == g,
            _ => false,
        };
        if b.role == Role::Input && overlaps {
            return Err(Error::Internal(format!(
                "kernel '{}': {} overlaps its output in the arena",
                k.name, b.name
            )));
        }
    }
    Ok(Call { slots, output })
}
