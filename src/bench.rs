//! Benchmarks: whole-model latency, a per-layer table, and the FMA peak of the model's vector
//! tier measured in the same run, so every "% of peak" compares numbers from one sitting.
//!
//! The peak is measured with mnv2c's own code generators: for the portable tier a loop-IR
//! kernel of [`PEAK_ACCUMULATORS`] independent f32x4 FMA chains (enough to cover the FMA
//! latency on two ports), JIT-compiled like every model kernel; for the avx2 / avx512 tiers the
//! same chains in ymm / zmm registers, assembled like their micro-kernels
//! (`codegen::micro::peak`). It is the ceiling the targets are stated against.
//!
//! Latencies are wall-clock medians and 90th percentiles over many runs after a warm-up; the
//! machine is shared and its clock drifts, so only same-run ratios mean much.

use std::fmt::Write as _;
use std::time::Instant;

use crate::TensorMap;
use crate::codegen::micro::peak::PEAK_CHAINS;
use crate::codegen::{Arg, Isa, JitOptions, JitProgram, WidePeak};
use crate::graph::{Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType};
use crate::loops::Family;
use crate::loops::{Affine, BufId, Expr, Kernel, Loop, LoopKind, LoopMode, Mem, Role, Stmt};
use crate::runtime::CompiledModel;
use crate::{Error, Result, Tensor};

/// Independent f32x4 accumulators of the peak kernel (12 of the 16 xmm registers).
pub const PEAK_ACCUMULATORS: usize = 12;
/// Reduction steps of one peak-kernel call: 12 x 4 x 2 x 2^18 = 25 M FLOP, a few ms.
const PEAK_STEPS: i64 = 1 << 18;

/// A compiled FMA-throughput kernel: the portable loop-IR one, or a wide tier's.
#[derive(Debug)]
pub struct Peak {
    jit: JitProgram,
    wide: Option<WidePeak>,
}

impl Peak {
    /// The portable (128-bit) peak kernel.
    pub fn new() -> Result<Peak> {
        Peak::for_isa(Isa::Portable)
    }

    /// The peak kernel of `isa` (resolved: `Auto` is the widest tier of this CPU).
    pub fn for_isa(isa: Isa) -> Result<Peak> {
        let opts = JitOptions {
            isa: Isa::Portable,
            ..JitOptions::default()
        };
        Ok(Peak {
            jit: JitProgram::compile_kernels(&[peak_kernel()], &opts)?,
            wide: WidePeak::new(isa)?,
        })
    }

    /// The vector width measured, in bits.
    pub fn bits(&self) -> usize {
        self.wide
            .as_ref()
            .map_or(128, |w| w.lanes() * 32 / PEAK_CHAINS)
    }

    /// FLOP per call.
    pub fn flops(&self) -> f64 {
        let lanes = self
            .wide
            .as_ref()
            .map_or(PEAK_ACCUMULATORS * 4, WidePeak::lanes);
        (lanes * 2) as f64 * PEAK_STEPS as f64
    }

    /// GFLOP/s of one call, on one thread.
    pub fn measure(&self) -> Result<f64> {
        let start = Instant::now();
        let out = match &self.wide {
            Some(w) => w.run(0.999, 1e-3, PEAK_STEPS)?,
            None => {
                let coefficients = [0.999_f32, 0.999, 0.999, 0.999, 1e-3, 1e-3, 1e-3, 1e-3];
                let mut out = vec![0.0f32; PEAK_ACCUMULATORS * 4];
                self.jit
                    .run_kernel(0, &mut [Arg::Read(&coefficients), Arg::Write(&mut out)])?;
                out
            }
        };
        let secs = start.elapsed().as_secs_f64();
        // The chains converge to 1e-3 / (1 - 0.999) = 1: anything else means the kernel is wrong.
        if out.iter().any(|v| !(0.5..=1.5).contains(v)) {
            return Err(Error::Codegen(format!(
                "the FMA peak kernel computed {out:?}"
            )));
        }
        Ok(self.flops() / secs / 1e9)
    }
}

/// `acc[u] = fma(acc[u], m, c)` for `PEAK_STEPS` steps, `u` over the accumulators; then stores.
fn peak_kernel() -> Kernel {
    let mut k = Kernel::new("fma_peak", None);
    let coef = k.add_buffer("coefficients", vec![8], Role::Const);
    let out = k.add_buffer("out", vec![PEAK_ACCUMULATORS * 4], Role::Output);
    let acc = k.add_local("acc", PEAK_ACCUMULATORS * 4, true);
    let vector_over_accumulators = |k: &mut Kernel, body: &dyn Fn(Affine, Affine) -> Stmt| {
        let (u, lane) = (k.new_var("u"), k.new_var("lane"));
        let index = Affine::var(u) * 4 + Affine::var(lane);
        let inner = Loop {
            var: lane,
            lo: 0,
            hi: 4,
            kind: LoopKind::Spatial,
            mode: LoopMode::Vector,
            body: vec![body(index, Affine::var(lane))],
        };
        Stmt::Loop(Loop {
            var: u,
            lo: 0,
            hi: PEAK_ACCUMULATORS as i64,
            kind: LoopKind::Spatial,
            mode: LoopMode::Unroll,
            body: vec![Stmt::Loop(inner)],
        })
    };
    let load = |b: BufId, at: Affine| Expr::load(Mem::Buf(b), at);
    let init = vector_over_accumulators(&mut k, &|i, _| Stmt::Store {
        dst: crate::loops::Access {
            mem: Mem::Local(acc),
            index: i,
        },
        value: Expr::Const(0.0),
    });
    let update = vector_over_accumulators(&mut k, &|i, lane| Stmt::Store {
        dst: crate::loops::Access {
            mem: Mem::Local(acc),
            index: i.clone(),
        },
        value: Expr::fma(
            Expr::load(Mem::Local(acc), i),
            load(coef, lane.clone()),
            load(coef, lane + 4),
        ),
    });
    let step = k.new_var("step");
    let steps = Stmt::Loop(Loop {
        var: step,
        lo: 0,
        hi: PEAK_STEPS,
        kind: LoopKind::Reduction,
        mode: LoopMode::Serial,
        body: vec![update],
    });
    let store = vector_over_accumulators(&mut k, &|i, _| Stmt::Store {
        dst: crate::loops::Access {
            mem: Mem::Buf(out),
            index: i.clone(),
        },
        value: Expr::load(Mem::Local(acc), i),
    });
    // The top level of a kernel is a list of spatial loops (its work items): one item here.
    let item = k.new_var("item");
    k.body = vec![Stmt::Loop(Loop {
        var: item,
        lo: 0,
        hi: 1,
        kind: LoopKind::Spatial,
        mode: LoopMode::Serial,
        body: vec![init, steps, store],
    })];
    k
}

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Timed whole-model runs (at least 1).
    pub runs: usize,
    /// Untimed runs first.
    pub warmup: usize,
}

/// One row of the per-layer table.
#[derive(Clone, Debug)]
pub struct LayerRow {
    pub name: String,
    pub kind: Family,
    pub flops: u64,
    /// Median wall time of the kernel, in seconds.
    pub seconds: f64,
    /// Whether the kernel splits over threads (its work items were proven disjoint).
    pub splits: bool,
    /// The vector tier the kernel runs in.
    pub isa: Isa,
}

/// Totals of one kernel family.
#[derive(Clone, Debug)]
pub struct FamilyRow {
    pub kind: Family,
    pub layers: usize,
    pub flops: u64,
    pub seconds: f64,
}

/// What `mnv2c bench` reports.
#[derive(Clone, Debug)]
pub struct Report {
    pub model: String,
    pub threads: usize,
    pub runs: usize,
    pub compile_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub flops: u64,
    /// The FMA peak of one core at the width of the model's tier, measured in this run (best
    /// of several calls).
    pub peak_gflops: f64,
    /// The model's vector tier, and the width its peak was measured at.
    pub isa: Isa,
    pub peak_bits: usize,
    pub layers: Vec<LayerRow>,
    pub families: Vec<FamilyRow>,
}

/// The `q`-quantile (nearest rank) of `values`, sorted in place.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Benchmarks `model` on `input`. `compile_ms` is measured by the caller, who compiled it.
pub fn run(
    model: &CompiledModel,
    input: &Tensor,
    model_name: &str,
    compile_ms: f64,
    settings: &Settings,
) -> Result<Report> {
    let threads = model.threads();
    let isa = model.jit().isa();
    let peak = Peak::for_isa(isa)?;
    let mut peaks = vec![peak.measure()?];
    let inputs = std::slice::from_ref(input);
    for _ in 0..settings.warmup {
        model.run_all(inputs)?;
    }
    // Whole-model latency, with the peak re-measured between rounds so it sees the same clock.
    let runs = settings.runs.max(1);
    let mut latencies = Vec::with_capacity(runs);
    for i in 0..runs {
        let start = Instant::now();
        model.run_all(inputs)?;
        latencies.push(start.elapsed().as_secs_f64());
        if i % 10 == 9 {
            peaks.push(peak.measure()?);
        }
    }
    // Per-layer medians, from separate timed runs (timing each kernel adds a little overhead).
    let layers: Vec<_> = model.layers().cloned().collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); layers.len()];
    // A kernel may run in several bands per call (`runtime::bands`): its time is their sum.
    let mut call = vec![0.0f64; layers.len()];
    for _ in 0..runs {
        call.iter_mut().for_each(|c| *c = 0.0);
        model.run_timed(inputs, &mut |step, secs| {
            if let Some(c) = call.get_mut(step) {
                *c += secs;
            }
        })?;
        for (t, c) in times.iter_mut().zip(&call) {
            t.push(*c);
        }
    }
    peaks.push(peak.measure()?);
    let rows: Vec<LayerRow> = layers
        .iter()
        .zip(&mut times)
        .enumerate()
        .map(|(i, (l, t))| LayerRow {
            name: l.name.clone(),
            kind: l.family,
            flops: l.flops,
            seconds: quantile(t, 0.5),
            splits: model.jit().parallel_safe(i).unwrap_or(false)
                && model.jit().work_items(i).unwrap_or(0) > 1,
            isa: l.isa,
        })
        .collect();
    let mut families: Vec<FamilyRow> = Vec::new();
    for r in &rows {
        match families.iter_mut().find(|f| f.kind == r.kind) {
            Some(f) => {
                f.layers += 1;
                f.flops += r.flops;
                f.seconds += r.seconds;
            }
            None => families.push(FamilyRow {
                kind: r.kind,
                layers: 1,
                flops: r.flops,
                seconds: r.seconds,
            }),
        }
    }
    families.sort_by_key(|f| f.kind);
    let median_ms = quantile(&mut latencies.clone(), 0.5) * 1e3;
    let p90_ms = quantile(&mut latencies, 0.9) * 1e3;
    Ok(Report {
        model: model_name.to_string(),
        threads,
        runs,
        compile_ms,
        median_ms,
        p90_ms,
        flops: rows.iter().map(|r| r.flops).sum(),
        peak_gflops: peaks.iter().copied().fold(0.0, f64::max),
        isa,
        peak_bits: peak.bits(),
        layers: rows,
        families,
    })
}

fn gflops(flops: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        flops as f64 / seconds / 1e9
    } else {
        0.0
    }
}

impl Report {
    /// GFLOP/s of a kernel family (FLOP-weighted: total work over total time).
    pub fn family_gflops(&self, kind: Family) -> Option<f64> {
        let f = self.families.iter().find(|f| f.kind == kind)?;
        Some(gflops(f.flops, f.seconds))
    }

    /// Percent of the one-core FMA peak of the tier (per thread: the peak is per core).
    fn percent_of_peak(&self, gflops: f64) -> f64 {
        100.0 * gflops / (self.peak_gflops * self.threads as f64)
    }

    /// The human-readable report: summary, families, then every layer.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} thread(s), {} runs; compile {:.1} ms; latency median {:.2} ms, p90 {:.2} ms; {:.3} GFLOP -> {:.1} GFLOP/s",
            self.model,
            self.threads,
            self.runs,
            self.compile_ms,
            self.median_ms,
            self.p90_ms,
            self.flops as f64 / 1e9,
            gflops(self.flops, self.median_ms / 1e3)
        );
        let _ = writeln!(
            s,
            "isa {}: {}-bit FMA peak measured in this run: {:.1} GFLOP/s per core",
            self.isa.name(),
            self.peak_bits,
            self.peak_gflops
        );
        let _ = writeln!(
            s,
            "\n{:<12} {:>6} {:>10} {:>10} {:>9} {:>7}",
            "family", "layers", "MFLOP", "ms", "GFLOP/s", "% peak"
        );
        for f in &self.families {
            let g = gflops(f.flops, f.seconds);
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>10.1} {:>10.3} {:>9.1} {:>6.1}%",
                f.kind.name(),
                f.layers,
                f.flops as f64 / 1e6,
                f.seconds * 1e3,
                g,
                self.percent_of_peak(g)
            );
        }
        let _ = writeln!(
            s,
            "\n{:<28} {:<12} {:>10} {:>10} {:>9} {:>7}  splits  isa",
            "layer", "family", "MFLOP", "ms", "GFLOP/s", "% peak"
        );
        for r in &self.layers {
            let g = gflops(r.flops, r.seconds);
            let _ = writeln!(
                s,
                "{:<28} {:<12} {:>10.2} {:>10.4} {:>9.1} {:>6.1}%  {:<6}  {}",
                r.name,
                r.kind.name(),
                r.flops as f64 / 1e6,
                r.seconds * 1e3,
                g,
                self.percent_of_peak(g),
                if r.splits { "yes" } else { "no" },
                r.isa.name()
            );
        }
        s
    }

    /// One JSON object (no dependency: names are plain ASCII, escaped anyway).
    pub fn json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"model\":{},\"isa\":\"{}\",\"peak_bits\":{},\"threads\":{},\"runs\":{},\"compile_ms\":{:.3},\"median_ms\":{:.4},\"p90_ms\":{:.4},\"gflop\":{:.6},\"peak_gflops_per_core\":{:.2}",
            json_string(&self.model),
            self.isa.name(),
            self.peak_bits,
            self.threads,
            self.runs,
            self.compile_ms,
            self.median_ms,
            self.p90_ms,
            self.flops as f64 / 1e9,
            self.peak_gflops
        );
        s.push_str(",\"families\":[");
        for (i, f) in self.families.iter().enumerate() {
            let g = gflops(f.flops, f.seconds);
            let _ = write!(
                s,
                "{}{{\"family\":\"{}\",\"layers\":{},\"mflop\":{:.3},\"ms\":{:.4},\"gflops\":{:.2},\"percent_of_peak\":{:.2}}}",
                if i > 0 { "," } else { "" },
                f.kind.name(),
                f.layers,
                f.flops as f64 / 1e6,
                f.seconds * 1e3,
                g,
                self.percent_of_peak(g)
            );
        }
        s.push_str("],\"layers\":[");
        for (i, r) in self.layers.iter().enumerate() {
            let g = gflops(r.flops, r.seconds);
            let _ = write!(
                s,
                "{}{{\"name\":{},\"family\":\"{}\",\"mflop\":{:.4},\"ms\":{:.5},\"gflops\":{:.2},\"percent_of_peak\":{:.2},\"splits\":{},\"isa\":\"{}\"}}",
                if i > 0 { "," } else { "" },
                json_string(&r.name),
                r.kind.name(),
                r.flops as f64 / 1e6,
                r.seconds * 1e3,
                g,
                self.percent_of_peak(g),
                r.splits,
                r.isa.name()
            );
        }
        s.push_str("]}\n");
        s
    }
}

fn json_string(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A one-conv graph for kernel benchmarks (`cargo bench`, `examples/emit_kernels.rs`): input
/// `[1, h, h, cin]`, a `k x k` conv with TF SAME pads and a relu6 epilogue (none for the 1x1
/// conv on one pixel, the logits GEMV), deterministic small weights; `depthwise` makes
/// groups = cin. Sizes that do not make a valid conv (a stride of 0, a kernel larger than the
/// padded input, an overflowing weight count) are errors.
pub fn conv_graph(
    h: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
) -> Result<(Graph, TensorMap)> {
    let mut g = Graph::new("conv");
    let x = g.add_node("x", Op::Input, TensorType::new(vec![1, h, h, cin]), &[]);
    let (groups, wd) = if depthwise {
        (cin, vec![k, k, cin, 1])
    } else {
        (1, vec![k, k, cin, cout])
    };
    let ty = TensorType::new(wd.clone());
    let n = ty
        .num_elements()
        .ok_or_else(|| Error::Config(format!("weight {ty} is too large")))?;
    g.add_const(
        "w",
        Const {
            ty,
            def: ConstDef::Param,
        },
    )?;
    let data = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    let w = Tensor::new(wd, data)?;
    let consts = TensorMap::from([("w".to_string(), w)]);
    let (top, bottom, _) = Pads::same_1d(h, k, stride)
        .ok_or_else(|| Error::Config(format!("stride {stride} is not a valid stride")))?;
    let conv = Conv2d {
        weight: "w".into(),
        bias: None,
        stride: [stride, stride],
        pads: Pads {
            top,
            bottom,
            left: top,
            right: bottom,
        },
        groups,
        epilogue: if k == 1 && h == 1 {
            Epilogue::None
        } else {
            Epilogue::Relu6
        },
    };
    let y = g.add_typed("y", Op::Conv2d(conv), &[x])?;
    g.set_outputs(vec![y]);
    Ok((g, consts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_kernel_verifies_and_computes() {
        crate::loops::verify(&peak_kernel()).unwrap();
        let g = Peak::new().unwrap().measure().unwrap();
        assert!(g > 0.0);
    }

    #[test]
    fn benchmark_convs_reject_invalid_sizes() {
        let (g, consts) = conv_graph(8, 3, 4, 3, 2, false).unwrap();
        assert_eq!(g.node(g.outputs()[0]).ty.dims, [1, 4, 4, 4]);
        assert_eq!(consts["w"].dims(), [3, 3, 3, 4]);
        let e = conv_graph(8, 3, 4, 3, 0, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid model configuration: stride 0 is not a valid stride"
        );
        let e = conv_graph(8, usize::MAX, 4, 3, 1, false).unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 5.0);
        assert_eq!(quantile(&mut v, 0.9), 9.0);
        assert!(quantile(&mut [], 0.5).is_nan());
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
