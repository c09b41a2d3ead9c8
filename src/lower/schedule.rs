//! Schedules: how a kernel's loops are tiled, ordered, vectorised and unrolled, chosen by a small
//! table from the op's shape. The algorithm (what a kernel computes) lives in the kernel family
//! files; a [`Schedule`] only decides the shape of the nest, and is printed with the kernel.
//!
//! ## The register tile
//! Every compute kernel is a set of *register tiles*: `pixels x channels` output elements whose
//! accumulators live in locals (registers) across the reduction loops, then are stored once with
//! the epilogue applied. Channels are split into f32x4 vectors: a tile holds `channel_vectors`
//! vectors (`4 * channel_vectors` channels) for each of `pixel_tile` pixels, i.e.
//! `pixel_tile * channel_vectors` f32x4 accumulators. The 1x1 convolution's 4x8 tile (4 pixels x
//! 8 channels, 8 accumulators, 2 weight vectors and 1 broadcast: 11 of the 16 xmm registers) is
//! the micro-kernel shape `cranelift-notes.md` measured as the fastest that never spills. Its
//! channel reduction is not unrolled: unrolling it by 2 (with a remainder loop) measured slower
//! here at `opt_level=speed` (28-31 against 35-37 GFLOP/s on 1x1 convs of MobileNetV2 shapes,
//! `cargo run --release --example emit_kernels -- bench`), as the e-graph pass issues the loads
//! of both steps first.
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

use crate::loops::{LoopMode, OptLevel};

/// The kernel family a schedule is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// The Cranelift optimisation level of the family's kernels.
    pub opt_level: OptLevel,
}

impl Schedule {
    /// The table: one schedule per family.
    pub fn choose(family: Family) -> Schedule {
        let (pixel_tile, channel_vectors) = match family {
            Family::Pointwise => (4, 2),
            Family::Direct | Family::Depthwise => (4, 2),
            Family::Elementwise | Family::Pool => (1, 2),
            Family::Softmax => (1, 1),
        };
        Schedule {
            family,
            pixel_tile,
            channel_vectors,
            unroll_taps: matches!(family, Family::Direct | Family::Depthwise),
            reduction_unroll: if family == Family::Pointwise { 4 } else { 1 },
            opt_level: match family {
                Family::Pointwise | Family::Depthwise => OptLevel::None,
                _ => OptLevel::Speed,
            },
        }
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
            Family::Softmax => {
                return write!(
                    f,
                    "softmax: per row, serial max, exp, sum and divide over the last axis"
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
        write!(f, "; opt_level={}", self.opt_level.cranelift_name())
    }
}
