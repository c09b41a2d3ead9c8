//! Structural tests of the passes: each fires where its rule applies, and each guard stops it
//! where the rule does not; the pipeline verifies after each pass and names the failing one.
//! (That the rewrites preserve the computed values is `passes_preserve.rs`'s job.)

mod common;

use mnv2c::frontend::{Config, mobilenet_v2};
use mnv2c::graph::{self, ConstDef, Epilogue, Graph, Op};
use mnv2c::passes::{self, DCE, DEFAULT_PIPELINE, FOLD_BATCHNORM, FUSE_ADD, FUSE_RELU6, Pass};

fn parse(text: &str) -> Graph {
    let g = graph::parse(text, "<test>").unwrap_or_else(|e| panic!("{e}"));
    graph::verify(&g).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// Runs `passes` (verifying after each) and returns the result.
fn run(mut g: Graph, passes: &[Pass]) -> Graph {
    passes::run_pipeline(&mut g, passes, &mut |_, _, _| {}).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// Runs one pass and returns whether it changed the graph.
fn run_one(g: &mut Graph, pass: Pass) -> bool {
    let mut changed = None;
    passes::run_pipeline(g, &[pass], &mut |_, c, _| changed = Some(c))
        .unwrap_or_else(|e| panic!("{e}"));
    changed.unwrap()
}

fn conv_of<'g>(g: &'g Graph, name: &str) -> &'g mnv2c::graph::Conv2d {
    let id = g.find(name).unwrap_or_else(|| panic!("no %{name} in\n{g}"));
    match &g.node(id).op {
        Op::Conv2d(c) => c,
        other => panic!("%{name} is {other:?}"),
    }
}

fn count(g: &Graph, mnemonic: &str) -> usize {
    g.node_ids()
        .filter(|&i| g.node(i).op.mnemonic() == mnemonic)
        .count()
}

fn operand_names(g: &Graph, name: &str) -> Vec<String> {
    g.operands(g.find(name).unwrap())
        .into_iter()
        .map(|o| g.node(o).name.clone())
        .collect()
}

/// The constants and input every hand-written graph below shares: a 1x1 conv weight `@w`
/// (4 -> 4 channels) and a batch norm's parameters.
const HEADER: &str = "
  const @w : f32[1,1,4,4]
  const @w2 : f32[1,1,4,4]
  const @b : f32[4]
  const @g : f32[4]
  const @be : f32[4]
  const @m : f32[4]
  const @v : f32[4]
  %x = input : f32[1,3,3,4]";
const CONV: &str = "{stride = [1, 1], pads = [0, 0, 0, 0], groups = 1";
const T: &str = "f32[1,3,3,4]";

fn graph_text(body: &str) -> String {
    format!(
        "graph t {{{HEADER}\n{}\n}}\n",
        body.replace("CONV", CONV).replace("T", T)
    )
}

#[test]
fn mobilenet_v2_after_the_default_pipeline_is_56_fused_convs_and_the_head() {
    let g = run(mobilenet_v2(&Config::default()).unwrap(), DEFAULT_PIPELINE);
    assert_eq!(count(&g, "conv2d"), 56);
    for gone in ["batch_norm", "relu6", "add"] {
        assert_eq!(count(&g, gone), 0, "a standalone {gone} is left");
    }
    for one in ["input", "global_avg_pool", "flatten", "softmax"] {
        assert_eq!(count(&g, one), 1, "{one}");
    }
    assert_eq!(g.num_nodes(), 60);
    let convs: Vec<_> = g
        .node_ids()
        .filter_map(|i| match &g.node(i).op {
            Op::Conv2d(c) => Some(c),
            _ => None,
        })
        .collect();
    let with = |e: Epilogue| convs.iter().filter(|c| c.epilogue == e).count();
    // conv1_1, two per res block (pw, dw) and conv9_1 clamp; the 12 stride-1 shortcut blocks add.
    assert_eq!(with(Epilogue::Relu6), 36);
    assert_eq!(with(Epilogue::Add), 12);
    assert_eq!(with(Epilogue::AddRelu6), 0);
    // Every conv had a batch norm except the two ex_dim projections and the logits.
    assert_eq!(convs.iter().filter(|c| c.bias.is_some()).count(), 53);
    // Both shortcut kinds end the block in pw_linear (operand 1 of the seed's `ins + net`).
    assert_eq!(
        operand_names(&g, "res3_2/pw_linear"),
        ["res3_2/dw", "res3_1/pw_linear"]
    );
    assert_eq!(
        operand_names(&g, "res5_1/pw_linear"),
        ["res5_1/dw", "res5_1/ex_dim"]
    );
    assert_eq!(conv_of(&g, "res5_1/ex_dim").epilogue, Epilogue::None);
    // The optimised graph is still a graph of the text form.
    let back = graph::parse(&g.to_string(), "<printed>").unwrap();
    assert_eq!(back, g);
}

#[test]
fn fold_creates_derived_constants_named_after_the_weight() {
    let mut g = parse(&graph_text(
        "  %c = conv2d(%x, @w) CONV} : T
  %bn = batch_norm(%c, @g, @be, @m, @v) {epsilon = 1e-3} : T
  %r = relu6(%bn) : T
  output %r",
    ));
    assert!(run_one(&mut g, FOLD_BATCHNORM));
    let c = conv_of(&g, "c");
    assert_eq!(c.weight, "w.bn");
    assert_eq!(c.bias.as_deref(), Some("w.bn_bias"));
    assert_eq!(
        g.const_decl("w.bn").unwrap().def,
        ConstDef::FoldBnWeight {
            weight: "w".into(),
            gamma: "g".into(),
            variance: "v".into(),
            epsilon: 1e-3
        }
    );
    assert_eq!(
        g.const_decl("w.bn_bias").unwrap().def,
        ConstDef::FoldBnBias {
            bias: None,
            gamma: "g".into(),
            beta: "be".into(),
            mean: "m".into(),
            variance: "v".into(),
            epsilon: 1e-3
        }
    );
    assert!(g.find("bn").is_none());
    assert_eq!(operand_names(&g, "r"), ["c"]);
    // The originals stay (the derived constants read them).
    assert!(g.const_decl("w").is_some() && g.const_decl("g").is_some());
}

#[test]
fn fold_keeps_an_existing_bias_and_chains_of_batch_norms_fold_in_one_run() {
    let mut g = parse(&graph_text(
        "  %c = conv2d(%x, @w, bias = @b) CONV} : T
  %bn1 = batch_norm(%c, @g, @be, @m, @v) {epsilon = 1e-5} : T
  %bn2 = batch_norm(%bn1, @g, @be, @m, @v) {epsilon = 1e-5} : T
  output %bn2",
    ));
    assert!(run_one(&mut g, FOLD_BATCHNORM));
    assert_eq!(count(&g, "batch_norm"), 0, "{g}");
    let c = conv_of(&g, "c");
    assert_eq!(c.weight, "w.bn.bn");
    assert_eq!(c.bias.as_deref(), Some("w.bn.bn_bias"));
    let bias_of = |n: &str| match &g.const_decl(n).unwrap().def {
        ConstDef::FoldBnBias { bias, .. } => bias.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(bias_of("w.bn_bias").as_deref(), Some("b"));
    assert_eq!(bias_of("w.bn.bn_bias").as_deref(), Some("w.bn_bias"));
}

#[test]
fn fold_names_stay_unique_when_two_convs_share_a_weight() {
    let mut g = parse(&graph_text(
        "  %c1 = conv2d(%x, @w) CONV} : T
  %bn1 = batch_norm(%c1, @g, @be, @m, @v) {epsilon = 1e-5} : T
  %c2 = conv2d(%x, @w) CONV} : T
  %bn2 = batch_norm(%c2, @g, @be, @m, @v) {epsilon = 1e-5} : T
  %s = add(%bn1, %bn2) : T
  output %s",
    ));
    assert!(run_one(&mut g, FOLD_BATCHNORM));
    assert_eq!(conv_of(&g, "c1").weight, "w.bn");
    assert_eq!(conv_of(&g, "c2").weight, "w.bn.2");
    assert_eq!(conv_of(&g, "c2").bias.as_deref(), Some("w.bn_bias.2"));
}

#[test]
fn fold_does_not_fire_when_the_conv_output_has_two_consumers() {
    let text = graph_text(
        "  %c = conv2d(%x, @w) CONV} : T
  %bn = batch_norm(%c, @g, @be, @m, @v) {epsilon = 1e-5} : T
  %r = relu6(%c) : T
  %s = add(%bn, %r) : T
  output %s",
    );
    let mut g = parse(&text);
    assert!(!run_one(&mut g, FOLD_BATCHNORM));
    assert_eq!(g, parse(&text));
}

#[test]
fn fold_does_not_fire_when_the_conv_is_an_output_or_already_has_an_epilogue() {
    for body in [
        // The unfolded conv is observable as an output.
        "  %c = conv2d(%x, @w) CONV} : T
  %bn = batch_norm(%c, @g, @be, @m, @v) {epsilon = 1e-5} : T
  output %bn, %c",
        // A clamp sits between the conv and the batch norm.
        "  %c = conv2d(%x, @w) CONV, epilogue = relu6} : T
  %bn = batch_norm(%c, @g, @be, @m, @v) {epsilon = 1e-5} : T
  output %bn",
        // So does a residual add.
        "  %c = conv2d(%x, @w, residual = %x) CONV, epilogue = add} : T
  %bn = batch_norm(%c, @g, @be, @m, @v) {epsilon = 1e-5} : T
  output %bn",
    ] {
        let text = graph_text(body);
        let mut g = parse(&text);
        assert!(!run_one(&mut g, FOLD_BATCHNORM), "{text}");
        assert_eq!(g, parse(&text));
    }
}

#[test]
fn fuse_relu6_appends_the_clamp_to_the_epilogue() {
    for (before, after) in [
        ("", Epilogue::Relu6),
        (", epilogue = add", Epilogue::AddRelu6),
    ] {
        let residual = if before.is_empty() {
            ""
        } else {
            ", residual = %x"
        };
        let mut g = parse(&graph_text(&format!(
            "  %c = conv2d(%x, @w{residual}) CONV{before}}} : T
  %r = relu6(%c) : T
  output %r"
        )));
        assert!(run_one(&mut g, FUSE_RELU6));
        assert_eq!(conv_of(&g, "c").epilogue, after);
        assert_eq!(count(&g, "relu6"), 0);
        assert_eq!(g.node(g.outputs()[0]).name, "c");
    }
}

#[test]
fn fuse_relu6_guards() {
    for body in [
        // Two consumers: the unclamped value is still read.
        "  %c = conv2d(%x, @w) CONV} : T
  %r = relu6(%c) : T
  %s = add(%r, %c) : T
  output %s",
        // The conv is an output.
        "  %c = conv2d(%x, @w) CONV} : T
  %r = relu6(%c) : T
  output %r, %c",
        // It already clamps.
        "  %c = conv2d(%x, @w) CONV, epilogue = relu6} : T
  %r = relu6(%c) : T
  output %r",
        // The relu6 does not follow a conv.
        "  %r = relu6(%x) : T
  output %r",
    ] {
        let text = graph_text(body);
        let mut g = parse(&text);
        assert!(!run_one(&mut g, FUSE_RELU6), "{text}");
        assert_eq!(g, parse(&text));
    }
}

#[test]
fn fuse_add_takes_the_other_operand_as_residual_on_either_side() {
    // Identity shortcut written `x + conv` (the seed's order) and `conv + x`.
    for add in ["add(%x, %c)", "add(%c, %x)"] {
        let mut g = parse(&graph_text(&format!(
            "  %c = conv2d(%x, @w, bias = @b) CONV}} : T
  %s = {add} : T
  output %s"
        )));
        assert!(run_one(&mut g, FUSE_ADD));
        assert_eq!(conv_of(&g, "c").epilogue, Epilogue::Add);
        assert_eq!(conv_of(&g, "c").bias.as_deref(), Some("b"));
        // x is both the conv's input and its residual.
        assert_eq!(operand_names(&g, "c"), ["x", "x"]);
        assert_eq!(count(&g, "add"), 0);
    }
}

#[test]
fn fuse_add_prefers_operand_1_when_both_are_fusable_convs() {
    // The ex_dim shape: `add(ex_dim(x), main(x))`.
    let mut g = parse(&graph_text(
        "  %ex = conv2d(%x, @w2) CONV} : T
  %main = conv2d(%x, @w) CONV} : T
  %s = add(%ex, %main) : T
  output %s",
    ));
    assert!(run_one(&mut g, FUSE_ADD));
    assert_eq!(conv_of(&g, "main").epilogue, Epilogue::Add);
    assert_eq!(operand_names(&g, "main"), ["x", "ex"]);
    assert_eq!(conv_of(&g, "ex").epilogue, Epilogue::None);
    // Operand 1 not fusable (it clamps): operand 0 takes the add.
    let mut g = parse(&graph_text(
        "  %ex = conv2d(%x, @w2) CONV} : T
  %main = conv2d(%x, @w) CONV, epilogue = relu6} : T
  %s = add(%ex, %main) : T
  output %s",
    ));
    assert!(run_one(&mut g, FUSE_ADD));
    assert_eq!(operand_names(&g, "ex"), ["x", "main"]);
}

#[test]
fn fuse_add_guards() {
    for body in [
        // After a clamp: relu6(conv) + x != relu6(conv + x).
        "  %c = conv2d(%x, @w) CONV, epilogue = relu6} : T
  %s = add(%c, %x) : T
  output %s",
        // Already has a residual.
        "  %c = conv2d(%x, @w, residual = %x) CONV, epilogue = add} : T
  %s = add(%c, %x) : T
  output %s",
        // Two consumers.
        "  %c = conv2d(%x, @w) CONV} : T
  %s = add(%c, %x) : T
  %t = add(%s, %c) : T
  output %t",
        // The conv is an output.
        "  %c = conv2d(%x, @w) CONV} : T
  %s = add(%c, %x) : T
  output %s, %c",
        // conv + conv of the same conv: the residual would be the conv itself.
        "  %c = conv2d(%x, @w) CONV} : T
  %s = add(%c, %c) : T
  output %s",
    ] {
        let text = graph_text(body);
        let mut g = parse(&text);
        assert!(!run_one(&mut g, FUSE_ADD), "{text}");
        assert_eq!(g, parse(&text));
    }
}

#[test]
fn conv_add_relu6_becomes_add_relu6_only_with_fuse_add_first() {
    let text = graph_text(
        "  %c = conv2d(%x, @w) CONV} : T
  %s = add(%x, %c) : T
  %r = relu6(%s) : T
  output %r",
    );
    let g = run(parse(&text), &[FUSE_ADD, FUSE_RELU6]);
    assert_eq!(conv_of(&g, "c").epilogue, Epilogue::AddRelu6);
    assert_eq!(g.num_nodes(), 2, "{g}");
    // The other order leaves the relu6 standalone: why the default pipeline is ordered so.
    let g = run(parse(&text), &[FUSE_RELU6, FUSE_ADD]);
    assert_eq!(conv_of(&g, "c").epilogue, Epilogue::Add);
    assert_eq!(count(&g, "relu6"), 1);
}

#[test]
fn dce_removes_dead_nodes_and_constants_and_keeps_inputs_and_fold_sources() {
    let mut g = parse(
        "graph t {
  const @w : f32[1,1,4,4]
  const @unused : f32[4]
  const @dead_w : f32[1,1,4,4]
  const @g : f32[4]
  const @v : f32[4]
  const @w.bn : f32[1,1,4,4] = fold_bn_weight(@w, @g, @v) {epsilon = 1e-5}
  %x = input : f32[1,3,3,4]
  %y = input : f32[1,3,3,4]
  %c = conv2d(%x, @w.bn) {stride = [1, 1], pads = [0, 0, 0, 0], groups = 1} : f32[1,3,3,4]
  %dead = conv2d(%x, @dead_w) {stride = [1, 1], pads = [0, 0, 0, 0], groups = 1} : f32[1,3,3,4]
  %dead2 = relu6(%dead) : f32[1,3,3,4]
  output %c
}",
    );
    assert!(run_one(&mut g, DCE));
    let consts: Vec<&str> = g.consts().map(|(n, _)| n).collect();
    assert_eq!(consts, ["w", "g", "v", "w.bn"]);
    let nodes: Vec<&str> = g.node_ids().map(|i| g.node(i).name.as_str()).collect();
    assert_eq!(nodes, ["x", "y", "c"]);
    assert!(!run_one(&mut g, DCE), "dce is idempotent");
}

/// A deliberately broken pass, to see the pipeline catch it.
fn drop_outputs(g: &mut Graph) -> mnv2c::Result<bool> {
    g.set_outputs(Vec::new());
    Ok(true)
}

#[test]
fn a_pass_that_breaks_the_graph_is_named_in_the_error() {
    let broken = Pass {
        name: "drop-outputs",
        summary: "breaks invariant 5",
        run: drop_outputs,
    };
    let (_, mut g) = common::built_examples().remove(0);
    let mut seen = Vec::new();
    let err = passes::run_pipeline(&mut g, &[FOLD_BATCHNORM, broken, DCE], &mut |p, _, _| {
        seen.push(p.name)
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "verification failed after drop-outputs: graph conv_bn_relu6: has no outputs"
    );
    assert_eq!(
        seen,
        ["fold-batchnorm"],
        "observers see verified graphs only"
    );
}

#[test]
fn an_invalid_input_graph_is_reported_before_any_pass() {
    let (_, mut g) = common::built_examples().remove(0);
    g.set_outputs(Vec::new());
    let err = passes::run_pipeline(&mut g, DEFAULT_PIPELINE, &mut |_, _, _| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid graph: graph conv_bn_relu6: has no outputs"
    );
}

#[test]
fn pass_lookup_lists_the_valid_names() {
    assert_eq!(passes::lookup("dce").unwrap().name, "dce");
    let err = passes::lookup("fold-bn").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown pass 'fold-bn' (valid passes: fold-batchnorm, fuse-add, fuse-relu6, dce)"
    );
    let names: Vec<&str> = passes::parse_pass_list("dce, fuse-add")
        .unwrap()
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["dce", "fuse-add"]);
    let message = |list: &str| match passes::parse_pass_list(list) {
        Err(e @ mnv2c::Error::Usage(_)) => e.to_string(),
        other => panic!("{list:?}: expected a usage error, got {other:?}"),
    };
    assert_eq!(message(""), "empty pass list (use -O0 to run no pass)");
    assert!(
        message("dce,").starts_with("unknown pass '' (valid passes: fold-batchnorm"),
        "{}",
        message("dce,")
    );
}

#[test]
fn the_default_pipeline_is_idempotent_on_every_example() {
    for (name, g) in common::all_examples() {
        let once = run(g, DEFAULT_PIPELINE);
        let mut twice = once.clone();
        let mut changed = Vec::new();
        passes::run_pipeline(&mut twice, DEFAULT_PIPELINE, &mut |p, c, _| {
            if c {
                changed.push(p.name)
            }
        })
        .unwrap();
        assert!(changed.is_empty(), "{name}: {changed:?} changed it again");
        assert_eq!(twice, once);
    }
}
