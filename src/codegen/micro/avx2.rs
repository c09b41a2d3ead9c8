//! The 256-bit GEMM strip: per channel block (2 ymm = 16 channels, one packed tile, a runtime
//! loop) and pixel block (up to 6 pixels, unrolled), 12 ymm accumulators (ymm0-11) start from
//! the bias, each reduction step loads 2 weight vectors (ymm12/13) and per pixel broadcasts one
//! input (ymm14) for 2 `vfmadd231ps`; then residual, clamp and the store. A one-pixel GEMV
//! takes blocks of 8 ymm (4 tiles) whose FMAs read the weights as memory operands. Long
//! reductions run 4 steps per loop iteration (`super::k_loop`). A partial vector uses
//! `vmaskmovps` with the lane mask in ymm15 (read RIP-relative from a table after `ret`). See
//! [`super`] for the ABI and the rules.

use iced_x86::IcedError;
use iced_x86::Register;
use iced_x86::code_asm::registers::ymm::get_ymm;
use iced_x86::code_asm::*;

use super::{ChannelBlocks, Plan};
use crate::loops::micro::GemmStrip;

type R = Result<(), IcedError>;

fn y(i: usize) -> AsmRegisterYmm {
    // Indices stay below 16 by the plan's register budget.
    get_ymm(Register::YMM0 + i as u32).unwrap_or(ymm15)
}

/// Emits the whole kernel into `a`.
pub(super) fn gemm(a: &mut CodeAssembler, g: &GemmStrip, plan: &Plan) -> R {
    let partial = plan
        .channels
        .iter()
        .flat_map(|c| &c.vectors)
        .map(|v| v.lanes)
        .find(|&l| l < 8);
    let mut table = a.create_label();
    if partial.is_some() {
        a.vmovups(ymm15, ymmword_ptr(table))?;
    }
    super::gemm_runs(a, g, plan, block)?;
    a.vzeroupper()?;
    a.ret()?;
    if let Some(lanes) = partial {
        // The mask: all ones in the first `lanes` lanes (vmaskmovps reads the sign bits).
        let mask: Vec<u32> = (0..8)
            .map(|i| if i < lanes { u32::MAX } else { 0 })
            .collect();
        a.set_label(&mut table)?;
        a.dd(&mask)?;
    }
    Ok(())
}

/// Broadcasts the f32 `bits` into `(r, x)`, a ymm register and its low half (through eax).
fn splat(a: &mut CodeAssembler, (r, x): (AsmRegisterYmm, AsmRegisterXmm), bits: u32) -> R {
    a.mov(eax, bits)?;
    a.vmovd(x, eax)?;
    a.vbroadcastss(r, x)
}

/// One register block: pixels `p0..p0 + mr` x the vectors of `cb`, weights at r9.
fn block(a: &mut CodeAssembler, g: &GemmStrip, cb: &ChannelBlocks, p0: usize, mr: usize) -> R {
    let nv = cb.vectors.len();
    let acc = |p: usize, v: usize| y(p * nv + v);
    for p in 0..mr {
        for (v, vec) in cb.vectors.iter().enumerate() {
            let r = acc(p, v);
            let at = ymmword_ptr(rdx + (vec.ch * 4) as i32);
            match (g.bias, vec.lanes < 8) {
                (true, true) => a.vmaskmovps(r, ymm15, at)?,
                (true, false) => a.vmovups(r, at)?,
                (false, _) => a.vxorps(r, r, r)?,
            }
        }
    }
    a.mov(rax, r9)?;
    // More than two vectors (a GEMV's block, one pixel) leave no registers for the weights:
    // each full vector's FMA reads them as its memory operand (`fma(x, w, acc)` and
    // `fma(w, x, acc)` round the same exact product), a masked one goes through ymm12.
    let in_memory = nv > 2;
    super::k_loop(a, g, cb, |a, u| {
        let w_at = |vec: &super::Vector| ymmword_ptr(rax + vec.w_disp + u as i32 * cb.w_step);
        if in_memory {
            for p in 0..mr {
                let xd = ((p0 + p) * g.x_stride * 4 + u * 4) as i32;
                a.vbroadcastss(ymm14, dword_ptr(rdi + r10 * 4 + xd))?;
                for (v, vec) in cb.vectors.iter().enumerate() {
                    if vec.lanes < 8 {
                        a.vmaskmovps(ymm12, ymm15, w_at(vec))?;
                        a.vfmadd231ps(acc(p, v), ymm12, ymm14)?;
                    } else {
                        a.vfmadd231ps(acc(p, v), ymm14, w_at(vec))?;
                    }
                }
            }
            return Ok(());
        }
        for (v, vec) in cb.vectors.iter().enumerate() {
            if vec.lanes < 8 {
                a.vmaskmovps(y(12 + v), ymm15, w_at(vec))?;
            } else {
                a.vmovups(y(12 + v), w_at(vec))?;
            }
        }
        for p in 0..mr {
            let xd = ((p0 + p) * g.x_stride * 4 + u * 4) as i32;
            a.vbroadcastss(ymm14, dword_ptr(rdi + r10 * 4 + xd))?;
            for v in 0..nv {
                a.vfmadd231ps(acc(p, v), y(12 + v), ymm14)?;
            }
        }
        Ok(())
    })?;
    if let Some((lo, hi)) = g.clamp {
        splat(a, (ymm12, xmm12), lo.to_bits())?;
        splat(a, (ymm13, xmm13), hi.to_bits())?;
    }
    for p in 0..mr {
        let row = ((p0 + p) * g.out_stride * 4) as i32;
        for (v, vec) in cb.vectors.iter().enumerate() {
            let r = acc(p, v);
            let off = row + (vec.ch * 4) as i32;
            let masked = vec.lanes < 8;
            if g.residual {
                let at = ymmword_ptr(rcx + off);
                if masked {
                    a.vmaskmovps(ymm14, ymm15, at)?;
                    a.vaddps(r, r, ymm14)?;
                } else {
                    a.vaddps(r, r, at)?;
                }
            }
            if g.clamp.is_some() {
                a.vmaxps(r, ymm12, r)?;
                a.vminps(r, ymm13, r)?;
            }
            let at = ymmword_ptr(r8 + off);
            if masked {
                a.vmaskmovps(at, ymm15, r)?;
            } else {
                a.vmovups(at, r)?;
            }
        }
    }
    Ok(())
}
