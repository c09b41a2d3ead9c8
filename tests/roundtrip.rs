//! `parse(print(g)) == g`: for the built-in model, for every file in `ir-examples/`, and for
//! proptest-generated small graphs.

use mnv2c::frontend::{Config, mobilenet_v2};
use mnv2c::graph::{self, Graph};

fn roundtrip(g: &Graph) {
    let text = g.to_string();
    let back = graph::parse(&text, "<printed>").unwrap_or_else(|e| panic!("{e}\n{text}"));
    graph::verify(&back).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, g, "parse(print(g)) != g for\n{text}");
    assert_eq!(back.to_string(), text, "printing is not stable");
}

#[test]
fn mobilenet_v2_roundtrips_at_several_configs() {
    for cfg in [
        Config::default(),
        Config {
            num_classes: 10,
            batch: 2,
            height: 161,
            width: 193,
        },
        Config {
            num_classes: 1,
            batch: 1,
            height: 1,
            width: 1,
        },
    ] {
        roundtrip(&mobilenet_v2(&cfg).unwrap());
    }
}

#[test]
fn every_ir_example_roundtrips() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ir-examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ir") {
            let text = std::fs::read_to_string(&path).unwrap();
            let g = graph::parse(&text, &path.display().to_string()).unwrap();
            graph::verify(&g).unwrap();
            roundtrip(&g);
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} examples");
}

mod generated {
    //! Small random graphs covering every op, every epilogue, biases and derived constants.
    use super::roundtrip;
    use mnv2c::graph::{Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType, ValueId};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Conv {
            k: usize,
            stride: usize,
            cout: usize,
            depthwise: bool,
            bias: bool,
            epilogue: usize,
            pads: [usize; 4],
            folded: bool,
        },
        BatchNorm,
        Relu6,
        AddEarlier(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (prop::sample::select(vec![1usize, 3]), 1usize..=2, 1usize..=6, any::<bool>(), any::<bool>(), 0usize..4, [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2], any::<bool>())
                .prop_map(|(k, stride, cout, depthwise, bias, epilogue, pads, folded)| Step::Conv { k, stride, cout, depthwise, bias, epilogue, pads, folded }),
            1 => Just(Step::BatchNorm),
            1 => Just(Step::Relu6),
            1 => (0usize..8).prop_map(Step::AddEarlier),
        ]
    }

    fn param(g: &mut Graph, name: String, dims: Vec<usize>) -> String {
        g.add_const(
            name.clone(),
            Const {
                ty: TensorType::new(dims),
                def: ConstDef::Param,
            },
        )
        .unwrap();
        name
    }

    /// Builds a valid graph from the steps, skipping steps that do not fit the current shape.
    fn build(dims: [usize; 4], steps: &[Step], head: bool) -> Graph {
        let mut g = Graph::new("generated");
        let x = g.add_node("in/x", Op::Input, TensorType::new(dims.to_vec()), &[]);
        let mut values: Vec<ValueId> = vec![x];
        let mut cur = x;
        for (i, s) in steps.iter().enumerate() {
            let ty = g.node(cur).ty.clone();
            let c = ty.dims[3];
            let next = match s {
                Step::Conv {
                    k,
                    stride,
                    cout,
                    depthwise,
                    bias,
                    epilogue,
                    pads,
                    folded,
                } => {
                    let (wdims, groups, cout) = if *depthwise {
                        (vec![*k, *k, c, 1], c, c)
                    } else {
                        (vec![*k, *k, c, *cout], 1, *cout)
                    };
                    let pads = if *k == 1 { [0; 4] } else { *pads };
                    let mut weight = param(&mut g, format!("c{i}/w"), wdims.clone());
                    if *folded {
                        let gamma = param(&mut g, format!("c{i}/gamma"), vec![cout]);
                        let var = param(&mut g, format!("c{i}/var"), vec![cout]);
                        let folded_name = format!("c{i}/w.folded");
                        g.add_const(
                            folded_name.clone(),
                            Const {
                                ty: TensorType::new(wdims),
                                def: ConstDef::FoldBnWeight {
                                    weight,
                                    gamma,
                                    variance: var,
                                    epsilon: 1e-3,
                                },
                            },
                        )
                        .unwrap();
                        weight = folded_name;
                    }
                    let bias = bias.then(|| param(&mut g, format!("c{i}/b"), vec![cout]));
                    let epilogue = Epilogue::ALL[*epilogue];
                    let conv = Conv2d {
                        weight,
                        bias,
                        stride: [*stride, *stride],
                        pads: Pads {
                            top: pads[0],
                            bottom: pads[1],
                            left: pads[2],
                            right: pads[3],
                        },
                        groups,
                        epilogue,
                    };
                    // Type the conv without its residual first, to find a residual of its type.
                    let plain = Op::Conv2d(Conv2d {
                        epilogue: Epilogue::None,
                        ..conv.clone()
                    });
                    let Ok(out) = mnv2c::graph::infer_type(&plain, &[&ty], &g) else {
                        continue;
                    };
                    let mut operands = vec![cur];
                    let mut op = Op::Conv2d(conv.clone());
                    if epilogue.has_residual() {
                        match values.iter().find(|&&v| g.node(v).ty == out) {
                            Some(&r) => operands.push(r),
                            None => {
                                op = Op::Conv2d(Conv2d {
                                    epilogue: Epilogue::None,
                                    ..conv
                                })
                            }
                        }
                    }
                    g.add_typed(format!("conv{i}"), op, &operands).unwrap()
                }
                Step::BatchNorm => {
                    let names: Vec<String> = ["gamma", "beta", "mean", "var"]
                        .iter()
                        .map(|n| param(&mut g, format!("bn{i}/{n}"), vec![c]))
                        .collect();
                    let op = Op::BatchNorm(mnv2c::graph::BatchNorm {
                        gamma: names[0].clone(),
                        beta: names[1].clone(),
                        mean: names[2].clone(),
                        variance: names[3].clone(),
                        epsilon: 1e-5,
                    });
                    g.add_typed(format!("bn{i}"), op, &[cur]).unwrap()
                }
                Step::Relu6 => g.add_typed(format!("relu{i}"), Op::Relu6, &[cur]).unwrap(),
                Step::AddEarlier(j) => {
                    let Some(&other) = values
                        .iter()
                        .rev()
                        .filter(|&&v| g.node(v).ty == ty)
                        .nth(*j % values.len())
                    else {
                        continue;
                    };
                    g.add_typed(format!("add{i}"), Op::Add, &[other, cur])
                        .unwrap()
                }
            };
            values.push(next);
            cur = next;
        }
        let mut outputs = vec![cur];
        if head {
            let p = g.add_typed("head/pool", Op::GlobalAvgPool, &[cur]).unwrap();
            let f = g.add_typed("head/flat", Op::Flatten, &[p]).unwrap();
            let s = g.add_typed("head/prob", Op::Softmax, &[f]).unwrap();
            outputs = vec![f, s];
        }
        g.set_outputs(outputs);
        g
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn generated_graphs_roundtrip(
            dims in [1usize..=2, 1usize..=9, 1usize..=9, 1usize..=6],
            steps in prop::collection::vec(step(), 0..8),
            head in any::<bool>(),
        ) {
            let g = build(dims, &steps, head);
            mnv2c::graph::verify(&g).unwrap();
            roundtrip(&g);
        }
    }
}

#[test]
fn verifier_errors_on_a_parsed_file_point_at_the_definition() {
    let text = "graph g {\n  %x = input : f32[1,4,4,3]\n\n    %y = relu6(%x) : f32[1,4,4,2]\n  output %y\n}\n";
    let (g, locations) = graph::parse::parse_located(text, "g.ir").unwrap();
    let e = locations.attach(graph::verify(&g).unwrap_err()).to_string();
    assert_eq!(
        e,
        "g.ir:4:5: invalid graph: %y: declared type f32[1,4,4,2] but the operands give f32[1,4,4,3]"
    );
    assert_eq!(
        locations.of("%x").map(|l| l.to_string()).as_deref(),
        Some("g.ir:2:3")
    );
    assert_eq!(locations.of("%nope"), None);
}
