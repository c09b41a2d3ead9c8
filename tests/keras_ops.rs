//! The ops Keras models bring (pad, dense, relu, scale_offset) and the `fold-pad` pass: the
//! compiled model (JIT, with and without the passes) against the graph interpreter on graphs of
//! odd sizes, and the interpreter against hand-computed values.

mod common;

use mnv2c::graph::{self, Op, Pads, ScaleOffset, interp};
use mnv2c::runtime::{CompiledModel, Options};
use mnv2c::{Tensor, passes, tolerance};

/// A graph using every new op: scale_offset -> pad -> conv (valid, stride s) -> batch norm ->
/// relu -> pool -> flatten -> dense + bias -> relu -> dense -> softmax.
fn graph_text(n: usize, h: usize, w: usize, cin: usize, cout: usize, p: Pads, s: usize) -> String {
    let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right);
    let (oh, ow) = ((ph - 3) / s + 1, (pw - 3) / s + 1);
    format!(
        "graph ops {{
  const @k : f32[3,3,{cin},{cout}]
  const @g : f32[{cout}]
  const @b : f32[{cout}]
  const @m : f32[{cout}]
  const @v : f32[{cout}]
  const @d1 : f32[{cout},7]
  const @d1b : f32[7]
  const @d2 : f32[7,5]
  %x = input : f32[{n},{h},{w},{cin}]
  %r = scale_offset(%x) {{scale = 0.007843138, offset = -1.0}} : f32[{n},{h},{w},{cin}]
  %p = pad(%r) {{pads = [{}, {}, {}, {}]}} : f32[{n},{ph},{pw},{cin}]
  %c = conv2d(%p, @k) {{stride = [{s}, {s}], pads = [0, 0, 0, 0], groups = 1}} : f32[{n},{oh},{ow},{cout}]
  %bn = batch_norm(%c, @g, @b, @m, @v) {{epsilon = 0.001}} : f32[{n},{oh},{ow},{cout}]
  %a = relu(%bn) : f32[{n},{oh},{ow},{cout}]
  %gap = global_avg_pool(%a) : f32[{n},1,1,{cout}]
  %f = flatten(%gap) : f32[{n},{cout}]
  %h1 = dense(%f, @d1, bias = @d1b) : f32[{n},7]
  %h1r = relu(%h1) : f32[{n},7]
  %logits = dense(%h1r, @d2) : f32[{n},5]
  %probs = softmax(%logits) : f32[{n},5]
  output %logits, %probs
}}
",
        p.top, p.bottom, p.left, p.right
    )
}

fn pads(top: usize, bottom: usize, left: usize, right: usize) -> Pads {
    Pads {
        top,
        bottom,
        left,
        right,
    }
}

#[test]
fn compiled_matches_interpreter_with_and_without_passes() {
    let cases = [
        (2, 9, 7, 3, 8, pads(0, 1, 0, 1), 2),
        (1, 8, 8, 3, 5, pads(1, 1, 1, 1), 1),
        (3, 5, 11, 4, 13, pads(2, 0, 0, 2), 2),
        (1, 4, 4, 1, 1, pads(0, 0, 0, 0), 1),
    ];
    for (i, &(n, h, w, cin, cout, p, s)) in cases.iter().enumerate() {
        let text = graph_text(n, h, w, cin, cout, p, s);
        let g = graph::parse(&text, "ops.ir").unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(g.to_string(), text, "case {i}: print(parse(text)) == text");
        let weights = common::random_weights(&g, 7 + i as u64);
        // Pixels in [0, 255], as a Rescaling layer sees them.
        let x = common::Rng(i as u64).tensor(&[n, h, w, cin], 0.0, 255.0);
        let want = interp::run(&g, &weights, std::slice::from_ref(&x)).unwrap();
        for optimize in [false, true] {
            let opts = Options::new().with_optimize(optimize);
            let m = CompiledModel::compile(&g, &weights, &opts).unwrap();
            let got = m.run(&x).unwrap();
            let cmp = |name: &str, a: &Tensor, b: &Tensor| {
                let c = tolerance::compare(
                    a.data(),
                    b.data(),
                    tolerance::LOGITS_REL,
                    tolerance::LOGITS_ABS,
                );
                assert!(
                    c.is_some_and(|c| c.passed()),
                    "case {i} optimize={optimize} {name}: {c:?}\n{a:?}\n{b:?}"
                );
            };
            cmp("logits", &got.logits, &want[0]);
            cmp("probs", &got.probs, &want[1]);
        }
    }
}

#[test]
fn fold_pad_moves_the_pad_into_the_conv() {
    let text = graph_text(2, 9, 7, 3, 8, pads(0, 1, 0, 1), 2);
    let mut g = graph::parse(&text, "ops.ir").unwrap();
    assert!(passes::fold_pad::run(&mut g).unwrap());
    graph::verify(&g).unwrap();
    let conv = g.find("c").unwrap();
    let Op::Conv2d(c) = &g.node(conv).op else {
        panic!("conv")
    };
    assert_eq!(c.pads, pads(0, 1, 0, 1));
    assert!(g.find("p").is_none());
    assert_eq!(g.node(g.operands(conv)[0]).name, "r");
    // A pad the kernel cannot absorb (a side as wide as the kernel) stays.
    let text = graph_text(1, 5, 5, 2, 3, pads(3, 0, 0, 0), 1);
    let mut g = graph::parse(&text, "ops.ir").unwrap();
    assert!(!passes::fold_pad::run(&mut g).unwrap());
    assert!(g.find("p").is_some());
}

#[test]
fn interpreter_meanings_by_hand() {
    let x = Tensor::new(vec![1, 1, 2, 1], vec![1.0, -2.0]).unwrap();
    let p = interp::pad(&x, &pads(1, 0, 0, 1)).unwrap();
    assert_eq!(p.dims(), &[1, 2, 3, 1]);
    assert_eq!(p.data(), &[0.0, 0.0, 0.0, 1.0, -2.0, 0.0]);
    let r = interp::relu(&Tensor::new(vec![3], vec![-1.0, f32::NAN, 2.5]).unwrap());
    assert_eq!(r.data()[0], 0.0);
    assert!(r.data()[1].is_nan());
    assert_eq!(r.data()[2], 2.5);
    let so = ScaleOffset {
        scale: 0.5,
        offset: -1.0,
    };
    let s = interp::scale_offset(&Tensor::new(vec![2], vec![4.0, 0.0]).unwrap(), &so);
    assert_eq!(s.data(), &[1.0, -1.0]);
    // [1, 2] x [[1, 2, 3], [4, 5, 6]] + [10, 20, 30]
    let a = Tensor::new(vec![1, 2], vec![1.0, 2.0]).unwrap();
    let w = Tensor::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let b = Tensor::new(vec![3], vec![10.0, 20.0, 30.0]).unwrap();
    let d = interp::dense(&a, &w, Some(&b)).unwrap();
    assert_eq!(d.data(), &[19.0, 32.0, 45.0]);
}

#[test]
fn typing_rules_reject_misfits() {
    let bad = [
        // dense on a rank-4 value
        "graph g {\n  const @w : f32[3,2]\n  %x = input : f32[1,1,1,3]\n  %d = dense(%x, @w) : f32[1,2]\n  output %d\n}\n",
        // dense weight rows differ from the features
        "graph g {\n  const @w : f32[4,2]\n  %x = input : f32[1,3]\n  %d = dense(%x, @w) : f32[1,2]\n  output %d\n}\n",
        // pad with a wrong result type
        "graph g {\n  %x = input : f32[1,2,2,1]\n  %p = pad(%x) {pads = [1, 0, 0, 0]} : f32[1,2,2,1]\n  output %p\n}\n",
        // non-finite scale
        "graph g {\n  %x = input : f32[1,2]\n  %s = scale_offset(%x) {scale = -inf, offset = 0.0} : f32[1,2]\n  output %s\n}\n",
    ];
    for text in bad {
        assert!(
            graph::parse(text, "bad.ir")
                .and_then(|g| graph::verify(&g))
                .is_err(),
            "accepted:\n{text}"
        );
    }
}

/// `fold-rescale` folds a Rescaling into an unpadded conv (exactly, up to rounding) and leaves
/// it before a padded one; the compiled model agrees with the interpreter either way.
#[test]
fn fold_rescale_only_where_exact() {
    for (pads_text, folds) in [("0, 0, 0, 0", true), ("1, 1, 1, 1", false)] {
        let text = format!(
            "graph g {{
  const @w : f32[3,3,3,5]
  const @b : f32[5]
  %x = input : f32[2,6,7,3]
  %r = scale_offset(%x) {{scale = 0.007843138, offset = -1.0}} : f32[2,6,7,3]
  %c = conv2d(%r, @w, bias = @b) {{stride = [1, 1], pads = [{pads_text}], groups = 1}} : f32[2,{},{},5]
  output %c
}}
",
            if folds { 4 } else { 6 },
            if folds { 5 } else { 7 }
        );
        let g = graph::parse(&text, "r.ir").unwrap();
        let mut folded = g.clone();
        assert_eq!(passes::fold_rescale::run(&mut folded).unwrap(), folds);
        graph::verify(&folded).unwrap();
        assert_eq!(folded.find("r").is_none(), folds);
        let weights = common::random_weights(&g, 3);
        let x = common::Rng(9).tensor(&[2, 6, 7, 3], 0.0, 255.0);
        let want = interp::run(&g, &weights, std::slice::from_ref(&x)).unwrap();
        let bound = mnv2c::graph::consts::bind(&folded, &weights).unwrap();
        let got = interp::run(&folded, &bound, std::slice::from_ref(&x)).unwrap();
        let c = tolerance::compare(
            got[0].data(),
            want[0].data(),
            tolerance::LOGITS_REL,
            tolerance::LOGITS_ABS,
        )
        .unwrap();
        assert!(c.passed(), "pads {pads_text}: {c:?}");
        let m = CompiledModel::compile(&g, &weights, &Options::new()).unwrap();
        let jit = m.run_all(std::slice::from_ref(&x)).unwrap();
        let c = tolerance::compare(
            jit[0].data(),
            want[0].data(),
            tolerance::LOGITS_REL,
            tolerance::LOGITS_ABS,
        )
        .unwrap();
        assert!(c.passed(), "pads {pads_text} (JIT): {c:?}");
    }
}
