//! The view of a message that routes are evaluated against.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::ast::{PathSegment, Value};

/// Where a message came from; routes match it through [`Source::path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// Telemetry from a (leaf) device: `/messages`.
    Device,
    /// A message sent by a module: `/messages/modules/{module}/outputs/{output}`, or
    /// `/messages/modules/{module}` without an output name (an empty name counts as none).
    Module {
        /// The sending module's id.
        module: &'a str,
        /// The output the module sent it on.
        output: Option<&'a str>,
    },
    /// A twin change notification: `/twinChangeNotifications`.
    TwinChangeNotifications,
}

impl Source<'_> {
    /// The source path routes are matched against.
    pub fn path(&self) -> String {
        match self {
            Source::Device => "/messages".to_owned(),
            Source::Module {
                module,
                output: Some(output),
            } if !output.trim().is_empty() => {
                format!("/messages/modules/{module}/outputs/{output}")
            }
            Source::Module { module, .. } => format!("/messages/modules/{module}"),
            Source::TwinChangeNotifications => "/twinChangeNotifications".to_owned(),
        }
    }
}

/// A message as seen by route conditions. Nothing is copied or parsed up front.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// Where the message came from.
    pub source: Source<'a>,
    /// System properties keyed by their route-query names (`messageId`, `correlationId`,
    /// `userId`, `to`, `contentType`, `contentEncoding`, `connectionDeviceId`,
    /// `connectionModuleId`, `connectionDeviceGenerationId`, `connectionAuthMethod`,
    /// `enqueuedTime`, `outputName`, `inputName`, ...); looked up case-insensitively.
    pub system: &'a BTreeMap<String, String>,
    /// Application properties; `None` is a property without a value (`null`). Looked up
    /// case-insensitively.
    pub app: &'a BTreeMap<String, Option<String>>,
    /// The body. `$body` queries read it only when `contentType` is `application/json` and
    /// `contentEncoding` is `utf-8`, `utf-16` or `utf-32` (the latter two little-endian).
    pub body: &'a [u8],
}

/// Looks `name` up exactly, then ASCII case-insensitively.
pub(crate) fn lookup<'m, V>(map: &'m BTreeMap<String, V>, name: &str) -> Option<&'m V> {
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

impl Message<'_> {
    /// An application property: `None` when absent, `Some(Null)` when present without a value.
    pub(crate) fn app_property(&self, name: &str) -> Option<Value> {
        lookup(self.app, name).map(|v| v.as_ref().map_or(Value::Null, |s| Value::String(s.clone())))
    }

    /// A system property, or `Undefined`.
    pub(crate) fn system_property(&self, name: &str) -> Value {
        lookup(self.system, name).map_or(Value::Undefined, |s| Value::String(s.clone()))
    }

    /// The body parsed as JSON, when the content type and encoding allow `$body` queries.
    pub(crate) fn json_body(&self) -> Option<Json> {
        let content_type = lookup(self.system, "contentType")?;
        if !content_type.trim().eq_ignore_ascii_case("application/json") {
            return None;
        }
        let encoding = lookup(self.system, "contentEncoding")?
            .trim()
            .to_ascii_lowercase();
        let text = match encoding.as_str() {
            "utf-8" => String::from_utf8(self.body.to_vec()).ok()?,
            "utf-16" => decode_utf16le(self.body)?,
            "utf-32" => decode_utf32le(self.body)?,
            _ => return None,
        };
        serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text)).ok()
    }
}

fn decode_utf16le(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

fn decode_utf32le(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    bytes
        .chunks_exact(4)
        .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// Follows `path` into `json`; objects, arrays and missing members are `Undefined`.
pub(crate) fn query_json(json: &Json, path: &[PathSegment]) -> Value {
    let mut node = json;
    for segment in path {
        let next = match segment {
            PathSegment::Key(key) => node.as_object().and_then(|o| o.get(key)),
            PathSegment::Index(i) => node.as_array().and_then(|a| a.get(*i)),
        };
        match next {
            Some(n) => node = n,
            None => return Value::Undefined,
        }
    }
    match node {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_f64().map_or(Value::Undefined, Value::number),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(_) | Json::Object(_) => Value::Undefined,
    }
}
