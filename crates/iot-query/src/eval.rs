//! Evaluation of expressions against JSON documents (Cosmos-style undefined semantics).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::mem::discriminant;

use serde_json::{Number, Value};

use crate::ast::{ArithOp, CompareOp, Expr, Function};

/// How deep `=` descends into objects / arrays before giving up (answering "not equal").
const MAX_EQ_DEPTH: usize = 128;

impl Expr {
    /// Evaluates the expression; `None` means *undefined* (e.g. a path the document lacks, or
    /// arithmetic on non-numbers).
    ///
    /// Comparisons, `AND`, `OR`, `NOT`, `IN` and the `IS_*` functions always produce a boolean:
    /// a comparison involving an undefined value or values of different types is `false`, and
    /// `AND` / `OR` / `NOT` treat any non-boolean operand as `false`.
    pub fn eval(&self, doc: &Value) -> Option<Value> {
        self.eval_ref(doc).map(Cow::into_owned)
    }

    /// Whether the expression evaluates to `true` for `doc`.
    pub fn matches(&self, doc: &Value) -> bool {
        matches!(self.eval_ref(doc).as_deref(), Some(Value::Bool(true)))
    }

    /// Like [`Expr::eval`], but borrows literals and document values instead of cloning them.
    ///
    /// Each arm delegates to a helper so that this frame, which is on the stack once per tree
    /// level, stays small.
    fn eval_ref<'a>(&'a self, doc: &'a Value) -> Option<Cow<'a, Value>> {
        match self {
            Expr::Literal(value) => Some(Cow::Borrowed(value)),
            Expr::Path(path) => lookup(doc, path).map(Cow::Borrowed),
            Expr::Not(inner) => Some(bool_value(!inner.matches(doc))),
            Expr::Neg(inner) => eval_neg(inner, doc),
            Expr::And(items) => Some(bool_value(items.iter().all(|e| e.matches(doc)))),
            Expr::Or(items) => Some(bool_value(items.iter().any(|e| e.matches(doc)))),
            Expr::Compare { op, lhs, rhs } => Some(bool_value(eval_compare(*op, lhs, rhs, doc))),
            Expr::Arith { op, lhs, rhs } => eval_arith(*op, lhs, rhs, doc),
            Expr::In {
                expr,
                list,
                negated,
            } => Some(bool_value(eval_in(expr, list, *negated, doc))),
            Expr::Call { func, args } => eval_call(*func, args, doc),
        }
    }
}

fn eval_neg<'a>(inner: &'a Expr, doc: &'a Value) -> Option<Cow<'a, Value>> {
    negate(&*inner.eval_ref(doc)?).map(Cow::Owned)
}

fn eval_compare(op: CompareOp, lhs: &Expr, rhs: &Expr, doc: &Value) -> bool {
    match (lhs.eval_ref(doc), rhs.eval_ref(doc)) {
        (Some(l), Some(r)) => compare(op, &l, &r),
        _ => false,
    }
}

fn eval_arith<'a>(
    op: ArithOp,
    lhs: &'a Expr,
    rhs: &'a Expr,
    doc: &'a Value,
) -> Option<Cow<'a, Value>> {
    let l = lhs.eval_ref(doc)?;
    let r = rhs.eval_ref(doc)?;
    arith(op, &l, &r).map(Cow::Owned)
}

fn eval_in(expr: &Expr, list: &[Value], negated: bool, doc: &Value) -> bool {
    expr.eval_ref(doc).is_some_and(|value| {
        let found = list.iter().any(|item| compare(CompareOp::Eq, &value, item));
        found != negated
    })
}

fn eval_call<'a>(func: Function, args: &'a [Expr], doc: &'a Value) -> Option<Cow<'a, Value>> {
    let first = args.first().and_then(|e| e.eval_ref(doc));
    let second = args.get(1).and_then(|e| e.eval_ref(doc));
    apply(func, first.as_deref(), second.as_deref()).map(Cow::Owned)
}

fn bool_value<'a>(b: bool) -> Cow<'a, Value> {
    Cow::Owned(Value::Bool(b))
}

/// The value at `path` inside `doc`: object members by name, array elements by decimal index.
pub(crate) fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |value, segment| match value {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Compares two defined values; values of different JSON types never compare true.
pub(crate) fn compare(op: CompareOp, lhs: &Value, rhs: &Value) -> bool {
    match op {
        CompareOp::Eq => same_type(lhs, rhs) && json_eq(lhs, rhs, 0),
        CompareOp::Ne => same_type(lhs, rhs) && !json_eq(lhs, rhs, 0),
        CompareOp::Lt | CompareOp::Gt | CompareOp::Le | CompareOp::Ge => {
            let Some(ordering) = order(lhs, rhs) else {
                return false;
            };
            match op {
                CompareOp::Lt => ordering == Ordering::Less,
                CompareOp::Gt => ordering == Ordering::Greater,
                CompareOp::Le => ordering != Ordering::Greater,
                _ => ordering != Ordering::Less,
            }
        }
    }
}

fn same_type(a: &Value, b: &Value) -> bool {
    discriminant(a) == discriminant(b)
}

/// Ordering between two numbers or two strings (ordinal); `None` for anything else.
pub(crate) fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Numeric comparison: exact for two integers, via `f64` otherwise.
pub(crate) fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// Structural equality with numbers compared numerically (`1 = 1.0`).
fn json_eq(a: &Value, b: &Value, depth: usize) -> bool {
    if depth > MAX_EQ_DEPTH {
        return false;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w, depth + 1)))
        }
        _ => a == b,
    }
}

/// Arithmetic on two numbers (exact for integers when no overflow occurs); `None` when either
/// side is not a number or the result is not finite (e.g. division by zero).
pub(crate) fn arith(op: ArithOp, lhs: &Value, rhs: &Value) -> Option<Value> {
    let (Value::Number(x), Value::Number(y)) = (lhs, rhs) else {
        return None;
    };
    if let (Some(i), Some(j)) = (x.as_i64(), y.as_i64()) {
        let exact = match op {
            ArithOp::Add => i.checked_add(j),
            ArithOp::Sub => i.checked_sub(j),
            ArithOp::Mul => i.checked_mul(j),
            ArithOp::Div => i
                .checked_rem(j)
                .filter(|r| *r == 0)
                .and_then(|_| i.checked_div(j)),
            ArithOp::Rem => i.checked_rem(j),
        };
        if let Some(result) = exact {
            return Some(Value::from(result));
        }
    }
    let (f, g) = (x.as_f64()?, y.as_f64()?);
    let result = match op {
        ArithOp::Add => f + g,
        ArithOp::Sub => f - g,
        ArithOp::Mul => f * g,
        ArithOp::Div => f / g,
        ArithOp::Rem => f % g,
    };
    Number::from_f64(result).map(Value::Number)
}

/// Unary minus; `None` for non-numbers.
pub(crate) fn negate(value: &Value) -> Option<Value> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(negated) = n.as_i64().and_then(i64::checked_neg) {
        return Some(Value::from(negated));
    }
    Number::from_f64(-n.as_f64()?).map(Value::Number)
}

fn abs(value: &Value) -> Option<Value> {
    let Value::Number(n) = value else {
        return None;
    };
    if n.is_u64() {
        return Some(value.clone());
    }
    if let Some(abs) = n.as_i64().and_then(i64::checked_abs) {
        return Some(Value::from(abs));
    }
    Number::from_f64(n.as_f64()?.abs()).map(Value::Number)
}

/// Applies a function to its (at most two) evaluated arguments; `None` means undefined.
fn apply(func: Function, first: Option<&Value>, second: Option<&Value>) -> Option<Value> {
    let test = |pred: fn(&Value) -> bool| Some(Value::Bool(first.is_some_and(pred)));
    let strings =
        |pred: fn(&str, &str) -> bool| Some(Value::Bool(pred(first?.as_str()?, second?.as_str()?)));
    match func {
        Function::IsDefined => Some(Value::Bool(first.is_some())),
        Function::IsNull => test(Value::is_null),
        Function::IsString => test(Value::is_string),
        Function::IsNumber => test(Value::is_number),
        Function::IsBool => test(Value::is_boolean),
        Function::IsObject => test(Value::is_object),
        Function::IsArray => test(Value::is_array),
        Function::IsPrimitive => test(|v| !v.is_object() && !v.is_array()),
        Function::StartsWith => strings(|s, p| s.starts_with(p)),
        Function::EndsWith => strings(|s, p| s.ends_with(p)),
        Function::Contains => strings(|s, p| s.contains(p)),
        Function::Lower => Some(Value::String(first?.as_str()?.to_lowercase())),
        Function::Upper => Some(Value::String(first?.as_str()?.to_uppercase())),
        Function::Length => Some(Value::from(first?.as_str()?.chars().count())),
        Function::Abs => abs(first?),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn integer_arithmetic_stays_exact() {
        assert_eq!(
            arith(ArithOp::Add, &json!(i64::MAX - 1), &json!(1)),
            Some(json!(i64::MAX))
        );
        assert_eq!(arith(ArithOp::Div, &json!(7), &json!(2)), Some(json!(3.5)));
        assert_eq!(arith(ArithOp::Div, &json!(8), &json!(2)), Some(json!(4)));
        assert_eq!(arith(ArithOp::Div, &json!(1), &json!(0)), None);
        assert_eq!(arith(ArithOp::Rem, &json!(1), &json!(0)), None);
        assert_eq!(arith(ArithOp::Add, &json!("a"), &json!(1)), None);
    }

    #[test]
    fn negate_and_abs_handle_extremes() {
        assert_eq!(negate(&json!(i64::MIN)), Some(json!(9.223372036854776e18)));
        assert_eq!(abs(&json!(-3)), Some(json!(3)));
        assert_eq!(abs(&json!(u64::MAX)), Some(json!(u64::MAX)));
        assert_eq!(negate(&json!("x")), None);
    }

    #[test]
    fn equality_is_numeric_and_structural() {
        assert!(compare(CompareOp::Eq, &json!(1), &json!(1.0)));
        assert!(compare(
            CompareOp::Eq,
            &json!({"a": [1, 2.0]}),
            &json!({"a": [1.0, 2]})
        ));
        assert!(!compare(CompareOp::Eq, &json!(1), &json!("1")));
        assert!(!compare(CompareOp::Ne, &json!(1), &json!("1")));
        assert!(!compare(CompareOp::Ne, &json!(null), &json!(null)));
        assert!(!compare(CompareOp::Lt, &json!(true), &json!(false)));
        assert!(compare(CompareOp::Lt, &json!("a"), &json!("b")));
        assert!(compare(CompareOp::Ge, &json!(u64::MAX), &json!(-1)));
    }

    #[test]
    fn lookup_indexes_arrays() {
        let doc = json!({"a": {"b": [10, {"c": 1}]}});
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(lookup(&doc, &path(&["a", "b", "1", "c"])), Some(&json!(1)));
        assert_eq!(lookup(&doc, &path(&["a", "b", "x"])), None);
        assert_eq!(lookup(&doc, &path(&["a", "b", "0", "c"])), None);
    }
}
