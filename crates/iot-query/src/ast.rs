//! The syntax tree of a query.

use serde_json::Value;

/// A parsed `SELECT ... FROM ... [WHERE ...] [GROUP BY ...]` query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What to return for each matching document (or group).
    pub select: Select,
    /// The collection queried.
    pub source: Source,
    /// The `WHERE` condition, if any.
    pub filter: Option<Expr>,
    /// The `GROUP BY` property path (its segments), if any.
    pub group_by: Option<Vec<String>>,
}

/// The collection a query reads (`FROM ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `devices`: device twins.
    Devices,
    /// `devices.modules`: module twins.
    Modules,
    /// `devices.jobs`: per-device job records.
    Jobs,
}

impl Source {
    /// The source as written in a query (`devices`, `devices.modules`, `devices.jobs`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Devices => "devices",
            Source::Modules => "devices.modules",
            Source::Jobs => "devices.jobs",
        }
    }
}

/// The SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `SELECT *`: whole documents.
    All,
    /// `SELECT item, item, ...`.
    Items(Vec<SelectItem>),
}

/// One entry of a SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// A property path, e.g. `tags.location AS loc`.
    Path {
        /// The path's segments (`["tags", "location"]`).
        path: Vec<String>,
        /// The `AS` name, if given.
        alias: Option<String>,
    },
    /// An aggregate, e.g. `COUNT() AS n`.
    Aggregate {
        /// The aggregate function.
        func: Aggregate,
        /// The `AS` name, if given.
        alias: Option<String>,
    },
}

impl SelectItem {
    /// The alias if given, otherwise (for paths) the last path segment; `None` for an unnamed
    /// aggregate (those are named `$1`, `$2`, ... in results).
    pub fn output_name(&self) -> Option<&str> {
        match self {
            SelectItem::Path { path, alias } => {
                alias.as_deref().or_else(|| path.last().map(String::as_str))
            }
            SelectItem::Aggregate { alias, .. } => alias.as_deref(),
        }
    }
}

/// An aggregate function of the SELECT list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    /// `COUNT()`: the number of documents.
    Count,
    /// `AVG(path)`: mean of the numeric values (absent when there are none).
    Avg(Vec<String>),
    /// `SUM(path)`: sum of the numeric values (0 when there are none).
    Sum(Vec<String>),
    /// `MIN(path)`: smallest number, or smallest string when there are no numbers.
    Min(Vec<String>),
    /// `MAX(path)`: largest number, or largest string when there are no numbers.
    Max(Vec<String>),
}

/// A condition or value expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A string, number, `true`, `false` or `null`.
    Literal(Value),
    /// A property path into the document (its segments).
    Path(Vec<String>),
    /// `NOT expr`.
    Not(Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
    /// `a AND b AND ...` (flattened).
    And(Vec<Expr>),
    /// `a OR b OR ...` (flattened).
    Or(Vec<Expr>),
    /// A comparison.
    Compare {
        /// The operator.
        op: CompareOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// An arithmetic operation.
    Arith {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        lhs: Box<Expr>,
        /// Right operand.
        rhs: Box<Expr>,
    },
    /// `expr IN [v, ...]` or `expr NIN [v, ...]`.
    In {
        /// The tested value.
        expr: Box<Expr>,
        /// The literal list.
        list: Vec<Value>,
        /// `true` for `NIN`.
        negated: bool,
    },
    /// A built-in function call.
    Call {
        /// The function.
        func: Function,
        /// Its arguments (arity checked by the parser).
        args: Vec<Expr>,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=` or `<>`
    Ne,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
}

/// An arithmetic operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Function {
    /// `IS_DEFINED(x)`: whether `x` has a value.
    IsDefined,
    /// `IS_NULL(x)`
    IsNull,
    /// `IS_STRING(x)`
    IsString,
    /// `IS_NUMBER(x)`
    IsNumber,
    /// `IS_BOOL(x)`
    IsBool,
    /// `IS_OBJECT(x)`
    IsObject,
    /// `IS_ARRAY(x)`
    IsArray,
    /// `IS_PRIMITIVE(x)`: string, number, boolean or null.
    IsPrimitive,
    /// `STARTS_WITH(s, prefix)` (also `STARTSWITH`).
    StartsWith,
    /// `ENDS_WITH(s, suffix)` (also `ENDSWITH`).
    EndsWith,
    /// `CONTAINS(s, sub)`
    Contains,
    /// `LOWER(s)`
    Lower,
    /// `UPPER(s)`
    Upper,
    /// `LENGTH(s)`: number of characters.
    Length,
    /// `ABS(n)`
    Abs,
}

const FUNCTIONS: [(Function, &str, usize); 15] = [
    (Function::IsDefined, "IS_DEFINED", 1),
    (Function::IsNull, "IS_NULL", 1),
    (Function::IsString, "IS_STRING", 1),
    (Function::IsNumber, "IS_NUMBER", 1),
    (Function::IsBool, "IS_BOOL", 1),
    (Function::IsObject, "IS_OBJECT", 1),
    (Function::IsArray, "IS_ARRAY", 1),
    (Function::IsPrimitive, "IS_PRIMITIVE", 1),
    (Function::StartsWith, "STARTS_WITH", 2),
    (Function::EndsWith, "ENDS_WITH", 2),
    (Function::Contains, "CONTAINS", 2),
    (Function::Lower, "LOWER", 1),
    (Function::Upper, "UPPER", 1),
    (Function::Length, "LENGTH", 1),
    (Function::Abs, "ABS", 1),
];

impl Function {
    /// Looks a function up by name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Function> {
        if name.eq_ignore_ascii_case("STARTSWITH") {
            return Some(Function::StartsWith);
        }
        if name.eq_ignore_ascii_case("ENDSWITH") {
            return Some(Function::EndsWith);
        }
        FUNCTIONS
            .iter()
            .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
            .map(|(f, _, _)| *f)
    }

    fn entry(self) -> (Function, &'static str, usize) {
        FUNCTIONS
            .iter()
            .copied()
            .find(|(f, _, _)| *f == self)
            .unwrap_or((self, "?", 0))
    }

    /// The canonical upper-case name.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The number of arguments the function takes.
    pub fn arity(self) -> usize {
        self.entry().2
    }
}
