//! Ahead-of-time objects, linked into C programs: the example in `examples/c/` against the JIT
//! (bit for bit, same tier), two prefixes in one program with the entry's pointer checks, and
//! the AArch64 object under `qemu-aarch64` against the interpreter (within the golden
//! tolerance).
//!
//! Tools: `cc` (the system C compiler); for AArch64 `aarch64-linux-gnu-gcc` and
//! `qemu-aarch64` (Debian: `gcc-aarch64-linux-gnu qemu-user`; `.ci/run` installs them). A test
//! whose tool is missing prints "skipped: <what is missing>" and returns. The bit-identity test
//! runs on random weights; its TensorFlow golden variant is `#[ignore]`d like every golden test
//! (`.ci/run` runs it with `MNV2C_GOLDEN_DIR` set).

mod common;
mod golden_dir;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{random_inputs, random_weights};
use mnv2c::frontend::{Config, mobilenet_v2, weights};
use mnv2c::graph::interp;
use mnv2c::tolerance::{PROBS_ABS, compare};
use mnv2c::{CompiledModel, Options, Tensor, TensorMap, npy};

const MNV2C: &str = env!("CARGO_BIN_EXE_mnv2c");

/// A fresh directory for one test.
fn workdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("aot-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether `tool --version` runs.
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A batch-1 configuration of the built-in model.
fn small(num_classes: usize, height: usize, width: usize) -> Config {
    Config {
        num_classes,
        batch: 1,
        height,
        width,
    }
}

/// Whether a test must be skipped for lack of an x86_64 host (when `x86_only`) or of `tools`;
/// if so, says what is missing.
fn skip(x86_only: bool, tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !have(t))
        .map(|t| t.to_string())
        .collect();
    if x86_only && cfg!(not(target_arch = "x86_64")) {
        missing.insert(0, "an x86_64 host".into());
    }
    if missing.is_empty() {
        return false;
    }
    eprintln!(
        "skipped: {} missing (Debian: apt-get install gcc gcc-aarch64-linux-gnu qemu-user)",
        missing.join(", ")
    );
    true
}

/// Runs a command, panicking with its output unless it succeeds; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A model configuration, its weights (saved to `dir/w.safetensors`) and one input (saved to
/// `dir/x.npy`).
struct Case {
    config: Config,
    weights: TensorMap,
    input: Tensor,
}

impl Case {
    fn random(dir: &Path, config: Config) -> Case {
        let g = mobilenet_v2(&config).unwrap();
        let case = Case {
            config,
            weights: random_weights(&g, 11),
            input: random_inputs(&g, 11).remove(0),
        };
        weights::save(&dir.join("w.safetensors"), &case.weights).unwrap();
        npy::write(&dir.join("x.npy"), &case.input).unwrap();
        case
    }

    /// TensorFlow's golden weights and input (224x224, 1000 classes).
    fn golden(dir: &Path) -> Case {
        let g = golden_dir::golden_dir().join("a");
        std::fs::copy(g.join("weights.safetensors"), dir.join("w.safetensors")).unwrap();
        std::fs::copy(g.join("input_0.npy"), dir.join("x.npy")).unwrap();
        Case {
            config: Config::default(),
            weights: weights::read(&g.join("weights.safetensors")).unwrap(),
            input: npy::read(&g.join("input_0.npy")).unwrap(),
        }
    }

    /// `mnv2c compile --emit obj` for this case into `dir/model.o` and `dir/model.h`.
    fn compile(&self, dir: &Path, extra: &[&str]) {
        let c = &self.config;
        let (h, w) = (c.height.to_string(), c.width.to_string());
        let mut cmd = Command::new(MNV2C);
        cmd.args(["compile", "--model", "mobilenetv2", "--emit", "obj"])
            .args(["--height", &h, "--width", &w, "-o"])
            .arg(dir.join("model.o"))
            .arg("--weights")
            .arg(dir.join("w.safetensors"))
            .args(extra);
        run(&mut cmd);
    }

    /// The JIT's probabilities (default options: portable tier on this host, 1 thread).
    fn jit_probs(&self) -> Vec<f32> {
        let g = mobilenet_v2(&self.config).unwrap();
        let model = CompiledModel::compile(&g, &self.weights, &Options::default()).unwrap();
        model.run(&self.input).unwrap().probs.data().to_vec()
    }

    /// The interpreter's probabilities.
    fn interp_probs(&self) -> Vec<f32> {
        let g = mobilenet_v2(&self.config).unwrap();
        let consts = weights::bind(&g, &self.weights).unwrap();
        let out = interp::run(&g, &consts, std::slice::from_ref(&self.input)).unwrap();
        out[1].data().to_vec()
    }
}

/// Builds `examples/c/main.c` against `dir/model.o` with `cc_args`, then runs it (through
/// `runner` if given) on `dir/x.npy`; returns the output it wrote and what it printed.
fn run_example(dir: &Path, cc: &[&str], runner: Option<&str>) -> (Vec<f32>, String) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/main.c");
    let exe = dir.join("classify");
    run(Command::new(cc[0])
        .args(&cc[1..])
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(dir)
        .arg(&example)
        .arg(dir.join("model.o"))
        .args(["-lm", "-o"])
        .arg(&exe));
    let mut cmd = match runner {
        Some(r) => {
            let mut c = Command::new(r);
            c.arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let out_file = dir.join("out.f32");
    let printed = run(cmd.arg(dir.join("x.npy")).arg("--out").arg(&out_file));
    let bytes = std::fs::read(&out_file).unwrap();
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (values, printed)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Builds the example against `case`'s x86-64 object and checks it against the JIT, bit for
/// bit, and that it prints the JIT's top class.
fn example_matches_the_jit(dir: &Path, case: &Case) {
    case.compile(dir, &["--target", "x86_64", "--isa", "portable"]);
    let (c_out, printed) = run_example(dir, &["cc"], None);
    let jit = case.jit_probs();
    assert_eq!(bits(&c_out), bits(&jit), "C output differs from the JIT's");
    let top = mnv2c::tolerance::argmax(&jit).unwrap();
    assert!(
        printed.contains(&format!(" 1. class {top:>4}")),
        "printed:\n{printed}"
    );
}

#[test]
fn the_c_example_reproduces_the_jit_bit_for_bit() {
    if skip(true, &["cc"]) {
        return;
    }
    let dir = workdir("example");
    let config = small(10, 48, 40);
    example_matches_the_jit(&dir, &Case::random(&dir, config));
}

#[test]
#[ignore = "needs TensorFlow's golden data: set MNV2C_GOLDEN_DIR (docs/testing.md); .ci/run runs it"]
fn the_c_example_reproduces_the_jit_on_the_golden_input() {
    if skip(true, &["cc"]) {
        return;
    }
    let dir = workdir("example-golden");
    example_matches_the_jit(&dir, &Case::golden(&dir));
}

#[test]
fn two_prefixes_link_into_one_program_run_concurrently_and_refuse_bad_pointers() {
    if skip(true, &["cc"]) {
        return;
    }
    let dir = workdir("two");
    let configs = [("a", 10, 40), ("b", 7, 33)];
    let mut expected = Vec::new();
    for (prefix, classes, size) in configs {
        let config = small(classes, size, size);
        let (n, s) = (classes.to_string(), size.to_string());
        run(Command::new(MNV2C)
            .args(["compile", "--model", "mobilenetv2", "--emit", "obj"])
            .args(["--num-classes", &n, "--height", &s, "--width", &s])
            .args(["--prefix", prefix, "-o"])
            .arg(dir.join(format!("{prefix}.o"))));
        let g = mobilenet_v2(&config).unwrap();
        let w = weights::seeded(&g, 0).unwrap();
        let model = CompiledModel::compile(&g, &w, &Options::default()).unwrap();
        let x = weights::synthetic_input(&config).unwrap();
        expected.push(model.run(&x).unwrap().probs.data().to_vec());
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/two_models.c");
    let exe = dir.join("two_models");
    run(Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&dir)
        .arg(&src)
        .arg(dir.join("a.o"))
        .arg(dir.join("b.o"))
        .args(["-pthread", "-lm", "-o"])
        .arg(&exe));
    let outs = [dir.join("a.f32"), dir.join("b.f32")];
    assert_eq!(run(Command::new(&exe).args(&outs)), "ok\n");
    for (path, want) in outs.iter().zip(&expected) {
        let got: Vec<u32> = std::fs::read(path)
            .unwrap()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got, bits(want), "{}", path.display());
    }
    // Only the four entry points of each prefix are defined globally.
    if have("nm") {
        let listing = run(Command::new("nm")
            .args(["-g", "--defined-only"])
            .arg(dir.join("a.o")));
        let mut names: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "a_input_elems",
                "a_output_elems",
                "a_run",
                "a_scratch_bytes"
            ]
        );
    }
}

#[test]
fn the_aarch64_object_runs_under_qemu_and_matches_the_interpreter() {
    if skip(false, &["aarch64-linux-gnu-gcc", "qemu-aarch64"]) {
        return;
    }
    let dir = workdir("aarch64");
    let config = small(10, 64, 56);
    let case = Case::random(&dir, config);
    case.compile(&dir, &["--target", "aarch64"]);
    // Static, so qemu needs no AArch64 sysroot at run time.
    let cc = ["aarch64-linux-gnu-gcc", "-static"];
    let (out, _) = run_example(&dir, &cc, Some("qemu-aarch64"));
    let reference = case.interp_probs();
    let c = compare(&out, &reference, 0.0, PROBS_ABS).unwrap();
    assert!(c.passed(), "aarch64 object against the interpreter: {c:?}");
    assert_eq!(
        mnv2c::tolerance::argmax(&out),
        mnv2c::tolerance::argmax(&reference)
    );
}

#[test]
fn the_x86_object_refuses_a_cpu_without_its_tier() {
    if skip(true, &["cc", "qemu-x86_64"]) {
        return;
    }
    let dir = workdir("cpu");
    let config = small(10, 32, 32);
    let case = Case::random(&dir, config);
    case.compile(&dir, &["--target", "x86_64"]);
    let (out, _) = run_example(&dir, &["cc"], None);
    // qemu's CPU models: Nehalem has no AVX; Haswell has the whole portable tier, so taking
    // away any one feature must be noticed. Each run exits with `run`'s return code.
    for (cpu, code) in [
        ("Haswell", 0),
        ("Nehalem", 3),
        ("Haswell,-fma", 3),
        ("Haswell,-avx2", 3),
        ("Haswell,-bmi2", 3),
        ("Haswell,-xsave", 3),
    ] {
        let res = Command::new("qemu-x86_64")
            .args(["-cpu", cpu])
            .arg(dir.join("classify"))
            .arg(dir.join("x.npy"))
            .output()
            .unwrap();
        assert_eq!(res.status.code(), Some(code), "-cpu {cpu}: {res:?}");
    }
    assert_eq!(out.len(), 10);
}
