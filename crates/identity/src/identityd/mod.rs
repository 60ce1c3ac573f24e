//! identityd: the device identity (provisioned manually or through DPS), module identities kept
//! in sync with the hub, and the caller's own identity by uid.

mod api;
pub mod auth;
pub mod cloud;
pub mod device;
pub mod keys;
pub mod modules;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use crate::client::UdsClient;
use crate::config::IdentitydConfig;
use crate::keyd::KeyStore;
use cloud::Cloud;
use device::{DeviceAuth, DeviceInfo, ProvisionError};
use keys::Keys;

pub use api::router;

/// Why the device was (re)provisioned (aziot's triggers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// At start: a valid backup wins over DPS (unless `AlwaysOnStartup`).
    Startup,
    /// The configuration changed: reconcile modules only.
    ConfigUpdate,
    /// `POST /identities/device/reprovision`: always a fresh DPS registration.
    Api,
}

/// Options the CLI and tests pass when opening the service.
#[derive(Default)]
pub struct Options {
    /// keyd's store in this process (needed for an X.509 device identity's TLS key).
    pub store: Option<Arc<dyn KeyStore>>,
    /// Hub host name → `host:port` to dial instead of `{host}:443`.
    pub hub_addresses: std::collections::BTreeMap<String, String>,
    pub clock: Option<ferrohub_runtime::time::SharedClock>,
    /// The config file and its drop-in directory, re-read on `POST /reload`.
    pub config_paths: Option<(PathBuf, PathBuf)>,
}

pub struct Identityd {
    config: RwLock<IdentitydConfig>,
    keys: Keys,
    cloud: Arc<Cloud>,
    device: RwLock<Option<DeviceInfo>>,
    config_paths: Option<(PathBuf, PathBuf)>,
}

/// Replaces a file atomically and durably (see `ferrohub_runtime::atomic`), creating its
/// directory (0700); mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        ferrohub_runtime::fsperm::create_dir(dir)?;
    }
    ferrohub_runtime::atomic::write(path, bytes, ferrohub_runtime::fsperm::FILE_MODE)
}

impl Identityd {
    pub fn new(config: IdentitydConfig, options: Options) -> Arc<Self> {
        // identityd's home (device and module caches) is its own: 0700, files 0600.
        if let Err(e) = ferrohub_runtime::fsperm::secure_dir(&config.homedir) {
            warn!(error = %e, "Cannot make identityd's home directory private");
        }
        let cloud = Cloud {
            certd: UdsClient::new(&config.certd_socket),
            store: options.store,
            trust_bundle: config.trust_bundle.clone(),
            hub_addresses: options.hub_addresses,
            clock: options
                .clock
                .unwrap_or_else(|| Arc::new(ferrohub_runtime::time::SystemClock)),
        };
        Arc::new(Self {
            keys: Keys::new(UdsClient::new(&config.keyd_socket)),
            cloud: Arc::new(cloud),
            device: RwLock::new(None),
            config_paths: options.config_paths,
            config: RwLock::new(config),
        })
    }

    pub fn config(&self) -> IdentitydConfig {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn homedir(&self) -> PathBuf {
        self.config().homedir
    }

    /// The provisioned device, if any.
    pub fn device(&self) -> Option<DeviceInfo> {
        self.device.read().ok().and_then(|d| d.clone())
    }

    fn auth(&self) -> Option<DeviceAuth> {
        device::auth_of(&self.config().provisioning)
    }

    async fn hub_client(
        &self,
        d: &DeviceInfo,
    ) -> Result<ferrohub_runtime::client::ServiceClient, ProvisionError> {
        let auth = self.auth().ok_or(ProvisionError::Unprovisioned)?;
        self.cloud.hub_client(d, &auth, &self.keys).await
    }

    /// Provisions (per `trigger`) and reconciles module identities, tolerating network failures
    /// when a backup exists (offline start). A non-network hub error at startup (e.g. the device
    /// moved to another hub) triggers one fresh registration.
    pub async fn reprovision(&self, trigger: Trigger) -> Result<DeviceInfo, ProvisionError> {
        let config = self.config();
        let use_backup = match trigger {
            Trigger::Startup => config.auto_reprovisioning_mode != "AlwaysOnStartup",
            Trigger::ConfigUpdate => true,
            Trigger::Api => false,
        };
        let d = match (trigger, self.device()) {
            (Trigger::ConfigUpdate, Some(d)) => d,
            _ => self.provision(use_backup).await?,
        };
        match self.reconcile(&d).await {
            Ok(()) => Ok(d),
            Err(modules::ModuleError::Cloud(e)) if e.is_network() && trigger != Trigger::Api => {
                warn!(error = %e, "Hub unreachable; using the offline backup from the last run");
                Ok(d)
            }
            Err(e)
                if trigger == Trigger::Startup
                    && config.auto_reprovisioning_mode != "OnErrorOnly"
                    && matches!(
                        config.provisioning,
                        crate::config::daemons::Provisioning::Dps { .. }
                    ) =>
            {
                warn!(error = %e, "The hub refused the cached identity; registering with DPS again");
                let d = self.provision(false).await?;
                self.reconcile(&d)
                    .await
                    .map_err(|e| ProvisionError::Dps(e.to_string()))?;
                Ok(d)
            }
            Err(e) => Err(ProvisionError::Dps(format!(
                "reconciling module identities: {e}"
            ))),
        }
    }

    async fn provision(&self, use_backup: bool) -> Result<DeviceInfo, ProvisionError> {
        let config = self.config();
        if !use_backup {
            let _ = std::fs::remove_file(device::device_info_path(&config.homedir));
        }
        let d = device::provision(
            &config.provisioning,
            &config.homedir,
            use_backup,
            &self.cloud,
            &self.keys,
        )
        .await?;
        if matches!(
            config.provisioning,
            crate::config::daemons::Provisioning::Manual { .. }
        ) {
            let _ = device::write_backup(&config.homedir, &d);
        }
        if let Ok(mut slot) = self.device.write() {
            *slot = Some(d.clone());
        }
        info!(hub = %d.hub_name, device_id = %d.device_id, "Device identity ready");
        Ok(d)
    }

    /// Re-reads the config files it was started from (`ferrohub config apply` asks for this).
    pub async fn reload_from_disk(&self) -> Result<(), String> {
        let (file, dropins) = self
            .config_paths
            .clone()
            .ok_or("identityd was not started from config files")?;
        let config: IdentitydConfig =
            crate::config::load_daemon(&file, &dropins).map_err(|e| e.to_string())?;
        self.reload(config).await.map_err(|e| e.to_string())
    }

    /// Replaces the configuration (principals, provisioning) and reconciles.
    pub async fn reload(&self, config: IdentitydConfig) -> Result<(), ProvisionError> {
        let provisioning_changed = config.provisioning != self.config().provisioning;
        if let Ok(mut c) = self.config.write() {
            *c = config;
        }
        let trigger = if provisioning_changed {
            Trigger::Api
        } else {
            Trigger::ConfigUpdate
        };
        self.reprovision(trigger).await.map(drop)
    }
}

/// Opens identityd, provisions (startup), then serves its socket until `shutdown`.
pub async fn serve(
    config: IdentitydConfig,
    options: Options,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_on(config, options, Vec::new(), shutdown).await
}

/// [`serve`], also listening on the sockets in `also` (e.g. `/run/aziot/identityd.sock`).
pub async fn serve_on(
    config: IdentitydConfig,
    options: Options,
    also: Vec<PathBuf>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listeners = crate::uds::bind_all(&config.socket, &also)?;
    let max = config.max_requests;
    let idd = Identityd::new(config, options);
    match idd.reprovision(Trigger::Startup).await {
        Ok(d) => info!(hub = %d.hub_name, device_id = %d.device_id, "Provisioned"),
        Err(ProvisionError::Unprovisioned) => {
            info!("Provisioning source is none; serving local APIs only")
        }
        Err(e) => {
            warn!(error = %e, "Provisioning failed; device and module APIs answer with errors until POST /identities/device/reprovision succeeds")
        }
    }
    crate::uds::serve_many(listeners, router(idd), max, "identityd", shutdown).await;
    Ok(())
}
