//! Device and module SAS authentication switched off and on while the hub runs
//! (`PUT /configuration/auth`, `ferrohub hub auth`), kept in the registry so the choice survives a
//! restart. hub.toml's `[auth] disable_device_sas`/`disable_module_sas` are the starting values
//! until the service API sets them; from then on the registry's values win (logged at start when
//! they differ from hub.toml).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{info, warn};

use hub_wire::{AuthPatch, AuthState};

use crate::config::AuthSettings;
use crate::store::Registry;
use ferrohub_runtime::store::StoreError;

/// The registry key the switches are stored under.
const KEY: &str = "auth";

/// The live switches, read by every SAS authentication.
pub struct AuthSwitches {
    device_sas_disabled: AtomicBool,
    module_sas_disabled: AtomicBool,
    store: Arc<dyn Registry>,
}

impl AuthSwitches {
    /// hub.toml's values, replaced by those the service API stored, if any.
    pub fn open(config: &AuthSettings, store: Arc<dyn Registry>) -> Result<Self, StoreError> {
        let from_config = AuthState {
            disable_device_sas: config.disable_device_sas,
            disable_module_sas: config.disable_module_sas,
        };
        let state = match store.get_setting(KEY)? {
            Some(v) => match serde_json::from_value::<AuthState>(v) {
                Ok(stored) => {
                    if stored != from_config {
                        info!(
                            disable_device_sas = stored.disable_device_sas,
                            disable_module_sas = stored.disable_module_sas,
                            "SAS authentication switches from the registry (set with `ferrohub hub \
                             auth` / PUT /configuration/auth) override hub.toml's [auth]"
                        );
                    }
                    stored
                }
                Err(e) => {
                    warn!(error = %e, "Stored SAS authentication switches do not parse; using hub.toml's [auth]");
                    from_config
                }
            },
            None => from_config,
        };
        Ok(Self {
            device_sas_disabled: AtomicBool::new(state.disable_device_sas),
            module_sas_disabled: AtomicBool::new(state.disable_module_sas),
            store,
        })
    }

    pub fn device_sas_disabled(&self) -> bool {
        self.device_sas_disabled.load(Ordering::Relaxed)
    }

    pub fn module_sas_disabled(&self) -> bool {
        self.module_sas_disabled.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> AuthState {
        AuthState {
            disable_device_sas: self.device_sas_disabled(),
            disable_module_sas: self.module_sas_disabled(),
        }
    }

    /// Applies `patch`: stored first (durably), then switched, so a restart never undoes an
    /// answered change. Returns the new state.
    pub fn set(&self, patch: AuthPatch) -> Result<AuthState, StoreError> {
        let old = self.state();
        let new = AuthState {
            disable_device_sas: patch.disable_device_sas.unwrap_or(old.disable_device_sas),
            disable_module_sas: patch.disable_module_sas.unwrap_or(old.disable_module_sas),
        };
        let value = serde_json::to_value(new).map_err(StoreError::from)?;
        self.store.put_setting(KEY, &value)?;
        self.device_sas_disabled
            .store(new.disable_device_sas, Ordering::Relaxed);
        self.module_sas_disabled
            .store(new.disable_module_sas, Ordering::Relaxed);
        if new != old {
            info!(
                disable_device_sas = new.disable_device_sas,
                disable_module_sas = new.disable_module_sas,
                "SAS authentication switched through the service API (stored in the registry)"
            );
        }
        Ok(new)
    }
}
