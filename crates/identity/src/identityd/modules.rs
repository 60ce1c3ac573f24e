//! Module identities at the hub: created with keys derived from the master key (so they can be
//! recomputed, never stored), reconciled against the `idtype = ["module"]` principals, and cached
//! (without credentials) for offline answers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hub_wire::{Authentication, Module};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::Identityd;
use super::cloud::hub_call;
use super::device::{DeviceInfo, ProvisionError};

/// What is cached per module (no keys).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleRecord {
    pub module_id: String,
    pub device_id: String,
    #[serde(default)]
    pub generation_id: Option<String>,
    #[serde(default)]
    pub managed_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("module {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Cloud(#[from] ProvisionError),
    #[error("hub: {0}")]
    Hub(String),
}

impl From<crate::client::UdsError> for ModuleError {
    fn from(e: crate::client::UdsError) -> Self {
        Self::Cloud(e.into())
    }
}

fn sha_hex(s: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}

fn cache_dir(homedir: &Path, d: &DeviceInfo) -> PathBuf {
    homedir.join("modules").join(format!(
        "{}-{}",
        sha_hex(&d.hub_name),
        sha_hex(&d.device_id)
    ))
}

fn cache_file(homedir: &Path, d: &DeviceInfo, module: &str) -> PathBuf {
    cache_dir(homedir, d).join(crate::keyd::file_name(module, "json"))
}

fn cache_write(homedir: &Path, d: &DeviceInfo, m: &ModuleRecord) {
    let write = serde_json::to_vec(m)
        .map_err(std::io::Error::other)
        .and_then(|bytes| super::write_atomic(&cache_file(homedir, d, &m.module_id), &bytes));
    if let Err(e) = write {
        warn!(module = %m.module_id, error = %e, "Could not cache the module identity");
    }
}

fn cache_read(homedir: &Path, d: &DeviceInfo, module: &str) -> Option<ModuleRecord> {
    serde_json::from_slice(&std::fs::read(cache_file(homedir, d, module)).ok()?).ok()
}

fn module_path(d: &DeviceInfo, module: Option<&str>) -> String {
    let dev = iot_auth::percent_encode(&d.device_id);
    match module {
        Some(m) => format!("/devices/{dev}/modules/{}", iot_auth::percent_encode(m)),
        None => format!("/devices/{dev}/modules"),
    }
}

fn record(v: &serde_json::Value) -> Option<ModuleRecord> {
    serde_json::from_value(v.clone()).ok()
}

impl Identityd {
    /// A module as the hub has it; on a network failure, the cache (offline operation).
    pub async fn get_module(
        &self,
        d: &DeviceInfo,
        module: &str,
    ) -> Result<ModuleRecord, ModuleError> {
        let homedir = self.homedir();
        if self.config().prefer_module_identity_cache
            && let Some(m) = cache_read(&homedir, d, module)
        {
            return Ok(m);
        }
        let fetched = async {
            let client = self.hub_client(d).await?;
            hub_call(
                &client,
                Method::GET,
                &module_path(d, Some(module)),
                None,
                false,
            )
            .await
        }
        .await;
        match fetched {
            Ok((StatusCode::OK, v)) => {
                let m = record(&v)
                    .ok_or_else(|| ModuleError::Hub(format!("unexpected module document {v}")))?;
                cache_write(&homedir, d, &m);
                Ok(m)
            }
            Ok((StatusCode::NOT_FOUND, _)) => {
                let _ = std::fs::remove_file(cache_file(&homedir, d, module));
                Err(ModuleError::NotFound(module.to_owned()))
            }
            Ok((status, v)) => Err(ModuleError::Hub(format!("{status}: {v}"))),
            Err(e) if e.is_network() => {
                cache_read(&homedir, d, module).ok_or(ModuleError::Cloud(e))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every module of the device at the hub (cache on a network failure).
    pub async fn list_modules(&self, d: &DeviceInfo) -> Result<Vec<ModuleRecord>, ModuleError> {
        let client = self.hub_client(d).await;
        let fetched = match client {
            Ok(c) => hub_call(&c, Method::GET, &module_path(d, None), None, false).await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok((StatusCode::OK, v)) => Ok(v
                .as_array()
                .map(|a| a.iter().filter_map(record).collect())
                .unwrap_or_default()),
            Ok((status, v)) => Err(ModuleError::Hub(format!("{status}: {v}"))),
            Err(e) if e.is_network() => Ok(self.cached_modules(d)),
            Err(e) => Err(e.into()),
        }
    }

    fn cached_modules(&self, d: &DeviceInfo) -> Vec<ModuleRecord> {
        let dir = cache_dir(&self.homedir(), d);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// Creates the module at the hub (the hub assigns its generation id), then sets its SAS keys
    /// to the ones derived for that generation. An existing module just gets its keys set.
    pub async fn create_module(
        &self,
        d: &DeviceInfo,
        module: &str,
    ) -> Result<ModuleRecord, ModuleError> {
        let client = self.hub_client(d).await?;
        let path = module_path(d, Some(module));
        let (status, v) = hub_call(
            &client,
            Method::PUT,
            &path,
            Some(&hub_wire::body(&Module {
                module_id: module.to_owned(),
                ..Module::default()
            })),
            false,
        )
        .await?;
        if !(status.is_success() || status == StatusCode::CONFLICT) {
            return Err(ModuleError::Hub(format!(
                "creating {module}: {status}: {v}"
            )));
        }
        self.update_module(d, module).await
    }

    /// Re-derives the module's keys for its current generation id and writes them to the hub.
    pub async fn update_module(
        &self,
        d: &DeviceInfo,
        module: &str,
    ) -> Result<ModuleRecord, ModuleError> {
        let current = self.get_module(d, module).await?;
        let gen_id = current
            .generation_id
            .clone()
            .ok_or_else(|| ModuleError::NotFound(module.to_owned()))?;
        let primary = self
            .keys
            .export(
                &self
                    .keys
                    .module_key_handle(module, &gen_id, "primary", None)
                    .await?,
            )
            .await?;
        let secondary = self
            .keys
            .export(
                &self
                    .keys
                    .module_key_handle(module, &gen_id, "secondary", None)
                    .await?,
            )
            .await?;
        let body = hub_wire::body(&Module {
            module_id: module.to_owned(),
            managed_by: current.managed_by.clone(),
            authentication: Authentication::sas(Some(primary), Some(secondary)),
            ..Module::default()
        });
        let client = self.hub_client(d).await?;
        let (status, v) = hub_call(
            &client,
            Method::PUT,
            &module_path(d, Some(module)),
            Some(&body),
            true,
        )
        .await?;
        if !status.is_success() {
            return Err(ModuleError::Hub(format!(
                "updating {module}: {status}: {v}"
            )));
        }
        let m = record(&v)
            .ok_or_else(|| ModuleError::Hub(format!("unexpected module document {v}")))?;
        cache_write(&self.homedir(), d, &m);
        Ok(m)
    }

    pub async fn delete_module(&self, d: &DeviceInfo, module: &str) -> Result<(), ModuleError> {
        let client = self.hub_client(d).await?;
        let (status, v) = hub_call(
            &client,
            Method::DELETE,
            &module_path(d, Some(module)),
            None,
            true,
        )
        .await?;
        let _ = std::fs::remove_file(cache_file(&self.homedir(), d, module));
        match status {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(ModuleError::Hub(format!(
                "deleting {module}: {status}: {v}"
            ))),
        }
    }

    /// Makes the hub's modules match the module principals: modules this service created before
    /// and no longer configured are deleted, configured ones it did not create are recreated (their
    /// keys are unknown), missing ones are created; modules of others are left alone.
    pub async fn reconcile(&self, d: &DeviceInfo) -> Result<(), ModuleError> {
        let homedir = self.homedir();
        let desired: BTreeSet<String> = self
            .config()
            .principals
            .iter()
            .filter(|p| {
                p.idtype
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|t| t == "module"))
            })
            .map(|p| p.name.clone())
            .collect();
        let previous = read_prev_state(&homedir, d);
        let actual = self.list_modules(d).await?;
        let mut have = BTreeSet::new();
        for m in &actual {
            let (was, want) = (
                previous.contains(&m.module_id),
                desired.contains(&m.module_id),
            );
            if was && !want {
                info!(module = %m.module_id, "Deleting a module identity that is no longer configured");
                self.delete_module(d, &m.module_id).await?;
            } else if want && !was {
                info!(module = %m.module_id, "Recreating a module identity this service did not create");
                self.delete_module(d, &m.module_id).await?;
            } else if want {
                have.insert(m.module_id.clone());
            }
        }
        for m in desired.difference(&have) {
            info!(module = %m, "Creating the module identity");
            self.create_module(d, m).await?;
        }
        write_prev_state(&homedir, d, &desired);
        Ok(())
    }
}

/// `{homedir}/prev_state`: the device and the module names reconciled last time.
#[derive(Serialize, Deserialize)]
struct PrevState {
    device: DeviceInfo,
    modules: BTreeSet<String>,
}

fn read_prev_state(homedir: &Path, d: &DeviceInfo) -> BTreeSet<String> {
    std::fs::read_to_string(homedir.join("prev_state"))
        .ok()
        .and_then(|t| toml::from_str::<PrevState>(&t).ok())
        .filter(|p| p.device == *d)
        .map(|p| p.modules)
        .unwrap_or_default()
}

fn write_prev_state(homedir: &Path, d: &DeviceInfo, modules: &BTreeSet<String>) {
    let state = PrevState {
        device: d.clone(),
        modules: modules.clone(),
    };
    let written = toml::to_string(&state)
        .map_err(std::io::Error::other)
        .and_then(|t| super::write_atomic(&homedir.join("prev_state"), t.as_bytes()));
    if let Err(e) = written {
        warn!(error = %e, "Could not write prev_state");
    }
}
