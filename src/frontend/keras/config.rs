//! The `model_config` JSON of a Keras model, parsed into layers and their connections.
//!
//! Both writers are read: Keras 3 (inbound nodes as `{"args": [...], "kwargs": {...}}` holding
//! `__keras_tensor__` objects with a `keras_history`) and Keras 2 / `tf_keras` (inbound nodes as
//! `[[layer, node, tensor, kwargs], ...]`). A functional model lists its layers, its input and
//! output layers; a `Sequential` model is a chain. A layer whose class is itself a model
//! (`Functional`, `Model`, `Sequential`) holds its parsed body in [`Layer::nested`].
//!
//! What must hold: every layer is called once (one inbound node), and every reference names a
//! layer of the same model; anything else is an [`Error::Config`] naming the layer. Each layer
//! also gets its *saver name* ([`Layer::saver`]), the key `.keras` files store its variables
//! under: the class name in snake case, `_1`, `_2`, ... for repeats within one model.

use serde_json::Value;

use crate::{Error, Result};

/// A tensor produced by a layer: `(layer name, node index, tensor index)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    pub layer: String,
    pub tensor: usize,
}

/// One layer of a model.
#[derive(Clone, Debug)]
pub struct Layer {
    pub class: String,
    pub name: String,
    pub config: Value,
    /// The tensors the layer is called on, in argument order.
    pub inbound: Vec<TensorRef>,
    /// The key of its variables in a `.keras` file (see the module doc).
    pub saver: String,
    /// The body of a layer that is itself a model.
    pub nested: Option<Box<Model>>,
}

/// A functional (or sequential) model.
#[derive(Clone, Debug)]
pub struct Model {
    pub name: String,
    pub layers: Vec<Layer>,
    pub inputs: Vec<TensorRef>,
    pub outputs: Vec<TensorRef>,
}

fn config_err(m: impl Into<String>) -> Error {
    Error::Config(m.into())
}

/// Parses a model config (the value of `model_config` / `config.json`).
pub fn parse(json: &str) -> Result<Model> {
    let v: Value = serde_json::from_str(json)
        .map_err(|e| config_err(format!("the Keras model config is not valid JSON: {e}")))?;
    parse_model(&v)
}

fn class_of(v: &Value) -> &str {
    v.get("class_name").and_then(Value::as_str).unwrap_or("")
}

/// Whether a layer class is a model whose body is in its config.
pub fn is_model_class(class: &str) -> bool {
    matches!(class, "Functional" | "Model" | "Sequential")
}

fn parse_model(v: &Value) -> Result<Model> {
    let class = class_of(v);
    let cfg = v
        .get("config")
        .ok_or_else(|| config_err(format!("model config of class '{class}' has no 'config'")))?;
    let name = cfg
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("model")
        .to_string();
    let raw = cfg.get("layers").and_then(Value::as_array).ok_or_else(|| {
        config_err(format!(
            "model '{name}' (class '{class}') has no layer list; only functional and sequential models are supported"
        ))
    })?;
    let mut layers = Vec::with_capacity(raw.len());
    let mut used: std::collections::HashMap<String, usize> = Default::default();
    for (i, l) in raw.iter().enumerate() {
        let class = class_of(l).to_string();
        let lcfg = l.get("config").cloned().unwrap_or(Value::Null);
        let lname = lcfg
            .get("name")
            .or_else(|| l.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| config_err(format!("layer {i} of model '{name}' has no name")))?;
        let snake = to_snake_case(&class);
        let saver = match used.get_mut(&snake) {
            Some(n) => {
                *n += 1;
                format!("{snake}_{n}")
            }
            None => {
                used.insert(snake.clone(), 0);
                snake
            }
        };
        let nested = if is_model_class(&class) {
            Some(Box::new(parse_model(l)?))
        } else {
            None
        };
        let inbound = inbound_refs(l, &lname)?;
        layers.push(Layer {
            class,
            name: lname,
            config: lcfg,
            inbound,
            saver,
            nested,
        });
    }
    if class == "Sequential" {
        return Ok(chain(name, layers));
    }
    let inputs = endpoint_refs(cfg.get("input_layers"), &name, "input_layers")?;
    let outputs = endpoint_refs(cfg.get("output_layers"), &name, "output_layers")?;
    Ok(Model {
        name,
        layers,
        inputs,
        outputs,
    })
}

/// A sequential model as a functional one: each layer reads the one before it.
fn chain(name: String, mut layers: Vec<Layer>) -> Model {
    for i in 1..layers.len() {
        let prev = layers[i - 1].name.clone();
        layers[i].inbound = vec![TensorRef {
            layer: prev,
            tensor: 0,
        }];
    }
    let r = |l: Option<&Layer>| {
        l.map(|l| TensorRef {
            layer: l.name.clone(),
            tensor: 0,
        })
        .into_iter()
        .collect()
    };
    Model {
        name,
        inputs: r(layers.first()),
        outputs: r(layers.last()),
        layers,
    }
}

/// `[["name", 0, 0], ...]` or a single `["name", 0, 0]`.
fn endpoint_refs(v: Option<&Value>, model: &str, key: &str) -> Result<Vec<TensorRef>> {
    let bad = || config_err(format!("model '{model}': '{key}' is missing or malformed"));
    let list = v.and_then(Value::as_array).ok_or_else(bad)?;
    let items: Vec<&Value> = if list.first().is_some_and(Value::is_string) {
        vec![v.ok_or_else(bad)?]
    } else {
        list.iter().collect()
    };
    items
        .into_iter()
        .map(|i| triple(i).ok_or_else(bad))
        .collect()
}

/// `["name", node, tensor, ...]`.
fn triple(v: &Value) -> Option<TensorRef> {
    let a = v.as_array()?;
    Some(TensorRef {
        layer: a.first()?.as_str()?.to_string(),
        tensor: usize::try_from(a.get(2)?.as_u64()?).ok()?,
    })
}

/// The tensors a layer's (only) inbound node reads, in order.
fn inbound_refs(l: &Value, name: &str) -> Result<Vec<TensorRef>> {
    let Some(nodes) = l.get("inbound_nodes").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let node = match nodes.len() {
        0 => return Ok(Vec::new()),
        1 => &nodes[0],
        n => {
            return Err(config_err(format!(
                "layer '{name}' is called {n} times (shared layers are not supported)"
            )));
        }
    };
    let mut refs = Vec::new();
    if let Some(list) = node.as_array() {
        // Keras 2: [[layer, node, tensor, kwargs], ...]
        for item in list {
            refs.push(
                triple(item)
                    .ok_or_else(|| config_err(format!("layer '{name}': malformed inbound node")))?,
            );
        }
    } else {
        // Keras 3: {"args": [...], "kwargs": {...}}; the tensors are in the args.
        collect_history(node.get("args").unwrap_or(&Value::Null), &mut refs);
    }
    Ok(refs)
}

fn collect_history(v: &Value, out: &mut Vec<TensorRef>) {
    match v {
        Value::Object(o) => {
            if o.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__")
                && let Some(r) = o
                    .get("config")
                    .and_then(|c| c.get("keras_history"))
                    .and_then(triple)
            {
                out.push(r);
                return;
            }
            o.values().for_each(|x| collect_history(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_history(x, out)),
        _ => {}
    }
}

/// Keras's `naming.to_snake_case`: drop non-word characters, `_` before an upper-case letter
/// that starts a lower-case run (`BatchNormalization` -> `Batch_Normalization`), then between a
/// lower-case and an upper-case letter (`ReLU` -> `Re_LU`), then lower-case everything.
pub fn to_snake_case(name: &str) -> String {
    let s: Vec<char> = name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // Step 1, `(.)([A-Z][a-z]+)` replaced left to right without overlap.
    let mut a = Vec::with_capacity(s.len() + 4);
    let mut i = 0;
    while i < s.len() {
        let run = i + 2 < s.len() && s[i + 1].is_ascii_uppercase() && s[i + 2].is_ascii_lowercase();
        if run {
            let mut j = i + 2;
            while j < s.len() && s[j].is_ascii_lowercase() {
                j += 1;
            }
            a.push(s[i]);
            a.push('_');
            a.extend_from_slice(&s[i + 1..j]);
            i = j;
        } else {
            a.push(s[i]);
            i += 1;
        }
    }
    // Step 2, `([a-z])([A-Z])`.
    let mut b = String::with_capacity(a.len() + 4);
    let mut i = 0;
    while i < a.len() {
        if i + 1 < a.len() && a[i].is_ascii_lowercase() && a[i + 1].is_ascii_uppercase() {
            b.push(a[i]);
            b.push('_');
            b.push(a[i + 1]);
            i += 2;
        } else {
            b.push(a[i]);
            i += 1;
        }
    }
    b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_matches_keras() {
        for (class, snake) in [
            ("Conv2D", "conv2d"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("BatchNormalization", "batch_normalization"),
            ("ReLU", "re_lu"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("Dense", "dense"),
            ("Functional", "functional"),
            ("InputLayer", "input_layer"),
        ] {
            assert_eq!(to_snake_case(class), snake, "{class}");
        }
    }
}
