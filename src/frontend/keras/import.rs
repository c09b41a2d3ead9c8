//! Translates a parsed Keras model ([`super::config::Model`]) into the graph IR, layer by layer, and
//! binds each layer's variables (by name or saver path, see [`weights`](super::weights)) as
//! constants named `<scope>/<layer>/<variable>`.
//!
//! Layers and what they become: `InputLayer` -> `input`; `Conv2D` -> `conv2d` (groups 1) and
//! `DepthwiseConv2D` -> `conv2d` (groups = channels), each with TensorFlow's SAME pads or none;
//! `BatchNormalization` -> `batch_norm` with its epsilon; `ReLU`/`Activation` -> `relu`,
//! `relu6` or `softmax` (`linear` is nothing); `ZeroPadding2D` -> `pad`; `Add` -> `add`;
//! `GlobalAveragePooling2D` -> `global_avg_pool` (+ `flatten` unless `keepdims`); `Flatten` ->
//! `flatten`; `Dense` -> `dense` (+ its activation); `Rescaling` -> `scale_offset`; `Dropout`
//! -> nothing (inference); a nested model -> its layers, under its name as a scope.
//!
//! Names: a layer's output value is named after the layer (`mobilenetv2_1.00_160/Conv1_relu`);
//! when a layer with a fused activation (`Dense(..., activation='softmax')`) makes two nodes, the
//! pre-activation one is `<layer>/linear`. Characters the IR does not allow become `_`.
//!
//! What must hold: every attribute mnv2c does not implement (dilation, `channels_first`, a
//! leaky slope, per-channel rescaling, ...) is an [`Error::Config`] naming the layer, its class
//! and its model, never silently ignored; every variable's shape is checked against the layer.

use std::collections::HashMap;

use serde_json::Value;

use super::config::{Layer, Model, TensorRef};
use super::weights::{Place, Source};
use crate::graph::{Const, ConstDef, Graph, Op, TensorType, ValueId};
use crate::{Error, Result, Tensor, TensorMap};

/// The sizes a model's input takes when the file leaves them free (`None` height/width) or to
/// check them against (`--batch`, `--height`, `--width`, `--input-shape`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InputSize {
    pub batch: Option<usize>,
    pub height: Option<usize>,
    pub width: Option<usize>,
}

pub(super) struct Importer<'a> {
    pub graph: Graph,
    pub weights: TensorMap,
    source: &'a Source,
    pub(super) size: InputSize,
}

/// Where the layers being translated live: name prefix, top-level layer, saver path prefix.
#[derive(Clone)]
pub(super) struct Scope {
    pub prefix: String,
    pub top: Option<String>,
    pub saver: String,
    pub model: String,
}

/// Replaces characters the IR's names do not allow.
fn clean(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_./-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub(super) fn cfg_err(layer: &Layer, scope: &Scope, what: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "Keras layer '{}' (class {}) in model '{}': {what}",
        layer.name, layer.class, scope.model
    ))
}

impl<'a> Importer<'a> {
    pub fn new(name: &str, source: &'a Source, size: InputSize) -> Importer<'a> {
        Importer {
            graph: Graph::new(clean(name)),
            weights: TensorMap::new(),
            source,
            size,
        }
    }

    /// Translates the top-level model; returns its output values.
    pub fn top(&mut self, m: &Model) -> Result<Vec<ValueId>> {
        let scope = Scope {
            prefix: String::new(),
            top: None,
            saver: String::new(),
            model: m.name.clone(),
        };
        self.model(m, &scope, None)
    }

    /// Translates `m`'s layers in order; `given` are the values its inputs take when it is
    /// nested (else its input layers become graph inputs).
    fn model(
        &mut self,
        m: &Model,
        scope: &Scope,
        given: Option<&[ValueId]>,
    ) -> Result<Vec<ValueId>> {
        let mut values: HashMap<&str, Vec<ValueId>> = HashMap::new();
        if let Some(given) = given {
            if given.len() != m.inputs.len() {
                return Err(Error::Config(format!(
                    "nested model '{}' takes {} input(s), is called with {}",
                    m.name,
                    m.inputs.len(),
                    given.len()
                )));
            }
            for (r, &v) in m.inputs.iter().zip(given) {
                values.insert(r.layer.as_str(), vec![v]);
            }
        }
        for (i, layer) in m.layers.iter().enumerate() {
            if layer.class == "InputLayer" && values.contains_key(layer.name.as_str()) {
                self.check_nested_input(layer, scope, values[layer.name.as_str()][0])?;
                continue;
            }
            let args = layer
                .inbound
                .iter()
                .map(|r| lookup(&values, r))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    cfg_err(
                        layer,
                        scope,
                        format!("layer {i} reads a layer not defined before it"),
                    )
                })?;
            let out = self.layer(layer, scope, &args)?;
            values.insert(layer.name.as_str(), out);
        }
        m.outputs
            .iter()
            .map(|r| {
                lookup(&values, r).ok_or_else(|| {
                    Error::Config(format!(
                        "model '{}': output layer '{}' is not one of its layers",
                        m.name, r.layer
                    ))
                })
            })
            .collect()
    }

    fn layer(&mut self, l: &Layer, scope: &Scope, args: &[ValueId]) -> Result<Vec<ValueId>> {
        if let Some(nested) = &l.nested {
            let inner = Scope {
                prefix: format!("{}{}/", scope.prefix, clean(&l.name)),
                top: Some(scope.top.clone().unwrap_or_else(|| l.name.clone())),
                saver: format!("{}layers/{}/", scope.saver, l.saver),
                model: l.name.clone(),
            };
            return self.model(nested, &inner, Some(args));
        }
        let x = if l.class == "InputLayer" {
            None
        } else {
            let [x, ..] = args[..] else {
                return Err(cfg_err(l, scope, "the layer is not called on any tensor"));
            };
            Some(x)
        };
        let v = match (l.class.as_str(), x) {
            ("InputLayer", _) => self.input(l, scope)?,
            (_, None) => return Err(cfg_err(l, scope, "the layer has no input")),
            ("Conv2D", Some(x)) => self.conv(l, scope, x, false)?,
            ("DepthwiseConv2D", Some(x)) => self.conv(l, scope, x, true)?,
            ("BatchNormalization", Some(x)) => self.batch_norm(l, scope, x)?,
            ("ReLU", Some(x)) => self.relu(l, scope, x)?,
            ("Activation", Some(x)) => {
                let act = str_attr(l, scope, "activation")?;
                self.activation(l, scope, x, &act, &self.name(scope, l))?
            }
            ("ZeroPadding2D", Some(x)) => self.zero_pad(l, scope, x)?,
            ("Add", Some(_)) => self.add(l, scope, args)?,
            ("GlobalAveragePooling2D", Some(x)) => self.global_pool(l, scope, x)?,
            ("Flatten", Some(x)) => self.node(&self.name(scope, l), Op::Flatten, &[x])?,
            ("Dropout", Some(x)) => x,
            ("Dense", Some(x)) => self.dense(l, scope, x)?,
            ("Rescaling", Some(x)) => self.rescaling(l, scope, x)?,
            (other, Some(_)) => {
                return Err(cfg_err(
                    l,
                    scope,
                    format!(
                        "layer class '{other}' is not supported (supported: InputLayer, Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Activation, ZeroPadding2D, Add, GlobalAveragePooling2D, Flatten, Dropout, Dense, Rescaling, nested models)"
                    ),
                ));
            }
        };
        Ok(vec![v])
    }

    pub(super) fn name(&self, scope: &Scope, l: &Layer) -> String {
        format!("{}{}", scope.prefix, clean(&l.name))
    }

    pub(super) fn node(&mut self, name: &str, op: Op, args: &[ValueId]) -> Result<ValueId> {
        self.graph.add_typed(name, op, args)
    }

    pub(super) fn dims(&self, v: ValueId) -> Vec<usize> {
        self.graph.node(v).ty.dims.clone()
    }

    /// Binds variable `var` (index `index`) of `l` as constant `<layer>/<var>`, checking its
    /// shape.
    pub(super) fn param(
        &mut self,
        l: &Layer,
        scope: &Scope,
        var: &str,
        index: usize,
        dims: &[usize],
    ) -> Result<String> {
        let place = Place {
            top: scope.top.clone().unwrap_or_else(|| l.name.clone()),
            layer: l.name.clone(),
            saver_path: format!("{}layers/{}", scope.saver, l.saver),
        };
        let t = self.source.var(&place, var, index)?;
        let name = format!("{}/{var}", self.name(scope, l));
        if t.dims() != dims {
            return Err(Error::Weights {
                tensor: name,
                message: format!(
                    "has shape {}, expected {} for this layer",
                    t.ty(),
                    TensorType::new(dims.to_vec())
                ),
            });
        }
        self.constant(&name, t)?;
        Ok(name)
    }

    pub(super) fn constant(&mut self, name: &str, t: Tensor) -> Result<()> {
        self.graph.add_const(
            name,
            Const {
                ty: TensorType::new(t.dims().to_vec()),
                def: ConstDef::Param,
            },
        )?;
        self.weights.insert(name.to_string(), t);
        Ok(())
    }
}

fn lookup(values: &HashMap<&str, Vec<ValueId>>, r: &TensorRef) -> Option<ValueId> {
    values.get(r.layer.as_str())?.get(r.tensor).copied()
}

pub(super) fn str_attr(l: &Layer, scope: &Scope, key: &str) -> Result<String> {
    match l.config.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        // Keras 3 may serialise an activation as an object naming a registered function.
        Some(Value::Object(o)) => o
            .get("config")
            .and_then(|c| c.get("name").or_else(|| c.get("activation")))
            .or_else(|| o.get("class_name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| cfg_err(l, scope, format!("'{key}' is not understood"))),
        _ => Err(cfg_err(
            l,
            scope,
            format!("'{key}' is missing or not a string"),
        )),
    }
}
