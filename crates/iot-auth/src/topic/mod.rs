//! Device-facing MQTT topics: what devices publish and subscribe to, and the topics the server
//! publishes back.
//!
//! Device and module ids appear literally in topics (never percent-encoded). Request ids
//! (`$rid`) are opaque strings that are echoed back exactly as received.

mod bag;

pub use bag::{PropertyBag, SplitProperties, SystemProperty};

use crate::pct;

/// Errors from topic parsing and subscription classification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic or filter is not one the hub supports.
    #[error("unsupported topic")]
    Unsupported,
    /// The topic or filter names a device or module other than the connected identity.
    #[error("topic belongs to another device or module")]
    NotOwnTopic,
    /// A device or module id segment is empty.
    #[error("topic has an empty device or module id")]
    EmptyId,
    /// A property bag has invalid percent-encoding.
    #[error("property bag is not valid percent-encoding")]
    BadEncoding,
    /// A twin or method topic has no `$rid` parameter.
    #[error("topic has no $rid")]
    MissingRequestId,
    /// A method response status is not an integer in 0..=65535.
    #[error("method response status is not a valid integer")]
    BadStatus,
}

/// A topic a device or module publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishTopic {
    /// Device-to-cloud telemetry (or a module output, when `$.on` is in the bag).
    Telemetry {
        /// Device id named in the topic.
        device_id: String,
        /// Module id named in the topic.
        module_id: Option<String>,
        /// Decoded message properties.
        properties: PropertyBag,
    },
    /// Twin GET request.
    TwinGet {
        /// Request id, verbatim.
        rid: String,
    },
    /// Reported-properties PATCH request.
    TwinPatchReported {
        /// Request id, verbatim.
        rid: String,
    },
    /// Response to a direct method call.
    MethodResponse {
        /// Status chosen by the device.
        status: u16,
        /// Request id, verbatim.
        rid: String,
    },
}

impl PublishTopic {
    /// The device id named in the topic (telemetry only); compare it with the authenticated
    /// identity to reject publishes to another device's topic.
    pub fn device_id(&self) -> Option<&str> {
        match self {
            Self::Telemetry { device_id, .. } => Some(device_id),
            _ => None,
        }
    }

    /// The module id named in the topic (module telemetry / outputs only).
    pub fn module_id(&self) -> Option<&str> {
        match self {
            Self::Telemetry { module_id, .. } => module_id.as_deref(),
            _ => None,
        }
    }

    /// The request id of twin and method topics.
    pub fn rid(&self) -> Option<&str> {
        match self {
            Self::TwinGet { rid }
            | Self::TwinPatchReported { rid }
            | Self::MethodResponse { rid, .. } => Some(rid),
            Self::Telemetry { .. } => None,
        }
    }
}

/// Parses a topic a device or module published to.
///
/// Telemetry is accepted as `devices/{d}[/modules/{m}]/messages/events` followed optionally by
/// `/`, `/{bag}` or `/{bag}/`.
pub fn parse_publish_topic(topic: &str) -> Result<PublishTopic, TopicError> {
    if let Some(rest) = topic.strip_prefix("devices/") {
        parse_telemetry(rest)
    } else if let Some(rest) = topic.strip_prefix("$iothub/") {
        parse_iothub(rest)
    } else {
        Err(TopicError::Unsupported)
    }
}

fn parse_telemetry(rest: &str) -> Result<PublishTopic, TopicError> {
    let (device_id, rest) = rest.split_once('/').ok_or(TopicError::Unsupported)?;
    let (module_id, rest) = match rest.strip_prefix("modules/") {
        Some(r) => {
            let (m, r) = r.split_once('/').ok_or(TopicError::Unsupported)?;
            (Some(m), r)
        }
        None => (None, rest),
    };
    let tail = rest
        .strip_prefix("messages/events")
        .ok_or(TopicError::Unsupported)?;
    let bag = if tail.is_empty() {
        tail
    } else {
        tail.strip_prefix('/').ok_or(TopicError::Unsupported)?
    };
    let bag = bag.strip_suffix('/').unwrap_or(bag);
    if bag.contains('/') {
        return Err(TopicError::Unsupported);
    }
    if device_id.is_empty() || module_id.is_some_and(str::is_empty) {
        return Err(TopicError::EmptyId);
    }
    Ok(PublishTopic::Telemetry {
        device_id: device_id.to_owned(),
        module_id: module_id.map(str::to_owned),
        properties: PropertyBag::parse(bag)?,
    })
}

fn parse_iothub(rest: &str) -> Result<PublishTopic, TopicError> {
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    let rid = || query.and_then(find_rid).ok_or(TopicError::MissingRequestId);
    match segments.as_slice() {
        ["twin", get] if get.eq_ignore_ascii_case("GET") => {
            Ok(PublishTopic::TwinGet { rid: rid()? })
        }
        ["twin", patch, "properties", "reported"] if patch.eq_ignore_ascii_case("PATCH") => {
            Ok(PublishTopic::TwinPatchReported { rid: rid()? })
        }
        ["methods", "res", status] => {
            let status = parse_status(status)?;
            Ok(PublishTopic::MethodResponse {
                status,
                rid: rid()?,
            })
        }
        _ => Err(TopicError::Unsupported),
    }
}

fn parse_status(s: &str) -> Result<u16, TopicError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TopicError::BadStatus);
    }
    s.parse().map_err(|_| TopicError::BadStatus)
}

/// The raw value of `$rid` (key matched after decoding, so `%24rid` works too).
fn find_rid(query: &str) -> Option<String> {
    query.split('&').find_map(|param| {
        let (k, v) = param.split_once('=')?;
        let is_rid = k == "$rid" || pct::decode(k).is_ok_and(|k| k == "$rid");
        is_rid.then(|| v.to_owned())
    })
}

/// A topic filter a device or module may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Subscription {
    /// `devices/{d}/messages/devicebound/#`
    C2d,
    /// `$iothub/twin/res/#`
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`
    DesiredPatches,
    /// `$iothub/methods/POST/#`
    Methods,
    /// `devices/{d}/modules/{m}/inputs/#` or `devices/{d}/modules/{m}/#`
    Inputs,
}

/// Classifies a SUBSCRIBE filter for the identity `device_id` / `module_id`.
///
/// Filters naming another device or module (or a C2D filter from a module, or an input filter
/// from a device) yield [`TopicError::NotOwnTopic`]; unknown filters [`TopicError::Unsupported`].
pub fn classify_subscription(
    filter: &str,
    device_id: &str,
    module_id: Option<&str>,
) -> Result<Subscription, TopicError> {
    match filter {
        "$iothub/twin/res/#" => return Ok(Subscription::TwinResponses),
        "$iothub/twin/PATCH/properties/desired/#" => return Ok(Subscription::DesiredPatches),
        "$iothub/methods/POST/#" => return Ok(Subscription::Methods),
        _ => {}
    }
    let rest = filter
        .strip_prefix("devices/")
        .ok_or(TopicError::Unsupported)?;
    let (d, rest) = rest.split_once('/').ok_or(TopicError::Unsupported)?;
    if rest == "messages/devicebound/#" {
        return if d == device_id && module_id.is_none() {
            Ok(Subscription::C2d)
        } else {
            Err(TopicError::NotOwnTopic)
        };
    }
    let (m, tail) = rest
        .strip_prefix("modules/")
        .and_then(|r| r.split_once('/'))
        .ok_or(TopicError::Unsupported)?;
    if tail != "inputs/#" && tail != "#" {
        return Err(TopicError::Unsupported);
    }
    if d == device_id && module_id == Some(m) {
        Ok(Subscription::Inputs)
    } else {
        Err(TopicError::NotOwnTopic)
    }
}

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={version}]`.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<u64>) -> String {
    match version {
        Some(v) => format!("$iothub/twin/res/{status}/?$rid={rid}&$version={v}"),
        None => format!("$iothub/twin/res/{status}/?$rid={rid}"),
    }
}

/// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
pub fn desired_patch_topic(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// `$iothub/methods/POST/{name}/?$rid={rid}` (name and rid inserted verbatim).
pub fn method_request_topic(name: &str, rid: &str) -> String {
    format!("$iothub/methods/POST/{name}/?$rid={rid}")
}

/// `devices/{device_id}/messages/devicebound/{bag}`; the `/` before the bag is always present,
/// even when the bag is empty, because SDKs match on it.
pub fn c2d_topic(device_id: &str, properties: &PropertyBag) -> String {
    format!(
        "devices/{device_id}/messages/devicebound/{}",
        properties.encode()
    )
}

/// `devices/{device_id}/modules/{module_id}/inputs/{input}/{bag}` (trailing `/` always present).
pub fn module_input_topic(
    device_id: &str,
    module_id: &str,
    input: &str,
    properties: &PropertyBag,
) -> String {
    format!(
        "devices/{device_id}/modules/{module_id}/inputs/{input}/{}",
        properties.encode()
    )
}

/// `devices/{d}[/modules/{m}]/messages/events/{bag}`: the topic a device or module publishes
/// telemetry to (useful for clients and tests).
pub fn telemetry_topic(
    device_id: &str,
    module_id: Option<&str>,
    properties: &PropertyBag,
) -> String {
    match module_id {
        Some(m) => format!(
            "devices/{device_id}/modules/{m}/messages/events/{}",
            properties.encode()
        ),
        None => format!(
            "devices/{device_id}/messages/events/{}",
            properties.encode()
        ),
    }
}

#[cfg(test)]
mod tests;
