//! Identity registry records in the JSON shape of the IoT Hub service API (api-version 2021-04-12).
//!
//! Input from service SDKs is lenient (nulls, empty keys, missing fields); [`normalize_device`] and
//! [`normalize_module`] turn it into a complete record or a clear 400.

use serde::{Deserialize, Serialize};

/// "Never", as the hub reports it for times that have not happened yet.
pub const NEVER: &str = ferrohub_runtime::time::NEVER;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    #[default]
    Enabled,
    Disabled,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionState {
    #[default]
    Disconnected,
    Connected,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthType {
    #[default]
    Sas,
    SelfSigned,
    CertificateAuthority,
    None,
}

impl AuthType {
    /// The name used in logs and in `iothub-connection-auth-method`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sas => "sas",
            Self::SelfSigned => "selfSigned",
            Self::CertificateAuthority => "certificateAuthority",
            Self::None => "none",
        }
    }
}

#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymmetricKey {
    #[serde(default)]
    pub primary_key: Option<String>,
    #[serde(default)]
    pub secondary_key: Option<String>,
}

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey { <redacted> }")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509Thumbprint {
    #[serde(default)]
    pub primary_thumbprint: Option<String>,
    #[serde(default)]
    pub secondary_thumbprint: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    #[serde(rename = "type", default)]
    pub kind: Option<AuthType>,
    #[serde(default)]
    pub symmetric_key: Option<SymmetricKey>,
    #[serde(default)]
    pub x509_thumbprint: Option<X509Thumbprint>,
}

impl Authentication {
    /// The effective type: explicit, or inferred like the Node service SDK does (thumbprints
    /// present → selfSigned, else sas).
    pub fn kind(&self) -> AuthType {
        self.kind.unwrap_or_else(|| {
            let has_thumb = self.x509_thumbprint.as_ref().is_some_and(|t| {
                t.primary_thumbprint
                    .as_deref()
                    .is_some_and(|s| !s.is_empty())
            });
            if has_thumb {
                AuthType::SelfSigned
            } else {
                AuthType::Sas
            }
        })
    }

    /// The symmetric keys that are set.
    pub fn keys(&self) -> Vec<&str> {
        let Some(k) = &self.symmetric_key else {
            return vec![];
        };
        [&k.primary_key, &k.secondary_key]
            .into_iter()
            .filter_map(|k| k.as_deref().filter(|s| !s.is_empty()))
            .collect()
    }

    /// The thumbprints that are set, upper-case.
    pub fn thumbprints(&self) -> Vec<String> {
        let Some(t) = &self.x509_thumbprint else {
            return vec![];
        };
        [&t.primary_thumbprint, &t.secondary_thumbprint]
            .into_iter()
            .filter_map(|t| t.as_deref().and_then(pki::normalize_thumbprint))
            .collect()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub iot_edge: bool,
}

/// A device identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub device_id: String,
    #[serde(default)]
    pub generation_id: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub connection_state: ConnectionState,
    #[serde(default)]
    pub status: Status,
    #[serde(default)]
    pub status_reason: Option<String>,
    #[serde(default = "never")]
    pub connection_state_updated_time: String,
    #[serde(default = "never")]
    pub status_updated_time: String,
    #[serde(default = "never")]
    pub last_activity_time: String,
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub device_scope: Option<String>,
    #[serde(default)]
    pub parent_scopes: Vec<String>,
    /// Which service manages this identity (e.g. `dps:<idScope>` for a device a provisioning
    /// service created); that service writes only the identities it manages. On a replace, an
    /// absent value keeps the stored one and `""` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// The IoT Plug and Play model (DTMI) the device or module announced with `model-id=` in its
    /// MQTT user name; recorded by the hub, never taken from a service request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

/// A module identity on a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub module_id: String,
    #[serde(default)]
    pub device_id: String,
    #[serde(default)]
    pub managed_by: Option<String>,
    #[serde(default)]
    pub generation_id: String,
    #[serde(default)]
    pub etag: String,
    #[serde(default)]
    pub connection_state: ConnectionState,
    #[serde(default = "never")]
    pub connection_state_updated_time: String,
    #[serde(default = "never")]
    pub last_activity_time: String,
    #[serde(default)]
    pub cloud_to_device_message_count: u64,
    #[serde(default)]
    pub authentication: Authentication,
    /// The IoT Plug and Play model (DTMI) the device or module announced with `model-id=` in its
    /// MQTT user name; recorded by the hub, never taken from a service request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

impl Default for Module {
    /// Never connected: the times are [`NEVER`], which the service SDKs can parse (an empty string
    /// breaks their date-time deserialisation).
    fn default() -> Self {
        Self {
            module_id: String::new(),
            device_id: String::new(),
            managed_by: None,
            generation_id: String::new(),
            etag: String::new(),
            connection_state: ConnectionState::default(),
            connection_state_updated_time: never(),
            last_activity_time: never(),
            cloud_to_device_message_count: 0,
            authentication: Authentication::default(),
            model_id: None,
        }
    }
}

impl Module {
    /// `{deviceId}/{moduleId}`: the MQTT client id, and the key of its twin and session.
    pub fn client_id(&self) -> String {
        format!("{}/{}", self.device_id, self.module_id)
    }
}

fn never() -> String {
    NEVER.to_owned()
}

/// Why a submitted identity is refused (→ 400 `ArgumentInvalid`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Completes authentication for a new or replaced identity: generates missing SAS keys, checks
/// thumbprints, clears what does not apply to the type.
pub fn normalize_auth(
    auth: &mut Authentication,
    gen_key: &mut dyn FnMut() -> Result<String, Invalid>,
) -> Result<(), Invalid> {
    let kind = auth.kind();
    auth.kind = Some(kind);
    match kind {
        AuthType::Sas => {
            let k = auth.symmetric_key.get_or_insert_with(SymmetricKey::default);
            for slot in [&mut k.primary_key, &mut k.secondary_key] {
                match slot.as_deref() {
                    None | Some("") => *slot = Some(gen_key()?),
                    Some(key) => check_key(key)?,
                }
            }
            auth.x509_thumbprint = Some(X509Thumbprint::default());
        }
        AuthType::SelfSigned => {
            let t = auth
                .x509_thumbprint
                .get_or_insert_with(X509Thumbprint::default);
            let primary = t.primary_thumbprint.as_deref().unwrap_or_default();
            t.primary_thumbprint = Some(pki::normalize_thumbprint(primary).ok_or_else(|| {
                Invalid(format!(
                    "primaryThumbprint {primary:?} must be a SHA-1 (40 hex) or SHA-256 (64 hex) thumbprint"
                ))
            })?);
            if let Some(s) = t.secondary_thumbprint.as_deref().filter(|s| !s.is_empty()) {
                t.secondary_thumbprint = Some(pki::normalize_thumbprint(s).ok_or_else(|| {
                    Invalid(format!(
                        "secondaryThumbprint {s:?} is not a SHA-1 or SHA-256 thumbprint"
                    ))
                })?);
            }
            auth.symmetric_key = Some(SymmetricKey::default());
        }
        AuthType::CertificateAuthority | AuthType::None => {
            auth.symmetric_key = Some(SymmetricKey::default());
            auth.x509_thumbprint = Some(X509Thumbprint::default());
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), Invalid> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| Invalid("symmetric keys must be base64".into()))?;
    if !(16..=64).contains(&raw.len()) {
        return Err(Invalid(
            "symmetric keys must be 16 to 64 bytes before base64 encoding".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> impl FnMut() -> Result<String, Invalid> {
        let mut n = 0;
        move || {
            n += 1;
            Ok(format!("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZW{n}="))
        }
    }

    #[test]
    fn empty_sas_keys_are_generated() {
        let json = r#"{"deviceId":"d","authentication":{"symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#;
        let mut d: Device = serde_json::from_str(json).unwrap();
        normalize_auth(&mut d.authentication, &mut keys()).unwrap();
        assert_eq!(d.authentication.kind, Some(AuthType::Sas));
        assert_eq!(d.authentication.keys().len(), 2);
        assert_eq!(d.last_activity_time, NEVER);
    }

    #[test]
    fn thumbprints_are_checked_and_normalised() {
        let mut a = Authentication {
            kind: Some(AuthType::SelfSigned),
            x509_thumbprint: Some(X509Thumbprint {
                primary_thumbprint: Some("aa".repeat(20)),
                secondary_thumbprint: None,
            }),
            ..Default::default()
        };
        normalize_auth(&mut a, &mut keys()).unwrap();
        assert_eq!(a.thumbprints(), vec!["AA".repeat(20)]);
        a.x509_thumbprint = Some(X509Thumbprint {
            primary_thumbprint: Some("zz".into()),
            secondary_thumbprint: None,
        });
        assert!(normalize_auth(&mut a, &mut keys()).is_err());
    }

    #[test]
    fn type_is_inferred_like_the_node_sdk() {
        let a: Authentication =
            serde_json::from_str(r#"{"x509Thumbprint":{"primaryThumbprint":"AB"}}"#).unwrap();
        assert_eq!(a.kind(), AuthType::SelfSigned);
        assert_eq!(Authentication::default().kind(), AuthType::Sas);
    }

    #[test]
    fn bad_keys_are_refused() {
        let mut a = Authentication {
            symmetric_key: Some(SymmetricKey {
                primary_key: Some("not base64!".into()),
                secondary_key: None,
            }),
            ..Default::default()
        };
        assert!(normalize_auth(&mut a, &mut keys()).is_err());
    }
}
