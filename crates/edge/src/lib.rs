//! # ferrohub edge gateway
//!
//! A transparent gateway: downstream devices connect to it exactly as they would to the hub (same
//! MQTT API, `HostName` = the hub in their usernames and tokens, `GatewayHostName` = the gateway);
//! it authenticates them locally against its device scope, makes every message durable before
//! acknowledging it, routes it, and sends `$upstream` messages to the hub on the device's behalf.
//!
//! ```text
//!  child ──MQTT/TLS──► local hub (hub crate: auth, durable log) ──► forward (routes) ──► hub
//!                             ▲ registry = device scope, synced from the hub's scope API
//! ```
//!
//! The local side reuses the hub's MQTT endpoint, authentication and durable events log, with a
//! registry that holds only this gateway's children (synced from the hub, kept for offline use).
#![forbid(unsafe_code)]

pub mod control;
mod forward;
pub mod logs;
mod pipeline;
pub mod relay;
mod scope;
pub mod store;
pub mod upstream;
// Identity mode (`ferrohub edge -c config.toml`) and the renewable server certificate.
pub mod identity_source;
pub mod keyd_signer;
pub mod server_cert;
mod sni;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// What a gateway needs to run (`edge.toml`, written by `ferrohub edge init`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This edge device's id at the hub.
    pub edge_id: String,
    /// The hub's host name (children use it in usernames and tokens).
    pub hub_hostname: String,
    /// The hub's MQTT and HTTPS addresses (`host:port`).
    pub hub_mqtt: String,
    pub hub_https: String,
    /// The CA to trust for the hub's TLS certificate.
    pub hub_ca: PathBuf,
    /// The `$edgeHub` module's key (base64): the gateway's credential at the hub.
    pub edge_hub_key: String,
    /// The gateway's TLS server certificate chain and key (issued from its edge CA).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Local registry and message store.
    pub data_dir: PathBuf,
    /// Routes (the IoT Edge language); default `FROM /messages/* INTO $upstream`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// How long messages wait for the hub (hours).
    #[serde(default = "two")]
    pub store_ttl_hours: u64,
    /// Where children connect (MQTT over TLS).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The store's size limit (MiB).
    #[serde(default = "default_store_mib")]
    pub store_max_mib: u64,
    /// What happens when the store is full.
    #[serde(default)]
    pub store_full: StoreFull,
    /// Where to serve Prometheus metrics over plain HTTP, without a token (e.g. `127.0.0.1:9601`;
    /// loopback only); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Where to serve the embedded hub's HTTPS API (the hub's REST API over the gateway's TLS
    /// certificate, authenticated against the local registry as at the hub); none by default.
    #[serde(default)]
    pub local_api_listen: Option<SocketAddr>,
}

/// The store-full policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFull {
    /// Close the sender's connection without acknowledging: it keeps the message and retries.
    #[default]
    Refuse,
    /// Delete the oldest undelivered messages to make room (counted and logged).
    DropOldest,
}

fn default_store_mib() -> u64 {
    1024
}

fn two() -> u64 {
    2
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8883))
}

impl EdgeConfig {
    /// Reads `edge.toml`; relative paths are relative to its directory.
    pub fn load(path: &std::path::Path) -> Result<Self, EdgeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
        let mut c: Self = toml::from_str(&text)
            .map_err(|e| EdgeError::Config(format!("{}: {}", path.display(), e.message())))?;
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for p in [
            &mut c.hub_ca,
            &mut c.tls_cert,
            &mut c.tls_key,
            &mut c.data_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(addr) = c.metrics_listen {
            ferrohub_runtime::config::check_metrics_listen("metrics_listen", addr)
                .map_err(|e| EdgeError::Config(format!("{}: {e}", path.display())))?;
        }
        Ok(c)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Hub(#[from] hub::HubError),
    #[error("route {name}: {error}")]
    Route {
        name: String,
        error: routes::ParseError,
    },
    #[error("TLS: {0}")]
    Tls(#[from] ferrohub_runtime::tls::TlsError),
    #[error("scope sync: {0}")]
    Scope(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot make a $edgeHub token: {0}")]
    Token(String),
    #[error("identity service: {0}")]
    Identity(String),
}

pub struct Gateway {
    pub config: EdgeConfig,
    /// The local side: hub MQTT endpoint, authentication and durable store.
    pub local: Arc<hub::Hub>,
    link: upstream::HubLink,
    /// Routes from local config (used until the `$edgeHub` twin names some).
    config_routes: Vec<routes::Route>,
    /// The routes in force and the store TTL (seconds; `None` = keep until delivered).
    table: RwLock<(Arc<Vec<routes::Route>>, Option<u64>)>,
    /// Upstream sessions (one per identity behind the gateway).
    pub relay: Arc<relay::Relay>,
    token: relay::TokenFn,
    pub(crate) clock: ferrohub_runtime::time::SharedClock,
    /// Messages delivered upstream since start.
    pub forwarded: AtomicU64,
    pub stats: GatewayStats,
    /// Unknown identities recently looked up at the hub (client id → ms).
    lookups: Mutex<std::collections::HashMap<String, i64>>,
    /// Identities recently checked at the hub after it refused their upstream session.
    rechecks: Mutex<std::collections::HashMap<String, i64>>,
    /// Identities dropped because the hub disabled or removed them.
    dropped: scope::Dropped,
    /// A renewable server certificate, when set (see [`Gateway::use_server_cert`]).
    server_cert: std::sync::OnceLock<Arc<ferrohub_runtime::tls::ReloadableCert>>,
}

/// Store-and-forward counters (see also [`relay::RelayStats`]).
#[derive(Default)]
pub struct GatewayStats {
    /// Messages put in module input queues.
    pub to_modules: AtomicU64,
    /// Messages dropped because they outlived their TTL before delivery.
    pub expired: AtomicU64,
    /// Upstream batches retried because the hub was unreachable.
    pub upstream_retries: AtomicU64,
    /// Recorded positions of the upstream and module-input lanes in the store.
    pub upstream_offset: AtomicU64,
    pub inputs_offset: AtomicU64,
    /// Times the `$edgeHub` desired properties were applied, and refused.
    pub desired_applied: AtomicU64,
    pub desired_refused: AtomicU64,
    /// Undelivered messages deleted from the store (TTL, or `drop_oldest` when full).
    pub dropped: AtomicU64,
    /// Messages refused because the store was full (`refuse`).
    pub refused: AtomicU64,
    /// The store is over its limit (set by the maintenance pass).
    pub full: std::sync::atomic::AtomicBool,
    /// Children whose TLS SNI names no name of the gateway's server certificate.
    pub sni_mismatches: Arc<AtomicU64>,
}

impl Gateway {
    /// Opens a gateway whose `$edgeHub` tokens are signed with `config.edge_hub_key`.
    pub fn open(
        config: EdgeConfig,
        clock: ferrohub_runtime::time::SharedClock,
    ) -> Result<Arc<Self>, EdgeError> {
        let token: relay::TokenFn = {
            let (key, clock) = (config.edge_hub_key.clone(), clock.clone());
            let resource = format!(
                "{}/devices/{}/modules/$edgeHub",
                config.hub_hostname, config.edge_id
            );
            Arc::new(move || {
                let token = edge_hub_token(&resource, &key, clock.as_ref());
                Box::pin(async move { Ok(token) })
            })
        };
        Self::open_with(config, clock, token)
    }

    /// Opens a gateway whose `$edgeHub` tokens come from `token` (e.g. signed by the identity
    /// service's keyd; `config.edge_hub_key` is then unused).
    pub fn open_with(
        config: EdgeConfig,
        clock: ferrohub_runtime::time::SharedClock,
        token: relay::TokenFn,
    ) -> Result<Arc<Self>, EdgeError> {
        // The data directory holds the device scope (keys), the store (telemetry), offsets and
        // TLS files: 0700 with 0600 files, looser ones narrowed (see `ferrohub_runtime::fsperm`).
        ferrohub_runtime::fsperm::secure_dir(&config.data_dir)
            .map_err(|e| EdgeError::Config(format!("data_dir: {e}")))?;
        let texts = if config.routes.is_empty() {
            vec!["FROM /messages/* INTO $upstream".to_owned()]
        } else {
            config.routes.clone()
        };
        let mut config_routes = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let name = format!("route{i}");
            config_routes.push(
                routes::parse_route(&name, text)
                    .map_err(|error| EdgeError::Route { name, error })?,
            );
        }
        let local_config = hub::config::HubConfig {
            // Children name the hub, not this gateway, in their usernames and tokens (the Python
            // and Node SDKs send `HostName`, never `GatewayHostName`): no alias is needed.
            hostname: config.hub_hostname.clone(),
            hostname_aliases: Vec::new(),
            listen: ferrohub_runtime::config::Listen::default(),
            tls: ferrohub_runtime::config::Tls {
                cert: config.tls_cert.clone(),
                key: config.tls_key.clone(),
                ca: None,
            },
            storage: hub::config::Storage {
                registry: config.data_dir.join("scope.sqlite"),
                events: config.data_dir.join("store"),
                fsync: true,
                retention_hours: Some(config.store_ttl_hours.max(1)),
                retention_mib: None,
            },
            auth: hub::config::AuthSettings::default(),
            limits: hub::config::Limits::default(),
            policies: vec![],
        };
        let max_bytes = config.store_max_mib.max(1) * 1024 * 1024;
        let policy = config.store_full;
        let local = hub::Hub::open_with_log(local_config, clock.clone(), |log| {
            store::tune(log, max_bytes, policy);
        })?;
        let link = upstream::HubLink {
            hostname: config.hub_hostname.clone(),
            addr: config.hub_mqtt.clone(),
            tls: ferrohub_runtime::tls::client_config(&config.hub_ca)?,
            edge_id: config.edge_id.clone(),
        };
        let ttl = Some(config.store_ttl_hours.max(1) * 3600);
        let table = RwLock::new((Arc::new(config_routes.clone()), ttl));
        let desired_path = config.data_dir.join("edgehub-desired.json");
        Ok(Arc::new_cyclic(|me: &Weak<Self>| {
            let weak = me.clone();
            let desired: relay::DesiredFn = Arc::new(move |d: &serde_json::Value| {
                if let Some(g) = weak.upgrade() {
                    g.apply_desired(d, true);
                }
            });
            let weak = me.clone();
            let refused: relay::RefusedFn = Arc::new(move |client_id: &str| {
                if let Some(g) = weak.upgrade() {
                    let id = client_id.to_owned();
                    tokio::spawn(async move { g.recheck(&id).await });
                }
            });
            let relay = Arc::new(relay::Relay::new(
                link.clone(),
                local.clone(),
                token.clone(),
                desired,
                refused,
            ));
            // The local hub hands twin and method traffic, and unknown identities, to us.
            let hook = LocalHook {
                relay: relay.clone(),
                gateway: me.clone(),
            };
            let _ = local
                .upstream
                .set(Arc::new(hook) as Arc<dyn hub::upstream::Upstream>);
            let g = Self {
                config,
                local,
                link,
                config_routes,
                table,
                relay,
                token,
                clock,
                forwarded: AtomicU64::new(0),
                stats: GatewayStats::default(),
                lookups: Mutex::new(std::collections::HashMap::new()),
                rechecks: Mutex::new(std::collections::HashMap::new()),
                dropped: scope::Dropped::default(),
                server_cert: std::sync::OnceLock::new(),
            };
            // The last desired properties seen, for a restart while the hub is unreachable.
            if let Ok(text) = std::fs::read_to_string(&desired_path)
                && let Ok(d) = serde_json::from_str::<serde_json::Value>(&text)
            {
                g.apply_desired(&d, false);
            }
            g
        }))
    }

    /// A `$edgeHub` SAS token.
    pub async fn edge_hub_token(&self) -> Result<String, EdgeError> {
        (self.token)().await.map_err(EdgeError::Token)
    }

    /// The store's size limit in bytes.
    pub fn max_store_bytes(&self) -> u64 {
        self.config.store_max_mib.max(1) * 1024 * 1024
    }

    /// The routes in force.
    pub fn routes(&self) -> Arc<Vec<routes::Route>> {
        self.table
            .read()
            .map_or_else(|_| Arc::new(Vec::new()), |t| t.0.clone())
    }

    /// The store's time to live in seconds (`None`: until delivered).
    pub fn store_ttl_secs(&self) -> Option<u64> {
        self.table.read().ok().and_then(|t| t.1)
    }

    /// Applies the `$edgeHub` twin's desired properties: its routes replace the configured ones
    /// (when it names any) and its `storeAndForwardConfiguration.timeToLiveSecs` sets the TTL.
    /// Invalid properties are refused with a log line naming the problem; the routes in force
    /// stay. `persist` keeps them for a restart without the hub.
    pub fn apply_desired(&self, desired: &serde_json::Value, persist: bool) {
        if desired.get("schemaVersion").is_none() {
            return;
        }
        match routes::parse_edgehub_desired(desired) {
            Ok(cfg) => {
                let table = if cfg.routes.is_empty() {
                    self.config_routes.clone()
                } else {
                    cfg.routes
                };
                let names: Vec<String> = table.iter().map(|r| r.name.clone()).collect();
                info!(routes = ?names, ttl_secs = ?cfg.store_ttl_secs, "Applied the $edgeHub desired properties");
                if let Ok(mut t) = self.table.write() {
                    *t = (Arc::new(table), cfg.store_ttl_secs);
                }
                self.stats.desired_applied.fetch_add(1, Ordering::Relaxed);
                if persist {
                    let path = self.config.data_dir.join("edgehub-desired.json");
                    if let Err(e) =
                        identity::identityd::write_atomic(&path, desired.to_string().as_bytes())
                    {
                        warn!(error = %e, "Could not keep the $edgeHub desired properties");
                    }
                }
            }
            Err(e) => {
                self.stats.desired_refused.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "Refusing the $edgeHub desired properties; the routes in force stay");
            }
        }
    }

    /// Serves children on `listener` and forwards upstream until `shutdown`; the scope is synced
    /// at start (failures tolerated: the last synced scope is used offline) and every `refresh`.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        refresh: std::time::Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), EdgeError> {
        let metrics = match self.config.metrics_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    EdgeError::Config(format!("cannot serve metrics on {addr}: {e}"))
                })?;
                info!(%addr, "Serving metrics at /metrics");
                Some(l)
            }
            None => None,
        };
        let api = match self.config.local_api_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                EdgeError::Config(format!("cannot serve the local API on {addr}: {e}"))
            })?),
            None => None,
        };
        match self.sync_scope().await {
            Ok(n) => info!(children = n, "Device scope synced"),
            Err(e) => warn!(error = %e, "Device scope not synced; using the last one"),
        }
        let local = tokio::spawn(tls::serve_local(
            self.clone(),
            listener,
            api,
            shutdown.clone(),
        ));
        self.relay.start_edge_hub();
        let up = tokio::spawn(forward::run(
            self.clone(),
            forward::Lane::Upstream,
            shutdown.clone(),
        ));
        let inputs = tokio::spawn(forward::run(
            self.clone(),
            forward::Lane::Inputs,
            shutdown.clone(),
        ));
        let upkeep = tokio::spawn(store::maintenance_loop(self.clone(), shutdown.clone()));
        if let Some(listener) = metrics {
            tokio::spawn(store::serve_metrics(
                self.clone(),
                listener,
                shutdown.clone(),
            ));
        }
        let sync = tokio::spawn(sync_loop(self.clone(), refresh, shutdown));
        let (a, _, _, _, _) = tokio::join!(local, up, inputs, sync, upkeep);
        self.relay.close_all();
        a.map_err(|e| EdgeError::Scope(e.to_string()))??;
        Ok(())
    }
}

async fn sync_loop(
    g: Arc<Gateway>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = g.sync_scope().await {
            warn!(error = %e, "Device scope refresh failed; keeping the last one");
        }
    }
}

/// A SAS token for `resource` valid for an hour.
fn edge_hub_token(resource: &str, key: &str, clock: &dyn ferrohub_runtime::time::Clock) -> String {
    let key = iot_auth::sas::decode_key(key).unwrap_or_default();
    let expiry = u64::try_from(clock.now().unix_timestamp()).unwrap_or(0) + 3600;
    iot_auth::sas::generate_sas_token(resource, &key, None, expiry)
}

/// What the local hub tells the gateway (see [`hub::upstream::Upstream`]).
struct LocalHook {
    relay: Arc<relay::Relay>,
    gateway: Weak<Gateway>,
}

impl hub::upstream::Upstream for LocalHook {
    fn subscribed(&self, client_id: &str, filters: &[String]) {
        self.relay.subscribed(client_id, filters);
    }

    fn request(&self, client_id: &str, topic: &str, payload: Vec<u8>) {
        self.relay.request(client_id, topic, payload);
    }

    fn disconnected(&self, client_id: &str) {
        self.relay.disconnected(client_id);
    }

    fn admit(&self, client_id: &str) -> Result<(), String> {
        match self.gateway.upgrade() {
            Some(g) => store::admit(&g, client_id),
            None => Ok(()),
        }
    }

    fn lookup(&self, client_id: &str) -> hub::upstream::LookupFuture {
        let (gateway, id) = (self.gateway.upgrade(), client_id.to_owned());
        Box::pin(async move {
            match gateway {
                Some(g) => g.lookup(&id).await,
                None => false,
            }
        })
    }
}
