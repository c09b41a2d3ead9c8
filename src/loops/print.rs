//! The text form of the loop IR (what `--emit loops` shows): Halide/TVM-like nested loops, each
//! marked spatial or reduction and serial, unrolled or vector, with affine indices spelled out.
//! Buffers print by their name, which is their printed reference (see "Buffer names" in the
//! module doc of `loops`): `%value`, `@constant`, `@node#what` for a constant made at lowering.

use std::fmt::{self, Display, Formatter, Write};

use super::{Affine, BinOp, Expr, Kernel, LoopKind, LoopMode, Mem, Program, Stmt, UnOp};

impl Display for Kernel {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "kernel \"{}\"", self.name)?;
        match &self.schedule {
            Some(s) => writeln!(f, "  schedule: {s}")?,
            None => writeln!(f, "  schedule: written by hand")?,
        }
        for b in &self.buffers {
            let dims: Vec<String> = b.dims.iter().map(|d| d.to_string()).collect();
            writeln!(
                f,
                "  {:<7}{}: f32[{}]",
                b.role.name(),
                b.name,
                dims.join(",")
            )?;
        }
        for l in &self.locals {
            if l.vector {
                writeln!(f, "  local  {}: f32x4[{}]", l.name, l.len / 4)?;
            } else {
                writeln!(f, "  local  {}: f32[{}]", l.name, l.len)?;
            }
        }
        let mut out = String::new();
        self.stmts(&self.body, 1, &mut out)?;
        f.write_str(&out)
    }
}

impl Kernel {
    fn var_name(&self, v: super::Var) -> &str {
        self.vars.get(v.0).map_or("?", String::as_str)
    }

    fn stmts(&self, body: &[Stmt], depth: usize, out: &mut String) -> fmt::Result {
        let pad = "  ".repeat(depth);
        for s in body {
            match s {
                Stmt::Loop(l) => {
                    let kind = match l.kind {
                        LoopKind::Spatial => "spatial",
                        LoopKind::Reduction => "reduce",
                    };
                    let mode = match l.mode {
                        LoopMode::Serial => "",
                        LoopMode::Unroll => " unroll",
                        LoopMode::Vector => " vector4",
                    };
                    writeln!(
                        out,
                        "{pad}for {} in {}..{} ({kind}{mode}) {{",
                        self.var_name(l.var),
                        l.lo,
                        l.hi
                    )?;
                    self.stmts(&l.body, depth + 1, out)?;
                    writeln!(out, "{pad}}}")?;
                }
                Stmt::Store { dst, value } => {
                    writeln!(
                        out,
                        "{pad}{} = {}",
                        self.access(dst.mem, &dst.index),
                        self.expr(value)
                    )?;
                }
            }
        }
        Ok(())
    }

    fn access(&self, mem: Mem, idx: &Affine) -> String {
        let name = match mem {
            Mem::Buf(b) => self
                .buffers
                .get(b.0)
                .map_or("?".to_string(), |b| b.name.clone()),
            Mem::Local(l) => self
                .locals
                .get(l.0)
                .map_or("?".to_string(), |l| l.name.clone()),
        };
        format!("{name}[{}]", self.affine(idx))
    }

    fn affine(&self, a: &Affine) -> String {
        let mut s = String::new();
        for &(v, c) in &a.terms {
            let name = self.var_name(v);
            let (sign, mag) = if c < 0 {
                ("-", c.unsigned_abs())
            } else {
                ("+", c.unsigned_abs())
            };
            if s.is_empty() {
                if sign == "-" {
                    s.push('-');
                }
            } else {
                s.push_str(&format!(" {sign} "));
            }
            if mag == 1 {
                s.push_str(name);
            } else {
                s.push_str(&format!("{mag}*{name}"));
            }
        }
        if s.is_empty() {
            return a.offset.to_string();
        }
        if a.offset > 0 {
            s.push_str(&format!(" + {}", a.offset));
        } else if a.offset < 0 {
            s.push_str(&format!(" - {}", a.offset.unsigned_abs()));
        }
        s
    }

    fn expr(&self, e: &Expr) -> String {
        match e {
            Expr::Const(c) => format!("{c:?}"),
            Expr::Load(a) => self.access(a.mem, &a.index),
            Expr::Unary(UnOp::Exp, a) => format!("exp({})", self.expr(a)),
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a), self.expr(b));
                match op {
                    BinOp::Add => format!("({a} + {b})"),
                    BinOp::Sub => format!("({a} - {b})"),
                    BinOp::Mul => format!("({a} * {b})"),
                    BinOp::Div => format!("({a} / {b})"),
                    BinOp::Max => format!("max({a}, {b})"),
                    BinOp::Min => format!("min({a}, {b})"),
                }
            }
            Expr::Fma(a, b, c) => {
                format!("fma({}, {}, {})", self.expr(a), self.expr(b), self.expr(c))
            }
        }
    }
}

impl Display for Program {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "program")?;
        writeln!(f, "  inputs: {}", list(&self.inputs))?;
        writeln!(f, "  outputs: {}", list(&self.outputs))?;
        for (view, src) in &self.views {
            writeln!(f, "  view {view} = {src}")?;
        }
        for k in &self.kernels {
            writeln!(f)?;
            write!(f, "{k}")?;
        }
        Ok(())
    }
}

fn list(names: &[String]) -> String {
    names.join(", ")
}
