//! The depthwise row in both wide tiers: per column block (16 accumulators in zmm0-15: 16, 8 or
//! 4 columns of 1, 2 or 4 channel vectors; 12 columns in ymm0-11, or fewer, below; a runtime
//! loop, then the remaining columns) and, inside it, per channel block (its vectors: 16
//! channels each in zmm, 8 in ymm; a runtime loop, then the vectors left one at a time and one
//! opmask-masked tail block on avx512), the accumulators start from the bias, then for each valid tap (row-major) the
//! tap's weight vectors are loaded once (zmm20-23 / ymm12) and one `vfmadd231ps` with the input
//! as memory operand runs per column and vector (a dense row's input is a scalar: broadcast
//! inside the FMA on avx512, by `vbroadcastss` into ymm15 on avx2); then residual, clamp
//! (bounds in zmm17/18, ymm13/14) and the store.
//!
//! A depthwise row of up to 12 window columns (avx512) or 5 (avx2) reduces input-major instead
//! ([`input_major`]): per window row, the row's weight vectors stay in registers and each input
//! vector is loaded once for the (up to `nx`) output columns that read it, the same FMAs in the
//! same order per output. A 3x3 stride-1 row of 16 columns loads 54 input vectors instead of
//! 144. On avx2 such a row takes `13 - nx` columns per block (10 for 3x3), to make room for the
//! weights. Measured on the Zen 4 host (2026-12-02): the 17 depthwise layers of the seed model,
//! 1 thread, 5 interleaved rounds, avx512 0.991 -> 0.915 ms (`res3_2/dw` 0.130 -> 0.103,
//! `res2_1/dw` 0.110 -> 0.091), at 2 threads 0.580 -> 0.550; avx2 0.960 -> 0.947 ms, though
//! with operands in L1/L2 (`cargo run --release --example emit_kernels -- bench avx2`, two
//! runs each) 28x28x384 went from 44-52 to 69-73 GFLOP/s and 56x56x144 from 50-58 to 69-73:
//! in the model the layers wait on L2 and memory more than on loads.
//!
//! Column blocks outside channel blocks: a column block reads a few whole pixels (all their
//! channels, contiguous), which the hardware prefetchers follow, where channel blocks outside
//! read one 64-byte line per pixel, a row apart (measured in a harness, rows in L2: 28x28x384
//! 56 -> 60 GFLOP/s, 112x112x32 49 -> 61, 2026-12-01).
//!
//! Registers: rdi input and r8 output advance per column block; rax and r9 walk the channel
//! blocks of one, with rsi weights and rdx bias (both stepped back after it); r11 counts column
//! blocks, rcx channel blocks; the residual is addressed as
//! `r9 + r10` with `r10 = res - out` (both have the same layout). See [`super`] for the rules.
//! avx2 has no masks, so it takes only channel counts that are a multiple of 8 (the portable
//! body runs otherwise; every MobileNetV2 layer qualifies).

use iced_x86::code_asm::registers::{xmm::get_xmm, ymm::get_ymm, zmm::get_zmm};
use iced_x86::code_asm::*;
use iced_x86::{IcedError, Register};

use crate::loops::micro::DwRow;

type R = Result<(), IcedError>;

/// Channel vectors per register block (avx512, depthwise rows; dense rows and avx2 take one):
/// four when the row has four full vectors of channels and at least 16 columns, else two when
/// it has two, else one. A block reads 64 to 256 contiguous bytes of each input pixel instead of
/// one line, which the L2's adjacent-line prefetch serves in pairs (1 thread, sum of the 17
/// depthwise layers 0.95 -> 0.89 ms with two, 0.875 with four; four lost ~10% on the 7- and
/// 14-column rows, 3 rounds, 2026-12-02).
fn block_vectors(d: &DwRow, lanes: usize) -> usize {
    if lanes != 16 || d.dense.is_some() {
        1
    } else if d.c >= 4 * lanes && d.cols >= 16 {
        4
    } else if d.c >= 2 * lanes {
        2
    } else {
        1
    }
}

/// Columns per register block: 16 accumulators of 32 zmm (over the block's vectors); 12 of 16
/// ymm, or `13 - nx` for an input-major ymm row (its `nx` weight vectors follow the
/// accumulators; ymm13/14 hold the clamp bounds, ymm15 the input).
fn block_cols(d: &DwRow, lanes: usize) -> usize {
    if lanes == 16 {
        16 / block_vectors(d, lanes)
    } else if shared_input_stride(d, lanes).is_some() {
        13 - d.nx
    } else {
        12
    }
}

/// Whether the row fits the tier: channel tails need avx512's masks, and every displacement
/// must fit an `i32`.
pub(super) fn fits(d: &DwRow, lanes: usize) -> bool {
    let m = block_cols(d, lanes);
    let bytes = |v: Option<usize>| {
        v.and_then(|v| v.checked_mul(4))
            .and_then(|v| i32::try_from(v).ok())
    };
    let (x_last, w_last) = d.taps().last().copied().unwrap_or((usize::MAX, usize::MAX));
    let x_max = m
        .checked_mul(d.x_col)
        .and_then(|v| v.checked_add(x_last)?.checked_add(d.c));
    let w_max = w_last.checked_add(d.c);
    (lanes == 16 || d.c.is_multiple_of(lanes))
        && bytes(d.c.checked_add(lanes)).is_some()
        && bytes(x_max).is_some()
        && bytes(w_max).is_some()
        && bytes(m.checked_mul(d.c)).is_some()
}

/// Emits the kernel for `lanes` = 16 (avx512) or 8 (avx2).
pub(super) fn row(a: &mut CodeAssembler, d: &DwRow, lanes: usize) -> R {
    if lanes == 16 {
        zmm_row(a, d)
    } else {
        ymm_row(a, d)
    }
}

/// The shared structure: constants, then channel runs with column loops inside; `$block`
/// emits one register block `(a, d, cols, masked)`.
macro_rules! dw_driver {
    ($name:ident, $lanes:expr, $block:ident, $splat:ident) => {
        fn $name(a: &mut CodeAssembler, d: &DwRow) -> R {
            let lanes: usize = $lanes;
            let m = block_cols(d, lanes);
            let nv = block_vectors(d, lanes);
            if let Some((lo, hi)) = d.clamp {
                // zmm17/18 or ymm13/14, after every accumulator (see the block emitters).
                let bound = if lanes == 16 { 17 } else { 13 };
                $splat(a, bound, lo.to_bits())?;
                $splat(a, bound + 1, hi.to_bits())?;
            }
            if d.residual {
                a.sub(rcx, r8)?;
                a.mov(r10, rcx)?;
            }
            let tail = d.c % lanes;
            if tail > 0 {
                a.mov(eax, (1u32 << tail) - 1)?;
                a.kmovw(k1, eax)?;
            }
            let step = (lanes * 4) as i32;
            // (blocks, vectors per block, masked tail): blocks of `nv` vectors, the full
            // vectors left over one at a time, then the tail.
            let full = d.c / lanes;
            let runs = [
                (full / nv, nv, false),
                (full % nv, 1, false),
                (usize::from(tail > 0), 1, true),
            ];
            let blocks = d.c.div_ceil(lanes);
            // One column block at rdi (input) and r8 (output): every channel block in turn,
            // rax/r9/rsi/rdx stepping a vector each, then rsi and rdx back to channel 0.
            let columns = |a: &mut CodeAssembler, cols: usize| -> R {
                a.mov(rax, rdi)?;
                a.mov(r9, r8)?;
                for (count, vectors, masked) in runs {
                    if count == 0 {
                        continue;
                    }
                    let mut ctop = a.create_label();
                    if count > 1 {
                        a.mov(rcx, count as u64)?;
                        a.set_label(&mut ctop)?;
                    }
                    $block(a, d, cols, vectors, masked)?;
                    let bstep = step * vectors as i32;
                    if d.dense.is_none() {
                        a.add(rax, bstep)?;
                    }
                    a.add(r9, bstep)?;
                    a.add(rsi, bstep)?;
                    if d.bias {
                        a.add(rdx, bstep)?;
                    }
                    if count > 1 {
                        a.dec(rcx)?;
                        a.jnz(ctop)?;
                    }
                }
                // `fits` checked that `blocks * step` fits an i32.
                a.sub(rsi, blocks as i32 * step)?;
                if d.bias {
                    a.sub(rdx, blocks as i32 * step)?;
                }
                Ok(())
            };
            let full = d.cols / m;
            if full > 0 {
                let mut top = a.create_label();
                if full > 1 {
                    a.mov(r11, full as u64)?;
                    a.set_label(&mut top)?;
                }
                columns(a, m)?;
                a.add(rdi, (m * d.x_col * 4) as i32)?;
                a.add(r8, (m * d.c * 4) as i32)?;
                if full > 1 {
                    a.dec(r11)?;
                    a.jnz(top)?;
                }
            }
            if d.cols % m > 0 {
                columns(a, d.cols % m)?;
            }
            a.vzeroupper()?;
            a.ret()
        }
    };
}

dw_driver!(zmm_row, 16, zmm_block, zmm_splat);
dw_driver!(ymm_row, 8, ymm_block, ymm_splat);

fn z(i: usize) -> AsmRegisterZmm {
    get_zmm(Register::ZMM0 + i as u32).unwrap_or(zmm31)
}

fn y(i: usize) -> AsmRegisterYmm {
    get_ymm(Register::YMM0 + i as u32).unwrap_or(ymm15)
}

fn zmm_splat(a: &mut CodeAssembler, r: usize, bits: u32) -> R {
    a.mov(eax, bits)?;
    a.vpbroadcastd(z(r), eax)
}

fn ymm_splat(a: &mut CodeAssembler, r: usize, bits: u32) -> R {
    let x = get_xmm(Register::XMM0 + r as u32).unwrap_or(xmm15);
    a.mov(eax, bits)?;
    a.vmovd(x, eax)?;
    a.vbroadcastss(y(r), x)
}

/// One zmm block of `cols` columns x `nv` channel vectors (accumulator `col * nv + v`, the
/// tap's weights in zmm20..); `masked`: the channel tail (opmask k1, one vector).
fn zmm_block(a: &mut CodeAssembler, d: &DwRow, cols: usize, nv: usize, masked: bool) -> R {
    let acc = |col: usize, v: usize| z(col * nv + v);
    let w = |v: usize| z(20 + v);
    let vb = |v: usize| (v * 64) as i32;
    for col in 0..cols {
        for v in 0..nv {
            let r = acc(col, v);
            match (d.bias, masked) {
                (true, true) => a.vmovups(r.k1().z(), zmmword_ptr(rdx + vb(v)))?,
                (true, false) => a.vmovups(r, zmmword_ptr(rdx + vb(v)))?,
                (false, _) => a.vxorps(r, r, r)?,
            }
        }
    }
    if let Some(stride) = shared_input_stride(d, 16) {
        zmm_reduce_by_input(a, d, cols, nv, masked, stride)?;
        return zmm_epilogue(a, d, cols, nv, masked);
    }
    for (xo, wo) in d.taps() {
        for v in 0..nv {
            let at = zmmword_ptr(rsi + (wo * 4) as i32 + vb(v));
            if masked {
                a.vmovups(w(v).k1().z(), at)?;
            } else {
                a.vmovups(w(v), at)?;
            }
        }
        for col in 0..cols {
            let disp = ((col * d.x_col + xo) * 4) as i32;
            if d.dense.is_some() {
                // A dense row (one vector): the weight vector times the input scalar,
                // broadcast inside the FMA (one FMA per input; see `super::avx512` for why a
                // separate `vbroadcastss zmm` is slower on Zen 4).
                a.vfmadd231ps(acc(col, 0), w(0), dword_bcst(rax + disp))?;
                continue;
            }
            for v in 0..nv {
                let at = zmmword_ptr(rax + disp + vb(v));
                if masked {
                    a.vfmadd231ps(acc(col, v).k1().z(), w(v), at)?;
                } else {
                    a.vfmadd231ps(acc(col, v), w(v), at)?;
                }
            }
        }
    }
    zmm_epilogue(a, d, cols, nv, masked)
}

/// The most window columns an input-major row keeps weight vectors for in registers: zmm20-31
/// on avx512; on avx2 5, leaving 8 columns of accumulators.
fn max_shared_taps(lanes: usize) -> usize {
    if lanes == 16 { 12 } else { 5 }
}

/// The convolution stride of a depthwise row whose input columns are `stride` pixels apart and
/// whose window has at most [`max_shared_taps`] columns: such a row reduces input-major
/// ([`input_major`]). `None`: a dense row, or a layout the per-tap loop handles.
fn shared_input_stride(d: &DwRow, lanes: usize) -> Option<usize> {
    let fits = d.dense.is_none() && d.nx <= max_shared_taps(lanes);
    (fits && d.x_col > 0 && d.x_col.is_multiple_of(d.c)).then_some(d.x_col / d.c)
}

/// One window row of an input-major reduction over `cols` output columns: the element offsets
/// (from the first valid tap, channel 0) of its `nx` weight vectors, then of each input column
/// of the block's span that some output reads, with the `(output column, window column)` pairs
/// that read it.
struct WindowRow {
    weights: Vec<usize>,
    inputs: Vec<(usize, Vec<(usize, usize)>)>,
}

/// The input-major order of a block's reduction: per window row `ky`, each input column `j` of
/// the span loaded once and multiplied into every output column whose window covers it. Output
/// column `col` reads input column `j = stride * col + kx`, so with `j` ascending its taps
/// still arrive in row-major order, one FMA each, as the per-tap loop and the portable body
/// have them (the same bits). Loads per output vector: about `ny * (stride + nx / cols)`
/// instead of `ny * nx`.
fn input_major(d: &DwRow, cols: usize, stride: usize) -> Vec<WindowRow> {
    let span = stride * (cols - 1) + d.nx;
    (0..d.ny)
        .map(|ky| WindowRow {
            weights: (0..d.nx).map(|kx| ky * d.w_row + kx * d.c).collect(),
            inputs: (0..span)
                .filter_map(|j| {
                    let uses: Vec<(usize, usize)> = (0..d.nx)
                        .filter(|&kx| kx <= j && (j - kx) % stride == 0)
                        .map(|kx| ((j - kx) / stride, kx))
                        .filter(|&(col, _)| col < cols)
                        .collect();
                    // A column between the windows of a stride above `nx` is not loaded.
                    (!uses.is_empty()).then_some((ky * d.x_row + j * d.c, uses))
                })
                .collect(),
        })
        .collect()
}

/// The input-major reduction of a zmm block (weights in zmm20.., the input in zmm19), per
/// channel vector.
fn zmm_reduce_by_input(
    a: &mut CodeAssembler,
    d: &DwRow,
    cols: usize,
    nv: usize,
    masked: bool,
    stride: usize,
) -> R {
    let load = |a: &mut CodeAssembler, r: AsmRegisterZmm, at: AsmMemoryOperand| {
        if masked {
            a.vmovups(r.k1().z(), zmmword_ptr(at))
        } else {
            a.vmovups(r, zmmword_ptr(at))
        }
    };
    for row in input_major(d, cols, stride) {
        for v in 0..nv {
            let vb = (v * 64) as i32;
            for (kx, &wo) in row.weights.iter().enumerate() {
                load(a, z(20 + kx), rsi + (wo * 4) as i32 + vb)?;
            }
            for (xo, uses) in &row.inputs {
                load(a, z(19), rax + (xo * 4) as i32 + vb)?;
                for &(col, kx) in uses {
                    a.vfmadd231ps(z(col * nv + v), z(20 + kx), z(19))?;
                }
            }
        }
    }
    Ok(())
}

/// Residual, clamp and store of a zmm block's accumulators.
fn zmm_epilogue(a: &mut CodeAssembler, d: &DwRow, cols: usize, nv: usize, masked: bool) -> R {
    let acc = |col: usize, v: usize| z(col * nv + v);
    let vb = |v: usize| (v * 64) as i32;
    for col in 0..cols {
        for v in 0..nv {
            let r = acc(col, v);
            let off = (col * d.c * 4) as i32 + vb(v);
            if d.residual {
                let at = zmmword_ptr(r9 + r10 + off);
                if masked {
                    a.vaddps(r.k1().z(), r, at)?;
                } else {
                    a.vaddps(r, r, at)?;
                }
            }
            if d.clamp.is_some() {
                a.vmaxps(r, z(17), r)?;
                a.vminps(r, z(18), r)?;
            }
            if masked {
                a.vmovups(zmmword_ptr(r9 + off).k1(), r)?;
            } else {
                a.vmovups(zmmword_ptr(r9 + off), r)?;
            }
        }
    }
    Ok(())
}

/// One ymm block of `cols` columns (one vector, never masked: see `fits`).
fn ymm_block(a: &mut CodeAssembler, d: &DwRow, cols: usize, _nv: usize, _masked: bool) -> R {
    let w = y(12);
    for col in 0..cols {
        let r = y(col);
        if d.bias {
            a.vmovups(r, ymmword_ptr(rdx))?;
        } else {
            a.vxorps(r, r, r)?;
        }
    }
    if let Some(stride) = shared_input_stride(d, 8) {
        // Input-major (see `input_major`): weights in ymm(cols).., the input in ymm15.
        for row in input_major(d, cols, stride) {
            for (kx, &wo) in row.weights.iter().enumerate() {
                a.vmovups(y(cols + kx), ymmword_ptr(rsi + (wo * 4) as i32))?;
            }
            for (xo, uses) in &row.inputs {
                a.vmovups(y(15), ymmword_ptr(rax + (xo * 4) as i32))?;
                for &(col, kx) in uses {
                    a.vfmadd231ps(y(col), y(cols + kx), y(15))?;
                }
            }
        }
    } else {
        ymm_reduce_by_tap(a, d, cols, w)?;
    }
    ymm_epilogue(a, d, cols)
}

/// The per-tap reduction of a ymm block (weights in `w`; a dense row's broadcast in ymm15).
fn ymm_reduce_by_tap(a: &mut CodeAssembler, d: &DwRow, cols: usize, w: AsmRegisterYmm) -> R {
    for (xo, wo) in d.taps() {
        a.vmovups(w, ymmword_ptr(rsi + (wo * 4) as i32))?;
        for col in 0..cols {
            let disp = ((col * d.x_col + xo) * 4) as i32;
            if d.dense.is_some() {
                a.vbroadcastss(y(15), dword_ptr(rax + disp))?;
                a.vfmadd231ps(y(col), w, y(15))?;
            } else {
                a.vfmadd231ps(y(col), w, ymmword_ptr(rax + disp))?;
            }
        }
    }
    Ok(())
}

/// Residual, clamp and store of a ymm block's accumulators.
fn ymm_epilogue(a: &mut CodeAssembler, d: &DwRow, cols: usize) -> R {
    for col in 0..cols {
        let r = y(col);
        let off = (col * d.c * 4) as i32;
        if d.residual {
            a.vaddps(r, r, ymmword_ptr(r9 + r10 + off))?;
        }
        if d.clamp.is_some() {
            a.vmaxps(r, y(13), r)?;
            a.vminps(r, y(14), r)?;
        }
        a.vmovups(ymmword_ptr(r9 + off), r)?;
    }
    Ok(())
}
