//! Depthwise convolution (groups = channels, multiplier 1): memory bound, so it is vectorised
//! over channels (never treated as a grouped GEMM): per output pixel, register tiles of 8
//! channels accumulate the valid taps of the 3x3 (or any) window. Each column segment of an
//! output row (columns with the same valid taps) is one depthwise-row micro-kernel statement
//! (`loops::micro::DwRow`) whose portable body is those register tiles.
//!
//! Semantics: `y[n,oh,ow,c] = act(sum_{ky,kx} x[n, oh*sh+ky-pt, ow*sw+kx-pl, c] *
//! w[ky,kx,c] + bias[c] + residual[n,oh,ow,c])`; the weight `[kh,kw,1,C]` or `[kh,kw,C,1]` has
//! the element of tap `(ky,kx)`, channel `c` at `(ky*kw + kx)*C + c` either way.

use super::conv::{ConvParts, Nest, Segment, spatial_nest};
use super::schedule::{Family, Schedule};
use super::{Chan, Reduction, TileBody, c, load, tile_nest};
use crate::Result;
use crate::graph::Conv2d;
use crate::loops::micro::{DwRow, Micro, Op, Operand, Slot};
use crate::loops::{Affine, Expr, Kernel, Stmt, Var};

pub(crate) fn lower(mut k: Kernel, conv: &Conv2d, p: &ConvParts) -> Result<Kernel> {
    let sched = Schedule::choose(Family::Depthwise).bounded(p.geo.kh * p.geo.kw);
    k.schedule = Some(sched);
    k.opt_level = sched.opt_level;
    let [_, h, w, ch_n] = p.xd;
    let [_, oh, ow, _] = p.od;
    let (h, w, cn, oh, ow) = (c(h)?, c(w)?, c(ch_n)?, c(oh)?, c(ow)?);
    let (sh, sw) = (c(conv.stride[0])?, c(conv.stride[1])?);
    let (pt, pl) = (c(conv.pads.top)?, c(conv.pads.left)?);
    let kw = c(p.geo.kw)?;
    let clamp = conv.epilogue.clamp();
    let mut tiles = |k: &mut Kernel, nest: &Nest, rs: Segment, cs: Segment| {
        let ohv = Affine::var(nest.oh);
        // Pixel `p` of the tile is column `ow_base + p` (`cn` further in the output, `sw * cn`
        // in the input).
        let out_pix = ((nest.n.clone() * oh + ohv.clone()) * ow + nest.ow_base.clone()) * cn;
        // Tap (0, 0) of the window; negative on borders, where the clamped taps stay inside.
        let x_base =
            ((nest.n.clone() * h + ohv * sh + (-pt)) * w + nest.ow_base.clone() * sw + (-pl)) * cn;
        let init = |_: &Affine, ch: &Affine| match p.bias {
            Some(b) => load(b, ch.clone()),
            None => Expr::Const(0.0),
        };
        let update = |po: &Affine, chan: &Chan, r: &[Var], acc: Expr| {
            let ch = &chan.ch;
            let (ky, kx) = (Affine::var(r[0]), Affine::var(r[1]));
            let xi = x_base.clone()
                + po.clone() * (sw * cn)
                + ky.clone() * (w * cn)
                + kx.clone() * cn
                + ch.clone();
            let wi = (ky * kw + kx) * cn + ch.clone();
            Expr::fma(load(p.x, xi), load(p.w, wi), acc)
        };
        let finish = |po: &Affine, ch: &Affine, acc: Expr| {
            p.store_result(out_pix.clone() + po.clone() * cn + ch.clone(), acc, clamp)
        };
        let red = [
            Reduction::new("ky", rs.k_lo, rs.k_hi, sched.tap_mode()),
            Reduction::new("kx", cs.k_lo, cs.k_hi, sched.tap_mode()),
        ];
        let red: &[Reduction<'_>] = if red.iter().any(Reduction::is_empty) {
            &[]
        } else {
            &red
        };
        tile_nest(
            k,
            nest.pixel_tile,
            sched.channel_vectors,
            ch_n,
            &Affine::default(),
            red,
            &TileBody {
                init: &init,
                update: &update,
                finish: &finish,
            },
        )
    };
    let mut row = |k: &mut Kernel, at: &Nest, rs: Segment, cs: Segment, body: Vec<Stmt>| {
        micro_row(k, conv, p, at, rs, cs, body)
    };
    k.body = spatial_nest(&mut k, conv, p, sched.pixel_tile, &mut tiles, &mut row)?;
    Ok(k)
}

/// The row of one column segment (`at.ow_base` its first column, `at.pixel_tile` its width) of
/// a depthwise or dense (groups 1) conv as a micro-kernel statement around its portable
/// `body`. A segment without valid taps (a window entirely in the padding) and grouped convs
/// stay plain loop IR.
pub(crate) fn micro_row(
    _k: &mut Kernel,
    conv: &Conv2d,
    p: &ConvParts,
    at: &Nest,
    rs: Segment,
    cs: Segment,
    body: Vec<Stmt>,
) -> Result<Vec<Stmt>> {
    let [_, h, w, cin] = p.xd;
    let [_, oh, ow, cn] = p.od;
    let g = p.geo;
    // Depthwise (multiplier 1), or dense (groups 1); grouped convs keep plain loop IR.
    let dense = match g.groups {
        1 => Some(cin),
        n if n == cin && n == cn => None,
        _ => return Ok(body),
    };
    if rs.k_lo >= rs.k_hi || cs.k_lo >= cs.k_hi {
        return Ok(body);
    }
    let (sh, sw) = (conv.stride[0], conv.stride[1]);
    let d = DwRow {
        cols: at.pixel_tile,
        c: cn,
        ny: rs.k_hi - rs.k_lo,
        nx: cs.k_hi - cs.k_lo,
        x_col: sw * cin,
        x_row: w * cin,
        w_row: g.kw * cin * dense.map_or(1, |_| cn),
        bias: p.bias.is_some(),
        residual: p.residual.is_some(),
        clamp: conv.epilogue.clamp(),
        dense,
    };
    let ohv = Affine::var(at.oh);
    // The first valid tap of the segment's first column.
    let row0 = at.n.clone() * c(h)? + ohv.clone() * c(sh)? + (c(rs.k_lo)? - c(conv.pads.top)?);
    let col0 = c(cs.lo * sw + cs.k_lo)? - c(conv.pads.left)?;
    let x = (row0 * c(w)? + col0) * c(cin)?;
    let wt = Affine::constant(c((rs.k_lo * g.kw + cs.k_lo)
        * cin
        * dense.map_or(1, |_| cn))?);
    let out = ((at.n.clone() * c(oh)? + ohv) * c(ow)? + c(cs.lo)?) * c(cn)?;
    let operand = |buf, base| Operand { buf, base };
    let mut operands = vec![(Slot::X, operand(p.x, x)), (Slot::W, operand(p.w, wt))];
    if let Some(b) = p.bias {
        operands.push((Slot::Bias, operand(b, Affine::default())));
    }
    if let Some(r) = p.residual {
        operands.push((Slot::Residual, operand(r, out.clone())));
    }
    operands.push((Slot::Out, operand(p.out, out)));
    Ok(vec![Stmt::Micro(Box::new(Micro {
        op: Op::Depthwise(d),
        operands,
        body,
    }))])
}
