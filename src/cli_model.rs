//! The command line's side of trained model files: `--model NAME|FILE`, `--input-shape`, and the
//! `run`, `bench`, `compile` and `classify` paths for a Keras file.
//!
//! `--model` takes the built-in name `mobilenetv2` or a path; a path's format is told by its
//! first bytes (HDF5, zip; anything else is ONNX, whose `run`/`bench`/`compile` paths are
//! `file_model`'s; `classify` takes both). With a file, options that
//! configure the built-in model (`--weights`, `--seed`, `--num-classes`) are usage errors, and
//! `--batch`, `--height`, `--width`, `--input-shape` must agree with the file or fill its free
//! dimensions.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mnv2c::classify::{self, Preprocess};
use mnv2c::codegen::Isa;
use mnv2c::frontend::keras::{self, InputSize, KerasModel};
use mnv2c::{CompiledModel, Error, Options, Result, Tensor};

/// Where `--model` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The built-in MobileNetV2 (`--model mobilenetv2`).
    Builtin,
    /// A model file.
    File(PathBuf),
}

impl ModelSource {
    pub fn parse(s: &str) -> ModelSource {
        if s == "mobilenetv2" {
            ModelSource::Builtin
        } else {
            ModelSource::File(PathBuf::from(s))
        }
    }
}

/// `--input-shape N,H,W,C` with `--batch`/`--height`/`--width`: the sizes given, checked to
/// agree with each other.
pub fn input_size(
    batch: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
    input_shape: Option<&str>,
) -> Result<InputSize> {
    let mut size = InputSize {
        batch,
        height,
        width,
    };
    let Some(shape) = input_shape else {
        return Ok(size);
    };
    let dims: Vec<usize> = shape
        .split(',')
        .map(|d| d.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::Usage(format!(
                "--input-shape '{shape}': expected N,H,W,C (four positive integers)"
            ))
        })?;
    let [n, h, w, c] = dims[..] else {
        return Err(Error::Usage(format!(
            "--input-shape '{shape}': expected N,H,W,C (four positive integers)"
        )));
    };
    if [n, h, w, c].contains(&0) {
        return Err(Error::Usage(format!(
            "--input-shape '{shape}': every dimension must be at least 1"
        )));
    }
    if c != 3 {
        return Err(Error::Usage(format!(
            "--input-shape '{shape}': images have 3 channels, got {c}"
        )));
    }
    for (slot, v, flag) in [
        (&mut size.batch, n, "--batch"),
        (&mut size.height, h, "--height"),
        (&mut size.width, w, "--width"),
    ] {
        match *slot {
            Some(g) if g != v => {
                return Err(Error::Usage(format!(
                    "{flag} {g} conflicts with --input-shape {shape}"
                )));
            }
            _ => *slot = Some(v),
        }
    }
    Ok(size)
}

/// Reads a model file (Keras `.h5` or `.keras`).
pub fn load(path: &Path, size: InputSize) -> Result<KerasModel> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "--model {}: no such file (the built-in model is `--model mobilenetv2`; a trained model is a Keras .h5 or .keras file)",
            path.display()
        )));
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::io(path, e))?;
    match keras::file_kind(&head[..n]) {
        keras::FileKind::Hdf5 | keras::FileKind::Zip => keras::load(path, size),
        keras::FileKind::Other => Err(Error::Format {
            path: path.to_path_buf(),
            message: "not a model file mnv2c reads (a Keras .h5 or .keras file); for the built-in model use --model mobilenetv2".into(),
        }),
    }
}

/// Refuses the options that only configure the built-in model.
pub fn refuse_builtin_options(given: &[(&str, bool)]) -> Result<()> {
    match given.iter().find(|(_, g)| *g) {
        Some((flag, _)) => Err(Error::Usage(format!(
            "{flag} configures the built-in model; a model file brings its own weights and classes"
        ))),
        None => Ok(()),
    }
}

/// The input dims `[N, H, W, C]` of a model's (single) input.
pub fn input_dims(m: &KerasModel) -> Result<Vec<usize>> {
    match m.graph.inputs()[..] {
        [i] => Ok(m.graph.node(i).ty.dims.clone()),
        _ => Err(Error::Usage(
            "the model has several inputs; mnv2c runs single-input models".into(),
        )),
    }
}

/// `classify`'s options, resolved.
pub struct Classify<'a> {
    pub model: &'a Path,
    pub images: &'a [PathBuf],
    pub labels: Option<&'a Path>,
    pub top: usize,
    pub json: bool,
    pub preprocess: Preprocess,
    pub size: InputSize,
    pub threads: usize,
    pub isa: Isa,
}

/// `mnv2c classify`: decode, resize as Pillow does, preprocess, run all images as one batch,
/// print each image's top classes.
pub fn classify(c: &Classify<'_>) -> Result<String> {
    let start = Instant::now();
    let batch = c.images.len();
    let size = InputSize {
        batch: Some(batch),
        ..c.size
    };
    let m = if crate::file_model::is_onnx(c.model)? {
        crate::file_model::for_images(c.model, batch, size)?
    } else {
        let m = load(c.model, size)?;
        let dims = input_dims(&m)?;
        let [_, height, width, 3] = dims[..] else {
            return Err(Error::Usage(format!(
                "classify needs a model taking [N, H, W, 3] images; this one takes {dims:?}"
            )));
        };
        crate::file_model::ImageModel {
            graph: m.graph,
            weights: m.weights,
            height,
            width,
            nchw: false,
        }
    };
    let mut images = Vec::with_capacity(batch);
    for path in c.images {
        let bytes = mnv2c::files::read(path)?;
        let img = classify::image::decode(&bytes, path)?;
        images.push(classify::resize::resize(&img, m.width, m.height));
    }
    let mut x = classify::batch(&images, c.preprocess)?;
    if m.nchw {
        x = mnv2c::graph::interp::transpose(&x, &[0, 3, 1, 2]).map_err(Error::Internal)?;
    }
    let model = CompiledModel::compile(
        &m.graph,
        &m.weights,
        &Options::new().with_threads(c.threads).with_isa(c.isa),
    )?;
    let outputs = model.run_all(std::slice::from_ref(&x))?;
    // `[logits, probabilities]` (a Keras or ONNX classifier), or a Keras model's only output.
    let probs = outputs
        .get(1)
        .or(outputs.first())
        .ok_or_else(|| Error::Internal("the model gave no output".into()))?;
    let classes = *probs.dims().last().unwrap_or(&0);
    let labels = match c.labels {
        Some(p) => Some(classify::read_labels(p, classes)?),
        None => None,
    };
    let text = report(c, probs, classes, labels.as_deref())?;
    if !c.json {
        eprintln!(
            "classified {batch} image(s) in {:.1} ms (model read, compiled and run)",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(text)
}

fn report(
    c: &Classify<'_>,
    probs: &Tensor,
    classes: usize,
    labels: Option<&[String]>,
) -> Result<String> {
    let mut text = String::new();
    for (path, row) in c
        .images
        .iter()
        .zip(probs.data().chunks_exact(classes.max(1)))
    {
        let top = classify::top_k(row, c.top);
        if c.json {
            let items: Vec<serde_json::Value> = top
                .iter()
                .map(|&i| {
                    serde_json::json!({
                        "index": i,
                        "label": labels.map(|l| l[i].clone()),
                        "prob": sig6(row[i]).parse::<f64>().unwrap_or(f64::from(row[i])),
                    })
                })
                .collect();
            let obj = serde_json::json!({"image": path.display().to_string(), "top": items});
            text.push_str(&obj.to_string());
            text.push('\n');
        } else {
            text.push_str(&format!("{}:\n", path.display()));
            for (rank, &i) in top.iter().enumerate() {
                let label = labels.map_or_else(|| format!("class {i}"), |l| l[i].clone());
                text.push_str(&format!(
                    "  {:>2}. {:<12} {label}\n",
                    rank + 1,
                    sig6(row[i])
                ));
            }
        }
    }
    Ok(text)
}

/// A number to 6 significant digits, as Python's `'%.6g'`.
pub fn sig6(v: f32) -> String {
    let v = f64::from(v);
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let exp = v.abs().log10().floor() as i32;
    if (-5..6).contains(&exp) {
        let decimals = usize::try_from(5 - exp).unwrap_or(0);
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{v:.5e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = mant.trim_end_matches('0').trim_end_matches('.');
        let e: i32 = e.parse().unwrap_or(0);
        format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    }
}
