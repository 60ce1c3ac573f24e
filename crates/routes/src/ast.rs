//! The syntax tree of route conditions and the values they evaluate to.

use crate::functions::Function;

/// A value produced while evaluating a condition.
///
/// Application and system properties are always strings; `$body` queries may also produce
/// numbers, booleans and `null`. Whole JSON objects or arrays are `Undefined`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A missing property, a failed conversion, or an operation on mismatched types.
    Undefined,
    /// JSON `null` (or an application property present without a value).
    Null,
    /// A boolean.
    Bool(bool),
    /// A number (never NaN: NaN results are `Undefined`).
    Number(f64),
    /// A string.
    String(String),
}

impl Value {
    /// A number, or `Undefined` for NaN (the reference represents undefined numbers as NaN).
    pub fn number(n: f64) -> Value {
        if n.is_nan() {
            Value::Undefined
        } else {
            Value::Number(n)
        }
    }

    /// Whether this is `Bool(true)`: the only value that makes a route match.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// Whether this is neither `Undefined` nor `Null`.
    pub fn is_present(&self) -> bool {
        !matches!(self, Value::Undefined | Value::Null)
    }
}

/// A prefix operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`: numbers only.
    Neg,
    /// `NOT x`: booleans only; anything else gives `Undefined`.
    Not,
}

/// A binary operator other than `AND` / `OR` (those are [`Expr::And`] / [`Expr::Or`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `||` (string concatenation)
    Concat,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `??`: the left value unless it is undefined or null, else the right value.
    Coalesce,
}

/// One step of a `$body` query path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// An object member (case-sensitive).
    Key(String),
    /// An array element.
    Index(usize),
}

/// A condition expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// An application property, looked up case-insensitively; when absent, `fallback` is
    /// evaluated instead (`$name` falls back to a system property or a `$body` query), else
    /// the value is `Undefined`.
    AppProperty {
        /// The property name as written (including any leading `$`).
        name: String,
        /// What to evaluate when the message has no such application property.
        fallback: Option<Box<Expr>>,
    },
    /// A system property (`$name` without an application property `$name`, or `{$name}`),
    /// looked up case-insensitively; the name is stored without `$`.
    SystemProperty(String),
    /// A `$body.` query into a JSON body.
    Body(Vec<PathSegment>),
    /// A built-in function call.
    Call(Function, Vec<Expr>),
    /// A prefix operator.
    Unary(UnaryOp, Box<Expr>),
    /// A binary operator.
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// `a AND b AND ...` (three-valued).
    And(Vec<Expr>),
    /// `a OR b OR ...` (three-valued).
    Or(Vec<Expr>),
}

/// Parses the part of a `$body.` query after the prefix: `name([n])*('.' name([n])*)*`, where
/// names exclude `()<>@,;:\"/[]?={}.` and whitespace.
pub(crate) fn parse_body_path(path: &str) -> Result<Vec<PathSegment>, String> {
    if path.is_empty() {
        return Err("$body query cannot be empty".to_owned());
    }
    let mut segments = Vec::new();
    for part in path.split('.') {
        let name_len = part.find('[').unwrap_or(part.len());
        let (name, mut indices) = part.split_at(name_len);
        if name.is_empty() || name.contains(is_excluded) {
            return Err(format!("invalid $body query '{path}'"));
        }
        segments.push(PathSegment::Key(name.to_owned()));
        while !indices.is_empty() {
            let index = indices
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .filter(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|(n, rest)| n.parse::<usize>().ok().map(|n| (n, rest)));
            let Some((n, rest)) = index else {
                return Err(format!("invalid $body query '{path}'"));
            };
            segments.push(PathSegment::Index(n));
            indices = rest;
        }
    }
    Ok(segments)
}

fn is_excluded(c: char) -> bool {
    matches!(
        c,
        '(' | ')' | '<' | '>' | '@' | ',' | ';' | ':' | '\\' | '"' | '/' | '[' | ']' | '?' | '='
    ) || matches!(c, '{' | '}' | '.')
        || c.is_whitespace()
}
