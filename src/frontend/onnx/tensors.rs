//! Tensor values known at import time: initializers, `Constant` nodes, and what shape
//! subgraphs compute (`Shape -> Gather -> Unsqueeze -> Concat`), decoded from a `TensorProto`.
//!
//! What must hold: a value's element count equals the product of its dims (checked, with
//! overflow-checked arithmetic, before any data is trusted); data comes from exactly one place
//! (`raw_data` little-endian, the typed field, or an external file); an external file is
//! resolved relative to the model's directory and must stay inside it (no `..`, no absolute
//! path, no symlink out), and its `offset`/`length` must lie inside the file. Only FLOAT (and
//! DOUBLE, narrowed) tensors can become weights; INT64/INT32 tensors are shape arithmetic.

use std::path::{Component, Path};

use super::proto::{DATA_LOCATION_EXTERNAL, TensorProto, data_type};

/// The elements of a value known at import.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A tensor known at import: its ONNX dims and elements (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstVal {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl ConstVal {
    pub fn count(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::I64(v) => v.len(),
        }
    }

    /// The elements as integers (shape arithmetic); `None` for float data.
    pub fn ints(&self) -> Option<&[i64]> {
        match &self.data {
            Data::I64(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    /// The elements as f32; integers are converted (a Clip bound may be given as either).
    pub fn floats(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&i| i as f32).collect(),
        }
    }

    /// The single element of a scalar or one-element tensor.
    pub fn scalar(&self) -> Option<f32> {
        (self.count() == 1).then(|| self.floats()[0])
    }
}

/// Product of dims, `None` on overflow.
pub fn num_elements(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Where external data files are looked up: the model's directory (`None` for a model given as
/// bytes, which then cannot reference external data).
pub type ModelDir<'a> = Option<&'a Path>;

/// Decodes a `TensorProto`. Errors are sentences naming what is wrong, without the tensor's name
/// (the caller adds it).
pub fn decode(t: &TensorProto, dir: ModelDir<'_>) -> Result<ConstVal, String> {
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = num_elements(&dims).ok_or("element count overflows")?;
    let code = t.data_type.unwrap_or(0);
    let external = t.data_location == Some(DATA_LOCATION_EXTERNAL);
    let raw: Option<Vec<u8>> = if external {
        Some(read_external(t, dir, n, code)?)
    } else {
        t.raw_data.clone()
    };
    let data = match code {
        data_type::FLOAT => Data::F32(match raw {
            Some(b) => from_le(&b, n, 4, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))?,
            None => typed(&t.float_data, n)?,
        }),
        data_type::DOUBLE => Data::F32(match raw {
            Some(b) => from_le(&b, n, 8, |c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            })?,
            None => typed(&t.double_data, n)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        }),
        data_type::INT64 => Data::I64(match raw {
            Some(b) => from_le(&b, n, 8, |c| {
                i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
            })?,
            None => typed(&t.int64_data, n)?,
        }),
        data_type::INT32 => Data::I64(match raw {
            Some(b) => from_le(&b, n, 4, |c| {
                i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            })?,
            None => typed(&t.int32_data, n)?
                .into_iter()
                .map(i64::from)
                .collect(),
        }),
        other => {
            return Err(format!(
                "has data type {} (code {other}); mnv2c reads float32 models",
                data_type::name(other)
            ));
        }
    };
    Ok(ConstVal { dims, data })
}

fn typed<T: Copy>(v: &[T], n: usize) -> Result<Vec<T>, String> {
    if v.len() != n {
        return Err(format!("holds {} elements, its dims need {n}", v.len()));
    }
    Ok(v.to_vec())
}

fn from_le<T>(b: &[u8], n: usize, size: usize, f: impl Fn(&[u8]) -> T) -> Result<Vec<T>, String> {
    let want = n.checked_mul(size).ok_or("byte size overflows")?;
    if b.len() != want {
        return Err(format!(
            "has {} bytes of data, its dims and type need {want}",
            b.len()
        ));
    }
    Ok(b.chunks_exact(size).map(f).collect())
}

/// Reads the bytes of an external tensor: `location` (relative to the model's directory, and
/// inside it), optional `offset` and `length`.
fn read_external(
    t: &TensorProto,
    dir: ModelDir<'_>,
    n: usize,
    code: i32,
) -> Result<Vec<u8>, String> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = entry("location").ok_or("is stored externally but names no location")?;
    let dir = dir.ok_or("is stored externally, but the model was not read from a file")?;
    let rel = Path::new(&location);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location '{location}' must be a path inside the model's directory"
        ));
    }
    let path = dir.join(rel);
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let canon = path
        .canonicalize()
        .map_err(|e| format!("external data file {}: {e}", path.display()))?;
    if !canon.starts_with(&canon_dir) {
        return Err(format!(
            "external data file {} leaves the model's directory",
            path.display()
        ));
    }
    let parse = |key: &str| -> Result<Option<usize>, String> {
        entry(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| format!("external data {key} '{v}' is not a number"))
            })
            .transpose()
    };
    let bytes =
        std::fs::read(&canon).map_err(|e| format!("external data file {}: {e}", path.display()))?;
    let offset = parse("offset")?.unwrap_or(0);
    let size = match code {
        data_type::DOUBLE | data_type::INT64 => 8,
        _ => 4,
    };
    let length = match parse("length")? {
        Some(l) => l,
        None => n.checked_mul(size).ok_or("byte size overflows")?,
    };
    let end = offset
        .checked_add(length)
        .ok_or("external data range overflows")?;
    bytes.get(offset..end).map(<[u8]>::to_vec).ok_or_else(|| {
        format!(
            "external data file {} has {} bytes, the tensor needs bytes {offset}..{end}",
            path.display(),
            bytes.len()
        )
    })
}
