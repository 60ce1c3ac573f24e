//! The device scope: which devices and modules may connect to this gateway, synced from the
//! hub's scope API (all of it at start and periodically; one identity on demand when an unknown
//! one connects) into the local registry, which persists for offline restarts.
//!
//! An identity the hub disabled or removed is dropped here: at the next sync, or at once when
//! the hub refuses its upstream session (the hub closes the sessions of an identity it disables
//! or deletes, and the gateway's reconnect gets CONNACK 5), which makes the gateway check that
//! identity at the hub ([`Gateway::recheck`]). Dropping closes its connections here, refuses its
//! reconnects (the local registry follows the hub) and its messages from that moment (the hub
//! would acknowledge and drop them), and is logged and counted; enabled or made a child again at
//! the hub, it is let back in at the next sync or when a lookup finds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::Status;
use tracing::{info, warn};

use crate::{EdgeError, Gateway};

/// How often one unknown identity may be looked up at the hub (ms); also how often one
/// identity is checked again after the hub refused its upstream session.
pub const LOOKUP_EVERY_MS: i64 = 10_000;

/// Why an identity behind the gateway was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The hub lists the device as disabled.
    Disabled,
    /// The hub no longer lists it in this gateway's scope (deleted, or no longer its child).
    Removed,
}

impl DropReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Removed => "removed",
        }
    }

    /// What happened and what lets it back in, for the log.
    fn why(self) -> &'static str {
        match self {
            Self::Disabled => {
                "disabled at the hub; enable it there to let it back in (at the next scope sync)"
            }
            Self::Removed => {
                "removed at the hub (deleted, or no longer a child of this gateway); make it a \
                 child of this gateway there to let it back in"
            }
        }
    }
}

/// The identities dropped because the hub disabled or removed them (client id → why): their
/// messages are not acknowledged any more. Kept in memory: the local registry keeps refusing
/// their connections across restarts.
#[derive(Default)]
pub(crate) struct Dropped {
    refused: RwLock<HashMap<String, DropReason>>,
    /// Drops of served identities, by reason.
    pub disabled: AtomicU64,
    pub removed: AtomicU64,
    /// Messages refused because their sender was dropped.
    pub messages: AtomicU64,
}

impl Dropped {
    /// Why `client_id` (`device` or `device/module`), or its device, was dropped.
    pub fn reason(&self, client_id: &str) -> Option<DropReason> {
        let map = self.refused.read().ok()?;
        if map.is_empty() {
            return None;
        }
        map.get(client_id)
            .or_else(|| client_id.split_once('/').and_then(|(d, _)| map.get(d)))
            .copied()
    }

    fn mark(&self, client_id: &str, reason: DropReason) {
        if let Ok(mut map) = self.refused.write() {
            map.insert(client_id.to_owned(), reason);
        }
    }

    fn clear(&self, client_id: &str) {
        if let Ok(mut map) = self.refused.write()
            && map.remove(client_id).is_some()
        {
            info!(
                client_id,
                "Let back in: the hub lists it in this gateway's scope again"
            );
        }
    }

    fn count(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Disabled => &self.disabled,
            DropReason::Removed => &self.removed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether `id` may be asked about now: not asked within [`LOOKUP_EVERY_MS`] (then remembered).
fn first_in_a_while(asked: &Mutex<HashMap<String, i64>>, id: &str, now: i64) -> bool {
    let Ok(mut seen) = asked.lock() else {
        return true;
    };
    seen.retain(|_, at| now - *at < LOOKUP_EVERY_MS);
    seen.insert(id.to_owned(), now).is_none()
}

fn split(client_id: &str) -> (&str, Option<&str>) {
    match client_id.split_once('/') {
        Some((d, m)) => (d, Some(m)),
        None => (client_id, None),
    }
}

/// One page of the scope API.
#[derive(Default)]
struct Page {
    devices: Vec<hub_wire::model::Device>,
    modules: Vec<hub_wire::model::Module>,
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
        let now = ferrohub_runtime::time::now_ms(self.clock.as_ref());
        if !first_in_a_while(&self.lookups, client_id, now) {
            return false;
        }
        let (device, module) = split(client_id);
        let page = match self.fetch_one(device, module).await {
            Ok(p) => p,
            Err(e) => {
                info!(client_id, error = %e, "Could not look up an unknown identity at the hub");
                return false;
            }
        };
        if page.devices.is_empty() || (module.is_some() && page.modules.is_empty()) {
            match self.dropped.reason(client_id) {
                Some(r) => info!(client_id, reason = r.label(), "Refused: {}", r.why()),
                None => info!(client_id, "Not in this gateway's scope at the hub either"),
            }
            return false;
        }
        let err = |e: ferrohub_runtime::error::ApiError| warn!(client_id, error = %e, "Could not add a new identity");
        for d in page.devices {
            let id = d.device_id.clone();
            let enabled = d.status == Status::Enabled;
            if !enabled {
                self.dropped.mark(&id, DropReason::Disabled);
            }
            if self
                .local
                .registry
                .put_device(&id, d, &IfMatch::Any)
                .map_err(err)
                .is_err()
            {
                return false;
            }
            if enabled {
                self.dropped.clear(&id);
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
            self.dropped.clear(&format!("{d}/{id}"));
        }
        info!(client_id, "New identity in this gateway's scope");
        true
    }

    /// Checks one identity (`device` or `device/module`) at the hub after the hub refused its
    /// upstream session as not authorized, and drops it here when the hub disabled or removed
    /// it. Another refusal (say, of the gateway's own credential) leaves it alone. At most once
    /// per identity per [`LOOKUP_EVERY_MS`].
    pub async fn recheck(&self, client_id: &str) {
        let now = ferrohub_runtime::time::now_ms(self.clock.as_ref());
        if !first_in_a_while(&self.rechecks, client_id, now) {
            return;
        }
        let (device, module) = split(client_id);
        let page = match self.fetch_one(device, module).await {
            Ok(p) => p,
            Err(e) => {
                info!(client_id, error = %e, "The hub refused an upstream session; could not check the identity there");
                return;
            }
        };
        let found = page.devices.into_iter().find(|d| d.device_id == device);
        let dropped = match (found, module) {
            (None, _) => self.drop_device(device, DropReason::Removed, None),
            (Some(d), _) if d.status == Status::Disabled => {
                self.drop_device(device, DropReason::Disabled, Some(d))
            }
            (Some(_), Some(m)) if page.modules.is_empty() => self.drop_module(device, m),
            (Some(_), _) => {
                info!(
                    client_id,
                    "The hub refused an upstream session but lists the identity in this gateway's scope, enabled; keeping it"
                );
                Ok(())
            }
        };
        if let Err(e) = dropped {
            warn!(client_id, error = %e, "Could not drop an identity the hub disabled or removed");
        }
    }

    /// Drops a device (and its modules): its messages are refused from now on, the local registry
    /// keeps it as disabled (`disabled`) or forgets it, and its connections here are closed.
    /// Logged and counted when it was served until now.
    fn drop_device(
        &self,
        id: &str,
        reason: DropReason,
        disabled: Option<hub_wire::model::Device>,
    ) -> Result<(), ferrohub_runtime::error::ApiError> {
        let served = self
            .local
            .registry
            .store()
            .get_device(id)
            .ok()
            .flatten()
            .is_some_and(|d| d.status == Status::Enabled);
        self.dropped.mark(id, reason);
        match disabled {
            Some(d) => self
                .local
                .registry
                .put_device(id, d, &IfMatch::Any)
                .map(drop)?,
            None => {
                if let Err(e) = self.local.registry.delete_device(id, &IfMatch::Any)
                    && e.status != hyper::StatusCode::NOT_FOUND
                {
                    return Err(e);
                }
            }
        }
        self.local.connections.kick_device(id);
        if served {
            self.dropped.count(reason);
            warn!(
                client_id = id,
                reason = reason.label(),
                "Dropped from this gateway (connections closed, reconnects and messages refused): {}",
                reason.why()
            );
        }
        Ok(())
    }

    /// Drops a module removed at the hub (see [`Gateway::drop_device`]).
    fn drop_module(
        &self,
        device: &str,
        module: &str,
    ) -> Result<(), ferrohub_runtime::error::ApiError> {
        let client_id = format!("{device}/{module}");
        self.dropped.mark(&client_id, DropReason::Removed);
        let served = match self
            .local
            .registry
            .delete_module(device, module, &IfMatch::Any)
        {
            Ok(()) => true,
            Err(e) if e.status == hyper::StatusCode::NOT_FOUND => false,
            Err(e) => return Err(e),
        };
        self.local.connections.kick(&client_id);
        if served {
            self.dropped.count(DropReason::Removed);
            warn!(
                client_id,
                reason = "removed",
                "Dropped from this gateway (connections closed, reconnects and messages refused): {}",
                DropReason::Removed.why()
            );
        }
        Ok(())
    }

    /// The scope API's answer for one identity.
    async fn fetch_one(&self, device: &str, module: Option<&str>) -> Result<Page, EdgeError> {
        let mut path = format!(
            "/devices/{}/modules/$edgeHub/deviceAndModuleInDeviceScope?targetDeviceId={}",
            iot_auth::percent_encode(&self.config.edge_id),
            iot_auth::percent_encode(device)
        );
        if let Some(m) = module {
            path.push_str(&format!("&targetModuleId={}", iot_auth::percent_encode(m)));
        }
        self.fetch(&path).await
    }

    /// One page of the hub's scope API, called with the `$edgeHub` token.
    async fn fetch(&self, path: &str) -> Result<Page, EdgeError> {
        let client = ferrohub_runtime::client::ServiceClient::new(
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
    fn apply_modules(&self, modules: Vec<hub_wire::model::Module>) -> Result<(), EdgeError> {
        let err = |e: ferrohub_runtime::error::ApiError| EdgeError::Scope(e.to_string());
        let mut by_device: std::collections::BTreeMap<String, Vec<hub_wire::model::Module>> =
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
                    self.drop_module(&device.device_id, &old.module_id)
                        .map_err(err)?;
                }
            }
            for m in wanted {
                let (d, id) = (m.device_id.clone(), m.module_id.clone());
                self.local
                    .registry
                    .put_module(&d, &id, m, &IfMatch::Any)
                    .map_err(err)?;
                self.dropped.clear(&format!("{d}/{id}"));
            }
        }
        Ok(())
    }

    fn apply_scope(&self, children: Vec<hub_wire::model::Device>) -> Result<usize, EdgeError> {
        let err = |e: ferrohub_runtime::error::ApiError| EdgeError::Scope(e.to_string());
        let wanted: std::collections::BTreeSet<String> =
            children.iter().map(|d| d.device_id.clone()).collect();
        for old in self.local.registry.list_devices(None).map_err(err)? {
            if !wanted.contains(&old.device_id) {
                self.drop_device(&old.device_id, DropReason::Removed, None)
                    .map_err(err)?;
            }
        }
        let n = children
            .iter()
            .filter(|d| d.device_id != self.config.edge_id)
            .count();
        for d in children {
            let id = d.device_id.clone();
            if d.status == Status::Disabled {
                self.drop_device(&id, DropReason::Disabled, Some(d))
                    .map_err(err)?;
            } else {
                self.local
                    .registry
                    .put_device(&id, d, &IfMatch::Any)
                    .map_err(err)?;
                self.dropped.clear(&id);
            }
        }
        Ok(n)
    }
}
