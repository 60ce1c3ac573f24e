//! The device identity: from the config (manual) or from DPS, cached in `{homedir}/device_info`
//! so a restart without network still knows its hub.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hub_wire::dps::DeviceRegistration;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::cloud::Cloud;
use super::keys::Keys;
use crate::config::daemons::{DpsAttestation, ManualAuth, Provisioning};

/// Where the device lives, as cached on disk (aziot's `device_info`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub hub_name: String,
    /// Where modules connect (`GatewayHostName`); the hub unless a gateway is configured.
    pub local_gateway_hostname: String,
    pub device_id: String,
}

/// How the device authenticates (key and cert ids in keyd/certd).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAuth {
    Sas { key_id: String },
    X509 { cert_id: String, key_id: String },
}

/// Why provisioning did not produce a device.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("provisioning source is none: this device has no cloud identity")]
    Unprovisioned,
    #[error("DPS: {0}")]
    Dps(String),
    #[error("keyd: {0}")]
    Keys(#[from] crate::client::UdsError),
    #[error("network: {0}")]
    Network(String),
}

impl ProvisionError {
    /// A failure to reach the cloud (tolerated at startup when a backup exists).
    pub fn is_network(&self) -> bool {
        matches!(self, Self::Network(_))
    }
}

pub fn device_info_path(homedir: &Path) -> PathBuf {
    homedir.join("device_info")
}

/// The cached device, if the file parses (a corrupt one is removed and ignored).
pub fn read_backup(homedir: &Path) -> Option<DeviceInfo> {
    let path = device_info_path(homedir);
    let text = std::fs::read_to_string(&path).ok()?;
    match toml::from_str(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "Ignoring an unreadable device backup");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

pub fn write_backup(homedir: &Path, device: &DeviceInfo) -> std::io::Result<()> {
    let text = toml::to_string(device).map_err(std::io::Error::other)?;
    crate::identityd::write_atomic(&device_info_path(homedir), text.as_bytes())
}

/// The credential kind of a provisioning config.
pub fn auth_of(p: &Provisioning) -> Option<DeviceAuth> {
    match p {
        Provisioning::Manual {
            authentication: ManualAuth::Sas { device_id_pk },
            ..
        } => Some(DeviceAuth::Sas {
            key_id: device_id_pk.clone(),
        }),
        Provisioning::Manual {
            authentication:
                ManualAuth::X509 {
                    identity_cert,
                    identity_pk,
                },
            ..
        }
        | Provisioning::Dps {
            attestation:
                DpsAttestation::X509 {
                    identity_cert,
                    identity_pk,
                    ..
                },
            ..
        } => Some(DeviceAuth::X509 {
            cert_id: identity_cert.clone(),
            key_id: identity_pk.clone(),
        }),
        Provisioning::Dps {
            attestation: DpsAttestation::SymmetricKey { symmetric_key, .. },
            ..
        } => Some(DeviceAuth::Sas {
            key_id: symmetric_key.clone(),
        }),
        Provisioning::None => None,
    }
}

/// Provisions: manual needs no network; DPS uses the backup when `use_backup` and it exists,
/// else registers.
pub async fn provision(
    p: &Provisioning,
    homedir: &Path,
    use_backup: bool,
    cloud: &Arc<Cloud>,
    keys: &Keys,
) -> Result<DeviceInfo, ProvisionError> {
    match p {
        Provisioning::None => Err(ProvisionError::Unprovisioned),
        Provisioning::Manual {
            iothub_hostname,
            device_id,
            local_gateway_hostname,
            ..
        } => Ok(DeviceInfo {
            hub_name: iothub_hostname.clone(),
            local_gateway_hostname: local_gateway_hostname
                .clone()
                .unwrap_or_else(|| iothub_hostname.clone()),
            device_id: device_id.clone(),
        }),
        Provisioning::Dps {
            global_endpoint,
            scope_id,
            payload,
            attestation,
        } => {
            if use_backup && let Some(d) = read_backup(homedir) {
                info!(hub = %d.hub_name, device_id = %d.device_id, "Using the device backup; DPS not called");
                return Ok(d);
            }
            let payload = match payload {
                Some(path) => Some(read_payload(path)?),
                None => None,
            };
            let registration_id = registration_id(attestation, cloud).await?;
            let d = register(
                cloud,
                keys,
                global_endpoint,
                scope_id,
                &registration_id,
                attestation,
                payload,
            )
            .await?;
            write_backup(homedir, &d)
                .map_err(|e| ProvisionError::Dps(format!("cannot write the device backup: {e}")))?;
            Ok(d)
        }
    }
}

fn read_payload(path: &Path) -> Result<Value, ProvisionError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProvisionError::Dps(format!("payload {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ProvisionError::Dps(format!("payload {}: {e}", path.display())))
}

/// The configured registration id, or the identity certificate's CN.
async fn registration_id(a: &DpsAttestation, cloud: &Cloud) -> Result<String, ProvisionError> {
    match a {
        DpsAttestation::SymmetricKey {
            registration_id, ..
        } => Ok(registration_id.clone()),
        DpsAttestation::X509 {
            registration_id: Some(r),
            ..
        } => Ok(r.clone()),
        DpsAttestation::X509 { identity_cert, .. } => {
            let pem = cloud
                .cert_pem(identity_cert)
                .await
                .map_err(|e| ProvisionError::Dps(e.to_string()))?;
            pki::Certificate::from_pem(&pem)
                .ok()
                .and_then(|c| c.common_name())
                .ok_or_else(|| {
                    ProvisionError::Dps(format!(
                        "certificate {identity_cert} has no CN to use as registration id"
                    ))
                })
        }
    }
}

async fn register(
    cloud: &Cloud,
    keys: &Keys,
    endpoint: &str,
    scope: &str,
    registration_id: &str,
    attestation: &DpsAttestation,
    payload: Option<Value>,
) -> Result<DeviceInfo, ProvisionError> {
    let auth = match attestation {
        DpsAttestation::SymmetricKey { symmetric_key, .. } => DeviceAuth::Sas {
            key_id: symmetric_key.clone(),
        },
        DpsAttestation::X509 {
            identity_cert,
            identity_pk,
            ..
        } => DeviceAuth::X509 {
            cert_id: identity_cert.clone(),
            key_id: identity_pk.clone(),
        },
    };
    let resource = format!("{scope}/registrations/{registration_id}");
    let client = cloud.dps_client(endpoint, &auth, &resource, keys).await?;
    let base = format!("/{scope}/registrations/{registration_id}");
    let body = hub_wire::body(&DeviceRegistration::new(registration_id, payload));
    let mut answer = cloud
        .dps_call(
            &client,
            hyper::Method::PUT,
            &format!("{base}/register"),
            Some(&body),
        )
        .await?;
    for _ in 0..120 {
        match answer["status"].as_str() {
            Some("assigned") => {
                let state = &answer["registrationState"];
                let hub = state["assignedHub"].as_str().unwrap_or_default().to_owned();
                let device_id = state["deviceId"].as_str().unwrap_or_default().to_owned();
                info!(%hub, %device_id, registration_id, "Provisioned through DPS");
                return Ok(DeviceInfo {
                    local_gateway_hostname: hub.clone(),
                    hub_name: hub,
                    device_id,
                });
            }
            Some("assigning") => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let op = answer["operationId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let path = format!("{base}/operations/{}", iot_auth::percent_encode(&op));
                answer = cloud
                    .dps_call(&client, hyper::Method::GET, &path, None)
                    .await?;
            }
            _ => {
                let message = answer["registrationState"]["errorMessage"]
                    .as_str()
                    .unwrap_or_default();
                return Err(ProvisionError::Dps(format!(
                    "registration {registration_id} failed: {message} {answer}"
                )));
            }
        }
    }
    Err(ProvisionError::Dps(format!(
        "registration {registration_id} still assigning after 60 s"
    )))
}
