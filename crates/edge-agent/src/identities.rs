//! Module identities at the hub, managed with the edge device's own credentials (the hub lets a
//! device create, read and delete its own modules and read their twins), and the keys the
//! agent keeps for them (`state/identities.json`, 0600) so modules start while the hub is away.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrohub_runtime::client::{ClientError, ServiceClient};
use hyper::{Method, StatusCode};
use serde_json::Value;

/// How long a call to the hub may take before the agent uses what it kept.
const HUB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a module process needs of its identity.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModuleIdentity {
    pub key: String,
    pub generation_id: String,
}

impl std::fmt::Debug for ModuleIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleIdentity")
            .field("generation_id", &self.generation_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the hub: {0}")]
    Hub(#[from] ClientError),
    #[error("the hub did not answer in time")]
    Timeout,
    #[error("module {0} has no symmetric key at the hub")]
    NoKey(String),
    #[error("cannot keep module identities in {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The hub's registry, as the edge device sees it.
pub struct Identities {
    client: ServiceClient,
    edge_id: String,
    cache_path: PathBuf,
    cache: std::sync::Mutex<BTreeMap<String, ModuleIdentity>>,
}

impl Identities {
    /// `device_key` is the edge device's own key (base64).
    pub fn new(
        config: &crate::config::AgentConfig,
        tls: Arc<rustls::ClientConfig>,
        clock: ferrohub_runtime::time::SharedClock,
    ) -> Self {
        let key = iot_auth::sas::decode_key(&config.device_key).unwrap_or_default();
        let client = ServiceClient::for_device(
            config.hub_https.clone(),
            config.hub_hostname.clone(),
            &config.edge_id,
            key,
            tls,
        )
        .with_clock(clock);
        let cache_path = config.data_dir.join("state/identities.json");
        let cache = std::fs::read(&cache_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            client,
            edge_id: config.edge_id.clone(),
            cache_path,
            cache: std::sync::Mutex::new(cache),
        }
    }

    fn module_path(&self, module: &str) -> String {
        format!(
            "/devices/{}/modules/{}",
            iot_auth::percent_encode(&self.edge_id),
            iot_auth::percent_encode(module)
        )
    }

    /// The module's identity at the hub, created (`managedBy: iotEdge`) if missing; the last
    /// one known when the hub cannot be reached.
    pub async fn ensure(&self, module: &str) -> Result<ModuleIdentity, IdentityError> {
        let fetched = tokio::time::timeout(HUB_TIMEOUT, self.fetch_or_create(module)).await;
        match fetched {
            Ok(Ok(id)) => {
                self.remember(module, Some(id.clone()))?;
                Ok(id)
            }
            Ok(Err(IdentityError::Hub(
                e @ (ClientError::Connect { .. } | ClientError::Tls { .. } | ClientError::Http(_)),
            ))) => self.cached(module).ok_or(IdentityError::Hub(e)),
            Err(_) => self.cached(module).ok_or(IdentityError::Timeout),
            Ok(Err(e)) => Err(e),
        }
    }

    async fn fetch_or_create(&self, module: &str) -> Result<ModuleIdentity, IdentityError> {
        let path = self.module_path(module);
        let r = self.client.send(Method::GET, &path, None, &[]).await?;
        let m = if r.status == StatusCode::NOT_FOUND {
            let record = hub_wire::Module {
                managed_by: Some("iotEdge".to_owned()),
                ..hub_wire::sas_module(&self.edge_id, module, None)
            };
            self.client
                .send(Method::PUT, &path, Some(&hub_wire::body(&record)), &[])
                .await?
                .ok()?
                .json()
        } else {
            r.ok()?.json()
        };
        let key = m["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| IdentityError::NoKey(module.to_owned()))?;
        Ok(ModuleIdentity {
            key: key.to_owned(),
            generation_id: m["generationId"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Deletes the module's identity at the hub (gone already is fine).
    pub async fn remove(&self, module: &str) -> Result<(), IdentityError> {
        let r = self
            .client
            .send(Method::DELETE, &self.module_path(module), None, &[])
            .await?;
        if r.status != StatusCode::NOT_FOUND {
            r.ok()?;
        }
        self.remember(module, None)
    }

    /// Modules of the edge device that IoT Edge manages (`managedBy: iotEdge`), system modules
    /// excepted.
    pub async fn managed(&self) -> Result<Vec<String>, IdentityError> {
        let list = self
            .client
            .send(
                Method::GET,
                &format!(
                    "/devices/{}/modules",
                    iot_auth::percent_encode(&self.edge_id)
                ),
                None,
                &[],
            )
            .await?
            .ok()?
            .json();
        Ok(list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|m| {
                        m["managedBy"]
                            .as_str()
                            .is_some_and(|b| b.eq_ignore_ascii_case("iotEdge"))
                    })
                    .filter_map(|m| m["moduleId"].as_str())
                    .filter(|id| !id.starts_with('$'))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The desired properties of the `$edgeHub` twin.
    pub async fn edge_hub_desired(&self) -> Result<Value, IdentityError> {
        let twin = self
            .client
            .send(
                Method::GET,
                &format!(
                    "/twins/{}/modules/$edgeHub",
                    iot_auth::percent_encode(&self.edge_id)
                ),
                None,
                &[],
            )
            .await?
            .ok()?
            .json();
        Ok(twin["properties"]["desired"].clone())
    }

    fn cached(&self, module: &str) -> Option<ModuleIdentity> {
        self.cache.lock().ok()?.get(module).cloned()
    }

    fn remember(&self, module: &str, id: Option<ModuleIdentity>) -> Result<(), IdentityError> {
        let Ok(mut cache) = self.cache.lock() else {
            return Ok(());
        };
        let changed = match id {
            Some(id) => cache.insert(module.to_owned(), id.clone()) != Some(id),
            None => cache.remove(module).is_some(),
        };
        if changed {
            write_secret(
                &self.cache_path,
                &serde_json::to_vec(&*cache).unwrap_or_default(),
            )
            .map_err(|source| IdentityError::Cache {
                path: self.cache_path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// Writes a file readable by its owner only, atomically (identityd's writer: temp + fsync +
/// rename, mode 0600).
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    identity::identityd::write_atomic(path, bytes)
}
