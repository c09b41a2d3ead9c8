//! Convolution kernels: the pointwise (1x1 GEMM) and direct (full / grouped) families, plus the
//! pieces the depthwise family shares (border segments, epilogue, spatial nest).
//!
//! Semantics (graph IR): `y[n,oh,ow,co] = act(sum_{ky,kx,ci} x[n, oh*sh+ky-pt, ow*sw+kx-pl,
//! g*cin_g+ci] * w[ky,kx,ci,co] + bias[co] + residual[n,oh,ow,co])`, with `g = co / cout_g`,
//! zero padding outside the input, and the epilogue order bias, residual, clamp.

use super::schedule::{DIRECT_UNROLL_CHANNELS, Family, GemmSplit, Schedule, gemm_split};
use super::{Chan, Cx, Reduction, TileBody, c, for_loop, load, store, tile_nest, tile_nest_multi};
use crate::graph::{Conv2d, ConvGeometry};
use crate::loops::micro::{GEMM_PACK, GemmStrip, Micro, Op, Operand, Slot};
use crate::loops::{Affine, BufId, Expr, Kernel, LoopKind, LoopMode, OptLevel, Stmt, Var};
use crate::{Error, Result};

pub use crate::graph::op::{Segment, segments};

pub(crate) fn dims4(d: &[usize], what: &str) -> Result<[usize; 4]> {
    d.try_into()
        .map_err(|_| Error::Codegen(format!("{what} is not NHWC: {d:?}")))
}

/// Everything a conv kernel family needs, decoded once.
pub(crate) struct ConvParts {
    pub x: BufId,
    pub w: BufId,
    pub bias: Option<BufId>,
    pub residual: Option<BufId>,
    pub out: BufId,
    pub xd: [usize; 4],
    pub od: [usize; 4],
    pub geo: ConvGeometry,
}

impl ConvParts {
    /// Stores an accumulator (which already includes the bias) to output element `o`, with the
    /// epilogue in the graph IR's order: the residual at the same element first, then the clamp.
    pub fn store_result(&self, o: Affine, acc: Expr, clamp: Option<(f32, f32)>) -> Stmt {
        let mut v = acc;
        if let Some(r) = self.residual {
            v = Expr::plus(v, load(r, o.clone()));
        }
        store(
            self.out,
            o,
            match clamp {
                Some(bounds) => Expr::clamp(v, bounds),
                None => v,
            },
        )
    }
}

pub(crate) fn conv_parts(cx: &Cx<'_>, k: &mut Kernel, conv: &Conv2d) -> Result<ConvParts> {
    let (_, xdims) = cx.operand(0)?;
    let xd = dims4(&xdims, "conv input")?;
    let wt = cx.constant(&conv.weight)?;
    let geo = ConvGeometry::new(&wt.ty(), xd[3], conv.groups)
        .map_err(|m| Error::Codegen(format!("@{}: {m}", conv.weight)))?;
    let od = dims4(cx.out_dims(), "conv output")?;
    let x = cx.input_buffer(k, 0)?;
    let residual = if conv.epilogue.has_residual() {
        Some(cx.input_buffer(k, 1)?)
    } else {
        None
    };
    let w = cx.const_buffer(k, &conv.weight)?;
    let bias = match &conv.bias {
        Some(b) => Some(cx.const_buffer(k, b)?),
        None => None,
    };
    let out = cx.output_buffer(k)?;
    Ok(ConvParts {
        x,
        w,
        bias,
        residual,
        out,
        xd,
        od,
        geo,
    })
}

/// The body of one segment nest: `(kernel, n, oh, ow, row segment, column segment)`; `n` is the
/// image index (a loop variable, or 0 for a batch of one).
pub(crate) type SegmentBody<'a> =
    dyn FnMut(&mut Kernel, &Nest, Segment, Segment) -> Result<Vec<Stmt>> + 'a;

/// Wraps the statements of one column segment of an output row (the `Nest` gives the segment's
/// first column as `ow_base`, with `pixel_tile` its column count): identity for most families,
/// a micro-kernel statement around them for the depthwise rows.
pub(crate) type SegmentWrap<'a> =
    dyn FnMut(&mut Kernel, &Nest, Segment, Segment, Vec<Stmt>) -> Result<Vec<Stmt>> + 'a;

/// Where a segment nest's body is: image `n` (a variable, or 0 for a batch of one), output row
/// `oh`, and `pixel_tile` output columns `ow_base + p` for `p` in `0..pixel_tile`.
pub(crate) struct Nest {
    pub n: Affine,
    pub oh: Var,
    pub ow_base: Affine,
    pub pixel_tile: usize,
}

/// Loops `n` (omitted for a batch of one, so that the row-segment loops are the kernel's top-level
/// work items), then per row segment `oh`, then per column segment the columns in tiles of
/// `pixel_tile` (then the remaining columns one by one), all spatial, calling `inner` for the body
/// of each nest.
pub(crate) fn spatial_nest(
    k: &mut Kernel,
    conv: &Conv2d,
    p: &ConvParts,
    pixel_tile: usize,
    inner: &mut SegmentBody<'_>,
    wrap: &mut SegmentWrap<'_>,
) -> Result<Vec<Stmt>> {
    let [n, h, w, _] = p.xd;
    let [_, oh, ow, _] = p.od;
    let rows = segments(h, oh, p.geo.kh, conv.stride[0], conv.pads.top);
    let cols = segments(w, ow, p.geo.kw, conv.stride[1], conv.pads.left);
    let nv = (n > 1).then(|| k.new_var("n"));
    let na = nv.map_or_else(Affine::default, Affine::var);
    let mut per_n = Vec::new();
    for rs in &rows {
        let ohv = k.new_var("oh");
        let mut per_row = Vec::new();
        for cs in &cols {
            let mut seg = Vec::new();
            let pt = pixel_tile.max(1);
            let full = if pt > 1 { (cs.hi - cs.lo) / pt } else { 0 };
            if full > 0 {
                let owt = k.new_var("owt");
                let nest = Nest {
                    n: na.clone(),
                    oh: ohv,
                    ow_base: Affine::var(owt) * c(pt)? + c(cs.lo)?,
                    pixel_tile: pt,
                };
                let body = inner(k, &nest, *rs, *cs)?;
                seg.push(for_loop(
                    owt,
                    0,
                    full,
                    LoopKind::Spatial,
                    LoopMode::Serial,
                    body,
                ));
            }
            if cs.lo + full * pt < cs.hi {
                let owv = k.new_var("ow");
                let nest = Nest {
                    n: na.clone(),
                    oh: ohv,
                    ow_base: Affine::var(owv),
                    pixel_tile: 1,
                };
                let body = inner(k, &nest, *rs, *cs)?;
                seg.push(for_loop(
                    owv,
                    cs.lo + full * pt,
                    cs.hi,
                    LoopKind::Spatial,
                    LoopMode::Serial,
                    body,
                ));
            }
            let at = Nest {
                n: na.clone(),
                oh: ohv,
                ow_base: Affine::constant(c(cs.lo)?),
                pixel_tile: cs.hi - cs.lo,
            };
            per_row.extend(wrap(k, &at, *rs, *cs, seg)?);
        }
        per_n.push(for_loop(
            ohv,
            rs.lo,
            rs.hi,
            LoopKind::Spatial,
            LoopMode::Serial,
            per_row,
        ));
    }
    Ok(match nv {
        Some(nv) => vec![for_loop(
            nv,
            0,
            n,
            LoopKind::Spatial,
            LoopMode::Serial,
            per_n,
        )],
        None => per_n,
    })
}

/// Lowers any convolution, picking the family from its shape.
pub(crate) fn lower(cx: &mut Cx<'_>, conv: &Conv2d) -> Result<Kernel> {
    let mut k = Kernel::new(cx.name(), None);
    let p = conv_parts(cx, &mut k, conv)?;
    let g = p.geo;
    if g.groups > 1 && g.groups == g.cin && g.cout == g.cin {
        return super::depthwise::lower(k, conv, &p);
    }
    let pointwise = g.kh == 1
        && g.kw == 1
        && conv.stride == [1, 1]
        && conv.pads == Default::default()
        && g.groups == 1;
    if pointwise {
        let packed = pack_pointwise(cx.constant(&conv.weight)?.data(), g.cin, g.cout, GEMM_PACK)?;
        cx.repack_buffer(&mut k, p.w, "w_packed", packed);
        pointwise_gemm(k, conv, &p, cx.threads)
    } else {
        direct(k, conv, &p)
    }
}

/// Packs 1x1 weights `w[k * C + co]` (`K = cin`, `C = cout`) per register tile of `T` channels:
/// full tiles `t` as `[t][k][j]` (the `T` weights of one reduction step are contiguous, and one
/// tile's whole panel is one stream), then the `R = C % T` remainder channels as `[k][j]`.
fn pack_pointwise(w: &[f32], k: usize, c: usize, t: usize) -> Result<Vec<f32>> {
    if w.len() != k * c || t == 0 {
        return Err(Error::Codegen(format!(
            "1x1 weight has {} values, expected {k} x {c}",
            w.len()
        )));
    }
    let full = c / t;
    let mut out = Vec::with_capacity(w.len());
    for tile in 0..full {
        for kk in 0..k {
            out.extend_from_slice(&w[kk * c + tile * t..kk * c + tile * t + t]);
        }
    }
    for kk in 0..k {
        out.extend_from_slice(&w[kk * c + full * t..kk * c + c]);
    }
    Ok(out)
}

/// 1x1 conv as a GEMM over `pixels x cout`, cut into work items by [`gemm_split`]: strips of
/// pixels (all channels; then one strip of the remaining pixels) or blocks of output channels
/// (all pixels; then one block of the remaining channels). Each item is one [`Micro`]
/// GEMM-strip statement whose portable body is 2x16 register tiles (then 1-pixel tiles for an
/// odd pixel), reduction over `cin` innermost, weights packed by [`pack_pointwise`].
fn pointwise_gemm(mut k: Kernel, conv: &Conv2d, p: &ConvParts, threads: usize) -> Result<Kernel> {
    let sched = Schedule::pointwise(p.geo.cout);
    k.schedule = Some(sched);
    k.opt_level = sched.opt_level;
    let [n, h, w, cin] = p.xd;
    let cout = p.geo.cout;
    let npix = crate::tensor::checked_product(&[n, h, w])
        .ok_or_else(|| Error::Codegen("pixel count overflows".into()))?;
    // Items `first..first + count` of `pixels x width` each, the item variable times `step`
    // pixels (or channels) apart: the full ones, then one with the rest.
    let (by_channels, step) = match gemm_split(npix, threads) {
        GemmSplit::Pixels(strip) => (false, strip),
        // Whole packing tiles per block, so that a block's weights are contiguous.
        GemmSplit::Channels(block) => (true, block.max(GEMM_PACK) / GEMM_PACK * GEMM_PACK),
    };
    let items = if by_channels {
        let full = cout / step;
        [(npix, step, full, 0), (npix, cout % step, 1, full)]
    } else {
        let full = npix / step;
        [(step, cout, full, 0), (npix % step, cout, 1, full)]
    };
    let mut body = Vec::new();
    for (pixels, width, count, first) in items {
        if pixels == 0 || width == 0 || count == 0 {
            continue;
        }
        let iv = k.new_var(if by_channels { "cb" } else { "strip" });
        let start = Affine::var(iv) * c(step)?;
        // The item's first pixel and first channel.
        let (pix0, ch0) = if by_channels {
            (Affine::default(), start)
        } else {
            (start, Affine::default())
        };
        let tiles = |k: &mut Kernel, pix: Affine, px: usize| {
            gemm_tiles(k, conv, p, &sched, pix, px, (&ch0, width))
        };
        let mut inner = Vec::new();
        if pixels / 2 > 0 {
            let pv = k.new_var("pt");
            let t = tiles(&mut k, pix0.clone() + Affine::var(pv) * 2, 2)?;
            inner.push(for_loop(
                pv,
                0,
                pixels / 2,
                LoopKind::Spatial,
                LoopMode::Serial,
                t,
            ));
        }
        if pixels % 2 == 1 {
            let last = pix0.clone() + c(pixels - 1)?;
            inner.extend(tiles(&mut k, last, 1)?);
        }
        let g = GemmStrip {
            pixels,
            k: cin,
            n: width,
            x_stride: cin,
            out_stride: cout,
            bias: p.bias.is_some(),
            residual: p.residual.is_some(),
            clamp: conv.epilogue.clamp(),
            prefetch: 0,
        };
        let at = |buf: BufId, base: Affine| Operand { buf, base };
        // Rows of `cout` channels; the item's block starts at `pix0 * cout + ch0`. Packed
        // weights: a block of whole tiles starts at `ch0 * cin` (see `pack_pointwise`).
        let rows = pix0.clone() * c(cout)? + ch0.clone();
        let mut operands = vec![(Slot::X, at(p.x, pix0 * c(cin)?))];
        operands.push((Slot::W, at(p.w, ch0.clone() * c(cin)?)));
        if let Some(b) = p.bias {
            operands.push((Slot::Bias, at(b, ch0.clone())));
        }
        if let Some(r) = p.residual {
            operands.push((Slot::Residual, at(r, rows.clone())));
        }
        operands.push((Slot::Out, at(p.out, rows)));
        let micro = Stmt::Micro(Box::new(Micro {
            op: Op::Gemm(g),
            operands,
            body: inner,
        }));
        body.push(for_loop(
            iv,
            first,
            first + count,
            LoopKind::Spatial,
            LoopMode::Serial,
            vec![micro],
        ));
    }
    k.body = body;
    Ok(k)
}

/// The register tiles of `tile_px` pixels starting at pixel `pix_base`, over the output
/// channels `(first, count)` (`first` a multiple of the packing tile): accumulators from the
/// bias, reduction over `cin` (unrolled main nest, serial remainder), then the epilogue store.
fn gemm_tiles(
    k: &mut Kernel,
    conv: &Conv2d,
    p: &ConvParts,
    sched: &Schedule,
    pix_base: Affine,
    tile_px: usize,
    (ch0, channels): (&Affine, usize),
) -> Result<Vec<Stmt>> {
    let cin = p.xd[3];
    let cout = p.geo.cout;
    let (ci64, co64) = (c(cin)?, c(cout)?);
    let clamp = conv.epilogue.clamp();
    let tile = c(sched.channel_tile())?;
    let full_tiles = co64 / tile;
    let rem = co64 % tile;
    let ku = sched.reduction_unroll.max(1);
    let ku64 = c(ku)?;
    let init = |_: &Affine, ch: &Affine| match p.bias {
        Some(b) => load(b, ch.clone()),
        None => Expr::Const(0.0),
    };
    let update = |po: &Affine, chan: &Chan, r: &[Var], acc: Expr| {
        let pix = pix_base.clone() + po.clone();
        // The main nest runs `ci = ku * cio + cii` (`cii` unrolled), the remainder `ci`.
        let ci = match r {
            [cio, cii] => Affine::var(*cio) * ku64 + Affine::var(*cii),
            _ => Affine::var(r[0]),
        };
        // The packed index (see `pack_pointwise`): in full tile `t` of the block at `ch0`,
        // channel `ch = ch0 + t*T + j` is at `(ch0/T + t)*K*T + ci*T + j`; in the remainder,
        // at `full*K*T + ci*R + (ch - full*T)`.
        let wi = match chan.tile {
            Some(t) => {
                chan.ch.clone()
                    + ch0.clone() * (ci64 - 1)
                    + Affine::var(t) * (ci64 * tile - tile)
                    + ci.clone() * tile
            }
            None => {
                chan.ch.clone() + ci.clone() * rem + (full_tiles * ci64 * tile - full_tiles * tile)
            }
        };
        Expr::fma(load(p.x, pix * ci64 + ci), load(p.w, wi), acc)
    };
    let finish = |po: &Affine, ch: &Affine, acc: Expr| {
        p.store_result(
            (pix_base.clone() + po.clone()) * co64 + ch.clone(),
            acc,
            clamp,
        )
    };
    let nests = pointwise_reductions(cin, ku);
    let reds: Vec<&[Reduction<'_>]> = nests.iter().map(Vec::as_slice).collect();
    tile_nest_multi(
        k,
        tile_px,
        sched.channel_vectors,
        channels,
        ch0,
        &reds,
        &TileBody {
            init: &init,
            update: &update,
            finish: &finish,
        },
    )
}

/// The channel reduction nests of the 1x1 GEMM: `ci = ku * cio + cii` with `cii` unrolled,
/// then a serial remainder nest for the `cin % ku` last steps (each only when non-empty); one
/// serial nest when `ku <= 1`.
fn pointwise_reductions(cin: usize, ku: usize) -> Vec<Vec<Reduction<'static>>> {
    if ku <= 1 {
        return vec![vec![Reduction::new("ci", 0, cin, LoopMode::Serial)]];
    }
    let main = cin / ku;
    let mut nests = Vec::new();
    if main > 0 {
        nests.push(vec![
            Reduction::new("cio", 0, main, LoopMode::Serial),
            Reduction::new("cii", 0, ku, LoopMode::Unroll),
        ]);
    }
    if main * ku < cin {
        nests.push(vec![Reduction::new("ci", main * ku, cin, LoopMode::Serial)]);
    }
    nests
}

/// Direct convolution: per output pixel (and group), register tiles over output channels,
/// reduction over the valid taps and the group's input channels.
fn direct(mut k: Kernel, conv: &Conv2d, p: &ConvParts) -> Result<Kernel> {
    let mut sched = Schedule::choose(Family::Direct);
    let cin_g = p.xd[3] / p.geo.groups.max(1);
    if cin_g <= DIRECT_UNROLL_CHANNELS {
        sched.unroll_channels = true;
        sched.opt_level = OptLevel::None;
    }
    let unrolled_channels = if sched.unroll_channels { cin_g } else { 1 };
    let sched = sched.bounded(p.geo.kh * p.geo.kw * unrolled_channels);
    k.schedule = Some(sched);
    k.opt_level = sched.opt_level;
    let [_, h, w, cin] = p.xd;
    let [_, oh, ow, cout] = p.od;
    let g = p.geo;
    let cin_g = cin / g.groups;
    let cout_g = cout / g.groups;
    let (h, w, cin, oh, ow, cout) = (c(h)?, c(w)?, c(cin)?, c(oh)?, c(ow)?, c(cout)?);
    let (sh, sw) = (c(conv.stride[0])?, c(conv.stride[1])?);
    let (pt, pl) = (c(conv.pads.top)?, c(conv.pads.left)?);
    let kw = c(g.kw)?;
    let clamp = conv.epilogue.clamp();
    let groups = g.groups;
    let cin_g64 = c(cin_g)?;
    let px = sched.pixel_tile;
    let ci_mode = if sched.unroll_channels {
        LoopMode::Unroll
    } else {
        LoopMode::Serial
    };
    let mut row = |k: &mut Kernel, at: &Nest, rs: Segment, cs: Segment, body: Vec<Stmt>| {
        super::depthwise::micro_row(k, conv, p, at, rs, cs, body)
    };
    let mut tiles = |k: &mut Kernel, nest: &Nest, rs: Segment, cs: Segment| {
        let gv = (groups > 1).then(|| k.new_var("g"));
        let ga = gv.map_or_else(Affine::default, Affine::var);
        let ohv = Affine::var(nest.oh);
        // Output pixel `p` of the tile is column `ow_base + p`: `cout` further in the output,
        // `sw * cin` further in the input.
        let out_pix = ((nest.n.clone() * oh + ohv.clone()) * ow + nest.ow_base.clone()) * cout;
        // Input element of tap (0, 0), channel 0 of the group; may be negative on borders,
        // where the clamped tap ranges keep every actual read inside the input.
        let x_base =
            ((nest.n.clone() * h + ohv * sh + (-pt)) * w + nest.ow_base.clone() * sw + (-pl)) * cin
                + ga.clone() * c(cin_g)?;
        let init = |_: &Affine, ch: &Affine| match p.bias {
            Some(b) => load(b, ch.clone()),
            None => Expr::Const(0.0),
        };
        let update = |po: &Affine, chan: &Chan, r: &[Var], acc: Expr| {
            let ch = &chan.ch;
            let (ky, kx, ci) = (Affine::var(r[0]), Affine::var(r[1]), Affine::var(r[2]));
            let xi = x_base.clone()
                + po.clone() * (sw * cin)
                + ky.clone() * (w * cin)
                + kx.clone() * cin
                + ci.clone();
            let wi = ((ky * kw + kx) * cin_g64 + ci) * cout + ch.clone();
            Expr::fma(load(p.x, xi), load(p.w, wi), acc)
        };
        let finish = |po: &Affine, ch: &Affine, acc: Expr| {
            p.store_result(out_pix.clone() + po.clone() * cout + ch.clone(), acc, clamp)
        };
        let red = [
            Reduction::new("ky", rs.k_lo, rs.k_hi, sched.tap_mode()),
            Reduction::new("kx", cs.k_lo, cs.k_hi, sched.tap_mode()),
            Reduction::new("ci", 0, cin_g, ci_mode),
        ];
        let red: &[Reduction<'_>] = if red.iter().any(Reduction::is_empty) {
            &[]
        } else {
            &red
        };
        let tiles = tile_nest(
            k,
            nest.pixel_tile,
            sched.channel_vectors,
            cout_g,
            &(ga * c(cout_g)?),
            red,
            &TileBody {
                init: &init,
                update: &update,
                finish: &finish,
            },
        )?;
        Ok(match gv {
            Some(gv) => vec![for_loop(
                gv,
                0,
                groups,
                LoopKind::Spatial,
                LoopMode::Serial,
                tiles,
            )],
            None => tiles,
        })
    };
    k.body = spatial_nest(&mut k, conv, p, px, &mut tiles, &mut row)?;
    Ok(k)
}
