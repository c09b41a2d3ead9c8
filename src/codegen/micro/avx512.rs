//! The 512-bit GEMM strip: per channel block (up to 3 zmm = 48 channels, 4 for a one-pixel
//! GEMV; a runtime loop) and pixel block (9 pixels for 3 vectors, 14 for 2, unrolled; the
//! reduction unrolled x4 when long, `super::k_loop`), up to 28 zmm accumulators (from
//! zmm0) start from the bias; each reduction step loads the weight vectors (the registers after
//! the accumulators) and per pixel broadcasts one input (zmm30/31, alternating) for one
//! `vfmadd231ps` per vector; then residual, clamp (bounds in zmm30/31) and the store.
//! A partial vector (the last `cout % 16` channels) uses opmask k1 with zeroing loads and
//! masked stores. See [`super`] for the ABI and the rules.

use iced_x86::IcedError;
use iced_x86::Register;
use iced_x86::code_asm::registers::zmm::get_zmm;
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

/// One register block: pixels `p0..p0 + mr` x the vectors of `cb`, weights at r9.
fn block(a: &mut CodeAssembler, g: &GemmStrip, cb: &ChannelBlocks, p0: usize, mr: usize) -> R {
    let nv = cb.vectors.len();
    let acc = |p: usize, v: usize| z(p * nv + v);
    let wreg = |v: usize| z(30 - nv + v);
    for p in 0..mr {
        for (v, vec) in cb.vectors.iter().enumerate() {
            let r = acc(p, v);
            let at = zmmword_ptr(rdx + (vec.ch * 4) as i32);
            match (g.bias, vec.lanes < 16) {
                (true, true) => a.vmovups(r.k1().z(), at)?,
                (true, false) => a.vmovups(r, at)?,
                (false, _) => a.vxorps(r, r, r)?,
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
                Some((_, tail_step)) if v + 1 == nv => zmmword_ptr(r12 + u as i32 * tail_step),
                _ => zmmword_ptr(rax + vec.w_disp + u as i32 * cb.w_step),
            };
            if vec.lanes < 16 {
                a.vmovups(wreg(v).k1().z(), at)?;
            } else {
                a.vmovups(wreg(v), at)?;
            }
        }
        for p in 0..mr {
            let bc = z(30 + p % 2);
            let xd = ((p0 + p) * g.x_stride * 4 + u * 4) as i32;
            a.vbroadcastss(bc, dword_ptr(rdi + r10 * 4 + xd))?;
            for v in 0..nv {
                a.vfmadd231ps(acc(p, v), wreg(v), bc)?;
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
            let masked = vec.lanes < 16;
            if g.residual {
                let at = zmmword_ptr(rcx + off);
                if masked {
                    a.vaddps(r.k1().z(), r, at)?;
                } else {
                    a.vaddps(r, r, at)?;
                }
            }
            if g.clamp.is_some() {
                a.vmaxps(r, zmm30, r)?;
                a.vminps(r, zmm31, r)?;
            }
            let at = zmmword_ptr(r8 + off);
            if masked {
                a.vmovups(at.k1(), r)?;
            } else {
                a.vmovups(at, r)?;
            }
        }
    }
    Ok(())
}
