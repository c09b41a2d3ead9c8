//! Element-wise kernels: batch norm, relu6, relu, add, scale/offset and zero padding. Each runs
//! over a value viewed as `[rows, channels]` (channels = the last axis), rows serial, channels in
//! register tiles of f32x4 vectors with the standard tail policy. Padding is two such nests: the
//! whole output set to zero, then the input's rows copied into the interior (`fold-pad` removes
//! most pads before lowering; this kernel runs the rest).
//!
//! Batch norm is lowered with per-channel `scale = gamma / sqrt(variance + epsilon)` and
//! `shift = beta - mean * scale`, packed at lowering (computed in f64, rounded once), so the
//! kernel computes `fma(x, scale, shift)`.

use super::schedule::{Family, Schedule};
use super::{Chan, Cx, TileBody, c, for_loop, load, store, tile_nest};
use crate::graph::{BatchNorm, Pads, ScaleOffset};
use crate::loops::{Affine, BufId, Expr, Kernel, LoopKind, LoopMode, Stmt, Var};
use crate::{Error, Result};

/// `out[r, ch] = value(index, ch)` over `[rows, channels]` of the node's output type.
fn rows_nest(cx: &Cx<'_>, k: &mut Kernel, value: &dyn Fn(&Affine, &Affine) -> Expr) -> Result<()> {
    let dims = cx.out_dims().to_vec();
    let channels = *dims
        .last()
        .ok_or_else(|| Error::Codegen(format!("%{}: rank-0 value", cx.name())))?;
    let rows = dims.iter().product::<usize>() / channels;
    let out = cx.output_buffer(k)?;
    let c64 = c(channels)?;
    let nest = row_nest(k, out, rows, channels, &|r, ch| {
        let i = r.clone() * c64 + ch.clone();
        (i.clone(), value(&i, ch))
    })?;
    k.body = vec![nest];
    Ok(())
}

/// What one element of a row nest stores: `(row, channel) -> (flat index into out, value)`.
type RowBody<'a> = dyn Fn(&Affine, &Affine) -> (Affine, Expr) + 'a;

/// One loop nest over `rows` x `channels` (rows serial, channels in register tiles) storing
/// `body(row, ch)` into `out`; sets the kernel's elementwise schedule.
fn row_nest(
    k: &mut Kernel,
    out: BufId,
    rows: usize,
    channels: usize,
    body: &RowBody<'_>,
) -> Result<Stmt> {
    let sched = Schedule::choose(Family::Elementwise);
    k.schedule = Some(sched);
    k.opt_level = sched.opt_level;
    let rv = k.new_var("row");
    let row = Affine::var(rv);
    let init = |_: &Affine, ch: &Affine| body(&row, ch).1;
    let update = |_: &Affine, _: &Chan, _: &[Var], acc: Expr| acc;
    let finish = |_: &Affine, ch: &Affine, acc: Expr| store(out, body(&row, ch).0, acc);
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
    Ok(for_loop(
        rv,
        0,
        rows,
        LoopKind::Spatial,
        LoopMode::Serial,
        tiles,
    ))
}

pub(crate) fn relu6(cx: &mut Cx<'_>) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let x = cx.input_buffer(&mut k, 0)?;
    rows_nest(cx, &mut k, &|i, _| {
        Expr::clamp(load(x, i.clone()), (0.0, 6.0))
    })?;
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

pub(crate) fn relu(cx: &mut Cx<'_>) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let x = cx.input_buffer(&mut k, 0)?;
    rows_nest(cx, &mut k, &|i, _| {
        Expr::clamp(load(x, i.clone()), (0.0, f32::INFINITY))
    })?;
    Ok(k)
}

pub(crate) fn scale_offset(cx: &mut Cx<'_>, so: &ScaleOffset) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let x = cx.input_buffer(&mut k, 0)?;
    rows_nest(cx, &mut k, &|i, _| {
        Expr::fma(
            load(x, i.clone()),
            Expr::Const(so.scale),
            Expr::Const(so.offset),
        )
    })?;
    Ok(k)
}

/// Zero padding: the output zeroed, then each input row `(n, y)` copied to output row
/// `(n, y + top)` starting at column `left` (a row of `w * c` contiguous floats).
pub(crate) fn pad(cx: &mut Cx<'_>, p: &Pads) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let x = cx.input_buffer(&mut k, 0)?;
    let out = cx.output_buffer(&mut k)?;
    let (_, xd) = cx.operand(0)?;
    let [n, h, w, ch] = super::conv::dims4(&xd, "pad input")?;
    let [_, oh, ow, _] = super::conv::dims4(cx.out_dims(), "pad output")?;
    let ch64 = c(ch)?;
    let zero = row_nest(&mut k, out, n * oh * ow, ch, &|r, chn| {
        (r.clone() * ch64 + chn.clone(), Expr::Const(0.0))
    })?;
    // Output row `b * oh + y + top` is not affine in an input row index `b * h + y`, so the copy
    // runs over `b` outside and `y` as the nest's rows.
    let bv = k.new_var("n");
    let (oh64, h64, wc64, owc64) = (c(oh)?, c(h)?, c(w * ch)?, c(ow * ch)?);
    let (top, left) = (c(p.top)?, c(p.left * ch)?);
    let copy = row_nest(&mut k, out, h, w * ch, &|y, i| {
        let b = Affine::var(bv);
        let src = (b.clone() * h64 + y.clone()) * wc64 + i.clone();
        let dst = (b * oh64 + y.clone() + top) * owc64 + left + i.clone();
        (dst, load(x, src))
    })?;
    k.body = vec![
        zero,
        for_loop(bv, 0, n, LoopKind::Spatial, LoopMode::Serial, vec![copy]),
    ];
    Ok(k)
}
