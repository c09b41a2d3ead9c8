//! The parser and verifier never panic, whatever the bytes: they return an error or a graph.

use mnv2c::graph;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../ir-examples/ex_dim_residual.ir");

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(g) = graph::parse(&text, "fuzz.ir") {
            let _ = graph::verify(&g);
        }
    }

    /// Damaged versions of a real example: a byte range replaced by random IR-ish tokens.
    #[test]
    fn mutated_examples_never_panic(
        start in 0usize..EXAMPLE.len(),
        len in 0usize..40,
        insert in "[%@a-z0-9_\\[\\]{}(),=:. \n-]{0,20}",
    ) {
        let end = (start + len).min(EXAMPLE.len());
        let (start, end) = (floor_char(EXAMPLE, start), floor_char(EXAMPLE, end));
        let text = format!("{}{}{}", &EXAMPLE[..start], insert, &EXAMPLE[end..]);
        // A graph that verifies must also print and parse back to itself.
        if let Ok(g) = graph::parse(&text, "fuzz.ir")
            && graph::verify(&g).is_ok()
        {
            let back = graph::parse(&g.to_string(), "printed.ir").unwrap();
            prop_assert!(back == g);
        }
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
