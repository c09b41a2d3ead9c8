//! The command line's side of ONNX model files (`--model FILE.onnx`; Keras files are
//! `cli_model`'s): reading one with the shape the user gives, running it (`run`), timing it
//! (`bench` builds on [`load`]). The formats themselves are the library's (`frontend::detect`, `frontend::onnx`).
//!
//! Shapes: a model file may leave dimensions symbolic; `--input X.npy` fixes them from the
//! array, `--input-shape N,C,H,W` (in the file's layout) from the option; when both are given
//! they must agree. Arrays are read and written in the file's layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mnv2c::frontend::onnx::{Classifier, ImportOptions, Imported};
use mnv2c::frontend::weights;
use mnv2c::frontend::{detect, keras};
use mnv2c::graph::interp;
use mnv2c::{CompiledModel, Error, Options, Result, Tensor, npy};

/// Whether the model file at `path` is read as ONNX: no HDF5 or zip signature. A path that
/// does not exist is a usage error (`--model resnet50` names no built-in model either).
pub fn is_onnx(path: &Path) -> Result<bool> {
    if !path.exists() {
        return Err(Error::Usage(format!(
            "--model {}: not a built-in model (mobilenetv2) and no such file",
            path.display()
        )));
    }
    let mut head = [0u8; 8];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| Error::io(path, e))?;
    Ok(keras::file_kind(&head[..n]) == keras::FileKind::Other)
}

/// An ONNX model read for a batch of `batch` images: its graph (outputs `[logits, probs, ..]`)
/// and weights, the image height and width, and whether it takes NCHW (else NHWC) input. Free
/// height and width come from `size` (`--input-shape`).
pub fn for_images(path: &Path, batch: usize, size: keras::InputSize) -> Result<ImageModel> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let declared = mnv2c::frontend::onnx::declared_input(&bytes, path)?;
    let (nchw, h, w) = match declared[..] {
        [_, Some(3), h, w] => (true, h, w),
        [_, h, w, Some(3)] => (false, h, w),
        _ => {
            return Err(Error::Usage(format!(
                "classify needs a model taking [N, 3, H, W] or [N, H, W, 3] images; {} takes {declared:?}",
                path.display()
            )));
        }
    };
    let pick = |d: Option<usize>, given: Option<usize>, what: &str| {
        d.or(given).ok_or_else(|| {
            Error::Usage(format!(
                "the image {what} of {} is not fixed by the model: give --input-shape N,H,W,3",
                path.display()
            ))
        })
    };
    let (h, w) = (
        pick(h, size.height, "height")?,
        pick(w, size.width, "width")?,
    );
    let shape = if nchw {
        vec![batch, 3, h, w]
    } else {
        vec![batch, h, w, 3]
    };
    let options = ImportOptions {
        input_shape: Some(shape),
    };
    let mut m = detect::load(path, &options)?;
    let roles = m.classifier()?;
    print_notes(&m.notes);
    print_notes(roles.note.as_slice());
    Ok(ImageModel {
        graph: m.graph,
        weights: m.params,
        height: h,
        width: w,
        nchw,
    })
}

/// What [`for_images`] gives.
pub struct ImageModel {
    pub graph: mnv2c::graph::Graph,
    pub weights: mnv2c::TensorMap,
    pub height: usize,
    pub width: usize,
    pub nchw: bool,
}

/// Refuses the options that size the built-in model: an ONNX file's input shape is given with
/// `--input-shape` in the file's layout.
pub fn refuse_sizes(given: &[(&str, bool)]) -> Result<()> {
    match given.iter().find(|(_, g)| *g) {
        Some((flag, _)) => Err(Error::Usage(format!(
            "{flag} sizes the built-in model; give an ONNX model's input shape with --input-shape, in the file's layout"
        ))),
        None => Ok(()),
    }
}

/// Parses `--input-shape 1,3,224,224`.
pub fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let dims: Option<Vec<usize>> = text
        .split(',')
        .map(|s| s.trim().parse::<usize>().ok().filter(|&d| d >= 1))
        .collect();
    dims.filter(|d| !d.is_empty()).ok_or_else(|| {
        Error::Usage(format!(
            "--input-shape {text}: expected dimensions >= 1 separated by commas (e.g. 1,3,224,224)"
        ))
    })
}

/// Reads a model file; the input's shape comes from `--input-shape` and/or the input array.
/// The import's notes (where layouts changed) are the caller's to show.
pub fn load(path: &Path, shape: Option<&str>, input: Option<&Tensor>) -> Result<Imported> {
    let given = shape.map(parse_shape).transpose()?;
    let input_shape = match (given, input) {
        (Some(g), Some(x)) if g != x.dims() => {
            return Err(Error::Usage(format!(
                "--input-shape {g:?} conflicts with the --input array's shape {:?}",
                x.dims()
            )));
        }
        (Some(g), _) => Some(g),
        (None, Some(x)) => Some(x.dims().to_vec()),
        (None, None) => None,
    };
    detect::load(path, &ImportOptions { input_shape })
}

pub fn print_notes(notes: &[String]) {
    for note in notes {
        eprintln!("note: {note}");
    }
}

/// A deterministic input of the model's shape (`sin(0.01 i)` by flat index) when none is given.
pub fn synthetic(dims: &[usize]) -> Result<Tensor> {
    let mut t = Tensor::zeros(dims.to_vec())?;
    for (i, v) in t.data_mut().iter_mut().enumerate() {
        *v = (0.01 * i as f64).sin() as f32;
    }
    Ok(t)
}

/// Splits `--output NAME=FILE.npy` at its last `=`.
pub fn parse_output(spec: &str) -> Result<(String, PathBuf)> {
    match spec.rsplit_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(Error::Usage(format!(
            "--output {spec}: expected NAME=FILE.npy (an output name, '=', a file)"
        ))),
    }
}

/// What `run` does with a model file.
pub struct RunRequest<'a> {
    pub path: &'a Path,
    pub input: Option<&'a Path>,
    pub input_shape: Option<&'a str>,
    pub logits: Option<&'a Path>,
    pub probs: Option<&'a Path>,
    pub outputs: &'a [String],
    pub interp: bool,
    pub threads: usize,
}

/// What one run of a model file gave.
pub struct RunResult {
    /// Every output's value, by IR name, logits and probabilities first.
    pub values: Vec<(String, Tensor)>,
    pub roles: Classifier,
    /// How long compiling and running took, one line.
    pub timing: String,
}

/// Runs a model file once.
pub fn run(req: &RunRequest<'_>) -> Result<RunResult> {
    let x = req.input.map(npy::read).transpose()?;
    let mut model = load(req.path, req.input_shape, x.as_ref())?;
    let x = match x {
        Some(x) => x,
        None => synthetic(&model.inputs[0].1)?,
    };
    let wanted: Vec<(String, PathBuf)> = req
        .outputs
        .iter()
        .map(|s| parse_output(s))
        .collect::<Result<_>>()?;
    let classifier = model.classifier()?;

    let (values, timing) = if req.interp {
        let consts = weights::bind(&model.graph, &model.params)?;
        let start = Instant::now();
        let v = interp::run(&model.graph, &consts, std::slice::from_ref(&x))?;
        (
            v,
            format!("interpreter: {:.3} s", start.elapsed().as_secs_f64()),
        )
    } else {
        let start = Instant::now();
        let options = Options::default().with_threads(req.threads);
        let compiled = CompiledModel::compile(&model.graph, &model.params, &options)?;
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let v = compiled.run_all(std::slice::from_ref(&x))?;
        let run_ms = start.elapsed().as_secs_f64() * 1e3;
        let timing = format!(
            "compile: {compile_ms:.1} ms; inference on {} thread(s): {run_ms:.2} ms (first call)",
            req.threads
        );
        (v, timing)
    };
    let names: Vec<String> = model
        .graph
        .outputs()
        .iter()
        .map(|&o| model.graph.node(o).name.clone())
        .collect();
    let named: Vec<(String, Tensor)> = names.into_iter().zip(values).collect();
    let find = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    for (path, role) in [
        (req.logits, &classifier.logits),
        (req.probs, &classifier.probs),
    ] {
        if let (Some(path), Some(t)) = (path, find(role)) {
            npy::write(path, t)?;
        }
    }
    for (name, path) in &wanted {
        // An output is asked for by its name in the file (or its IR name).
        let ir = model
            .outputs
            .iter()
            .find(|(onnx, _)| onnx == name)
            .map(|(_, ir)| ir.as_str())
            .unwrap_or(name);
        let t = find(ir).ok_or_else(|| {
            let known: Vec<&str> = model.outputs.iter().map(|(o, _)| o.as_str()).collect();
            Error::Usage(format!(
                "--output {name}=...: the model has no output '{name}' (its outputs: {})",
                known.join(", ")
            ))
        })?;
        npy::write(path, t)?;
    }
    // Notes only once everything worked, so a failure stays a one-line error.
    print_notes(&model.notes);
    print_notes(classifier.note.as_slice());
    Ok(RunResult {
        values: named,
        roles: classifier,
        timing,
    })
}
