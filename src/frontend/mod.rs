//! The front end: a small builder with the tutorial's blocks, and the seed's MobileNetV2 built
//! with it.
//!
//! [`Builder`] adds typed nodes and declares their weights as parameter constants named like the
//! TensorFlow variables (`mobilenetv2/res5_1/pw/w`); node names follow the seed's scopes
//! (`res5_1/pw_linear`). Every convolution gets TensorFlow's SAME padding as explicit four-sided
//! pads ([`Pads::same_1d`]), so a stride-2 conv on an even size pads 0 before and 1 after.
//! [`mobilenet_v2`] is the model of `shared/spec/seed-model.md`, written block by block as the
//! tutorial writes it.

pub mod detect;
pub mod keras;
pub mod onnx;
pub mod weights;

use crate::graph::{
    BatchNorm, Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType, ValueId,
};
use crate::{Error, Result};

/// The model configuration: input `[batch, height, width, 3]`, `num_classes` logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub num_classes: usize,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl Default for Config {
    /// The seed's configuration: one 224x224 image, 1000 classes.
    fn default() -> Config {
        Config {
            num_classes: 1000,
            batch: 1,
            height: 224,
            width: 224,
        }
    }
}

/// The epsilon of the tutorial's `tf.layers.batch_normalization`.
pub const BN_EPSILON: f32 = 1e-5;

/// Builds a graph node by node, typing each with the graph's typing rules.
#[derive(Debug)]
pub struct Builder {
    graph: Graph,
    /// Prefix of every weight name (`mobilenetv2/`), as TensorFlow's outer variable scope.
    weight_prefix: String,
}

impl Builder {
    pub fn new(graph_name: &str, weight_prefix: &str) -> Builder {
        Builder {
            graph: Graph::new(graph_name),
            weight_prefix: weight_prefix.to_string(),
        }
    }

    /// The graph's output dimensions of a value.
    pub fn dims(&self, v: ValueId) -> &[usize] {
        &self.graph.node(v).ty.dims
    }

    fn param(&mut self, name: String, dims: Vec<usize>) -> Result<String> {
        let full = format!("{}{name}", self.weight_prefix);
        self.graph.add_const(
            full.clone(),
            Const {
                ty: TensorType::new(dims),
                def: ConstDef::Param,
            },
        )?;
        Ok(full)
    }

    pub fn input(&mut self, name: &str, dims: Vec<usize>) -> ValueId {
        self.graph
            .add_node(name, Op::Input, TensorType::new(dims), &[])
    }

    /// A bias-free `k x k` convolution with TensorFlow SAME padding, named `scope`, its weight
    /// `scope/w`. `depthwise` makes it a channel-multiplier-1 depthwise conv with TF's
    /// `[k, k, C, 1]` weight.
    pub fn conv(
        &mut self,
        scope: &str,
        x: ValueId,
        out_channels: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
    ) -> Result<ValueId> {
        self.conv_named(scope, scope, x, out_channels, k, stride, depthwise)
    }

    /// [`Builder::conv`] with a node name that differs from the weight's scope.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_named(
        &mut self,
        name: &str,
        scope: &str,
        x: ValueId,
        out_channels: usize,
        k: usize,
        stride: usize,
        depthwise: bool,
    ) -> Result<ValueId> {
        let &[_, h, w, cin] = self.dims(x) else {
            return Err(Error::Config(format!("%{name}: input is not NHWC")));
        };
        let bad = || Error::Config(format!("%{name}: stride must be at least 1"));
        let (top, bottom, _) = Pads::same_1d(h, k, stride).ok_or_else(bad)?;
        let (left, right, _) = Pads::same_1d(w, k, stride).ok_or_else(bad)?;
        let (weight_dims, groups) = if depthwise {
            (vec![k, k, cin, 1], cin)
        } else {
            (vec![k, k, cin, out_channels], 1)
        };
        let weight = self.param(format!("{scope}/w"), weight_dims)?;
        let op = Op::Conv2d(Conv2d {
            weight,
            bias: None,
            stride: [stride, stride],
            pads: Pads {
                top,
                bottom,
                left,
                right,
            },
            groups,
            epilogue: Epilogue::None,
        });
        self.graph.add_typed(name, op, &[x])
    }

    /// Inference batch norm with parameters `scope/{gamma,beta,moving_mean,moving_variance}`.
    pub fn batch_norm(&mut self, scope: &str, x: ValueId) -> Result<ValueId> {
        let c = *self.dims(x).last().unwrap_or(&0);
        let mut p = |n: &str| self.param(format!("{scope}/{n}"), vec![c]);
        let op = Op::BatchNorm(BatchNorm {
            gamma: p("gamma")?,
            beta: p("beta")?,
            mean: p("moving_mean")?,
            variance: p("moving_variance")?,
            epsilon: BN_EPSILON,
        });
        self.graph.add_typed(scope, op, &[x])
    }

    pub fn relu6(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        self.graph.add_typed(name, Op::Relu6, &[x])
    }

    pub fn relu(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        self.graph.add_typed(name, Op::Relu, &[x])
    }

    pub fn add(&mut self, name: &str, a: ValueId, b: ValueId) -> Result<ValueId> {
        self.graph.add_typed(name, Op::Add, &[a, b])
    }

    pub fn global_avg_pool(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        self.graph.add_typed(name, Op::GlobalAvgPool, &[x])
    }

    pub fn flatten(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        self.graph.add_typed(name, Op::Flatten, &[x])
    }

    pub fn softmax(&mut self, name: &str, x: ValueId) -> Result<ValueId> {
        self.graph.add_typed(name, Op::Softmax, &[x])
    }

    /// Finishes the graph with the given outputs and verifies it.
    pub fn finish(mut self, outputs: Vec<ValueId>) -> Result<Graph> {
        self.graph.set_outputs(outputs);
        crate::graph::verify(&self.graph)?;
        Ok(self.graph)
    }
}

/// The seed's `conv2d_block`: `k x k` conv (stride `s`) -> BN -> relu6.
pub fn conv2d_block(
    b: &mut Builder,
    x: ValueId,
    c: usize,
    k: usize,
    s: usize,
    name: &str,
) -> Result<ValueId> {
    let net = b.conv(&format!("{name}/conv2d"), x, c, k, s, false)?;
    let net = b.batch_norm(&format!("{name}/bn"), net)?;
    b.relu6(&format!("{name}/relu6"), net)
}

/// The seed's `res_block` (inverted residual): 1x1 expansion to `round(t * in)` channels (even
/// when `t = 1`) -> BN -> relu6, 3x3 depthwise (stride `s`) -> BN -> relu6, 1x1 linear projection
/// to `c` -> BN; then, only when `shortcut` and `s == 1`, the input is added back — through a
/// 1x1 `ex_dim` conv (no BN, no activation) when the channel counts differ.
pub fn res_block(
    b: &mut Builder,
    x: ValueId,
    t: usize,
    c: usize,
    s: usize,
    name: &str,
    shortcut: bool,
) -> Result<ValueId> {
    let cin = *b.dims(x).last().unwrap_or(&0);
    let bottleneck = t
        .checked_mul(cin)
        .ok_or_else(|| Error::Config(format!("{name}: expansion overflows")))?;
    let net = b.conv(&format!("{name}/pw"), x, bottleneck, 1, 1, false)?;
    let net = b.batch_norm(&format!("{name}/pw_bn"), net)?;
    let net = b.relu6(&format!("{name}/pw_relu6"), net)?;
    let net = b.conv(&format!("{name}/dw"), net, bottleneck, 3, s, true)?;
    let net = b.batch_norm(&format!("{name}/dw_bn"), net)?;
    let net = b.relu6(&format!("{name}/dw_relu6"), net)?;
    let net = b.conv(&format!("{name}/pw_linear"), net, c, 1, 1, false)?;
    let net = b.batch_norm(&format!("{name}/pw_linear_bn"), net)?;
    if !(shortcut && s == 1) {
        return Ok(net);
    }
    let ins = if cin == c {
        x
    } else {
        b.conv(&format!("{name}/ex_dim"), x, c, 1, 1, false)?
    };
    // The seed writes `ins + net`: the shortcut is the first operand.
    b.add(&format!("{name}/add"), ins, net)
}

/// The seed's `pwise_block`: 1x1 conv (`pwb`) -> BN (`bn`) -> relu6.
pub fn pwise_block(b: &mut Builder, x: ValueId, c: usize, name: &str) -> Result<ValueId> {
    let net = b.conv(&format!("{name}/pwb"), x, c, 1, 1, false)?;
    let net = b.batch_norm(&format!("{name}/bn"), net)?;
    b.relu6(&format!("{name}/relu6"), net)
}

/// The seed's `global_avg`: average over the whole H x W.
pub fn global_avg(b: &mut Builder, x: ValueId) -> Result<ValueId> {
    b.global_avg_pool("global_avg", x)
}

/// The seed's head: bias-free 1x1 conv to `num_classes` (weight `logits/w`, node `logits/conv`),
/// then flatten (node `logits`). Returns the flattened logits `[N, num_classes]`.
pub fn logits(b: &mut Builder, x: ValueId, num_classes: usize) -> Result<ValueId> {
    let net = b.conv_named("logits/conv", "logits", x, num_classes, 1, 1, false)?;
    b.flatten("logits", net)
}

/// The seed's MobileNetV2 (`shared/spec/seed-model.md`) for `config`. Outputs: the logits
/// `[N, num_classes]` and the probabilities `[N, num_classes]`.
pub fn mobilenet_v2(config: &Config) -> Result<Graph> {
    let Config {
        num_classes,
        batch,
        height,
        width,
    } = *config;
    for (what, v) in [
        ("num_classes", num_classes),
        ("batch", batch),
        ("height", height),
        ("width", width),
    ] {
        if v == 0 {
            return Err(Error::Config(format!("{what} must be at least 1")));
        }
    }
    let exp = 6; // expansion ratio
    let mut b = Builder::new("mobilenetv2", "mobilenetv2/");
    let input = b.input("input", vec![batch, height, width, 3]);
    let mut net = conv2d_block(&mut b, input, 32, 3, 2, "conv1_1")?; // size/2
    // (name, t, c, s, shortcut), in the tutorial's order.
    let blocks: [(&str, usize, usize, usize, bool); 17] = [
        ("res2_1", 1, 16, 1, true),
        ("res3_1", exp, 24, 2, true), // size/4
        ("res3_2", exp, 24, 1, true),
        ("res4_1", exp, 32, 2, true), // size/8
        ("res4_2", exp, 32, 1, true),
        ("res4_3", exp, 32, 1, true),
        ("res5_1", exp, 64, 1, true),
        ("res5_2", exp, 64, 1, true),
        ("res5_3", exp, 64, 1, true),
        ("res5_4", exp, 64, 1, true),
        ("res6_1", exp, 96, 2, true), // size/16
        ("res6_2", exp, 96, 1, true),
        ("res6_3", exp, 96, 1, true),
        ("res7_1", exp, 160, 2, true), // size/32
        ("res7_2", exp, 160, 1, true),
        ("res7_3", exp, 160, 1, true),
        ("res8_1", exp, 320, 1, false),
    ];
    for (name, t, c, s, shortcut) in blocks {
        net = res_block(&mut b, net, t, c, s, name, shortcut)?;
    }
    net = pwise_block(&mut b, net, 1280, "conv9_1")?;
    net = global_avg(&mut b, net)?;
    let logits = logits(&mut b, net, num_classes)?;
    let prob = b.softmax("prob", logits)?;
    b.finish(vec![logits, prob])
}
