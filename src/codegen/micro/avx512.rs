//! The 512-bit GEMM strip: per channel block (up to 3 zmm = 48 channels, 4 for a one-pixel
//! GEMV; a runtime loop) and pixel block (9 pixels for 3 vectors, 14 for 2, unrolled; the
//! reduction unrolled x4 when long, `super::k_loop`), up to 28 zmm accumulators (from
//! zmm0) start from the bias; each reduction step loads the weight vectors (the registers after
//! the accumulators) and per pixel broadcasts one input (zmm30/31, alternating) for one
//! `vfmadd231ps` per vector; then residual, clamp (bounds in zmm30/31) and the store.
//!
//! A one-vector block (the 16-channel layers) has one FMA per input, and there the broadcast
//! is the FMA's memory operand (`vfmadd231ps zmm, zmm, [x]{1to16}`, the same operands in the
//! same roles, so the same bits): on AMD Zen 4, whose 512-bit ops are double-pumped, a
//! separate `vbroadcastss zmm` per FMA caps the 1x14 block at about 70% of the FMA peak,
//! the embedded form at 96% (`tools/gemm_ceiling.c`, 2026-12-02); on the Intel Xeon of earlier
//! sittings the two measured the same.
//!
//! A partial vector (the last `cout % 16` channels) uses opmask k1 with zeroing loads and
//! masked stores; one of at most 8 lanes runs at 256 bits (its accumulators, weights and the
//! broadcasts' low halves as ymm, masked only below 8 lanes), since a zmm FMA of which half
//! the lanes are idle still costs a whole one. On Zen 4, whose 512-bit FMAs are two 256-bit
//! halves in turn, that saves a quarter of a 24-channel projection's FMA time (16 + 8 lanes
//! per input instead of 16 + 16); elsewhere a ymm FMA takes the same issue slot as a zmm one.
//! See [`super`] for the ABI and the rules.

use iced_x86::IcedError;
use iced_x86::Register;
use iced_x86::code_asm::registers::{ymm::get_ymm, zmm::get_zmm};
use iced_x86::code_asm::*;

use super::{ChannelBlocks, Plan};
use crate::loops::micro::GemmStrip;

type R = Result<(), IcedError>;

fn z(i: usize) -> AsmRegisterZmm {
    // Indices stay below 32 by the plan's register budget.
    get_zmm(Register::ZMM0 + i as u32).unwrap_or(zmm31)
}

/// Emits the whole kernel into `a`.
pub(super) fn gemm(a: &mut CodeAssembler, g: &GemmStrip, plan: &Plan) -> R {
    // EVEX for every instruction that has both encodings: the ymm of a narrow tail may be
    // ymm16-31 or masked, which VEX cannot encode.
    a.set_prefer_vex(false);
    // The tail mask first, while rax is free.
    if let Some(lanes) = plan
        .channels
        .iter()
        .flat_map(|c| &c.vectors)
        .map(|v| v.lanes)
        .find(|&l| l < 16)
    {
        a.mov(eax, (1u32 << lanes) - 1)?;
        a.kmovw(k1, eax)?;
    }
    super::gemm_runs(a, g, plan, block)?;
    a.vzeroupper()?;
    a.ret()
}

/// A vector register of a block, zmm `i` or, for a channel tail of at most 8 lanes, its low
/// half ymm `i` (see the module doc).
#[derive(Clone, Copy)]
struct V {
    i: usize,
    narrow: bool,
}

impl V {
    /// Register `i` at the width of a vector of `lanes` channels.
    fn of(i: usize, lanes: usize) -> V {
        V {
            i,
            narrow: lanes <= 8,
        }
    }

    fn z(self) -> AsmRegisterZmm {
        z(self.i)
    }

    fn y(self) -> AsmRegisterYmm {
        y(self.i)
    }

    /// Whether a vector of `lanes` channels in this register needs the opmask k1.
    fn masked(self, lanes: usize) -> bool {
        lanes < if self.narrow { 8 } else { 16 }
    }
}

fn y(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).unwrap_or(ymm31)
}

/// `r = [at]`, masked (zeroing) by k1 when `masked`.
fn load(a: &mut CodeAssembler, r: V, at: AsmMemoryOperand, masked: bool) -> R {
    match (r.narrow, masked) {
        (false, true) => a.vmovups(r.z().k1().z(), zmmword_ptr(at)),
        (false, false) => a.vmovups(r.z(), zmmword_ptr(at)),
        (true, true) => a.vmovups(r.y().k1().z(), ymmword_ptr(at)),
        (true, false) => a.vmovups(r.y(), ymmword_ptr(at)),
    }
}

/// `[at] = r`, only the lanes of k1 when `masked`.
fn store(a: &mut CodeAssembler, r: V, at: AsmMemoryOperand, masked: bool) -> R {
    match (r.narrow, masked) {
        (false, true) => a.vmovups(zmmword_ptr(at).k1(), r.z()),
        (false, false) => a.vmovups(zmmword_ptr(at), r.z()),
        (true, true) => a.vmovups(ymmword_ptr(at).k1(), r.y()),
        (true, false) => a.vmovups(ymmword_ptr(at), r.y()),
    }
}

/// `r = r + [at]` (the residual), masked (zeroing) by k1 when `masked`.
fn add(a: &mut CodeAssembler, r: V, at: AsmMemoryOperand, masked: bool) -> R {
    match (r.narrow, masked) {
        (false, true) => a.vaddps(r.z().k1().z(), r.z(), zmmword_ptr(at)),
        (false, false) => a.vaddps(r.z(), r.z(), zmmword_ptr(at)),
        (true, true) => a.vaddps(r.y().k1().z(), r.y(), ymmword_ptr(at)),
        (true, false) => a.vaddps(r.y(), r.y(), ymmword_ptr(at)),
    }
}

/// The input factor of an FMA: broadcast register `i` (its low half for a ymm FMA), or an
/// input broadcast from memory inside the FMA.
enum X {
    Reg(usize),
    Bcst(AsmMemoryOperand),
}

/// `acc = w * x + acc` (`vfmadd231ps`, the same operand roles at either width); `acc` and `w`
/// have the same width.
fn fma(a: &mut CodeAssembler, acc: V, w: V, x: &X) -> R {
    match (acc.narrow, x) {
        (false, X::Reg(i)) => a.vfmadd231ps(acc.z(), w.z(), z(*i)),
        (false, X::Bcst(m)) => a.vfmadd231ps(acc.z(), w.z(), dword_bcst(*m)),
        (true, X::Reg(i)) => a.vfmadd231ps(acc.y(), w.y(), y(*i)),
        (true, X::Bcst(m)) => a.vfmadd231ps(acc.y(), w.y(), dword_bcst(*m)),
    }
}

/// `r = min(hi, max(lo, r))` with the bounds in registers `lo` and `hi` (operand order: see
/// [`super`]).
fn clamp(a: &mut CodeAssembler, r: V, lo: usize, hi: usize) -> R {
    if r.narrow {
        a.vmaxps(r.y(), y(lo), r.y())?;
        a.vminps(r.y(), y(hi), r.y())
    } else {
        a.vmaxps(r.z(), z(lo), r.z())?;
        a.vminps(r.z(), z(hi), r.z())
    }
}

/// One register block: pixels `p0..p0 + mr` x the vectors of `cb`, weights at r9.
fn block(a: &mut CodeAssembler, g: &GemmStrip, cb: &ChannelBlocks, p0: usize, mr: usize) -> R {
    let nv = cb.vectors.len();
    let lanes = |v: usize| cb.vectors[v].lanes;
    let acc = |p: usize, v: usize| V::of(p * nv + v, lanes(v));
    let wreg = |v: usize| V::of(30 - nv + v, lanes(v));
    for p in 0..mr {
        for (v, vec) in cb.vectors.iter().enumerate() {
            let r = acc(p, v);
            if g.bias {
                load(a, r, rdx + (vec.ch * 4) as i32, r.masked(vec.lanes))?;
            } else {
                // The full register either way: a VEX/EVEX write zeroes the upper half.
                a.vxorps(r.z(), r.z(), r.z())?;
            }
        }
    }
    // Reduction: r10 = ci from 0 to k; rax steps through the weight panel from r9 (and r12
    // through the tail panel for a merged tail, the last vector), see `k_loop`.
    a.mov(rax, r9)?;
    if let Some((start, _)) = cb.tail {
        a.mov(r12, start)?;
        a.add(r12, rsi)?;
    }
    super::k_loop(a, g, cb, |a, u| {
        for (v, vec) in cb.vectors.iter().enumerate() {
            let at = match cb.tail {
                Some((_, tail_step)) if v + 1 == nv => r12 + u as i32 * tail_step,
                _ => rax + vec.w_disp + u as i32 * cb.w_step,
            };
            let w = wreg(v);
            load(a, w, at, w.masked(vec.lanes))?;
        }
        for p in 0..mr {
            let xd = ((p0 + p) * g.x_stride * 4 + u * 4) as i32;
            let x = rdi + r10 * 4 + xd;
            let x = if nv == 1 {
                // One FMA per input: broadcast it inside the FMA, see the module doc.
                X::Bcst(x)
            } else {
                a.vbroadcastss(z(30 + p % 2), dword_ptr(x))?;
                X::Reg(30 + p % 2)
            };
            for v in 0..nv {
                fma(a, acc(p, v), wreg(v), &x)?;
            }
        }
        Ok(())
    })?;
    // Epilogue: residual, clamp, store (masked for a partial vector).
    if let Some((lo, hi)) = g.clamp {
        a.mov(eax, lo.to_bits())?;
        a.vpbroadcastd(zmm30, eax)?;
        a.mov(eax, hi.to_bits())?;
        a.vpbroadcastd(zmm31, eax)?;
    }
    for p in 0..mr {
        let row = ((p0 + p) * g.out_stride * 4) as i32;
        for (v, vec) in cb.vectors.iter().enumerate() {
            let r = acc(p, v);
            let off = row + (vec.ch * 4) as i32;
            let masked = r.masked(vec.lanes);
            if g.residual {
                add(a, r, rcx + off, masked)?;
            }
            if g.clamp.is_some() {
                clamp(a, r, 30, 31)?;
            }
            store(a, r, r8 + off, masked)?;
        }
    }
    Ok(())
}
