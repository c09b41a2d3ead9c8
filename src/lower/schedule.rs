//! Schedules: how a kernel's loops are tiled, ordered, vectorised and unrolled, chosen by a small
//! table from the op's shape. The algorithm (what a kernel computes) lives in the kernel family
//! files; a [`Schedule`] only decides the shape of the nest, and is printed with the kernel.
//!
//! ## The register tile
//! Every compute kernel is a set of *register tiles*: `pixels x channels` output elements whose
//! accumulators live in locals (registers) across the reduction loops, then are stored once with
//! the epilogue applied. Channels are split into f32x4 vectors: a tile holds `channel_vectors`
//! vectors (`4 * channel_vectors` channels) for each of `pixel_tile` pixels, i.e.
//! `pixel_tile * channel_vectors` f32x4 accumulators.
//!
//! ## The 1x1 GEMM micro-kernel
//! 2 pixels x 16 channels: 8 accumulators, 4 weight vectors and 1 broadcast input (+ the copy
//! the missing `vfmadd231ps` costs), 14 of the 16 xmm registers, no spills. The channel
//! reduction is unrolled x4 (`ci = 4 * cio + cii`, then a serial remainder loop for `cin % 4`)
//! and the kernel is compiled at `opt_level=none`, so Cranelift keeps the program order of the
//! loop IR (per step: 4 weight vectors, then per pixel one broadcast and 4 FMAs), while codegen
//! itself reuses addresses and loads (see `codegen`). At `speed` the e-graph pass elaborates
//! each accumulator's whole unrolled FMA chain in turn, keeping every step's weights live, and
//! spills. Measured (`cargo run --release --example emit_kernels -- bench`, GFLOP/s on
//! 28x28 32->192 / 28x28 192->64 / 7x7 320->1280, 128-bit peak 59 in the same runs):
//!
//! | tile | K unroll | opt | GFLOP/s |
//! |---|---|---|---|
//! | 4x8 | 1 | speed | 37 / 38 / 37 (the previous schedule) |
//! | 4x8 | 2 / 4 | speed | 28-31 / 36 |
//! | 4x8 | 1 / 2 / 4 / 8 | none | 32-36 / 44-47 / 49-51 / 49-51 |
//! | 6x8, 5x8, 3x12 | 4 | none | 32-33, 31-36, 40-44 (spills) |
//! | 2x20 | 4 | none | 26-30 (spills) |
//! | 1x32 | 4 | none | 41-47 |
//! | **2x16** | 2 / **4** / 8 | none | 49-54 / **52-53** / 51-54 |
//!
//! Whole model (`mnv2c bench --runs 30`, interleaved): 1x1 family 81% of peak with 4x8 against
//! 84% with 2x16 (2 broadcasts instead of 4 per step).
//!
//! A layer whose output channels leave a remainder of exactly 8 (24 in MobileNetV2) used the
//! 4x8 tile (42.5 -> 49-51 GFLOP/s on `res3_*/pw_linear`); since the 1x1 kernels are GEMM-strip
//! micro-kernels with one weight packing for every tier (16-channel panels), the portable body
//! uses 2x16 for them too.
//!
//! Depthwise kernels are compiled at `opt_level=none` too (taps unrolled, 4x8 tiles): 3x3 s1
//! 56x56x144 21 -> 36 GFLOP/s, s2 112x112x96 20 -> 29, against `speed` in the same runs.
//!
//! ## Tail policy (extents that are not a multiple of the tile)
//! - Channels `C` with tile `T = 4 * channel_vectors`: `C / T` full tiles in a serial loop, then
//!   one remainder tile of `(C % T) / 4` vectors, then one of `C % 4` scalar channels (each emitted
//!   only when non-empty). So every channel count works, and no lane is ever masked.
//! - Pixels with tile `P > 1`: `npix / P` full tiles, then the `npix % P` remaining pixels one
//!   pixel at a time with the same channel tiling. The 1x1 GEMM tiles flattened pixels; direct
//!   and depthwise convs tile the output columns of each border segment (4 columns x 8
//!   channels: the weight vectors of a tap are loaded once for 4 pixels; measured 20 -> 37
//!   GFLOP/s on the first 3x3 s2 conv and 19 -> 22 on the 3x3 s1 depthwise, against 30 and 22
//!   with 2 columns).
//! - Padding: output rows (and columns) are split into segments on which the valid kernel-tap
//!   range is the same; each segment gets its own nest whose reduction loops run over exactly
//!   the valid taps. So the hot loops contain no per-element bounds tests or branches.

use std::fmt;

use crate::loops::micro::{GEMM_PACK, GEMV_TILES};
use crate::loops::{LoopMode, OptLevel};

/// Output pixels per GEMM strip (the 1x1 micro-kernel statement and the 1x1 kernels' work
/// item): 14 = 2 x 7 divides every MobileNetV2 feature map but 7x7 (112, 56, 28 and 14 squared)
/// and gives the 512-bit tier two 7-pixel x 48-channel register blocks, the portable tier
/// seven 2x16 tiles.
pub const GEMM_STRIP: usize = 14;

/// How a 1x1 conv's GEMM is cut into work items (and micro-kernel statements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmSplit {
    /// Strips of this many pixels, all output channels each (then one strip of the rest).
    Pixels(usize),
    /// Blocks of this many output channels (a multiple of `GEMM_PACK`; then one block of the
    /// rest), all pixels each.
    Channels(usize),
}

/// Output channels per work item of a [`GemmSplit::Channels`] GEMM: [`GEMV_TILES`] packing
/// tiles, the weight streams a GEMV block reads at once. Against 32-channel items at 2 threads
/// (5 rounds, 2026-12-02): logits 0.092 -> 0.077 ms on avx512, 0.081 -> 0.076 on avx2.
pub const GEMM_CHANNEL_BLOCK: usize = GEMV_TILES * GEMM_PACK;

/// The work items of a 1x1 conv over `npix` pixels, for a model on `threads` threads:
/// - fewer pixels than one strip (the logits of a small batch: a GEMV that streams a 5 MB
///   panel): blocks of [`GEMM_CHANNEL_BLOCK`] channels, so that threads share the panel
///   instead of one thread reading all of it;
/// - otherwise pixel strips: [`GEMM_STRIP`] pixels, or on small maps (fewer than 8 strips, the
///   7x7 layers, where each strip streams the whole weight panel, up to 1.6 MB) one strip of
///   all pixels on one thread (the panel read once), two strips of a multiple of 7 pixels on
///   more (read twice, one strip per core).
///
/// One strip against two, 1 thread, 3 interleaved rounds (2026-12-02): `res7_2/pw` 0.095 ->
/// 0.090 ms, `res8_1/pw` 0.102 -> 0.093, `conv9_1/pwb` 0.303 -> 0.288; the eight 7x7 1x1
/// layers together -0.06 ms.
///
/// Channel blocks on the 7x7 maps read the panel once, but were slower on two threads
/// (`res7_*` 0.06 -> 0.11 ms, 2026-12-01): every block reads the whole input, half of which
/// the other core has just written, and fetching those lines across cores costs more than the
/// panel re-reads saved. Pixel strips keep each thread on its own part of the map.
pub fn gemm_split(npix: usize, threads: usize) -> GemmSplit {
    if npix < GEMM_STRIP {
        GemmSplit::Channels(GEMM_CHANNEL_BLOCK)
    } else if npix >= 8 * GEMM_STRIP {
        GemmSplit::Pixels(GEMM_STRIP)
    } else if threads <= 1 {
        GemmSplit::Pixels(npix)
    } else {
        GemmSplit::Pixels(npix.div_ceil(2).div_ceil(7).max(1) * 7)
    }
}

/// The kernel family a schedule is for; benchmarks report time per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// 1x1, stride 1, unpadded, ungrouped convolution: a GEMM over pixels x channels.
    Pointwise,
    /// Any other convolution (full, grouped, depthwise with a channel multiplier): direct loops.
    Direct,
    /// Depthwise convolution with multiplier 1: vectorised over channels.
    Depthwise,
    /// Element-wise ops (batch norm, relu6, add) over `[rows, channels]`.
    Elementwise,
    /// Global average pooling.
    Pool,
    /// Softmax over the last axis.
    Softmax,
    /// Dense layer: a matrix-vector product per batch row.
    Dense,
    /// A layout change (`transpose`): serial loops, one element copied at a time.
    Layout,
}

impl Family {
    /// The family's short name in benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            Family::Pointwise => "conv1x1",
            Family::Depthwise => "depthwise",
            Family::Direct => "conv",
            Family::Elementwise => "elementwise",
            Family::Pool => "avgpool",
            Family::Softmax => "softmax",
            Family::Dense => "dense",
            Family::Layout => "layout",
        }
    }
}

/// The shape of a kernel's loop nest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub family: Family,
    /// Output pixels per register tile (unrolled).
    pub pixel_tile: usize,
    /// f32x4 vectors per register tile along the channels (unrolled).
    pub channel_vectors: usize,
    /// Unroll the kernel-tap reduction loops (`ky`, `kx`): unrolling removes the loop overhead
    /// that dominates a 9-step reduction. Measured on the first conv (3x3 s2, 3 -> 32 channels,
    /// 224x224): 14.8 GFLOP/s serial, 20.2 with taps unrolled, 12.9 with the 3-step channel loop
    /// unrolled too (so channel reductions stay serial).
    pub unroll_taps: bool,
    /// Unroll factor of the channel reduction of the 1x1 GEMM (`ci = u * cio + cii`, `cii`
    /// unrolled; the `cin % u` remaining steps in a serial remainder loop). 1 = serial.
    pub reduction_unroll: usize,
    /// Unroll the channel reduction of a direct conv completely (see
    /// [`DIRECT_UNROLL_CHANNELS`]); set by the direct lowering from the group width.
    pub unroll_channels: bool,
    /// The Cranelift optimisation level of the family's kernels.
    pub opt_level: OptLevel,
}

/// The most reduction steps a schedule unrolls in one nest (taps times unrolled channels). Above
/// it the tap and channel loops stay serial, so code size is bounded by a constant, never by a
/// kernel's extent (a 128x128 kernel unrolled took 40 s and 734 MB to compile). A 3x3 direct
/// conv with up to [`DIRECT_UNROLL_CHANNELS`] channels per group (3x3x4 = 36, the stem's 27)
/// and a 5x5 depthwise (25) stay unrolled.
pub const MAX_UNROLLED_STEPS: usize = 36;

/// A direct conv whose groups have at most this many input channels unrolls its channel
/// reduction too and is compiled at `opt_level=none` (the stem conv, 3 channels: 38 -> 46
/// GFLOP/s; at `speed` unrolling it measured 15, and `none` with a serial channel loop 33).
/// Wider groups keep a serial channel loop at `speed`.
pub const DIRECT_UNROLL_CHANNELS: usize = 4;

impl Schedule {
    /// The table: one schedule per family.
    pub fn choose(family: Family) -> Schedule {
        let (pixel_tile, channel_vectors) = match family {
            Family::Pointwise => (2, 4),
            Family::Direct | Family::Depthwise => (4, 2),
            Family::Elementwise | Family::Pool | Family::Dense => (1, 2),
            Family::Softmax | Family::Layout => (1, 1),
        };
        Schedule {
            family,
            pixel_tile,
            channel_vectors,
            unroll_taps: matches!(family, Family::Direct | Family::Depthwise),
            reduction_unroll: if family == Family::Pointwise { 4 } else { 1 },
            unroll_channels: false,
            opt_level: match family {
                Family::Pointwise | Family::Depthwise => OptLevel::None,
                _ => OptLevel::Speed,
            },
        }
    }

    /// The 1x1 GEMM schedule (the portable body of its micro-kernel strips): the 2x16 tile for
    /// every `cout`. (It used 4x8 tiles when `cout % 16 == 8`; the micro-kernel's weight packing
    /// is per 16 channels for every tier, see `loops::micro::GEMM_PACK`, so that is gone.)
    pub fn pointwise(_cout: usize) -> Schedule {
        Schedule::choose(Family::Pointwise)
    }

    /// This schedule, with tap and channel unrolling turned off when it would unroll more than
    /// [`MAX_UNROLLED_STEPS`] reduction steps (`steps` = taps x unrolled channels).
    pub fn bounded(mut self, steps: usize) -> Schedule {
        if steps > MAX_UNROLLED_STEPS {
            self.unroll_taps = false;
            self.unroll_channels = false;
        }
        self
    }

    /// The mode of a tap reduction loop.
    pub fn tap_mode(&self) -> LoopMode {
        if self.unroll_taps {
            LoopMode::Unroll
        } else {
            LoopMode::Serial
        }
    }

    /// Channels per full register tile.
    pub fn channel_tile(&self) -> usize {
        4 * self.channel_vectors
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, red) = match self.family {
            Family::Pointwise => (
                "pointwise conv (GEMM)",
                "reduction over input channels innermost",
            ),
            Family::Direct => (
                "direct conv",
                "reduction ky, kx, ci; taps clamped per border segment",
            ),
            Family::Depthwise => (
                "depthwise conv",
                "reduction ky, kx; taps clamped per border segment",
            ),
            Family::Elementwise => ("elementwise", "no reduction"),
            Family::Pool => ("global average pool", "reduction h, w"),
            Family::Dense => ("dense", "reduction over input features"),
            Family::Softmax => {
                return write!(
                    f,
                    "softmax: per row, serial max, exp, sum and divide over the last axis"
                );
            }
            Family::Layout => {
                return write!(
                    f,
                    "transpose: one serial loop per output axis, scalar copy at the permuted offset"
                );
            }
        };
        write!(
            f,
            "{name}: register tile {} px x {} ch ({} x f32x4 accumulators), {red}",
            self.pixel_tile,
            self.channel_tile(),
            self.pixel_tile * self.channel_vectors,
        )?;
        if self.unroll_taps {
            write!(f, ", taps unrolled")?;
        }
        if self.unroll_channels {
            write!(f, ", channels unrolled")?;
        }
        if self.reduction_unroll > 1 {
            write!(
                f,
                ", channel reduction unrolled x{} (+ serial remainder)",
                self.reduction_unroll
            )?;
        }
        write!(f, "; tails: channels -> vector then scalar remainder tiles")?;
        if self.pixel_tile > 1 {
            write!(f, ", pixels -> 1-px tiles")?;
        }
        write!(f, "; opt_level={}", self.opt_level)
    }
}
