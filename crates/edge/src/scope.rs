//! The device scope: which devices and modules may connect to this gateway, synced from the
//! hub's scope API (all of it at start and periodically; one identity on demand when an unknown
//! one connects) into the local registry, which persists for offline restarts.

use hub::registry::IfMatch;
use tracing::{info, warn};

use crate::{EdgeError, Gateway};

/// How often one unknown identity may be looked up at the hub (ms).
pub const LOOKUP_EVERY_MS: i64 = 10_000;

/// One page of the scope API.
#[derive(Default)]
struct Page {
    devices: Vec<hub::model::Device>,
    modules: Vec<hub::model::Module>,
    cas: Vec<(String, String)>,
    next: Option<String>,
}

impl Gateway {
    /// Reads the device scope from the hub and makes the local registry match it (children only).
    /// Returns the number of children. The registry persists, so an offline restart still knows them.
    pub async fn sync_scope(&self) -> Result<usize, EdgeError> {
        let mut path = format!(
            "/devices/{}/modules/$edgeHub/devicesAndModulesInDeviceScope?deviceCount=500",
            iot_auth::percent_encode(&self.config.edge_id)
        );
        let mut all = Page::default();
        loop {
            let page = self.fetch(&path).await?;
            all.devices.extend(page.devices);
            all.modules.extend(page.modules);
            all.cas.extend(page.cas);
            match page.next {
                Some(link) => path = link,
                None => break,
            }
        }
        self.adopt_cas(all.cas);
        let n = self.apply_scope(all.devices)?;
        self.apply_modules(all.modules)?;
        Ok(n)
    }

    /// Looks up one identity (`device` or `device/module`) the local registry does not know, in
    /// case it joined the scope since the last sync; adds it when the hub says it is in scope.
    /// An identity is looked up at most once per [`LOOKUP_EVERY_MS`].
    pub async fn lookup(&self, client_id: &str) -> bool {
        let now = hub::time::now_ms(self.clock.as_ref());
        if let Ok(mut seen) = self.lookups.lock() {
            seen.retain(|_, at| now - *at < LOOKUP_EVERY_MS);
            if seen.insert(client_id.to_owned(), now).is_some() {
                return false;
            }
        }
        let (device, module) = match client_id.split_once('/') {
            Some((d, m)) => (d, Some(m)),
            None => (client_id, None),
        };
        let mut path = format!(
            "/devices/{}/modules/$edgeHub/deviceAndModuleInDeviceScope?targetDeviceId={}",
            iot_auth::percent_encode(&self.config.edge_id),
            iot_auth::percent_encode(device)
        );
        if let Some(m) = module {
            path.push_str(&format!("&targetModuleId={}", iot_auth::percent_encode(m)));
        }
        let page = match self.fetch(&path).await {
            Ok(p) => p,
            Err(e) => {
                info!(client_id, error = %e, "Could not look up an unknown identity at the hub");
                return false;
            }
        };
        if page.devices.is_empty() || (module.is_some() && page.modules.is_empty()) {
            info!(client_id, "Not in this gateway's scope at the hub either");
            return false;
        }
        let err =
            |e: hub::error::ApiError| warn!(client_id, error = %e, "Could not add a new identity");
        for d in page.devices {
            let id = d.device_id.clone();
            if self
                .local
                .registry
                .put_device(&id, d, &IfMatch::Any)
                .map_err(err)
                .is_err()
            {
                return false;
            }
        }
        for m in page.modules {
            let (d, id) = (m.device_id.clone(), m.module_id.clone());
            if self
                .local
                .registry
                .put_module(&d, &id, m, &IfMatch::Any)
                .map_err(err)
                .is_err()
            {
                return false;
            }
        }
        info!(client_id, "New identity in this gateway's scope");
        true
    }

    /// One page of the hub's scope API, called with the `$edgeHub` token.
    async fn fetch(&self, path: &str) -> Result<Page, EdgeError> {
        let client = hub::client::ServiceClient::new(
            self.config.hub_https.clone(),
            self.config.hub_hostname.clone(),
            String::new(),
            Vec::new(),
            self.link.tls.clone(),
        )
        .with_api_version("2018-08-30-preview")
        .with_authorization(Some(self.edge_hub_token().await?));
        let r = client
            .send(hyper::Method::GET, path, None, &[])
            .await
            .map_err(|e| EdgeError::Scope(e.to_string()))?;
        if !r.status.is_success() {
            return Err(EdgeError::Scope(format!(
                "the hub answered {}: {}",
                r.status,
                r.json()
            )));
        }
        let page = r.json();
        let list = |key: &str| page[key].as_array().cloned().unwrap_or_default();
        Ok(Page {
            devices: list("devices")
                .into_iter()
                .filter_map(|d| serde_json::from_value(d).ok())
                .collect(),
            modules: list("modules")
                .into_iter()
                .filter_map(|m| serde_json::from_value(m).ok())
                .collect(),
            cas: list("certificateAuthorities")
                .iter()
                .filter_map(|ca| {
                    Some((
                        ca["name"].as_str()?.to_owned(),
                        ca["certificate"].as_str()?.to_owned(),
                    ))
                })
                .collect(),
            next: page["continuationLink"].as_str().map(str::to_owned),
        })
    }

    /// The hub's verified CAs: CA-signed children are checked against them here too.
    fn adopt_cas(&self, cas: Vec<(String, String)>) {
        for (name, pem) in cas {
            if let Err(e) = self.local.cas.upload(&name, &pem, true, &IfMatch::Any) {
                warn!(ca = %name, error = %e, "Could not take over a CA certificate from the hub");
            }
        }
    }

    /// Makes the local modules match the hub's (the edge device's own modules authenticate here
    /// with their own keys).
    fn apply_modules(&self, modules: Vec<hub::model::Module>) -> Result<(), EdgeError> {
        let err = |e: hub::error::ApiError| EdgeError::Scope(e.to_string());
        let mut by_device: std::collections::BTreeMap<String, Vec<hub::model::Module>> =
            std::collections::BTreeMap::new();
        for m in modules {
            by_device.entry(m.device_id.clone()).or_default().push(m);
        }
        for device in self.local.registry.list_devices(None).map_err(err)? {
            let wanted = by_device.remove(&device.device_id).unwrap_or_default();
            for old in self
                .local
                .registry
                .list_modules(&device.device_id)
                .map_err(err)?
            {
                if !wanted.iter().any(|m| m.module_id == old.module_id) {
                    self.local
                        .registry
                        .delete_module(&device.device_id, &old.module_id, &IfMatch::Any)
                        .map_err(err)?;
                    self.local
                        .connections
                        .kick(&format!("{}/{}", device.device_id, old.module_id));
                }
            }
            for m in wanted {
                let (d, id) = (m.device_id.clone(), m.module_id.clone());
                self.local
                    .registry
                    .put_module(&d, &id, m, &IfMatch::Any)
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    fn apply_scope(&self, children: Vec<hub::model::Device>) -> Result<usize, EdgeError> {
        let err = |e: hub::error::ApiError| EdgeError::Scope(e.to_string());
        let wanted: std::collections::BTreeSet<String> =
            children.iter().map(|d| d.device_id.clone()).collect();
        for old in self.local.registry.list_devices(None).map_err(err)? {
            if !wanted.contains(&old.device_id) {
                info!(device = %old.device_id, "Removed from this gateway's scope");
                self.local
                    .registry
                    .delete_device(&old.device_id, &IfMatch::Any)
                    .map_err(err)?;
                self.local.connections.kick_device(&old.device_id);
            }
        }
        let n = children
            .iter()
            .filter(|d| d.device_id != self.config.edge_id)
            .count();
        for d in children {
            let id = d.device_id.clone();
            let disabled = d.status == hub::model::Status::Disabled;
            self.local
                .registry
                .put_device(&id, d, &IfMatch::Any)
                .map_err(err)?;
            if disabled {
                self.local.connections.kick_device(&id);
            }
        }
        Ok(n)
    }
}
