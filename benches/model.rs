//! `cargo bench`: medians of the kernel families and of the whole model, with plain `std::time`
//! (no benchmark framework). Every GFLOP/s is printed next to the 128-bit FMA peak measured in
//! the same run (`mnv2c::bench::Peak`), since the machine's clock drifts between runs.
//!
//! Kernel families, one JIT-compiled kernel each on MobileNetV2 shapes: 1x1 convs (GEMM),
//! depthwise 3x3 stride 1 and 2, the 3x3 stride-2 stem conv, global average pooling and the
//! logits GEMV (1x1 conv on one pixel). Then the whole model (seeded weights): compile time and
//! latency on 1 and 2 threads. Takes well under a minute.

use std::time::Instant;

use mnv2c::bench::{Peak, conv_graph, quantile};
use mnv2c::codegen::JitProgram;
use mnv2c::graph::{Graph, Op, TensorType};
use mnv2c::{CompiledModel, Options, Tensor, TensorMap};

/// Median seconds of `runs` calls of `f` after two warm-up calls.
fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    quantile(&mut t, 0.5)
}

fn pool_graph(h: usize, c: usize) -> (Graph, TensorMap) {
    let mut g = Graph::new("pool");
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, h, h, c]), &[]);
    let y = g.add_typed("y", Op::GlobalAvgPool, &[x]).expect("types");
    g.set_outputs(vec![y]);
    (g, TensorMap::new())
}

/// Lowers and compiles a one-node graph; returns the median seconds of its kernel.
fn time_kernel(g: &Graph, consts: &TensorMap, runs: usize) -> f64 {
    let p = mnv2c::lower::lower(g, consts).expect("lowers");
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
    median(runs, || {
        let mut refs: Vec<&mut [f32]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        jit.run_kernel_mut(0, &mut refs).expect("runs");
    })
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument (e.g. a filter) is ignored.
    let peak = Peak::new().expect("peak kernel compiles");
    let peak_g = (0..5)
        .map(|_| peak.measure().unwrap_or(0.0))
        .fold(0.0, f64::max);
    println!("128-bit FMA peak (1 core): {peak_g:.1} GFLOP/s\n");
    println!(
        "{:<32} {:>10} {:>9} {:>7}",
        "kernel (1 thread)", "median us", "GFLOP/s", "% peak"
    );
    // (name, h, cin, cout, k, stride, depthwise)
    let convs = [
        ("1x1 28x28 32->192", 28, 32, 192, 1, 1, false),
        ("1x1 28x28 192->64", 28, 192, 64, 1, 1, false),
        ("1x1 7x7 320->1280", 7, 320, 1280, 1, 1, false),
        ("depthwise 3x3 s1 56x56x144", 56, 144, 144, 3, 1, true),
        ("depthwise 3x3 s2 112x112x96", 112, 96, 96, 3, 2, true),
        ("stem 3x3 s2 224x224 3->32", 224, 3, 32, 3, 2, false),
        ("logits GEMV 1280->1000", 1, 1280, 1000, 1, 1, false),
    ];
    for (name, h, cin, cout, k, s, dw) in convs {
        let (g, consts) = conv_graph(h, cin, cout, k, s, dw).expect("a valid benchmark conv");
        let secs = time_kernel(&g, &consts, 50);
        let oh = h.div_ceil(s);
        let macs = (oh * oh * cout * k * k * if dw { 1 } else { cin }) as f64;
        let gf = 2.0 * macs / secs / 1e9;
        println!(
            "{name:<32} {:>10.1} {gf:>9.2} {:>6.1}%",
            secs * 1e6,
            100.0 * gf / peak_g
        );
    }
    let (g, consts) = pool_graph(7, 1280);
    let secs = time_kernel(&g, &consts, 200);
    println!(
        "{:<32} {:>10.1} {:>9} {:>7}",
        "global avg pool 7x7x1280",
        secs * 1e6,
        "-",
        "-"
    );

    // The whole model, seeded weights.
    let graph = mnv2c::frontend::mobilenet_v2(&mnv2c::frontend::Config::default()).expect("builds");
    let weights = mnv2c::frontend::weights::seeded(&graph, 0).expect("seeds");
    let dims = graph.node(graph.inputs()[0]).ty.dims.clone();
    let n: usize = dims.iter().product();
    let input =
        Tensor::new(dims, (0..n).map(|i| (i % 255) as f32 / 255.0).collect()).expect("fits");
    println!();
    for threads in [1, 2] {
        let options = Options::new().with_threads(threads);
        let mut compile = Vec::new();
        let mut model = None;
        for _ in 0..3 {
            let t = Instant::now();
            model = Some(CompiledModel::compile(&graph, &weights, &options).expect("compiles"));
            compile.push(t.elapsed().as_secs_f64());
        }
        let model = model.expect("compiled");
        let secs = median(30, || {
            model.run(&input).expect("runs");
        });
        println!(
            "whole model, {threads} thread(s): compile median {:.1} ms, latency median {:.2} ms",
            quantile(&mut compile, 0.5) * 1e3,
            secs * 1e3
        );
    }
}
