//! The wide tiers: machine code for micro-kernel statements (`loops::micro`), assembled at
//! compile time with iced-x86 and placed in the JIT module next to the Cranelift kernels that
//! call them.
//!
//! ## What must hold
//! - **ABI.** Every raw kernel is `extern "sysv64" fn(x, w, bias, res, out, pf)` (pointers to
//!   the first element of each operand; an absent operand is never read). Shapes, strides and
//!   masks are compiled in. Kernels use the caller-saved registers (rax, rcx, rdx, rsi, rdi,
//!   r8-r11, all vector and mask registers) and no stack, except that a GEMM strip with a
//!   prefetch operand saves rbx and rbp with `push`/`pop` (its prefetch pointer and end), and
//!   one with a merged channel tail r12 (its tail-weight pointer); they
//!   end with `vzeroupper` (Cranelift's spills are legacy-SSE moves, which stall after dirty
//!   upper halves). No relocations: constants are
//!   built in registers or placed after `ret` and read RIP-relative.
//! - **Bounds.** A kernel touches exactly its op's footprint (`Op::footprint`): channel tails
//!   use masked loads and stores (opmasks on AVX-512, `vmaskmovps` on AVX2), whose masked-off
//!   lanes do not access memory; so for any shape the verifier accepted, no byte outside the
//!   operands is read or written.
//! - **Bit identity.** Each output element is computed as `loops::micro` specifies: one
//!   accumulator, initialised from the bias (or `vxorps` = +0.0), `vfmadd231ps` over `ci`
//!   ascending, then `vaddps` of the residual, then `vmaxps(lo, acc)` and `vminps(hi, acc)`
//!   (the operand order that returns `acc` when it is NaN, as the IR's max/min do; and when both
//!   are zeros, so `max(0, -0.0)` is `-0.0` as in the IR). With `hi = +inf` (relu) `vminps`
//!   returns `acc` for every value, NaN and +inf included, so it equals the portable path's bare
//!   `max(acc, 0)`. MXCSR is left alone (no flush-to-zero).
//! - **Sharing.** Kernels are keyed by [`key`] (tier + op parameters); identical keys are
//!   assembled once.

mod avx2;
mod avx512;
mod depthwise;
pub mod peak;

use iced_x86::code_asm::CodeAssembler;

use crate::loops::micro::{GEMM_PACK, GEMV_TILES, GemmStrip, Op};
use crate::{Error, Result};

/// The vector tier a program is compiled for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isa {
    /// The best tier the running CPU has (avx512, then avx2, then portable).
    #[default]
    Auto,
    /// 512-bit FMA micro-kernels (zmm0-31, opmasks); needs AVX-512F, DQ and VL.
    Avx512,
    /// 256-bit FMA micro-kernels (ymm); needs AVX2 and FMA.
    Avx2,
    /// Cranelift's 128-bit code only: the reference, and the path on every other CPU.
    Portable,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Auto => "auto",
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// The vector width in bits (0 for `Auto`).
    pub fn bits(self) -> usize {
        match self {
            Isa::Auto => 0,
            Isa::Avx512 => 512,
            Isa::Avx2 => 256,
            Isa::Portable => 128,
        }
    }

    /// Why the running CPU cannot run this tier, if it cannot.
    pub fn missing(self) -> Option<&'static str> {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 if !std::arch::is_x86_feature_detected!("avx512f") => Some("avx512f"),
                // `vxorps zmm` is AVX512DQ; masked and EVEX ymm (a narrow channel tail) AVX512VL.
                // Every AVX-512 CPU but the Xeon Phi has both.
                Isa::Avx512 if !std::arch::is_x86_feature_detected!("avx512dq") => Some("avx512dq"),
                Isa::Avx512 if !std::arch::is_x86_feature_detected!("avx512vl") => Some("avx512vl"),
                Isa::Avx2 if !std::arch::is_x86_feature_detected!("avx2") => Some("avx2"),
                Isa::Avx2 if !std::arch::is_x86_feature_detected!("fma") => Some("fma"),
                _ => None,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            match self {
                Isa::Avx512 | Isa::Avx2 => Some("x86-64"),
                _ => None,
            }
        }
    }

    /// The concrete tier to compile for on this CPU: `Auto` picks the widest available; an
    /// explicit tier the CPU lacks is a usage error (running it would be SIGILL).
    pub fn resolve(self) -> Result<Isa> {
        match self {
            Isa::Auto => Ok([Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|i| i.missing().is_none())
                .unwrap_or(Isa::Portable)),
            i => match i.missing() {
                Some(f) => Err(Error::Usage(format!(
                    "--isa {}: this CPU lacks {f} (available: {})",
                    i.name(),
                    Isa::available()
                        .iter()
                        .map(|i| i.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
                None => Ok(i),
            },
        }
    }

    /// The concrete tiers this CPU runs, widest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable]
            .into_iter()
            .filter(|i| i.missing().is_none())
            .collect()
    }

    /// Whether micro-kernels are raw machine code in this tier.
    pub fn wide(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Avx2)
    }
}

impl std::str::FromStr for Isa {
    type Err = Error;
    fn from_str(s: &str) -> Result<Isa> {
        match s {
            "auto" => Ok(Isa::Auto),
            "avx512" => Ok(Isa::Avx512),
            "avx2" => Ok(Isa::Avx2),
            "portable" => Ok(Isa::Portable),
            _ => Err(Error::Usage(format!(
                "unknown isa '{s}' (auto, avx512, avx2, portable)"
            ))),
        }
    }
}

/// The symbol-safe key of the raw kernel for `op` in `isa` (identical keys share code).
pub fn key(isa: Isa, op: &Op) -> String {
    format!("{}_{}", isa.name(), op.key())
}

/// Assembles the raw kernel for `op` in a wide tier. `Ok(None)` when the op does not fit the
/// tier's addressing (a displacement past 2 GiB): the portable body runs instead.
pub fn assemble(isa: Isa, op: &Op) -> Result<Option<Vec<u8>>> {
    op.check().map_err(Error::Codegen)?;
    let mut a = CodeAssembler::new(64).map_err(asm_err)?;
    match op {
        Op::Gemm(g) => {
            let Some(plan) = Plan::new(g, lanes(isa)) else {
                return Ok(None);
            };
            match isa {
                Isa::Avx512 => avx512::gemm(&mut a, g, &plan).map_err(asm_err)?,
                Isa::Avx2 => avx2::gemm(&mut a, g, &plan).map_err(asm_err)?,
                _ => return Ok(None),
            }
        }
        Op::Depthwise(d) => {
            if !isa.wide() || !depthwise::fits(d, lanes(isa)) {
                return Ok(None);
            }
            depthwise::row(&mut a, d, lanes(isa)).map_err(asm_err)?;
        }
    }
    a.assemble(0).map(Some).map_err(asm_err)
}

fn lanes(isa: Isa) -> usize {
    if isa == Isa::Avx512 { 16 } else { 8 }
}

fn asm_err(e: iced_x86::IcedError) -> Error {
    Error::Codegen(format!("assembling a micro-kernel: {e}"))
}

/// One vector of a channel block: where its weights are and how many lanes it has.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vector {
    /// Byte displacement of its weights from the block's weight pointer.
    pub w_disp: i32,
    /// Channel of its first lane, from the block's first channel.
    pub ch: usize,
    /// Active lanes (a partial vector is masked).
    pub lanes: usize,
}

/// A run of channel blocks with the same vectors.
#[derive(Clone, Debug)]
pub(crate) struct ChannelBlocks {
    /// How many (a runtime loop when more than one).
    pub count: usize,
    pub vectors: Vec<Vector>,
    /// The channel tail merged into this (single) block as its last vector: its weights come
    /// from the tail panel (byte offset from `w`, and its step per reduction step), walked by
    /// r12, not from the block's tiles.
    pub tail: Option<(i64, i32)>,
    /// Byte offset of the first block's weight pointer from `w`, and the weight pointer's step
    /// per reduction step.
    pub w_start: i64,
    pub w_step: i32,
    /// Channels per block (the step of the bias, residual and output pointers).
    pub width: usize,
    /// Bytes from one block's weights to the next one's.
    pub w_next: u64,
    /// `(first pixel, pixels)` of each register block (unrolled), sized to the register budget
    /// for this many vectors.
    pub pixel_blocks: Vec<(usize, usize)>,
    /// Reduction steps per prefetched line (the same in every run of a plan, see
    /// [`prefetch_every`]).
    pub prefetch_every: usize,
}

/// The shape of a GEMM strip's code, shared by both tiers: runs of channel blocks (a loop
/// each), register blocks of pixels inside, and byte displacements checked to fit an `i32`.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub channels: Vec<ChannelBlocks>,
}

/// The bytes of weights a GEMM strip's channel block may span and still be read from L1 for
/// every pixel block (32 KB: the smallest L1 data cache of the x86-64 CPUs with AVX-512).
const L1_WEIGHTS: usize = 32 * 1024;

/// `n` split into `ceil(n / most)` nearly equal parts: `(count, size)` runs, larger first.
fn balanced(n: usize, most: usize) -> Vec<(usize, usize)> {
    if n == 0 {
        return Vec::new();
    }
    let parts = n.div_ceil(most);
    let (base, extra) = (n / parts, n % parts);
    [(extra, base + 1), (parts - extra, base)]
        .into_iter()
        .filter(|&(c, sz)| c > 0 && sz > 0)
        .collect()
}

impl Plan {
    /// `lanes` = f32 per vector register (16 or 8).
    ///
    /// Register budget per block: accumulators `pixels x vectors`, plus the weight vectors and
    /// the broadcasts (two on avx512, where the clamp bounds reuse them in the epilogue; one and
    /// the mask on avx2). avx512 (32 zmm): 3 vectors x 9 pixels or 2 x 14 (see [`L1_WEIGHTS`]);
    /// avx2 (16 ymm): 2 x 6 or 1 x 12. A GEMV: 4 tiles x 1 pixel (4 zmm, 8 ymm).
    fn new(g: &GemmStrip, lanes: usize) -> Option<Plan> {
        // avx512 takes blocks of 3 vectors x 9 pixels, unless a 3-vector block's weights
        // (`k` rows of 48 channels) outgrow a 32 KB L1: then 2 x 14, which re-reads them from L2
        // for every 14 pixels instead of every 7 (a 14-pixel strip is one block, not two). The
        // layers with `k` of 384-960 ran 2-5% faster (1 thread, 3 rounds, 2026-12-02); 2 x 14 on
        // every layer lost as much on the short ones.
        let t = GEMM_PACK;
        let per_tile = t / lanes;
        // A GEMV (one pixel) takes blocks of `GEMV_TILES` whole tiles: that many weight
        // streams at once (avx2 keeps them in memory operands, see `avx2::block`).
        let most_vectors = if g.pixels == 1 {
            GEMV_TILES * per_tile
        } else if lanes == 16 && g.k.saturating_mul(3 * lanes * 4) <= L1_WEIGHTS {
            3
        } else {
            2
        };
        let panel = g.k.checked_mul(t * 4)?;
        let tiles = g.n / t;
        let rem = g.n % t;
        let mut channels = Vec::new();
        let mut tile0 = 0;
        // Full 16-channel tiles in balanced blocks of up to `most_vectors` vectors.
        for (count, tiles_per) in balanced(tiles * per_tile, most_vectors)
            .into_iter()
            .map(|(c, v)| (c, v / per_tile.max(1)))
        {
            let nv = tiles_per * per_tile;
            let vectors = (0..nv)
                .map(|v| {
                    let (tile, part) = (v / per_tile, v % per_tile);
                    Some(Vector {
                        w_disp: i32::try_from(panel * tile + part * lanes * 4).ok()?,
                        ch: v * lanes,
                        lanes,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            channels.push(ChannelBlocks {
                count,
                vectors,
                w_start: i64::try_from(panel.checked_mul(tile0)?).ok()?,
                w_step: (t * 4) as i32,
                width: tiles_per * t,
                w_next: u64::try_from(panel.checked_mul(tiles_per)?).ok()?,
                tail: None,
                pixel_blocks: Vec::new(),
                prefetch_every: 1,
            });
            tile0 += count * tiles_per;
        }
        tail_run(
            &mut channels,
            lanes,
            most_vectors,
            panel.checked_mul(tiles)?,
            rem,
        )?;
        for cb in &mut channels {
            cb.pixel_blocks = pixel_blocks(g.pixels, cb.vectors.len(), lanes);
        }
        let every = prefetch_every(g, &channels);
        for cb in &mut channels {
            cb.prefetch_every = every;
        }
        // An unrolled step's weights lie up to `K_UNROLL - 1` weight steps past a vector's.
        let unrolled_fit = channels.iter().all(|cb| {
            let ahead = i64::from(cb.w_step) * (K_UNROLL as i64 - 1);
            cb.vectors
                .iter()
                .all(|v| i32::try_from(i64::from(v.w_disp) + ahead).is_ok())
        });
        (unrolled_fit && displacements_fit(g)).then_some(Plan { channels })
    }
}

/// Adds the `rem` channels after the full tiles (their panel at byte `tail_start` of `w`): on
/// avx512 a tail of one vector joins a last run of one block with room for it (the 24-channel
/// projections: 16 + 8 lanes per broadcast instead of two passes over the input), its weights
/// staying in the tail panel; otherwise it is a run of its own. `None` if an offset overflows.
fn tail_run(
    channels: &mut Vec<ChannelBlocks>,
    lanes: usize,
    most_vectors: usize,
    tail_start: usize,
    rem: usize,
) -> Option<()> {
    if rem == 0 {
        return Some(());
    }
    let w_start = i64::try_from(tail_start).ok()?;
    let w_step = i32::try_from(rem * 4).ok()?;
    let last = channels
        .last_mut()
        .filter(|c| lanes == 16 && rem <= lanes && c.count == 1 && c.vectors.len() < most_vectors);
    if let Some(cb) = last {
        cb.vectors.push(Vector {
            w_disp: 0,
            ch: cb.width,
            lanes: rem,
        });
        cb.tail = Some((w_start, w_step));
        cb.width += rem;
        return Some(());
    }
    let vectors = (0..rem.div_ceil(lanes))
        .map(|v| Vector {
            w_disp: (v * lanes * 4) as i32,
            ch: v * lanes,
            lanes: (rem - v * lanes).min(lanes),
        })
        .collect();
    channels.push(ChannelBlocks {
        count: 1,
        vectors,
        w_start,
        w_step,
        width: rem,
        w_next: 0,
        tail: None,
        pixel_blocks: Vec::new(),
        prefetch_every: 1,
    });
    Some(())
}

/// The pixel register blocks of a channel block of `nv` vectors: avx512 has 30 registers minus
/// the weights for accumulators; avx2 ymm0-11 (ymm12/13 weights, 14 the broadcast, 15 the mask).
fn pixel_blocks(pixels: usize, nv: usize, lanes: usize) -> Vec<(usize, usize)> {
    let accumulators = if lanes == 16 { 30 - nv } else { 12 };
    let mr = (accumulators / nv.max(1)).max(1);
    let mut blocks = Vec::new();
    let mut start = 0;
    for (count, len) in balanced(pixels, mr) {
        for _ in 0..count {
            blocks.push((start, len));
            start += len;
        }
    }
    blocks
}

/// Whether every displacement the emitters form for `g` fits an i32, as does the reduction
/// length (the K loop compares its counter with an immediate).
fn displacements_fit(g: &GemmStrip) -> bool {
    let fits = |v: Option<usize>| v.and_then(|v| i32::try_from(v).ok()).is_some();
    let last_px = g.pixels.saturating_sub(1);
    fits(
        last_px
            .checked_mul(g.x_stride)
            .and_then(|v| v.checked_add(K_UNROLL))
            .and_then(|v| v.checked_mul(4)),
    ) && fits(
        last_px
            .checked_mul(g.out_stride)
            .and_then(|v| v.checked_add(g.n))
            .and_then(|v| v.checked_mul(4)),
    ) && fits(g.n.checked_mul(4))
        && fits(Some(g.k))
}

/// One register block of a GEMM strip: `(a, g, channel run, first pixel, pixels)`.
pub(crate) type GemmBlock = fn(
    &mut CodeAssembler,
    &GemmStrip,
    &ChannelBlocks,
    usize,
    usize,
) -> std::result::Result<(), iced_x86::IcedError>;

/// The channel runs of a GEMM strip, shared by both tiers: per run, r9 = its first block's
/// weights; per block (a loop over r11 when the run has several), the pixel register blocks,
/// then the bias (rdx), residual (rcx) and output (r8) pointers move to the next block.
///
/// With a prefetch operand (the 6th argument, r9 on entry), rbx walks it from its first line
/// and rbp marks the end of its `g.prefetch` lines; each reduction step of every register
/// block prefetches the next line ([`prefetch_step`]) until the end, so the lines arrive
/// spread over the whole strip rather than in a burst that would stall it.
pub(crate) fn gemm_runs(
    a: &mut CodeAssembler,
    g: &GemmStrip,
    plan: &Plan,
    block: GemmBlock,
) -> std::result::Result<(), iced_x86::IcedError> {
    use iced_x86::code_asm::{qword_ptr, r8, r9, r11, r12, rax, rbp, rbx, rcx, rdx, rsi};
    let prefetch = prefetch_bytes(g);
    let tail = plan.channels.iter().any(|c| c.tail.is_some());
    if tail {
        a.push(r12)?;
    }
    if let Some(bytes) = prefetch {
        a.push(rbx)?;
        a.push(rbp)?;
        a.mov(rbx, r9)?;
        a.lea(rbp, qword_ptr(rbx + bytes))?;
    }
    for cb in &plan.channels {
        a.mov(rax, cb.w_start)?;
        a.lea(r9, qword_ptr(rsi + rax))?;
        let mut top = a.create_label();
        if cb.count > 1 {
            a.mov(r11, cb.count as u64)?;
            a.set_label(&mut top)?;
        }
        for &(p0, mr) in &cb.pixel_blocks {
            block(a, g, cb, p0, mr)?;
        }
        let step = (cb.width * 4) as i32;
        if g.bias {
            a.add(rdx, step)?;
        }
        if g.residual {
            a.add(rcx, step)?;
        }
        a.add(r8, step)?;
        if cb.count > 1 {
            a.mov(rax, cb.w_next)?;
            a.add(r9, rax)?;
            a.dec(r11)?;
            a.jnz(top)?;
        }
    }
    if prefetch.is_some() {
        a.pop(rbp)?;
        a.pop(rbx)?;
    }
    if tail {
        a.pop(r12)?;
    }
    Ok(())
}

/// The byte length of a GEMM strip's prefetch lines, if it has any that fit a displacement.
fn prefetch_bytes(g: &GemmStrip) -> Option<i32> {
    match g.prefetch {
        0 => None,
        n => n.checked_mul(64).and_then(|b| i32::try_from(b).ok()),
    }
}

/// One reduction step's prefetch (inside the K loop of a register block): the line at rbx
/// into L2, then the next, until rbp. Nothing when the strip has no prefetch operand. The
/// branch is taken the same way for a whole strip but the last line, so it predicts well.
pub(crate) fn prefetch_step(
    a: &mut CodeAssembler,
    g: &GemmStrip,
) -> std::result::Result<(), iced_x86::IcedError> {
    use iced_x86::code_asm::{byte_ptr, rbp, rbx};
    if prefetch_bytes(g).is_none() {
        return Ok(());
    }
    let mut done = a.create_label();
    a.cmp(rbx, rbp)?;
    a.jae(done)?;
    a.prefetcht1(byte_ptr(rbx))?;
    a.add(rbx, 64)?;
    // The label binds to the caller's next instruction (the next step, or the loop control).
    a.set_label(&mut done)
}

/// Reduction steps per prefetched line in a strip's K loops: one line per loop iteration
/// ([`K_UNROLL`] steps) when the strip's iterations cover its `g.prefetch` lines, else one per
/// two steps, else one per step (and only then in the steps after the loop). Each prefetch
/// costs a compare and branch besides the `prefetcht1`, which on the 256-bit tier's 12-FMA
/// steps is not free: one per iteration (with `lower::prefetch`'s 512 KB cap) made the avx2
/// 14x14 1x1 layers 4-6% faster (`res5_2/pw` 0.427 -> 0.406 ms and 0.458 -> 0.435, 1 thread,
/// two in-process runs of 40 rounds alternating the order, 2026-12-02) and left avx512 as it
/// was. A strip whose iterations are too few for its lines (a 7x7 layer before a large panel)
/// keeps the density that issues them all: pacing every strip at one line per four steps
/// slowed those layers on the Intel host (`docs/performance.md`, "Tried and not kept").
fn prefetch_every(g: &GemmStrip, channels: &[ChannelBlocks]) -> usize {
    let unroll = k_unroll(g.k);
    let blocks: usize = channels
        .iter()
        .map(|cb| cb.count.saturating_mul(cb.pixel_blocks.len()))
        .sum();
    let iterations = blocks.saturating_mul(g.k / unroll);
    [unroll, 2]
        .into_iter()
        .find(|&e| unroll.is_multiple_of(e) && iterations.saturating_mul(unroll / e) >= g.prefetch)
        .unwrap_or(1)
}

/// Reduction steps per iteration of a register block's K loop, on reductions of at least
/// [`K_UNROLL_MIN`] steps: a quarter of the loop-control and pointer updates per FMA. One
/// register block per call, hot operands (`cargo run --release --example emit_kernels -- bench
/// avx512`, medians of 5, 2026-12-02), not unrolled -> unrolled x4, GFLOP/s: 28x28 192->64
/// 179 -> 190, 14x14 96->576 165 -> 181, 7x7 960->160 171 -> 192, 7x7 320->1280 165 -> 185; x8
/// no better than x4, and on short reductions (24-32 steps) no gain.
const K_UNROLL: usize = 4;
const K_UNROLL_MIN: usize = 64;

/// The reduction steps per K-loop iteration of a GEMM strip with `k` of them.
fn k_unroll(k: usize) -> usize {
    if k >= K_UNROLL_MIN { K_UNROLL } else { 1 }
}

/// The K loop of one register block, shared by both tiers: `step(a, u)` emits reduction step
/// `r10 + u` (its weights `u` weight steps after rax, and after r12 for a merged tail; its
/// inputs at `r10 * 4 + u * 4` from each pixel's row), every [`prefetch_every`]-th followed by
/// its prefetch line. The loop runs [`k_unroll`] steps per iteration, then the `k % unroll`
/// remaining steps follow unrolled, so every accumulator still sees the steps in ascending
/// order.
pub(crate) fn k_loop(
    a: &mut CodeAssembler,
    g: &GemmStrip,
    cb: &ChannelBlocks,
    mut step: impl FnMut(&mut CodeAssembler, usize) -> std::result::Result<(), iced_x86::IcedError>,
) -> std::result::Result<(), iced_x86::IcedError> {
    use iced_x86::code_asm::{r10, r10d, r12, rax};
    let unroll = k_unroll(g.k);
    let looped = g.k / unroll * unroll;
    a.xor(r10d, r10d)?;
    if looped > 0 {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        for u in 0..unroll {
            step(a, u)?;
            if u.is_multiple_of(cb.prefetch_every) {
                prefetch_step(a, g)?;
            }
        }
        a.add(rax, cb.w_step * unroll as i32)?;
        if let Some((_, tail_step)) = cb.tail {
            a.add(r12, tail_step * unroll as i32)?;
        }
        a.add(r10, unroll as i32)?;
        a.cmp(r10, looped as i32)?;
        a.jl(top)?;
    }
    for u in 0..g.k - looped {
        step(a, u)?;
        if cb.prefetch_every == 1 {
            prefetch_step(a, g)?;
        }
    }
    Ok(())
}

/// Intel-syntax listing of raw kernel bytes (for `--emit asm`).
pub fn disassemble(bytes: &[u8]) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    let mut line = String::new();
    for ins in &mut d {
        line.clear();
        f.format(&ins, &mut line);
        out.push_str(&format!("  {:04x}  {line}\n", ins.ip()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(pixels: usize, k: usize, n: usize, x_stride: usize) -> Op {
        Op::Gemm(GemmStrip {
            pixels,
            k,
            n,
            x_stride,
            out_stride: n,
            bias: true,
            residual: false,
            clamp: None,
            prefetch: 0,
        })
    }

    /// A strip prefetches one line per K-loop iteration when its iterations cover its lines,
    /// else denser, down to one per step.
    #[test]
    fn prefetch_density_covers_the_lines() {
        let strip = |k: usize, prefetch: usize| GemmStrip {
            pixels: 14,
            k,
            n: 64,
            x_stride: k,
            out_stride: 64,
            bias: true,
            residual: false,
            clamp: None,
            prefetch,
        };
        for lanes in [16, 8] {
            let plan = |k, lines| Plan::new(&strip(k, lines), lanes).expect("fits");
            let every = |k, lines| plan(k, lines).channels[0].prefetch_every;
            let blocks: usize = plan(128, 0)
                .channels
                .iter()
                .map(|c| c.count * c.pixel_blocks.len())
                .sum();
            let iterations = blocks * 128 / K_UNROLL;
            assert_eq!(every(128, 1), K_UNROLL);
            assert_eq!(every(128, iterations), K_UNROLL);
            assert_eq!(every(128, iterations + 1), 2);
            assert_eq!(every(128, 2 * iterations + 1), 1);
            assert_eq!(every(32, 1), 1, "a loop of single steps");
        }
    }

    /// A strip whose loop bound or displacements would not fit the instructions' 32-bit
    /// immediates keeps its portable body: it is never emitted with a truncated bound.
    #[test]
    fn oversized_strips_keep_the_portable_body() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            let run = |op: Op| assemble(isa, &op).expect("valid op");
            assert!(run(strip(1, 1 << 31, 16, 1 << 31)).is_none(), "k past i32");
            assert!(run(strip(2, 64, 16, 1 << 29)).is_none(), "x past 2 GiB");
            assert!(run(strip(3, 67, 40, 67)).is_some(), "an ordinary strip");
        }
    }
}
