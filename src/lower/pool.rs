//! Global average pooling: `y[n,0,0,c] = sum_{h,w} x[n,h,w,c] * (1 / (H*W))`, vectorised over
//! channels in register tiles, reduction over `h, w` (sum in f32, in row-major order, then one
//! multiply by the reciprocal of the window size).

use super::schedule::{Family, Schedule};
use super::{Chan, Cx, Reduction, TileBody, c, load, per_item_reduction, store};
use crate::Result;
use crate::loops::{Affine, Expr, Kernel, LoopMode, Var};

pub(crate) fn lower(cx: &mut Cx<'_>) -> Result<Kernel> {
    let sched = Schedule::choose(Family::Pool);
    let mut k = Kernel::new(cx.name(), Some(sched));
    let x = cx.input_buffer(&mut k, 0)?;
    let (_, xdims) = cx.operand(0)?;
    let [n, h, w, ch_n] = super::conv::dims4(&xdims, "global_avg_pool input")?;
    let out = cx.output_buffer(&mut k)?;
    let inv = 1.0 / (h as f64 * w as f64);
    let (h64, w64, c64) = (c(h)?, c(w)?, c(ch_n)?);
    let nv = k.new_var("n");
    let init = |_: &Affine, _: &Affine| Expr::Const(0.0);
    let update = |_: &Affine, chan: &Chan, r: &[Var], acc: Expr| {
        let ch = &chan.ch;
        let i = ((Affine::var(nv) * h64 + Affine::var(r[0])) * w64 + Affine::var(r[1])) * c64
            + ch.clone();
        Expr::plus(acc, load(x, i))
    };
    let finish = |_: &Affine, ch: &Affine, acc: Expr| {
        store(
            out,
            Affine::var(nv) * c64 + ch.clone(),
            Expr::times(acc, Expr::Const(inv as f32)),
        )
    };
    k.body = per_item_reduction(
        &mut k,
        (nv, n),
        sched.channel_vectors,
        ch_n,
        &[
            Reduction::new("h", 0, h, LoopMode::Serial),
            Reduction::new("w", 0, w, LoopMode::Serial),
        ],
        &TileBody {
            init: &init,
            update: &update,
            finish: &finish,
        },
    )?;
    Ok(k)
}
