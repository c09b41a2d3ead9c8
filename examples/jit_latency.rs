//! The JIT's latency in the same form as `examples/c/main.c --bench` prints the object's, to
//! compare the two in alternating rounds (docs/aot.md, "Speed and compile time"):
//!
//! ```sh
//! cargo run --release --example jit_latency -- 20     # median and min of 20 runs
//! ./classify --bench 20 --top 0                         # the object, from C
//! ```
//!
//! The seed model at 224x224 with 1000 classes, seeded weights (seed 0), the synthetic input,
//! one thread, three untimed runs first; each timed run is one `run_into`.

use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::{CompiledModel, Options, Result};

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let config = Config::default();
    let graph = mobilenet_v2(&config)?;
    let params = weights::seeded(&graph, 0)?;
    let inputs = [weights::synthetic_input(&config)?];
    let model = CompiledModel::compile(&graph, &params, &Options::default())?;
    let mut outputs = model.new_outputs()?;
    for _ in 0..3 {
        model.run_into(&inputs, &mut outputs)?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = std::time::Instant::now();
        model.run_into(&inputs, &mut outputs)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let text = format!(
        "median {:.3} ms over {runs} runs (min {:.3} ms)\n",
        ms[runs / 2],
        ms[0]
    );
    std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())
        .map_err(|e| mnv2c::Error::io("<stdout>", e))
}
