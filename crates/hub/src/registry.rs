//! Registry rules on top of the storage: create-versus-update by `If-Match` (the rule and etags
//! are the runtime's, generated keys hub-wire's), generation ids, edge device scopes and system
//! modules, statistics. Every write ends the live sessions it invalidates (see
//! [`crate::device_session::revoke`]), whoever made it: the service API, the provisioning service
//! through it, a gateway syncing its scope.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::device_session::live::Connections;
use crate::device_session::revoke::{EndReason, Revoked};
use crate::presence::{Change, Presence};
use crate::store::Registry;
use ferrohub_runtime::error::ApiError;
use ferrohub_runtime::etag::random_bytes;
use ferrohub_runtime::time::{SharedClock, rfc3339};
use hub_wire::model::{self, Capabilities, ConnectionState, Device, Module, Status};

use ferrohub_runtime::etag::{IfMatch, new_etag};
use hub_wire::model::gen_key;

/// Module ids the hub creates for every edge device.
pub const EDGE_SYSTEM_MODULES: [&str; 2] = ["$edgeAgent", "$edgeHub"];

/// The registry service shared by the REST API, the MQTT endpoint and the CLI.
pub struct RegistryService {
    store: Arc<dyn Registry>,
    clock: SharedClock,
    /// Serialises read-modify-write sequences (etag checks) on the single-node store.
    write: Mutex<()>,
    /// Connection changes not yet written to the store (see [`crate::presence`]).
    pub presence: Presence,
    /// Counts identity changes (devices and modules written or deleted), so that what a
    /// connection remembered about other identities can tell when to look again.
    epoch: AtomicU64,
    /// The live sessions a write may end (none for a registry without an MQTT endpoint).
    sessions: Option<Arc<Connections>>,
}

/// Device counts for `/statistics/devices`.
#[derive(Debug, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStats {
    pub total_device_count: u64,
    pub enabled_device_count: u64,
    pub disabled_device_count: u64,
}

impl RegistryService {
    pub fn new(store: Arc<dyn Registry>, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            write: Mutex::new(()),
            presence: Presence::default(),
            epoch: AtomicU64::new(0),
            sessions: None,
        }
    }

    /// Writes end the live sessions in `sessions` that they invalidate.
    pub fn ending_sessions(mut self, sessions: Arc<Connections>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Ends the live sessions that rested on what `change` revoked.
    fn revoke(&self, change: Revoked<'_>) {
        if let Some(sessions) = &self.sessions {
            let n = sessions.revoke(&change);
            if n > 0 {
                tracing::info!(
                    sessions = n,
                    ?change,
                    "Ending live sessions: {}",
                    change.reason().describe()
                );
            }
        }
    }

    /// The sessions a device write invalidates: all of the device's when it is disabled; those
    /// resting on its credentials when they changed; those through a gateway when its scope did.
    fn device_written(&self, old: Option<&Device>, new: &Device) {
        let device_id = new.device_id.as_str();
        if new.status == Status::Disabled {
            let why = EndReason::Disabled;
            self.revoke(Revoked::Device { device_id, why });
            return;
        }
        let Some(old) = old else { return };
        if old.authentication != new.authentication {
            let module_id = None;
            self.revoke(Revoked::Credentials {
                device_id,
                module_id,
            });
        }
        if old.device_scope != new.device_scope || old.parent_scopes != new.parent_scopes {
            self.revoke(Revoked::Scope { device_id });
        }
    }

    /// Changes whenever a device or module is written or deleted (after the write).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn store(&self) -> &Arc<dyn Registry> {
        &self.store
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A poisoned lock only means another writer panicked; the store itself is consistent.
        self.write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> String {
        rfc3339(self.clock.now())
    }

    pub fn get_device(&self, id: &str) -> Result<Device, ApiError> {
        self.store
            .get_device(id)?
            .map(|d| self.live_device(d))
            .ok_or_else(|| ApiError::not_found("DeviceNotFound", format!("Device {id} not found")))
    }

    pub fn list_devices(&self, top: Option<usize>) -> Result<Vec<Device>, ApiError> {
        let mut all = self.store.list_devices()?;
        if let Some(top) = top {
            all.truncate(top);
        }
        Ok(all.into_iter().map(|d| self.live_device(d)).collect())
    }

    /// The device with its connection state as of now (unwritten changes applied).
    fn live_device(&self, mut d: Device) -> Device {
        if let Some(c) = self.presence.get(&d.device_id, None) {
            apply(
                &mut d.connection_state,
                &mut d.connection_state_updated_time,
                &mut d.last_activity_time,
                c,
            );
        }
        d
    }

    /// The module with its connection state as of now.
    fn live_module(&self, mut m: Module) -> Module {
        if let Some(c) = self.presence.get(&m.device_id, Some(&m.module_id)) {
            apply(
                &mut m.connection_state,
                &mut m.connection_state_updated_time,
                &mut m.last_activity_time,
                c,
            );
        }
        m
    }

    /// `PUT /devices/{id}`: create (no `If-Match`) or replace (`*` or the current etag).
    pub fn put_device(
        &self,
        id: &str,
        mut input: Device,
        if_match: &IfMatch,
    ) -> Result<Device, ApiError> {
        pki::names::check_device_id(id).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if !input.device_id.is_empty() && input.device_id != id {
            return Err(ApiError::bad_request(format!(
                "deviceId {} in the body does not match {id} in the path",
                input.device_id
            )));
        }
        model::normalize_auth(&mut input.authentication, &mut gen_key)
            .map_err(|e| ApiError::bad_request(e.0))?;
        let _guard = self.lock();
        let existing = self.store.get_device(id)?;
        if_match.check_write(
            existing.as_ref().map(|d| d.etag.as_str()),
            &format!("device {id}"),
            || {
                ApiError::conflict(
                    "DeviceAlreadyExists",
                    format!("A device with ID '{id}' is already registered"),
                )
            },
        )?;
        let now = self.now();
        let old = existing.clone();
        let device = match existing {
            None => self.new_device(id, input, &now),
            Some(old) => replace_device(old, input, &now),
        };
        self.store.put_device(&device)?;
        self.changed();
        self.device_written(old.as_ref(), &device);
        if device.capabilities.iot_edge {
            self.ensure_system_modules(id, &now)?;
        }
        Ok(self.live_device(device))
    }

    fn new_device(&self, id: &str, input: Device, now: &str) -> Device {
        let generation_id = generation_id();
        let device_scope = if input.capabilities.iot_edge {
            Some(format!("ms-azure-iot-edge://{id}-{generation_id}"))
        } else {
            input.device_scope.filter(|s| !s.is_empty())
        };
        let parent_scopes = parent_scopes(
            &input.parent_scopes,
            input.capabilities,
            device_scope.as_deref(),
        );
        Device {
            device_id: id.to_owned(),
            generation_id,
            etag: new_etag(),
            connection_state: ConnectionState::Disconnected,
            status: input.status,
            status_reason: input.status_reason,
            connection_state_updated_time: model::NEVER.into(),
            status_updated_time: now.to_owned(),
            last_activity_time: model::NEVER.into(),
            cloud_to_device_message_count: 0,
            authentication: input.authentication,
            capabilities: input.capabilities,
            device_scope,
            parent_scopes,
            managed_by: input.managed_by.filter(|m| !m.is_empty()),
            model_id: None,
        }
    }

    fn ensure_system_modules(&self, device_id: &str, now: &str) -> Result<(), ApiError> {
        for module_id in EDGE_SYSTEM_MODULES {
            if self.store.get_module(device_id, module_id)?.is_none() {
                let mut m = Module {
                    module_id: module_id.into(),
                    device_id: device_id.into(),
                    managed_by: Some("iotEdge".into()),
                    generation_id: generation_id(),
                    etag: new_etag(),
                    connection_state_updated_time: now.to_owned(),
                    ..Default::default()
                };
                model::normalize_auth(&mut m.authentication, &mut gen_key)
                    .map_err(|e| ApiError::bad_request(e.0))?;
                self.store.put_module(&m)?;
            }
        }
        Ok(())
    }

    /// `DELETE /devices/{id}`.
    pub fn delete_device(&self, id: &str, if_match: &IfMatch) -> Result<(), ApiError> {
        let _guard = self.lock();
        let existing = self.get_device(id)?;
        if_match.check(Some(&existing.etag), &format!("device {id}"))?;
        self.store.delete_device(id)?;
        self.changed();
        self.presence.forget(id, None);
        let why = EndReason::Deleted;
        self.revoke(Revoked::Device { device_id: id, why });
        Ok(())
    }

    /// Enables or disables a device (CLI `set-status`).
    pub fn set_status(
        &self,
        id: &str,
        status: Status,
        reason: Option<String>,
    ) -> Result<Device, ApiError> {
        let current = self.get_device(id)?;
        let mut input = current.clone();
        input.status = status;
        input.status_reason = reason;
        self.put_device(id, input, &IfMatch::Etag(current.etag))
    }

    /// Records a connect or disconnect for a device or module: in memory now, in the store with
    /// the next [`RegistryService::flush_connections`].
    pub fn set_connection(&self, device_id: &str, module_id: Option<&str>, connected: bool) {
        let state = if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        };
        self.presence
            .record(device_id, module_id, state, self.now());
    }

    /// Records the Plug and Play model a device or module announced at its MQTT CONNECT
    /// (`model-id=` in the user name), shown as `modelId` in its identity and twin. Written only
    /// when it changed; an identity deleted meanwhile is skipped.
    pub fn set_model_id(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        model_id: &str,
    ) -> Result<(), ApiError> {
        let _guard = self.lock();
        let model = Some(model_id.to_owned());
        match module_id {
            None => {
                if let Some(mut d) = self.store.get_device(device_id)?
                    && d.model_id != model
                {
                    d.model_id = model;
                    self.store.put_device(&d)?;
                }
            }
            Some(m) => {
                if let Some(mut md) = self.store.get_module(device_id, m)?
                    && md.model_id != model
                {
                    md.model_id = model;
                    self.store.put_module(&md)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the recorded connection changes in one transaction; returns how many were written.
    /// Identities deleted meanwhile are skipped.
    pub fn flush_connections(&self) -> Result<usize, ApiError> {
        let changes = self.presence.snapshot();
        if changes.is_empty() {
            return Ok(0);
        }
        let _guard = self.lock();
        let (mut devices, mut modules) = (Vec::new(), Vec::new());
        for ((device_id, module_id), c) in &changes {
            match module_id {
                None => {
                    if let Some(mut d) = self.store.get_device(device_id)? {
                        apply(
                            &mut d.connection_state,
                            &mut d.connection_state_updated_time,
                            &mut d.last_activity_time,
                            c.clone(),
                        );
                        devices.push(d);
                    }
                }
                Some(m) => {
                    if let Some(mut md) = self.store.get_module(device_id, m)? {
                        apply(
                            &mut md.connection_state,
                            &mut md.connection_state_updated_time,
                            &mut md.last_activity_time,
                            c.clone(),
                        );
                        modules.push(md);
                    }
                }
            }
        }
        self.store.put_many(&devices, &modules)?;
        self.presence.settle(&changes);
        Ok(devices.len() + modules.len())
    }

    pub fn statistics(&self) -> Result<DeviceStats, ApiError> {
        let all = self.store.list_devices()?;
        let enabled = all.iter().filter(|d| d.status == Status::Enabled).count() as u64;
        Ok(DeviceStats {
            total_device_count: all.len() as u64,
            enabled_device_count: enabled,
            disabled_device_count: all.len() as u64 - enabled,
        })
    }

    pub fn get_module(&self, device_id: &str, module_id: &str) -> Result<Module, ApiError> {
        let module = self.store.get_module(device_id, module_id)?;
        module.map(|m| self.live_module(m)).ok_or_else(|| {
            ApiError::not_found(
                "ModuleNotFound",
                format!("Module {module_id} on device {device_id} not found"),
            )
        })
    }

    pub fn list_modules(&self, device_id: &str) -> Result<Vec<Module>, ApiError> {
        self.get_device(device_id)?;
        let modules = self.store.list_modules(device_id)?;
        Ok(modules.into_iter().map(|m| self.live_module(m)).collect())
    }

    /// `PUT /devices/{id}/modules/{mid}`; returns the module and whether it was created.
    pub fn put_module(
        &self,
        device_id: &str,
        module_id: &str,
        mut input: Module,
        if_match: &IfMatch,
    ) -> Result<(Module, bool), ApiError> {
        pki::names::check_module_id(module_id.trim_start_matches('$'))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.get_device(device_id)?;
        model::normalize_auth(&mut input.authentication, &mut gen_key)
            .map_err(|e| ApiError::bad_request(e.0))?;
        let _guard = self.lock();
        let existing = self.store.get_module(device_id, module_id)?;
        if_match.check_write(
            existing.as_ref().map(|m| m.etag.as_str()),
            &format!("module {device_id}/{module_id}"),
            || {
                ApiError::conflict(
                    "ModuleAlreadyExistsOnDevice",
                    format!(
                        "A module with ID '{module_id}' already exists on device '{device_id}'"
                    ),
                )
            },
        )?;
        let created = existing.is_none();
        let rekeyed = existing
            .as_ref()
            .is_some_and(|old| old.authentication != input.authentication);
        let module = match existing {
            Some(old) => Module {
                authentication: input.authentication,
                managed_by: input.managed_by.or(old.managed_by.clone()),
                etag: new_etag(),
                ..old
            },
            None => Module {
                module_id: module_id.into(),
                device_id: device_id.into(),
                managed_by: input.managed_by,
                generation_id: generation_id(),
                etag: new_etag(),
                authentication: input.authentication,
                ..Default::default()
            },
        };
        self.store.put_module(&module)?;
        self.changed();
        if rekeyed {
            let module_id = Some(module_id);
            self.revoke(Revoked::Credentials {
                device_id,
                module_id,
            });
        }
        Ok((self.live_module(module), created))
    }

    pub fn delete_module(
        &self,
        device_id: &str,
        module_id: &str,
        if_match: &IfMatch,
    ) -> Result<(), ApiError> {
        let _guard = self.lock();
        let existing = self.get_module(device_id, module_id)?;
        if_match.check(
            Some(&existing.etag),
            &format!("module {device_id}/{module_id}"),
        )?;
        self.store.delete_module(device_id, module_id)?;
        self.changed();
        self.presence.forget(device_id, Some(module_id));
        self.revoke(Revoked::Module {
            device_id,
            module_id,
        });
        Ok(())
    }
}

/// Applies an unwritten connection change to a record's fields.
fn apply(state: &mut ConnectionState, updated: &mut String, activity: &mut String, c: Change) {
    *state = c.state;
    updated.clone_from(&c.at);
    *activity = c.at;
}

fn replace_device(old: Device, input: Device, now: &str) -> Device {
    let status_changed = old.status != input.status;
    // An edge device's scope is assigned by the hub and never changes.
    let device_scope = if old.capabilities.iot_edge || input.capabilities.iot_edge {
        old.device_scope.clone().or_else(|| {
            Some(format!(
                "ms-azure-iot-edge://{}-{}",
                old.device_id, old.generation_id
            ))
        })
    } else {
        input.device_scope.filter(|s| !s.is_empty())
    };
    let parent_scopes = parent_scopes(
        &input.parent_scopes,
        input.capabilities,
        device_scope.as_deref(),
    );
    Device {
        etag: new_etag(),
        status: input.status,
        status_reason: input.status_reason,
        status_updated_time: if status_changed {
            now.to_owned()
        } else {
            old.status_updated_time.clone()
        },
        authentication: input.authentication,
        capabilities: input.capabilities,
        device_scope,
        parent_scopes,
        // Service SDKs do not know the field and leave it out: absent keeps the manager.
        managed_by: match input.managed_by {
            None => old.managed_by.clone(),
            Some(m) => Some(m).filter(|m| !m.is_empty()),
        },
        ..old
    }
}

/// A leaf's parent scope defaults to its deviceScope (the parent edge device's scope).
fn parent_scopes(given: &[String], caps: Capabilities, scope: Option<&str>) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    match scope {
        Some(s) if !caps.iot_edge => vec![s.to_owned()],
        _ => vec![],
    }
}

/// An 18-digit decimal generation id, like the hub's.
pub fn generation_id() -> String {
    let n =
        u64::from_le_bytes(random_bytes::<8>()) % 900_000_000_000_000_000 + 100_000_000_000_000_000;
    n.to_string()
}
