//! Talking to DPS and the hub over HTTPS: TLS roots from certd's trust bundle, the device's X.509
//! identity for client authentication, or SAS tokens signed in keyd.

use std::sync::Arc;

use ferrohub_runtime::client::ServiceClient;
use hyper::{Method, StatusCode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use super::device::{DeviceAuth, DeviceInfo, ProvisionError};
use super::keys::Keys;
use crate::client::{UdsClient, UdsError};
use crate::keyd::KeyStore;

pub struct Cloud {
    pub certd: UdsClient,
    /// The key store, for the device's X.509 private key at TLS handshakes (in-process only).
    pub store: Option<Arc<dyn KeyStore>>,
    /// certd id of the CAs to trust.
    pub trust_bundle: Option<String>,
    /// Hub host name → `host:port` to dial instead of `{host}:443` (tests, benchmarks).
    pub hub_addresses: std::collections::BTreeMap<String, String>,
    pub clock: ferrohub_runtime::time::SharedClock,
}

fn net(e: impl std::fmt::Display) -> ProvisionError {
    ProvisionError::Network(e.to_string())
}

impl Cloud {
    pub async fn cert_pem(&self, id: &str) -> Result<String, UdsError> {
        let path = format!(
            "/certificates/{}?api-version=2020-09-01",
            iot_auth::percent_encode(id)
        );
        let v = self.certd.call(Method::GET, &path, None).await?;
        Ok(v["pem"].as_str().unwrap_or_default().to_owned())
    }

    /// The trust bundle's PEM (empty when none is configured).
    pub async fn trust_bundle_pem(&self) -> Result<String, UdsError> {
        match &self.trust_bundle {
            Some(id) => self.cert_pem(id).await,
            None => Ok(String::new()),
        }
    }

    fn expiry(&self) -> u64 {
        u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0) + 3600
    }

    async fn tls(&self, auth: &DeviceAuth) -> Result<Arc<rustls::ClientConfig>, ProvisionError> {
        let bundle = self.trust_bundle_pem().await?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(bundle.as_bytes()).flatten() {
            let _ = roots.add(c);
        }
        if roots.is_empty() {
            return Err(ProvisionError::Dps("no trust bundle: set trust_bundle_cert in the super-config to the CA of the hub and DPS".into()));
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let config = match auth {
            DeviceAuth::Sas { .. } => builder.with_no_client_auth(),
            DeviceAuth::X509 { cert_id, key_id } => {
                let pem = self.cert_pem(cert_id).await?;
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(pem.as_bytes())
                        .flatten()
                        .collect();
                let store = self.store.as_ref().ok_or_else(|| {
                    ProvisionError::Dps(
                        "X.509 identity needs keyd's key store in this process".into(),
                    )
                })?;
                let key = store
                    .key_pair(key_id, None)
                    .map_err(|e| ProvisionError::Dps(format!("identity key {key_id}: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes())
                    .map_err(|e| ProvisionError::Dps(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ProvisionError::Dps(e.to_string()))?
            }
        };
        Ok(Arc::new(config))
    }

    /// A client for DPS's device API at `endpoint` (`https://host[:port]`).
    pub async fn dps_client(
        &self,
        endpoint: &str,
        auth: &DeviceAuth,
        resource: &str,
        keys: &Keys,
    ) -> Result<ServiceClient, ProvisionError> {
        let host = endpoint
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let (hostname, addr) = match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                (h.to_owned(), host.to_owned())
            }
            _ => (host.to_owned(), format!("{host}:443")),
        };
        let client = ServiceClient::new(
            addr,
            hostname,
            String::new(),
            Vec::new(),
            self.tls(auth).await?,
        )
        .with_api_version("2021-06-01");
        let token = match auth {
            DeviceAuth::Sas { key_id } => {
                let handle = keys.key_handle(key_id).await?;
                Some(
                    keys.sas_token(&handle, resource, self.expiry(), Some("registration"))
                        .await?,
                )
            }
            DeviceAuth::X509 { .. } => None,
        };
        Ok(client.with_authorization(token))
    }

    /// A DPS call: the JSON answer, or why not (a refusal is not a network error).
    pub async fn dps_call(
        &self,
        client: &ServiceClient,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ProvisionError> {
        let r = client.send(method, path, body, &[]).await.map_err(net)?;
        if r.status.is_success() {
            Ok(r.json())
        } else {
            Err(ProvisionError::Dps(format!(
                "DPS answered {}: {}",
                r.status,
                r.json()
            )))
        }
    }

    /// A client for the hub's API as the device itself (its modules).
    pub async fn hub_client(
        &self,
        device: &DeviceInfo,
        auth: &DeviceAuth,
        keys: &Keys,
    ) -> Result<ServiceClient, ProvisionError> {
        let gateway = &device.local_gateway_hostname;
        let addr = self
            .hub_addresses
            .get(gateway)
            .cloned()
            .unwrap_or_else(|| format!("{gateway}:443"));
        let client = ServiceClient::new(
            addr,
            gateway.clone(),
            String::new(),
            Vec::new(),
            self.tls(auth).await?,
        );
        let token = match auth {
            DeviceAuth::Sas { key_id } => {
                let handle = keys.key_handle(key_id).await?;
                let resource = format!("{}/devices/{}", device.hub_name, device.device_id);
                Some(
                    keys.sas_token(&handle, &resource, self.expiry(), None)
                        .await?,
                )
            }
            DeviceAuth::X509 { .. } => None,
        };
        Ok(client.with_authorization(token))
    }
}

/// A hub call's answer; 5xx and transport failures count as network errors (a parent gateway
/// reports upstream failures as 500).
pub async fn hub_call(
    client: &ServiceClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
    if_match: bool,
) -> Result<(StatusCode, Value), ProvisionError> {
    let headers: &[(&str, &str)] = if if_match { &[("if-match", "*")] } else { &[] };
    let r = client
        .send(method, path, body, headers)
        .await
        .map_err(net)?;
    if r.status.is_server_error() {
        return Err(ProvisionError::Network(format!(
            "hub answered {}",
            r.status
        )));
    }
    Ok((r.status, r.json()))
}
