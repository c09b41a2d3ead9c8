//! The `mnv2c` command line: a thin layer over the library.
//!
//! Every failure prints one line, `error: ...`, on stderr and exits with the status of its kind
//! (see `docs/errors.md`): 2 for a usage error, 3 for an invalid model, IR or weights file,
//! 4 for an input that does not fit the model, 70 for an internal error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mnv2c::frontend::{self, Config};
use mnv2c::graph::{self, Graph};
use mnv2c::passes;
use mnv2c::{Error, Result};

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
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ModelName {
    /// The seed's MobileNetV2.
    Mobilenetv2,
}

/// Where the graph comes from: an IR file, or a built-in model and its configuration.
#[derive(Args, Debug)]
struct ModelArgs {
    /// A graph IR file (`.ir`) to read instead of a built-in model.
    #[arg(value_name = "FILE.ir", conflicts_with = "model")]
    file: Option<PathBuf>,
    /// A built-in model.
    #[arg(long, value_enum)]
    model: Option<ModelName>,
    /// Number of classes of the built-in model.
    #[arg(long, value_name = "N")]
    num_classes: Option<usize>,
    /// Batch size of the built-in model's input.
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// Input height of the built-in model.
    #[arg(long, value_name = "H")]
    height: Option<usize>,
    /// Input width of the built-in model.
    #[arg(long, value_name = "W")]
    width: Option<usize>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Emit {
    /// The graph IR in its text form.
    Ir,
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
            ExitCode::from(exit_status(&e))
        }
    }
}

/// The exit status of each kind of error (documented in `docs/errors.md`).
fn exit_status(e: &Error) -> u8 {
    match e {
        Error::Usage(_) => 2,
        Error::Parse { .. }
        | Error::Verify { .. }
        | Error::Config(_)
        | Error::Weights { .. }
        | Error::Format { .. }
        | Error::Io { .. } => 3,
        Error::Input(_) => 4,
        Error::Codegen(_) => 70,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Compile(args) => compile(args),
    }
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
    let mut graph = load_graph(&args.model)?;
    passes::run_pipeline(&mut graph, &pipeline, &mut |pass, changed, g| {
        if args.print_after_all || print_after.contains(&pass.name) {
            let header = passes::print_after_header(pass.name, changed);
            // A failed write to stderr is not worth failing the compile for.
            let _ = write!(std::io::stderr().lock(), "{header}\n{g}");
        }
    })?;
    let text = match args.emit {
        Some(Emit::Ir) | None => graph.to_string(),
    };
    emit(&text, args.output.as_deref())
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
fn load_graph(args: &ModelArgs) -> Result<Graph> {
    let config_given = [args.num_classes, args.batch, args.height, args.width]
        .iter()
        .any(Option::is_some);
    match (&args.file, args.model) {
        (Some(_), _) if config_given => Err(Error::Usage(
            "--num-classes, --batch, --height and --width configure a built-in model; an IR file fixes its own shapes".into(),
        )),
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let graph = graph::parse(&text, &path.display().to_string())?;
            graph::verify(&graph)?;
            Ok(graph)
        }
        (None, Some(ModelName::Mobilenetv2)) => {
            let d = Config::default();
            frontend::mobilenet_v2(&Config {
                num_classes: args.num_classes.unwrap_or(d.num_classes),
                batch: args.batch.unwrap_or(d.batch),
                height: args.height.unwrap_or(d.height),
                width: args.width.unwrap_or(d.width),
            })
        }
        (None, None) => Err(Error::Usage(
            "no model given: pass an IR file or `--model mobilenetv2`".into(),
        )),
    }
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
