//! `dps.toml`: ID scope, listen addresses, TLS files, storage, policies and linked hubs.
//! Relative paths are resolved against the directory of the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use ferrohub_runtime::config::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DpsConfig {
    /// The host name devices and services use (the `provisioning_host`, `HostName=` of the
    /// service connection string).
    pub hostname: String,
    /// The ID scope devices name in their registrations (`0ne` + 8 hex digits when generated).
    pub id_scope: String,
    /// Allocation for enrollments that set none: `hashed`, `geoLatency` or `static`.
    #[serde(default = "default_allocation")]
    pub allocation_policy: String,
    #[serde(default)]
    pub listen: Listen,
    pub tls: Tls,
    pub storage: Storage,
    /// Shared-access policies for the service API.
    #[serde(default, rename = "policy")]
    pub policies: Vec<Policy>,
    /// IoT hubs devices are assigned to; DPS creates the devices there through their service API.
    #[serde(default, rename = "linked_hub")]
    pub linked_hubs: Vec<LinkedHub>,
}

fn default_allocation() -> String {
    "hashed".into()
}

/// MQTT over TLS (device registrations) and HTTPS (device registrations and the service API),
/// with the same defaults as the hub's (8883 and 443 on all addresses).
pub type Listen = ferrohub_runtime::config::Listen;

pub type Tls = ferrohub_runtime::config::Tls;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// SQLite file of enrollments, registrations and CA certificates.
    pub database: PathBuf,
}

/// Rights of a DPS shared-access policy (the names Azure uses).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Right {
    ServiceConfig,
    EnrollmentRead,
    EnrollmentWrite,
    RegistrationStatusRead,
    RegistrationStatusWrite,
}

impl Right {
    pub const ALL: [Right; 5] = [
        Right::ServiceConfig,
        Right::EnrollmentRead,
        Right::EnrollmentWrite,
        Right::RegistrationStatusRead,
        Right::RegistrationStatusWrite,
    ];
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    pub primary_key: String,
    pub secondary_key: String,
    pub rights: Vec<Right>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("rights", &self.rights)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkedHub {
    /// `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` of a policy with registry read/write
    /// and service connect rights (e.g. `iothubowner`).
    pub connection_string: String,
    /// The CA that issued the hub's TLS certificate (PEM), if not the DPS's own `tls.ca`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// `host:port` to dial instead of `{HostName}:443`.
    #[serde(default)]
    pub address: Option<String>,
    /// Relative share of `hashed` allocations (0 = never chosen by hashing).
    #[serde(default = "one")]
    pub allocation_weight: u32,
}

fn one() -> u32 {
    1
}

impl std::fmt::Debug for LinkedHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkedHub")
            .field("hostname", &self.hostname())
            .field("address", &self.address)
            .field("allocation_weight", &self.allocation_weight)
            .finish_non_exhaustive()
    }
}

impl LinkedHub {
    /// The hub's host name from its connection string.
    pub fn hostname(&self) -> String {
        iot_auth::ConnectionString::parse(&self.connection_string)
            .ok()
            .and_then(|c| c.host_name().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl DpsConfig {
    /// Reads and checks a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg: DpsConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.message().trim().replace('\n', " "),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![
            &mut cfg.tls.cert,
            &mut cfg.tls.key,
            &mut cfg.storage.database,
        ];
        paths.extend(cfg.tls.ca.as_mut());
        for h in &mut cfg.linked_hubs {
            paths.extend(h.ca.as_mut());
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.check().map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })?;
        Ok(cfg)
    }

    /// Startup refuses an inconsistent configuration.
    pub fn check(&self) -> Result<(), String> {
        if self.hostname.is_empty() || self.id_scope.is_empty() {
            return Err("hostname and id_scope must not be empty".into());
        }
        if !matches!(
            self.allocation_policy.as_str(),
            "hashed" | "geoLatency" | "static"
        ) {
            return Err(format!(
                "allocation_policy {:?}: use hashed, geoLatency or static",
                self.allocation_policy
            ));
        }
        for p in &self.policies {
            for key in [&p.primary_key, &p.secondary_key] {
                use base64::Engine as _;
                let ok = base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .is_ok_and(|k| k.len() >= 16);
                if !ok {
                    return Err(format!(
                        "policy {}: keys must be base64 of at least 16 bytes",
                        p.name
                    ));
                }
            }
        }
        for h in &self.linked_hubs {
            let cs = iot_auth::ConnectionString::parse(&h.connection_string)
                .map_err(|e| format!("linked_hub connection_string: {e}"))?;
            let host = cs.host_name().unwrap_or_default();
            if host.is_empty() || cs.shared_access_key_name().is_none() {
                return Err(format!(
                    "linked hub {host:?}: the connection string needs HostName and SharedAccessKeyName (a hub policy such as iothubowner)"
                ));
            }
        }
        if self.linked_hubs.is_empty() {
            return Err("link at least one hub ([[linked_hub]] connection_string = ...)".into());
        }
        if let Some(addr) = self.listen.metrics {
            ferrohub_runtime::config::check_metrics_listen("listen.metrics", addr)?;
        }
        Ok(())
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…` for a policy.
    pub fn connection_string(&self, policy: &str) -> Option<String> {
        self.policy(policy).map(|p| {
            format!(
                "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
                self.hostname, p.name, p.primary_key
            )
        })
    }

    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}
