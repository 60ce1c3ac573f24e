//! The configuration parts every server shares: listen addresses and TLS files as `hub.toml` and
//! `dps.toml` spell them, the check on a token-free metrics listener, and the error a config file
//! fails to load with. Each server's own file format lives with it (`hub::config`,
//! `dps::config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A configuration problem, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The `[listen]` table: the hub's addresses; the provisioning service reads the same table and
/// serves on `mqtt`, `https` and `metrics`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// MQTT over TLS.
    #[serde(default = "default_mqtt")]
    pub mqtt: SocketAddr,
    /// HTTPS: service REST API and the events stream.
    #[serde(default = "default_https")]
    pub https: SocketAddr,
    /// MQTT without TLS (off unless set), like mosquitto's `listener 1883`: SAS only (no client
    /// certificates without TLS), and tokens cross the wire in clear, so it must be a loopback
    /// address unless `plain_remote = true`. For local processes and tests, never for devices
    /// across a network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_plain: Option<SocketAddr>,
    /// Allow `mqtt_plain` on a non-loopback address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_remote: bool,
    /// AMQP 1.0 over TLS (the hub's device and service endpoint, IoT Hub's port 5671; off
    /// unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<SocketAddr>,
    /// A plain-HTTP listener serving only `GET /metrics`, without a token, for a local
    /// Prometheus (off unless set). Loopback addresses only; from elsewhere scrape `/metrics` on
    /// the HTTPS port with a policy token instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            mqtt: default_mqtt(),
            https: default_https(),
            mqtt_plain: None,
            plain_remote: false,
            amqp: None,
            metrics: None,
        }
    }
}

/// A token-free metrics listener must be loopback: the counters name devices' failure reasons
/// and the service's load, and nothing authenticates the scraper. `key` names the setting.
pub fn check_metrics_listen(key: &str, addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "{key} = \"{addr}\" is not a loopback address: the metrics listener has no \
         authentication. Use 127.0.0.1 (or ::1), or leave it unset and scrape /metrics on the \
         HTTPS port with a policy token"
    ))
}

fn default_mqtt() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}
fn default_https() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}

/// The `[tls]` table: the server's certificate, key and issuing CA.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Server certificate followed by its chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// The CA that issued the server certificate: what clients (the CLI, SDKs) must trust.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}
