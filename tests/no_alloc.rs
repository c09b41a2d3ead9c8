//! `run_into` performs no heap allocation after the first call: a counting global allocator
//! (this test binary only) sees zero allocations across repeated inferences.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::{CompiledModel, Options};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's arguments, which
// satisfy `GlobalAlloc`'s contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in_steady_state(threads: usize) -> usize {
    let config = Config {
        num_classes: 10,
        batch: 1,
        height: 64,
        width: 48,
    };
    let g = mobilenet_v2(&config).unwrap();
    let w = weights::seeded(&g, 0).unwrap();
    let model = CompiledModel::compile(&g, &w, &Options::new().with_threads(threads)).unwrap();
    let x = weights::synthetic_input(&config).unwrap();
    let inputs = [x];
    let mut outputs = model.new_outputs().unwrap();
    // The first calls allocate the arena (and warm up the thread pool).
    for _ in 0..3 {
        model.run_into(&inputs, &mut outputs).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..5 {
        model.run_into(&inputs, &mut outputs).unwrap();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn run_into_allocates_nothing_after_the_first_call() {
    // One test, so the threads and pool of one case do not count in the other.
    for threads in [1, 2] {
        assert_eq!(
            allocations_in_steady_state(threads),
            0,
            "{threads} thread(s)"
        );
    }
}
