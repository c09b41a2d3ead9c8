//! The JIT call path allocates nothing: `run_kernel` and `run_kernel_split` (with an executor
//! that allocates nothing itself) are counted by a global allocator that tallies allocations per
//! thread (so tests running concurrently in this binary do not disturb each other).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mnv2c::codegen::{Arg, JitProgram};
use mnv2c::graph::{Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType};
use mnv2c::{Tensor, TensorMap};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the thread-local counter is a
// const-initialised `Cell` (no allocation, no destructor), so counting cannot recurse.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above, for `dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: as above, for `realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// A 1x1 conv (the GEMM kernel) with a residual input: four buffers, several work items.
fn program() -> mnv2c::loops::Program {
    let mut g = Graph::new("pw");
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, 6, 5, 12]), &[]);
    let r = g.add_node("r", Op::Input, TensorType::new(vec![1, 6, 5, 20]), &[]);
    g.add_const(
        "w",
        Const {
            ty: TensorType::new(vec![1, 1, 12, 20]),
            def: ConstDef::Param,
        },
    )
    .expect("fresh");
    let conv = Conv2d {
        weight: "w".into(),
        bias: None,
        stride: [1, 1],
        pads: Pads::default(),
        groups: 1,
        epilogue: Epilogue::AddRelu6,
    };
    let y = g.add_typed("y", Op::Conv2d(conv), &[x, r]).expect("types");
    g.set_outputs(vec![y]);
    let consts = TensorMap::from([(
        "w".to_string(),
        Tensor::new(vec![1, 1, 12, 20], vec![0.1; 240]).expect("fits"),
    )]);
    mnv2c::lower::lower(&g, &consts).expect("lowers")
}

#[test]
fn kernel_calls_do_not_allocate() {
    let p = program();
    let jit = JitProgram::compile(&p).expect("compiles");
    let k = &p.kernels[0];
    let mut bufs: Vec<Vec<f32>> = k
        .buffers
        .iter()
        .map(|b| match p.constants.get(&b.name) {
            Some(c) => c.clone(),
            None => vec![0.5; b.len().expect("fits")],
        })
        .collect();
    let (out, ins) = bufs.split_last_mut().expect("has an output");
    assert_eq!(ins.len(), 3, "x, w, r");
    let run = |out: &mut [f32], ins: &[Vec<f32>], split: bool| {
        let mut args = [
            Arg::Read(&ins[0]),
            Arg::Read(&ins[1]),
            Arg::Read(&ins[2]),
            Arg::Write(out),
        ];
        let before = allocations();
        if split {
            jit.run_kernel_split(0, &mut args, 3, &|parts, task| {
                for p in (0..parts).rev() {
                    task(p);
                }
            })
            .expect("runs");
        } else {
            jit.run_kernel(0, &mut args).expect("runs");
        }
        allocations() - before
    };
    assert!(jit.parallel_safe(0).expect("kernel 0"));
    assert_eq!(run(out, ins, false), 0, "run_kernel allocated");
    let whole = out.clone();
    out.fill(0.0);
    assert_eq!(run(out, ins, true), 0, "run_kernel_split allocated");
    assert_eq!(*out, whole);
    assert!(whole.iter().all(|&v| v > 0.5));
}
