//! Prints the loop IR, Cranelift IR or disassembly of a small conv graph, and times its kernels
//! on MobileNetV2 shapes: `cargo run --release --example emit_kernels -- loops|clif|asm|bench
//! [auto|avx512|avx2|portable]` (the tier of the micro-kernels, and of the peak in `bench`).

use std::time::Instant;

use mnv2c::bench::conv_graph;
use mnv2c::codegen::{Arg, Isa, JitOptions, JitProgram};
use mnv2c::{Tensor, TensorMap};

fn main() -> mnv2c::Result<()> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "loops".into());
    let isa: Isa = match std::env::args().nth(2) {
        Some(s) => s.parse()?,
        None => Isa::Auto,
    };
    let opts = JitOptions {
        isa,
        ..JitOptions::default()
    };
    if what == "model" {
        return model();
    }
    if what == "bench" {
        // (name, h, cin, cout, k, stride, depthwise)
        let cases = [
            ("pw 28x28 32->192", 28, 32, 192, 1, 1, false),
            ("pw 28x28 192->64", 28, 192, 64, 1, 1, false),
            ("pw 7x7 320->1280", 7, 320, 1280, 1, 1, false),
            ("pw 56x56 144->24", 56, 144, 24, 1, 1, false),
            ("pw 112x112 32->16", 112, 32, 16, 1, 1, false),
            ("pw 56x56 24->144", 56, 24, 144, 1, 1, false),
            ("pw 14x14 96->576", 14, 96, 576, 1, 1, false),
            ("pw 7x7 960->160", 7, 960, 160, 1, 1, false),
            ("dw 3x3 s1 56x56x144", 56, 144, 144, 3, 1, true),
            ("dw 3x3 s1 28x28x384", 28, 384, 384, 3, 1, true),
            ("dw 3x3 s1 14x14x576", 14, 576, 576, 3, 1, true),
            ("dw 3x3 s2 112x112x96", 112, 96, 96, 3, 2, true),
            ("full 3x3 s2 224x224 3->32", 224, 3, 32, 3, 2, false),
        ];
        let peak = mnv2c::bench::Peak::for_isa(isa)?;
        let peak_g = (0..5)
            .map(|_| peak.measure().unwrap_or(0.0))
            .fold(0.0, f64::max);
        println!("{}-bit FMA peak {peak_g:.1} GFLOP/s", peak.bits());
        for (name, h, cin, cout, k, s, dw) in cases {
            let (g, consts) = conv_graph(h, cin, cout, k, s, dw)?;
            let p = mnv2c::lower::lower(&g, &consts)?;
            let jit = JitProgram::compile_kernels(&p.kernels, &opts)?;
            let kern = &p.kernels[0];
            let x = vec![0.5f32; kern.buffers[0].len().unwrap_or(0)];
            let w = p.constants[&kern.buffers[1].name].clone();
            let mut y = vec![0.0f32; kern.buffers[2].len().unwrap_or(0)];
            let oh = h.div_ceil(s);
            let macs = (oh * oh * cout * k * k * if dw { 1 } else { cin }) as f64;
            let mut best = f64::MAX;
            for _ in 0..20 {
                let t = Instant::now();
                jit.run_kernel(0, &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut y)])?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            let mut best2 = f64::MAX;
            for _ in 0..20 {
                let t = Instant::now();
                jit.run_kernel_threads(
                    0,
                    &mut [Arg::Read(&x), Arg::Read(&w), Arg::Write(&mut y)],
                    2,
                )?;
                best2 = best2.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{name:<28} {:>9.1} us {:>7.2} GFLOP/s | 2 threads {:>9.1} us",
                best * 1e6,
                2.0 * macs / best / 1e9,
                best2 * 1e6
            );
        }
        return Ok(());
    }
    let (g, consts) = conv_graph(5, 6, 10, 1, 1, false)?;
    let (g2, consts2) = conv_graph(5, 6, 6, 3, 2, true)?;
    let mut p = mnv2c::lower::lower(&g, &consts)?;
    p.kernels
        .extend(mnv2c::lower::lower(&g2, &consts2)?.kernels);
    match what.as_str() {
        "clif" => print!(
            "{}",
            mnv2c::codegen::emit_clif(&p.kernels, mnv2c::codegen::Isa::Auto)?
        ),
        "asm" => print!(
            "{}",
            mnv2c::codegen::emit_asm(&p.kernels, mnv2c::codegen::Isa::Auto)?
        ),
        _ => print!("{p}"),
    }
    Ok(())
}

/// Lowers, compiles and runs the unoptimised MobileNetV2 at 224x224 (one thread), with
/// deterministic pseudo-random weights; prints compile and run times.
fn model() -> mnv2c::Result<()> {
    let g = mnv2c::frontend::mobilenet_v2(&mnv2c::frontend::Config::default())?;
    let mut consts = TensorMap::new();
    for (name, c) in g.consts() {
        let n = c.ty.num_elements().unwrap_or(0);
        let v = (0..n)
            .map(|i| {
                let r = ((i * 7919 + name.len() * 31) % 1000) as f32 / 1000.0;
                if name.ends_with("moving_variance") {
                    0.5 + r
                } else {
                    (r - 0.5) * 0.1
                }
            })
            .collect();
        consts.insert(
            name.to_string(),
            Tensor::new(c.ty.dims.clone(), v).expect("fits"),
        );
    }
    let t = Instant::now();
    let p = mnv2c::lower::lower(&g, &consts)?;
    let t_lower = t.elapsed();
    let t = Instant::now();
    let jit = JitProgram::compile(&p)?;
    let t_jit = t.elapsed();
    let code: usize = (0..jit.num_kernels())
        .filter_map(|i| jit.code_size(i))
        .sum();
    let x = g.node(g.inputs()[0]);
    let len = x.ty.num_elements().unwrap_or(0);
    let inputs = std::collections::BTreeMap::from([(
        x.name.clone(),
        (0..len)
            .map(|i| (i % 255) as f32 / 255.0)
            .collect::<Vec<f32>>(),
    )]);
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = jit.run_program(&p, &inputs)?;
        times.push(t.elapsed().as_secs_f64());
        assert!(out.values().all(|v| v.iter().all(|x| x.is_finite())));
    }
    times.sort_by(f64::total_cmp);
    let mut times2 = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        jit.run_program_threads(&p, &inputs, 2)?;
        times2.push(t.elapsed().as_secs_f64());
    }
    times2.sort_by(f64::total_cmp);
    println!(
        "kernels {}  lower {:.1} ms  jit {:.1} ms  code {} KiB  run median {:.1} ms, 2 threads {:.1} ms (incl. buffer allocation)",
        p.kernels.len(),
        t_lower.as_secs_f64() * 1e3,
        t_jit.as_secs_f64() * 1e3,
        code / 1024,
        times[2] * 1e3,
        times2[2] * 1e3
    );
    Ok(())
}
