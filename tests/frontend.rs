//! The front end builds exactly the seed's model (`shared/spec/seed-model.md`).

use mnv2c::frontend::{Config, mobilenet_v2};
use mnv2c::graph::{Graph, Op, Pads};

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.node_ids().filter(|&i| pred(&g.node(i).op)).count()
}

fn conv(g: &Graph, name: &str) -> mnv2c::graph::Conv2d {
    let id = g.find(name).unwrap_or_else(|| panic!("no node %{name}"));
    match &g.node(id).op {
        Op::Conv2d(c) => c.clone(),
        other => panic!("%{name} is {other:?}"),
    }
}

#[test]
fn default_model_has_the_seed_layers() {
    let g = mobilenet_v2(&Config::default()).unwrap();
    let input = g.inputs();
    assert_eq!(input.len(), 1);
    assert_eq!(g.node(input[0]).ty.to_string(), "f32[1,224,224,3]");
    let convs = count(&g, |op| matches!(op, Op::Conv2d(_)));
    let depthwise = count(&g, |op| matches!(op, Op::Conv2d(c) if c.groups > 1));
    assert_eq!((convs, depthwise), (56, 17));
    assert_eq!(count(&g, |op| matches!(op, Op::BatchNorm(_))), 53);
    assert_eq!(count(&g, |op| *op == Op::Relu6), 36);
    assert_eq!(count(&g, |op| *op == Op::Add), 12);
    assert_eq!(count(&g, |op| *op == Op::GlobalAvgPool), 1);
    assert_eq!(count(&g, |op| *op == Op::Softmax), 1);
    let outs: Vec<String> = g
        .outputs()
        .iter()
        .map(|&o| format!("%{} : {}", g.node(o).name, g.node(o).ty))
        .collect();
    assert_eq!(outs, ["%logits : f32[1,1000]", "%prob : f32[1,1000]"]);
    // No convolution has a bias: the tutorial passes bias=False everywhere.
    assert_eq!(
        count(&g, |op| matches!(op, Op::Conv2d(c) if c.bias.is_some())),
        0
    );
}

#[test]
fn stem_pads_follow_tensorflow_same() {
    let g = mobilenet_v2(&Config::default()).unwrap();
    let c = conv(&g, "conv1_1/conv2d");
    assert_eq!(c.stride, [2, 2]);
    assert_eq!(
        c.pads,
        Pads {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1
        }
    );
    // Every stride-2 layer of the 224 model sees an even size: 0 before, 1 after.
    for i in g.node_ids() {
        if let Op::Conv2d(c) = &g.node(i).op
            && c.stride == [2, 2]
        {
            assert_eq!(
                c.pads,
                Pads {
                    top: 0,
                    bottom: 1,
                    left: 0,
                    right: 1
                },
                "%{}",
                g.node(i).name
            );
        }
    }
}

#[test]
fn odd_sizes_pad_one_on_each_side_at_stride_two() {
    let cfg = Config {
        num_classes: 1000,
        batch: 1,
        height: 161,
        width: 193,
    };
    let g = mobilenet_v2(&cfg).unwrap();
    let mut stride2 = 0;
    for i in g.node_ids() {
        if let Op::Conv2d(c) = &g.node(i).op
            && c.stride == [2, 2]
        {
            stride2 += 1;
            assert_eq!(
                c.pads,
                Pads {
                    top: 1,
                    bottom: 1,
                    left: 1,
                    right: 1
                },
                "%{}",
                g.node(i).name
            );
        }
    }
    assert_eq!(stride2, 5);
    assert_eq!(
        g.node(g.find("conv9_1/relu6").unwrap()).ty.to_string(),
        "f32[1,6,7,1280]"
    );
}

#[test]
fn block_structure_follows_the_tutorial() {
    let g = mobilenet_v2(&Config::default()).unwrap();
    // t = 1 still has its expansion conv, 32 -> 32.
    assert_eq!(
        g.node(g.find("res2_1/pw").unwrap()).ty.to_string(),
        "f32[1,112,112,32]"
    );
    // Projection shortcuts where the channel count changes at stride 1.
    for (block, from, to) in [("res2_1", 32, 16), ("res5_1", 32, 64)] {
        let ex = conv(&g, &format!("{block}/ex_dim"));
        let w = g.const_decl(&ex.weight).unwrap();
        assert_eq!(w.ty.dims, [1, 1, from, to], "{block}");
        let add = g.find(&format!("{block}/add")).unwrap();
        let names: Vec<_> = g
            .operands(add)
            .iter()
            .map(|&o| g.node(o).name.clone())
            .collect();
        assert_eq!(
            names,
            [format!("{block}/ex_dim"), format!("{block}/pw_linear_bn")]
        );
    }
    assert_eq!(
        count(
            &g,
            |op| matches!(op, Op::Conv2d(c) if c.weight.ends_with("ex_dim/w"))
        ),
        2
    );
    // Stride placement: res5_1 at stride 1 (28x28), res6_1 at stride 2 (14x14).
    assert_eq!(conv(&g, "res5_1/dw").stride, [1, 1]);
    assert_eq!(conv(&g, "res6_1/dw").stride, [2, 2]);
    assert_eq!(
        g.node(g.find("res5_4/add").unwrap()).ty.to_string(),
        "f32[1,28,28,64]"
    );
    // res8_1 has no shortcut.
    assert!(g.find("res8_1/add").is_none());
    assert!(g.find("res8_1/ex_dim").is_none());
    // The logits conv is bias-free and 1x1; the depthwise weights keep TF's [3,3,C,1].
    let logits = conv(&g, "logits/conv");
    assert_eq!(logits.weight, "mobilenetv2/logits/w");
    assert_eq!(
        g.const_decl(&logits.weight).unwrap().ty.dims,
        [1, 1, 1280, 1000]
    );
    assert_eq!(
        g.const_decl("mobilenetv2/res3_1/dw/w").unwrap().ty.dims,
        [3, 3, 96, 1]
    );
}

#[test]
fn weights_are_the_tensorflow_variables() {
    let g = mobilenet_v2(&Config::default()).unwrap();
    let params: usize = g.consts().map(|(_, c)| c.ty.num_elements().unwrap()).sum();
    // shared/spec/flops.md: 3,541,696 values in all variables, BN statistics included.
    assert_eq!(params, 3_541_696);
    assert_eq!(g.consts().count(), 268);
    assert!(g.consts().all(|(name, _)| name.starts_with("mobilenetv2/")));
}

#[test]
fn other_configurations_shape_the_ends() {
    let g = mobilenet_v2(&Config {
        num_classes: 10,
        batch: 3,
        height: 96,
        width: 64,
    })
    .unwrap();
    assert_eq!(g.node(g.inputs()[0]).ty.to_string(), "f32[3,96,64,3]");
    assert_eq!(g.node(g.find("prob").unwrap()).ty.to_string(), "f32[3,10]");
    assert_eq!(
        g.node(g.find("global_avg").unwrap()).ty.to_string(),
        "f32[3,1,1,1280]"
    );
    for bad in [
        Config {
            num_classes: 0,
            ..Config::default()
        },
        Config {
            batch: 0,
            ..Config::default()
        },
        Config {
            height: 0,
            ..Config::default()
        },
    ] {
        let e = mobilenet_v2(&bad).expect_err("a zero size");
        assert!(
            matches!(e, mnv2c::Error::Config(_)) && e.to_string().contains("must be at least 1"),
            "{bad:?}: {e}"
        );
    }
}
