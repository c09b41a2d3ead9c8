//! The bad-input corpus for weights, `.npy` inputs and the command line (the IR cases are the
//! files of `ir-examples/invalid/`, checked by `tests/cli.rs`).
//!
//! Each case is data: the files to write, the `mnv2c` arguments, the exit status and the words
//! the one-line error must contain. The malformed files are generated here, into a temporary
//! directory per case, from the library's own writers plus a byte-level safetensors builder, so
//! no binary file is committed and each case states exactly how its file is broken.
//!
//! Every case must fail with its documented status (`docs/errors.md`), print exactly one line
//! `error: ...` on stderr containing every expected word, print nothing on stdout, and never
//! panic or print a backtrace (the tests run with `RUST_BACKTRACE=1` to make one visible).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use mnv2c::frontend::onnx::proto;
use mnv2c::frontend::weights::{self, LOGITS_WEIGHT};
use mnv2c::frontend::{Config, mobilenet_v2};
use mnv2c::{Tensor, TensorMap, npy};

/// A file a case writes before running.
enum File {
    Bytes(Vec<u8>),
    Dir,
}

struct Case {
    what: &'static str,
    files: Vec<(&'static str, File)>,
    /// Arguments; `{d}` is replaced by the case's directory.
    args: Vec<&'static str>,
    status: i32,
    /// Words the error line must contain; `{d}` as in `args`.
    needles: Vec<&'static str>,
}

fn case(
    what: &'static str,
    files: Vec<(&'static str, File)>,
    args: &[&'static str],
    status: i32,
    needles: &[&'static str],
) -> Case {
    Case {
        what,
        files,
        args: args.to_vec(),
        status,
        needles: needles.to_vec(),
    }
}

const CONV1: &str = "mobilenetv2/conv1_1/conv2d/w";

/// Seeded weights of the 10-class model (the smallest classifier keeps the files at ~9 MB).
fn base_weights() -> &'static TensorMap {
    static W: OnceLock<TensorMap> = OnceLock::new();
    W.get_or_init(|| {
        let graph = mobilenet_v2(&Config {
            num_classes: 10,
            ..Config::default()
        })
        .unwrap();
        weights::seeded(&graph, 0).unwrap()
    })
}

fn base_weight_bytes() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| weights::to_bytes(base_weights()).unwrap())
}

/// The seeded 10-class weights, changed by `f`, as a `.safetensors` file.
fn weights_with(f: impl FnOnce(&mut TensorMap)) -> File {
    let mut w = base_weights().clone();
    f(&mut w);
    File::Bytes(weights::to_bytes(&w).unwrap())
}

/// A safetensors file from its JSON header and data bytes, exactly as given (so the header can
/// lie about dtypes, shapes and offsets).
fn safetensors(header: &str, data: &[u8]) -> File {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    File::Bytes(out)
}

/// A `.npy` file from its header dict and data bytes, exactly as given (version 1.0).
fn npy_raw(header: &str, data: &[u8]) -> File {
    let mut h = header.to_string();
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    File::Bytes(out)
}

/// A well-formed f32 `.npy` file of shape `dims`, every element `value`.
fn npy_of(dims: &[usize], value: f32) -> File {
    let n = dims.iter().product();
    File::Bytes(npy::to_bytes(
        &Tensor::new(dims.to_vec(), vec![value; n]).unwrap(),
    ))
}

fn bytes(b: &[u8]) -> File {
    File::Bytes(b.to_vec())
}

fn weights_cases() -> Vec<Case> {
    let run = |f: &'static str| -> Vec<&'static str> { vec!["run", "--interp", "--weights", f] };
    let full = base_weight_bytes();
    let mut c = vec![
        case(
            "0-byte weights file",
            vec![("w.safetensors", bytes(&[]))],
            &run("{d}/w.safetensors"),
            3,
            &["{d}/w.safetensors", "not a readable safetensors file"],
        ),
        case(
            "garbage instead of a header",
            vec![(
                "w.safetensors",
                bytes(b"this is not a safetensors file at all"),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file", "header too large"],
        ),
        case(
            "header length larger than the file",
            vec![("w.safetensors", {
                let mut b = 1000u64.to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                File::Bytes(b)
            })],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file", "invalid header length"],
        ),
        case(
            "header that is not JSON",
            vec![("w.safetensors", safetensors("{not json", &[]))],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file", "invalid JSON in header"],
        ),
        case(
            "header that is not UTF-8",
            vec![("w.safetensors", {
                let mut b = 4u64.to_le_bytes().to_vec();
                b.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
                File::Bytes(b)
            })],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file", "UTF-8"],
        ),
        case(
            "truncated file (last byte missing)",
            vec![("w.safetensors", bytes(&full[..full.len() - 1]))],
            &run("{d}/w.safetensors"),
            3,
            &["{d}/w.safetensors", "not a readable safetensors file"],
        ),
        case(
            "truncated file (cut inside the header)",
            vec![("w.safetensors", bytes(&full[..100]))],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file"],
        ),
        case(
            "tensor offsets past the end of the file",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8000]}}"#,
                    &[0; 8],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file"],
        ),
        case(
            "offsets that disagree with the shape",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &[
                "not a readable safetensors file",
                "invalid shape, data type, or offset",
            ],
        ),
        case(
            "two tensors over the same bytes",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file", "invalid offset"],
        ),
        case(
            "a key given twice in the header",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                    &[0; 16],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file"],
        ),
        case(
            "a shape whose size overflows",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["not a readable safetensors file"],
        ),
        case(
            "an F16 tensor",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"mobilenetv2/logits/w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["tensor 'mobilenetv2/logits/w'", "dtype F16", "expected F32"],
        ),
        case(
            "an I64 tensor",
            vec![(
                "w.safetensors",
                safetensors(
                    r#"{"x":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["tensor 'x'", "dtype I64", "expected F32"],
        ),
        case(
            "an empty weights set (valid file, no tensors)",
            vec![("w.safetensors", safetensors("{}", &[]))],
            &run("{d}/w.safetensors"),
            3,
            &["tensor 'mobilenetv2/logits/w'", "missing"],
        ),
        case(
            "a missing tensor",
            vec![(
                "w.safetensors",
                weights_with(|w| {
                    w.remove(CONV1);
                }),
            )],
            &run("{d}/w.safetensors"),
            3,
            &[
                "tensor 'mobilenetv2/conv1_1/conv2d/w'",
                // Not "expected f32 f32[...]", as it once said.
                "missing from the weights (expected f32[3,3,3,32])",
            ],
        ),
        case(
            "an extra tensor",
            vec![(
                "w.safetensors",
                weights_with(|w| {
                    w.insert(
                        "mobilenetv2/extra/w".into(),
                        Tensor::new(vec![2], vec![0.0; 2]).unwrap(),
                    );
                }),
            )],
            &run("{d}/w.safetensors"),
            3,
            &[
                "tensor 'mobilenetv2/extra/w'",
                "unexpected",
                "no such parameter",
            ],
        ),
        case(
            "a mis-shaped tensor",
            vec![(
                "w.safetensors",
                weights_with(|w| {
                    let t = w.remove(CONV1).unwrap();
                    w.insert(CONV1.into(), t.reshaped(vec![3, 3, 32, 3]).unwrap());
                }),
            )],
            &run("{d}/w.safetensors"),
            3,
            &[
                "tensor 'mobilenetv2/conv1_1/conv2d/w'",
                "has shape f32[3,3,32,3], expected f32[3,3,3,32]",
                "{d}/w.safetensors",
            ],
        ),
        case(
            "a classifier kernel of the wrong rank",
            vec![(
                "w.safetensors",
                weights_with(|w| {
                    let t = w.remove(LOGITS_WEIGHT).unwrap();
                    w.insert(LOGITS_WEIGHT.into(), t.reshaped(vec![1280, 10]).unwrap());
                }),
            )],
            &run("{d}/w.safetensors"),
            3,
            &[
                "tensor 'mobilenetv2/logits/w'",
                "has shape f32[1280,10], expected [1,1,1280,num_classes]",
            ],
        ),
        case(
            "a NaN weight",
            vec![(
                "w.safetensors",
                weights_with(|w| w.get_mut(CONV1).unwrap().data_mut()[7] = f32::NAN),
            )],
            &run("{d}/w.safetensors"),
            3,
            &[
                "tensor 'mobilenetv2/conv1_1/conv2d/w'",
                "element 7 is NaN",
                "rejected",
            ],
        ),
        case(
            "an infinite weight",
            vec![(
                "w.safetensors",
                weights_with(|w| {
                    w.get_mut(LOGITS_WEIGHT).unwrap().data_mut()[0] = f32::NEG_INFINITY;
                }),
            )],
            &run("{d}/w.safetensors"),
            3,
            &["tensor 'mobilenetv2/logits/w'", "element 0 is -inf"],
        ),
        case(
            "a directory instead of a weights file",
            vec![("w.safetensors", File::Dir)],
            &run("{d}/w.safetensors"),
            3,
            &["{d}/w.safetensors", "Is a directory"],
        ),
        case(
            "a weights file that does not exist",
            vec![],
            &run("{d}/none.safetensors"),
            3,
            &["{d}/none.safetensors", "No such file or directory"],
        ),
        case(
            "a mis-shaped tensor, JIT path",
            vec![(
                "w.safetensors",
                weights_with(|w| {
                    let t = w.remove(CONV1).unwrap();
                    w.insert(CONV1.into(), t.reshaped(vec![3, 3, 32, 3]).unwrap());
                }),
            )],
            &["run", "--weights", "{d}/w.safetensors"],
            3,
            &[
                "tensor 'mobilenetv2/conv1_1/conv2d/w'",
                "has shape f32[3,3,32,3], expected f32[3,3,3,32]",
            ],
        ),
        case(
            "--num-classes that disagrees with the weights",
            vec![("w.safetensors", bytes(full))],
            &[
                "run",
                "--interp",
                "--weights",
                "{d}/w.safetensors",
                "--num-classes",
                "1000",
            ],
            2,
            &["--num-classes 1000 conflicts with", "has 10 classes"],
        ),
    ];
    c.push(case(
        "--seed together with --weights",
        vec![("w.safetensors", bytes(full))],
        &[
            "run",
            "--interp",
            "--weights",
            "{d}/w.safetensors",
            "--seed",
            "3",
        ],
        2,
        &["--seed", "cannot be used with"],
    ));
    c
}

fn npy_cases() -> Vec<Case> {
    let run = |f: &'static str| -> Vec<&'static str> { vec!["run", "--interp", "--input", f] };
    let f4 =
        |shape: &str| format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    vec![
        case(
            "0-byte .npy",
            vec![("x.npy", bytes(&[]))],
            &run("{d}/x.npy"),
            3,
            &["{d}/x.npy", "not a readable .npy file", "magic"],
        ),
        case(
            "float64 input",
            vec![(
                "x.npy",
                npy_raw(
                    "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                    &[0; 8],
                ),
            )],
            &run("{d}/x.npy"),
            3,
            &["dtype '<f8' is not supported", "'<f4'"],
        ),
        case(
            "uint8 input (an image as saved by PIL)",
            vec![(
                "x.npy",
                npy_raw(
                    "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }",
                    &[0; 2],
                ),
            )],
            &run("{d}/x.npy"),
            3,
            &["dtype '|u1' is not supported"],
        ),
        case(
            "big-endian float32",
            vec![(
                "x.npy",
                npy_raw(
                    "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                    &[0; 4],
                ),
            )],
            &run("{d}/x.npy"),
            3,
            &["dtype '>f4' is not supported"],
        ),
        case(
            "Fortran order",
            vec![(
                "x.npy",
                npy_raw(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 2, 2, 3), }",
                    &[0; 48],
                ),
            )],
            &run("{d}/x.npy"),
            3,
            &["Fortran order is not supported"],
        ),
        case(
            "truncated data",
            vec![("x.npy", {
                let File::Bytes(mut b) = npy_of(&[1, 8, 8, 3], 0.5) else {
                    unreachable!()
                };
                b.truncate(b.len() - 5);
                File::Bytes(b)
            })],
            &run("{d}/x.npy"),
            3,
            &["needs 768 data bytes, found 763 (truncated)"],
        ),
        case(
            "trailing bytes after the data",
            vec![("x.npy", {
                let File::Bytes(mut b) = npy_of(&[1, 8, 8, 3], 0.5) else {
                    unreachable!()
                };
                b.extend_from_slice(&[0; 3]);
                File::Bytes(b)
            })],
            &run("{d}/x.npy"),
            3,
            &["found 771 (trailing bytes)"],
        ),
        case(
            "header length past the end",
            vec![("x.npy", bytes(b"\x93NUMPY\x01\x00\xff\x00{'descr'"))],
            &run("{d}/x.npy"),
            3,
            &["truncated: the header claims 255 bytes"],
        ),
        case(
            "unknown format version",
            vec![("x.npy", bytes(b"\x93NUMPY\x07\x00\x00\x00"))],
            &run("{d}/x.npy"),
            3,
            &["unsupported format version 7.0"],
        ),
        case(
            "negative dimension in the header",
            vec![("x.npy", npy_raw(&f4("(1, -224, 224, 3)"), &[]))],
            &run("{d}/x.npy"),
            3,
            &["bad header", "expected a dimension"],
        ),
        case(
            "shape whose size overflows",
            vec![(
                "x.npy",
                npy_raw(
                    &f4("(4611686018427387904, 4611686018427387904, 1, 3)"),
                    &[0; 4],
                ),
            )],
            &run("{d}/x.npy"),
            3,
            &["is too large"],
        ),
        case(
            "huge shape on a tiny file (no giant allocation)",
            vec![("x.npy", npy_raw(&f4("(100000, 10000, 10000, 3)"), &[0; 4]))],
            &run("{d}/x.npy"),
            3,
            &["needs 120000000000000 data bytes, found 4 (truncated)"],
        ),
        case(
            "dimension larger than 64 bits",
            vec![(
                "x.npy",
                npy_raw(&f4("(1, 99999999999999999999999, 1, 3)"), &[]),
            )],
            &run("{d}/x.npy"),
            3,
            &["bad header", "expected a dimension"],
        ),
        case(
            "header that is not a dict",
            vec![("x.npy", npy_raw("[1, 2, 3]", &[]))],
            &run("{d}/x.npy"),
            3,
            &["bad header", "expected '{'"],
        ),
        case(
            "header that is not text",
            vec![("x.npy", bytes(b"\x93NUMPY\x01\x00\x02\x00\xff\xfe"))],
            &run("{d}/x.npy"),
            3,
            &["the header is not text"],
        ),
        case(
            "rank 3, an image without its batch axis",
            vec![("x.npy", npy_of(&[224, 224, 3], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[224,224,3]", "expected [N, H, W, 3]"],
        ),
        case(
            "four channels (RGBA)",
            vec![("x.npy", npy_of(&[1, 32, 32, 4], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[1,32,32,4]", "3 channels"],
        ),
        case(
            "channels first (NCHW)",
            vec![("x.npy", npy_of(&[1, 3, 32, 32], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[1,3,32,32]", "NHWC"],
        ),
        case(
            "a scalar",
            vec![("x.npy", npy_of(&[], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[]", "expected [N, H, W, 3]"],
        ),
        case(
            "zero batch items",
            vec![("x.npy", npy_of(&[0, 32, 32, 3], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[0,32,32,3]", "must be at least 1"],
        ),
        // A zero-element shape is status 4 whichever dimension is zero (the channel count was
        // once reported through the rank/channels check, the batch through another).
        case(
            "an input that is a device (read until memory runs out, once)",
            vec![],
            &["run", "--interp", "--input", "/dev/zero"],
            3,
            &["/dev/zero: not a regular file"],
        ),
        case(
            "an IR file that is a device",
            vec![],
            &["compile", "/dev/zero", "--emit", "ir"],
            3,
            &["/dev/zero: not a regular file"],
        ),
        case(
            "zero channels",
            vec![("x.npy", npy_of(&[1, 32, 32, 0], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[1,32,32,0], which has no elements"],
        ),
        case(
            "zero columns",
            vec![("x.npy", npy_of(&[1, 32, 0, 3], 0.5))],
            &run("{d}/x.npy"),
            4,
            &["has shape f32[1,32,0,3], which has no elements"],
        ),
        case(
            "a NaN pixel",
            vec![("x.npy", npy_of(&[1, 8, 8, 3], f32::NAN))],
            &run("{d}/x.npy"),
            4,
            &["element 0 is NaN", "rejected"],
        ),
        case(
            "an infinite pixel",
            vec![("x.npy", npy_of(&[1, 8, 8, 3], f32::INFINITY))],
            &run("{d}/x.npy"),
            4,
            &["element 0 is inf"],
        ),
        case(
            "a NaN pixel, JIT path",
            vec![("x.npy", npy_of(&[1, 8, 8, 3], f32::NAN))],
            &["run", "--input", "{d}/x.npy"],
            4,
            &["element 0 is NaN", "rejected"],
        ),
        case(
            "rank 3, JIT path",
            vec![("x.npy", npy_of(&[224, 224, 3], 0.5))],
            &["run", "--input", "{d}/x.npy"],
            4,
            &["has shape f32[224,224,3]", "expected [N, H, W, 3]"],
        ),
        case(
            "input height that disagrees with --height",
            vec![("x.npy", npy_of(&[1, 32, 32, 3], 0.5))],
            &["run", "--interp", "--input", "{d}/x.npy", "--height", "224"],
            2,
            &["--height 224 conflicts with", "gives height 32"],
        ),
        case(
            "input batch that disagrees with --batch",
            vec![("x.npy", npy_of(&[2, 32, 32, 3], 0.5))],
            &["run", "--interp", "--input", "{d}/x.npy", "--batch", "1"],
            2,
            &["--batch 1 conflicts with", "gives batch 2"],
        ),
        case(
            "a directory instead of an input file",
            vec![("x.npy", File::Dir)],
            &run("{d}/x.npy"),
            3,
            &["{d}/x.npy", "Is a directory"],
        ),
    ]
}

fn cli_cases() -> Vec<Case> {
    vec![
        case("no command", vec![], &[], 2, &["no command given"]),
        case(
            "unknown command",
            vec![],
            &["frobnicate"],
            2,
            &["unrecognized subcommand 'frobnicate'"],
        ),
        case(
            "unknown option",
            vec![],
            &["run", "--interp", "--fast"],
            2,
            &["unexpected argument '--fast'"],
        ),
        case(
            "zero threads",
            vec![],
            &["run", "--threads", "0"],
            2,
            &["threads must be between 1 and 256, got 0"],
        ),
        case(
            "an unknown pass",
            vec![],
            &[
                "compile",
                "--model",
                "mobilenetv2",
                "--emit",
                "ir",
                "--passes",
                "fold-batchnorm,bogus",
            ],
            2,
            &["unknown pass 'bogus'", "valid passes"],
        ),
        case(
            "a number that is not a number",
            vec![],
            &["run", "--interp", "--top", "five"],
            2,
            &["invalid value 'five' for '--top <K>'"],
        ),
        case(
            "a negative size",
            vec![],
            &["run", "--interp", "--batch=-1"],
            2,
            &["invalid value '-1' for '--batch <N>'"],
        ),
        case(
            "zero classes",
            vec![],
            &["run", "--interp", "--num-classes", "0"],
            3,
            &[
                "invalid model configuration",
                "num_classes must be at least 1",
            ],
        ),
        case(
            "a height whose sizes overflow",
            vec![],
            &[
                "run",
                "--interp",
                "--height",
                "9223372036854775807",
                "--width",
                "9223372036854775807",
            ],
            3,
            &["too large"],
        ),
        case(
            "an input too large to allocate",
            vec![],
            &[
                "run", "--interp", "--batch", "100000", "--height", "10000", "--width", "10000",
            ],
            3,
            &[
                "out of memory: cannot allocate 120000000000000 bytes",
                "f32[100000,10000,10000,3]",
            ],
        ),
        case(
            "a classifier too large to allocate",
            vec![],
            &[
                "weights",
                "--num-classes",
                "1000000000000000",
                "-o",
                "{d}/w.safetensors",
            ],
            3,
            &["tensor 'mobilenetv2/logits/w'", "too large to allocate"],
        ),
        case(
            "weights written into a missing directory",
            vec![],
            &[
                "weights",
                "--num-classes",
                "2",
                "-o",
                "{d}/no/such/w.safetensors",
            ],
            3,
            &["{d}/no/such/w.safetensors", "No such file or directory"],
        ),
        case(
            "output to a directory",
            vec![("out", File::Dir)],
            &[
                "compile",
                "--model",
                "mobilenetv2",
                "--emit",
                "ir",
                "-o",
                "{d}/out",
            ],
            3,
            &["{d}/out", "Is a directory"],
        ),
        case(
            "an IR file that is a directory",
            vec![("m.ir", File::Dir)],
            &["compile", "{d}/m.ir", "--emit", "ir"],
            3,
            &["{d}/m.ir", "Is a directory"],
        ),
        case(
            "an IR file that is not UTF-8",
            vec![("m.ir", bytes(b"graph g {\n  %x = input : f32[1]\xff\n}\n"))],
            &["compile", "{d}/m.ir", "--emit", "ir"],
            3,
            &["{d}/m.ir", "not UTF-8 text", "line 2"],
        ),
        case(
            "an IR file with a NUL byte",
            vec![("m.ir", bytes(b"graph g {\0}\n"))],
            &["compile", "{d}/m.ir", "--emit", "ir"],
            3,
            &["{d}/m.ir:1:10", "unexpected character `\\0`"],
        ),
        case(
            "an IR file and a model configuration",
            vec![],
            &[
                "compile",
                "ir-examples/head.ir",
                "--batch",
                "2",
                "--emit",
                "ir",
            ],
            2,
            &["configure a built-in model"],
        ),
    ]
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keras")
            .join(name),
    )
    .unwrap()
}

/// CRC-32 (IEEE), for the zip and PNG files built here.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zip archive of stored members, as Keras writes a `.keras` file.
fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in members {
        let offset = out.len() as u32;
        let (crc, len, nlen) = (crc32(data), data.len() as u32, name.len() as u16);
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend(crc.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend(nlen.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        central.extend(crc.to_le_bytes());
        central.extend(len.to_le_bytes());
        central.extend(len.to_le_bytes());
        central.extend(nlen.to_le_bytes());
        central.extend([0u8; 12]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let (cd_offset, cd_len, n) = (out.len() as u32, central.len() as u32, members.len() as u16);
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend(n.to_le_bytes());
    out.extend(n.to_le_bytes());
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// The `a025_40x48_avg.keras` fixture with its config.json edited by `edit` (replace `from` by
/// `to`, once).
fn keras_edited(from: &str, to: &str) -> File {
    let bytes = fixture_bytes("a025_40x48_avg.keras");
    let path = Path::new("a.keras");
    let config = String::from_utf8(
        mnv2c::frontend::keras::zip::member(&bytes, "config.json", path)
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(config.contains(from), "the fixture's config has {from}");
    let config = config.replacen(from, to, 1);
    let weights = mnv2c::frontend::keras::zip::member(&bytes, "model.weights.h5", path).unwrap();
    File::Bytes(zip_of(&[
        ("config.json", config.as_bytes()),
        ("model.weights.h5", weights),
    ]))
}

/// A PNG whose header claims `w` x `h` pixels (the pixel data is a stub: the size must be
/// refused before any is decoded).
fn png_claiming(w: u32, h: u32) -> File {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    png.extend(((idat.len() - 4) as u32).to_be_bytes());
    png.extend(idat);
    png.extend(crc32(idat).to_be_bytes());
    File::Bytes(png)
}

const A035: &str = "tests/fixtures/keras/a035_32_top.h5";
const CHELSEA: &str = "tests/fixtures/keras/images/chelsea_160.png";

/// Keras model files, images and labels: `run`/`classify` with a model file.
fn keras_cases() -> Vec<Case> {
    let h5 = fixture_bytes("a035_32_top.h5");
    let keras = fixture_bytes("a025_40x48_avg.keras");
    let mut corrupt = h5.clone();
    corrupt[8..96].iter_mut().for_each(|b| *b = 0xff);
    let not_keras = hdf5_pure::FileBuilder::new().finish().unwrap();
    vec![
        case(
            "truncated .h5",
            vec![("t.h5", bytes(&h5[..4096]))],
            &["run", "--model", "{d}/t.h5"],
            3,
            &["{d}/t.h5"],
        ),
        case(
            "truncated .keras",
            vec![("t.keras", bytes(&keras[..keras.len() / 2]))],
            &["run", "--model", "{d}/t.keras"],
            3,
            &["{d}/t.keras", "zip"],
        ),
        case(
            "corrupted .h5 superblock",
            vec![("c.h5", bytes(&corrupt))],
            &["run", "--model", "{d}/c.h5"],
            3,
            &["{d}/c.h5", "HDF5"],
        ),
        case(
            "HDF5 that is not a Keras model",
            vec![("n.h5", File::Bytes(not_keras))],
            &["run", "--model", "{d}/n.h5"],
            3,
            &["model_config", "not a Keras model"],
        ),
        case(
            "not a model file",
            vec![("m.onnx", bytes(b"\x08\x07\x12\x04junk"))],
            &["run", "--model", "{d}/m.onnx"],
            3,
            &["not a model file"],
        ),
        case(
            "missing weight (a bias the file does not have)",
            vec![(
                "m.keras",
                keras_edited("\"use_bias\": false", "\"use_bias\": true"),
            )],
            &["run", "--model", "{d}/m.keras"],
            3,
            &["Conv1/bias", "vars/1"],
        ),
        case(
            "misshapen weight",
            vec![("m.keras", keras_edited("\"filters\": 8", "\"filters\": 9"))],
            &["run", "--model", "{d}/m.keras"],
            3,
            &["Conv1/kernel", "expected f32[3,3,3,9]"],
        ),
        case(
            "unsupported layer",
            vec![(
                "m.keras",
                keras_edited("\"class_name\": \"ReLU\"", "\"class_name\": \"ELU\""),
            )],
            &["run", "--model", "{d}/m.keras"],
            3,
            &["Conv1_relu", "ELU", "avg_dense"],
        ),
        case(
            "leaky ReLU",
            vec![(
                "m.keras",
                keras_edited("\"negative_slope\": 0.0", "\"negative_slope\": 0.1"),
            )],
            &["run", "--model", "{d}/m.keras"],
            3,
            &["leaky"],
        ),
        case(
            "free height and width without a size",
            vec![],
            &["run", "--model", "tests/fixtures/keras/a020_nested_none.h5"],
            2,
            &["--input-shape", "free"],
        ),
        case(
            "--weights with a model file",
            vec![],
            &["run", "--model", A035, "--weights", "w.safetensors"],
            2,
            &["--weights"],
        ),
        case(
            "--num-classes with a model file",
            vec![],
            &["run", "--model", A035, "--num-classes", "5"],
            2,
            &["--num-classes"],
        ),
        case(
            "--height contradicting the file",
            vec![],
            &["run", "--model", A035, "--height", "64"],
            2,
            &["64", "32"],
        ),
        case(
            "malformed --input-shape",
            vec![],
            &["run", "--model", A035, "--input-shape", "1,32,32"],
            2,
            &["--input-shape", "N,H,W,C"],
        ),
        case(
            "--probs without a softmax",
            vec![],
            &[
                "run",
                "--model",
                "tests/fixtures/keras/a025_40x48_avg.keras",
                "--probs",
                "{d}/p.npy",
            ],
            2,
            &["softmax"],
        ),
        case(
            "classify: not an image",
            vec![("x.png", bytes(b"hello, not a picture"))],
            &["classify", "--model", A035, "{d}/x.png"],
            3,
            &["{d}/x.png", "PNG or JPEG"],
        ),
        case(
            "classify: image over the pixel limit",
            vec![("big.png", png_claiming(10_000, 10_000))],
            &["classify", "--model", A035, "{d}/big.png"],
            3,
            &["10000x10000", "64 megapixels"],
        ),
        case(
            "classify: truncated PNG",
            vec![(
                "t.png",
                bytes(
                    &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(CHELSEA)).unwrap()
                        [..200],
                ),
            )],
            &["classify", "--model", A035, "{d}/t.png"],
            3,
            &["{d}/t.png"],
        ),
        case(
            "classify: empty labels file",
            vec![("l.txt", bytes(b""))],
            &[
                "classify",
                "--model",
                A035,
                "--labels",
                "{d}/l.txt",
                CHELSEA,
            ],
            3,
            &["{d}/l.txt", "0 label line(s)", "5 classes"],
        ),
        case(
            "classify: labels of the wrong length",
            vec![("l.txt", bytes(b"a\nb\nc\n"))],
            &[
                "classify",
                "--model",
                A035,
                "--labels",
                "{d}/l.txt",
                CHELSEA,
            ],
            3,
            &["3 label line(s)", "5 classes"],
        ),
        case(
            "classify: free size without --input-shape",
            vec![],
            &[
                "classify",
                "--model",
                "tests/fixtures/keras/a020_nested_none.h5",
                CHELSEA,
            ],
            2,
            &["--input-shape"],
        ),
    ]
}

/// A one-input ONNX model (opset 13) from its nodes, initializers, input type and shape.
fn onnx_model(
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    elem_type: i32,
    dims: &[Option<i64>],
    output: &str,
) -> File {
    let dim = |d: &Option<i64>| proto::Dimension {
        dim_value: *d,
        dim_param: d.is_none().then(|| "N".to_string()),
    };
    let info = |name: &str, dims: &[Option<i64>]| proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeTensor {
                elem_type: Some(elem_type),
                shape: Some(proto::TensorShapeProto {
                    dim: dims.iter().map(dim).collect(),
                }),
            }),
        }),
    };
    let model = proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(proto::GraphProto {
            node: nodes,
            name: Some("bad".into()),
            initializer: inits,
            input: vec![info("x", dims)],
            output: vec![info(output, &[])],
        }),
        ..Default::default()
    };
    File::Bytes(prost::Message::encode_to_vec(&model))
}

fn onnx_node(op: &str, inputs: &[&str], output: &str) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{op}_{output}")),
        op_type: Some(op.into()),
        ..Default::default()
    }
}

/// A float initializer `[4]` whose data is in the external file `location`.
fn external_init(location: &str) -> proto::TensorProto {
    let entry = |k: &str, v: &str| proto::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    proto::TensorProto {
        dims: vec![4],
        data_type: Some(proto::data_type::FLOAT),
        name: Some("w".into()),
        external_data: vec![entry("location", location)],
        data_location: Some(proto::DATA_LOCATION_EXTERNAL),
        ..Default::default()
    }
}

const X4: &[Option<i64>] = &[Some(1), Some(4), Some(2), Some(2)];

fn onnx_cases() -> Vec<Case> {
    let tutorial = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/tutorial_small.onnx"),
    )
    .unwrap();
    let identity = |i: &str, o: &str| onnx_node("Identity", &[i], o);
    let relu6 = |i: &str, o: &str| {
        let mut n = onnx_node("Clip", &[i], o);
        n.input.extend(["lo".to_string(), "hi".to_string()]);
        n
    };
    let scalar = |name: &str, v: f32| proto::TensorProto {
        data_type: Some(proto::data_type::FLOAT),
        name: Some(name.into()),
        float_data: vec![v],
        ..Default::default()
    };
    let bounds = || vec![scalar("lo", 0.0), scalar("hi", 6.0)];
    let float = proto::data_type::FLOAT;
    // A relu6 of the input, with these initializers.
    let clip_model = |inits| onnx_model(vec![relu6("x", "y")], inits, float, X4, "y");
    let run = &["run", "--model", "{d}/m.onnx"];
    vec![
        case(
            "onnx: truncated protobuf",
            vec![("m.onnx", bytes(&tutorial[..1000]))],
            run,
            3,
            &["m.onnx", "not an ONNX model", "protobuf"],
        ),
        case(
            "onnx: bytes that are not a model",
            vec![("m.onnx", bytes(b"name,score\nlabdog,0.9\n"))],
            run,
            3,
            &["not a model file mnv2c reads", "no HDF5 or zip signature"],
        ),
        case(
            "onnx: a graph with a cycle",
            vec![(
                "m.onnx",
                onnx_model(
                    vec![identity("b", "a"), identity("a", "b")],
                    vec![],
                    float,
                    X4,
                    "a",
                ),
            )],
            run,
            3,
            &["Identity", "opset 13", "cycle"],
        ),
        case(
            "onnx: an undefined input name",
            vec![(
                "m.onnx",
                onnx_model(vec![relu6("nope", "y")], bounds(), float, X4, "y"),
            )],
            run,
            3,
            &["node 'Clip_y'", "input 'nope' is not defined"],
        ),
        case(
            "onnx: an unsupported operator",
            vec![(
                "m.onnx",
                onnx_model(vec![onnx_node("LSTM", &["x"], "y")], vec![], float, X4, "y"),
            )],
            run,
            3,
            &["node 'LSTM_y' (LSTM, opset 13): unsupported operator"],
        ),
        case(
            "onnx: a symbolic batch without --input or --input-shape",
            vec![(
                "m.onnx",
                onnx_model(
                    vec![relu6("x", "y")],
                    bounds(),
                    float,
                    &[None, Some(4), Some(2), Some(2)],
                    "y",
                ),
            )],
            run,
            2,
            &["dimension 0 ('N') is not fixed", "--input-shape", "1,4,2,2"],
        ),
        case(
            "onnx: a model with an int8 input",
            vec![(
                "m.onnx",
                onnx_model(vec![relu6("x", "y")], bounds(), 3, X4, "y"),
            )],
            run,
            3,
            &["input 'x'", "INT8", "float32"],
        ),
        case(
            "onnx: a float16 initializer",
            vec![(
                "m.onnx",
                onnx_model(
                    vec![relu6("x", "y")],
                    vec![proto::TensorProto {
                        dims: vec![1],
                        data_type: Some(10),
                        name: Some("lo".into()),
                        raw_data: Some(vec![0, 0]),
                        ..Default::default()
                    }],
                    float,
                    X4,
                    "y",
                ),
            )],
            run,
            3,
            &["initializer 'lo'", "FLOAT16", "float32"],
        ),
        case(
            "onnx: external data missing",
            vec![("m.onnx", clip_model(vec![external_init("w.bin")]))],
            run,
            3,
            &["initializer 'w'", "external data file", "w.bin"],
        ),
        case(
            "onnx: external data outside the model's directory",
            vec![("m.onnx", clip_model(vec![external_init("../w.bin")]))],
            run,
            3,
            &["'../w.bin' must be a path inside the model's directory"],
        ),
        case(
            "onnx: external data shorter than the tensor",
            vec![
                ("w.bin", bytes(&[0; 6])),
                ("m.onnx", clip_model(vec![external_init("w.bin")])),
            ],
            run,
            3,
            &["has 6 bytes, the tensor needs bytes 0..16"],
        ),
        case(
            "onnx: --input-shape of the wrong rank",
            vec![("m.onnx", clip_model(bounds()))],
            &["run", "--model", "{d}/m.onnx", "--input-shape", "1,4,2"],
            2,
            &["--input-shape [1, 4, 2] has rank 3", "rank 4"],
        ),
        case(
            "onnx: --input-shape that is not a shape",
            vec![("m.onnx", clip_model(bounds()))],
            &["run", "--model", "{d}/m.onnx", "--input-shape", "1,x"],
            2,
            &["--input-shape 1,x: expected dimensions >= 1"],
        ),
        case(
            "onnx: --output naming no output",
            vec![],
            &[
                "run",
                "--model",
                "tests/fixtures/onnx/tutorial_small.onnx",
                "--output",
                "prob=/dev/null",
            ],
            2,
            &["no output 'prob'", "its outputs: output"],
        ),
        case(
            "onnx: --batch with an ONNX file",
            vec![],
            &[
                "run",
                "--model",
                "tests/fixtures/onnx/tutorial_small.onnx",
                "--batch",
                "2",
            ],
            2,
            &[
                "--batch sizes the built-in model",
                "--input-shape, in the file's layout",
            ],
        ),
    ]
}

/// Bad requests for `compile --emit obj` (see docs/aot.md).
fn obj_cases() -> Vec<Case> {
    let obj = |extra: &[&'static str]| {
        let mut a = vec!["compile", "--model", "mobilenetv2", "--emit", "obj"];
        a.extend_from_slice(extra);
        a
    };
    vec![
        case(
            "an object without -o",
            vec![],
            &obj(&[]),
            2,
            &["--emit obj needs -o FILE.o"],
        ),
        case(
            "an unknown target",
            vec![],
            &obj(&["-o", "{d}/m.o", "--target", "riscv64"]),
            2,
            &["invalid value 'riscv64' for '--target"],
        ),
        case(
            "an unknown tier",
            vec![],
            &obj(&["-o", "{d}/m.o", "--isa", "sse2"]),
            2,
            &["invalid value 'sse2' for '--isa"],
        ),
        case(
            "an x86 tier for aarch64",
            vec![],
            &obj(&["-o", "{d}/m.o", "--target", "aarch64", "--isa", "avx512"]),
            2,
            &["--isa avx512 does not exist for --target aarch64"],
        ),
        case(
            "a raw x86 tier in an object",
            vec![],
            &obj(&["-o", "{d}/m.o", "--target", "x86_64", "--isa", "avx2"]),
            2,
            &["--isa avx2 is not available in object files yet"],
        ),
        case(
            "a prefix that is not a C identifier",
            vec![],
            &obj(&["-o", "{d}/m.o", "--prefix", "9lives"]),
            2,
            &["--prefix '9lives' is not a usable C identifier"],
        ),
        case(
            "an object path that cannot be written",
            vec![],
            &obj(&["-o", "{d}/no/such/dir/m.o"]),
            3,
            &["{d}/no/such/dir/m.o", "No such file or directory"],
        ),
        case(
            "a header path that cannot be written",
            vec![("h", File::Dir)],
            &obj(&["-o", "{d}/m.o", "--header", "{d}/h"]),
            3,
            &["{d}/h", "Is a directory"],
        ),
        case(
            "object options without --emit obj",
            vec![],
            &[
                "compile",
                "--model",
                "mobilenetv2",
                "--emit",
                "ir",
                "--prefix",
                "m",
            ],
            2,
            &["go with --emit obj"],
        ),
    ]
}

fn all_cases() -> Vec<Case> {
    let mut all = weights_cases();
    all.extend(npy_cases());
    all.extend(cli_cases());
    all.extend(keras_cases());
    all.extend(onnx_cases());
    all.extend(obj_cases());
    all
}

fn case_dir(i: usize) -> PathBuf {
    std::env::temp_dir().join(format!("mnv2c-errors-{}-{i}", std::process::id()))
}

/// Runs one case; the problems found, if any.
fn check(i: usize, c: &Case) -> Vec<String> {
    let dir = case_dir(i);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, f) in &c.files {
        let p = dir.join(name);
        match f {
            File::Bytes(b) => std::fs::write(&p, b).unwrap(),
            File::Dir => std::fs::create_dir_all(&p).unwrap(),
        }
    }
    let d = dir.to_str().unwrap();
    let args: Vec<String> = c.args.iter().map(|a| a.replace("{d}", d)).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_mnv2c"))
        .args(&args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run mnv2c");
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(c.status) {
        problems.push(format!(
            "status {:?}, expected {}",
            out.status.code(),
            c.status
        ));
    }
    if err.contains("panicked") || err.contains("backtrace") {
        problems.push("panicked or printed a backtrace".into());
    }
    if err.lines().count() != 1 || !err.starts_with("error: ") {
        problems.push("stderr is not one line `error: ...`".into());
    }
    if !out.stdout.is_empty() {
        problems.push("printed on stdout".into());
    }
    for n in &c.needles {
        let n = n.replace("{d}", d);
        if !err.contains(&n) {
            problems.push(format!("missing {n:?}"));
        }
    }
    problems
        .into_iter()
        .map(|p| {
            format!(
                "case {i} ({}): {p}\n    mnv2c {}\n    stderr: {err}",
                c.what,
                args.join(" ")
            )
        })
        .collect()
}

#[test]
fn every_bad_input_fails_with_its_specific_one_line_error() {
    let cases = all_cases();
    // Two threads: the machine's cores are shared, and each case is one short process.
    let (a, b) = cases.split_at(cases.len() / 2);
    let failures: Vec<String> = std::thread::scope(|s| {
        let first = s.spawn(|| {
            a.iter()
                .enumerate()
                .flat_map(|(i, c)| check(i, c))
                .collect::<Vec<_>>()
        });
        let mut rest: Vec<String> = b
            .iter()
            .enumerate()
            .flat_map(|(i, c)| check(a.len() + i, c))
            .collect();
        let mut all = first.join().unwrap();
        all.append(&mut rest);
        all
    });
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_corpus_covers_every_kind_and_is_large_enough() {
    let ir = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("ir-examples/invalid"))
        .unwrap()
        .count();
    let (w, n, c) = (weights_cases().len(), npy_cases().len(), cli_cases().len());
    assert!(ir >= 40, "{ir} IR cases");
    assert!(
        onnx_cases().len() >= 12,
        "{} ONNX cases",
        onnx_cases().len()
    );
    assert!(
        w >= 20 && n >= 20 && c >= 12,
        "{w} weights, {n} npy, {c} CLI cases"
    );
    let statuses: std::collections::BTreeSet<i32> = all_cases().iter().map(|c| c.status).collect();
    assert_eq!(
        statuses,
        [2, 3, 4].into(),
        "every user-facing status is exercised"
    );
}
