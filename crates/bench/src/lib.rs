//! `ferrohub bench …`: load generators against an in-process hub on loopback, over real TLS with
//! X.509 devices and durability as configured. Each prints throughput and latency percentiles.
//! The `ferrohub` binary parses [`BenchCmd`] and hands it to [`run`].
#![forbid(unsafe_code)]

mod connect;
mod consumer;
mod durable;
mod gateway;
mod idle;
mod interactive;
mod keyd;
mod mosquitto;
mod mqtt;
mod plot;
mod preauth;
mod process;
mod provision;
mod report;
mod stats;
mod target;
mod telemetry;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use clap::Subcommand;
use ferrohub_runtime::config::{Listen, Tls};
use ferrohub_runtime::etag::IfMatch;
use hub::config::{AuthSettings, HubConfig, Limits, Policy, Right, Storage};
use hub_wire::model::{AuthType, Authentication, Device};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};
use rustls::pki_types::CertificateDer;

use ferrohub_runtime::clock;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// QoS 0/1 telemetry from N X.509 devices over TLS to `ferrohub hub` (fsync on), side by side
    /// with mosquitto (mTLS, persistence on): msgs/s and publish → consumer latency.
    #[command(
        after_help = "Examples:\n  ferrohub bench telemetry --devices 100 --messages 1000 --inflight 32\n  \
        ferrohub bench telemetry --devices 100 --rate 10000 --seconds 10   # latency at a fixed rate\n  \
        ferrohub bench telemetry --qos 0 --peer none --json"
    )]
    Telemetry(telemetry::TelemetryArgs),
    /// TLS connection storm with X.509 client certificates (one distinct certificate per device):
    /// handshakes/s and connect latency, ferrohub and mosquitto side by side.
    #[command(
        after_help = "Examples:\n  ferrohub bench connect --devices 2000 --concurrency 50\n  \
        ferrohub bench connect --devices 200 --peer none --json"
    )]
    Connect(connect::ConnectArgs),
    /// N idle mTLS connections held open: the server's RSS growth per connection.
    #[command(
        after_help = "Examples:\n  ferrohub bench idle --connections 10000\n  \
        ferrohub bench idle --connections 100 --peer none --json"
    )]
    Idle(idle::IdleArgs),
    /// N connections held open before authentication (TCP only, ClientHello sent, TLS done
    /// without CONNECT or request), on the MQTT and HTTPS listeners: the server's RSS growth per
    /// connection, and a device still served meanwhile.
    #[command(
        after_help = "Examples:\n  ferrohub bench preauth --connections 2000\n  \
        ferrohub bench preauth --connections 50 --states tcp,hello,tls --json"
    )]
    Preauth(preauth::PreauthArgs),
    /// Appends to a durable-log with group commit and fdatasync: appends/s, each one durable.
    #[command(
        after_help = "Examples:\n  ferrohub bench durable-log --writers 512 --seconds 10\n  \
        ferrohub bench durable-log --appends 20000 --json"
    )]
    DurableLog(durable::DurableArgs),
    /// Turns the `--json` results of `bench/run-all` into bench/RESULTS.md's tables and PNG plots.
    #[command(
        after_help = "Example:\n  ferrohub bench report --input target/bench-all --results bench/RESULTS.md \\\n    --plots bench/plots"
    )]
    Report(report::ReportArgs),
    /// Direct-method round trips: service REST call → device → answer, N devices connected.
    #[command(after_help = "Example:\n  ferrohub bench methods --devices 100 --seconds 10")]
    Methods(interactive::InteractiveArgs),
    /// Twin reported-property patches over MQTT from N devices, each waiting for its 204.
    #[command(after_help = "Example:\n  ferrohub bench twin --devices 100 --seconds 10")]
    Twin(interactive::InteractiveArgs),
    /// X.509 registrations through an in-process provisioning service to an in-process hub.
    #[command(
        after_help = "Example:\n  ferrohub bench provision --concurrency 200 --registrations 4000"
    )]
    Provision(provision::ProvisionArgs),
    /// HMAC-SHA256 signs through an in-process keyd on a Unix socket, keep-alive connections.
    #[command(after_help = "Example:\n  ferrohub bench keyd --callers 8 --seconds 10")]
    Keyd(keyd::KeydArgs),
    /// QoS 1 telemetry child → edge gateway → hub (durable store on), and the backlog drain after a
    /// hub outage, side by side with mosquitto bridging to mosquitto (persistence on).
    #[command(
        after_help = "Examples:\n  ferrohub bench gateway --children 20 --messages 1000 --outage-messages 10000\n  \
        ferrohub bench gateway --children 3 --messages 50 --peer none --json"
    )]
    Gateway(gateway::GatewayArgs),
}

pub fn run(cmd: BenchCmd) -> Result<bool> {
    let rt = ferrohub_cli_support::runtime()?;
    match cmd {
        BenchCmd::Telemetry(args) => return rt.block_on(telemetry::run(args)),
        BenchCmd::Connect(args) => return rt.block_on(connect::run(args)),
        BenchCmd::Idle(args) => return rt.block_on(idle::run(args)),
        BenchCmd::Preauth(args) => return rt.block_on(preauth::run(args)),
        BenchCmd::DurableLog(args) => return rt.block_on(durable::run(args)),
        BenchCmd::Report(args) => report::run(&args),
        BenchCmd::Methods(args) => rt.block_on(interactive::methods(args)),
        BenchCmd::Twin(args) => rt.block_on(interactive::twin(args)),
        BenchCmd::Provision(args) => rt.block_on(provision::run(args)),
        BenchCmd::Keyd(args) => rt.block_on(keyd::run(args)),
        // Loss (or a phase that did not finish) makes the command fail.
        BenchCmd::Gateway(args) => return rt.block_on(gateway::run(args)),
    }
    .map(|()| true)
}

#[derive(Clone)]
pub struct DeviceCreds {
    pub id: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pem: String,
}

/// A hub serving on ephemeral loopback ports, with `devices` X.509 (CA-signed) devices registered.
pub struct BenchHub {
    pub hub: Arc<hub::Hub>,
    pub mqtt: std::net::SocketAddr,
    pub roots: Arc<rustls::RootCertStore>,
    pub creds: Vec<DeviceCreds>,
    /// A client with the `service` policy (ServiceConnect, RegistryRead, RegistryWrite).
    pub service: ferrohub_runtime::client::ServiceClient,
    pub https: std::net::SocketAddr,
    /// The CA that issued the server certificate and the device certificates.
    pub ca: pki::Certificate,
    pub ca_key: PrivateKey,
    /// The `service` policy's key.
    pub service_key: String,
    stop: tokio::sync::watch::Sender<bool>,
    server_task: tokio::task::JoinHandle<Result<(), hub::HubError>>,
    _dir: tempfile::TempDir,
}

impl BenchHub {
    pub async fn start(devices: usize, fsync: bool, max_inflight: usize) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let start = clock::now() - time::Duration::days(1);
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256)?;
        let ca = pki::issue(
            &CertRequest::new(Profile::RootCa, "Bench CA", start),
            &ca_key,
            None,
        )?;
        let service_key = hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?;
        let cfg = hub_config(dir.path(), &ca, &ca_key, start, &service_key)?;
        let cfg = HubConfig {
            storage: Storage {
                fsync,
                ..cfg.storage
            },
            limits: Limits {
                max_inflight_per_connection: max_inflight,
                ..Limits::default()
            },
            ..cfg
        };
        let hub = hub::Hub::open(cfg, Arc::new(ferrohub_runtime::time::SystemClock))?;
        hub.cas
            .upload("bench", &ca.to_pem(), true, &IfMatch::Absent)?;
        let creds = register_devices(&hub, &ca, &ca_key, start, devices)?;
        let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let (mqtt_addr, https_addr) = (mqtt.local_addr()?, https.local_addr()?);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let server_task = tokio::spawn(hub::run(
            hub.clone(),
            hub::Listeners::without_amqp(mqtt, https),
            rx,
        ));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.to_rustls())?;
        let client_tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots.clone())
                .with_no_client_auth(),
        );
        let service = ferrohub_runtime::client::ServiceClient::new(
            https_addr.to_string(),
            "localhost".into(),
            "service".into(),
            base64::engine::general_purpose::STANDARD.decode(&service_key)?,
            client_tls,
        );
        Ok(Self {
            hub,
            mqtt: mqtt_addr,
            roots: Arc::new(roots),
            creds,
            service,
            https: https_addr,
            ca,
            ca_key,
            service_key,
            stop,
            server_task,
            _dir: dir,
        })
    }

    /// The bench directory (server certificate `server.pem`/`server.key`, `ca.pem`).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Stops the hub for an outage, keeping its files and addresses for [`PausedHub::resume`].
    pub async fn pause(self) -> Result<PausedHub> {
        let _ = self.stop.send(true);
        let _ = self.server_task.await;
        // A second handle would keep the events log's writer alive next to the restarted hub's.
        for _ in 0..500 {
            if Arc::strong_count(&self.hub) == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        anyhow::ensure!(
            Arc::strong_count(&self.hub) == 1,
            "the stopped hub is still referenced; cannot restart it safely"
        );
        let config = self.hub.config.clone();
        drop(self.hub);
        Ok(PausedHub {
            config,
            mqtt: self.mqtt,
            roots: self.roots,
            creds: self.creds,
            service: self.service,
            https: self.https,
            ca: self.ca,
            ca_key: self.ca_key,
            service_key: self.service_key,
            dir: self._dir,
        })
    }

    /// Stops the hub and waits for it; returns it for its statistics.
    pub async fn stop(self) -> Arc<hub::Hub> {
        let _ = self.stop.send(true);
        let _ = self.server_task.await;
        self.hub
    }
}

/// A [`BenchHub`] stopped by [`BenchHub::pause`]: not serving, its events log closed.
pub struct PausedHub {
    config: HubConfig,
    mqtt: std::net::SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    creds: Vec<DeviceCreds>,
    service: ferrohub_runtime::client::ServiceClient,
    https: std::net::SocketAddr,
    ca: pki::Certificate,
    ca_key: PrivateKey,
    service_key: String,
    dir: tempfile::TempDir,
}

impl PausedHub {
    /// Reopens the same registry and events log and serves on the same addresses again.
    pub async fn resume(self) -> Result<BenchHub> {
        let hub = hub::Hub::open(self.config, Arc::new(ferrohub_runtime::time::SystemClock))?;
        let mqtt = tokio::net::TcpListener::bind(self.mqtt).await?;
        let https = tokio::net::TcpListener::bind(self.https).await?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let server_task = tokio::spawn(hub::run(
            hub.clone(),
            hub::Listeners::without_amqp(mqtt, https),
            rx,
        ));
        Ok(BenchHub {
            hub,
            mqtt: self.mqtt,
            roots: self.roots,
            creds: self.creds,
            service: self.service,
            https: self.https,
            ca: self.ca,
            ca_key: self.ca_key,
            service_key: self.service_key,
            stop,
            server_task,
            _dir: self.dir,
        })
    }
}

/// Writes the server certificate under `dir` and returns a hub config using it.
fn hub_config(
    dir: &std::path::Path,
    ca: &pki::Certificate,
    ca_key: &PrivateKey,
    start: time::OffsetDateTime,
    service_key: &str,
) -> Result<HubConfig> {
    let server_key = PrivateKey::generate(KeyAlgorithm::P256)?;
    let mut req = CertRequest::new(Profile::Server, "localhost", start);
    req.subject_alt_names = vec!["localhost".into()];
    let server = pki::issue(
        &req,
        &server_key,
        Some(Signer {
            cert: ca,
            key: ca_key,
        }),
    )?;
    let path = |n: &str| dir.join(n);
    std::fs::write(path("ca.pem"), ca.to_pem())?;
    std::fs::write(path("server.pem"), server.to_pem() + &ca.to_pem())?;
    std::fs::write(path("server.key"), server_key.to_pem())?;
    Ok(HubConfig {
        hostname: "localhost".into(),
        hostname_aliases: Vec::new(),
        listen: Listen::default(),
        tls: Tls {
            cert: path("server.pem"),
            key: path("server.key"),
            ca: Some(path("ca.pem")),
        },
        storage: Storage {
            registry: path("registry.sqlite"),
            events: path("events"),
            fsync: true,
            retention_hours: None,
            retention_mib: None,
        },
        auth: AuthSettings::default(),
        limits: Limits::default(),
        policies: vec![Policy {
            name: "service".into(),
            primary_key: service_key.to_owned(),
            secondary_key: service_key.to_owned(),
            rights: vec![
                Right::ServiceConnect,
                Right::RegistryRead,
                Right::RegistryWrite,
            ],
        }],
    })
}

/// Issues a certificate per device (signed by `ca`) and registers the device as CA-authenticated.
fn register_devices(
    hub: &hub::Hub,
    ca: &pki::Certificate,
    ca_key: &PrivateKey,
    start: time::OffsetDateTime,
    devices: usize,
) -> Result<Vec<DeviceCreds>> {
    let pb = indicatif::ProgressBar::new(devices as u64);
    pb.set_message("issuing device certificates");
    let mut creds = Vec::with_capacity(devices);
    for i in 0..devices {
        let id = format!("bench-{i:05}");
        let key = PrivateKey::generate(KeyAlgorithm::P256)?;
        let cert = pki::issue(
            &CertRequest::new(Profile::DeviceClient, id.clone(), start),
            &key,
            Some(Signer {
                cert: ca,
                key: ca_key,
            }),
        )?;
        let device = Device {
            device_id: id.clone(),
            authentication: Authentication {
                kind: Some(AuthType::CertificateAuthority),
                ..Default::default()
            },
            ..Default::default()
        };
        hub.registry
            .put_device(&id, device, &IfMatch::Absent)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        creds.push(DeviceCreds {
            id,
            chain: vec![cert.to_rustls(), ca.to_rustls()],
            key_pem: key.to_pem(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(creds)
}

/// A progress bar on stderr for `n` steps of `what`.
pub fn bar(n: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what:>32} {{bar:40}} {{pos}}/{{len}} {{per_sec}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// Issues a TLS server certificate for `localhost` and 127.0.0.1 from `ca`; writes
/// `{name}.pem` (with the CA) and `{name}.key` under `dir` and returns their paths.
pub fn server_cert(
    dir: &std::path::Path,
    ca: &pki::Certificate,
    ca_key: &PrivateKey,
    name: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let key = PrivateKey::generate(KeyAlgorithm::P256)?;
    let mut req = CertRequest::new(
        Profile::Server,
        "localhost",
        clock::now() - time::Duration::days(1),
    );
    req.subject_alt_names = vec!["localhost".into(), "127.0.0.1".into()];
    let cert = pki::issue(
        &req,
        &key,
        Some(Signer {
            cert: ca,
            key: ca_key,
        }),
    )?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.to_pem() + &ca.to_pem())?;
    std::fs::write(&key_path, key.to_pem())?;
    Ok((cert_path, key_path))
}

/// Percentile `p` (0..=1) of sorted microsecond samples, in milliseconds.
pub fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}
