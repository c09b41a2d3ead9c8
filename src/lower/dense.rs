//! The dense layer: `y[n, m] = bias[m] + sum_k x[n, k] * w[k, m]`, vectorised over the outputs
//! `m` in register tiles (the weight row `w[k, ..]` is contiguous), the reduction over `k`
//! serial with one fused multiply-add per step, starting from the bias (or zero).

use super::schedule::{Family, Schedule};
use super::{Chan, Cx, Reduction, TileBody, c, load, per_item_reduction, store};
use crate::graph::Dense;
use crate::loops::{Affine, Expr, Kernel, LoopMode, Var};
use crate::{Error, Result};

pub(crate) fn lower(cx: &mut Cx<'_>, d: &Dense) -> Result<Kernel> {
    let sched = Schedule::choose(Family::Dense);
    let mut k = Kernel::new(cx.name(), Some(sched));
    k.opt_level = sched.opt_level;
    let x = cx.input_buffer(&mut k, 0)?;
    let w = cx.const_buffer(&mut k, &d.weight)?;
    let bias = d
        .bias
        .as_ref()
        .map(|b| cx.const_buffer(&mut k, b))
        .transpose()?;
    let (_, xdims) = cx.operand(0)?;
    let [n, kk] = xdims[..] else {
        return Err(Error::Codegen(format!(
            "%{}: dense input must be rank 2, got {xdims:?}",
            cx.name()
        )));
    };
    let m = cx.out_dims().get(1).copied().unwrap_or(0);
    let out = cx.output_buffer(&mut k)?;
    let (k64, m64) = (c(kk)?, c(m)?);
    let nv = k.new_var("n");
    let init = |_: &Affine, ch: &Affine| match bias {
        Some(b) => load(b, ch.clone()),
        None => Expr::Const(0.0),
    };
    let update = |_: &Affine, chan: &Chan, r: &[Var], acc: Expr| {
        let xi = Affine::var(nv) * k64 + Affine::var(r[0]);
        Expr::fma(
            load(x, xi),
            load(w, Affine::var(r[0]) * m64 + chan.ch.clone()),
            acc,
        )
    };
    let finish =
        |_: &Affine, ch: &Affine, acc: Expr| store(out, Affine::var(nv) * m64 + ch.clone(), acc);
    k.body = per_item_reduction(
        &mut k,
        (nv, n),
        sched.channel_vectors,
        m,
        &[Reduction::new("k", 0, kk, LoopMode::Serial)],
        &TileBody {
            init: &init,
            update: &update,
            finish: &finish,
        },
    )?;
    Ok(k)
}
