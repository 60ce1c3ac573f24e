//! # routes
//!
//! The Azure IoT Edge route language and the `$edgeHub` desired-properties parser, without any
//! I/O. A route says which messages (by source and condition) go to which sink:
//!
//! ```text
//! route     := [SELECT '*'] FROM source [WHERE condition] INTO sink
//! source    := ('/' ('*' | ID))+                    e.g. /messages/modules/m1/outputs/*
//! sink      := $upstream | BrokeredEndpoint("/modules/{module}/inputs/{input}")
//! condition := expr, with operators from tightest to loosest:
//!              prefix - and NOT | * / % | + - || | < <= > >= | = != <> | AND | OR | ??
//! primary   := '(' expr ')' | literal | ID | $name | '{' $name '}' | function '(' args ')'
//! literal   := true | false | null | undefined | 'str' | "str" | 12 | -12 | 0x1F | 1.5e3
//! ```
//!
//! Tokens follow the reference ANTLR lexer (longest match wins): keywords `SELECT FROM WHERE
//! INTO AND OR NOT` are case-insensitive, the literals `true false null undefined` are not;
//! identifiers may contain `-`, `+`, `*`, `.` and more, so `x-priority` is one name and
//! operators need surrounding spaces (`a + 1`, not `a+1`); `-5` is a number but `- a` is a
//! negation; strings take the escapes `\'`, `\"`, `\\` and `\uXXXX`; `/* ... */` is a
//! comment wherever a `*/` follows, even right after a `/messages/*` source (as in the
//! reference, the condition is then swallowed). Unlike the reference, trailing text after
//! the sink is an error, and `BrokeredEndpoint` addresses must read
//! `/modules/{module}/inputs/{input}` literally.
//!
//! Properties: a bare `name` is an application property; `$name` is the application property
//! `$name` if the message has one, else a `$body.` query (`$body.a.b[0].c`) or the system
//! property `name`; `{$name}` is only the system property (or `$body` query). Names match
//! case-insensitively; `$body` queries read JSON bodies only (see [`Message::body`]).
//! Functions (case-insensitive, arity checked when parsing): `abs exp power square ceiling
//! floor sign sqrt as_number is_bool is_defined is_null is_number is_string concat length
//! lower upper substring index_of starts_with ends_with contains`; see [`Function`].
//!
//! Evaluation never fails; a route matches only when its condition is boolean `true`:
//! - arithmetic (`* / % + -`, unary `-`) needs numbers and `||` strings; anything else, and
//!   NaN, is `undefined`. Application properties are strings: use `as_number(p) > 3`;
//! - `< <= > >=` order two numbers, two strings (ordinal) or two booleans; `=`, `!=`, `<>`
//!   compare equal types; `null = null` is true. An `undefined` operand or operands of
//!   different types give `undefined` (not `false`, so `NOT (p = 1)` does not match either);
//! - `NOT`, `AND`, `OR` are three-valued, with every non-boolean (including `null`) unknown:
//!   `false AND x` is `false`, `true OR x` is `true`, otherwise unknowns give `undefined`;
//! - `a ?? b` is `a` unless it is `undefined` or `null`.
//!
//! Parse errors ([`ParseError`]) carry a 1-based column counted in characters from the start
//! of the text, e.g. `column 18: expected WHERE or INTO, found '$upstream'`. Texts longer than
//! [`MAX_ROUTE_LEN`] or nested deeper than [`MAX_DEPTH`] are refused, so parsing, evaluation
//! and drop recurse boundedly. [`parse_edgehub_desired`] reads `$edgeHub` desired properties.
//!
//! ```
//! use std::collections::BTreeMap;
//! use routes::{Message, Sink, Source, parse_route, select};
//!
//! let to_ai = parse_route(
//!     "to_ai",
//!     r#"FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId)
//!        INTO BrokeredEndpoint("/modules/ai_insights/inputs/input1")"#,
//! )
//! .unwrap();
//! let up = parse_route("up", "FROM /messages/* INTO $upstream").unwrap();
//!
//! let system = BTreeMap::from([("connectionDeviceId".to_owned(), "leaf1".to_owned())]);
//! let app = BTreeMap::new();
//! let msg = Message { source: Source::Device, system: &system, app: &app, body: b"{}" };
//! let routes = [up, to_ai];
//! let chosen = select(&routes, &msg); // same priority: ordered by name
//! assert_eq!(chosen.len(), 2);
//! assert_eq!(
//!     chosen[0].sink,
//!     Sink::ModuleInput { module: "ai_insights".into(), input: "input1".into() },
//! );
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod ast;
mod config;
mod error;
mod eval;
mod functions;
mod lexer;
mod message;
mod parser;
mod route;

#[cfg(test)]
mod tests;

pub use ast::{BinaryOp, Expr, PathSegment, UnaryOp, Value};
pub use config::{DEFAULT_STORE_TTL_SECS, EdgeHubConfig, parse_edgehub_desired};
pub use error::{ConfigError, MAX_DEPTH, MAX_ROUTE_LEN, ParseError};
pub use functions::Function;
pub use message::{Message, Source};
pub use route::{DEFAULT_PRIORITY, Route, Sink, parse_route, select, source_matches};

/// Parses a bare condition (the part between `WHERE` and `INTO`).
///
/// ```
/// let err = routes::parse_condition("a = 1 AND nope(a)").unwrap_err();
/// assert_eq!(err.to_string(), "column 11: unknown function 'nope'");
/// ```
pub fn parse_condition(text: &str) -> Result<Expr, ParseError> {
    parser::parse_condition(text)
}
