//! `hub.toml`: listen addresses, TLS files, storage, shared-access policies and limits.
//! Relative paths are resolved against the directory of the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use ferrohub_runtime::config::{ConfigError, Listen, Tls, check_metrics_listen};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// The host name devices and services use (`HostName=` in connection strings).
    pub hostname: String,
    /// Other names devices may use for this hub in their MQTT usernames and SAS token audiences
    /// (compared case-insensitively, like `hostname`); any other name is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostname_aliases: Vec<String>,
    #[serde(default)]
    pub listen: Listen,
    pub tls: Tls,
    pub storage: Storage,
    #[serde(default)]
    pub auth: AuthSettings,
    #[serde(default)]
    pub limits: Limits,
    /// Shared-access policies for the service API (and device connections on behalf of devices).
    #[serde(default, rename = "policy")]
    pub policies: Vec<Policy>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// SQLite registry file.
    pub registry: PathBuf,
    /// Directory of the durable events log.
    pub events: PathBuf,
    /// fdatasync every group commit before acknowledging (turn off only for throwaway benchmarks).
    #[serde(default = "yes")]
    pub fsync: bool,
    /// Delete events older than this many hours (checked every minute).
    #[serde(default)]
    pub retention_hours: Option<u64>,
    /// Keep at most this many MiB of events.
    #[serde(default)]
    pub retention_mib: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Refuse SAS authentication for devices (X.509 only).
    #[serde(default)]
    pub disable_device_sas: bool,
    /// Refuse SAS authentication for modules.
    #[serde(default)]
    pub disable_module_sas: bool,
}

/// Every budget a peer can push against.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest MQTT packet accepted (telemetry bodies are limited to 256 KiB plus headers).
    #[serde(default = "default_packet")]
    pub max_packet_bytes: usize,
    /// Concurrent MQTT connections; more are refused at accept.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// Concurrent MQTT connections (authenticated or not) from one IP address; more are refused
    /// at accept. A gateway opens one upstream connection per child, so keep it above the
    /// largest gateway's child count.
    #[serde(default = "default_connections_per_ip")]
    pub max_connections_per_ip: usize,
    /// Unacknowledged QoS 1 telemetry per connection before the hub stops reading from it.
    #[serde(default = "default_inflight")]
    pub max_inflight_per_connection: usize,
    /// The same for a gateway's `$edgeHub` connection, which carries the telemetry of all the
    /// gateway's devices and modules.
    #[serde(default = "default_inflight_gateway")]
    pub max_inflight_per_gateway: usize,
    /// Topic filters one connection may hold; filters past it get SUBACK failure (0x80).
    #[serde(default = "default_subscriptions")]
    pub max_subscriptions_per_connection: usize,
    /// Seconds a client has to finish TLS and send CONNECT.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Largest service API request body.
    #[serde(default = "default_body")]
    pub max_request_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_bytes: default_packet(),
            max_connections: default_connections(),
            max_connections_per_ip: default_connections_per_ip(),
            max_inflight_per_connection: default_inflight(),
            max_inflight_per_gateway: default_inflight_gateway(),
            max_subscriptions_per_connection: default_subscriptions(),
            connect_timeout_secs: default_connect_timeout(),
            max_request_bytes: default_body(),
        }
    }
}

fn default_packet() -> usize {
    256 * 1024 + 16 * 1024
}
fn default_connections() -> usize {
    50_000
}
fn default_connections_per_ip() -> usize {
    10_000
}
fn default_inflight() -> usize {
    128
}
fn default_inflight_gateway() -> usize {
    2048
}
fn default_subscriptions() -> usize {
    64
}
fn default_connect_timeout() -> u64 {
    30
}
fn default_body() -> usize {
    1024 * 1024
}

/// A shared-access policy: name, two keys, rights.
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

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Right {
    RegistryRead,
    RegistryWrite,
    ServiceConnect,
    DeviceConnect,
}

/// `line N: message`, where toml's own rendering spans several lines.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

impl HubConfig {
    /// Reads and checks a config file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg: HubConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: one_line_toml_error(&text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let paths = [
            &mut cfg.tls.cert,
            &mut cfg.tls.key,
            &mut cfg.storage.registry,
            &mut cfg.storage.events,
        ];
        for p in paths.into_iter().chain(cfg.tls.ca.as_mut()) {
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

    /// Startup refuses an inconsistent configuration rather than running with surprises.
    pub fn check(&self) -> Result<(), String> {
        if self.hostname.is_empty() {
            return Err("hostname must not be empty".into());
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.policies {
            if !names.insert(&p.name) {
                return Err(format!("policy {} is defined twice", p.name));
            }
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
        if self.limits.max_packet_bytes < 1024 {
            return Err("limits.max_packet_bytes must be at least 1024".into());
        }
        let limits = &self.limits;
        for (name, value) in [
            ("max_connections", limits.max_connections),
            ("max_connections_per_ip", limits.max_connections_per_ip),
            (
                "max_inflight_per_connection",
                limits.max_inflight_per_connection,
            ),
            ("max_inflight_per_gateway", limits.max_inflight_per_gateway),
            (
                "max_subscriptions_per_connection",
                limits.max_subscriptions_per_connection,
            ),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be positive"));
            }
        }
        if limits.connect_timeout_secs == 0 {
            return Err("limits.connect_timeout_secs must be positive".into());
        }
        if let Some(addr) = self.listen.mqtt_plain
            && !addr.ip().is_loopback()
            && !self.listen.plain_remote
        {
            return Err(format!(
                "listen.mqtt_plain = \"{addr}\" is not a loopback address: SAS tokens would cross \
                 the network in clear. Use 127.0.0.1, or set listen.plain_remote = true if the \
                 network is trusted"
            ));
        }
        if let Some(addr) = self.listen.metrics {
            check_metrics_listen("listen.metrics", addr)?;
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

    /// Whether `host` names this hub: `hostname` or one of `hostname_aliases`, ignoring case.
    pub fn is_own_hostname(&self, host: &str) -> bool {
        std::iter::once(&self.hostname)
            .chain(&self.hostname_aliases)
            .any(|name| name.eq_ignore_ascii_case(host))
    }

    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
hostname = "localhost"
[tls]
cert = "certs/server.pem"
key = "certs/server.key"
[storage]
registry = "registry.sqlite"
events = "events"
[[policy]]
name = "iothubowner"
primary_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
secondary_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
rights = ["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"]
"#;

    #[test]
    fn loads_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.toml");
        std::fs::write(&p, MINIMAL).unwrap();
        let c = HubConfig::load(&p).unwrap();
        assert_eq!(c.tls.cert, dir.path().join("certs/server.pem"));
        assert_eq!(c.listen.mqtt.port(), 8883);
        assert!(
            c.connection_string("iothubowner")
                .unwrap()
                .starts_with("HostName=localhost;SharedAccessKeyName=iothubowner;")
        );
        assert!(c.storage.fsync);
        let again: HubConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_configs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.toml");
        std::fs::write(&p, MINIMAL.replace("hostname", "hostnam")).unwrap();
        assert!(
            HubConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("hub.toml")
        );
        std::fs::write(
            &p,
            MINIMAL.replace("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "short"),
        )
        .unwrap();
        assert!(
            HubConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("keys must be base64")
        );
        std::fs::write(&p, format!("{MINIMAL}\n[limits]\nbogus = 1\n")).unwrap();
        assert!(HubConfig::load(&p).is_err());
        std::fs::write(
            &p,
            format!("{MINIMAL}\n[limits]\nmax_subscriptions_per_connection = 0\n"),
        )
        .unwrap();
        assert!(
            HubConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("limits.max_subscriptions_per_connection must be positive")
        );
    }

    #[test]
    fn the_hub_answers_to_its_hostname_and_aliases_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.toml");
        let text = MINIMAL.replace(
            "hostname = \"localhost\"",
            "hostname = \"localhost\"\nhostname_aliases = [\"Hub.Example\"]",
        );
        std::fs::write(&p, text).unwrap();
        let c = HubConfig::load(&p).unwrap();
        assert!(c.is_own_hostname("LocalHost"));
        assert!(c.is_own_hostname("hub.example"));
        assert!(!c.is_own_hostname("other.example"));
        let again: HubConfig = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn old_configs_get_the_new_limits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.toml");
        std::fs::write(&p, format!("{MINIMAL}\n[limits]\nmax_connections = 10\n")).unwrap();
        let c = HubConfig::load(&p).unwrap();
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.limits.max_connections_per_ip, 10_000);
        assert_eq!(c.limits.max_subscriptions_per_connection, 64);
    }
}
