//! Snapshots of the default pipeline's effect, pass by pass: for every `ir-examples/*.ir`,
//! `<example>@0-input` is the input and `<example>@<i>-<pass>` the IR after the `i`-th pass of the default pipeline, recorded
//! only when that pass changed the graph — the snapshot of a pass is its effect. Review and
//! accept changes as `docs/testing.md` describes.

mod common;

use mnv2c::graph::Op;
use mnv2c::passes::{self, DEFAULT_PIPELINE};

#[test]
fn ir_after_each_pass() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        let examples = common::ir_examples();
        assert!(examples.len() >= 5, "ir-examples/ lost its examples");
        for (name, mut g) in examples {
            insta::assert_snapshot!(format!("{name}@0-input"), g.to_string());
            let mut after: Vec<(String, String)> = Vec::new();
            passes::run_pipeline(&mut g, DEFAULT_PIPELINE, &mut |pass, changed, g| {
                if changed {
                    let i = 1 + DEFAULT_PIPELINE
                        .iter()
                        .position(|p| p.name == pass.name)
                        .unwrap();
                    after.push((format!("{name}@{i}-{}", pass.name), g.to_string()));
                }
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            // Only an example that is already optimised (`mobilenetv2.ir`, the CLI's default
            // output) may pass through unchanged: then nothing is left to fold or fuse.
            if after.is_empty() {
                let unfused = g
                    .node_ids()
                    .find(|&i| matches!(g.node(i).op, Op::BatchNorm(_) | Op::Relu6 | Op::Add));
                assert!(
                    unfused.is_none(),
                    "{name}: the default pipeline changed nothing, yet %{} is left",
                    g.node(unfused.unwrap()).name
                );
            }
            for (snapshot, text) in after {
                insta::assert_snapshot!(snapshot, text);
            }
        }
    });
}

/// The loop IR of every small example after the default pipeline: `<example>@loops`, the kernels
/// with their schedules as `mnv2c compile FILE --emit loops` prints them. (The model's own loop
/// IR is thousands of lines; its kernel families are all covered by these examples.)
#[test]
fn loop_ir_of_each_small_example() {
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        for (name, mut g) in common::ir_examples() {
            if name.starts_with("mobilenetv2") {
                continue;
            }
            passes::optimize(&mut g).unwrap_or_else(|e| panic!("{name}: {e}"));
            let params = mnv2c::frontend::weights::seeded(&g, 0).unwrap();
            let consts = mnv2c::frontend::weights::bind(&g, &params).unwrap();
            let program =
                mnv2c::lower::lower(&g, &consts).unwrap_or_else(|e| panic!("{name}: {e}"));
            insta::assert_snapshot!(format!("{name}@loops"), program.to_string());
        }
    });
}
