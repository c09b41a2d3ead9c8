//! The `mnv2c` command line: a thin layer over the library.
//!
//! Every failure prints one line, `error: ...`, on stderr and exits with the status of its kind
//! (see `docs/errors.md`): 2 for a usage error, 3 for an invalid model, IR or weights file,
//! 4 for an input that does not fit the model, 70 for an internal error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

mod file_model;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mnv2c::frontend::weights::{self, LOGITS_WEIGHT};
use mnv2c::frontend::{self, Config};
use mnv2c::graph::{self, Graph, interp};
use mnv2c::{CompiledModel, Options, codegen, lower, passes};
use mnv2c::{Error, Result, npy};

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
    /// Run the built-in model on one input and print the top classes of each batch item.
    Run(RunArgs),
    /// Write seeded weights for the built-in model as a `.safetensors` file.
    Weights(WeightsArgs),
    /// Time the JIT-compiled built-in model: latency, compile time, a per-layer table.
    Bench(BenchArgs),
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
}

impl SizeArgs {
    fn any_given(&self) -> bool {
        [self.num_classes, self.batch, self.height, self.width]
            .iter()
            .any(Option::is_some)
    }

    /// The configuration, with the default for every size not given.
    fn config(&self) -> Config {
        let d = Config::default();
        Config {
            num_classes: self.num_classes.unwrap_or(d.num_classes),
            batch: self.batch.unwrap_or(d.batch),
            height: self.height.unwrap_or(d.height),
            width: self.width.unwrap_or(d.width),
        }
    }
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// A model file (ONNX) to time instead of the built-in model (its weights as stored).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The input shape of a model file, in its layout (fixes symbolic dimensions).
    #[arg(long, value_name = "N,C,H,W", requires = "model")]
    input_shape: Option<String>,
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
}

/// Where the graph comes from: an IR file, or a built-in model and its configuration.
#[derive(Args, Debug)]
struct ModelArgs {
    /// A graph IR file (`.ir`) to read instead of a built-in model.
    #[arg(value_name = "FILE.ir", conflicts_with = "model")]
    file: Option<PathBuf>,
    /// The built-in model (`mobilenetv2`) or a model file (ONNX; the format is read from the
    /// file's first bytes).
    #[arg(long, value_name = "mobilenetv2|FILE")]
    model: Option<String>,
    /// The input shape of a model file, in its layout (fixes symbolic dimensions).
    #[arg(long, value_name = "N,C,H,W")]
    input_shape: Option<String>,
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
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A model file (ONNX) to run instead of the built-in model, with the weights it stores;
    /// `--input` is then in the file's layout.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["weights", "seed", "num_classes", "batch", "height", "width"])]
    model: Option<PathBuf>,
    /// The input shape of a model file, in its layout (fixes symbolic dimensions).
    #[arg(long, value_name = "N,C,H,W", requires = "model")]
    input_shape: Option<String>,
    /// Write the model file's output NAME to FILE.npy (repeatable; split at the last `=`).
    #[arg(long, value_name = "NAME=FILE.npy", requires = "model")]
    output: Vec<String>,
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
    #[arg(long, conflicts_with = "threads")]
    interp: bool,
    /// Threads per inference (the JIT splits each layer's output tiles over them).
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    /// The sizes must agree with `--weights` (classes) and `--input` (batch, height, width).
    #[command(flatten)]
    size: SizeArgs,
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
    }
}

/// `mnv2c run`: resolve the configuration from the weights, the input and the options (any two
/// that disagree are an error naming both), bind the weights, run, print the top classes.
fn run_model(args: RunArgs) -> Result<()> {
    if let Some(path) = &args.model {
        return run_file_model(&args, path);
    }
    let file_weights = match &args.weights {
        Some(path) => {
            let w = weights::read(path)?;
            let n = weights::num_classes(&w)?;
            Some((path, w, n))
        }
        None => None,
    };
    let input = match &args.input {
        Some(path) => {
            let x = npy::read(path)?;
            let &[n, h, w, 3] = x.dims() else {
                return Err(Error::Input(format!(
                    "{} has shape {}, expected [N, H, W, 3] (NHWC, 3 channels)",
                    path.display(),
                    x.ty()
                )));
            };
            if [n, h, w].contains(&0) {
                return Err(Error::Input(format!(
                    "{} has shape {}: batch, height and width must be at least 1",
                    path.display(),
                    x.ty()
                )));
            }
            // Like NaN weights: a non-finite pixel is a bug upstream, and would come out as
            // NaN probabilities far from its cause.
            if let Some(i) = x.data().iter().position(|v| !v.is_finite()) {
                return Err(Error::Input(format!(
                    "{}: element {i} is {} (NaN and infinite inputs are rejected)",
                    path.display(),
                    x.data()[i]
                )));
            }
            Some((path, x, [n, h, w]))
        }
        None => None,
    };
    let d = Config::default();
    let from_weights = file_weights.as_ref().map(|(p, _, n)| {
        (
            *n,
            format!("{} ({LOGITS_WEIGHT} has {n} classes)", p.display()),
        )
    });
    let from_input = |i: usize, what: &str| {
        input.as_ref().map(|(p, x, dims)| {
            (
                dims[i],
                format!(
                    "{} (its shape {} gives {what} {})",
                    p.display(),
                    x.ty(),
                    dims[i]
                ),
            )
        })
    };
    let config = Config {
        num_classes: agree(
            "--num-classes",
            args.size.num_classes,
            from_weights,
            d.num_classes,
        )?,
        batch: agree("--batch", args.size.batch, from_input(0, "batch"), d.batch)?,
        height: agree(
            "--height",
            args.size.height,
            from_input(1, "height"),
            d.height,
        )?,
        width: agree("--width", args.size.width, from_input(2, "width"), d.width)?,
    };
    let graph = frontend::mobilenet_v2(&config)?;
    let (weights_desc, params) = match file_weights {
        Some((path, w, _)) => {
            // The library's message names the tensor; the user also needs to know which file.
            weights::check(&graph, &w).map_err(|e| match e {
                Error::Weights { tensor, message } => Error::Weights {
                    tensor,
                    message: format!("{message} (in {})", path.display()),
                },
                e => e,
            })?;
            (path.display().to_string(), w)
        }
        None => {
            let seed = args.seed.unwrap_or(0);
            (format!("seeded ({seed})"), weights::seeded(&graph, seed)?)
        }
    };
    let (input_desc, x) = match input {
        Some((path, x, _)) => (path.display().to_string(), x),
        None => ("synthetic".to_string(), weights::synthetic_input(&config)?),
    };
    let (outputs, timing) = if args.interp {
        let consts = weights::bind(&graph, &params)?;
        let start = Instant::now();
        let outputs = interp::run(&graph, &consts, std::slice::from_ref(&x))?;
        let secs = start.elapsed().as_secs_f64();
        (outputs, format!("interpreter: {secs:.3} s"))
    } else {
        let start = Instant::now();
        let options = Options::new().with_threads(args.threads);
        let model = CompiledModel::compile(&graph, &params, &options)?;
        let compile_ms = ms(start);
        let start = Instant::now();
        let first = model.run(&x)?;
        let first_ms = ms(start);
        // The first call also allocates the activation arena; the second shows the steady state.
        let start = Instant::now();
        let out = model.run(&x)?;
        let second_ms = ms(start);
        if out != first {
            return Err(Error::Codegen("two runs of one input differ".into()));
        }
        let timing = format!(
            "compile: {compile_ms:.1} ms; inference on {} thread(s): {first_ms:.2} ms (first call), {second_ms:.2} ms (second call)",
            args.threads
        );
        (vec![out.logits, out.probs], timing)
    };
    let [logits, probs] = &outputs[..] else {
        return Err(Error::Codegen(format!(
            "the model gave {} outputs, expected 2",
            outputs.len()
        )));
    };
    if let Some(path) = &args.logits {
        npy::write(path, logits)?;
    }
    if let Some(path) = &args.probs {
        npy::write(path, probs)?;
    }
    let mut text = format!(
        "mobilenetv2: input [{},{},{},3], {} classes; weights: {weights_desc}; input: {input_desc}\n\
         {timing}\n",
        config.batch, config.height, config.width, config.num_classes,
    );
    text.push_str(&top_classes(logits, probs, args.top)?);
    emit(&text, None)
}

/// `mnv2c run --model FILE`: the file's model, its own weights, the input in the file's layout.
fn run_file_model(args: &RunArgs, path: &Path) -> Result<()> {
    let request = file_model::RunRequest {
        path,
        input: args.input.as_deref(),
        input_shape: args.input_shape.as_deref(),
        logits: args.logits.as_deref(),
        probs: args.probs.as_deref(),
        outputs: &args.output,
        interp: args.interp,
        threads: args.threads,
    };
    let file_model::RunResult {
        values,
        roles,
        timing,
    } = file_model::run(&request)?;
    let get = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Codegen(format!("output %{name} was not computed")))
    };
    let (logits, probs) = (get(&roles.logits)?, get(&roles.probs)?);
    let input = args
        .input
        .as_ref()
        .map_or("synthetic".to_string(), |p| p.display().to_string());
    let mut text = format!(
        "{}: logits %{}, probabilities %{}; input: {input}\n{timing}\n",
        path.display(),
        roles.logits,
        roles.probs
    );
    text.push_str(&top_classes(logits, probs, args.top)?);
    emit(&text, None)
}

/// The `top` most probable classes of each batch item, one line each.
fn top_classes(logits: &mnv2c::Tensor, probs: &mnv2c::Tensor, top: usize) -> Result<String> {
    let &[_, classes] = probs.dims() else {
        return Err(Error::Codegen(format!(
            "probabilities have shape {:?}, expected [N, classes]",
            probs.dims()
        )));
    };
    let mut text = String::new();
    for (item, row) in probs.data().chunks_exact(classes.max(1)).enumerate() {
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
    Ok(text)
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

/// `mnv2c bench`: seeded weights (speed does not depend on their values), the synthetic input.
fn bench(args: BenchArgs) -> Result<()> {
    let settings = mnv2c::bench::Settings {
        runs: usize::try_from(args.runs).unwrap_or(usize::MAX),
        warmup: args.warmup,
    };
    if let Some(path) = &args.model {
        let report = file_model::bench(path, args.input_shape.as_deref(), args.threads, &settings)?;
        let text = if args.json {
            report.json()
        } else {
            report.table()
        };
        return emit(&text, None);
    }
    let config = args.size.config();
    let graph = frontend::mobilenet_v2(&config)?;
    let params = weights::seeded(&graph, 0)?;
    let x = weights::synthetic_input(&config)?;
    let start = Instant::now();
    let options = Options::new().with_threads(args.threads);
    let model = CompiledModel::compile(&graph, &params, &options)?;
    let compile_ms = ms(start);
    let name = format!(
        "mobilenetv2 [{},{},{},3] -> {} classes",
        config.batch, config.height, config.width, config.num_classes
    );
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
    let (mut graph, notes) = load_graph(&args.model)?;
    passes::run_pipeline(&mut graph, &pipeline, &mut |pass, changed, g| {
        if args.print_after_all || print_after.contains(&pass.name) {
            let header = passes::print_after_header(pass.name, changed);
            // A failed write to stderr is not worth failing the compile for.
            let _ = write!(std::io::stderr().lock(), "{header}\n{g}");
        }
    })?;
    let text = match args.emit {
        // The import's notes (where layouts changed) as comments: the text still parses.
        Some(Emit::Ir) | None => {
            notes.iter().map(|n| format!("# {n}\n")).collect::<String>() + &graph.to_string()
        }
        Some(level) => emit_code(&graph, level)?,
    };
    emit(&text, args.output.as_deref())
}

/// The levels below the graph IR. Lowering packs weights into kernels, so it needs values:
/// seeded ones (seed 0), which give the same code as any other weights of the same shapes.
fn emit_code(graph: &Graph, level: Emit) -> Result<String> {
    let params = weights::seeded(graph, 0)?;
    if level == Emit::Memplan {
        let no_passes = Options::new().with_optimize(false);
        let model = CompiledModel::compile(graph, &params, &no_passes)?;
        return Ok(model.memory_plan().to_string());
    }
    let consts = weights::bind(graph, &params)?;
    let program = lower::lower(graph, &consts)?;
    match level {
        Emit::Loops => Ok(program.to_string()),
        Emit::Clif => codegen::emit_clif(&program.kernels),
        _ => codegen::emit_asm(&program.kernels),
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

/// Reads and verifies the IR file, or builds the built-in model.
fn load_graph(args: &ModelArgs) -> Result<(Graph, Vec<String>)> {
    let config_given = args.size.any_given();
    let source = args.model.as_deref().map(file_model::source).transpose()?;
    if args.input_shape.is_some() && !matches!(source, Some(file_model::Source::File(_))) {
        return Err(Error::Usage(
            "--input-shape fixes the input of a model file (`--model FILE`)".into(),
        ));
    }
    if let Some(file_model::Source::File(path)) = &source {
        if config_given {
            return Err(Error::Usage(
                "--num-classes, --batch, --height and --width configure the built-in model; a model file fixes its own shapes (use --input-shape)".into(),
            ));
        }
        let model = file_model::load(path, args.input_shape.as_deref(), None)?;
        return Ok((model.graph, model.notes));
    }
    let graph = match (&args.file, source) {
        (Some(_), _) if config_given => Err(Error::Usage(
            "--num-classes, --batch, --height and --width configure a built-in model; an IR file fixes its own shapes".into(),
        )),
        (Some(path), _) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
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
        (None, Some(_)) => frontend::mobilenet_v2(&args.size.config()),
        (None, None) => Err(Error::Usage(
            "no model given: pass an IR file, `--model mobilenetv2` or `--model FILE`".into(),
        )),
    }?;
    Ok((graph, Vec::new()))
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
