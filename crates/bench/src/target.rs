//! The two servers of the side-by-side scenarios, each a child process on 127.0.0.1 serving the
//! same certificates: `ferrohub hub --config …` with the devices registered as CA-authenticated
//! (the CA uploaded and verified), and mosquitto with `require_certificate true`,
//! `use_identity_as_username true` and `cafile` = the same CA. Both see the same device
//! certificates, server certificate and key type (P-256).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::ValueEnum;
use ferrohub_runtime::config::{Listen, Tls};
use ferrohub_runtime::etag::IfMatch;
use hub::config::{AuthSettings, HubConfig, Limits, Policy, Right, Storage};
use hub_wire::model::{AuthType, Authentication, Device};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};

use super::DeviceCreds;
use super::mosquitto::{self, TlsFiles};
use super::process::{ServerProcess, free_port};
use crate::clock;

/// The peer run side by side with ferrohub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    Mosquitto,
    None,
}

/// Where the side-by-side scenarios run their servers.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The peer run side by side in the same invocation.
    #[arg(long, value_enum, default_value_t = Peer::Mosquitto)]
    pub peer: Peer,
    /// The mosquitto binary.
    #[arg(long, default_value = "mosquitto")]
    pub mosquitto: PathBuf,
    /// Pin both servers to these CPUs (`taskset -c LIST`, e.g. `1`); run the bench itself under
    /// `taskset -c` on the others to keep load generator and server apart.
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<String>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ServerArgs {
    /// mosquitto's version line when it takes part (fails early when it is missing).
    pub fn peer_version(&self) -> Result<Option<String>> {
        match self.peer {
            Peer::Mosquitto => Ok(Some(mosquitto::version(&mosquitto::find(&self.mosquitto))?)),
            Peer::None => Ok(None),
        }
    }
}

/// Certificates shared by both servers: a CA, a server certificate for `localhost`/127.0.0.1, and
/// one CA-signed client certificate per device (CN = device id), all P-256.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca: pki::Certificate,
    pub roots: Arc<rustls::RootCertStore>,
    pub devices: Vec<DeviceCreds>,
    pub tls: TlsFiles,
    pub service_key: String,
}

pub fn device_id(i: usize) -> String {
    format!("bench-{i:05}")
}

impl Fixture {
    /// Issues the CA, the server certificate and `devices` distinct device certificates (with the
    /// pki crate, as `ferrohub certs device` does).
    pub fn new(devices: usize) -> Result<Self> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let start = clock::now() - time::Duration::days(1);
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256)?;
        let ca = pki::issue(
            &CertRequest::new(Profile::RootCa, "Bench device CA", start),
            &ca_key,
            None,
        )?;
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.pem"), ca.to_pem())?;
        super::server_cert(dir.path(), &ca, &ca_key, "server")?;
        let pb = super::bar(devices as u64, "issuing device certificates");
        let mut creds = Vec::with_capacity(devices);
        for i in 0..devices {
            let id = device_id(i);
            let key = PrivateKey::generate(KeyAlgorithm::P256)?;
            let cert = pki::issue(
                &CertRequest::new(Profile::DeviceClient, id.clone(), start),
                &key,
                Some(Signer {
                    cert: &ca,
                    key: &ca_key,
                }),
            )?;
            creds.push(DeviceCreds {
                id,
                chain: vec![cert.to_rustls(), ca.to_rustls()],
                key_pem: key.to_pem(),
            });
            pb.inc(1);
        }
        pb.finish_and_clear();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.to_rustls())?;
        let tls = TlsFiles {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        };
        Ok(Self {
            ca,
            roots: Arc::new(roots),
            devices: creds,
            tls,
            service_key: hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?,
            dir,
        })
    }
}

/// One running server.
pub struct Target {
    pub name: &'static str,
    pub process: ServerProcess,
    /// ferrohub's HTTPS endpoint (the events stream).
    pub https: Option<SocketAddr>,
    /// mosquitto's plain MQTT listener, when asked for.
    pub plain: Option<SocketAddr>,
}

impl Target {
    pub fn mqtt(&self) -> SocketAddr {
        self.process.addr()
    }

    /// `ferrohub hub --config DIR/hub.toml` as a child process, with every fixture device
    /// registered (CA-authenticated) before it starts; with `plain`, also on a plain MQTT listener
    /// (devices sign in there with a token of the `device` policy, [`Target::plain_password`]).
    pub async fn ferrohub(fx: &Fixture, cpus: Option<String>, plain: bool) -> Result<Self> {
        Self::ferrohub_with(fx, cpus, plain, Limits::default()).await
    }

    /// [`Target::ferrohub`] with these `[limits]`.
    pub async fn ferrohub_with(
        fx: &Fixture,
        cpus: Option<String>,
        plain: bool,
        limits: Limits,
    ) -> Result<Self> {
        let dir = fx.dir.path().join("ferrohub");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (mqtt, https) = (free_port()?, free_port()?);
        let mut cfg = hub_config(&dir, fx, mqtt, https);
        cfg.limits = limits;
        let plain_addr = if plain {
            Some(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        } else {
            None
        };
        cfg.listen.mqtt_plain = plain_addr;
        register(&cfg, fx)?;
        let conf = dir.join("hub.toml");
        std::fs::write(&conf, toml::to_string(&cfg)?)?;
        let exe = std::env::current_exe().context("cannot find the ferrohub binary")?;
        let args = vec!["hub".into(), "--config".into(), conf.display().to_string()];
        let mut process = ServerProcess::new(&exe, args, dir.join("hub.log"), mqtt).pinned(cpus);
        process.env = vec![("FERROHUB_LOG".into(), "warn".into())];
        process.start().await?;
        Ok(Self {
            name: "ferrohub",
            process,
            https: Some(SocketAddr::from(([127, 0, 0, 1], https))),
            plain: plain_addr,
        })
    }

    /// The password for device `id` on the hub's plain listener: a token of the `device` policy
    /// (DeviceConnect), valid for a day.
    pub fn plain_password(fx: &Fixture, id: &str) -> Result<String> {
        let key = iot_auth::sas::decode_key(&fx.service_key)
            .map_err(|e| anyhow::anyhow!("the fixture's policy key: {e}"))?;
        let now = u64::try_from(clock::now().unix_timestamp()).unwrap_or(0);
        let expiry = now + 86_400;
        Ok(iot_auth::sas::generate_sas_token(
            &format!("localhost/devices/{id}"),
            &key,
            Some("device"),
            expiry,
        ))
    }

    /// mosquitto configured like the hub (see [`mosquitto::mtls_config`]).
    pub async fn mosquitto(
        fx: &Fixture,
        bin: &Path,
        cpus: Option<String>,
        plain: bool,
    ) -> Result<Self> {
        let dir = fx.dir.path().join(format!("mosquitto-{}", free_port()?));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let plain_port = if plain { Some(free_port()?) } else { None };
        let conf = mosquitto::mtls_config(&dir, port, &fx.tls, plain_port)?;
        let bin = mosquitto::find(bin);
        let mut process =
            mosquitto::process(&bin, &conf, dir.join("mosquitto.log"), port).pinned(cpus);
        process.start().await?;
        Ok(Self {
            name: "mosquitto",
            process,
            https: None,
            plain: plain_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
        })
    }

    /// Stops the server. A server slow to exit after SIGTERM is killed and reported on stderr;
    /// that is not a measurement failure (the hub records every disconnect in its registry first).
    pub async fn stop(mut self) -> Result<()> {
        if let Err(e) = self.process.stop().await {
            eprintln!("warning: {}: {e:#}", self.name);
        }
        Ok(())
    }
}

fn hub_config(dir: &Path, fx: &Fixture, mqtt: u16, https: u16) -> HubConfig {
    HubConfig {
        hostname: "localhost".into(),
        hostname_aliases: Vec::new(),
        listen: Listen {
            mqtt: SocketAddr::from(([127, 0, 0, 1], mqtt)),
            https: SocketAddr::from(([127, 0, 0, 1], https)),
            ..Listen::default()
        },
        tls: Tls {
            cert: fx.tls.cert.clone(),
            key: fx.tls.key.clone(),
            ca: Some(fx.tls.ca.clone()),
        },
        storage: Storage {
            registry: dir.join("registry.sqlite"),
            events: dir.join("events"),
            fsync: true,
            retention_hours: None,
            retention_mib: None,
        },
        auth: AuthSettings::default(),
        limits: Limits::default(),
        policies: vec![
            Policy {
                name: "service".into(),
                primary_key: fx.service_key.clone(),
                secondary_key: fx.service_key.clone(),
                rights: vec![
                    Right::ServiceConnect,
                    Right::RegistryRead,
                    Right::RegistryWrite,
                ],
            },
            Policy {
                name: "device".into(),
                primary_key: fx.service_key.clone(),
                secondary_key: fx.service_key.clone(),
                rights: vec![Right::DeviceConnect],
            },
        ],
    }
}

/// Uploads the CA (verified) and registers every device, then closes the hub's files.
fn register(cfg: &HubConfig, fx: &Fixture) -> Result<()> {
    let hub = hub::Hub::open(cfg.clone(), Arc::new(ferrohub_runtime::time::SystemClock))?;
    hub.cas
        .upload("bench", &fx.ca.to_pem(), true, &IfMatch::Absent)?;
    let pb = super::bar(fx.devices.len() as u64, "registering devices at the hub");
    for d in &fx.devices {
        let device = Device {
            device_id: d.id.clone(),
            authentication: Authentication {
                kind: Some(AuthType::CertificateAuthority),
                ..Default::default()
            },
            ..Default::default()
        };
        hub.registry
            .put_device(&d.id, device, &IfMatch::Absent)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Starts ferrohub, or mosquitto, for one round of a scenario.
pub async fn start(name: &str, fx: &Fixture, args: &ServerArgs) -> Result<Target> {
    let cpus = args.server_cpus.clone();
    if name == "ferrohub" {
        Target::ferrohub(fx, cpus, false).await
    } else {
        Target::mosquitto(fx, &args.mosquitto, cpus, false).await
    }
}
