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

mod forward;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hub::registry::IfMatch;
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
    Tls(#[from] hub::tls::TlsError),
    #[error("scope sync: {0}")]
    Scope(String),
    #[error("configuration: {0}")]
    Config(String),
}

pub struct Gateway {
    pub config: EdgeConfig,
    /// The local side: hub MQTT endpoint, authentication and durable store.
    pub local: Arc<hub::Hub>,
    link: upstream::HubLink,
    routes: Vec<routes::Route>,
    clock: hub::time::SharedClock,
    /// Messages delivered upstream since start.
    pub forwarded: AtomicU64,
}

impl Gateway {
    pub fn open(config: EdgeConfig, clock: hub::time::SharedClock) -> Result<Arc<Self>, EdgeError> {
        let texts = if config.routes.is_empty() {
            vec!["FROM /messages/* INTO $upstream".to_owned()]
        } else {
            config.routes.clone()
        };
        let mut routes = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            let name = format!("route{i}");
            routes.push(
                routes::parse_route(&name, text)
                    .map_err(|error| EdgeError::Route { name, error })?,
            );
        }
        let local_config = hub::config::HubConfig {
            hostname: config.hub_hostname.clone(),
            listen: hub::config::Listen::default(),
            tls: hub::config::Tls {
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
        let local = hub::Hub::open(local_config, clock.clone())?;
        let link = upstream::HubLink {
            hostname: config.hub_hostname.clone(),
            addr: config.hub_mqtt.clone(),
            tls: hub::tls::client_config(&config.hub_ca)?,
            edge_id: config.edge_id.clone(),
        };
        Ok(Arc::new(Self {
            config,
            local,
            link,
            routes,
            clock,
            forwarded: AtomicU64::new(0),
        }))
    }

    /// The `$edgeHub` SAS token (an hour).
    pub fn edge_hub_token(&self) -> String {
        let key = iot_auth::sas::decode_key(&self.config.edge_hub_key).unwrap_or_default();
        let expiry = u64::try_from(self.clock.now().unix_timestamp()).unwrap_or(0) + 3600;
        let resource = format!(
            "{}/devices/{}/modules/$edgeHub",
            self.config.hub_hostname, self.config.edge_id
        );
        iot_auth::sas::generate_sas_token(&resource, &key, None, expiry)
    }

    /// Reads the device scope from the hub and makes the local registry match it (children only).
    /// Returns the number of children. The registry persists, so an offline restart still knows them.
    pub async fn sync_scope(&self) -> Result<usize, EdgeError> {
        let client = hub::client::ServiceClient::new(
            self.config.hub_https.clone(),
            self.config.hub_hostname.clone(),
            String::new(),
            Vec::new(),
            self.link.tls.clone(),
        )
        .with_api_version("2018-08-30-preview")
        .with_authorization(Some(self.edge_hub_token()));
        let mut path = format!(
            "/devices/{}/modules/$edgeHub/devicesAndModulesInDeviceScope?deviceCount=500",
            iot_auth::percent_encode(&self.config.edge_id)
        );
        let mut children = Vec::new();
        let mut cas = Vec::new();
        loop {
            let r = client
                .send(hyper::Method::GET, &path, None, &[])
                .await
                .map_err(|e| EdgeError::Scope(e.to_string()))?;
            if !r.status.is_success() {
                return Err(EdgeError::Scope(format!(
                    "the hub answered {}: {}",
                    r.status,
                    r.json()
                )));
            }
            let page = r.json();
            for d in page["devices"].as_array().cloned().unwrap_or_default() {
                if let Ok(device) = serde_json::from_value::<hub::model::Device>(d)
                    && device.device_id != self.config.edge_id
                {
                    children.push(device);
                }
            }
            for ca in page["certificateAuthorities"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                if let (Some(name), Some(pem)) = (ca["name"].as_str(), ca["certificate"].as_str()) {
                    cas.push((name.to_owned(), pem.to_owned()));
                }
            }
            match page["continuationLink"].as_str() {
                Some(link) => path = link.to_owned(),
                None => break,
            }
        }
        // The hub's verified CAs: CA-signed children are checked against them here too.
        for (name, pem) in cas {
            if let Err(e) = self.local.cas.upload(&name, &pem, true, &IfMatch::Any) {
                warn!(ca = %name, error = %e, "Could not take over a CA certificate from the hub");
            }
        }
        self.apply_scope(children)
    }

    fn apply_scope(&self, children: Vec<hub::model::Device>) -> Result<usize, EdgeError> {
        let err = |e: hub::error::ApiError| EdgeError::Scope(e.to_string());
        let wanted: std::collections::BTreeSet<String> =
            children.iter().map(|d| d.device_id.clone()).collect();
        for old in self.local.registry.list_devices(None).map_err(err)? {
            if !wanted.contains(&old.device_id) {
                info!(device = %old.device_id, "Removed from this gateway's scope");
                self.local
                    .registry
                    .delete_device(&old.device_id, &IfMatch::Any)
                    .map_err(err)?;
                self.local.connections.kick_device(&old.device_id);
            }
        }
        let n = children.len();
        for d in children {
            let id = d.device_id.clone();
            let disabled = d.status == hub::model::Status::Disabled;
            self.local
                .registry
                .put_device(&id, d, &IfMatch::Any)
                .map_err(err)?;
            if disabled {
                self.local.connections.kick_device(&id);
            }
        }
        Ok(n)
    }

    /// Serves children on `listener` and forwards upstream until `shutdown`; the scope is synced
    /// at start (failures tolerated: the last synced scope is used offline) and every `refresh`.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        refresh: std::time::Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), EdgeError> {
        match self.sync_scope().await {
            Ok(n) => info!(children = n, "Device scope synced"),
            Err(e) => warn!(error = %e, "Device scope not synced; using the last one"),
        }
        let internal = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(|e| EdgeError::Scope(e.to_string()))?;
        let local = tokio::spawn(hub::run(
            self.local.clone(),
            hub::Listeners {
                mqtt: listener,
                https: internal,
            },
            shutdown.clone(),
        ));
        let fwd = tokio::spawn(forward::run(self.clone(), shutdown.clone()));
        let sync = tokio::spawn(sync_loop(self.clone(), refresh, shutdown));
        let (a, _, _) = tokio::join!(local, fwd, sync);
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
