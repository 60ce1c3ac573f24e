//! The local control socket `ferrohub edge list|restart` talk to: HTTP/1.1 over a Unix socket
//! (mode 0600: root and the owner), as the identity daemons speak it. One protocol, two servers:
//! the edge agent (`{agent data}/agent.sock`, see `edge_agent::control`) answers for every module
//! it runs; a gateway run without an agent answers for itself on `{data_dir}/gateway.sock`
//! ([`serve_gateway`]).
//!
//! - `GET /modules` → `[{"name", "status", "description", "config", "pid", "restart_count"}]`
//! - `POST /modules/{name}/restart` → 200, or 404 for an unknown module
//! - `GET /status` → what the server is and does (the gateway's: [`GatewayStatus`])

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use hyper::Method;
use identity::client::{UdsClient, UdsError};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::Gateway;

/// The gateway's name as a module (IoT Edge's).
pub const EDGE_HUB: &str = "edgeHub";

/// The gateway's own control socket in its data directory (when it runs without an agent).
pub const GATEWAY_SOCKET: &str = "gateway.sock";

/// `{data_dir}/gateway.sock`.
pub fn gateway_socket(data_dir: &Path) -> PathBuf {
    data_dir.join(GATEWAY_SOCKET)
}

/// The gateway's log file in its data directory, written whoever runs it.
pub fn gateway_log(data_dir: &Path) -> PathBuf {
    data_dir.join("logs").join(format!("{EDGE_HUB}.log"))
}

/// One line of `edge list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ListEntry {
    pub name: String,
    pub status: String,
    pub description: String,
    pub config: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub restart_count: u32,
}

/// Binds a control socket, readable and writable by its owner only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let l = identity::uds::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Talks to a running agent or gateway.
pub struct Client(UdsClient);

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self(UdsClient::new(socket))
    }

    pub async fn list(&self) -> Result<Vec<ListEntry>, UdsError> {
        let v = self.0.call(Method::GET, "/modules", None).await?;
        Ok(serde_json::from_value(v).unwrap_or_default())
    }

    pub async fn restart(&self, module: &str) -> Result<(), UdsError> {
        self.0
            .call(
                Method::POST,
                &format!("/modules/{}/restart", iot_auth::percent_encode(module)),
                None,
            )
            .await
            .map(drop)
    }

    pub async fn status(&self) -> Result<Value, UdsError> {
        self.0.call(Method::GET, "/status", None).await
    }
}

/// How long ago `start` was, as `docker ps` says it: `5 seconds`, `3 minutes`, `2 hours`, `4 days`.
pub fn since(start: OffsetDateTime, now: OffsetDateTime) -> String {
    let secs = (now - start).whole_seconds().max(0);
    let (n, unit) = match secs {
        0..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Asks the process serving the gateway to restart itself (set by whoever runs it).
pub type RestartFn = Arc<dyn Fn() + Send + Sync>;

/// What the gateway's control socket knows besides the gateway.
pub struct GatewayControl {
    pub gateway: Arc<Gateway>,
    /// When this process started serving.
    pub started: OffsetDateTime,
    /// Its command line (the `config` column of `edge list`).
    pub command: String,
    /// Restarts so far (kept across re-executions by the caller).
    pub restarts: u32,
    pub restart: RestartFn,
}

/// `GET /status` of a gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub edge_id: String,
    pub hub: String,
    pub pid: u32,
    pub started_at: String,
    pub restart_count: u32,
    /// The gateway's own `$edgeHub` session with the hub is up.
    pub upstream_connected: bool,
    /// Devices and modules connected to the gateway now.
    pub clients_connected: usize,
    /// Stored messages not yet delivered to the hub.
    pub store_backlog: u64,
    pub listen: String,
    pub hub_mqtt: String,
    pub hub_https: String,
    pub hub_ca: PathBuf,
    pub tls_cert: PathBuf,
    pub data_dir: PathBuf,
}

impl GatewayControl {
    fn status(&self) -> GatewayStatus {
        let g = &self.gateway;
        let c = &g.config;
        let next = g.local.events.next_offset();
        GatewayStatus {
            edge_id: c.edge_id.clone(),
            hub: c.hub_hostname.clone(),
            pid: std::process::id(),
            started_at: ferrohub_runtime::time::rfc3339(self.started),
            restart_count: self.restarts,
            upstream_connected: g.relay.stats.edge_hub_online.load(Ordering::Relaxed),
            clients_connected: g.local.connections.count(),
            store_backlog: next.saturating_sub(g.stats.upstream_offset.load(Ordering::Relaxed)),
            listen: c.listen.to_string(),
            hub_mqtt: c.hub_mqtt.clone(),
            hub_https: c.hub_https.clone(),
            hub_ca: c.hub_ca.clone(),
            tls_cert: c.tls_cert.clone(),
            data_dir: c.data_dir.clone(),
        }
    }

    /// The gateway's line of `edge list`.
    pub fn entry(&self, now: OffsetDateTime) -> ListEntry {
        let s = self.status();
        let upstream = if s.upstream_connected {
            "hub connected"
        } else {
            "hub not connected"
        };
        ListEntry {
            name: EDGE_HUB.to_owned(),
            status: "running".into(),
            description: format!(
                "Up {}, {upstream}, {} client(s), {} message(s) waiting",
                since(self.started, now),
                s.clients_connected,
                s.store_backlog
            ),
            config: self.command.clone(),
            pid: Some(s.pid),
            restart_count: self.restarts,
        }
    }
}

/// Serves the gateway's control API on `listener` until `shutdown`.
pub async fn serve_gateway(
    listener: UnixListener,
    control: Arc<GatewayControl>,
    shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/modules", get(gateway_list))
        .route("/modules/{name}/restart", post(gateway_restart))
        .route("/status", get(gateway_status))
        .with_state(control);
    identity::uds::serve(listener, app, 10, "edge-gateway", shutdown).await;
}

async fn gateway_list(State(c): State<Arc<GatewayControl>>) -> Response {
    let now = c.gateway.clock.now();
    axum::Json(vec![c.entry(now)]).into_response()
}

async fn gateway_status(State(c): State<Arc<GatewayControl>>) -> Response {
    axum::Json(c.status()).into_response()
}

async fn gateway_restart(
    State(c): State<Arc<GatewayControl>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if name != EDGE_HUB {
        let message = format!(
            "no module {name} here: without an edge agent the gateway ({EDGE_HUB}) is the only one"
        );
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "message": message })),
        )
            .into_response();
    }
    tracing::info!("Restart requested on the control socket");
    (c.restart)();
    axum::Json(json!({ "restarted": name })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_like_docker_ps() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let at = |s: i64| since(t, t + time::Duration::seconds(s));
        assert_eq!(at(0), "0 seconds");
        assert_eq!(at(1), "1 second");
        assert_eq!(at(125), "2 minutes");
        assert_eq!(at(3600), "1 hour");
        assert_eq!(at(3 * 86400), "3 days");
        assert_eq!(at(-5), "0 seconds");
    }
}
