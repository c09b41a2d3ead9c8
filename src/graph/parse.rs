//! A hand-written parser for the graph IR's text form (grammar in `docs/ir.md`).
//!
//! Two steps: a lexer turns the text into tokens that remember their `line:col`, and a
//! recursive-descent reader builds the graph. Values may be used before the line that defines
//! them (so a cyclic file parses, and the verifier reports the cycle); every other problem —
//! an unknown op or attribute, a missing operand, a value defined twice or never — is an
//! [`Error::Parse`] naming the file, `line:col`, what was found and what was expected.
//!
//! The parser checks syntax and names, not types: [`verify`](super::verify()) does that.

use std::collections::HashMap;

use super::{BatchNorm, Const, ConstDef, Conv2d, Epilogue, Graph, Op, Pads, TensorType};
use crate::error::Location;
use crate::{Error, Result};

/// Parses the text form. `file` is used in error messages only.
pub fn parse(text: &str, file: &str) -> Result<Graph> {
    parse_located(text, file).map(|(graph, _)| graph)
}

/// [`parse`], also returning where each value and constant is defined, so that a later
/// verifier error can point at the line to fix ([`Locations::attach`]).
pub fn parse_located(text: &str, file: &str) -> Result<(Graph, Locations)> {
    let tokens = lex(text, file)?;
    Parser {
        tokens,
        pos: 0,
        file,
    }
    .graph()
}

/// Where the values (`%name`) and constants (`@name`) of a parsed file are defined.
#[derive(Clone, Debug, Default)]
pub struct Locations {
    file: String,
    /// Printed name -> (line, column) of its definition.
    at: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// `file:line:col` of the definition of `printed` (`%x` or `@w`), if it is in the file.
    pub fn of(&self, printed: &str) -> Option<Location> {
        let &(line, col) = self.at.get(printed)?;
        Some(Location::new(self.file.clone(), line, col))
    }

    /// Adds the definition's location to a verifier error about a value or constant of the
    /// file; other errors pass through unchanged.
    pub fn attach(&self, e: Error) -> Error {
        match e {
            Error::Verify {
                pass,
                value,
                message,
                location: None,
            } => Error::Verify {
                location: self.of(&value),
                pass,
                value,
                message,
            },
            other => other,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Value(String),
    Const(String),
    Number(String),
    Punct(char),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Value(s) => format!("`%{s}`"),
            Tok::Const(s) => format!("`@{s}`"),
            Tok::Number(s) => format!("number `{s}`"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of file".into(),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
    col: usize,
}

fn lex(text: &str, file: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let err = |line, col, message: String| Error::Parse {
        location: Location::new(file, line, col),
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let (tline, tcol) = (line, col);
        // Consumes `n` chars on the current line.
        let take_while = |i: usize, pred: &dyn Fn(char) -> bool| {
            let mut j = i;
            while j < chars.len() && pred(chars[j]) {
                j += 1;
            }
            j
        };
        let (tok, next) = match c {
            '\n' => {
                i += 1;
                line += 1;
                col = 1;
                continue;
            }
            c if c.is_whitespace() => {
                i += 1;
                col += 1;
                continue;
            }
            '#' => {
                i = take_while(i, &|c| c != '\n');
                continue;
            }
            '%' | '@' => {
                let j = take_while(i + 1, &|c| super::is_name_char(c));
                let Some(tok) = sigil_name(c, &chars[i + 1..j]) else {
                    let found = chars
                        .get(j)
                        .map_or("end of file".into(), |c| format!("`{c}`"));
                    return Err(err(
                        tline,
                        tcol + 1,
                        format!("expected a name after `{c}`, found {found}"),
                    ));
                };
                (tok, j)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let j = take_while(i, &|c| c.is_ascii_alphanumeric() || c == '_');
                (Tok::Ident(chars[i..j].iter().collect()), j)
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let j = take_while(i + 1, &|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')
                });
                (Tok::Number(chars[i..j].iter().collect()), j)
            }
            '{' | '}' | '(' | ')' | '[' | ']' | ',' | '=' | ':' => (Tok::Punct(c), i + 1),
            other => {
                return Err(err(
                    tline,
                    tcol,
                    format!("unexpected character `{}`", other.escape_debug()),
                ));
            }
        };
        col += next - i;
        i = next;
        out.push(Token {
            tok,
            line: tline,
            col: tcol,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        line,
        col,
    });
    Ok(out)
}

/// The token of a `%value` or `@constant` reference whose name is `name` (`None` if empty).
/// A quoted form (`%"onnx::Conv_12"`) would be read here (see `docs/ir.md`, "Names").
fn sigil_name(sigil: char, name: &[char]) -> Option<Tok> {
    if name.is_empty() {
        return None;
    }
    let name: String = name.iter().collect();
    Some(if sigil == '%' {
        Tok::Value(name)
    } else {
        Tok::Const(name)
    })
}

/// An operand in an argument list: a value or a constant, with where it was written.
#[derive(Clone, Debug)]
enum Operand {
    Value(String),
    Const(String),
}

#[derive(Clone, Debug)]
struct Arg {
    key: Option<String>,
    operand: Operand,
    at: (usize, usize),
}

#[derive(Clone, Debug)]
enum AttrValue {
    Number(String),
    Ident(String),
    List(Vec<String>),
}

#[derive(Clone, Debug)]
struct Attr {
    key: String,
    value: AttrValue,
    at: (usize, usize),
}

/// The generic shape of an op application before it is decoded into an [`Op`].
struct Application {
    name: String,
    at: (usize, usize),
    args: Vec<Arg>,
    attrs: Vec<Attr>,
}

struct PendingNode {
    name: String,
    op: Op,
    ty: TensorType,
    operands: Vec<(String, (usize, usize))>,
}

/// What the statements of a graph's body have declared so far.
struct Body {
    graph: Graph,
    nodes: Vec<PendingNode>,
    outputs: Option<Vec<(String, (usize, usize))>>,
    /// Where each constant and value is defined (by name, without sigil).
    const_at: HashMap<String, (usize, usize)>,
    value_at: HashMap<String, (usize, usize)>,
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    file: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn error_at(&self, at: (usize, usize), message: impl Into<String>) -> Error {
        Error::Parse {
            location: Location::new(self.file, at.0, at.1),
            message: message.into(),
        }
    }

    fn expected(&self, what: &str) -> Error {
        let t = self.peek();
        self.error_at(
            (t.line, t.col),
            format!("expected {what}, found {}", t.tok.describe()),
        )
    }

    fn punct(&mut self, c: char) -> Result<()> {
        if self.peek().tok == Tok::Punct(c) {
            self.next();
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek().tok == Tok::Punct(c) {
            self.next();
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, kw: &str) -> Result<()> {
        match &self.peek().tok {
            Tok::Ident(s) if s == kw => {
                self.next();
                Ok(())
            }
            _ => Err(self.expected(&format!("`{kw}`"))),
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, (usize, usize))> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Ident(s) => {
                self.next();
                Ok((s, (t.line, t.col)))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn usize_number(&mut self, what: &str) -> Result<usize> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Number(s) => {
                self.next();
                parse_usize(s).ok_or_else(|| {
                    self.error_at(
                        (t.line, t.col),
                        format!("expected {what} (a non-negative integer that fits in 64 bits), found `{s}`"),
                    )
                })
            }
            _ => Err(self.expected(what)),
        }
    }

    fn graph(mut self) -> Result<(Graph, Locations)> {
        self.keyword("graph")?;
        let name = match self.next() {
            Token {
                tok: Tok::Ident(s), ..
            } => s,
            t => {
                return Err(self.error_at(
                    (t.line, t.col),
                    format!("expected the graph's name, found {}", t.tok.describe()),
                ));
            }
        };
        self.punct('{')?;
        let mut body = Body {
            graph: Graph::new(name),
            nodes: Vec::new(),
            outputs: None,
            const_at: HashMap::new(),
            value_at: HashMap::new(),
        };
        loop {
            let t = self.peek().clone();
            let at = (t.line, t.col);
            match &t.tok {
                Tok::Punct('}') => {
                    self.next();
                    break;
                }
                Tok::Ident(kw) if kw == "const" => {
                    self.next();
                    self.const_decl(&mut body)?;
                }
                Tok::Ident(kw) if kw == "output" => {
                    self.next();
                    if body.outputs.is_some() {
                        return Err(self.error_at(at, "the output list is given twice"));
                    }
                    let mut list = vec![self.value_ref()?];
                    while self.eat_punct(',') {
                        list.push(self.value_ref()?);
                    }
                    body.outputs = Some(list);
                }
                Tok::Value(vname) => {
                    let vname = vname.clone();
                    self.next();
                    self.node(&mut body, vname, at)?;
                }
                _ => {
                    return Err(self.expected(
                        "a node `%name = ...`, a constant `const @name : ...`, `output`, or `}`",
                    ));
                }
            }
        }
        if self.peek().tok != Tok::Eof {
            return Err(self.expected("end of file after the graph's closing `}`"));
        }
        self.resolve(body)
    }

    /// `const @name : type (= definition)?`, after the `const` keyword.
    fn const_decl(&mut self, body: &mut Body) -> Result<()> {
        let (cname, cat) = match self.peek().clone() {
            Token {
                tok: Tok::Const(s),
                line,
                col,
            } => {
                self.next();
                (s, (line, col))
            }
            _ => return Err(self.expected("a constant name `@name`")),
        };
        self.punct(':')?;
        let ty = self.tensor_type()?;
        let def = if self.eat_punct('=') {
            let app = self.application()?;
            self.const_def(app)?
        } else {
            ConstDef::Param
        };
        if let Some(first) = body.const_at.get(&cname) {
            return Err(self.error_at(
                cat,
                format!(
                    "constant @{cname} is declared twice (first at line {})",
                    first.0
                ),
            ));
        }
        body.const_at.insert(cname.clone(), cat);
        body.graph.add_const(cname, Const { ty, def })
    }

    /// `%name = application : type`, after the value name.
    fn node(&mut self, body: &mut Body, vname: String, at: (usize, usize)) -> Result<()> {
        self.punct('=')?;
        let app = self.application()?;
        self.punct(':')?;
        let ty = self.tensor_type()?;
        let (op, operands) = self.op(app)?;
        // A map, not a scan of `nodes`: a scan made a 100k-line file take minutes.
        if let Some((first_line, _)) = body.value_at.insert(vname.clone(), at) {
            return Err(self.error_at(
                at,
                format!("value %{vname} is defined twice (first at line {first_line})"),
            ));
        }
        body.nodes.push(PendingNode {
            name: vname,
            op,
            ty,
            operands,
        });
        Ok(())
    }

    /// Draws the edges and the outputs once every node exists (so uses may come first), and
    /// records where each name is defined.
    fn resolve(&self, body: Body) -> Result<(Graph, Locations)> {
        let Body {
            mut graph,
            nodes,
            outputs,
            const_at,
            value_at,
        } = body;
        let ids: Vec<_> = nodes
            .iter()
            .map(|n| graph.add_node(n.name.clone(), n.op.clone(), n.ty.clone(), &[]))
            .collect();
        let by_name: HashMap<&str, _> = nodes
            .iter()
            .zip(&ids)
            .map(|(n, &id)| (n.name.as_str(), id))
            .collect();
        let resolve = |name: &str, at: (usize, usize)| {
            by_name
                .get(name)
                .copied()
                .ok_or_else(|| self.error_at(at, format!("use of undefined value %{name}")))
        };
        for (n, &id) in nodes.iter().zip(&ids) {
            let operands = n
                .operands
                .iter()
                .map(|(name, at)| resolve(name, *at))
                .collect::<Result<Vec<_>>>()?;
            graph.set_operands(id, &operands);
        }
        let Some(outputs) = outputs else {
            return Err(self.expected("an `output %name, ...` line before the closing `}`"));
        };
        let outputs = outputs
            .iter()
            .map(|(name, at)| resolve(name, *at))
            .collect::<Result<Vec<_>>>()?;
        graph.set_outputs(outputs);
        let mut at: HashMap<String, (usize, usize)> = const_at
            .into_iter()
            .map(|(name, pos)| (format!("@{name}"), pos))
            .collect();
        at.extend(
            value_at
                .into_iter()
                .map(|(name, pos)| (format!("%{name}"), pos)),
        );
        let locations = Locations {
            file: self.file.to_string(),
            at,
        };
        Ok((graph, locations))
    }

    fn value_ref(&mut self) -> Result<(String, (usize, usize))> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Value(s) => {
                self.next();
                Ok((s, (t.line, t.col)))
            }
            _ => Err(self.expected("a value `%name`")),
        }
    }

    /// `f32[d, d, ...]`
    fn tensor_type(&mut self) -> Result<TensorType> {
        let (dtype, at) = self.ident("a tensor type like `f32[1,224,224,3]`")?;
        if dtype != "f32" {
            return Err(self.error_at(
                at,
                format!("unsupported element type `{dtype}`: mnv2c tensors are f32"),
            ));
        }
        self.punct('[')?;
        let mut dims = vec![self.usize_number("a dimension")?];
        while self.eat_punct(',') {
            dims.push(self.usize_number("a dimension")?);
        }
        self.punct(']')?;
        Ok(TensorType::new(dims))
    }

    /// `name(args)? {attrs}?`
    fn application(&mut self) -> Result<Application> {
        let (name, at) = self.ident("an operation name")?;
        let mut args = Vec::new();
        if self.eat_punct('(') && !self.eat_punct(')') {
            loop {
                let t = self.peek().clone();
                let key = match (&t.tok, self.tokens.get(self.pos + 1).map(|t| &t.tok)) {
                    (Tok::Ident(k), Some(Tok::Punct('='))) => {
                        let k = k.clone();
                        self.next();
                        self.next();
                        Some(k)
                    }
                    _ => None,
                };
                let t = self.peek().clone();
                let operand = match t.tok {
                    Tok::Value(s) => Operand::Value(s),
                    Tok::Const(s) => Operand::Const(s),
                    _ => return Err(self.expected("an operand `%value` or `@constant`")),
                };
                self.next();
                args.push(Arg {
                    key,
                    operand,
                    at: (t.line, t.col),
                });
                if self.eat_punct(')') {
                    break;
                }
                self.punct(',').map_err(|_| self.expected("`,` or `)`"))?;
            }
        }
        let attrs = self.attributes()?;
        Ok(Application {
            name,
            at,
            args,
            attrs,
        })
    }

    /// `{key = value, ...}` after an op application, if present.
    fn attributes(&mut self) -> Result<Vec<Attr>> {
        let mut attrs: Vec<Attr> = Vec::new();
        if self.eat_punct('{') && !self.eat_punct('}') {
            loop {
                let (key, kat) = self.ident("an attribute name")?;
                if attrs.iter().any(|a| a.key == key) {
                    return Err(self.error_at(kat, format!("attribute `{key}` is given twice")));
                }
                self.punct('=')?;
                let value = match self.peek().tok.clone() {
                    Tok::Number(s) => {
                        self.next();
                        AttrValue::Number(s)
                    }
                    Tok::Ident(s) => {
                        self.next();
                        AttrValue::Ident(s)
                    }
                    Tok::Punct('[') => {
                        self.next();
                        let mut items = Vec::new();
                        loop {
                            match self.peek().tok.clone() {
                                Tok::Number(s) => {
                                    self.next();
                                    items.push(s)
                                }
                                _ => return Err(self.expected("a number in the list")),
                            }
                            if self.eat_punct(']') {
                                break;
                            }
                            self.punct(',').map_err(|_| self.expected("`,` or `]`"))?;
                        }
                        AttrValue::List(items)
                    }
                    _ => return Err(self.expected("an attribute value (number, name or list)")),
                };
                attrs.push(Attr {
                    key,
                    value,
                    at: kat,
                });
                if self.eat_punct('}') {
                    break;
                }
                self.punct(',').map_err(|_| self.expected("`,` or `}`"))?;
            }
        }
        Ok(attrs)
    }

    /// Decodes an application into an op and its value operands.
    #[allow(clippy::type_complexity)]
    fn op(&self, app: Application) -> Result<(Op, Vec<(String, (usize, usize))>)> {
        let mut d = Decoder::new(self, &app);
        let op = match app.name.as_str() {
            "input" => Op::Input,
            "conv2d" => {
                let x = d.value("the input value")?;
                let weight = d.constant("the weight constant")?;
                let bias = d.optional_constant("bias")?;
                let residual = d.optional_value("residual")?;
                let stride = d.pair("stride")?;
                let pads = d.list::<4>("pads", "[top, bottom, left, right]")?;
                let groups = d.integer("groups")?;
                let epilogue = d.epilogue()?;
                if epilogue.has_residual() != residual.is_some() {
                    return Err(self.error_at(
                        app.at,
                        format!(
                            "conv2d with epilogue `{}` {} a `residual = %value` operand",
                            epilogue.name(),
                            if epilogue.has_residual() {
                                "needs"
                            } else {
                                "must not have"
                            }
                        ),
                    ));
                }
                d.operands.push(x);
                d.operands.extend(residual);
                Op::Conv2d(Conv2d {
                    weight,
                    bias,
                    stride,
                    pads: Pads {
                        top: pads[0],
                        bottom: pads[1],
                        left: pads[2],
                        right: pads[3],
                    },
                    groups,
                    epilogue,
                })
            }
            "batch_norm" => {
                let x = d.value("the input value")?;
                d.operands.push(x);
                Op::BatchNorm(BatchNorm {
                    gamma: d.constant("gamma")?,
                    beta: d.constant("beta")?,
                    mean: d.constant("the moving mean")?,
                    variance: d.constant("the moving variance")?,
                    epsilon: d.float("epsilon")?,
                })
            }
            "relu6" | "softmax" | "global_avg_pool" | "flatten" => {
                let x = d.value("the input value")?;
                d.operands.push(x);
                match app.name.as_str() {
                    "relu6" => Op::Relu6,
                    "softmax" => Op::Softmax,
                    "global_avg_pool" => Op::GlobalAvgPool,
                    _ => Op::Flatten,
                }
            }
            "add" => {
                let a = d.value("the first operand")?;
                let b = d.value("the second operand")?;
                d.operands.extend([a, b]);
                Op::Add
            }
            other => {
                return Err(self.error_at(
                    app.at,
                    format!(
                        "unknown operation `{other}` (expected one of input, conv2d, batch_norm, relu6, add, global_avg_pool, flatten, softmax)"
                    ),
                ));
            }
        };
        d.finish()?;
        Ok((op, d.operands))
    }

    fn const_def(&self, app: Application) -> Result<ConstDef> {
        let mut d = Decoder::new(self, &app);
        let def = match app.name.as_str() {
            "fold_bn_weight" => ConstDef::FoldBnWeight {
                weight: d.constant("the weight constant")?,
                gamma: d.constant("gamma")?,
                variance: d.constant("the moving variance")?,
                epsilon: d.float("epsilon")?,
            },
            "fold_bn_bias" => ConstDef::FoldBnBias {
                gamma: d.constant("gamma")?,
                beta: d.constant("beta")?,
                mean: d.constant("the moving mean")?,
                variance: d.constant("the moving variance")?,
                bias: d.optional_constant("bias")?,
                epsilon: d.float("epsilon")?,
            },
            other => {
                return Err(self.error_at(
                    app.at,
                    format!(
                        "unknown constant definition `{other}` (expected fold_bn_weight or fold_bn_bias)"
                    ),
                ));
            }
        };
        d.finish()?;
        Ok(def)
    }
}

/// Takes an application apart: positional arguments in order, keyword arguments and attributes
/// by name, and complains about anything left over.
struct Decoder<'p, 'a> {
    parser: &'p Parser<'a>,
    op: String,
    at: (usize, usize),
    positional: std::collections::VecDeque<Arg>,
    keyed: Vec<Arg>,
    attrs: Vec<Attr>,
    operands: Vec<(String, (usize, usize))>,
}

impl<'p, 'a> Decoder<'p, 'a> {
    fn new(parser: &'p Parser<'a>, app: &Application) -> Self {
        let (keyed, positional): (Vec<Arg>, Vec<Arg>) =
            app.args.iter().cloned().partition(|a| a.key.is_some());
        Decoder {
            parser,
            op: app.name.clone(),
            at: app.at,
            positional: positional.into(),
            keyed,
            attrs: app.attrs.clone(),
            operands: Vec::new(),
        }
    }

    fn missing(&self, what: &str) -> Error {
        self.parser
            .error_at(self.at, format!("`{}` is missing {what}", self.op))
    }

    fn value(&mut self, what: &str) -> Result<(String, (usize, usize))> {
        match self.positional.pop_front() {
            Some(Arg {
                operand: Operand::Value(v),
                at,
                ..
            }) => Ok((v, at)),
            Some(Arg {
                operand: Operand::Const(c),
                at,
                ..
            }) => Err(self.parser.error_at(
                at,
                format!(
                    "expected {what} of `{}` (a `%value`), found `@{c}`",
                    self.op
                ),
            )),
            None => Err(self.missing(what)),
        }
    }

    fn constant(&mut self, what: &str) -> Result<String> {
        match self.positional.pop_front() {
            Some(Arg {
                operand: Operand::Const(c),
                ..
            }) => Ok(c),
            Some(Arg {
                operand: Operand::Value(v),
                at,
                ..
            }) => Err(self.parser.error_at(
                at,
                format!(
                    "expected {what} of `{}` (a `@constant`), found `%{v}`",
                    self.op
                ),
            )),
            None => Err(self.missing(what)),
        }
    }

    fn take_keyed(&mut self, key: &str) -> Option<Arg> {
        let i = self
            .keyed
            .iter()
            .position(|a| a.key.as_deref() == Some(key))?;
        Some(self.keyed.remove(i))
    }

    fn optional_constant(&mut self, key: &str) -> Result<Option<String>> {
        match self.take_keyed(key) {
            None => Ok(None),
            Some(Arg {
                operand: Operand::Const(c),
                ..
            }) => Ok(Some(c)),
            Some(Arg { at, .. }) => Err(self.parser.error_at(
                at,
                format!("`{key}` of `{}` must be a `@constant`", self.op),
            )),
        }
    }

    fn optional_value(&mut self, key: &str) -> Result<Option<(String, (usize, usize))>> {
        match self.take_keyed(key) {
            None => Ok(None),
            Some(Arg {
                operand: Operand::Value(v),
                at,
                ..
            }) => Ok(Some((v, at))),
            Some(Arg { at, .. }) => Err(self
                .parser
                .error_at(at, format!("`{key}` of `{}` must be a `%value`", self.op))),
        }
    }

    fn attr(&mut self, key: &str) -> Option<Attr> {
        let i = self.attrs.iter().position(|a| a.key == key)?;
        Some(self.attrs.remove(i))
    }

    fn required_attr(&mut self, key: &str) -> Result<Attr> {
        self.attr(key)
            .ok_or_else(|| self.missing(&format!("the attribute `{key}`")))
    }

    fn integer(&mut self, key: &str) -> Result<usize> {
        let a = self.required_attr(key)?;
        match &a.value {
            AttrValue::Number(s) => parse_usize(s),
            _ => None,
        }
        .ok_or_else(|| {
            self.parser
                .error_at(a.at, format!("`{key}` must be a non-negative integer"))
        })
    }

    fn float(&mut self, key: &str) -> Result<f32> {
        let a = self.required_attr(key)?;
        match &a.value {
            AttrValue::Number(s) => s.parse::<f32>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            self.parser
                .error_at(a.at, format!("`{key}` must be a number"))
        })
    }

    fn list<const N: usize>(&mut self, key: &str, form: &str) -> Result<[usize; N]> {
        let a = self.required_attr(key)?;
        let bad = || {
            self.parser.error_at(
                a.at,
                format!("`{key}` must be a list of {N} non-negative integers {form}"),
            )
        };
        let AttrValue::List(items) = &a.value else {
            return Err(bad());
        };
        let values: Vec<usize> = items
            .iter()
            .map(|s| parse_usize(s))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        values.try_into().map_err(|_| bad())
    }

    fn pair(&mut self, key: &str) -> Result<[usize; 2]> {
        self.list::<2>(key, "[vertical, horizontal]")
    }

    fn epilogue(&mut self) -> Result<Epilogue> {
        let Some(a) = self.attr("epilogue") else {
            return Ok(Epilogue::None);
        };
        match &a.value {
            AttrValue::Ident(s) => Epilogue::from_name(s),
            _ => None,
        }
        .ok_or_else(|| {
            self.parser.error_at(
                a.at,
                "`epilogue` must be one of none, relu6, add, add_relu6",
            )
        })
    }

    /// Fails on any argument or attribute that was not taken.
    fn finish(&mut self) -> Result<()> {
        if let Some(a) = self.positional.front().or(self.keyed.first()) {
            let what = match &a.key {
                Some(k) => format!("unexpected argument `{k}` for `{}`", self.op),
                None => format!("too many operands for `{}`", self.op),
            };
            return Err(self.parser.error_at(a.at, what));
        }
        if let Some(a) = self.attrs.first() {
            return Err(self.parser.error_at(
                a.at,
                format!("unknown attribute `{}` for `{}`", a.key, self.op),
            ));
        }
        Ok(())
    }
}

fn parse_usize(s: &str) -> Option<usize> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}
