//! The printer of the graph IR's text form (`impl Display for Graph`).
//!
//! The grammar is in `docs/ir.md`; the parser in `parse.rs` reads exactly what this prints, so
//! `parse(print(g)) == g`. Constants come first in declaration order, then the nodes in
//! topological order (ties by creation order), then the output list. A graph with a cycle still
//! prints (nodes in creation order), so the verifier's errors can be shown next to it.

use std::fmt::{self, Display, Formatter, Write};

use super::{Const, ConstDef, Graph, NameText, Op};

/// A value as the text form writes it: `%name`, or `%"name"` when the name is not bare.
struct V<'a>(&'a str);

impl Display for V<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", NameText(self.0))
    }
}

/// A constant as the text form writes it: `@name` or `@"name"`.
struct C<'a>(&'a str);

impl Display for C<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", NameText(self.0))
    }
}

impl Display for Graph {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        writeln!(f, "graph {} {{", self.name)?;
        for (name, c) in self.consts() {
            writeln!(f, "  const {} : {}{}", C(name), c.ty, ConstDefText(c))?;
        }
        let order = self
            .topo_order()
            .unwrap_or_else(|_| self.node_ids().collect());
        for id in order {
            let node = self.node(id);
            let operands: Vec<String> = self
                .operands(id)
                .into_iter()
                .map(|o| V(&self.node(o).name).to_string())
                .collect();
            writeln!(
                f,
                "  {} = {} : {}",
                V(&node.name),
                OpText(&node.op, &operands),
                node.ty
            )?;
        }
        let outputs: Vec<String> = self
            .outputs()
            .iter()
            .map(|&o| V(&self.node(o).name).to_string())
            .collect();
        writeln!(f, "  output {}", outputs.join(", "))?;
        writeln!(f, "}}")
    }
}

/// The ` = definition` suffix of a constant declaration (empty for a parameter).
struct ConstDefText<'a>(&'a Const);

impl Display for ConstDefText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.0.def {
            ConstDef::Param => Ok(()),
            ConstDef::FoldBnWeight {
                weight,
                gamma,
                variance,
                epsilon,
            } => write!(
                f,
                " = fold_bn_weight({}, {}, {}) {{epsilon = {epsilon:?}}}",
                C(weight),
                C(gamma),
                C(variance)
            ),
            ConstDef::FoldBnBias {
                bias,
                gamma,
                beta,
                mean,
                variance,
                epsilon,
            } => {
                write!(
                    f,
                    " = fold_bn_bias({}, {}, {}, {}",
                    C(gamma),
                    C(beta),
                    C(mean),
                    C(variance)
                )?;
                if let Some(b) = bias {
                    write!(f, ", bias = {}", C(b))?;
                }
                write!(f, ") {{epsilon = {epsilon:?}}}")
            }
            ConstDef::ScaleWeight { weight, scale } => {
                write!(f, " = scale_weight(@{weight}) {{scale = {scale:?}}}")
            }
            ConstDef::ScaleBias {
                weight,
                bias,
                offset,
            } => {
                write!(f, " = scale_bias(@{weight}")?;
                if let Some(b) = bias {
                    write!(f, ", bias = @{b}")?;
                }
                write!(f, ") {{offset = {offset:?}}}")
            }
        }
    }
}

/// `mnemonic(operands) {attrs}` of a node.
struct OpText<'a>(&'a Op, &'a [String]);

impl Display for OpText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let OpText(op, operands) = *self;
        f.write_str(op.mnemonic())?;
        if *op == Op::Input {
            return Ok(());
        }
        // Positional value operands, except a conv's residual, which is named.
        let mut args: Vec<String> = Vec::new();
        let mut attrs = String::new();
        match op {
            Op::Conv2d(c) => {
                args.extend(operands.first().cloned());
                args.push(C(&c.weight).to_string());
                if let Some(b) = &c.bias {
                    args.push(format!("bias = {}", C(b)));
                }
                if let Some(r) = operands.get(1) {
                    args.push(format!("residual = {r}"));
                }
                let p = c.pads;
                write!(
                    attrs,
                    "stride = [{}, {}], pads = [{}, {}, {}, {}], groups = {}",
                    c.stride[0], c.stride[1], p.top, p.bottom, p.left, p.right, c.groups
                )?;
                if c.epilogue.name() != "none" {
                    write!(attrs, ", epilogue = {}", c.epilogue.name())?;
                }
            }
            Op::BatchNorm(b) => {
                args.extend(operands.iter().cloned());
                for name in [&b.gamma, &b.beta, &b.mean, &b.variance] {
                    args.push(C(name).to_string());
                }
                write!(attrs, "epsilon = {:?}", b.epsilon)?;
            }
            Op::Transpose(perm) => {
                args.extend(operands.iter().cloned());
                let items: Vec<String> = perm.iter().map(usize::to_string).collect();
                write!(attrs, "perm = [{}]", items.join(", "))?;
            }
            Op::Pad(p) => {
                args.extend(operands.iter().cloned());
                write!(
                    attrs,
                    "pads = [{}, {}, {}, {}]",
                    p.top, p.bottom, p.left, p.right
                )?;
            }
            Op::Dense(d) => {
                args.extend(operands.first().cloned());
                args.push(C(&d.weight).to_string());
                if let Some(b) = &d.bias {
                    args.push(format!("bias = {}", C(b)));
                }
            }
            Op::ScaleOffset(so) => {
                args.extend(operands.iter().cloned());
                write!(attrs, "scale = {:?}, offset = {:?}", so.scale, so.offset)?;
            }
            _ => args.extend(operands.iter().cloned()),
        }
        write!(f, "({})", args.join(", "))?;
        if !attrs.is_empty() {
            write!(f, " {{{attrs}}}")?;
        }
        Ok(())
    }
}
