//! Compile MobileNetV2 and classify a batch of images with the library alone.
//!
//! ```sh
//! cargo run --release --example classify                       # seeded weights, 4 images
//! cargo run --release --example classify -- W.safetensors      # trained weights (TF names)
//! ```
//!
//! The images are synthetic (a smooth pattern per image); a real program would decode its
//! images into the same `[N, H, W, 3]` f32 layout. The batch is borrowed, not copied: the model
//! reads it through a `TensorView`, and `run_into` writes into outputs made once, so the loop
//! over batches allocates nothing after the first call.

use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::{CompiledModel, Options, Result, TensorView};

fn main() -> Result<()> {
    let config = Config {
        num_classes: 1000,
        batch: 4,
        height: 160,
        width: 160,
    };
    let graph = mobilenet_v2(&config)?;
    let params = match std::env::args_os().nth(1) {
        Some(path) => weights::load(std::path::Path::new(&path), &graph)?,
        None => weights::seeded(&graph, 0)?,
    };
    let model = CompiledModel::compile(&graph, &params, &Options::new().with_threads(2))?;
    println!("{model:?}");
    for port in model.inputs() {
        println!("input  {}: {:?} {:?}", port.name, port.dims, port.layout);
    }
    for port in model.outputs() {
        println!("output {}: {:?} {:?}", port.name, port.dims, port.layout);
    }

    // The caller's own buffer: 4 images, NHWC.
    let dims = model.inputs()[0].dims.clone();
    let pixels: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|i| ((i % 3) as f32 * 0.3 + (i / 480) as f32 * 0.001).sin())
        .collect();
    let batch = TensorView::new(&dims, &pixels)?;
    let mut outputs = model.new_outputs()?;
    model.run_into(&[batch], &mut outputs)?;

    // Outputs are in graph order; find them by name.
    let output = |name: &str| {
        let i = model.outputs().iter().position(|o| o.name == name);
        i.map(|i| &outputs[i])
            .ok_or_else(|| mnv2c::Error::Usage(format!("the model has no output named {name}")))
    };
    let (logits, prob) = (output("logits")?, output("prob")?);
    let classes = config.num_classes;
    let rows = logits
        .data()
        .chunks_exact(classes)
        .zip(prob.data().chunks_exact(classes));
    for (image, (logit_row, prob_row)) in rows.enumerate() {
        // Ranked by logit (softmax keeps the order, and logits still differ where f32
        // probabilities are equal); ties to the lower class.
        let best = (0..classes)
            .max_by(|&a, &b| logit_row[a].total_cmp(&logit_row[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        println!("image {image}: class {best} (p = {:.6})", prob_row[best]);
    }
    Ok(())
}
