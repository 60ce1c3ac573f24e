//! Routes: source matching, sinks, priority and time-to-live.

use crate::ast::Expr;
use crate::error::ParseError;
use crate::eval::Evaluator;
use crate::message::Message;
use crate::parser;

/// The priority of routes that do not set one: below every explicit priority (0 to 9).
pub const DEFAULT_PRIORITY: u32 = 2_000_000_000;

/// Where a route delivers matching messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sink {
    /// `$upstream`: the cloud (IoT Hub).
    Upstream,
    /// `BrokeredEndpoint("/modules/{module}/inputs/{input}")`: a module's input.
    ModuleInput {
        /// The receiving module's id.
        module: String,
        /// The input name.
        input: String,
    },
}

/// A parsed route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The route's name (its key in `$edgeHub` desired properties).
    pub name: String,
    /// The route text as given.
    pub text: String,
    /// The source path as written, without whitespace (e.g. `/messages/modules/m1/outputs/*`).
    pub source: String,
    /// The `WHERE` condition; `None` means every message from the source matches.
    pub condition: Option<Expr>,
    /// The `WHERE` condition's text as written.
    pub condition_text: Option<String>,
    /// Where matching messages go.
    pub sink: Sink,
    /// 0 (highest) to 9, or [`DEFAULT_PRIORITY`].
    pub priority: u32,
    /// Time-to-live of messages stored for this route; `None` uses the store's global TTL.
    pub ttl_secs: Option<u64>,
}

/// Parses a route with the default priority and no TTL of its own.
///
/// ```
/// let route = routes::parse_route("r", "FROM /messages/* INTO $upstream").unwrap();
/// assert_eq!(route.sink, routes::Sink::Upstream);
/// let err = routes::parse_route("r", "FROM /messages/* $upstream").unwrap_err();
/// assert_eq!(err.to_string(), "column 18: expected WHERE or INTO, found '$upstream'");
/// ```
pub fn parse_route(name: &str, text: &str) -> Result<Route, ParseError> {
    let parsed = parser::parse_route(text)?;
    let (condition, condition_text) = match parsed.condition {
        Some((expr, text)) => (Some(expr), Some(text)),
        None => (None, None),
    };
    Ok(Route {
        name: name.to_owned(),
        text: text.to_owned(),
        source: parsed.source,
        condition,
        condition_text,
        sink: parsed.sink,
        priority: DEFAULT_PRIORITY,
        ttl_secs: None,
    })
}

impl Route {
    /// Whether the message comes from this route's source and satisfies its condition
    /// (which must evaluate to boolean `true`).
    pub fn matches(&self, msg: &Message<'_>) -> bool {
        self.matches_with(&Evaluator::new(msg))
    }

    /// Whether a message from `source_path` (see [`crate::Source::path`]) passes this
    /// route's source filter.
    pub fn matches_source(&self, source_path: &str) -> bool {
        source_matches(&self.source, source_path)
    }

    fn matches_with(&self, evaluator: &Evaluator<'_, '_>) -> bool {
        self.matches_source(evaluator.source_path())
            && self
                .condition
                .as_ref()
                .is_none_or(|c| evaluator.eval(c).is_true())
    }
}

/// Every route whose source and condition match `msg`, ordered by priority (0 first), ties
/// by name. The message body is parsed at most once.
pub fn select<'r>(routes: &'r [Route], msg: &Message<'_>) -> Vec<&'r Route> {
    let evaluator = Evaluator::new(msg);
    let mut selected: Vec<&Route> = routes
        .iter()
        .filter(|r| r.matches_with(&evaluator))
        .collect();
    selected.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| a.name.cmp(&b.name))
    });
    selected
}

/// Whether a route source (`/messages/*`, `/messages/modules/m1`, ...) matches a message
/// source path: trailing `*`s are trimmed, both sides end in a single `/`, and the route's
/// must be an ASCII case-insensitive prefix of the message's. `/*` matches everything.
pub fn source_matches(route_source: &str, message_source: &str) -> bool {
    let route = normalize(route_source.trim().trim_end_matches('*'));
    let message = normalize(message_source);
    message.len() >= route.len()
        && message
            .as_bytes()
            .iter()
            .zip(route.as_bytes())
            .all(|(m, r)| m.eq_ignore_ascii_case(r))
}

fn normalize(path: &str) -> String {
    let mut out = path.trim().trim_end_matches('/').to_owned();
    out.push('/');
    out
}

/// Parses a `BrokeredEndpoint` address: one leading and one trailing `/` are trimmed and the
/// rest must be `modules/{module}/inputs/{input}` with non-empty names.
pub(crate) fn parse_brokered_address(address: &str) -> Result<Sink, String> {
    let trimmed = address.trim();
    let trimmed = trimmed.strip_prefix('/').unwrap_or(trimmed);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let items: Vec<&str> = trimmed.split('/').collect();
    match items.as_slice() {
        [modules, module, inputs, input]
            if modules.eq_ignore_ascii_case("modules")
                && inputs.eq_ignore_ascii_case("inputs")
                && !module.is_empty()
                && !input.is_empty() =>
        {
            Ok(Sink::ModuleInput {
                module: (*module).to_owned(),
                input: (*input).to_owned(),
            })
        }
        _ => Err(format!(
            "invalid endpoint address '{address}'; expected /modules/{{moduleId}}/inputs/{{input}}"
        )),
    }
}
