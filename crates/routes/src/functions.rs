//! The built-in functions of the route condition language.
//!
//! Arity is checked when parsing; argument types are checked when evaluating, and a wrong
//! type yields `Undefined` (never an error). String positions and lengths count Unicode
//! scalar values.

use crate::ast::Value;

/// A built-in function. Names are case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `abs(n)`
    Abs,
    /// `exp(n)`
    Exp,
    /// `power(x, y)`
    Power,
    /// `square(n)`
    Square,
    /// `ceiling(n)`
    Ceiling,
    /// `floor(n)`
    Floor,
    /// `sign(n)`: -1, 0 or 1.
    Sign,
    /// `sqrt(n)` (undefined for negative numbers).
    Sqrt,
    /// `as_number(x)`: a number, or a string parsed as one.
    AsNumber,
    /// `is_bool(x)`
    IsBool,
    /// `is_defined(x)`
    IsDefined,
    /// `is_null(x)`
    IsNull,
    /// `is_number(x)`: finite numbers only.
    IsNumber,
    /// `is_string(x)`
    IsString,
    /// `concat(s1, s2, ...)`: two or more strings.
    Concat,
    /// `length(s)`
    Length,
    /// `lower(s)`
    Lower,
    /// `upper(s)`
    Upper,
    /// `substring(s, start)` or `substring(s, start, length)`
    Substring,
    /// `index_of(s, fragment)`: -1 when absent.
    IndexOf,
    /// `starts_with(s, prefix)` (ordinal)
    StartsWith,
    /// `ends_with(s, suffix)` (ordinal)
    EndsWith,
    /// `contains(s, fragment)` (ordinal)
    Contains,
}

const ALL: [(&str, Function); 23] = [
    ("abs", Function::Abs),
    ("exp", Function::Exp),
    ("power", Function::Power),
    ("square", Function::Square),
    ("ceiling", Function::Ceiling),
    ("floor", Function::Floor),
    ("sign", Function::Sign),
    ("sqrt", Function::Sqrt),
    ("as_number", Function::AsNumber),
    ("is_bool", Function::IsBool),
    ("is_defined", Function::IsDefined),
    ("is_null", Function::IsNull),
    ("is_number", Function::IsNumber),
    ("is_string", Function::IsString),
    ("concat", Function::Concat),
    ("length", Function::Length),
    ("lower", Function::Lower),
    ("upper", Function::Upper),
    ("substring", Function::Substring),
    ("index_of", Function::IndexOf),
    ("starts_with", Function::StartsWith),
    ("ends_with", Function::EndsWith),
    ("contains", Function::Contains),
];

impl Function {
    /// Looks a function up by name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Function> {
        ALL.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, f)| f)
    }

    /// The canonical (lower-case) name.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|&&(_, f)| f == self)
            .map_or("?", |&(n, _)| n)
    }

    /// The minimum and maximum (`None` = unbounded) number of arguments.
    pub fn arity(self) -> (usize, Option<usize>) {
        use Function::*;
        match self {
            Power | IndexOf | StartsWith | EndsWith | Contains => (2, Some(2)),
            Substring => (2, Some(3)),
            Concat => (2, None),
            _ => (1, Some(1)),
        }
    }

    /// Applies the function to evaluated arguments (whose count matches [`Function::arity`]).
    pub fn call(self, args: &[Value]) -> Value {
        use Function::*;
        match self {
            Abs => math(args, f64::abs),
            Exp => math(args, f64::exp),
            Square => math(args, |n| n * n),
            Ceiling => math(args, f64::ceil),
            Floor => math(args, f64::floor),
            Sqrt => math(args, f64::sqrt),
            Sign => math(args, |n| if n == 0.0 { 0.0 } else { n.signum() }),
            Power => match args {
                [Value::Number(x), Value::Number(y)] => Value::number(x.powf(*y)),
                _ => Value::Undefined,
            },
            AsNumber => as_number(args),
            IsBool => Value::Bool(matches!(args, [Value::Bool(_)])),
            IsDefined => Value::Bool(!matches!(args, [Value::Undefined])),
            IsNull => Value::Bool(matches!(args, [Value::Null])),
            IsNumber => Value::Bool(matches!(args, [Value::Number(n)] if n.is_finite())),
            IsString => Value::Bool(matches!(args, [Value::String(_)])),
            Concat => concat(args),
            Length => string_fn(args, |s| Value::Number(s.chars().count() as f64)),
            Lower => string_fn(args, |s| Value::String(s.to_lowercase())),
            Upper => string_fn(args, |s| Value::String(s.to_uppercase())),
            Substring => substring(args),
            IndexOf => two_strings(args, |s, f| {
                Value::Number(s.find(f).map_or(-1.0, |at| s[..at].chars().count() as f64))
            }),
            StartsWith => two_strings(args, |s, f| Value::Bool(s.starts_with(f))),
            EndsWith => two_strings(args, |s, f| Value::Bool(s.ends_with(f))),
            Contains => two_strings(args, |s, f| Value::Bool(s.contains(f))),
        }
    }
}

fn math(args: &[Value], f: fn(f64) -> f64) -> Value {
    match args {
        [Value::Number(n)] => Value::number(f(*n)),
        _ => Value::Undefined,
    }
}

fn string_fn(args: &[Value], f: impl Fn(&str) -> Value) -> Value {
    match args {
        [Value::String(s)] => f(s),
        _ => Value::Undefined,
    }
}

fn two_strings(args: &[Value], f: impl Fn(&str, &str) -> Value) -> Value {
    match args {
        [Value::String(s), Value::String(t)] => f(s, t),
        _ => Value::Undefined,
    }
}

/// Numbers pass through; strings are trimmed and parsed (`inf` / `nan` spellings refused).
fn as_number(args: &[Value]) -> Value {
    match args {
        [Value::Number(n)] => Value::Number(*n),
        [Value::String(s)] => {
            let t = s.trim();
            let numeric = t
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
            match t.parse::<f64>() {
                Ok(n) if numeric && n.is_finite() => Value::Number(n),
                _ => Value::Undefined,
            }
        }
        _ => Value::Undefined,
    }
}

fn concat(args: &[Value]) -> Value {
    let mut out = String::new();
    for arg in args {
        match arg {
            Value::String(s) => out.push_str(s),
            _ => return Value::Undefined,
        }
    }
    Value::String(out)
}

/// `substring(s, start)`: `0 <= start <= len`; `substring(s, start, n)`: `0 <= start < len`
/// and `0 <= n <= len - start` (the reference's bounds). Non-integral numbers truncate.
fn substring(args: &[Value]) -> Value {
    let (s, start, count) = match args {
        [Value::String(s), Value::Number(start)] => (s, *start, None),
        [Value::String(s), Value::Number(start), Value::Number(n)] => (s, *start, Some(*n)),
        _ => return Value::Undefined,
    };
    let len = s.chars().count() as f64;
    let valid = match count {
        None => (0.0..=len).contains(&start),
        Some(n) => (0.0..len).contains(&start) && n >= 0.0 && n <= len - start,
    };
    if !valid {
        return Value::Undefined;
    }
    let skipped = s.chars().skip(start.trunc() as usize);
    Value::String(match count {
        None => skipped.collect(),
        Some(n) => skipped.take(n.trunc() as usize).collect(),
    })
}
