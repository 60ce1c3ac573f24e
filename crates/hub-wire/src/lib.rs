//! The hub service API's documents in one crate for both sides: the hub's handlers parse them and
//! its clients (the CLI, the edge agent, identityd's module keys) build them, so a field name lives
//! in one spot, and a client does not link the hub server to get them. The registry records
//! ([`model`]), method calls, cloud-to-device sends and the auth switches are the types the hub
//! itself uses; the other bodies are read leniently from a `Value` by the handlers (query, CA
//! upload and verify, twin patches, edge configuration content).
//!
//! The register request of the provisioning service's device API ([`dps`]) is here too: identityd
//! sends it and must not link the provisioning server that parses it.
//!
//! Property bags (desired and reported properties, tags, method payloads) stay
//! `serde_json::Value`: they are the user's own JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod dps;
pub mod limits;
pub mod model;

pub use model::{
    AuthType, Authentication, Capabilities, Device, Module, Status, SymmetricKey, X509Thumbprint,
};

/// `POST /devices/query`: `{"query": "SELECT …"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRequest {
    pub query: String,
}

/// `PUT /certificates/{name}`: `{"properties": {"certificate": PEM, "isVerified": …}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaUploadRequest {
    pub properties: CaUploadProperties,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaUploadProperties {
    pub certificate: String,
    #[serde(default)]
    pub is_verified: bool,
}

/// `POST /certificates/{name}/verify`: the verification certificate's PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaVerifyRequest {
    pub certificate: String,
}

/// `PATCH`/`PUT /twins/{id}` (and a module's): tags and desired properties, both optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TwinPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<DesiredPatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DesiredPatch {
    pub desired: Value,
}

impl TwinPatch {
    /// A patch of the desired properties only.
    pub fn desired(desired: Value) -> Self {
        Self {
            properties: Some(DesiredPatch { desired }),
            tags: None,
        }
    }
}

/// `POST /devices/{id}/applyConfigurationContent`: each module's desired properties.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationContent {
    pub modules_content: Map<String, Value>,
}

impl ConfigurationContent {
    /// Adds `module`'s desired properties (`{"properties.desired": …}`, as the SDKs send).
    pub fn module(mut self, module: &str, desired: Value) -> Self {
        let mut twin = Map::new();
        twin.insert("properties.desired".to_owned(), desired);
        self.modules_content
            .insert(module.to_owned(), Value::Object(twin));
        self
    }
}

/// A module record as a client writes it: id, device and SAS keys (empty ones are generated).
pub fn sas_module(device_id: &str, module_id: &str, primary: Option<String>) -> Module {
    Module {
        module_id: module_id.to_owned(),
        device_id: device_id.to_owned(),
        authentication: Authentication::sas(primary, None),
        ..Module::default()
    }
}

/// A typed body as the JSON [`crate::client::ServiceClient::send`] takes. The types here have
/// string keys only, so serializing cannot fail; `Null` stands in if it ever did.
pub fn body<T: Serialize>(typed: &T) -> Value {
    serde_json::to_value(typed).unwrap_or(Value::Null)
}

/// What `GET`/`PUT /configuration/auth` carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthState {
    pub disable_device_sas: bool,
    pub disable_module_sas: bool,
}

/// A `PUT /configuration/auth` body: the switches to change (others keep their value).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_device_sas: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_module_sas: Option<bool>,
}

/// The body of `POST /devices/{id}/messages/deviceBound` (a ferrohub extension; the SDKs send
/// over AMQP, which ferrohub does not serve yet).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendRequest {
    pub body: String,
    /// `utf-8` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

/// The body of `POST /twins/{id}/methods` (`CloudToDeviceMethod`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MethodRequest {
    pub method_name: String,
    #[serde(default)]
    pub payload: Value,
    /// Absent: the hub's default wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_timeout_in_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_in_seconds: Option<u64>,
}

/// The device's answer (`CloudToDeviceMethodResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub status: i64,
    pub payload: Value,
}

/// A twin patch applied to a twin document (RFC 7396 merge): objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => {
                let entry = target
                    .entry(k.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(t) = entry {
                    merge(t, p);
                } else {
                    *entry = Value::Object(Map::new());
                    if let Value::Object(t) = entry {
                        merge(t, p);
                    }
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}
