//! What `mnv2c compile --emit LEVEL` prints, as one library call: the graph IR, the loop IR with
//! schedules, Cranelift IR, machine code, or the memory plan of a verified graph.
//!
//! What must hold (the property `tests/compile_always.rs` and the `compile` fuzz target check):
//! for a graph [`verify`](crate::graph::verify()) accepts, [`emit`] succeeds at every level or
//! fails with a user-facing error (exit status 3 or 4), never an internal one, and its time
//! depends on the graph's size, not on its tensors' extents.
//!
//! Levels below the graph IR need weight values only to pack them: seeded placeholders (seed 0)
//! give the same code as any other values of the same shapes, and a derived value they make
//! non-finite is not an error here ([`bind_placeholders`](crate::graph::consts::bind_placeholders)).

use crate::codegen::Isa;
use crate::frontend::weights;
use crate::graph::{self, Graph};
use crate::{Result, codegen, lower};

/// A level of `--emit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The graph IR in its text form.
    Ir,
    /// The loop IR of every kernel, with its schedule.
    Loops,
    /// The Cranelift IR of every kernel.
    Clif,
    /// The disassembly of the generated machine code (Cranelift's functions, then the raw
    /// micro-kernels of a wide tier).
    Asm,
    /// The static memory plan: every activation's arena offset, the peak and its lower bound.
    Memplan,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Ir,
        Level::Loops,
        Level::Clif,
        Level::Asm,
        Level::Memplan,
    ];
}

/// The text of `graph` (verified, passes already run) at `level`, with the micro-kernels of
/// the widest tier this CPU runs.
pub fn emit(graph: &Graph, level: Level) -> Result<String> {
    emit_for(graph, level, Isa::Auto)
}

/// [`emit`] for the vector tier `isa` (it changes the `clif` and `asm` levels: micro-kernel
/// calls and the raw kernels' listing instead of their portable bodies).
pub fn emit_for(graph: &Graph, level: Level, isa: Isa) -> Result<String> {
    if level == Level::Ir {
        return Ok(graph.to_string());
    }
    let params = weights::seeded(graph, 0)?;
    let consts = graph::consts::bind_placeholders(graph, &params)?;
    let program = lower::lower(graph, &consts)?;
    match level {
        Level::Ir | Level::Loops => Ok(program.to_string()),
        Level::Memplan => {
            // What a one-thread model runs: the band schedule, lifetimes in its runs.
            let schedule = crate::runtime::bands::schedule(&program);
            let folds = crate::runtime::fold::plan(&program, &schedule);
            let plan = crate::runtime::plan_memory(&program, &schedule, &folds)?;
            Ok(format!(
                "{plan}{}{}",
                crate::runtime::fold::listing(&folds),
                schedule.listing(&program)
            ))
        }
        Level::Clif => codegen::emit_clif(&program.kernels, isa),
        Level::Asm => codegen::emit_asm(&program.kernels, isa),
    }
}
