//! `agent.toml`: what the agent needs (written by `ferrohub edge agent init`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backoff::Backoff;
use crate::logs::LogSettings;

/// The agent's configuration. Keys are redacted from `Debug`.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The edge device's id at the hub.
    pub edge_id: String,
    /// The hub's host name (token audiences, `IOTEDGE_IOTHUBHOSTNAME`).
    pub hub_hostname: String,
    /// The hub's MQTT and HTTPS addresses (`host:port`).
    pub hub_mqtt: String,
    pub hub_https: String,
    /// The CA to trust for the hub's TLS certificate.
    pub hub_ca: PathBuf,
    /// The `$edgeAgent` module's key (base64): the agent's own connection to the hub.
    pub edge_agent_key: String,
    /// The edge device's own key (base64): the agent creates and deletes its modules'
    /// identities with it.
    pub device_key: String,
    /// State, logs and sockets.
    pub data_dir: PathBuf,
    /// What modules put in `GatewayHostName` (the gateway's host name or IP).
    pub gateway_hostname: String,
    /// The CA modules trust for the gateway (`EdgeModuleCACertificateFile`, the workload API's
    /// trust bundle).
    pub gateway_ca: PathBuf,
    /// The gateway's MQTT address, probed for `edgeHub`'s status when the agent does not run it.
    #[serde(default)]
    pub gateway_addr: Option<String>,
    /// The command that runs the gateway, supervised as the `edgeHub` system module once a
    /// deployment names it; none: the gateway runs elsewhere.
    #[serde(default)]
    pub edge_hub: Option<Command>,
    /// How modules get their credentials.
    #[serde(default)]
    pub module_credentials: Credentials,
    #[serde(default)]
    pub restart: RestartSettings,
    #[serde(default)]
    pub logs: LogSettings,
    /// Seconds a stopping module gets between SIGTERM and SIGKILL.
    #[serde(default = "ten")]
    pub stop_grace_secs: u64,
}

fn ten() -> u64 {
    10
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("edge_id", &self.edge_id)
            .field("hub_hostname", &self.hub_hostname)
            .field("hub_mqtt", &self.hub_mqtt)
            .field("data_dir", &self.data_dir)
            .field("gateway_hostname", &self.gateway_hostname)
            .field("edge_hub", &self.edge_hub)
            .field("module_credentials", &self.module_credentials)
            .finish_non_exhaustive()
    }
}

/// A program and its arguments.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// How a module process learns its identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    /// IoT Edge's own way: `IOTEDGE_*` variables and a workload socket per module that signs
    /// tokens with the module's key (the key never reaches the module).
    #[default]
    Workload,
    /// `EdgeHubConnectionString` (with the module's key) and `EdgeModuleCACertificateFile`, the
    /// SDKs' development fallback.
    ConnectionString,
}

/// Restart back-off (see [`Backoff`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSettings {
    #[serde(default = "base_ms")]
    pub base_ms: u64,
    #[serde(default = "max_secs")]
    pub max_secs: u64,
    #[serde(default = "stable_secs")]
    pub stable_secs: u64,
}

fn base_ms() -> u64 {
    1000
}
fn max_secs() -> u64 {
    300
}
fn stable_secs() -> u64 {
    600
}

impl Default for RestartSettings {
    fn default() -> Self {
        Self {
            base_ms: base_ms(),
            max_secs: max_secs(),
            stable_secs: stable_secs(),
        }
    }
}

impl RestartSettings {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_millis(self.base_ms.max(1)),
            max: Duration::from_secs(self.max_secs.max(1)),
            stable: Duration::from_secs(self.stable_secs),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub message: String,
}

impl AgentConfig {
    /// Reads `agent.toml`; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut c: Self = toml::from_str(&text).map_err(|e| err(e.message().to_owned()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.hub_ca, &mut c.data_dir, &mut c.gateway_ca] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    /// The control socket `ferrohub edge list|restart` talk to.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("agent.sock")
    }

    /// A module's log file.
    pub fn log_path(&self, module: &str) -> PathBuf {
        log_path(&self.data_dir, module)
    }
}

/// `{data_dir}/logs/{module}.log`.
pub fn log_path(data_dir: &Path, module: &str) -> PathBuf {
    data_dir.join("logs").join(format!("{module}.log"))
}

/// The agent's own log (deployments applied or refused, module starts, exits and restarts).
pub const AGENT_LOG: &str = "edgeAgent";
