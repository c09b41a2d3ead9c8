//! The command line's side of model files (`--model FILE`): reading one with the shape the user
//! gives, running it (`run`), timing it (`bench`). The formats themselves are the library's
//! (`frontend::detect`, `frontend::onnx`).
//!
//! Shapes: a model file may leave dimensions symbolic; `--input X.npy` fixes them from the
//! array, `--input-shape N,C,H,W` (in the file's layout) from the option; when both are given
//! they must agree. Arrays are read and written in the file's layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mnv2c::frontend::detect;
use mnv2c::frontend::onnx::{Classifier, ImportOptions, Imported};
use mnv2c::frontend::weights;
use mnv2c::graph::interp;
use mnv2c::{CompiledModel, Error, Options, Result, Tensor, npy};

/// What `--model` names: the built-in model or a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Builtin,
    File(PathBuf),
}

/// Decodes `--model`: `mobilenetv2`, or the path of an existing file.
pub fn source(value: &str) -> Result<Source> {
    if value == "mobilenetv2" {
        return Ok(Source::Builtin);
    }
    let path = PathBuf::from(value);
    if path.exists() {
        Ok(Source::File(path))
    } else {
        Err(Error::Usage(format!(
            "--model {value}: not a built-in model (mobilenetv2) and no such file"
        )))
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

fn print_notes(notes: &[String]) {
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

/// `bench --model FILE`: compiles the file's model and times it on a synthetic input.
pub fn bench(
    path: &Path,
    input_shape: Option<&str>,
    threads: usize,
    settings: &mnv2c::bench::Settings,
) -> Result<mnv2c::bench::Report> {
    let model = load(path, input_shape, None)?;
    let x = synthetic(&model.inputs[0].1)?;
    let start = Instant::now();
    let options = Options::default().with_threads(threads);
    let compiled = CompiledModel::compile(&model.graph, &model.params, &options)?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    let name = format!("{} {:?}", path.display(), model.inputs[0].1);
    let report = mnv2c::bench::run(&compiled, &x, &name, compile_ms, settings)?;
    print_notes(&model.notes);
    Ok(report)
}
