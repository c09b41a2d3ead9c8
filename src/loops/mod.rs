//! The loop IR: one [`Kernel`] per compute node, a nest of counted loops over named f32 buffers.
//!
//! Lowering (`crate::lower`) produces it, [`verify`](fn@verify) proves it safe to run, [`interp`] runs it the
//! plain way, and `crate::codegen` translates it one-to-one into Cranelift IR. `Display` prints it
//! (what `--emit loops` shows).
//!
//! ## What a kernel is
//! - **Buffers** ([`Buffer`]): flat f32 arrays with a static shape and a [`Role`]. `Input` and
//!   `Const` buffers are only read; `Output` and `Scratch` buffers are written (and may be read).
//!   Distinct buffers never overlap in memory (the JIT's safe API enforces this with Rust borrows).
//! - **Locals** ([`Local`]): small register arrays private to one kernel invocation (accumulators
//!   of a register tile). A *vector* local holds `len / 4` f32x4 registers, a scalar local `len`
//!   f32 registers. Locals are indexed only by compile-time-known loop variables (unrolled and
//!   vector loops), so every local element is one SSA variable in codegen.
//! - **Loops** ([`Loop`]): `for v in lo..hi` with static bounds, `lo < hi`. A loop is *spatial*
//!   (iterations write disjoint outputs) or a *reduction* (iterations accumulate into locals), and
//!   is executed *serially*, *unrolled* (codegen repeats the body with `v` a constant), or as a
//!   *vector* loop: exactly 4 lanes (`hi - lo == 4`), executed as one f32x4 operation.
//! - **Statements** ([`Stmt`]): a loop, a store of an expression to a buffer or local element, or
//!   a micro-kernel ([`micro::Micro`]: a GEMM strip; its operands' footprints are proved in
//!   bounds like any access, and its body is verified as ordinary loop IR).
//! - **Indices** ([`Affine`]): `sum(coef * var) + offset` over enclosing loop variables, in
//!   elements.
//!
//! ## Buffer names
//! A buffer's name is how it prints, sigil included, so the loop IR keeps the graph's two
//! namespaces apart and adds a third that no graph name can reach:
//! - `%name`: the graph value `name` (an input, an activation, a flatten view);
//! - `@name`: the graph constant `name` (a parameter or a constant a pass derived);
//! - `@node#what`: a constant made at lowering for `node` (`@conv1#w_packed`, `@bn#bn_scale`).
//!   `#` starts a comment in the graph IR's text form, so no bare name contains it, and a name
//!   in the quoted form prints with its quotes (`@"a#b"`, `%"onnx::Conv_12"`), so no graph constant prints
//!   like a lowering constant. [`value_buffer`], [`const_buffer`] and [`lowered_buffer`] are
//!   the only places these names are made.
//!
//! A value and a constant both called `conv`, or a user constant `conv/w_packed` next to the
//! packed weights of node `conv`, are therefore distinct buffers.
//!
//! ## Invariants (checked by [`verify`](verify::verify))
//! 1. Every load and store is in bounds for every iteration of its enclosing loops, lanes
//!    included: interval arithmetic of its affine index over the static loop ranges lies within
//!    `0..len` of the buffer or local. This proof is what makes running generated code sound.
//! 2. Loop variables are bound once, used only inside their loop; bounds satisfy `lo < hi`.
//! 3. A vector loop is spatial, has exactly 4 lanes, contains no loop, and in its body every
//!    buffer index has coefficient 0 (broadcast) or 1 (contiguous) on the lane variable; stores
//!    have coefficient 1. A buffer or local stored in a vector body is read there only at the
//!    very index it is stored to, so lane-by-lane execution (the interpreter) and all-lanes-at-once
//!    execution (codegen) agree. Reductions are never vectorised (no horizontal reduce exists).
//! 4. Locals are indexed only by unrolled and vector loop variables; a vector local is accessed
//!    only inside vector loops with lane coefficient 1 and a base that is a multiple of 4; a
//!    scalar local only with lane coefficient 0.
//! 5. Buffers are stored only if their role is `Output` or `Scratch`; stores to buffers are never
//!    inside a reduction loop (reductions accumulate in locals), and each buffer store's index
//!    depends on every enclosing spatial loop variable with more than one iteration (a
//!    necessary condition for spatial iterations to write disjoint elements; the proof that
//!    they do is `verify::parallel_safe`).
//! 6. `exp` is scalar only (it is a call in codegen), so it does not appear in vector bodies.
//! 7. The top level of a kernel is a sequence of spatial serial loops. Their iterations, numbered
//!    in order, are the kernel's *work items*: a call may run any sub-range of them, which the
//!    bounds proof covers since each loop then runs a sub-range of its own bounds.
//!
//! [`verify::parallel_safe`] additionally proves (or fails to prove) that distinct work items
//! touch disjoint elements of every written buffer; only then may calls on disjoint item ranges
//! run concurrently on the same buffers (how the runtime splits a kernel across threads).
//! [`verify::item_hull`] bounds the elements a range of items accesses and
//! [`verify::ascending_windows`] proves that items access a buffer in ascending disjoint
//! windows: what the band schedule (`runtime::bands`) needs to run a consumer's items while
//! its producer's later items are still to come. The interpreter runs an item range with
//! [`interp::run_kernel_items`].
//!
//! ## Semantics of the arithmetic
//! f32 throughout. `fma(a, b, c)` is fused (`a * b + c` rounded once). `max(a, b)` is
//! `if a < b { b } else { a }` and `min(a, b)` is `if b < a { b } else { a }`: exactly the
//! compare-and-select codegen emits (one `maxps`/`minps`), and a NaN in the *first* operand comes
//! out unchanged, so `relu6(x) = min(max(x, 0), 6)` propagates a NaN `x` as the graph IR does.
//! `exp` is `f32::exp`.

pub mod interp;
pub mod micro;
pub mod print;
pub mod verify;

use std::collections::BTreeMap;
use std::ops::{Add, Mul};

use crate::graph::NameText;
pub use crate::lower::schedule::{Family, Schedule};
pub use interp::{run_kernel, run_program};
pub use verify::{verify, verify_program};

/// The lane count of a vector loop (Cranelift's x86-64 backend has 128-bit vectors only).
pub const VECTOR_WIDTH: usize = 4;

/// The most buffers a kernel may declare (`verify` rejects more). The JIT passes a call's buffer
/// pointers in a fixed array of this size on the stack, so a call allocates nothing; compute
/// kernels use at most five (input, weights, bias, residual, output).
pub const MAX_KERNEL_BUFFERS: usize = 16;

/// The buffer name of graph value `name` (see "Buffer names" in the module doc).
pub fn value_buffer(name: &str) -> String {
    format!("%{}", NameText(name))
}

/// The buffer name of graph constant `name`.
pub fn const_buffer(name: &str) -> String {
    format!("@{}", NameText(name))
}

/// The buffer name of constant `what` made at lowering for node `node`.
pub fn lowered_buffer(node: &str, what: &str) -> String {
    format!("@{}#{what}", NameText(node))
}

/// The graph value a buffer name refers to (`%x` -> `x`, `%"a:0"` -> `a:0`), if it names one;
/// the inverse of [`value_buffer`].
pub fn value_of_buffer(buffer: &str) -> Option<String> {
    let name = buffer.strip_prefix('%')?;
    match name.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        // Quoted names (those outside the bare grammar) escape only `"` and `\`.
        Some(quoted) => {
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next()? } else { c });
            }
            Some(out)
        }
        None => Some(name.to_string()),
    }
}

/// What a buffer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// An activation the kernel reads.
    Input,
    /// The activation the kernel writes.
    Output,
    /// Weights (possibly packed at lowering); read only.
    Const,
    /// Kernel-private temporary memory provided by the caller.
    Scratch,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Output => "output",
            Role::Const => "const",
            Role::Scratch => "scratch",
        }
    }

    /// Whether the kernel may store to a buffer of this role.
    pub fn writable(self) -> bool {
        matches!(self, Role::Output | Role::Scratch)
    }
}

/// A buffer parameter of a kernel. The name is the program buffer it binds to (see "Buffer
/// names" in the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub dims: Vec<usize>,
    pub role: Role,
}

impl Buffer {
    /// The number of f32 elements, or `None` on overflow.
    pub fn len(&self) -> Option<usize> {
        crate::tensor::checked_product(&self.dims)
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// A register array (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    pub name: String,
    pub len: usize,
    /// Held as f32x4 registers (accessed by vector loops only).
    pub vector: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub usize);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub usize);
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub usize);

/// `sum(coef * var) + offset`, in elements. Terms are kept sorted by variable, without zeros.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Affine {
    pub terms: Vec<(Var, i64)>,
    pub offset: i64,
}

impl Affine {
    pub fn constant(offset: i64) -> Affine {
        Affine {
            terms: Vec::new(),
            offset,
        }
    }

    pub fn var(v: Var) -> Affine {
        Affine {
            terms: vec![(v, 1)],
            offset: 0,
        }
    }

    /// The coefficient of `v` (0 if absent).
    pub fn coef(&self, v: Var) -> i64 {
        self.terms
            .iter()
            .find(|(w, _)| *w == v)
            .map_or(0, |&(_, c)| c)
    }

    fn normalize(mut self) -> Affine {
        self.terms.sort_by_key(|&(v, _)| v);
        let mut out: Vec<(Var, i64)> = Vec::with_capacity(self.terms.len());
        for (v, c) in self.terms {
            match out.last_mut() {
                Some((w, d)) if *w == v => *d = d.saturating_add(c),
                _ => out.push((v, c)),
            }
        }
        out.retain(|&(_, c)| c != 0);
        self.terms = out;
        self
    }
}

impl Add for Affine {
    type Output = Affine;
    fn add(mut self, rhs: Affine) -> Affine {
        self.terms.extend(rhs.terms);
        self.offset = self.offset.saturating_add(rhs.offset);
        self.normalize()
    }
}

impl Add<i64> for Affine {
    type Output = Affine;
    fn add(mut self, rhs: i64) -> Affine {
        self.offset = self.offset.saturating_add(rhs);
        self
    }
}

impl Mul<i64> for Affine {
    type Output = Affine;
    fn mul(mut self, rhs: i64) -> Affine {
        for t in &mut self.terms {
            t.1 = t.1.saturating_mul(rhs);
        }
        self.offset = self.offset.saturating_mul(rhs);
        self.normalize()
    }
}

impl From<Var> for Affine {
    fn from(v: Var) -> Affine {
        Affine::var(v)
    }
}

/// Where a load reads or a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mem {
    Buf(BufId),
    Local(LocalId),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub mem: Mem,
    pub index: Affine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Exp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(f32),
    Load(Access),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `a * b + c`, rounded once.
    Fma(Box<Expr>, Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn load(mem: Mem, index: Affine) -> Expr {
        Expr::Load(Access { mem, index })
    }
    pub fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma(Box::new(a), Box::new(b), Box::new(c))
    }
    pub fn plus(a: Expr, b: Expr) -> Expr {
        Expr::bin(BinOp::Add, a, b)
    }
    pub fn times(a: Expr, b: Expr) -> Expr {
        Expr::bin(BinOp::Mul, a, b)
    }
    /// `min(max(x, lo), hi)`, or just `max(x, lo)` when `hi` is `+inf` (`min(v, +inf)` is `v` for
    /// every `v`, NaN included). `relu6` is `(0, 6)`, `relu` `(0, +inf)`.
    pub fn clamp(x: Expr, (lo, hi): (f32, f32)) -> Expr {
        let low = Expr::bin(BinOp::Max, x, Expr::Const(lo));
        if hi == f32::INFINITY {
            low
        } else {
            Expr::bin(BinOp::Min, low, Expr::Const(hi))
        }
    }
    pub fn exp(x: Expr) -> Expr {
        Expr::Unary(UnOp::Exp, Box::new(x))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopKind {
    Spatial,
    Reduction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopMode {
    Serial,
    Unroll,
    /// Exactly [`VECTOR_WIDTH`] lanes as one vector operation.
    Vector,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    pub var: Var,
    pub lo: i64,
    pub hi: i64,
    pub kind: LoopKind,
    pub mode: LoopMode,
    pub body: Vec<Stmt>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Loop(Loop),
    Store {
        dst: Access,
        value: Expr,
    },
    /// A micro-kernel (see [`micro`]): one register tile computed by hand-scheduled code in the
    /// wide tiers, by its `body` in the portable one.
    Micro(Box<micro::Micro>),
}

/// The Cranelift optimisation level a kernel is compiled at: a schedule decision (see
/// `lower::schedule`), with no effect on what the kernel computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptLevel {
    /// `opt_level=none`: no e-graph pass, instructions stay in program order (codegen itself
    /// reuses addresses and loads of read-only buffers). Best for register-tiled kernels whose
    /// loop IR is already in the order that fits the 16 xmm registers.
    None,
    /// `opt_level=speed`: e-graph rewrites, GVN and loop-invariant code motion.
    #[default]
    Speed,
}

impl std::fmt::Display for OptLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptLevel::None => "none",
            OptLevel::Speed => "speed",
        })
    }
}

/// One kernel: buffers, locals, loop variables (by name, for printing) and the body.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// The graph node the kernel computes (or a tool's name for a hand-written kernel).
    pub name: String,
    /// The schedule that shaped the nest, printed with the kernel; its family says what kind of
    /// kernel this is. `None` for a kernel written by hand (tests, the FMA-peak benchmark).
    pub schedule: Option<Schedule>,
    /// Floating-point operations of one whole call: 2 per multiply-add of a convolution, 0 for
    /// the other families (counted by lowering, reported by benchmarks).
    pub flops: u64,
    /// How hard Cranelift optimises the kernel (default [`OptLevel::Speed`]).
    pub opt_level: OptLevel,
    pub buffers: Vec<Buffer>,
    pub locals: Vec<Local>,
    pub vars: Vec<String>,
    pub body: Vec<Stmt>,
    /// Every local and variable name given out, and the next suffix to try per base name, so a
    /// fresh name costs O(1) however many a kernel has (a linear scan per name made large
    /// bordered convs take minutes to lower).
    names: Names,
}

/// Fresh names for locals and loop variables: `base`, then `base1`, `base2`, ... Unique without
/// a set of every name: a base never ends in a digit (one that does gets a `_`), so a suffixed
/// name never equals another base, and suffixes of one base never repeat.
#[derive(Clone, Debug, Default, PartialEq)]
struct Names {
    next: std::collections::HashMap<String, usize>,
}

impl Names {
    fn fresh(&mut self, base: &str) -> String {
        let base = if base.ends_with(|c: char| c.is_ascii_digit()) || base.is_empty() {
            format!("{base}_")
        } else {
            base.to_string()
        };
        let k = self.next.entry(base.clone()).or_insert(0);
        let name = if *k == 0 { base } else { format!("{base}{k}") };
        *k += 1;
        name
    }
}

impl Kernel {
    pub fn new(name: impl Into<String>, schedule: Option<Schedule>) -> Kernel {
        Kernel {
            name: name.into(),
            schedule,
            flops: 0,
            opt_level: OptLevel::default(),
            buffers: Vec::new(),
            locals: Vec::new(),
            vars: Vec::new(),
            body: Vec::new(),
            names: Names::default(),
        }
    }

    pub fn add_buffer(&mut self, name: impl Into<String>, dims: Vec<usize>, role: Role) -> BufId {
        self.buffers.push(Buffer {
            name: name.into(),
            dims,
            role,
        });
        BufId(self.buffers.len() - 1)
    }

    /// A fresh local; names are made unique by suffixing (locals and variables share the
    /// names, so a printed kernel never shows one name for two things).
    pub fn add_local(&mut self, name: &str, len: usize, vector: bool) -> LocalId {
        let name = self.names.fresh(name);
        self.locals.push(Local { name, len, vector });
        LocalId(self.locals.len() - 1)
    }

    /// A fresh loop variable; names are made unique by suffixing.
    pub fn new_var(&mut self, name: &str) -> Var {
        let name = self.names.fresh(name);
        self.vars.push(name);
        Var(self.vars.len() - 1)
    }

    /// The buffer named `name`, if declared.
    pub fn buffer(&self, name: &str) -> Option<BufId> {
        self.buffers.iter().position(|b| b.name == name).map(BufId)
    }
}

/// Where a program buffer's contents come from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// A graph input, given at run time.
    Input,
    /// Computed by a kernel.
    Activation,
    /// A constant: values known at compile time (held in [`Program::constants`]).
    Const,
}

/// A whole lowered graph: kernels in topological order over program-wide named buffers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Program {
    /// Every buffer by name: its shape and kind.
    pub buffers: BTreeMap<String, (Vec<usize>, BufferKind)>,
    /// Values of the `Const` buffers (graph constants and constants packed at lowering).
    pub constants: BTreeMap<String, Vec<f32>>,
    /// Names that are views of another buffer's data (flatten): `(view, source)`.
    pub views: Vec<(String, String)>,
    pub kernels: Vec<Kernel>,
    /// The buffers of the graph inputs (`%name`), in graph order.
    pub inputs: Vec<String>,
    /// The buffers of the graph outputs (`%name`), in graph order.
    pub outputs: Vec<String>,
}

impl Program {
    /// The buffer that actually holds `name`'s data (follows views).
    pub fn storage_of<'a>(&'a self, name: &'a str) -> &'a str {
        let mut cur = name;
        // Views form chains of bounded length (each view names an earlier buffer).
        for _ in 0..=self.views.len() {
            match self.views.iter().find(|(v, _)| v == cur) {
                Some((_, src)) => cur = src,
                None => break,
            }
        }
        cur
    }
}
