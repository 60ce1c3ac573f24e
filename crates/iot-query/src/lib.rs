//! # iot-query
//!
//! The Azure IoT Hub query language over JSON documents, without any I/O. It serves
//! `POST /devices/query` (`SELECT * FROM devices WHERE tags.location = 'x'`) and message-route
//! conditions (bare expressions, see [`parse_condition`]).
//!
//! ```text
//! query       := SELECT select_list FROM source [WHERE expr] [GROUP BY path]
//! select_list := '*' | item (',' item)*      item := (path | aggregate) [AS ident]
//! aggregate   := COUNT '(' ')' | (AVG | SUM | MIN | MAX) '(' path ')'
//! source      := devices | devices.modules | devices.jobs
//! expr        := and (OR and)*      and := not (AND not)*      not := NOT not | cmp
//! cmp         := add [(= | != | <> | < | > | <= | >=) add | (IN | NIN) '[' literal, ... ']']
//! add         := mul (('+' | '-') mul)*  mul := unary (('*' | '/' | '%') unary)*
//! unary       := '-' unary | primary
//! primary     := literal | path | function '(' args ')' | '(' expr ')'
//! literal     := 'str' ('' escapes ') | "str" ("" escapes ") | number | true | false | null
//! path        := ident ('.' ident | '[' 'name' ']' | '[' index ']')*
//! ```
//!
//! Keywords and function names are case-insensitive; property names are not. Functions:
//! `IS_DEFINED`, `IS_NULL`, `IS_STRING`, `IS_NUMBER`, `IS_BOOL`, `IS_OBJECT`, `IS_ARRAY`,
//! `IS_PRIMITIVE`, `STARTS_WITH`, `ENDS_WITH`, `CONTAINS`, `LOWER`, `UPPER`, `LENGTH`, `ABS`.
//!
//! Semantics follow IoT Hub / Cosmos DB: a missing property is *undefined*; a comparison
//! involving undefined, or values of different JSON types, is `false` (so
//! `NOT (missing = 1)` is `true`); `<`, `>`, `<=`, `>=` only order two numbers or two strings;
//! `AND`, `OR` and `NOT` treat non-boolean operands as `false`.
//!
//! The text comes from peers, so it is limited to [`MAX_QUERY_LEN`] bytes and
//! [`MAX_DEPTH`] nesting levels; parsing and evaluation never recurse deeper than that. At the
//! limit, parsing needs roughly 100 KiB of stack in release builds and 256 KiB in debug builds,
//! well within the 2 MiB default of std and tokio threads. Error positions are 0-based byte
//! offsets into the text.
//!
//! ```
//! use serde_json::json;
//!
//! let query = iot_query::parse(
//!     "SELECT deviceId, tags.location AS loc FROM devices \
//!      WHERE tags.location = 'x' AND properties.reported.temp > 20.5",
//! )
//! .unwrap();
//! let twins = [
//!     json!({"deviceId": "d1", "tags": {"location": "x"}, "properties": {"reported": {"temp": 21}}}),
//!     json!({"deviceId": "d2", "tags": {"location": "y"}, "properties": {"reported": {"temp": 30}}}),
//!     json!({"deviceId": "d3"}),
//! ];
//! assert_eq!(query.run(&twins).unwrap(), vec![json!({"deviceId": "d1", "loc": "x"})]);
//!
//! let count = iot_query::parse("select count() from DEVICES where not is_defined(tags)").unwrap();
//! assert_eq!(count.run(&twins).unwrap(), vec![json!({"$1": 1})]);
//!
//! let route = iot_query::parse_condition("STARTS_WITH(deviceId, 'd') AND NOT (tags.x = 1)").unwrap();
//! assert!(route.matches(&twins[2]));
//!
//! let err = iot_query::parse("SELECT * FROM devices WHERE a = ").unwrap_err();
//! assert_eq!(err.to_string(), "at 32: expected a value after '=', found end of query");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ast;
mod error;
mod eval;
mod lexer;
mod parser;
mod run;

pub use ast::{Aggregate, ArithOp, CompareOp, Expr, Function, Query, Select, SelectItem, Source};
pub use error::{MAX_DEPTH, MAX_QUERY_LEN, QueryError};

/// Parses a full `SELECT ... FROM ... [WHERE ...] [GROUP BY ...]` query.
///
/// Fails with a [`QueryError`] naming the byte offset and what was expected, with
/// [`QueryError::TooLong`] beyond [`MAX_QUERY_LEN`] bytes, or with [`QueryError::TooDeep`]
/// beyond [`MAX_DEPTH`] nesting levels.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    parser::parse_query(text)
}

/// Parses a bare condition such as a message-route condition
/// (`$body.temp > 30 AND STARTS_WITH(deviceId, 'edge')`), with the same limits as [`parse`].
pub fn parse_condition(text: &str) -> Result<Expr, QueryError> {
    parser::parse_expr(text)
}
