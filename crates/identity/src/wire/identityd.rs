//! identityd's request and answer bodies (aziot identityd `2020-09-01` … `2022-08-01`).

use serde::{Deserialize, Serialize};

/// The only identity type served: hub identities (aziot's local identities are not supported).
pub const AZIOT: &str = "aziot";

/// `POST /identities/device`: `{"type": "aziot"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityTypeRequest {
    #[serde(default, rename = "type")]
    pub id_type: Option<String>,
}

impl IdentityTypeRequest {
    pub fn aziot() -> Self {
        Self {
            id_type: Some(AZIOT.to_owned()),
        }
    }
}

/// `POST /identities/modules`: `{"type": "aziot", "moduleId": …}`. Both fields are optional on
/// parse so that their absence is identityd's 400 with its own message, not a parse failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateModuleRequest {
    #[serde(default)]
    pub module_id: Option<String>,
    #[serde(default, rename = "type")]
    pub id_type: Option<String>,
}

impl CreateModuleRequest {
    pub fn aziot(module_id: &str) -> Self {
        Self {
            module_id: Some(module_id.to_owned()),
            id_type: Some(AZIOT.to_owned()),
        }
    }
}

/// An identity: the device's, or a module's (with `moduleId` and `genId`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub spec: IdentitySpec,
    #[serde(rename = "type")]
    pub id_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// Left out in module lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthInfo>,
    pub device_id: String,
    pub gateway_host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_id: Option<String>,
    pub hub_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_id: Option<String>,
}

/// How the identity authenticates: a key handle for keyd, and for X.509 the certificate's id in
/// certd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_id: Option<String>,
    pub key_handle: String,
    #[serde(rename = "type")]
    pub auth_type: AuthType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    Sas,
    X509,
}

/// The answer of `GET /identities/modules`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityList {
    pub identities: Vec<Identity>,
}

/// The answer of `GET /trust-bundle`: PEM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrustBundle {
    pub certificate: String,
}

/// The answer of `GET /identities/provisioning` (snake_case keys, as aziot's).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum ProvisioningInfo {
    None,
    Manual {
        /// `sas` or `x509`.
        auth: String,
    },
    Dps {
        /// `symmetric_key` or `x509`.
        auth: String,
        endpoint: String,
        scope_id: String,
        registration_id: Option<String>,
        payload: Option<PayloadUri>,
    },
}

/// Where the DPS registration's custom payload comes from (`file://…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayloadUri {
    pub uri: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_aziot_json() {
        let module = Identity {
            id_type: AZIOT.into(),
            spec: IdentitySpec {
                auth: Some(AuthInfo {
                    cert_id: None,
                    key_handle: "h".into(),
                    auth_type: AuthType::Sas,
                }),
                device_id: "d".into(),
                gateway_host: "g".into(),
                gen_id: Some("1".into()),
                hub_name: "hub".into(),
                module_id: Some("m".into()),
            },
        };
        assert_eq!(
            serde_json::to_string(&module).unwrap_or_default(),
            r#"{"spec":{"auth":{"keyHandle":"h","type":"sas"},"deviceId":"d","gatewayHost":"g","genId":"1","hubName":"hub","moduleId":"m"},"type":"aziot"}"#
        );
        let dps = ProvisioningInfo::Dps {
            auth: "x509".into(),
            endpoint: "https://e".into(),
            scope_id: "0ne".into(),
            registration_id: Some("r".into()),
            payload: None,
        };
        let v = serde_json::to_value(&dps).unwrap_or_default();
        assert_eq!(v["source"], "dps");
        assert!(v["payload"].is_null() && v.get("payload").is_some());
    }
}
