//! The invariant of issue 14: **a graph the verifier accepts always compiles.** For every
//! generated graph that verifies, every `--emit` level succeeds or fails with a user-facing
//! error (exit status 3 or 4, never 70), each level within 5 seconds.
//!
//! The generator aims at the classes of graphs that once broke it: names the compiler also
//! makes (a value and a constant both `conv`, a constant `conv/w_packed` next to the node
//! `conv`, `w.bn`), strides and pads at their limits, wide kernels with large pads, and rows
//! far wider than memory (compiling must not walk them). Graphs whose types do not check are
//! skipped: the property is about verified graphs.

use std::time::{Duration, Instant};

use mnv2c::emit::{Level, emit};
use mnv2c::graph::{self, BatchNorm, Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads};
use mnv2c::graph::{TensorType, ValueId, infer_type};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Conv {
        k: usize,
        stride: usize,
        pads: [usize; 4],
        cout: usize,
        depthwise: bool,
        bias: bool,
        epilogue: usize,
    },
    BatchNorm(bool),
    Relu6,
    Add(usize),
    Pool,
    Flatten,
    Softmax,
}

fn step() -> impl Strategy<Value = Step> {
    let k = prop::sample::select(vec![1usize, 2, 3, 5, 9, 16, 40]);
    let stride = prop::sample::select(vec![1usize, 2, 3, 1 << 20, 1 << 62]);
    let pad = 0usize..40;
    prop_oneof![
        4 => (k, stride, [pad.clone(), pad.clone(), pad.clone(), pad], 1usize..=9, any::<bool>(), any::<bool>(), 0usize..4)
            .prop_map(|(k, stride, pads, cout, depthwise, bias, epilogue)| Step::Conv {
                k, stride, pads: pads.map(|p| p % k), cout, depthwise, bias, epilogue,
            }),
        1 => any::<bool>().prop_map(Step::BatchNorm),
        1 => Just(Step::Relu6),
        1 => (0usize..4).prop_map(Step::Add),
        1 => Just(Step::Pool),
        1 => Just(Step::Flatten),
        1 => Just(Step::Softmax),
    ]
}

/// Names that collide with each other or with what the compiler makes.
const NODE_NAMES: [&str; 4] = ["conv", "y", "conv/w_packed", "w.bn"];
const CONST_NAMES: [&str; 4] = ["conv", "conv/w_packed", "w.bn", "y/bn_scale"];

fn param(g: &mut Graph, used: &mut usize, dims: Vec<usize>) -> String {
    let name = match CONST_NAMES.get(*used) {
        Some(n) => n.to_string(),
        None => format!("c{used}"),
    };
    *used += 1;
    let ty = TensorType::new(dims);
    let c = Const {
        ty,
        def: ConstDef::Param,
    };
    g.add_const(name.clone(), c).expect("fresh constant");
    name
}

/// The op of one step on `cur` (`None` if the step does not apply), with its operands.
fn op_of(
    g: &mut Graph,
    consts: &mut usize,
    s: &Step,
    cur: ValueId,
    values: &[ValueId],
) -> Option<(Op, Vec<ValueId>)> {
    let dims = g.node(cur).ty.dims.clone();
    let c = *dims.last()?;
    Some(match s {
        Step::Conv {
            k,
            stride,
            pads,
            cout,
            depthwise,
            bias,
            epilogue,
        } => {
            if dims.len() != 4 {
                return None;
            }
            let (wdims, groups, cout) = if *depthwise {
                (vec![*k, *k, c, 1], c, c)
            } else {
                (vec![*k, *k, c, *cout], 1, *cout)
            };
            let weight = param(g, consts, wdims);
            let bias = bias.then(|| param(g, consts, vec![cout]));
            let [top, bottom, left, right] = *pads;
            let conv = Conv2d {
                weight,
                bias,
                stride: [*stride, *stride],
                pads: Pads {
                    top,
                    bottom,
                    left,
                    right,
                },
                groups,
                epilogue: Epilogue::ALL[*epilogue],
            };
            let plain = Op::Conv2d(Conv2d {
                epilogue: Epilogue::None,
                ..conv.clone()
            });
            let out = infer_type(&plain, &[&g.node(cur).ty], g).ok()?;
            if conv.epilogue.has_residual() {
                let r = *values.iter().find(|&&v| g.node(v).ty == out)?;
                (Op::Conv2d(conv), vec![cur, r])
            } else {
                (Op::Conv2d(conv), vec![cur])
            }
        }
        Step::BatchNorm(zero_eps) => {
            // One constant in every role (seeded as some role): the fold may divide by zero.
            let p = param(g, consts, vec![c]);
            let epsilon = if *zero_eps { 0.0 } else { 1e-3 };
            let bn = BatchNorm {
                gamma: p.clone(),
                beta: p.clone(),
                mean: p.clone(),
                variance: p,
                epsilon,
            };
            (Op::BatchNorm(bn), vec![cur])
        }
        Step::Relu6 => (Op::Relu6, vec![cur]),
        Step::Add(j) => (Op::Add, vec![cur, values[j % values.len()]]),
        Step::Pool => (Op::GlobalAvgPool, vec![cur]),
        Step::Flatten => (Op::Flatten, vec![cur]),
        Step::Softmax => (Op::Softmax, vec![cur]),
    })
}

/// A graph from the steps; steps whose types do not check are left out.
fn build(dims: Vec<usize>, steps: &[Step]) -> Graph {
    let mut g = Graph::new("generated");
    let x = g.add_node("conv", Op::Input, TensorType::new(dims), &[]);
    let (mut values, mut cur, mut consts) = (vec![x], x, 0);
    for (i, s) in steps.iter().enumerate() {
        let Some((op, operands)) = op_of(&mut g, &mut consts, s, cur, &values) else {
            continue;
        };
        let tys: Vec<&TensorType> = operands.iter().map(|&v| &g.node(v).ty).collect();
        let Ok(ty) = infer_type(&op, &tys, &g) else {
            continue;
        };
        let name = match NODE_NAMES.get(i + 1) {
            Some(n) => n.to_string(),
            None => format!("v{i}"),
        };
        cur = g.add_node(name, op, ty, &operands);
        values.push(cur);
    }
    g.set_outputs(vec![cur]);
    g
}

fn input_dims() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        4 => (1usize..=2, 1usize..=12, 1usize..=12, 1usize..=9).prop_map(|(n, h, w, c)| vec![n, h, w, c]),
        // A row far wider than memory: types fit, nothing may walk it.
        1 => Just(vec![1, 1, 1 << 40, 1]),
    ]
}

/// Every level: Ok, or a user-facing error; each within the time limit.
fn check_levels(g: &Graph) -> Result<(), TestCaseError> {
    for level in Level::ALL {
        let start = Instant::now();
        let result = emit(g, level);
        let took = start.elapsed();
        prop_assert!(
            took < Duration::from_secs(5),
            "--emit {level:?} took {took:?} on\n{g}"
        );
        if let Err(e) = result {
            prop_assert!(
                matches!(e.exit_status(), 3 | 4) && !e.to_string().is_empty(),
                "--emit {level:?} failed with an internal error (status {}): {e}\n{g}",
                e.exit_status()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn verified_graphs_compile_at_every_level(dims in input_dims(), steps in prop::collection::vec(step(), 1..5)) {
        let mut g = build(dims, &steps);
        prop_assume!(graph::verify(&g).is_ok());
        // The printed graph is what a user would feed back: it must read as the same graph.
        let text = g.to_string();
        prop_assert_eq!(&graph::parse(&text, "g.ir").expect("printed IR parses"), &g);
        check_levels(&g)?;
        // And after the default passes, as `mnv2c compile` runs them.
        if mnv2c::passes::optimize(&mut g).is_ok() {
            check_levels(&g)?;
        }
    }
}

/// The regression cases of the issue, each as an IR file: all compile now (or are rejected by
/// the verifier with a located message), quickly.
#[test]
fn the_reported_classes_compile_or_are_rejected_by_the_verifier() {
    let conv = |k: usize, pad: usize, hw: usize, stride: &str| {
        let out = (hw + 2 * pad - k) / stride.parse::<usize>().unwrap_or(1) + 1;
        format!(
            "graph g {{\n  const @w : f32[{k},{k},1,4]\n  %x = input : f32[1,{hw},{hw},1]\n  \
             %conv = conv2d(%x, @w) {{stride = [{stride}, {stride}], pads = [{pad}, {pad}, {pad}, {pad}], groups = 1}} : f32[1,{out},{out},4]\n  \
             output %conv\n}}\n"
        )
    };
    let cases = [
        ("9x9 with pads 8", conv(9, 8, 16, "1"), None),
        ("16x16 with pads 15", conv(16, 15, 20, "1"), None),
        (
            "32x32 with pads 31",
            conv(32, 31, 40, "1"),
            Some("g.ir:4:3: invalid graph: %conv: kernel 32x32 with pads [31, 31, 31, 31] and stride [1, 1] gives 3969 border segments"),
        ),
        ("a 128x128 kernel", conv(128, 0, 130, "1"), None),
        (
            "a stride of 2^63",
            conv(1, 0, 4, "9223372036854775808"),
            Some("g.ir:4:3: invalid graph: %conv: stride [9223372036854775808, 9223372036854775808] is too large"),
        ),
        (
            "a value and a constant both named conv",
            "graph g {\n  const @conv : f32[1,1,4,4]\n  const @conv/w_packed : f32[4]\n  %conv = input : f32[1,2,2,4]\n  %y = conv2d(%conv, @conv, bias = @conv/w_packed) {stride = [1, 1], pads = [0, 0, 0, 0], groups = 1} : f32[1,2,2,4]\n  output %y\n}\n".to_string(),
            None,
        ),
    ];
    for (what, text, rejected) in cases {
        let (g, locations) = match graph::parse::parse_located(&text, "g.ir") {
            Ok(parsed) => parsed,
            Err(e) => panic!("{what}: {e}\n{text}"),
        };
        match (graph::verify(&g).map_err(|e| locations.attach(e)), rejected) {
            (Ok(()), None) => {
                for level in Level::ALL {
                    let start = Instant::now();
                    emit(&g, level).unwrap_or_else(|e| panic!("{what}: --emit {level:?}: {e}"));
                    let took = start.elapsed();
                    assert!(
                        took < Duration::from_secs(5),
                        "{what}: {level:?} took {took:?}"
                    );
                }
            }
            (Err(e), Some(message)) => {
                assert_eq!(e.exit_status(), 3, "{what}");
                assert!(e.to_string().starts_with(message), "{what}: {e}");
            }
            (Ok(()), Some(_)) => panic!("{what}: verified, expected a rejection"),
            (Err(e), None) => panic!("{what}: rejected: {e}"),
        }
    }
}
