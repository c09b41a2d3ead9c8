//! The `mnv2c` command line: a thin layer over the library.
//!
//! Every failure prints one line, `error: ...`, on stderr and exits with the status of its kind
//! (see `docs/errors.md`): 2 for a usage error, 3 for an invalid model, IR or weights file,
//! 4 for an input that does not fit the model, 70 for an internal error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod cli_model;
mod file_model;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cli_model::ModelSource;
use mnv2c::codegen::Isa;
use mnv2c::emit::Level;
use mnv2c::frontend::weights::{self, LOGITS_WEIGHT};
use mnv2c::frontend::{self, Config};
use mnv2c::graph::{self, Graph, interp};
use mnv2c::{CompiledModel, Options, aot, codegen, passes};
use mnv2c::{Error, Result, Tensor, TensorMap, npy};

#[derive(Parser, Debug)]
#[command(
    name = "mnv2c",
    version,
    about = "A graph compiler for the seed's MobileNetV2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build or read a graph, and print it at the requested level.
    Compile(CompileArgs),
    /// Run the built-in model (or a Keras file: --model m.h5) on one input; print the top classes.
    Run(RunArgs),
    /// Write seeded weights for the built-in model as a `.safetensors` file.
    Weights(WeightsArgs),
    /// Time the JIT-compiled model (built-in, or --model m.h5): latency, compile time, per layer.
    Bench(BenchArgs),
    /// Classify PNG or JPEG images with a trained Keras model; print each image's top classes.
    Classify(ClassifyArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PreprocessArg {
    /// `x / 127.5 - 1` (Keras's MobileNetV2).
    Tf,
    /// ImageNet mean and std on `x / 255` (torchvision).
    Torch,
    /// Pixel values `0..=255` as they are.
    None,
}

#[derive(Args, Debug)]
struct ClassifyArgs {
    /// The trained model: a Keras `.h5` or `.keras` file, or an ONNX file (NCHW or NHWC input).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Class names, one line per class in index order.
    #[arg(long, value_name = "labels.txt")]
    labels: Option<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, value_name = "K", default_value_t = 5)]
    top: usize,
    /// One JSON object per image: {"image", "top": [{"index", "label", "prob"}]}.
    #[arg(long)]
    json: bool,
    /// How pixels become model inputs.
    #[arg(long, value_enum, default_value = "tf")]
    preprocess: PreprocessArg,
    /// The input size, for a model saved with free (None) height and width.
    #[arg(long, value_name = "N,H,W,C")]
    input_shape: Option<String>,
    /// Threads per inference.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Vector tier of the micro-kernels: auto, avx512, avx2 or portable (bit-identical results).
    #[arg(long, value_name = "ISA", default_value = "auto")]
    isa: Isa,
    /// The images (PNG or JPEG; at most 64 megapixels each).
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
}

/// The built-in model's size, shared by `compile`, `run` and `bench`. Each is optional: `run`
/// also takes them from `--weights` and `--input` (and a given option must agree with them);
/// otherwise the default of [`Config`] applies.
#[derive(Args, Debug)]
struct SizeArgs {
    /// Number of classes of the built-in model [default: 1000].
    #[arg(long, value_name = "N")]
    num_classes: Option<usize>,
    /// Batch size of the built-in model's input [default: 1].
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Input height of the built-in model [default: 224].
    #[arg(long, value_name = "H")]
    height: Option<usize>,
    /// Input width of the built-in model [default: 224].
    #[arg(long, value_name = "W")]
    width: Option<usize>,
    /// Input shape of a model file whose height and width are free (None), or to check.
    #[arg(long, value_name = "N,H,W,C")]
    input_shape: Option<String>,
}

impl SizeArgs {
    fn any_given(&self) -> bool {
        [self.num_classes, self.batch, self.height, self.width]
            .iter()
            .any(Option::is_some)
            || self.input_shape.is_some()
    }

    /// `--num-classes`, `--batch`, `--height`, `--width` as (flag, given): they size the built-in
    /// model (and Keras files); an ONNX file takes `--input-shape` in its own layout.
    fn builtin_sizes(&self) -> [(&'static str, bool); 4] {
        [
            ("--num-classes", self.num_classes.is_some()),
            ("--batch", self.batch.is_some()),
            ("--height", self.height.is_some()),
            ("--width", self.width.is_some()),
        ]
    }

    /// The sizes given for a model file (which has no `--num-classes`).
    fn file_size(&self) -> Result<mnv2c::frontend::keras::InputSize> {
        cli_model::refuse_builtin_options(&[("--num-classes", self.num_classes.is_some())])?;
        cli_model::input_size(
            self.batch,
            self.height,
            self.width,
            self.input_shape.as_deref(),
        )
    }

    /// The configuration, with the default for every size not given (`--input-shape` gives
    /// batch, height and width at once).
    fn config(&self) -> Result<Config> {
        let d = Config::default();
        let size = cli_model::input_size(
            self.batch,
            self.height,
            self.width,
            self.input_shape.as_deref(),
        )?;
        Ok(Config {
            num_classes: self.num_classes.unwrap_or(d.num_classes),
            batch: size.batch.unwrap_or(d.batch),
            height: size.height.unwrap_or(d.height),
            width: size.width.unwrap_or(d.width),
        })
    }
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// `mobilenetv2` (the built-in model) or a model file: Keras `.h5`/`.keras` or ONNX.
    #[arg(long, value_name = "NAME|FILE")]
    model: Option<String>,
    #[command(flatten)]
    size: SizeArgs,
    /// Timed runs (the median and p90 are over these; the per-layer medians over as many more).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    runs: u64,
    /// Untimed runs first.
    #[arg(long, value_name = "N", default_value_t = 10)]
    warmup: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Threads per inference (the JIT splits each layer's output tiles over them).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// Vector tier of the micro-kernels: auto (the widest this CPU runs), avx512, avx2 or
    /// portable (Cranelift's 128-bit code). Every tier gives bit-identical results.
    #[arg(long, value_name = "ISA", default_value = "auto")]
    isa: Isa,
}

/// Where the graph comes from: an IR file, or a built-in model and its configuration.
#[derive(Args, Debug)]
struct ModelArgs {
    /// A graph IR file (`.ir`) to read instead of a built-in model.
    #[arg(value_name = "FILE.ir", conflicts_with = "model")]
    file: Option<PathBuf>,
    /// `mobilenetv2` (the built-in model) or a model file: Keras `.h5`/`.keras` or ONNX.
    #[arg(long, value_name = "NAME|FILE")]
    model: Option<String>,
    #[command(flatten)]
    size: SizeArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Emit {
    /// The graph IR in its text form (after the passes).
    Ir,
    /// The loop IR of every kernel, with its schedule.
    Loops,
    /// The Cranelift IR of every kernel.
    Clif,
    /// Cranelift's disassembly of the generated machine code.
    Asm,
    /// The static memory plan: every activation's arena offset, the peak and its lower bound.
    Memplan,
    /// An object file (`-o`, required) and its C header (`--header`): the compiled model with
    /// its weights, callable from C without mnv2c (see docs/aot.md).
    Obj,
}

/// `--target` of `--emit obj`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TargetArg {
    #[value(name = "x86_64")]
    X86_64,
    Aarch64,
}

/// Where the weights of `--emit obj` come from.
enum ObjWeights<'a> {
    /// The model file's own.
    Model(TensorMap),
    /// `--weights FILE` for the built-in model.
    File(&'a Path, TensorMap),
    /// The built-in model's seeded initialisation.
    Seeded,
}

/// The options of `--emit obj` only.
#[derive(Args, Debug)]
struct ObjArgs {
    /// The C header to write (with --emit obj; default: the -o path with `.h`).
    #[arg(long, value_name = "FILE.h")]
    header: Option<PathBuf>,
    /// Prefix of every symbol and macro of the object (a C identifier; with --emit obj).
    #[arg(long, value_name = "NAME")]
    prefix: Option<String>,
    /// Architecture of the object (with --emit obj; default: the host's).
    #[arg(long, value_enum)]
    target: Option<TargetArg>,
    /// Weights (`.safetensors`) to compile in (with --emit obj; default: seeded weights, seed 0);
    /// the built-in model takes its number of classes from them.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
}

/// `compile`'s options. Pass selection: the default pipeline unless `-O0` (no pass) or
/// `--passes` (exactly those, in that order); the two conflict. `--print-after*` dumps go to
/// stderr, each under a `# ----- IR after PASS (changed|unchanged) -----` header, so the output
/// on stdout (or `-o FILE`) stays one parseable graph.
#[derive(Args, Debug)]
struct CompileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// What to print.
    #[arg(long, value_enum, required_unless_present = "list_passes")]
    emit: Option<Emit>,
    /// Write the output to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Optimisation level: 0 runs no pass, 1 (the default) runs the default pipeline.
    #[arg(short = 'O', value_name = "LEVEL", value_parser = clap::value_parser!(u8).range(0..=1), conflicts_with = "passes")]
    opt_level: Option<u8>,
    /// Run exactly these passes, in this order (see --list-passes).
    #[arg(long, value_name = "PASS,...")]
    passes: Option<String>,
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    print_after_all: bool,
    /// Print the IR after this pass (to stderr); repeatable.
    #[arg(long, value_name = "PASS")]
    print_after: Vec<String>,
    /// List the passes, in default-pipeline order, and exit.
    #[arg(long)]
    list_passes: bool,
    /// Vector tier of the micro-kernels: auto (the widest this CPU runs), avx512, avx2 or
    /// portable (Cranelift's 128-bit code). Every tier gives bit-identical results. With
    /// --emit obj, auto means portable (the object may run on another machine).
    #[arg(long, value_name = "ISA", default_value = "auto")]
    isa: Isa,
    #[command(flatten)]
    obj: ObjArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// `mobilenetv2` (the built-in model, the default) or a model file: Keras `.h5`/`.keras`
    /// or ONNX, told apart by the file's first bytes.
    #[arg(long, value_name = "NAME|FILE")]
    model: Option<String>,
    /// Weights (`.safetensors`, TF variable names); the number of classes comes from them.
    /// Default: seeded weights.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Input array `[N, H, W, 3]` (`.npy`, f32); batch, height and width come from it.
    /// Default: the synthetic input `x[n,y,x,c] = sin(0.05 y + 0.07 x + 1.3 c + 0.5 n)`.
    #[arg(long, value_name = "X.npy")]
    input: Option<PathBuf>,
    /// Write the logits `[N, num_classes]` to this `.npy` file.
    #[arg(long, value_name = "L.npy")]
    logits: Option<PathBuf>,
    /// Write the probabilities `[N, num_classes]` to this `.npy` file.
    #[arg(long, value_name = "P.npy")]
    probs: Option<PathBuf>,
    /// How many of the most probable classes to print per batch item.
    #[arg(long, value_name = "K", default_value_t = 5)]
    top: usize,
    /// Seed of the seeded weights (without `--weights`).
    #[arg(long, value_name = "S", conflicts_with = "weights")]
    seed: Option<u64>,
    /// Run the reference interpreter instead of the JIT-compiled code.
    #[arg(long, conflicts_with_all = ["threads", "isa"])]
    interp: bool,
    /// Vector tier of the micro-kernels: auto (the widest this CPU runs), avx512, avx2 or
    /// portable (Cranelift's 128-bit code). Every tier gives bit-identical results.
    #[arg(long, value_name = "ISA", default_value = "auto")]
    isa: Isa,

    /// Threads per inference (the JIT splits each layer's output tiles over them).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// The sizes must agree with `--weights` (classes) and `--input` (batch, height, width).
    #[command(flatten)]
    size: SizeArgs,
    /// Write the ONNX model's output NAME to FILE.npy, in the file's layout (repeatable; split
    /// at the last `=`).
    #[arg(long, value_name = "NAME=FILE.npy", requires = "model")]
    output: Vec<String>,
}

#[derive(Args, Debug)]
struct WeightsArgs {
    /// Seed of the initialisation.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Number of classes of the model.
    #[arg(long, value_name = "N", default_value_t = Config::default().num_classes)]
    num_classes: usize,
    /// The `.safetensors` file to write.
    #[arg(short, long, value_name = "W.safetensors")]
    output: PathBuf,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                // Help and version go to stdout with success, as users expect.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                eprintln!("error: no command given (try `mnv2c compile --help` or `mnv2c --help`)");
                return ExitCode::from(2);
            }
            // clap's message is several paragraphs (problem, tips, usage); the first names the
            // problem, sometimes over two lines ("required arguments were not provided: --emit").
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{} (see `mnv2c --help`)", first.join(" "));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let one_line = e.to_string().replace('\n', " ");
            eprintln!("error: {one_line}");
            ExitCode::from(e.exit_status())
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Compile(args) => compile(args),
        Command::Run(args) => run_model(args),
        Command::Weights(args) => write_weights(args),
        Command::Bench(args) => bench(args),
        Command::Classify(args) => classify(args),
    }
}

fn classify(args: ClassifyArgs) -> Result<()> {
    let size = cli_model::input_size(None, None, None, args.input_shape.as_deref())?;
    let text = cli_model::classify(&cli_model::Classify {
        model: &args.model,
        images: &args.images,
        labels: args.labels.as_deref(),
        top: args.top,
        json: args.json,
        preprocess: match args.preprocess {
            PreprocessArg::Tf => mnv2c::classify::Preprocess::Tf,
            PreprocessArg::Torch => mnv2c::classify::Preprocess::Torch,
            PreprocessArg::None => mnv2c::classify::Preprocess::None,
        },
        size,
        threads: args.threads,
        isa: args.isa,
    })?;
    emit(&text, None)
}

/// `mnv2c run`: resolve the configuration from the weights, the input and the options (any two
/// that disagree are an error naming both), bind the weights, run, print the top classes.
fn run_model(args: RunArgs) -> Result<()> {
    if let Some(ModelSource::File(path)) = args.model.as_deref().map(ModelSource::parse) {
        return run_any_file_model(&args, &path);
    }
    if args.size.input_shape.is_some() {
        return Err(Error::Usage(
            "--input-shape sizes a model file; the built-in model takes --batch, --height and --width".into(),
        ));
    }
    let file_weights = match &args.weights {
        Some(path) => {
            let w = weights::read(path)?;
            let n = weights::num_classes(&w)?;
            Some((path.as_path(), w, n))
        }
        None => None,
    };
    let input = match &args.input {
        Some(path) => Some((path.as_path(), read_input(path)?)),
        None => None,
    };
    let config = run_config(&args.size, file_weights.as_ref(), input.as_ref())?;
    let graph = frontend::mobilenet_v2(&config)?;
    let (weights_desc, params) = match file_weights {
        Some((path, w, _)) => {
            // The library's message names the tensor; the user also needs to know which file.
            weights::check(&graph, &w).map_err(|e| in_file(e, path))?;
            (path.display().to_string(), w)
        }
        None => {
            let seed = args.seed.unwrap_or(0);
            (format!("seeded ({seed})"), weights::seeded(&graph, seed)?)
        }
    };
    let (input_desc, x) = match input {
        Some((path, x)) => (path.display().to_string(), x),
        None => ("synthetic".to_string(), weights::synthetic_input(&config)?),
    };
    let ([logits, probs], timing) = if args.interp {
        run_interp(&graph, &params, &x)?
    } else {
        run_jit(&graph, &params, &x, args.threads, args.isa)?
    };
    if let Some(path) = &args.logits {
        npy::write(path, &logits)?;
    }
    if let Some(path) = &args.probs {
        npy::write(path, &probs)?;
    }
    let mut text = format!(
        "mobilenetv2: input [{},{},{},3], {} classes; weights: {weights_desc}; input: {input_desc}\n\
         {timing}\n",
        config.batch, config.height, config.width, config.num_classes,
    );
    text.push_str(&top_classes(&logits, &probs, config.num_classes, args.top));
    if args.weights.is_none() {
        text.push_str(
            "note: the built-in model's weights are invented (seeded), so its classes mean nothing.\n\
             To run a trained model: mnv2c run --model FILE.h5|FILE.keras|FILE.onnx --input X.npy,\n\
             or: mnv2c classify --model FILE.h5 --labels labels.txt IMAGE.png ...\n",
        );
    }
    emit(&text, None)
}

/// `mnv2c run --model FILE`: an ONNX file, or a Keras file.
fn run_any_file_model(args: &RunArgs, path: &Path) -> Result<()> {
    if file_model::is_onnx(path)? {
        return run_onnx_model(args, path);
    }
    if !args.output.is_empty() {
        return Err(Error::Usage(
            "--output NAME=FILE names an output of an ONNX model".into(),
        ));
    }
    run_file_model(args, path)
}

/// `mnv2c run --model FILE.onnx`: the file's model and weights, the input in the file's layout,
/// `--logits`/`--probs` by the logits rule, `--output NAME=FILE.npy` for any output.
fn run_onnx_model(args: &RunArgs, path: &Path) -> Result<()> {
    cli_model::refuse_builtin_options(&[
        ("--weights", args.weights.is_some()),
        ("--seed", args.seed.is_some()),
    ])?;
    file_model::refuse_sizes(&args.size.builtin_sizes())?;
    let request = file_model::RunRequest {
        path,
        input: args.input.as_deref(),
        input_shape: args.size.input_shape.as_deref(),
        logits: args.logits.as_deref(),
        probs: args.probs.as_deref(),
        outputs: &args.output,
        interp: args.interp,
        threads: args.threads,
    };
    let r = file_model::run(&request)?;
    let get = |name: &str| {
        r.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Internal(format!("output %{name} was not computed")))
    };
    let (logits, probs) = (get(&r.roles.logits)?, get(&r.roles.probs)?);
    let classes = *probs.dims().last().unwrap_or(&1);
    let mut text = format!(
        "{}: logits %{}, probabilities %{}\n{}\n",
        path.display(),
        graph::NameText(&r.roles.logits),
        graph::NameText(&r.roles.probs),
        r.timing
    );
    for (item, row) in probs.data().chunks_exact(classes.max(1)).enumerate() {
        let logit_row = &logits.data()[item * classes..][..classes];
        text.push_str(&format!("item {item}:\n"));
        for (rank, c) in mnv2c::classify::top_k(row, args.top)
            .into_iter()
            .enumerate()
        {
            text.push_str(&format!(
                "  {:>2}. class {c:>4}  p = {}  logit = {}\n",
                rank + 1,
                cli_model::sig6(row[c]),
                number(logit_row[c])
            ));
        }
    }
    emit(&text, None)
}

/// `mnv2c run --model FILE`: the file's graph and weights; sizes from the options and the input
/// (which must agree with the file); writes the logits (the softmax's input) and probabilities.
fn run_file_model(args: &RunArgs, path: &Path) -> Result<()> {
    cli_model::refuse_builtin_options(&[
        ("--weights", args.weights.is_some()),
        ("--seed", args.seed.is_some()),
    ])?;
    let mut size = args.size.file_size()?;
    let input = match &args.input {
        Some(p) => {
            let x = read_input(p)?;
            let dims = [x.dims()[0], x.dims()[1], x.dims()[2]];
            let from = |i: usize, what: &str| {
                Some((
                    dims[i],
                    format!(
                        "{} (its shape {} gives {what} {})",
                        p.display(),
                        x.ty(),
                        dims[i]
                    ),
                ))
            };
            size.batch = Some(agree("--batch", size.batch, from(0, "batch"), 1)?);
            size.height = Some(agree("--height", size.height, from(1, "height"), 1)?);
            size.width = Some(agree("--width", size.width, from(2, "width"), 1)?);
            Some(x)
        }
        None => None,
    };
    let start = Instant::now();
    let m = cli_model::load(path, size)?;
    let read_ms = ms(start);
    if args.probs.is_some() && !m.ends_in_softmax {
        return Err(Error::Usage(format!(
            "--probs: {} does not end in a softmax; its output is written by --logits",
            path.display()
        )));
    }
    let dims = cli_model::input_dims(&m)?;
    let x = match input {
        Some(x) => x,
        None => synthetic_for(&dims)?,
    };
    let start = Instant::now();
    let outputs = if args.interp {
        interp::run(&m.graph, &m.weights, std::slice::from_ref(&x))?
    } else {
        let options = Options::new().with_threads(args.threads).with_isa(args.isa);
        CompiledModel::compile(&m.graph, &m.weights, &options)?.run_all(std::slice::from_ref(&x))?
    };
    let run_ms = ms(start);
    let [logits, rest @ ..] = &outputs[..] else {
        return Err(Error::Internal("the model gave no output".into()));
    };
    if let Some(p) = &args.logits {
        npy::write(p, logits)?;
    }
    if let (Some(p), [probs, ..]) = (&args.probs, rest) {
        npy::write(p, probs)?;
    }
    let shown = rest.first().unwrap_or(logits);
    let classes = *shown.dims().last().unwrap_or(&1);
    let engine = if args.interp {
        "interpreter"
    } else {
        "compile + run"
    };
    let mut text = format!(
        "{}: input {dims:?}, {classes} outputs{}\nread: {read_ms:.1} ms; {engine}: {run_ms:.1} ms\n",
        path.display(),
        if m.ends_in_softmax { " (softmax)" } else { "" },
    );
    for (item, row) in shown.data().chunks_exact(classes.max(1)).enumerate() {
        text.push_str(&format!("item {item}:\n"));
        for (rank, c) in mnv2c::classify::top_k(row, args.top)
            .into_iter()
            .enumerate()
        {
            text.push_str(&format!(
                "  {:>2}. class {c:>4}  {} = {}\n",
                rank + 1,
                if m.ends_in_softmax { "p" } else { "y" },
                cli_model::sig6(row[c])
            ));
        }
    }
    emit(&text, None)
}

/// Reads an `--input` array: no zero dimension and no NaN or infinity (each an `Input` error,
/// status 4, whichever dimension is zero).
fn read_input(path: &Path) -> Result<Tensor> {
    let x = npy::read(path)?;
    if x.dims().contains(&0) {
        return Err(Error::Input(format!(
            "{} has shape {}, which has no elements (every dimension must be at least 1)",
            path.display(),
            x.ty()
        )));
    }
    let &[_, _, _, 3] = x.dims() else {
        return Err(Error::Input(format!(
            "{} has shape {}, expected [N, H, W, 3] (NHWC, 3 channels)",
            path.display(),
            x.ty()
        )));
    };
    // Like NaN weights: a non-finite pixel is a bug upstream, and would come out as NaN
    // probabilities far from its cause.
    if let Some(i) = x.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::Input(format!(
            "{}: element {i} is {} (NaN and infinite inputs are rejected)",
            path.display(),
            x.data()[i]
        )));
    }
    Ok(x)
}

/// The model's configuration: each size from its option, or from the file that fixes it (the
/// weights' class count, the input's shape), or the default; an option and a file that disagree
/// are an error naming both.
fn run_config(
    size: &SizeArgs,
    file_weights: Option<&(&Path, TensorMap, usize)>,
    input: Option<&(&Path, Tensor)>,
) -> Result<Config> {
    let d = Config::default();
    let from_weights = file_weights.map(|(p, _, n)| {
        (
            *n,
            format!("{} ({LOGITS_WEIGHT} has {n} classes)", p.display()),
        )
    });
    let from_input = |i: usize, what: &str| {
        input.map(|(p, x)| {
            let n = x.dims()[i];
            let source = format!("{} (its shape {} gives {what} {n})", p.display(), x.ty());
            (n, source)
        })
    };
    Ok(Config {
        num_classes: agree(
            "--num-classes",
            size.num_classes,
            from_weights,
            d.num_classes,
        )?,
        batch: agree("--batch", size.batch, from_input(0, "batch"), d.batch)?,
        height: agree("--height", size.height, from_input(1, "height"), d.height)?,
        width: agree("--width", size.width, from_input(2, "width"), d.width)?,
    })
}

/// Logits and probabilities from the reference interpreter, and a timing line.
fn run_interp(graph: &Graph, params: &TensorMap, x: &Tensor) -> Result<([Tensor; 2], String)> {
    let consts = weights::bind(graph, params)?;
    let start = Instant::now();
    let outputs = interp::run(graph, &consts, std::slice::from_ref(x))?;
    let secs = start.elapsed().as_secs_f64();
    let outputs: [Tensor; 2] = outputs.try_into().map_err(|o: Vec<Tensor>| {
        Error::Internal(format!("the model gave {} outputs, expected 2", o.len()))
    })?;
    Ok((outputs, format!("interpreter: {secs:.3} s")))
}

/// Logits and probabilities from the JIT-compiled model, run twice (the first call also
/// allocates the activation arena; the second shows the steady state), and a timing line.
fn run_jit(
    graph: &Graph,
    params: &TensorMap,
    x: &Tensor,
    threads: usize,
    isa: Isa,
) -> Result<([Tensor; 2], String)> {
    let start = Instant::now();
    let options = Options::new().with_threads(threads).with_isa(isa);
    let model = CompiledModel::compile(graph, params, &options)?;
    let compile_ms = ms(start);
    let start = Instant::now();
    let first = model.run(x)?;
    let first_ms = ms(start);
    let start = Instant::now();
    let out = model.run(x)?;
    let second_ms = ms(start);
    if out != first {
        return Err(Error::Internal("two runs of one input differ".into()));
    }
    let timing = format!(
        "compile: {compile_ms:.1} ms; inference on {threads} thread(s): {first_ms:.2} ms (first call), {second_ms:.2} ms (second call)"
    );
    Ok(([out.logits, out.probs], timing))
}

/// The `top` most probable classes of each batch item, one line each.
fn top_classes(logits: &Tensor, probs: &Tensor, classes: usize, top: usize) -> String {
    let mut text = String::new();
    for (item, row) in probs.data().chunks_exact(classes).enumerate() {
        let logit_row = &logits.data()[item * classes..][..classes];
        let mut order: Vec<usize> = (0..classes).collect();
        // Most probable first, ranked by logit: softmax keeps the order, and logits still
        // differ where f32 probabilities are equal (seeded weights give near-uniform ones).
        // Ties by class index, so the listing is stable.
        order.sort_by(|&a, &b| logit_row[b].total_cmp(&logit_row[a]).then(a.cmp(&b)));
        text.push_str(&format!("item {item}:\n"));
        for (rank, &c) in order.iter().take(top).enumerate() {
            text.push_str(&format!(
                "  {:>2}. class {c:>4}  p = {:.6}  logit = {}\n",
                rank + 1,
                row[c],
                number(logit_row[c])
            ));
        }
    }
    text
}

/// A number for people: fixed point when it reads well, scientific when tiny or huge (seeded
/// weights give logits around 1e-8).
fn number(v: f32) -> String {
    if v == 0.0 || (1e-3..1e6).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.4e}")
    }
}

/// The value of one configuration item: the option and the value found in a file must agree;
/// either alone decides; neither gives the default.
fn agree(
    option: &str,
    given: Option<usize>,
    found: Option<(usize, String)>,
    default: usize,
) -> Result<usize> {
    match (given, found) {
        (Some(g), Some((f, source))) if g != f => Err(Error::Usage(format!(
            "{option} {g} conflicts with {source}"
        ))),
        (Some(g), _) => Ok(g),
        (None, Some((f, _))) => Ok(f),
        (None, None) => Ok(default),
    }
}

/// `mnv2c bench`: seeded weights (speed does not depend on their values), the synthetic input;
/// or a model file with its own weights.
fn bench(args: BenchArgs) -> Result<()> {
    let (graph, params, x, name) = match args.model.as_deref().map(ModelSource::parse) {
        Some(ModelSource::File(path)) if file_model::is_onnx(&path)? => {
            let m = file_model::load(&path, args.size.input_shape.as_deref(), None)?;
            file_model::refuse_sizes(&args.size.builtin_sizes())?;
            let x = file_model::synthetic(&m.inputs[0].1)?;
            let name = format!("{} {:?}", path.display(), x.dims());
            file_model::print_notes(&m.notes);
            (m.graph, m.params, x, name)
        }
        Some(ModelSource::File(path)) => {
            let m = cli_model::load(&path, args.size.file_size()?)?;
            let x = synthetic_for(&cli_model::input_dims(&m)?)?;
            let name = format!("{} {:?}", path.display(), x.dims());
            (m.graph, m.weights, x, name)
        }
        _ => {
            let config = args.size.config()?;
            let graph = frontend::mobilenet_v2(&config)?;
            let params = weights::seeded(&graph, 0)?;
            let x = weights::synthetic_input(&config)?;
            let name = format!(
                "mobilenetv2 [{},{},{},3] -> {} classes",
                config.batch, config.height, config.width, config.num_classes
            );
            (graph, params, x, name)
        }
    };
    let options = Options::new().with_threads(args.threads).with_isa(args.isa);
    // Compile time is graph to runnable model: reading or building the model is not in it.
    let start = Instant::now();
    let model = CompiledModel::compile(&graph, &params, &options)?;
    let compile_ms = ms(start);
    let settings = mnv2c::bench::Settings {
        runs: usize::try_from(args.runs).unwrap_or(usize::MAX),
        warmup: args.warmup,
    };
    let report = mnv2c::bench::run(&model, &x, &name, compile_ms, &settings)?;
    let text = if args.json {
        report.json()
    } else {
        report.table()
    };
    emit(&text, None)
}

/// `mnv2c weights`: seeded weights for the built-in model, saved as `.safetensors`.
fn write_weights(args: WeightsArgs) -> Result<()> {
    let graph = frontend::mobilenet_v2(&Config {
        num_classes: args.num_classes,
        ..Config::default()
    })?;
    weights::save(&args.output, &weights::seeded(&graph, args.seed)?)
}

fn compile(args: CompileArgs) -> Result<()> {
    if args.list_passes {
        return emit(&list_passes(), args.output.as_deref());
    }
    let pipeline = match (&args.passes, args.opt_level) {
        (Some(list), _) => passes::parse_pass_list(list)?,
        (None, Some(0)) => Vec::new(),
        (None, _) => passes::DEFAULT_PIPELINE.to_vec(),
    };
    let mut print_after: Vec<&str> = Vec::new();
    for name in &args.print_after {
        let pass = passes::lookup(name)?;
        if !pipeline.iter().any(|p| p.name == pass.name) {
            return Err(Error::Usage(format!(
                "--print-after {name}: the pass does not run in this pipeline"
            )));
        }
        print_after.push(pass.name);
    }
    let obj = args.emit == Some(Emit::Obj);
    let obj_only = [
        args.obj.header.is_some(),
        args.obj.prefix.is_some(),
        args.obj.target.is_some(),
        args.obj.weights.is_some(),
    ];
    if !obj && obj_only.contains(&true) {
        return Err(Error::Usage(
            "--header, --prefix, --target and --weights go with --emit obj".into(),
        ));
    }
    let mut model_args = args.model;
    let file_weights = match &args.obj.weights {
        Some(_)
            if model_args
                .model
                .as_deref()
                .map(ModelSource::parse)
                .is_some_and(|m| matches!(m, ModelSource::File(_))) =>
        {
            return Err(Error::Usage(
                "--weights goes with the built-in model; a model file brings its own weights"
                    .into(),
            ));
        }
        Some(path) => {
            let w = weights::read(path)?;
            if model_args.file.is_none() && model_args.size.num_classes.is_none() {
                model_args.size.num_classes = Some(weights::num_classes(&w)?);
            }
            Some((path.as_path(), w))
        }
        None => None,
    };
    let (mut graph, notes, own_weights) = load_graph(&model_args)?;
    passes::run_pipeline(&mut graph, &pipeline, &mut |pass, changed, g| {
        if args.print_after_all || print_after.contains(&pass.name) {
            let header = passes::print_after_header(pass.name, changed);
            // A failed write to stderr is not worth failing the compile for.
            let _ = write!(std::io::stderr().lock(), "{header}\n{g}");
        }
    })?;
    let level = match args.emit {
        Some(Emit::Obj) => {
            let weights = match (own_weights, file_weights) {
                (Some(w), _) => ObjWeights::Model(w),
                (None, Some((path, w))) => ObjWeights::File(path, w),
                (None, None) => ObjWeights::Seeded,
            };
            return compile_object(&graph, weights, &args.obj, args.isa, args.output.as_deref());
        }
        Some(Emit::Ir) | None => Level::Ir,
        Some(Emit::Loops) => Level::Loops,
        Some(Emit::Clif) => Level::Clif,
        Some(Emit::Asm) => Level::Asm,
        Some(Emit::Memplan) => Level::Memplan,
    };
    // The import's notes (where layouts changed) as comments: the text still parses.
    let text = match level {
        Level::Ir => {
            notes.iter().map(|n| format!("# {n}\n")).collect::<String>()
                + &mnv2c::emit::emit_for(&graph, level, args.isa)?
        }
        _ => mnv2c::emit::emit_for(&graph, level, args.isa)?,
    };
    emit(&text, args.output.as_deref())
}

/// The synthetic input of `weights::synthetic_input` for any `[N, H, W, 3]` shape.
fn synthetic_for(dims: &[usize]) -> Result<mnv2c::Tensor> {
    let &[batch, height, width, 3] = dims else {
        return Err(Error::Usage(format!(
            "the model takes {dims:?}; mnv2c makes synthetic inputs for [N, H, W, 3] images only"
        )));
    };
    weights::synthetic_input(&Config {
        batch,
        height,
        width,
        ..Config::default()
    })
}

/// `compile --emit obj`: the object to `-o`, the header next to it (or to `--header`). The graph
/// has been through the pass pipeline already.
fn compile_object(
    graph: &Graph,
    weights: ObjWeights<'_>,
    args: &ObjArgs,
    isa: Isa,
    output: Option<&Path>,
) -> Result<()> {
    let Some(obj_path) = output else {
        return Err(Error::Usage("--emit obj needs -o FILE.o".into()));
    };
    let header_path = match &args.header {
        Some(h) => h.clone(),
        None => obj_path.with_extension("h"),
    };
    if header_path == obj_path {
        return Err(Error::Usage(format!(
            "the header and the object would both be {}",
            obj_path.display()
        )));
    }
    let params = match weights {
        ObjWeights::Model(w) => w,
        ObjWeights::File(path, w) => {
            weights::check(graph, &w).map_err(|e| in_file(e, path))?;
            w
        }
        ObjWeights::Seeded => weights::seeded(graph, 0)?,
    };
    let target = match args.target {
        Some(TargetArg::X86_64) => codegen::target::Target::X86_64,
        Some(TargetArg::Aarch64) => codegen::target::Target::Aarch64,
        None => codegen::target::Target::host().ok_or_else(|| {
            Error::Usage("the host is neither x86_64 nor aarch64: pass --target".into())
        })?,
    };
    let tier = match isa {
        Isa::Auto => aot::Tier::Auto,
        Isa::Portable => aot::Tier::Portable,
        Isa::Avx2 => aot::Tier::Avx2,
        Isa::Avx512 => aot::Tier::Avx512,
    };
    let opts = aot::AotOptions::new()
        .with_prefix(args.prefix.as_deref().unwrap_or(aot::DEFAULT_PREFIX))
        .with_target(target)
        .with_tier(tier)
        .with_optimize(false);
    let start = Instant::now();
    let art = aot::compile(graph, &params, &opts)?;
    let compile_ms = ms(start);
    std::fs::write(obj_path, &art.object).map_err(|e| Error::io(obj_path, e))?;
    std::fs::write(&header_path, &art.header).map_err(|e| Error::io(&header_path, e))?;
    let text = format!(
        "{}: {} bytes ({} kernels, {} bytes of code, {} bytes of constants), {} tier for {}; {}: prefix {}; compiled in {compile_ms:.0} ms\n",
        obj_path.display(),
        art.object.len(),
        art.kernels,
        art.kernel_code_bytes,
        art.const_bytes,
        tier.resolve(target)?.name(),
        target.name(),
        header_path.display(),
        opts.prefix
    );
    emit(&text, None)
}

/// A weights error with the file it came from (the library names only the tensor).
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Weights { tensor, message } => Error::Weights {
            tensor,
            message: format!("{message} (in {})", path.display()),
        },
        e => e,
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// `--list-passes`: one line per pass, marking those in the default pipeline.
fn list_passes() -> String {
    let mut text = String::new();
    for p in passes::ALL_PASSES {
        let default = passes::DEFAULT_PIPELINE.iter().any(|d| d.name == p.name);
        let mark = if default { "  (default)" } else { "" };
        text.push_str(&format!("{:<16}{}{mark}\n", p.name, p.summary));
    }
    text
}

/// Reads and verifies the IR file, reads a model file, or builds the built-in model.
fn load_graph(args: &ModelArgs) -> Result<(Graph, Vec<String>, Option<TensorMap>)> {
    let model = args.model.as_deref().map(ModelSource::parse);
    if let (None, Some(ModelSource::File(path))) = (&args.file, &model) {
        if file_model::is_onnx(path)? {
            file_model::refuse_sizes(&args.size.builtin_sizes())?;
            let m = file_model::load(path, args.size.input_shape.as_deref(), None)?;
            return Ok((m.graph, m.notes, Some(m.params)));
        }
        let m = cli_model::load(path, args.size.file_size()?)?;
        return Ok((m.graph, Vec::new(), Some(m.weights)));
    }
    let graph = match (&args.file, model) {
        (Some(_), _) if args.size.any_given() => Err(Error::Usage(
            "--num-classes, --batch, --height and --width configure a built-in model; an IR file fixes its own shapes".into(),
        )),
        (Some(path), _) => {
            let bytes = mnv2c::files::read(path)?;
            let text = String::from_utf8(bytes).map_err(|e| {
                // std's own message ("stream did not contain valid UTF-8") says neither
                // which file is meant nor where the bad byte is.
                let at = e.utf8_error().valid_up_to();
                let line = 1 + e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count();
                Error::Format {
                    path: path.clone(),
                    message: format!("not UTF-8 text (invalid byte at line {line}, offset {at})"),
                }
            })?;
            let (graph, locations) = graph::parse::parse_located(&text, &path.display().to_string())?;
            graph::verify(&graph).map_err(|e| locations.attach(e))?;
            Ok(graph)
        }
        (None, Some(_)) => frontend::mobilenet_v2(&args.size.config()?),
        (None, None) => Err(Error::Usage(
            "no model given: pass an IR file, `--model mobilenetv2` or `--model FILE`".into(),
        )),
    }?;
    Ok((graph, Vec::new(), None))
}

/// Writes `text` to `path`, or to stdout. A closed stdout (`mnv2c ... | head`) is not an error.
fn emit(text: &str, path: Option<&Path>) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|e| Error::io(p, e)),
        None => match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::io("<stdout>", e)),
            _ => Ok(()),
        },
    }
}
