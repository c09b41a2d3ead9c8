//! Micro-kernel statements: the innermost tile of a hot kernel family as one loop-IR statement
//! ([`Micro`]), so that the back end can emit it as a hand-scheduled register tile (the 256- and
//! 512-bit tiers, `codegen::micro`) or as plain loop IR (the portable tier).
//!
//! ## What must hold
//! - **One meaning.** [`run`] is the meaning (the interpreter runs it); `Micro::body` is
//!   the portable expansion in ordinary loop IR, built by the lowering from the same parameters,
//!   and computes every output element with the same operations in the same order (tested
//!   against [`run`] bit for bit, like every tier).
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

/// Packing tiles per channel block of a GEMV (a GEMM strip of one pixel): each tile's panel is
/// one weight stream, and a GEMV is bound by streaming its weights, so a block reads this many
/// streams at once. The logits' 5 MB panel, read a 6 ms inference after it was last read (much
/// of it gone from L3), took 0.38, 0.25, 0.21 and 0.22 ms with 1, 2, 4 and 8 streams (a C
/// loop, medians of 40, 2026-12-02); 0.19 with any number when it was just read.
pub const GEMV_TILES: usize = 4;

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
    /// `clamp(lo, hi)` after the residual: relu6 is `(0, 6)`, relu `(0, +inf)`.
    pub clamp: Option<(f32, f32)>,
    /// 64-byte lines of the [`Slot::Prefetch`] operand (0: none): a hint with no effect on any
    /// value. The wide tiers prefetch them into L2 (`prefetcht1`), spread over the strip's
    /// register blocks, so that the next layer's weight panel arrives while this one computes
    /// (see `lower::prefetch`); the meaning and the portable tier ignore it.
    pub prefetch: usize,
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
        let prefetch = match self.prefetch {
            0 => String::new(),
            n => format!("_pf{n}"),
        };
        format!(
            "gemm_p{}_k{}_n{}_xs{}_os{}_b{}_r{}_c{}{prefetch}",
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

/// A depthwise row: `cols` output columns of one output row, all `c` channels, over the valid
/// taps `ny x nx` of the window (padding taps are not in the range: skipped, not multiplied by
/// zero). The input operand starts at the first valid tap of column 0, the weight operand at
/// that tap's weights (`w[(ky * kw + kx) * c + ch]`, unpacked).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DwRow {
    pub cols: usize,
    pub c: usize,
    /// Valid taps: rows and columns of the window.
    pub ny: usize,
    pub nx: usize,
    /// Input elements between output columns (`stride * c`) and between window rows
    /// (`width * c`).
    pub x_col: usize,
    pub x_row: usize,
    /// Weight elements between window rows (`kw * c`).
    pub w_row: usize,
    pub bias: bool,
    pub residual: bool,
    pub clamp: Option<(f32, f32)>,
    /// `None`: depthwise (output channel `ch` reads input channel `ch`). `Some(cin)`: a dense
    /// row (groups 1): every output channel sums over the `cin` input channels of each tap, the
    /// input scalar broadcast, weights `w[((ky * kw + kx) * cin + ci) * c + ch]`.
    pub dense: Option<usize>,
}

impl DwRow {
    pub fn key(&self) -> String {
        format!(
            "{}_c{}_ch{}_t{}x{}_xc{}_xr{}_wr{}_b{}_r{}_c{}",
            match self.dense {
                None => "dw".to_string(),
                Some(cin) => format!("conv{cin}"),
            },
            self.cols,
            self.c,
            self.ny,
            self.nx,
            self.x_col,
            self.x_row,
            self.w_row,
            u8::from(self.bias),
            u8::from(self.residual),
            clamp_key(self.clamp)
        )
    }

    /// The reduction steps in order (window rows, columns, then input channels of a dense
    /// row): offsets from the first valid tap in the input (of channel 0; a depthwise row adds
    /// the channel) and in the weights (add the channel).
    pub fn taps(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for i in 0..self.ny {
            for j in 0..self.nx {
                match self.dense {
                    None => out.push((i * self.x_row + j * self.c, i * self.w_row + j * self.c)),
                    Some(cin) => {
                        for ci in 0..cin {
                            let (xo, wo) = (j * cin + ci, (j * cin + ci) * self.c);
                            out.push((i * self.x_row + xo, i * self.w_row + wo));
                        }
                    }
                }
            }
        }
        out
    }

    /// Input channel offset of output channel `ch` (0 for a dense row: it broadcasts).
    pub fn x_channel(&self, ch: usize) -> usize {
        if self.dense.is_some() { 0 } else { ch }
    }
}

fn clamp_key(clamp: Option<(f32, f32)>) -> String {
    clamp.map_or("none".to_string(), |(l, h)| {
        format!("{:08x}_{:08x}", l.to_bits(), h.to_bits())
    })
}

/// What a micro-kernel computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Gemm(GemmStrip),
    Depthwise(DwRow),
}

/// Which operand of a micro-kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    X,
    W,
    Bias,
    Residual,
    Out,
    /// Memory to prefetch (a GEMM strip's [`GemmStrip::prefetch`]): never read for a value.
    Prefetch,
}

impl Slot {
    pub const ALL: [Slot; 6] = [
        Slot::X,
        Slot::W,
        Slot::Bias,
        Slot::Residual,
        Slot::Out,
        Slot::Prefetch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Slot::X => "x",
            Slot::W => "w",
            Slot::Bias => "bias",
            Slot::Residual => "res",
            Slot::Out => "out",
            Slot::Prefetch => "pf",
        }
    }
}

impl Op {
    /// A key that identifies the generated code.
    pub fn key(&self) -> String {
        match self {
            Op::Gemm(g) => g.key(),
            Op::Depthwise(d) => d.key(),
        }
    }

    /// The inclusive element range past its base that the op touches in `slot`, and whether it
    /// writes there; `None` if the op has no such operand.
    pub fn footprint(&self, slot: Slot) -> Option<(usize, usize, bool)> {
        let g = match self {
            Op::Gemm(g) => g,
            Op::Depthwise(d) => return d.footprint(slot),
        };
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
            Slot::Prefetch => match g.prefetch {
                0 => None,
                n => n.checked_mul(16).map(|e| (0, e - 1, false)),
            },
        }
    }

    /// The footprint in `slot` as rows: `(rows, stride, width)`, i.e. the elements
    /// `r * stride + j` for `r < rows`, `j < width` past the base (a GEMM strip's pixel rows);
    /// `None` where the op has no such operand or its footprint is not rows of one width. The
    /// rows lie inside [`footprint`](Op::footprint)'s range.
    pub fn footprint_rows(&self, slot: Slot) -> Option<(usize, usize, usize)> {
        let Op::Gemm(g) = self else { return None };
        match slot {
            Slot::X => Some((g.pixels, g.x_stride, g.k)),
            Slot::Residual if g.residual => Some((g.pixels, g.out_stride, g.n)),
            Slot::Out => Some((g.pixels, g.out_stride, g.n)),
            _ => None,
        }
    }

    /// Why the parameters make no valid op, if they do not.
    pub fn check(&self) -> Result<(), String> {
        let g = match self {
            Op::Gemm(g) => g,
            Op::Depthwise(d) => {
                if d.cols == 0 || d.c == 0 || d.ny == 0 || d.nx == 0 || d.dense == Some(0) {
                    return Err(format!("depthwise row has an empty extent: {}", d.key()));
                }
                return Ok(());
            }
        };
        if g.pixels == 0 || g.k == 0 || g.n == 0 {
            return Err(format!("gemm strip has an empty extent: {}", g.key()));
        }
        if g.x_stride < g.k || g.out_stride < g.n {
            return Err(format!("gemm strip rows overlap: {}", g.key()));
        }
        Ok(())
    }
}

impl DwRow {
    fn footprint(&self, slot: Slot) -> Option<(usize, usize, bool)> {
        if self.dense == Some(0) {
            return None;
        }
        let taps = self.taps();
        let &(x_last, w_last) = taps.last()?;
        match slot {
            Slot::X => (self.cols - 1)
                .checked_mul(self.x_col)?
                .checked_add(x_last)?
                .checked_add(self.x_channel(self.c - 1))
                .map(|h| (0, h, false)),
            Slot::W => w_last.checked_add(self.c - 1).map(|h| (0, h, false)),
            Slot::Bias => self.bias.then_some((0, self.c - 1, false)),
            Slot::Residual if !self.residual => None,
            Slot::Residual | Slot::Out => {
                let h = (self.cols - 1)
                    .checked_mul(self.c)?
                    .checked_add(self.c - 1)?;
                Some((0, h, slot == Slot::Out))
            }
            Slot::Prefetch => None,
        }
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

/// The meaning of a micro-kernel (the interpreter's): `get(slot, i)` reads element `base + i`
/// of an operand, `put(i, v)` writes element `base + i` of the output.
pub fn run(op: &Op, get: &dyn Fn(Slot, usize) -> f32, put: &mut dyn FnMut(usize, f32)) {
    match op {
        Op::Gemm(g) => reference(g, get, put),
        Op::Depthwise(d) => depthwise(d, get, put),
    }
}

/// The epilogue every micro-kernel applies to a finished accumulator: the residual at the
/// output element, then the clamp.
fn epilogue(acc: f32, residual: Option<f32>, clamp: Option<(f32, f32)>) -> f32 {
    let mut acc = acc;
    if let Some(r) = residual {
        acc += r;
    }
    if let Some((lo, hi)) = clamp {
        acc = min_ir(max_ir(acc, lo), hi);
    }
    acc
}

/// The meaning of a depthwise (or dense) row: taps row-major (then input channels), each one
/// fused multiply-add.
pub fn depthwise(d: &DwRow, get: &dyn Fn(Slot, usize) -> f32, put: &mut dyn FnMut(usize, f32)) {
    let taps = d.taps();
    for col in 0..d.cols {
        for ch in 0..d.c {
            let mut acc = if d.bias { get(Slot::Bias, ch) } else { 0.0 };
            for &(xo, wo) in &taps {
                let x = get(Slot::X, col * d.x_col + xo + d.x_channel(ch));
                acc = x.mul_add(get(Slot::W, wo + ch), acc);
            }
            let o = col * d.c + ch;
            let res = d.residual.then(|| get(Slot::Residual, o));
            put(o, epilogue(acc, res, d.clamp));
        }
    }
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
            let res = g.residual.then(|| get(Slot::Residual, o));
            put(o, epilogue(acc, res, g.clamp));
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
                prefetch: 0,
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
