//! # ferrohub hub
//!
//! The IoT hub: identity registry (SQLite), CA certificates with proof of possession, the MQTT/TLS
//! device endpoint, the service REST API and the durable events log.
//!
//! ```text
//!  device ──MQTT/TLS──► mqtt::serve ──► device_session ──► registry / cas
//!                          │ telemetry                 ▲
//!                          ▼                           │ REST (SAS policy)
//!                 durable events log ◄── GET /events ── api::serve ◄── service SDKs, CLI
//! ```
//!
//! [`run`] serves everything on the given listeners until the shutdown signal, so tests start a
//! whole hub in-process on ephemeral ports.
#![forbid(unsafe_code)]

pub mod amqp;
pub mod api;
pub mod auth_switch;
pub mod c2d;
pub mod cas;
pub mod config;
pub mod device_session;
pub mod events;
pub mod methods;
pub mod metrics;
pub mod mqtt;
pub mod presence;
pub mod registry;
pub mod store;
pub mod twin;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use config::HubConfig;
use ferrohub_runtime::time::SharedClock;
use ferrohub_runtime::tls;

/// A failure to start the hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] ferrohub_runtime::store::StoreError),
    #[error("events log {path}: {source}")]
    Log {
        path: String,
        source: durable_log::LogError,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen for plain MQTT on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for metrics (listen.metrics) on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Everything a running hub shares between its endpoints.
pub struct Hub {
    pub config: HubConfig,
    pub registry: registry::RegistryService,
    pub cas: ferrohub_runtime::cas::CaService,
    pub events: durable_log::Log,
    pub clock: SharedClock,
    /// Live device sessions (shared with the registry and the CA service, whose writes end those
    /// they invalidate).
    pub connections: Arc<device_session::live::Connections>,
    pub metrics: metrics::Metrics,
    pub twins: twin::TwinService,
    pub methods: methods::Methods,
    /// Set by a gateway: twin and method traffic goes upstream (see [`upstream`]).
    pub upstream: std::sync::OnceLock<Arc<dyn upstream::Upstream>>,
    /// Device and module SAS on or off, switchable while running (`PUT /configuration/auth`).
    pub auth: auth_switch::AuthSwitches,
}

impl Hub {
    /// Opens the registry and the events log named by the config (recovering the log if needed).
    pub fn open(config: HubConfig, clock: SharedClock) -> Result<Arc<Self>, HubError> {
        Self::open_with_log(config, clock, |_| {})
    }

    /// [`Hub::open`], with a last word on the events log's settings (a gateway uses smaller
    /// segments so its store shrinks as it drains).
    pub fn open_with_log(
        config: HubConfig,
        clock: SharedClock,
        tweak: impl FnOnce(&mut durable_log::LogConfig),
    ) -> Result<Arc<Self>, HubError> {
        // The registry (created private, with its directory) and the events log hold every
        // device key and all telemetry: 0600 files in 0700 directories, looser ones narrowed.
        let store: Arc<dyn store::Registry> =
            Arc::new(store::SqliteRegistry::open(&config.storage.registry)?);
        let mut log_config = durable_log::LogConfig {
            dir: config.storage.events.clone(),
            fsync: config.storage.fsync,
            retention_bytes: config.storage.retention_mib.map(|m| m * 1024 * 1024),
            retention_age_ms: config.storage.retention_hours.map(|h| h * 3_600_000),
            ..Default::default()
        };
        tweak(&mut log_config);
        let (events, report) =
            durable_log::Log::open(log_config).map_err(|source| HubError::Log {
                path: config.storage.events.display().to_string(),
                source,
            })?;
        if report.truncated_bytes > 0 {
            warn!(
                bytes = report.truncated_bytes,
                "Events log had a torn tail; truncated it"
            );
        }
        info!(records = report.next_offset, "Events log opened");
        let auth = auth_switch::AuthSwitches::open(&config.auth, store.clone())?;
        let connections = Arc::new(device_session::live::Connections::new(clock.clone()));
        Ok(Arc::new(Self {
            auth,
            registry: registry::RegistryService::new(store.clone(), clock.clone())
                .ending_sessions(connections.clone()),
            cas: ferrohub_runtime::cas::CaService::new(store, clock.clone())
                .ending_sessions(connections.clone()),
            events,
            clock,
            connections,
            metrics: metrics::Metrics::default(),
            twins: twin::TwinService::default(),
            methods: methods::Methods::default(),
            upstream: std::sync::OnceLock::new(),
            config,
        }))
    }
}

/// The sockets the hub serves on (bound by the caller, so tests can use port 0).
pub struct Listeners {
    pub mqtt: TcpListener,
    pub https: TcpListener,
    /// AMQP over TLS (`listen.amqp`), when served.
    pub amqp: Option<TcpListener>,
}

impl Listeners {
    /// MQTT and HTTPS, without AMQP (embedders that serve devices over MQTT only).
    pub fn without_amqp(mqtt: TcpListener, https: TcpListener) -> Self {
        Self {
            mqtt,
            https,
            amqp: None,
        }
    }

    /// Binds the addresses of the config.
    pub async fn bind(config: &HubConfig) -> std::io::Result<Self> {
        let mqtt = TcpListener::bind(config.listen.mqtt).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for MQTT on {}: {e}", config.listen.mqtt),
            )
        })?;
        let https = TcpListener::bind(config.listen.https).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for HTTPS on {}: {e}", config.listen.https),
            )
        })?;
        let amqp = match config.listen.amqp {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen for AMQP on {addr}: {e}"))
            })?),
            None => None,
        };
        Ok(Self { mqtt, https, amqp })
    }
}

/// Serves MQTT and HTTPS until `shutdown` turns true, then stops accepting and returns.
pub async fn run(
    hub: Arc<Hub>,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HubError> {
    let mqtt_tls = tls::device_server_config(&hub.config.tls.cert, &hub.config.tls.key, &[])?;
    let https_tls = tls::device_server_config(
        &hub.config.tls.cert,
        &hub.config.tls.key,
        &[b"h2", b"http/1.1"],
    )?;
    let plain = match hub.config.listen.mqtt_plain {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| HubError::Listen { addr, source })?;
            warn!(%addr, "Plain MQTT listener (no TLS, SAS only): for local clients only");
            Some(listener)
        }
        None => None,
    };
    let metrics = ferrohub_runtime::net::bind_metrics(hub.config.listen.metrics)
        .await
        .map_err(|(addr, source)| HubError::MetricsListen { addr, source })?;
    info!(mqtt = ?listeners.mqtt.local_addr().ok(), https = ?listeners.https.local_addr().ok(), hostname = %hub.config.hostname, "Hub serving");
    let mqtt = tokio::spawn(mqtt::serve(
        hub.clone(),
        listeners.mqtt,
        mqtt_tls,
        shutdown.clone(),
    ));
    let https = tokio::spawn(api::serve(
        hub.clone(),
        listeners.https,
        https_tls,
        shutdown.clone(),
    ));
    let plain = plain
        .map(|listener| tokio::spawn(mqtt::serve_plain(hub.clone(), listener, shutdown.clone())));
    let amqp = match listeners.amqp {
        Some(listener) => {
            info!(amqp = ?listener.local_addr().ok(), "AMQP listener");
            let tls = tls::device_server_config(&hub.config.tls.cert, &hub.config.tls.key, &[])?;
            Some(tokio::spawn(amqp::serve(
                hub.clone(),
                listener,
                tls,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    if let Some(listener) = metrics {
        let h = hub.clone();
        let render = move || h.metrics.render(h.events.next_offset());
        tokio::spawn(ferrohub_runtime::net::serve_metrics(
            listener,
            render,
            shutdown.clone(),
        ));
    }
    let chores = tokio::spawn(housekeeping(hub.clone(), shutdown));
    let _ = tokio::join!(mqtt, https, chores);
    if let Some(plain) = plain {
        let _ = plain.await;
    }
    if let Some(amqp) = amqp {
        let _ = amqp.await;
    }
    info!("Hub stopped");
    Ok(())
}

/// What a hub does besides serving, until `shutdown`: drop events past retention and write
/// connection changes to the registry. [`run`] runs it; so does anything serving the hub's
/// endpoints itself (the gateway with a renewable certificate).
pub async fn housekeeping(hub: Arc<Hub>, shutdown: watch::Receiver<bool>) {
    tokio::join!(
        retention_task(hub.clone(), shutdown.clone()),
        presence_task(hub, shutdown)
    );
}

/// Writes connection changes to the registry at most once a second (see [`presence`]), and once
/// more when the hub stops.
async fn presence_task(hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    let flush = |hub: Arc<Hub>| async move {
        let hub2 = hub.clone();
        match tokio::task::spawn_blocking(move || hub2.registry.flush_connections()).await {
            Ok(Err(e)) => warn!(error = %e, "Could not record connection states; will retry"),
            Err(e) => warn!(error = %e, "Connection state writer failed; will retry"),
            Ok(Ok(_)) => {}
        }
    };
    loop {
        let stopping = tokio::select! {
            _ = shutdown.changed() => true,
            () = hub.registry.presence.wake.notified() => false,
        };
        if !stopping {
            // Gather the changes of the next second into one commit.
            tokio::select! {
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        flush(hub.clone()).await;
        if *shutdown.borrow() {
            // Connections closing during shutdown record their disconnect after the first flush.
            tokio::time::sleep(Duration::from_millis(100)).await;
            flush(hub).await;
            return;
        }
    }
}

async fn retention_task(hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let now_ms = ferrohub_runtime::time::now_ms(hub.clock.as_ref()).unsigned_abs();
        if let Err(e) = hub.events.enforce_retention(now_ms) {
            warn!(error = %e, "Events retention failed");
        }
    }
}
