//! Transpose (a layout change, e.g. NCHW -> NHWC at an ONNX model's input): one serial loop per
//! output axis, innermost the last, each element copied with a scalar load at the permuted
//! input offset and a store at the output's row-major offset. Both offsets are affine in the
//! loop variables, so the loop-IR verifier proves every access in bounds. It runs once per
//! inference on the input image; the weights never need one (they are transposed at import).

use super::schedule::{Family, Schedule};
use super::{Cx, c, for_loop, load, store};
use crate::loops::{Affine, Kernel, LoopKind, LoopMode};
use crate::{Error, Result};

pub(crate) fn lower(cx: &mut Cx<'_>, perm: &[usize]) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), Some(Schedule::choose(Family::Layout)));
    let x = cx.input_buffer(&mut k, 0)?;
    let (_, xdims) = cx.operand(0)?;
    let out = cx.output_buffer(&mut k)?;
    let odims = cx.out_dims().to_vec();
    if perm.len() != xdims.len() || odims.len() != xdims.len() {
        return Err(Error::Codegen(format!(
            "%{}: perm {perm:?} does not fit the operand's rank {}",
            cx.name(),
            xdims.len()
        )));
    }
    // Row-major strides of the input.
    let mut strides = vec![1usize; xdims.len()];
    for a in (0..xdims.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1]
            .checked_mul(xdims[a + 1])
            .ok_or_else(|| Error::Codegen(format!("%{}: size overflows", cx.name())))?;
    }
    let vars: Vec<_> = (0..odims.len())
        .map(|a| k.new_var(&format!("i{a}")))
        .collect();
    let mut out_index = Affine::default();
    let mut in_index = Affine::default();
    for (a, &v) in vars.iter().enumerate() {
        out_index = out_index * c(odims[a])? + Affine::var(v);
        in_index = in_index + Affine::var(v) * c(strides[perm[a]])?;
    }
    let mut body = vec![store(out, out_index, load(x, in_index))];
    for (a, &v) in vars.iter().enumerate().rev() {
        body = vec![for_loop(
            v,
            0,
            odims[a],
            LoopKind::Spatial,
            LoopMode::Serial,
            body,
        )];
    }
    k.body = body;
    Ok(k)
}
