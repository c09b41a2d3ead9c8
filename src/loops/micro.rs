//! Micro-kernel statements: the innermost tile of a hot kernel family as one loop-IR statement
//! ([`Micro`]), so that the back end can emit it as a hand-scheduled register tile (the 256- and
//! 512-bit tiers, `codegen::micro`) or as plain loop IR (the portable tier).
//!
//! ## What must hold
//! - **One meaning.** [`reference`] is the meaning (the interpreter runs it); `Micro::body` is
//!   the portable expansion in ordinary loop IR, built by the lowering from the same parameters,
//!   and computes every output element with the same operations in the same order (tested
//!   against [`reference`] bit for bit, like every tier).
//! - **Bounds.** Each operand is a buffer and the affine element index of its first element;
//!   [`Op::footprint`] gives the elements the op touches past that base. `loops::verify` proves
//!   `base + footprint` inside the buffer for every iteration of the enclosing loops, and also
//!   verifies the body as ordinary statements. Code for any tier touches exactly the footprint.
//! - **Per-element order (bit identity across tiers).** For output pixel `p` and channel `co`:
//!   `acc = bias[co]` (or `+0.0` without bias); `acc = fma(x[p, ci], w[ci, co], acc)` for `ci`
//!   ascending; then `acc = acc + residual[p, co]`; then `acc = max(acc, lo)`,
//!   `acc = min(acc, hi)` with the IR's select semantics (a NaN `acc` propagates). One
//!   accumulator per element, nothing reassociated.

use super::{Affine, BufId};

/// The weight packing tile of the GEMM strip: full tiles of this many output channels are laid
/// out `[tile][ci][16]`, the `cout % 16` remaining channels `[ci][rem]` after them.
pub const GEMM_PACK: usize = 16;

/// A buffer operand of a micro-kernel: the buffer and the element index of its first element.
#[derive(Clone, Debug, PartialEq)]
pub struct Operand {
    pub buf: BufId,
    pub base: Affine,
}

/// A GEMM strip: `pixels` rows of a 1x1 convolution, all output channels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmStrip {
    /// Output pixels (rows of the strip).
    pub pixels: usize,
    /// Reduction length (input channels).
    pub k: usize,
    /// Output channels.
    pub n: usize,
    /// Elements between consecutive pixels of the input.
    pub x_stride: usize,
    /// Elements between consecutive pixels of the output and the residual.
    pub out_stride: usize,
    pub bias: bool,
    pub residual: bool,
    /// `clamp(lo, hi)` after the residual: relu6 is `(0, 6)`.
    pub clamp: Option<(f32, f32)>,
}

impl GemmStrip {
    /// Element offset of weight `(ci, co)` in the packed panel (see [`GEMM_PACK`]).
    pub fn packed(&self, ci: usize, co: usize) -> usize {
        let t = GEMM_PACK;
        let full = self.n / t;
        if co / t < full {
            (co / t) * self.k * t + ci * t + co % t
        } else {
            full * self.k * t + ci * (self.n % t) + (co - full * t)
        }
    }

    /// A key that identifies the generated code (floats by their bits).
    pub fn key(&self) -> String {
        let clamp = self.clamp.map_or("none".to_string(), |(l, h)| {
            format!("{:08x}_{:08x}", l.to_bits(), h.to_bits())
        });
        format!(
            "gemm_p{}_k{}_n{}_xs{}_os{}_b{}_r{}_c{}",
            self.pixels,
            self.k,
            self.n,
            self.x_stride,
            self.out_stride,
            u8::from(self.bias),
            u8::from(self.residual),
            clamp
        )
    }
}

/// What a micro-kernel computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Gemm(GemmStrip),
}

/// Which operand of a micro-kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    X,
    W,
    Bias,
    Residual,
    Out,
}

impl Slot {
    pub const ALL: [Slot; 5] = [Slot::X, Slot::W, Slot::Bias, Slot::Residual, Slot::Out];

    pub fn name(self) -> &'static str {
        match self {
            Slot::X => "x",
            Slot::W => "w",
            Slot::Bias => "bias",
            Slot::Residual => "res",
            Slot::Out => "out",
        }
    }
}

impl Op {
    /// The inclusive element range past its base that the op touches in `slot`, and whether it
    /// writes there; `None` if the op has no such operand.
    pub fn footprint(&self, slot: Slot) -> Option<(usize, usize, bool)> {
        let Op::Gemm(g) = self;
        let rows = |stride: usize, width: usize| {
            (g.pixels - 1)
                .checked_mul(stride)
                .and_then(|v| v.checked_add(width - 1))
        };
        match slot {
            Slot::X => rows(g.x_stride, g.k).map(|h| (0, h, false)),
            Slot::W => g.k.checked_mul(g.n).map(|n| (0, n - 1, false)),
            Slot::Bias => g.bias.then_some((0, g.n - 1, false)),
            Slot::Residual if g.residual => rows(g.out_stride, g.n).map(|h| (0, h, false)),
            Slot::Residual => None,
            Slot::Out => rows(g.out_stride, g.n).map(|h| (0, h, true)),
        }
    }

    /// Why the parameters make no valid op, if they do not.
    pub fn check(&self) -> Result<(), String> {
        let Op::Gemm(g) = self;
        if g.pixels == 0 || g.k == 0 || g.n == 0 {
            return Err(format!("gemm strip has an empty extent: {}", g.key()));
        }
        if g.x_stride < g.k || g.out_stride < g.n {
            return Err(format!("gemm strip rows overlap: {}", g.key()));
        }
        Ok(())
    }
}

/// A micro-kernel statement: op, operands (in [`Slot`] order: present ones only) and the
/// portable expansion.
#[derive(Clone, Debug, PartialEq)]
pub struct Micro {
    pub op: Op,
    pub operands: Vec<(Slot, Operand)>,
    /// The same computation as ordinary loop IR (what the portable tier compiles).
    pub body: Vec<super::Stmt>,
}

impl Micro {
    pub fn operand(&self, slot: Slot) -> Option<&Operand> {
        self.operands
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, o)| o)
    }
}

/// `max` and `min` with the loop IR's select semantics (see `loops`).
fn max_ir(a: f32, b: f32) -> f32 {
    if a < b { b } else { a }
}
fn min_ir(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

/// The meaning of a GEMM strip (the interpreter's): `get(slot, i)` reads element `base + i` of an
/// operand, `put(i, v)` writes element `base + i` of the output.
pub fn reference(g: &GemmStrip, get: &dyn Fn(Slot, usize) -> f32, put: &mut dyn FnMut(usize, f32)) {
    for p in 0..g.pixels {
        for co in 0..g.n {
            let mut acc = if g.bias { get(Slot::Bias, co) } else { 0.0 };
            for ci in 0..g.k {
                acc =
                    get(Slot::X, p * g.x_stride + ci).mul_add(get(Slot::W, g.packed(ci, co)), acc);
            }
            let o = p * g.out_stride + co;
            if g.residual {
                acc += get(Slot::Residual, o);
            }
            if let Some((lo, hi)) = g.clamp {
                acc = min_ir(max_ir(acc, lo), hi);
            }
            put(o, acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_a_permutation() {
        for n in [1, 15, 16, 24, 40, 1000] {
            let g = GemmStrip {
                pixels: 1,
                k: 3,
                n,
                x_stride: 3,
                out_stride: n,
                bias: false,
                residual: false,
                clamp: None,
            };
            let mut seen = vec![false; 3 * n];
            for ci in 0..3 {
                for co in 0..n {
                    let i = g.packed(ci, co);
                    assert!(!seen[i], "n={n}: {ci},{co} -> {i} twice");
                    seen[i] = true;
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn nan_propagates_through_the_clamp_and_negative_zero_stays() {
        assert!(min_ir(max_ir(f32::NAN, 0.0), 6.0).is_nan());
        assert_eq!(
            min_ir(max_ir(-0.0, 0.0), 6.0).to_bits(),
            (-0.0f32).to_bits()
        );
        assert_eq!(min_ir(max_ir(f32::INFINITY, 0.0), 6.0), 6.0);
    }
}
