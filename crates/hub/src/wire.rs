//! The service API's request bodies in one place for both sides: the hub's handlers parse them
//! and the clients (the CLI, the edge agent, identityd's module keys) build them, so a field name
//! lives in one spot. Where the hub already has the type (registry records, CA descriptions,
//! method calls, cloud-to-device sends, the auth switches) this module re-exports it; the rest
//! are the bodies the handlers read leniently from a `Value` (query, CA upload and verify,
//! twin patches, edge configuration content).
//!
//! Property bags (desired and reported properties, tags, method payloads) stay
//! `serde_json::Value`: they are the user's own JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::auth_switch::{AuthPatch, AuthState};
pub use crate::c2d::SendRequest;
pub use crate::methods::{MethodRequest, MethodResult};
pub use crate::model::{
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
        authentication: Authentication {
            kind: Some(AuthType::Sas),
            symmetric_key: Some(SymmetricKey {
                primary_key: primary,
                secondary_key: None,
            }),
            x509_thumbprint: None,
        },
        ..Module::default()
    }
}

/// A typed body as the JSON [`crate::client::ServiceClient::send`] takes. The types here have
/// string keys only, so serializing cannot fail; `Null` stands in if it ever did.
pub fn body<T: Serialize>(typed: &T) -> Value {
    serde_json::to_value(typed).unwrap_or(Value::Null)
}
