//! Depthwise convolution (groups = channels, multiplier 1): memory bound, so it is vectorised
//! over channels (never treated as a grouped GEMM): per output pixel, register tiles of 8
//! channels accumulate the valid taps of the 3x3 (or any) window.
//!
//! Semantics: `y[n,oh,ow,c] = act(sum_{ky,kx} x[n, oh*sh+ky-pt, ow*sw+kx-pl, c] *
//! w[ky,kx,c] + bias[c] + residual[n,oh,ow,c])`; the weight `[kh,kw,1,C]` or `[kh,kw,C,1]` has
//! the element of tap `(ky,kx)`, channel `c` at `(ky*kw + kx)*C + c` either way.

use super::conv::{ConvParts, spatial_nest};
use super::schedule::{Family, Schedule};
use super::{Chan, Reduction, TileBody, c, load, tile_nest};
use crate::Result;
use crate::graph::Conv2d;
use crate::loops::{Affine, Expr, Kernel, Var};

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
    let relu6 = conv.epilogue.has_relu6();
    k.body = spatial_nest(&mut k, conv, p, sched.pixel_tile, &mut |k, nest, rs, cs| {
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
            p.store_result(out_pix.clone() + po.clone() * cn + ch.clone(), acc, relu6)
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
    })?;
    Ok(k)
}
