//! The error type of this crate and the limits it enforces.

use thiserror::Error;

/// The longest query (or route condition) text accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 8192;

/// The deepest nesting accepted: parentheses, `NOT`, unary minus, function calls and chained
/// arithmetic operators each add one level. `AND` / `OR` chains do not.
pub const MAX_DEPTH: usize = 64;

/// Why a query could not be parsed or run.
///
/// Positions (`pos`) are 0-based byte offsets into the query text; a position equal to the
/// text's length means "at the end of the query".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The text is longer than [`MAX_QUERY_LEN`].
    #[error("query is {len} bytes long; at most {max} bytes are allowed")]
    TooLong {
        /// Length of the rejected text in bytes.
        len: usize,
        /// The limit ([`MAX_QUERY_LEN`]).
        max: usize,
    },
    /// The text nests deeper than [`MAX_DEPTH`].
    #[error("at {pos}: expression nested deeper than {max} levels")]
    TooDeep {
        /// Where the limit was crossed.
        pos: usize,
        /// The limit ([`MAX_DEPTH`]).
        max: usize,
    },
    /// A string literal has no closing quote.
    #[error("at {pos}: unterminated string literal")]
    UnterminatedString {
        /// Position of the opening quote.
        pos: usize,
    },
    /// A character that cannot start any token.
    #[error("at {pos}: unexpected character {ch:?}")]
    UnexpectedChar {
        /// Position of the character.
        pos: usize,
        /// The character.
        ch: char,
    },
    /// A numeric literal that is not a finite JSON number.
    #[error("at {pos}: invalid number '{text}'")]
    InvalidNumber {
        /// Position of the literal.
        pos: usize,
        /// The literal as written.
        text: String,
    },
    /// The text does not follow the grammar.
    #[error("at {pos}: expected {expected}, found {found}")]
    Syntax {
        /// Position of the offending token.
        pos: usize,
        /// What the parser was looking for.
        expected: String,
        /// The offending token as written, or `end of query`.
        found: String,
    },
    /// `FROM` names something other than `devices`, `devices.modules` or `devices.jobs`.
    #[error("at {pos}: unknown source '{name}'; expected devices, devices.modules or devices.jobs")]
    UnknownSource {
        /// Position of the source name.
        pos: usize,
        /// The source as written.
        name: String,
    },
    /// A call to a function this crate does not know.
    #[error("at {pos}: unknown function '{name}'")]
    UnknownFunction {
        /// Position of the function name.
        pos: usize,
        /// The name as written.
        name: String,
    },
    /// A function called with the wrong number of arguments.
    #[error("at {pos}: {name} takes {expected} argument(s), found {found}")]
    WrongArity {
        /// Position of the function name.
        pos: usize,
        /// Canonical (upper-case) function name.
        name: &'static str,
        /// How many arguments the function takes.
        expected: usize,
        /// How many were given.
        found: usize,
    },
    /// The SELECT list does not fit the aggregation (e.g. a plain path next to `COUNT()` without
    /// `GROUP BY`, or `SELECT *` with `GROUP BY`).
    #[error("{}", select_message(*.pos, .reason))]
    InvalidSelect {
        /// Position of the offending item, when known (queries built by hand have none).
        pos: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

fn select_message(pos: Option<usize>, reason: &str) -> String {
    match pos {
        Some(pos) => format!("at {pos}: invalid SELECT list: {reason}"),
        None => format!("invalid SELECT list: {reason}"),
    }
}
