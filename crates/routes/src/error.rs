//! The error types of this crate and the limits the parser enforces.

use thiserror::Error;

/// The longest route text accepted, in bytes.
pub const MAX_ROUTE_LEN: usize = 16 * 1024;

/// The deepest expression tree accepted: parentheses, `NOT`, unary minus, function calls and
/// chained binary operators each add one level; `AND` / `OR` chains do not (they are flattened).
pub const MAX_DEPTH: usize = 64;

/// Why a route (or a condition) could not be parsed.
///
/// `column` is 1-based and counts characters (not bytes) from the start of the text; a column
/// one past the last character means "at the end of the route".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("column {column}: {message}")]
pub struct ParseError {
    /// Where the problem is (1-based, in characters).
    pub column: usize,
    /// What is wrong, e.g. `expected INTO, found '$upstream'`.
    pub message: String,
}

impl ParseError {
    /// An error at byte offset `pos` of `text`.
    pub(crate) fn at(text: &str, pos: usize, message: impl Into<String>) -> Self {
        let prefix = text.get(..pos.min(text.len())).unwrap_or(text);
        ParseError {
            column: prefix.chars().count() + 1,
            message: message.into(),
        }
    }
}

/// Why `$edgeHub` desired properties were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The desired properties are not a JSON object.
    #[error("$edgeHub desired properties must be a JSON object")]
    NotAnObject,
    /// `schemaVersion` is absent.
    #[error("EdgeHub config missing schemaVersion")]
    MissingSchemaVersion,
    /// `schemaVersion` is not a version string such as `1.1` or `1.1.0`.
    #[error("error parsing schema version string: {0}")]
    InvalidSchemaVersion(String),
    /// `schemaVersion` parses but is not 1.0 to 1.3.
    #[error("EdgeHub config contains unsupported schemaVersion: {0} (supported: 1.0 to 1.3)")]
    UnsupportedSchemaVersion(String),
    /// `routes` is present but not a JSON object.
    #[error("routes must be a JSON object")]
    RoutesNotAnObject,
    /// A route name is empty or contains `.`, `$`, `#` or a space.
    #[error(
        "invalid route name '{0}': names must be non-empty and must not contain '.', '$', '#' or ' '"
    )]
    InvalidRouteName(String),
    /// A route value has the wrong shape (e.g. an object under schema 1.0, a bad priority).
    #[error("malformed route specification for route {name}: {reason}")]
    MalformedRoute {
        /// The route's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A route's text does not parse.
    #[error("error parsing route {name} - {error}")]
    Route {
        /// The route's name.
        name: String,
        /// The parse error.
        #[source]
        error: ParseError,
    },
    /// `storeAndForwardConfiguration` has the wrong shape.
    #[error("invalid storeAndForwardConfiguration: {0}")]
    InvalidStoreAndForward(String),
}
