//! Snapshots of the default pipeline's effect, pass by pass: for every `ir-examples/*.ir`,
//! `<example>@0-input` is the input and `<example>@<i>-<pass>` the IR after the `i`-th pass of the default pipeline, recorded
//! only when that pass changed the graph — the snapshot of a pass is its effect. Review and
//! accept changes as `docs/testing.md` describes.

mod common;

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
            assert!(
                !after.is_empty(),
                "{name}: the default pipeline changed nothing"
            );
            for (snapshot, text) in after {
                insta::assert_snapshot!(snapshot, text);
            }
        }
    });
}
