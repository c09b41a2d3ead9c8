//! The 512-bit GEMM strip: per channel block (3 zmm = 48 channels, a runtime loop) and pixel
//! block (up to 7 pixels, unrolled), 21 zmm accumulators (zmm0-20) start from the bias, each
//! reduction step loads 3 weight vectors (zmm24-26) and per pixel broadcasts one input
//! (zmm27/28, alternating) for 3 `vfmadd231ps`; then residual, clamp (zmm29/30) and the store.
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
    // Constants first, while rax is free: the clamp bounds and the tail mask.
    if let Some((lo, hi)) = g.clamp {
        a.mov(eax, lo.to_bits())?;
        a.vpbroadcastd(zmm29, eax)?;
        a.mov(eax, hi.to_bits())?;
        a.vpbroadcastd(zmm30, eax)?;
    }
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
    for cb in &plan.channels {
        // rsi: this run's weight panel (the block's weights); rdx/rcx/r8: bias, residual and
        // output at the block's first channel.
        a.mov(rax, cb.w_start)?;
        a.lea(r9, qword_ptr(rsi + rax))?;
        let mut top = a.create_label();
        if cb.count > 1 {
            a.mov(r11, cb.count as u64)?;
            a.set_label(&mut top)?;
        }
        for &(p0, mr) in &plan.pixel_blocks {
            block(a, g, cb, p0, mr)?;
        }
        let step = (cb.width * 4) as i32;
        if cb.count > 1 {
            // Next block: weights `width / 16` panels further.
            let panels = (cb.width / 16) as u64 * (g.k as u64) * 64;
            a.mov(rax, panels)?;
            a.add(r9, rax)?;
            advance(a, g, step)?;
            a.dec(r11)?;
            a.jnz(top)?;
        } else {
            advance(a, g, step)?;
        }
    }
    a.vzeroupper()?;
    a.ret()
}

/// Moves the bias, residual and output pointers `step` bytes on (to the next channel block).
fn advance(a: &mut CodeAssembler, g: &GemmStrip, step: i32) -> R {
    if g.bias {
        a.add(rdx, step)?;
    }
    if g.residual {
        a.add(rcx, step)?;
    }
    a.add(r8, step)
}

/// One register block: pixels `p0..p0 + mr` x the vectors of `cb`, weights at r9.
fn block(a: &mut CodeAssembler, g: &GemmStrip, cb: &ChannelBlocks, p0: usize, mr: usize) -> R {
    let nv = cb.vectors.len();
    let acc = |p: usize, v: usize| z(p * nv + v);
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
    // Reduction: r10 = ci from 0 to k; rax steps through the weight panel from r9.
    a.mov(rax, r9)?;
    a.xor(r10d, r10d)?;
    let mut step = a.create_label();
    a.set_label(&mut step)?;
    for (v, vec) in cb.vectors.iter().enumerate() {
        let at = zmmword_ptr(rax + vec.w_disp);
        if vec.lanes < 16 {
            a.vmovups(z(24 + v).k1().z(), at)?;
        } else {
            a.vmovups(z(24 + v), at)?;
        }
    }
    for p in 0..mr {
        let bc = z(27 + p % 2);
        let xd = ((p0 + p) * g.x_stride * 4) as i32;
        a.vbroadcastss(bc, dword_ptr(rdi + r10 * 4 + xd))?;
        for v in 0..nv {
            a.vfmadd231ps(acc(p, v), z(24 + v), bc)?;
        }
    }
    a.add(rax, cb.w_step)?;
    a.inc(r10)?;
    a.cmp(r10, g.k as i32)?;
    a.jl(step)?;
    // Epilogue: residual, clamp, store (masked for a partial vector).
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
                a.vmaxps(r, zmm29, r)?;
                a.vminps(r, zmm30, r)?;
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
