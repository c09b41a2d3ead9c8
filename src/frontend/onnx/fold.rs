//! Import-time evaluation of the shape arithmetic exporters emit
//! (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`, `Constant`, `Cast`, ...): a node whose
//! inputs are all known at import (constants, or the static shape of an activation for `Shape`)
//! becomes a constant and emits no IR.
//!
//! What must hold: folding computes exactly what ONNX defines for the cases it accepts, and
//! declines (returns `false`, so the node is translated or rejected as an operator) for
//! anything else; sizes derived from file contents are checked before allocation.

use super::ops::{attr, attr_i, attr_ints, axis};
use super::proto::NodeProto;
use super::tensors::{self, ConstVal, Data};
use super::{Importer, Val};
use crate::Result;

/// The most elements a folded constant may have (shape arithmetic is tiny; this bounds what a
/// hostile file can make the importer allocate through `Gather`/`Concat`/`Cast`).
const MAX_FOLD_ELEMENTS: usize = 1 << 24;

/// Folds `n` if it can be evaluated at import; `Ok(false)` when it is not a folding case.
pub(crate) fn try_fold(imp: &mut Importer<'_>, n: &NodeProto) -> Result<bool> {
    let op = n.op_type.as_deref().unwrap_or("");
    let value = match op {
        "Constant" => Some(constant(imp, n)?),
        "Shape" => shape(imp, n)?,
        _ => {
            let mut ins = Vec::new();
            for (i, name) in n.input.iter().enumerate() {
                if name.is_empty() {
                    ins.push(None);
                    continue;
                }
                match imp.input(n, i)? {
                    Val::Const(c) => ins.push(Some(c)),
                    _ => return Ok(false),
                }
            }
            if ins.is_empty() {
                return Ok(false);
            }
            eval(imp, n, op, &ins)?
        }
    };
    let Some(v) = value else { return Ok(false) };
    if v.count() > MAX_FOLD_ELEMENTS {
        return Err(imp.node_error(n, format!("the folded value has {} elements", v.count())));
    }
    let name = n.output.first().cloned().unwrap_or_default();
    imp.set(&name, Val::Const(v));
    Ok(true)
}

fn constant(imp: &Importer<'_>, n: &NodeProto) -> Result<ConstVal> {
    if let Some(t) = attr(n, "value").and_then(|a| a.t.as_ref()) {
        return tensors::decode(t, None).map_err(|m| imp.node_error(n, format!("value {m}")));
    }
    if let Some(f) = attr(n, "value_float").and_then(|a| a.f) {
        return Ok(ConstVal {
            dims: vec![],
            data: Data::F32(vec![f]),
        });
    }
    if let Some(a) = attr(n, "value_floats") {
        return Ok(ConstVal {
            dims: vec![a.floats.len()],
            data: Data::F32(a.floats.clone()),
        });
    }
    if let Some(i) = attr_i(n, "value_int") {
        return Ok(ConstVal {
            dims: vec![],
            data: Data::I64(vec![i]),
        });
    }
    if let Some(v) = attr_ints(n, "value_ints") {
        return Ok(ConstVal {
            dims: vec![v.len()],
            data: Data::I64(v),
        });
    }
    Err(imp.node_error(n, "only tensor, float and int values are supported"))
}

/// `Shape` of an activation (its static ONNX dims) or of a constant.
fn shape(imp: &Importer<'_>, n: &NodeProto) -> Result<Option<ConstVal>> {
    let dims: Vec<usize> = match imp.input(n, 0)? {
        Val::Const(c) => c.dims,
        Val::Act(a) => imp.dims(&a),
        Val::Pending(super::Pending::Affine { act, .. }) => imp.dims(&act),
        Val::Pending(super::Pending::Pad { act, pads }) => {
            let mut d = imp.dims(&act);
            if d.len() == 4 {
                d[2] += pads[0] + pads[2];
                d[3] += pads[1] + pads[3];
            }
            d
        }
    };
    let rank = dims.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clampi(attr_i(n, "start").unwrap_or(0));
    let end = clampi(attr_i(n, "end").unwrap_or(rank));
    let dims = dims.get(start..end.max(start)).unwrap_or_default();
    let v: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Ok(Some(ConstVal {
        dims: vec![v.len()],
        data: Data::I64(v),
    }))
}

/// Evaluates a node of constant inputs; `None` for ops that are not folded.
fn eval(
    imp: &Importer<'_>,
    n: &NodeProto,
    op: &str,
    ins: &[Option<ConstVal>],
) -> Result<Option<ConstVal>> {
    let bad = |m: &str| imp.node_error(n, m);
    let x = ins[0].as_ref().ok_or_else(|| bad("input 0 is missing"))?;
    let ints_in = |i: usize| {
        ins.get(i)
            .and_then(|c| c.as_ref())
            .and_then(|c| c.ints().map(<[i64]>::to_vec))
    };
    let out = match op {
        "Identity" => x.clone(),
        "Cast" => {
            let to = attr_i(n, "to").unwrap_or(0) as i32;
            let data = match to {
                super::proto::data_type::FLOAT | super::proto::data_type::DOUBLE => {
                    Data::F32(x.floats())
                }
                super::proto::data_type::INT64 | super::proto::data_type::INT32 => {
                    Data::I64(x.floats().iter().map(|&f| f as i64).collect())
                }
                _ => return Ok(None),
            };
            let data = match (&x.data, data) {
                (Data::I64(v), Data::I64(_)) => Data::I64(v.clone()),
                (_, d) => d,
            };
            ConstVal {
                dims: x.dims.clone(),
                data,
            }
        }
        "Gather" => {
            let idx = ins
                .get(1)
                .and_then(|c| c.clone())
                .ok_or_else(|| bad("indices are missing"))?;
            gather(x, &idx, attr_i(n, "axis").unwrap_or(0)).map_err(|m| bad(&m))?
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = if imp.opset >= 13 {
                ints_in(1)
            } else {
                attr_ints(n, "axes")
            };
            let dims = if op == "Unsqueeze" {
                unsqueeze_dims(&x.dims, &axes.ok_or_else(|| bad("axes are missing"))?)
                    .map_err(|m| bad(&m))?
            } else {
                squeeze_dims(&x.dims, axes.as_deref()).map_err(|m| bad(&m))?
            };
            ConstVal {
                dims,
                data: x.data.clone(),
            }
        }
        "Concat" => concat(ins, attr_i(n, "axis").unwrap_or(0)).map_err(|m| bad(&m))?,
        "Reshape" => {
            let shape = ints_in(1).ok_or_else(|| bad("shape must be an int64 constant"))?;
            let allow_zero = attr_i(n, "allowzero").unwrap_or(0) != 0;
            let dims = reshape_target(&x.dims, &shape, allow_zero).map_err(|m| bad(&m))?;
            ConstVal {
                dims,
                data: x.data.clone(),
            }
        }
        "Add" | "Sub" | "Mul" | "Div" => {
            match binary_ints(op, x, ins.get(1).and_then(|c| c.as_ref())) {
                Some(v) => v,
                None => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// Integer arithmetic of shape computations: same shapes, or one side a single element.
fn binary_ints(op: &str, a: &ConstVal, b: Option<&ConstVal>) -> Option<ConstVal> {
    let b = b?;
    let (x, y) = (a.ints()?, b.ints()?);
    let (dims, len) = if x.len() >= y.len() {
        (&a.dims, x.len())
    } else {
        (&b.dims, y.len())
    };
    if !(x.len() == y.len() || x.len() == 1 || y.len() == 1) {
        return None;
    }
    let at = |v: &[i64], i: usize| if v.len() == 1 { v[0] } else { v[i] };
    let mut out = Vec::with_capacity(len);
    for i in 0..len {
        let (p, q) = (at(x, i), at(y, i));
        out.push(match op {
            "Add" => p.checked_add(q)?,
            "Sub" => p.checked_sub(q)?,
            "Mul" => p.checked_mul(q)?,
            _ => p.checked_div_euclid(q).filter(|_| q > 0 && p >= 0)?,
        });
    }
    Some(ConstVal {
        dims: dims.clone(),
        data: Data::I64(out),
    })
}

fn gather(x: &ConstVal, idx: &ConstVal, ax: i64) -> Result<ConstVal, String> {
    let rank = x.dims.len();
    let ax = axis(ax, rank).ok_or("axis out of range")?;
    let indices = idx.ints().ok_or("indices must be integers")?;
    let len = x.dims[ax];
    let outer: usize = x.dims[..ax].iter().product();
    let inner: usize = x.dims[ax + 1..].iter().product();
    let mut picks = Vec::with_capacity(indices.len());
    for &i in indices {
        let j = if i < 0 { i + len as i64 } else { i };
        if !(0..len as i64).contains(&j) {
            return Err(format!("index {i} is out of range for size {len}"));
        }
        picks.push(j as usize);
    }
    let pick = |o: usize, p: usize, k: usize| (o * len + p) * inner + k;
    let mut dims = x.dims[..ax].to_vec();
    dims.extend(&idx.dims);
    dims.extend(&x.dims[ax + 1..]);
    let count = tensors::num_elements(&dims)
        .filter(|&c| c <= MAX_FOLD_ELEMENTS)
        .ok_or("result too large")?;
    let order: Vec<usize> = (0..outer)
        .flat_map(|o| {
            picks
                .iter()
                .flat_map(move |&p| (0..inner).map(move |k| pick(o, p, k)))
        })
        .take(count)
        .collect();
    let data = match &x.data {
        Data::F32(v) => Data::F32(order.iter().map(|&i| v[i]).collect()),
        Data::I64(v) => Data::I64(order.iter().map(|&i| v[i]).collect()),
    };
    Ok(ConstVal { dims, data })
}

fn concat(ins: &[Option<ConstVal>], ax: i64) -> Result<ConstVal, String> {
    let parts: Vec<&ConstVal> = ins.iter().flatten().collect();
    let first = parts.first().ok_or("no inputs")?;
    if first.dims.len() != 1 || parts.iter().any(|p| p.dims.len() != 1) || axis(ax, 1) != Some(0) {
        return Err("only 1-D constants are concatenated at import".into());
    }
    if let Some(v) = parts.iter().map(|p| p.ints()).collect::<Option<Vec<_>>>() {
        let all: Vec<i64> = v.concat();
        return Ok(ConstVal {
            dims: vec![all.len()],
            data: Data::I64(all),
        });
    }
    let all: Vec<f32> = parts.iter().flat_map(|p| p.floats()).collect();
    Ok(ConstVal {
        dims: vec![all.len()],
        data: Data::F32(all),
    })
}

/// ONNX `Reshape`'s output shape: `0` copies the input's dim (unless `allow_zero`), one `-1` is
/// inferred from the element count.
pub(crate) fn reshape_target(
    dims: &[usize],
    shape: &[i64],
    allow_zero: bool,
) -> Result<Vec<usize>, String> {
    let total = tensors::num_elements(dims).ok_or("size overflows")?;
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allow_zero => {
                out.push(*dims.get(i).ok_or("0 copies a dimension the input lacks")?)
            }
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("shape {shape:?} is not valid")),
        }
    }
    let known = tensors::num_elements(&out).ok_or("size overflows")?;
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {dims:?} to {shape:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {dims:?} ({total} elements) to {shape:?}"
        ));
    }
    Ok(out)
}

/// `Squeeze`'s output shape: the listed axes (all size-1 axes when `None`) removed.
pub(crate) fn squeeze_dims(dims: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, String> {
    let rank = dims.len();
    let drop: Vec<usize> = match axes {
        None => (0..rank).filter(|&i| dims[i] == 1).collect(),
        Some(a) => a
            .iter()
            .map(|&i| axis(i, rank))
            .collect::<Option<_>>()
            .ok_or("axis out of range")?,
    };
    if drop.iter().any(|&i| dims[i] != 1) {
        return Err(format!(
            "squeezed axes {drop:?} of {dims:?} are not all of size 1"
        ));
    }
    Ok((0..rank)
        .filter(|i| !drop.contains(i))
        .map(|i| dims[i])
        .collect())
}

fn unsqueeze_dims(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>, String> {
    let rank = dims.len() + axes.len();
    let mut at: Vec<usize> = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Option<_>>()
        .ok_or("axis out of range")?;
    at.sort_unstable();
    at.dedup();
    if at.len() != axes.len() {
        return Err("repeated axis".into());
    }
    let mut rest = dims.iter();
    Ok((0..rank)
        .map(|i| {
            if at.contains(&i) {
                1
            } else {
                *rest.next().unwrap_or(&1)
            }
        })
        .collect())
}
