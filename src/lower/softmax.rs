//! Softmax over the last axis: per row, `m = max_c x`, `e_c = exp(x_c - m)` (stored in the
//! output), `s = sum_c e_c` (in order), `y_c = e_c / s`. Scalar loops: `exp` is a call, and the
//! kernel is tiny next to the convolutions (one row of `num_classes` values per image).

use super::schedule::{Family, Schedule};
use super::{Cx, c, for_loop, load};
use crate::loops::{Access, Affine, BinOp, Expr, Kernel, LoopKind, LoopMode, Mem, Stmt};
use crate::{Error, Result};

pub(crate) fn lower(cx: &mut Cx<'_>) -> Result<Kernel> {
    let sched = Schedule::choose(Family::Softmax);
    let mut k = Kernel::new(cx.name(), Some(sched));
    let x = cx.input_buffer(&mut k, 0)?;
    let out = cx.output_buffer(&mut k)?;
    let dims = cx.out_dims();
    let cn = *dims
        .last()
        .ok_or_else(|| Error::Codegen(format!("%{}: rank-0 value", cx.name())))?;
    let rows = dims.iter().product::<usize>() / cn;
    let c64 = c(cn)?;
    let m = k.add_local("max", 1, false);
    let s = k.add_local("sum", 1, false);
    let local = |l| Access {
        mem: Mem::Local(l),
        index: Affine::default(),
    };
    let set = |l, value| Stmt::Store {
        dst: local(l),
        value,
    };
    let get = |l| Expr::Load(local(l));
    let rv = k.new_var("row");
    let row = Affine::var(rv) * c64;
    // One loop over the row's channels `lo..cn`, its body made from the element index.
    let over_row = |k: &mut Kernel, lo: usize, kind: LoopKind, f: &dyn Fn(Affine) -> Stmt| {
        let cv = k.new_var("c");
        let body = vec![f(row.clone() + Affine::var(cv))];
        for_loop(cv, lo, cn, kind, LoopMode::Serial, body)
    };
    let max = |i| set(m, Expr::bin(BinOp::Max, get(m), load(x, i)));
    let exp = |i: Affine| {
        let e = Expr::exp(Expr::bin(BinOp::Sub, load(x, i.clone()), get(m)));
        super::store(out, i, e)
    };
    let sum = |i| set(s, Expr::plus(get(s), load(out, i)));
    let div = |i: Affine| {
        let y = Expr::bin(BinOp::Div, load(out, i.clone()), get(s));
        super::store(out, i, y)
    };
    let mut body = vec![set(m, load(x, row.clone()))];
    if cn > 1 {
        body.push(over_row(&mut k, 1, LoopKind::Reduction, &max));
    }
    body.push(over_row(&mut k, 0, LoopKind::Spatial, &exp));
    body.push(set(s, Expr::Const(0.0)));
    body.push(over_row(&mut k, 0, LoopKind::Reduction, &sum));
    body.push(over_row(&mut k, 0, LoopKind::Spatial, &div));
    k.body = vec![for_loop(
        rv,
        0,
        rows,
        LoopKind::Spatial,
        LoopMode::Serial,
        body,
    )];
    Ok(k)
}
