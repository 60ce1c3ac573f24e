//! The `$edgeHub` module twin's desired properties: schema version, routes and the
//! store-and-forward time-to-live.

use serde_json::{Map, Value as Json};

use crate::error::ConfigError;
use crate::route::{DEFAULT_PRIORITY, Route, parse_route};

/// The store-and-forward time-to-live when `storeAndForwardConfiguration` does not set one.
pub const DEFAULT_STORE_TTL_SECS: u64 = 7200;

/// The routing-relevant part of the `$edgeHub` desired properties.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeHubConfig {
    /// `schemaVersion` as given (`1.0` to `1.3`, optionally with more components).
    pub schema_version: String,
    /// The routes, sorted by name, with their priorities and TTLs.
    pub routes: Vec<Route>,
    /// The global store-and-forward TTL; `None` means infinite (a negative `timeToLiveSecs`).
    pub store_ttl_secs: Option<u64>,
}

/// Parses `$edgeHub` desired properties.
///
/// - `schemaVersion` is required: `major.minor[.build[.revision]]` with major 1 and minor 0
///   to 3;
/// - `routes` (optional, `{}` when absent) maps names (non-empty, without `.`, `$`, `#` or
///   spaces) to route strings; from schema 1.1 on a route may also be an object
///   `{"route": "...", "priority": 0-9, "timeToLiveSecs": n}` (`timeToLiveSecs` 0 or absent:
///   use the global TTL). Under 1.0, blank route strings are skipped;
/// - `storeAndForwardConfiguration.timeToLiveSecs` defaults to [`DEFAULT_STORE_TTL_SECS`];
///   a negative value means infinite.
///
/// Other members (`mqttBroker`, `integrity`, ...) are ignored.
pub fn parse_edgehub_desired(desired: &Json) -> Result<EdgeHubConfig, ConfigError> {
    let obj = desired.as_object().ok_or(ConfigError::NotAnObject)?;
    let schema_version = match obj.get("schemaVersion") {
        None | Some(Json::Null) => return Err(ConfigError::MissingSchemaVersion),
        Some(Json::String(s)) => s.clone(),
        Some(Json::Number(n)) => n.to_string(),
        Some(other) => return Err(ConfigError::InvalidSchemaVersion(other.to_string())),
    };
    let minor = schema_minor(&schema_version)?;
    let routes = match obj.get("routes") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Object(routes)) => parse_routes(routes, minor >= 1)?,
        Some(_) => return Err(ConfigError::RoutesNotAnObject),
    };
    let store_ttl_secs = store_ttl(obj.get("storeAndForwardConfiguration"))?;
    Ok(EdgeHubConfig {
        schema_version,
        routes,
        store_ttl_secs,
    })
}

/// The minor version of a supported schema version (like .NET `System.Version`: 2 to 4
/// dot-separated non-negative integers).
fn schema_minor(version: &str) -> Result<u32, ConfigError> {
    let parts: Result<Vec<u32>, _> = version
        .trim()
        .split('.')
        .map(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u32>().map_err(|_| ())
            } else {
                Err(())
            }
        })
        .collect();
    let parts = match parts {
        Ok(parts) if (2..=4).contains(&parts.len()) => parts,
        _ => return Err(ConfigError::InvalidSchemaVersion(version.to_owned())),
    };
    match parts.as_slice() {
        [1, minor, ..] if *minor <= 3 => Ok(*minor),
        _ => Err(ConfigError::UnsupportedSchemaVersion(version.to_owned())),
    }
}

fn valid_route_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['.', '$', '#', ' '])
}

fn parse_routes(
    routes: &Map<String, Json>,
    allow_objects: bool,
) -> Result<Vec<Route>, ConfigError> {
    let mut out = Vec::with_capacity(routes.len());
    for (name, spec) in routes {
        if !valid_route_name(name) {
            return Err(ConfigError::InvalidRouteName(name.clone()));
        }
        let malformed = |reason: &str| ConfigError::MalformedRoute {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let (text, priority, ttl) = match spec {
            Json::String(text) if !text.trim().is_empty() => (text.as_str(), DEFAULT_PRIORITY, 0),
            // Schema 1.0 skips blank routes; later schemas refuse them.
            Json::String(_) | Json::Null if !allow_objects => continue,
            Json::String(_) => return Err(malformed("the route is empty")),
            Json::Object(fields) if allow_objects => {
                route_object(fields).map_err(|r| malformed(&r))?
            }
            Json::Object(_) => {
                return Err(malformed("schema version 1.0 only allows route strings"));
            }
            _ => return Err(malformed("a route must be a string or an object")),
        };
        let mut route = parse_route(name, text).map_err(|error| ConfigError::Route {
            name: name.clone(),
            error,
        })?;
        route.priority = priority;
        route.ttl_secs = (ttl > 0).then_some(ttl);
        out.push(route);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `{"route": "...", "priority": 0-9, "timeToLiveSecs": 0..=u32::MAX}`.
fn route_object(fields: &Map<String, Json>) -> Result<(&str, u32, u64), String> {
    let text = match fields.get("route") {
        Some(Json::String(text)) if !text.trim().is_empty() => text.as_str(),
        Some(Json::String(_)) => return Err("the route is empty".to_owned()),
        _ => return Err("a route object needs a \"route\" string".to_owned()),
    };
    let priority = match fields.get("priority") {
        None | Some(Json::Null) => DEFAULT_PRIORITY,
        Some(p) => match p.as_u64() {
            Some(p @ 0..=9) => p as u32,
            Some(p) if p == u64::from(DEFAULT_PRIORITY) => DEFAULT_PRIORITY,
            _ => {
                return Err(format!(
                    "invalid priority {p}; priority can only be between 0-9"
                ));
            }
        },
    };
    let ttl = match fields.get("timeToLiveSecs") {
        None | Some(Json::Null) => 0,
        Some(t) => match t.as_u64() {
            Some(t) if t <= u64::from(u32::MAX) => t,
            _ => {
                return Err(format!(
                    "invalid timeToLiveSecs {t}; expected 0 to 4294967295"
                ));
            }
        },
    };
    Ok((text, priority, ttl))
}

/// The global TTL: [`DEFAULT_STORE_TTL_SECS`] when unset, `None` (infinite) when negative.
fn store_ttl(config: Option<&Json>) -> Result<Option<u64>, ConfigError> {
    let ttl = match config {
        None | Some(Json::Null) => None,
        Some(Json::Object(fields)) => fields.get("timeToLiveSecs").filter(|t| !t.is_null()),
        Some(_) => {
            return Err(ConfigError::InvalidStoreAndForward(
                "storeAndForwardConfiguration must be an object".to_owned(),
            ));
        }
    };
    let Some(ttl) = ttl else {
        return Ok(Some(DEFAULT_STORE_TTL_SECS));
    };
    match (ttl.as_u64(), ttl.as_i64()) {
        (Some(secs), _) => Ok(Some(secs)),
        (None, Some(_)) => Ok(None),
        _ => Err(ConfigError::InvalidStoreAndForward(format!(
            "timeToLiveSecs must be an integer, found {ttl}"
        ))),
    }
}
