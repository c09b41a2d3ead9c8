//! Weight prefetch across layers: each 1x1 GEMM kernel prefetches, while it computes, the
//! packed weight panel of the next 1x1 kernel (the next kernel or the one after, so a pointwise
//! expansion prefetches the projection behind its depthwise conv). The weights of a whole
//! model (14 MB for the seed's) do not fit L2, so every panel comes from L3 when its layer
//! starts; for the 7x7 layers (0.6-1.6 MB panels) that read cost a quarter of their time
//! (docs/performance.md).
//!
//! ## What must hold
//! - **A hint.** The pass only adds a read-only `Const` buffer to a kernel and a
//!   [`Slot::Prefetch`] operand (with [`GemmStrip::prefetch`] lines) to its GEMM-strip
//!   statements. No value depends on it: the micro-kernel's meaning and the portable tier ignore
//!   it, and the wide tiers only issue `prefetcht1`.
//! - **Bounds.** Work item `t` prefetches lines `t * lines .. (t + 1) * lines` of the panel, and
//!   `items * lines` lines fit the panel, so the verifier proves every prefetched line inside
//!   it, like any operand.

use crate::loops::micro::{Op, Operand, Slot};
use crate::loops::{Affine, BufferKind, Kernel, Program, Role, Stmt};

/// Panels smaller than this are left to the hardware: their first misses cost little.
const MIN_PANEL_BYTES: usize = 64 * 1024;

/// At most this much of a panel is prefetched: it must fit L2 beside the running layer's own
/// data (half of the 1 MB per core of the AMD Zen 4 host, a quarter of the Intel host's 2 MB).
const MAX_PREFETCH_BYTES: usize = 512 * 1024;

/// Adds the prefetch operands to every 1x1 kernel of `p` that has a next 1x1 kernel with a
/// large enough panel.
pub(crate) fn plan(p: &mut Program) {
    for i in 0..p.kernels.len() {
        let next = (i + 1..p.kernels.len().min(i + 3)).find_map(|j| gemm_weights(&p.kernels[j]));
        let Some(panel) = next else { continue };
        let Some((dims, BufferKind::Const)) = p.buffers.get(&panel) else {
            continue;
        };
        let Some(bytes) = crate::tensor::checked_product(dims).and_then(|e| e.checked_mul(4))
        else {
            continue;
        };
        if bytes < MIN_PANEL_BYTES {
            continue;
        }
        let lines = bytes.min(MAX_PREFETCH_BYTES) / 64;
        add(&mut p.kernels[i], &panel, dims.clone(), lines);
    }
}

/// The packed weight buffer of a kernel made of GEMM strips, if it is one.
fn gemm_weights(k: &Kernel) -> Option<String> {
    k.body.iter().find_map(|s| {
        let Stmt::Loop(l) = s else { return None };
        l.body.iter().find_map(|s| match s {
            Stmt::Micro(m) if matches!(m.op, Op::Gemm(_)) => m
                .operand(Slot::W)
                .and_then(|o| k.buffers.get(o.buf.0))
                .map(|b| b.name.clone()),
            _ => None,
        })
    })
}

/// Gives each GEMM strip of `k` (one per work item, directly in a top-level loop) its share of
/// the first `lines` lines of `panel`.
fn add(k: &mut Kernel, panel: &str, dims: Vec<usize>, lines: usize) {
    let top_gemm = |s: &Stmt| match s {
        Stmt::Loop(l) => {
            l.body.len() == 1 && matches!(&l.body[0], Stmt::Micro(m) if matches!(m.op, Op::Gemm(_)))
        }
        _ => false,
    };
    // Only kernels whose every top-level loop is one GEMM strip per iteration.
    if k.body.is_empty() || !k.body.iter().all(top_gemm) {
        return;
    }
    let Some(items) = crate::loops::verify::work_items(k).and_then(|n| usize::try_from(n).ok())
    else {
        return;
    };
    let share = lines / items.max(1);
    let Ok(elems) = i64::try_from(share * 16) else {
        return;
    };
    if share == 0 {
        return;
    }
    // The loop variables must be the item numbers (each loop running on from the last), so
    // that `var * share` lines give every item its own share.
    let mut next = 0;
    for s in &k.body {
        let Stmt::Loop(l) = s else { return };
        if l.lo != next {
            return;
        }
        next = l.hi;
    }
    let buf = k.add_buffer(panel, dims, Role::Const);
    for s in &mut k.body {
        let Stmt::Loop(l) = s else { continue };
        let var = l.var;
        if let Some(Stmt::Micro(m)) = l.body.first_mut()
            && let Op::Gemm(g) = &mut m.op
        {
            g.prefetch = share;
            m.operands.push((
                Slot::Prefetch,
                Operand {
                    buf,
                    base: Affine::var(var) * elems,
                },
            ));
        }
    }
}
