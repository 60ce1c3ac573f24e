//! Evaluates conditions against a message; the semantics are described in the crate docs.
//! They are dynamically typed where the reference compiles conditions with static types
//! (and refuses, say, `'a' + 1` when compiling): mismatches here evaluate to `undefined`.

use std::cell::OnceCell;
use std::cmp::Ordering;

use serde_json::Value as Json;

use crate::ast::{BinaryOp, Expr, PathSegment, UnaryOp, Value};
use crate::message::{Message, query_json};

/// Evaluates expressions against one message, parsing its body at most once.
pub(crate) struct Evaluator<'m, 'a> {
    msg: &'m Message<'a>,
    source_path: String,
    body: OnceCell<Option<Json>>,
}

impl<'m, 'a> Evaluator<'m, 'a> {
    pub(crate) fn new(msg: &'m Message<'a>) -> Self {
        Evaluator {
            msg,
            source_path: msg.source.path(),
            body: OnceCell::new(),
        }
    }

    /// The message's source path (see [`crate::Source::path`]).
    pub(crate) fn source_path(&self) -> &str {
        &self.source_path
    }

    pub(crate) fn eval(&self, expr: &Expr) -> Value {
        match expr {
            Expr::Literal(v) => v.clone(),
            Expr::AppProperty { name, fallback } => match self.msg.app_property(name) {
                Some(v) => v,
                None => fallback
                    .as_deref()
                    .map_or(Value::Undefined, |f| self.eval(f)),
            },
            Expr::SystemProperty(name) => self.msg.system_property(name),
            Expr::Body(path) => self.body_query(path),
            Expr::Call(function, args) => {
                let values: Vec<Value> = args.iter().map(|a| self.eval(a)).collect();
                function.call(&values)
            }
            Expr::Unary(op, inner) => unary(*op, self.eval(inner)),
            Expr::Binary(op, l, r) => binary(*op, self.eval(l), self.eval(r)),
            Expr::And(items) => self.logic(items, false),
            Expr::Or(items) => self.logic(items, true),
        }
    }

    fn body_query(&self, path: &[PathSegment]) -> Value {
        match self.body.get_or_init(|| self.msg.json_body()) {
            Some(json) => query_json(json, path),
            None => Value::Undefined,
        }
    }

    /// `AND` (`dominant = false`) or `OR` (`dominant = true`) over `items`: the dominant value
    /// wins outright; otherwise any non-boolean makes the result `Undefined`.
    fn logic(&self, items: &[Expr], dominant: bool) -> Value {
        let mut unknown = false;
        for item in items {
            match self.eval(item) {
                Value::Bool(b) if b == dominant => return Value::Bool(dominant),
                Value::Bool(_) => {}
                _ => unknown = true,
            }
        }
        if unknown {
            Value::Undefined
        } else {
            Value::Bool(!dominant)
        }
    }
}

fn unary(op: UnaryOp, v: Value) -> Value {
    match (op, v) {
        (UnaryOp::Neg, Value::Number(n)) => Value::number(-n),
        (UnaryOp::Not, Value::Bool(b)) => Value::Bool(!b),
        _ => Value::Undefined,
    }
}

/// Applies a binary operator to two evaluated operands.
pub(crate) fn binary(op: BinaryOp, l: Value, r: Value) -> Value {
    use BinaryOp::*;
    match op {
        Coalesce => {
            if l.is_present() {
                l
            } else {
                r
            }
        }
        Concat => match (l, r) {
            (Value::String(mut a), Value::String(b)) => {
                a.push_str(&b);
                Value::String(a)
            }
            _ => Value::Undefined,
        },
        Mul | Div | Mod | Add | Sub => match (l, r) {
            (Value::Number(a), Value::Number(b)) => Value::number(match op {
                Mul => a * b,
                Div => a / b,
                Mod => a % b,
                Add => a + b,
                _ => a - b,
            }),
            _ => Value::Undefined,
        },
        Lt | Le | Gt | Ge | Eq | Ne => compare(op, &l, &r),
    }
}

fn compare(op: BinaryOp, l: &Value, r: &Value) -> Value {
    let ordering = match (l, r) {
        (Value::Number(a), Value::Number(b)) => a.partial_cmp(b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        _ => None,
    };
    let Some(ordering) = ordering else {
        return Value::Undefined;
    };
    Value::Bool(match op {
        BinaryOp::Lt => ordering.is_lt(),
        BinaryOp::Le => ordering.is_le(),
        BinaryOp::Gt => ordering.is_gt(),
        BinaryOp::Ge => ordering.is_ge(),
        BinaryOp::Eq => ordering.is_eq(),
        _ => ordering.is_ne(),
    })
}

impl Expr {
    /// Evaluates this condition against `msg`.
    pub fn evaluate(&self, msg: &Message<'_>) -> Value {
        Evaluator::new(msg).eval(self)
    }
}
