//! Element-wise kernels of an unoptimised graph: batch norm, relu6 and add. Each runs over the
//! value viewed as `[rows, channels]` (channels = the last axis), rows serial, channels in
//! register tiles of f32x4 vectors with the standard tail policy.
//!
//! Batch norm is lowered with per-channel `scale = gamma / sqrt(variance + epsilon)` and
//! `shift = beta - mean * scale`, packed at lowering (computed in f64, rounded once), so the
//! kernel computes `fma(x, scale, shift)`.

use super::schedule::{Family, Schedule};
use super::{Chan, Cx, TileBody, c, for_loop, load, store, tile_nest};
use crate::graph::BatchNorm;
use crate::loops::{Affine, Expr, Kernel, LoopKind, LoopMode};
use crate::{Error, Result};

/// `out[r, ch] = value(index, ch)` over `[rows, channels]` of the node's output type.
fn rows_nest(cx: &Cx<'_>, k: &mut Kernel, value: &dyn Fn(&Affine, &Affine) -> Expr) -> Result<()> {
    let sched = Schedule::choose(Family::Elementwise);
    k.schedule = Some(sched);
    k.opt_level = sched.opt_level;
    let dims = cx.out_dims();
    let channels = *dims
        .last()
        .ok_or_else(|| Error::Codegen(format!("%{}: rank-0 value", cx.name())))?;
    let total: usize = dims.iter().product();
    let rows = total / channels;
    let out = cx.output_buffer(k)?;
    let rv = k.new_var("row");
    let row_base = Affine::var(rv) * c(channels)?;
    let init = |_: &Affine, ch: &Affine| value(&(row_base.clone() + ch.clone()), ch);
    let update = |_: &Affine, _: &Chan, _: &[crate::loops::Var], acc: Expr| acc;
    let finish =
        |_: &Affine, ch: &Affine, acc: Expr| store(out, row_base.clone() + ch.clone(), acc);
    let tiles = tile_nest(
        k,
        1,
        sched.channel_vectors,
        channels,
        &Affine::default(),
        &[],
        &TileBody {
            init: &init,
            update: &update,
            finish: &finish,
        },
    )?;
    k.body = vec![for_loop(
        rv,
        0,
        rows,
        LoopKind::Spatial,
        LoopMode::Serial,
        tiles,
    )];
    Ok(())
}

pub(crate) fn relu6(cx: &mut Cx<'_>) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let x = cx.input_buffer(&mut k, 0)?;
    rows_nest(cx, &mut k, &|i, _| Expr::relu6(load(x, i.clone())))?;
    Ok(k)
}

pub(crate) fn add(cx: &mut Cx<'_>) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let a = cx.input_buffer(&mut k, 0)?;
    let b = cx.input_buffer(&mut k, 1)?;
    rows_nest(cx, &mut k, &|i, _| {
        Expr::plus(load(a, i.clone()), load(b, i.clone()))
    })?;
    Ok(k)
}

pub(crate) fn batch_norm(cx: &mut Cx<'_>, bn: &BatchNorm) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let x = cx.input_buffer(&mut k, 0)?;
    let get = |n: &str| -> Result<Vec<f64>> {
        Ok(cx
            .constant(n)?
            .data()
            .iter()
            .map(|&v| f64::from(v))
            .collect())
    };
    let (gamma, beta, mean, var) = (
        get(&bn.gamma)?,
        get(&bn.beta)?,
        get(&bn.mean)?,
        get(&bn.variance)?,
    );
    let eps = f64::from(bn.epsilon);
    let n = gamma.len();
    if [beta.len(), mean.len(), var.len()].iter().any(|&l| l != n) {
        return Err(Error::Codegen(format!(
            "%{}: batch norm parameters differ in length",
            cx.name()
        )));
    }
    let scale: Vec<f64> = (0..n).map(|i| gamma[i] / (var[i] + eps).sqrt()).collect();
    let shift: Vec<f32> = (0..n)
        .map(|i| (beta[i] - mean[i] * scale[i]) as f32)
        .collect();
    let scale: Vec<f32> = scale.into_iter().map(|s| s as f32).collect();
    let sb = cx.packed_buffer(&mut k, "bn_scale", scale)?;
    let hb = cx.packed_buffer(&mut k, "bn_shift", shift)?;
    rows_nest(cx, &mut k, &|i, ch| {
        Expr::fma(
            load(x, i.clone()),
            load(sb, ch.clone()),
            load(hb, ch.clone()),
        )
    })?;
    Ok(k)
}
