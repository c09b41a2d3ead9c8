//! One translation per Keras layer class (see [`import`](super::import) for the list and the
//! naming rules). Each reads the layer's config, rejects what mnv2c does not implement with an
//! error naming the layer, binds the layer's variables with their expected shapes, and adds the
//! layer's nodes.

use serde_json::Value;

use super::config::Layer;
use super::import::{Importer, Scope, cfg_err, str_attr};
use crate::graph::{BatchNorm, Conv2d, Dense, Epilogue, Op, Pads, ScaleOffset, ValueId};
use crate::{Error, Result, Tensor};

fn usize_of(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// A `[a, b]` attribute (or a single number meaning `[n, n]`).
fn pair(l: &Layer, scope: &Scope, key: &str) -> Result<[usize; 2]> {
    let v = l.config.get(key);
    let bad = || cfg_err(l, scope, format!("'{key}' must be a pair of sizes"));
    match v {
        Some(Value::Array(a)) if a.len() == 2 => Ok([
            usize_of(&a[0]).ok_or_else(bad)?,
            usize_of(&a[1]).ok_or_else(bad)?,
        ]),
        Some(n) if n.is_u64() => {
            let n = usize_of(n).ok_or_else(bad)?;
            Ok([n, n])
        }
        _ => Err(bad()),
    }
}

fn flag(l: &Layer, key: &str, default: bool) -> bool {
    l.config
        .get(key)
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

fn number(l: &Layer, key: &str) -> Option<f64> {
    l.config.get(key).and_then(Value::as_f64)
}

fn channels_last(l: &Layer, scope: &Scope) -> Result<()> {
    match l.config.get("data_format").and_then(Value::as_str) {
        None | Some("channels_last") => Ok(()),
        Some(f) => Err(cfg_err(
            l,
            scope,
            format!("data_format '{f}' is not supported (only channels_last)"),
        )),
    }
}

impl Importer<'_> {
    pub(super) fn input(&mut self, l: &Layer, scope: &Scope) -> Result<ValueId> {
        let shape = l
            .config
            .get("batch_shape")
            .or_else(|| l.config.get("batch_input_shape"))
            .and_then(Value::as_array)
            .ok_or_else(|| cfg_err(l, scope, "no batch_shape"))?;
        if shape.len() != 4 {
            return Err(cfg_err(
                l,
                scope,
                format!(
                    "input rank {} is not supported (NHWC images only)",
                    shape.len()
                ),
            ));
        }
        let dim = |i: usize| usize_of(&shape[i]);
        let c = dim(3).ok_or_else(|| cfg_err(l, scope, "the channel count is not fixed"))?;
        let given = [self.size.batch, self.size.height, self.size.width];
        let mut dims = Vec::with_capacity(4);
        for (i, (axis, flag)) in [
            ("batch", "--batch"),
            ("height", "--height"),
            ("width", "--width"),
        ]
        .iter()
        .enumerate()
        {
            let v = match (dim(i), given[i]) {
                (Some(f), Some(g)) if f != g => {
                    return Err(Error::Usage(format!(
                        "{flag} {g} contradicts the model file's input {axis} {f} (layer '{}')",
                        l.name
                    )));
                }
                (Some(f), _) => f,
                (None, Some(g)) => g,
                (None, None) if i == 0 => 1,
                (None, None) => {
                    return Err(Error::Usage(format!(
                        "the model's input {axis} is free (None in layer '{}'): give it with --input-shape N,H,W,C or {flag}",
                        l.name
                    )));
                }
            };
            dims.push(v);
        }
        dims.push(c);
        if dims.contains(&0) {
            return Err(Error::Usage(format!(
                "input shape {dims:?} has a zero dimension"
            )));
        }
        let name = self.name(scope, l);
        Ok(self
            .graph
            .add_node(name, Op::Input, crate::graph::TensorType::new(dims), &[]))
    }

    /// A nested model's own input layer, reached through the outer value `v`: its declared
    /// sizes must agree with `v`'s.
    pub(super) fn check_nested_input(&self, l: &Layer, scope: &Scope, v: ValueId) -> Result<()> {
        let dims = self.dims(v);
        if let Some(shape) = l
            .config
            .get("batch_shape")
            .or_else(|| l.config.get("batch_input_shape"))
            .and_then(Value::as_array)
        {
            let ok = shape.len() == dims.len()
                && shape
                    .iter()
                    .zip(&dims)
                    .all(|(s, &d)| s.is_null() || usize_of(s) == Some(d));
            if !ok {
                return Err(cfg_err(
                    l,
                    scope,
                    format!("declares input {shape:?} but is called on {dims:?}"),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn conv(
        &mut self,
        l: &Layer,
        scope: &Scope,
        x: ValueId,
        depthwise: bool,
    ) -> Result<ValueId> {
        channels_last(l, scope)?;
        let [kh, kw] = pair(l, scope, "kernel_size")?;
        let stride = pair(l, scope, "strides")?;
        if l.config.get("dilation_rate").is_some() && pair(l, scope, "dilation_rate")? != [1, 1] {
            return Err(cfg_err(l, scope, "dilation is not supported"));
        }
        let xd = self.dims(x);
        let [_, h, w, cin] = xd[..] else {
            return Err(cfg_err(l, scope, format!("input must be NHWC, got {xd:?}")));
        };
        let (wdims, groups, cout) = if depthwise {
            let mult = l
                .config
                .get("depth_multiplier")
                .and_then(usize_of)
                .unwrap_or(1);
            (
                vec![kh, kw, cin, mult],
                cin,
                cin.checked_mul(mult)
                    .ok_or_else(|| cfg_err(l, scope, "too many channels"))?,
            )
        } else {
            if l.config.get("groups").and_then(usize_of).unwrap_or(1) != 1 {
                return Err(cfg_err(l, scope, "grouped Conv2D is not supported"));
            }
            let f = l
                .config
                .get("filters")
                .and_then(usize_of)
                .ok_or_else(|| cfg_err(l, scope, "no 'filters'"))?;
            (vec![kh, kw, cin, f], 1, f)
        };
        let pads = match str_attr(l, scope, "padding")?.as_str() {
            "valid" => Pads::default(),
            "same" => {
                let (t, b, _) = Pads::same_1d(h, kh, stride[0])
                    .ok_or_else(|| cfg_err(l, scope, "bad stride"))?;
                let (lf, r, _) = Pads::same_1d(w, kw, stride[1])
                    .ok_or_else(|| cfg_err(l, scope, "bad stride"))?;
                Pads {
                    top: t,
                    bottom: b,
                    left: lf,
                    right: r,
                }
            }
            p => return Err(cfg_err(l, scope, format!("padding '{p}' is not supported"))),
        };
        let weight = self.param(l, scope, "kernel", 0, &wdims)?;
        let bias = if flag(l, "use_bias", true) {
            Some(self.param(l, scope, "bias", 1, &[cout])?)
        } else {
            None
        };
        let op = Op::Conv2d(Conv2d {
            weight,
            bias,
            stride,
            pads,
            groups,
            epilogue: Epilogue::None,
        });
        self.with_activation(l, scope, x, op)
    }

    /// The layer's linear op followed by its `activation` attribute.
    fn with_activation(&mut self, l: &Layer, scope: &Scope, x: ValueId, op: Op) -> Result<ValueId> {
        let act = match l.config.get("activation") {
            None | Some(Value::Null) => "linear".to_string(),
            Some(_) => str_attr(l, scope, "activation")?,
        };
        let name = self.name(scope, l);
        if act == "linear" {
            return self.node(&name, op, &[x]);
        }
        let lin = self.node(&format!("{name}/linear"), op, &[x])?;
        self.activation(l, scope, lin, &act, &name)
    }

    pub(super) fn activation(
        &mut self,
        l: &Layer,
        scope: &Scope,
        x: ValueId,
        act: &str,
        name: &str,
    ) -> Result<ValueId> {
        let op = match act {
            "linear" => return Ok(x),
            "relu" => Op::Relu,
            "relu6" => Op::Relu6,
            "softmax" => {
                if self.dims(x).len() != 2 {
                    return Err(cfg_err(
                        l,
                        scope,
                        "softmax is supported on [N, classes] values only",
                    ));
                }
                Op::Softmax
            }
            other => {
                return Err(cfg_err(
                    l,
                    scope,
                    format!("activation '{other}' is not supported (relu, relu6, linear, softmax)"),
                ));
            }
        };
        self.node(name, op, &[x])
    }

    pub(super) fn relu(&mut self, l: &Layer, scope: &Scope, x: ValueId) -> Result<ValueId> {
        if number(l, "negative_slope").unwrap_or(0.0) != 0.0
            || number(l, "threshold").unwrap_or(0.0) != 0.0
        {
            return Err(cfg_err(
                l,
                scope,
                "a leaky or thresholded ReLU is not supported",
            ));
        }
        let act = match number(l, "max_value") {
            None => "relu",
            Some(6.0) => "relu6",
            Some(m) => {
                return Err(cfg_err(
                    l,
                    scope,
                    format!("ReLU max_value {m} is not supported (only 6 or none)"),
                ));
            }
        };
        let name = self.name(scope, l);
        self.activation(l, scope, x, act, &name)
    }

    pub(super) fn batch_norm(&mut self, l: &Layer, scope: &Scope, x: ValueId) -> Result<ValueId> {
        let xd = self.dims(x);
        let rank = xd.len() as i64;
        let axis = l
            .config
            .get("axis")
            .and_then(|a| a.as_i64().or_else(|| a.as_array()?.first()?.as_i64()))
            .unwrap_or(-1);
        if axis != -1 && axis != rank - 1 {
            return Err(cfg_err(
                l,
                scope,
                format!("axis {axis} is not the channel axis"),
            ));
        }
        let c = *xd.last().ok_or_else(|| cfg_err(l, scope, "rank-0 input"))?;
        let epsilon = number(l, "epsilon").unwrap_or(1e-3) as f32;
        let (scale, center) = (flag(l, "scale", true), flag(l, "center", true));
        let mut index = 0;
        let mut var = |me: &mut Self, name: &str, present: bool, fill: f32| -> Result<String> {
            if present {
                index += 1;
                me.param(l, scope, name, index - 1, &[c])
            } else {
                let n = format!("{}/{name}", me.name(scope, l));
                me.constant(&n, Tensor::new(vec![c], vec![fill; c])?)?;
                Ok(n)
            }
        };
        let gamma = var(self, "gamma", scale, 1.0)?;
        let beta = var(self, "beta", center, 0.0)?;
        let mean = var(self, "moving_mean", true, 0.0)?;
        let variance = var(self, "moving_variance", true, 1.0)?;
        let op = Op::BatchNorm(BatchNorm {
            gamma,
            beta,
            mean,
            variance,
            epsilon,
        });
        let name = self.name(scope, l);
        self.node(&name, op, &[x])
    }

    pub(super) fn zero_pad(&mut self, l: &Layer, scope: &Scope, x: ValueId) -> Result<ValueId> {
        channels_last(l, scope)?;
        let p = l.config.get("padding");
        let bad = || {
            cfg_err(
                l,
                scope,
                "'padding' must be n, [h, w] or [[top, bottom], [left, right]]",
            )
        };
        let side = |v: &Value| -> Option<[usize; 2]> {
            match v {
                Value::Array(a) if a.len() == 2 => Some([usize_of(&a[0])?, usize_of(&a[1])?]),
                n => usize_of(n).map(|n| [n, n]),
            }
        };
        let [[top, bottom], [left, right]] = match p {
            Some(Value::Array(a)) if a.len() == 2 => {
                [side(&a[0]).ok_or_else(bad)?, side(&a[1]).ok_or_else(bad)?]
            }
            Some(n) => {
                let s = side(n).ok_or_else(bad)?;
                [s, s]
            }
            None => return Err(bad()),
        };
        let name = self.name(scope, l);
        self.node(
            &name,
            Op::Pad(Pads {
                top,
                bottom,
                left,
                right,
            }),
            &[x],
        )
    }

    pub(super) fn add(&mut self, l: &Layer, scope: &Scope, args: &[ValueId]) -> Result<ValueId> {
        let name = self.name(scope, l);
        let [first, rest @ ..] = args else {
            return Err(cfg_err(l, scope, "Add needs two inputs"));
        };
        if rest.is_empty() {
            return Err(cfg_err(l, scope, "Add needs two inputs"));
        }
        let mut acc = *first;
        for (i, &b) in rest.iter().enumerate() {
            let n = if i + 1 == rest.len() {
                name.clone()
            } else {
                format!("{name}/{i}")
            };
            acc = self.node(&n, Op::Add, &[acc, b])?;
        }
        Ok(acc)
    }

    pub(super) fn global_pool(&mut self, l: &Layer, scope: &Scope, x: ValueId) -> Result<ValueId> {
        channels_last(l, scope)?;
        let name = self.name(scope, l);
        if flag(l, "keepdims", false) {
            return self.node(&name, Op::GlobalAvgPool, &[x]);
        }
        let pooled = self.node(&format!("{name}/pool"), Op::GlobalAvgPool, &[x])?;
        self.node(&name, Op::Flatten, &[pooled])
    }

    pub(super) fn dense(&mut self, l: &Layer, scope: &Scope, x: ValueId) -> Result<ValueId> {
        let xd = self.dims(x);
        let [_, k] = xd[..] else {
            return Err(cfg_err(
                l,
                scope,
                format!(
                    "Dense on a rank-{} value is not supported (flatten or pool first)",
                    xd.len()
                ),
            ));
        };
        let units = l
            .config
            .get("units")
            .and_then(usize_of)
            .ok_or_else(|| cfg_err(l, scope, "no 'units'"))?;
        let weight = self.param(l, scope, "kernel", 0, &[k, units])?;
        let bias = if flag(l, "use_bias", true) {
            Some(self.param(l, scope, "bias", 1, &[units])?)
        } else {
            None
        };
        self.with_activation(l, scope, x, Op::Dense(Dense { weight, bias }))
    }

    pub(super) fn rescaling(&mut self, l: &Layer, scope: &Scope, x: ValueId) -> Result<ValueId> {
        let scalar = |key: &str, default: f64| -> Result<f32> {
            match l.config.get(key) {
                None => Ok(default as f32),
                Some(v) => v.as_f64().map(|f| f as f32).ok_or_else(|| {
                    cfg_err(
                        l,
                        scope,
                        format!("per-channel '{key}' is not supported (only a number)"),
                    )
                }),
            }
        };
        let op = Op::ScaleOffset(ScaleOffset {
            scale: scalar("scale", 1.0)?,
            offset: scalar("offset", 0.0)?,
        });
        let name = self.name(scope, l);
        self.node(&name, op, &[x])
    }
}
