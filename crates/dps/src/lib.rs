//! # ferrohub device provisioning service
//!
//! Devices register over MQTT or HTTPS with an X.509 chain or a SAS token; the service finds
//! their enrollment (individual first, then groups), checks the attestation, picks a linked hub,
//! creates or updates the device there through the hub's service API, and answers with the
//! assigned hub and device id.
//!
//! ```text
//!  device ──MQTT/HTTPS──► attest ──► enrollment ──► allocate ──► hub REST (PUT device, twin)
//!                                                        │
//!  service SDK, CLI ──HTTPS──► enrollments, groups, registrations, CA certificates (SQLite)
//! ```
#![forbid(unsafe_code)]

pub mod allocate;
pub mod api;
pub mod attest;
pub mod config;
pub mod error;
pub mod hubs;
pub mod model;
pub mod mqtt;
pub mod ownership;
pub mod provision;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use config::DpsConfig;
use ferrohub_runtime::time::SharedClock;

/// A failure to start the provisioning service.
#[derive(Debug, thiserror::Error)]
pub enum DpsError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] ferrohub_runtime::tls::TlsError),
    #[error("linked hub {hub}: {message}")]
    LinkedHub { hub: String, message: String },
    #[error("cannot listen for metrics (listen.metrics) on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the endpoints share.
pub struct Dps {
    pub config: DpsConfig,
    pub store: Arc<dyn store::DpsStore>,
    /// CA certificates with proof of possession (the runtime's service, on [`Dps::store`]).
    pub cas: ferrohub_runtime::cas::CaService,
    pub hubs: hubs::LinkedHubs,
    pub clock: SharedClock,
    pub operations: provision::Operations,
    pub metrics: Metrics,
}

/// Counters exported at `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub connections: std::sync::atomic::AtomicU64,
    pub registrations_assigned: std::sync::atomic::AtomicU64,
    pub registrations_failed: std::sync::atomic::AtomicU64,
    /// Registrations refused because the device exists at the hub and is not this service's.
    pub registrations_not_managed: std::sync::atomic::AtomicU64,
    pub auth_failures: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    pub http_requests: std::sync::atomic::AtomicU64,
    pub registration_latency: ferrohub_runtime::metrics::Histogram,
}

impl Metrics {
    pub fn auth_failure(&self, reason: &'static str) {
        if let Ok(mut m) = self.auth_failures.lock() {
            *m.entry(reason).or_insert(0) += 1;
        }
    }
}

impl Dps {
    /// Opens the SQLite database and prepares clients for the linked hubs.
    pub fn open(config: DpsConfig, clock: SharedClock) -> Result<Arc<Self>, DpsError> {
        // The database (with its directory) is created private by `open_durable`.
        let store = Arc::new(store::SqliteDpsStore::open(&config.storage.database)?);
        Self::with_store(config, clock, store)
    }

    /// The service on the given store (another backend than the embedded SQLite).
    pub fn with_store(
        config: DpsConfig,
        clock: SharedClock,
        store: Arc<dyn store::DpsStore>,
    ) -> Result<Arc<Self>, DpsError> {
        let hubs = hubs::LinkedHubs::new(&config, &clock)?;
        Ok(Arc::new(Self {
            cas: ferrohub_runtime::cas::CaService::new(store.clone(), clock.clone()),
            store,
            hubs,
            clock,
            operations: provision::Operations::default(),
            metrics: Metrics::default(),
            config,
        }))
    }
}

/// How long the start-up probe of the linked hubs waits for each.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The sockets the service listens on (bound by the caller, so tests can use port 0).
pub struct Listeners {
    pub mqtt: TcpListener,
    pub https: TcpListener,
}

impl Listeners {
    /// Binds the addresses of the config.
    pub async fn bind(config: &DpsConfig) -> std::io::Result<Self> {
        let bind = |addr, what: &'static str| async move {
            TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen for {what} on {addr}: {e}"))
            })
        };
        Ok(Self {
            mqtt: bind(config.listen.mqtt, "MQTT").await?,
            https: bind(config.listen.https, "HTTPS").await?,
        })
    }
}

/// Serves MQTT and HTTPS until `shutdown` turns true.
pub async fn run(
    dps: Arc<Dps>,
    listeners: Listeners,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DpsError> {
    let mqtt_tls = ferrohub_runtime::tls::device_server_config(
        &dps.config.tls.cert,
        &dps.config.tls.key,
        &[],
    )?;
    let https_tls = ferrohub_runtime::tls::device_server_config(
        &dps.config.tls.cert,
        &dps.config.tls.key,
        &[b"http/1.1"],
    )?;
    let metrics = ferrohub_runtime::net::bind_metrics(dps.config.listen.metrics)
        .await
        .map_err(|(addr, source)| DpsError::MetricsListen { addr, source })?;
    info!(mqtt = ?listeners.mqtt.local_addr().ok(), https = ?listeners.https.local_addr().ok(), id_scope = %dps.config.id_scope, "Provisioning service serving");
    if let Some(listener) = metrics {
        let d = dps.clone();
        let render = move || render_metrics(&d);
        tokio::spawn(ferrohub_runtime::net::serve_metrics(
            listener,
            render,
            shutdown.clone(),
        ));
    }
    let probed = dps.clone();
    tokio::spawn(async move {
        for problem in probed.hubs.probe(PROBE_WAIT).await {
            warn!("{problem}");
        }
    });
    let mqtt = tokio::spawn(mqtt::serve(
        dps.clone(),
        listeners.mqtt,
        mqtt_tls,
        shutdown.clone(),
    ));
    let https = tokio::spawn(api::serve(
        dps.clone(),
        listeners.https,
        https_tls,
        shutdown,
    ));
    let _ = tokio::join!(mqtt, https);
    info!("Provisioning service stopped");
    Ok(())
}

/// A new ID scope: `0ne` and 8 upper-case hex digits, like Azure's.
pub fn new_id_scope() -> Result<String, pki::PkiError> {
    let mut bytes = [0u8; 4];
    pki::random_fill(&mut bytes)?;
    Ok(format!("0ne{}", hex::encode_upper(bytes)))
}

/// The Prometheus text of the service's metrics.
pub fn render_metrics(dps: &Dps) -> String {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &dps.metrics;
    let mut out = String::new();
    for (name, help, v) in [
        (
            "ferrohub_dps_mqtt_connections_total",
            "MQTT connections that sent CONNECT.",
            m.connections.load(Relaxed),
        ),
        (
            "ferrohub_dps_registrations_assigned_total",
            "Registrations assigned to a hub.",
            m.registrations_assigned.load(Relaxed),
        ),
        (
            "ferrohub_dps_registrations_failed_total",
            "Registrations that failed after attestation.",
            m.registrations_failed.load(Relaxed),
        ),
        (
            "ferrohub_dps_registrations_not_managed_total",
            "Registrations refused: the device exists at the hub and this service did not create it.",
            m.registrations_not_managed.load(Relaxed),
        ),
        (
            "ferrohub_dps_http_requests_total",
            "HTTPS requests.",
            m.http_requests.load(Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP ferrohub_dps_auth_failures_total Refused registrations by reason.\n# TYPE ferrohub_dps_auth_failures_total counter"
    );
    if let Ok(f) = m.auth_failures.lock() {
        for (reason, n) in f.iter() {
            let _ = writeln!(
                out,
                "ferrohub_dps_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
    m.registration_latency.render(
        "ferrohub_dps_registration_seconds",
        "Time from attestation to the device being assigned (hub calls included).",
        &mut out,
    );
    out
}
