//! The quickstart's hub stage (seed 003): an in-process hub on loopback, the intermediate CA
//! verified by proof of possession, the downstream devices registered, telemetry from both sent
//! over MQTT/TLS and read back from the durable events log. It also owns what every stage shares:
//! the async runtime, the addresses (ephemeral, or the Azure ports with `--azure-ports`), Ctrl-C
//! handling and the per-step time limits, and it can stop the hub and bring it back on the same
//! ports (the outage stage).

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferrohub_runtime::config::{Listen, Tls};
use ferrohub_runtime::etag::IfMatch;
use hub::config::{AuthSettings, HubConfig, Limits, Storage};
use hub::events::EventRecord;
use hub_wire::model::{AuthType, Authentication, Device, X509Thumbprint};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};
use tokio::sync::watch;

use device_client::DeviceConn;
use ferrohub_certs::Plan;
use ferrohub_certs::cert_dir::{load_cert, load_certs, load_key};

use crate::clock;

pub const CA_NAME: &str = "quickstart-intermediate";
/// The hub's host name: in device usernames, SAS tokens and connection strings.
pub const HUB_HOST: &str = "localhost";
const MESSAGES: usize = 10;

/// Where the quickstart's services listen, and the names clients use for them.
#[derive(Clone, Debug)]
pub struct Addrs {
    pub hub_mqtt: SocketAddr,
    pub hub_https: SocketAddr,
    pub dps_mqtt: SocketAddr,
    pub dps_https: SocketAddr,
    pub gateway: SocketAddr,
    /// What children put in `GatewayHostName` (a name in the gateway's certificate).
    pub gateway_host: String,
    /// The provisioning service's global endpoint (a name in its certificate).
    pub dps_host: String,
}

impl Addrs {
    /// Ephemeral ports on 127.0.0.1: no privileges needed.
    pub fn ephemeral() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            hub_mqtt: any,
            hub_https: any,
            dps_mqtt: any,
            dps_https: any,
            gateway: any,
            gateway_host: "localhost".into(),
            dps_host: "localhost".into(),
        }
    }

    /// MQTT 8883 and HTTPS 443 on distinct loopback addresses, as unmodified SDKs expect. (No
    /// service here speaks AMQP, so 5671 is not bound.)
    pub fn azure() -> Self {
        Self {
            hub_mqtt: SocketAddr::from(([127, 0, 0, 1], 8883)),
            hub_https: SocketAddr::from(([127, 0, 0, 1], 443)),
            dps_mqtt: SocketAddr::from(([127, 0, 0, 3], 8883)),
            dps_https: SocketAddr::from(([127, 0, 0, 3], 443)),
            gateway: SocketAddr::from(([127, 0, 0, 2], 8883)),
            gateway_host: "127.0.0.2".into(),
            dps_host: "127.0.0.3".into(),
        }
    }

    /// Binds every fixed address once and lets it go, so a refusal is reported before any step
    /// runs, with the fix.
    pub fn preflight(&self) -> Result<()> {
        let all = [
            (self.hub_mqtt, "hub MQTT"),
            (self.hub_https, "hub HTTPS"),
            (self.gateway, "gateway MQTT"),
            (self.dps_mqtt, "DPS MQTT"),
            (self.dps_https, "DPS HTTPS"),
        ];
        for (addr, what) in all {
            if addr.port() == 0 {
                continue;
            }
            if let Err(e) = std::net::TcpListener::bind(addr) {
                match e.kind() {
                    std::io::ErrorKind::PermissionDenied => bail!(
                        "cannot bind {addr} ({what}): permission denied. --azure-ports binds ports \
                         below 1024: {}, or leave out --azure-ports (ephemeral high ports, no \
                         privileges)",
                        ferrohub_cli_support::hints::privileged_port_fix()
                    ),
                    std::io::ErrorKind::AddrInUse => bail!(
                        "cannot bind {addr} ({what}): something is already listening there (another \
                         hub, gateway or quickstart?); stop it or leave out --azure-ports"
                    ),
                    _ => bail!("cannot bind {addr} ({what}): {e}"),
                }
            }
        }
        Ok(())
    }
}

struct Running {
    hub: Arc<hub::Hub>,
    mqtt: SocketAddr,
    https: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), hub::HubError>>,
}

/// A hub stopped on purpose: what it takes to bring it back on the same ports.
struct Stopped {
    config: HubConfig,
    mqtt: SocketAddr,
    https: SocketAddr,
}

/// Holds the runtime and the running hub between quickstart steps.
pub struct HubStage {
    pub rt: tokio::runtime::Runtime,
    pub addrs: Addrs,
    running: RefCell<Option<Running>>,
    stopped: RefCell<Option<Stopped>>,
    /// The `iothubowner` key, for the provisioning service's link and the service API.
    pub owner_key: String,
    /// Turns true on Ctrl-C (SIGINT) or SIGTERM.
    interrupt: watch::Receiver<bool>,
}

impl HubStage {
    /// The runtime, and a Ctrl-C handler: the first signal interrupts the running step and the
    /// services are stopped; a second one exits at once.
    pub fn new(addrs: Addrs) -> Result<Self> {
        let rt = ferrohub_cli_support::runtime()?;
        let (tx, interrupt) = watch::channel(false);
        rt.spawn(async move {
            ferrohub_runtime::shutdown::wait_for_signal().await;
            let _ = tx.send(true);
            eprintln!("\nInterrupted: stopping the services (press Ctrl-C again to exit at once)");
            ferrohub_runtime::shutdown::wait_for_signal().await;
            std::process::exit(130);
        });
        Ok(Self {
            rt,
            addrs,
            running: RefCell::new(None),
            stopped: RefCell::new(None),
            owner_key: hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?,
            interrupt,
        })
    }

    pub fn interrupted(&self) -> bool {
        *self.interrupt.borrow()
    }

    /// Blocks until Ctrl-C (`--keep-running`).
    pub fn wait_for_interrupt(&self) {
        let mut rx = self.interrupt.clone();
        let _ = self.rt.block_on(rx.wait_for(|v| *v));
    }

    /// Runs `fut` on the runtime for at most `secs` seconds; Ctrl-C ends it too.
    pub fn within<T>(&self, secs: u64, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let mut rx = self.interrupt.clone();
        self.rt.block_on(async move {
            tokio::select! {
                r = fut => r,
                () = tokio::time::sleep(Duration::from_secs(secs)) => {
                    bail!("no result within {secs} s (timed out)")
                }
                _ = rx.wait_for(|v| *v) => bail!("interrupted"),
            }
        })
    }

    /// Like [`HubStage::within`] but not cut short by Ctrl-C (stopping the services).
    pub fn finish_within<T>(&self, secs: u64, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(secs), fut)
                .await
                .unwrap_or_else(|_| bail!("did not finish within {secs} s"))
        })
    }

    /// The running hub, its MQTT and its HTTPS address.
    pub fn endpoints(&self) -> Result<(Arc<hub::Hub>, SocketAddr, SocketAddr)> {
        self.check_alive()?;
        let r = self.running.borrow();
        let r = r
            .as_ref()
            .context("the hub is not running (an earlier step failed)")?;
        Ok((r.hub.clone(), r.mqtt, r.https))
    }

    /// The hub's addresses while it runs or while it is stopped for the outage.
    pub fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        if let Some(r) = self.running.borrow().as_ref() {
            return Some((r.mqtt, r.https));
        }
        self.stopped.borrow().as_ref().map(|s| (s.mqtt, s.https))
    }

    /// Fails, with the hub's own error, when its task ended without being asked to.
    /// Aborts the hub's server task, as a crash would end it (for fault-injection tests).
    pub fn crash(&self) {
        if let Some(r) = self.running.borrow().as_ref() {
            r.task.abort();
            r.hub.connections.kick_all();
        }
        // The abort lands at the task's next await: wait for it (bounded).
        for _ in 0..2000 {
            let done = self
                .running
                .borrow()
                .as_ref()
                .is_none_or(|r| r.task.is_finished());
            if done {
                break;
            }
            self.rt
                .block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
        }
    }

    fn check_alive(&self) -> Result<()> {
        let finished = self
            .running
            .borrow()
            .as_ref()
            .is_some_and(|r| r.task.is_finished());
        if !finished {
            return Ok(());
        }
        let Some(r) = self.running.borrow_mut().take() else {
            return Ok(());
        };
        let cause = match self.rt.block_on(r.task) {
            Ok(Ok(())) => "it stopped serving".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) if e.is_cancelled() => "it was killed".to_owned(),
            Err(e) => format!("its task failed: {e}"),
        };
        bail!("the hub died: {cause}")
    }

    fn hub(&self) -> Result<(Arc<hub::Hub>, SocketAddr)> {
        let (hub, mqtt, _) = self.endpoints()?;
        Ok((hub, mqtt))
    }

    /// A service API client with the `iothubowner` policy.
    pub fn service_client(&self, certs: &Path) -> Result<ferrohub_runtime::client::ServiceClient> {
        let (_, _, https) = self.endpoints()?;
        let key = iot_auth::sas::decode_key(&self.owner_key).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(ferrohub_runtime::client::ServiceClient::new(
            https.to_string(),
            HUB_HOST.into(),
            "iothubowner".into(),
            key,
            ferrohub_runtime::tls::client_config(&certs.join("root-ca.cert.pem"))?,
        ))
    }

    /// The service connection string (`iothubowner`).
    pub fn service_connection_string(&self) -> String {
        format!(
            "HostName={HUB_HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={}",
            self.owner_key
        )
    }

    /// Starts a hub with its own server certificate (signed by the intermediate).
    pub fn start(&self, certs: &Path) -> Result<String> {
        // 127.0.0.3: the provisioning service presents this certificate too.
        crate::ensure(
            certs,
            Plan {
                what: "hub server certificate",
                profile: Profile::Server,
                cn: HUB_HOST.into(),
                sans: vec![
                    HUB_HOST.into(),
                    "127.0.0.1".into(),
                    "127.0.0.3".into(),
                    "::1".into(),
                ],
                stem: "server-hub".into(),
                full_chain: true,
                issuer: Some(("intermediate-ca".into(), None)),
            },
        )?;
        let data = certs.parent().unwrap_or(Path::new(".")).join("hub-data");
        let cfg = self.config(certs, &data);
        let running = self.launch(cfg, self.addrs.hub_mqtt, self.addrs.hub_https)?;
        let text = format!(
            "MQTT/TLS on {}, HTTPS on {}, data in {}",
            running.mqtt,
            running.https,
            data.display()
        );
        *self.running.borrow_mut() = Some(running);
        Ok(text)
    }

    fn config(&self, certs: &Path, data: &Path) -> HubConfig {
        HubConfig {
            hostname: HUB_HOST.into(),
            hostname_aliases: Vec::new(),
            listen: Listen::default(),
            tls: Tls {
                cert: certs.join("server-hub-full-chain.cert.pem"),
                key: certs.join("server-hub.key.pem"),
                ca: Some(certs.join("root-ca.cert.pem")),
            },
            storage: Storage {
                registry: data.join("registry.sqlite"),
                events: data.join("events"),
                fsync: true,
                retention_hours: None,
                retention_mib: None,
            },
            auth: AuthSettings::default(),
            limits: Limits::default(),
            policies: vec![hub::config::Policy {
                name: "iothubowner".into(),
                primary_key: self.owner_key.clone(),
                secondary_key: self.owner_key.clone(),
                rights: vec![
                    hub::config::Right::RegistryRead,
                    hub::config::Right::RegistryWrite,
                    hub::config::Right::ServiceConnect,
                    hub::config::Right::DeviceConnect,
                ],
            }],
        }
    }

    fn launch(&self, cfg: HubConfig, mqtt: SocketAddr, https: SocketAddr) -> Result<Running> {
        self.within(10, async move {
            let hub = hub::Hub::open(cfg, Arc::new(ferrohub_runtime::time::SystemClock))?;
            let mqtt = bind(mqtt, "the hub's MQTT").await?;
            let https = bind(https, "the hub's HTTPS").await?;
            let (addr, https_addr) = (mqtt.local_addr()?, https.local_addr()?);
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(hub::run(
                hub.clone(),
                hub::Listeners::without_amqp(mqtt, https),
                rx,
            ));
            Ok(Running {
                hub,
                mqtt: addr,
                https: https_addr,
                stop,
                task,
            })
        })
    }

    /// The outage: stops the hub (its sessions close) and keeps what it takes to restart it on
    /// the same ports.
    pub fn pause(&self) -> Result<String> {
        self.check_alive()?;
        let running = self
            .running
            .borrow_mut()
            .take()
            .context("the hub is not running (an earlier step failed)")?;
        let (mqtt, https, config) = (running.mqtt, running.https, running.hub.config.clone());
        let events = running.hub.events.next_offset();
        let _ = running.stop.send(true);
        self.finish_within(10, async move {
            running.task.await.context("the hub task failed")??;
            anyhow::Ok(())
        })?;
        *self.stopped.borrow_mut() = Some(Stopped {
            config,
            mqtt,
            https,
        });
        let down = self
            .rt
            .block_on(tokio::net::TcpStream::connect(mqtt))
            .is_err();
        if !down {
            bail!("the hub still accepts connections on {mqtt} after stopping");
        }
        Ok(format!(
            "hub stopped with {events} events stored; {mqtt} refuses connections"
        ))
    }

    /// Brings the hub back on the ports it had, with its registry and events log.
    pub fn resume(&self) -> Result<String> {
        let s = self
            .stopped
            .borrow_mut()
            .take()
            .context("the hub was not stopped for an outage")?;
        let running = self.launch(s.config, s.mqtt, s.https)?;
        let text = format!("hub back on {} and {}", running.mqtt, running.https);
        *self.running.borrow_mut() = Some(running);
        Ok(text)
    }

    /// Seed 003's upload, verification code, verification certificate, verify.
    pub fn verify_ca(&self, certs: &Path) -> Result<String> {
        let (hub, _) = self.hub()?;
        prove_ca(&hub.cas, certs)
    }

    /// Registers the CA-signed child and the self-signed child (by thumbprint).
    pub fn register(&self, certs: &Path, x509_id: &str, thumb_id: &str) -> Result<String> {
        let (hub, _) = self.hub()?;
        let thumb =
            load_cert(&certs.join(format!("self-signed-{thumb_id}.cert.pem")))?.thumbprint_sha1();
        let devices = [
            (
                x509_id,
                Authentication {
                    kind: Some(AuthType::CertificateAuthority),
                    ..Default::default()
                },
            ),
            (
                thumb_id,
                Authentication {
                    kind: Some(AuthType::SelfSigned),
                    x509_thumbprint: Some(X509Thumbprint {
                        primary_thumbprint: Some(thumb.clone()),
                        secondary_thumbprint: None,
                    }),
                    symmetric_key: None,
                },
            ),
        ];
        for (id, authentication) in devices {
            let d = Device {
                device_id: id.into(),
                authentication,
                ..Default::default()
            };
            hub.registry
                .put_device(id, d, &IfMatch::Any)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(format!(
            "{x509_id} (certificateAuthority), {thumb_id} (selfSigned {thumb})"
        ))
    }

    /// Both children send telemetry; every message must be in the events log with its identity.
    pub fn telemetry(&self, certs: &Path, devices: &[(&str, String)]) -> Result<String> {
        let (hub, addr) = self.hub()?;
        let from = hub.events.next_offset();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(load_cert(&certs.join("root-ca.cert.pem"))?.to_rustls())?;
        let roots = Arc::new(roots);
        for (id, stem) in devices {
            let chain: Vec<_> = load_certs(&certs.join(chain_file(stem)))?
                .iter()
                .map(pki::Certificate::to_rustls)
                .collect();
            let key_pem = load_key(&certs.join(format!("{stem}.key.pem")))?.to_pem();
            self.within(30, async {
                let mut conn = DeviceConn::connect_x509(addr, HUB_HOST, roots.clone(), id, chain, &key_pem).await?;
                let topic = format!("devices/{id}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&source=quickstart");
                for i in 0..MESSAGES {
                    conn.publish_acked(&topic, format!("{{\"seq\":{i}}}").into_bytes()).await?;
                }
                conn.disconnect().await;
                Ok::<_, anyhow::Error>(())
            })?;
        }
        let records = hub.events.read(from, 10_000, 64 << 20)?;
        let events: Vec<EventRecord> = records
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.payload).ok())
            .collect();
        let mut lines = Vec::new();
        for (id, _) in devices {
            let mine: Vec<&EventRecord> = events.iter().filter(|e| e.device_id == *id).collect();
            let stamped = mine.iter().all(|e| {
                e.system_properties
                    .get("iothub-connection-device-id")
                    .map(String::as_str)
                    == Some(*id)
                    && e.properties.get("source") == Some(&Some("quickstart".into()))
            });
            if mine.len() != MESSAGES || !stamped {
                bail!(
                    "{id}: {} of {MESSAGES} messages found with the right identity and properties",
                    mine.len()
                );
            }
            lines.push(format!(
                "{id}: {MESSAGES} messages acknowledged after fsync and read back"
            ));
        }
        Ok(lines.join("\n"))
    }

    /// Stops the hub and waits for it.
    pub fn stop(&self) -> Result<String> {
        self.check_alive()?;
        let Some(running) = self.running.borrow_mut().take() else {
            if self.stopped.borrow_mut().take().is_some() {
                return Ok("already stopped (the outage stage did not bring it back)".into());
            }
            bail!("the hub is not running");
        };
        let _ = running.stop.send(true);
        let events = running.hub.events.next_offset();
        self.finish_within(10, async move {
            running.task.await.context("the hub task failed")??;
            anyhow::Ok(())
        })?;
        Ok(format!("{events} events stored in total"))
    }
}

/// Binds `addr`; right after the hub stopped, its port may take a moment to come free.
async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 && tries < 60 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen for {what} on {addr}")),
        }
    }
}

/// The full-chain file of a device certificate, or the certificate itself for self-signed ones.
fn chain_file(stem: &str) -> String {
    if stem.starts_with("self-signed-") {
        format!("{stem}.cert.pem")
    } else {
        format!("{stem}-full-chain.cert.pem")
    }
}

/// Uploads the intermediate CA to `cas`, asks for a verification code, proves possession of the
/// CA's key with a certificate whose CN is the code, and checks it is verified (hub and DPS alike).
pub fn prove_ca(cas: &ferrohub_runtime::cas::CaService, certs: &Path) -> Result<String> {
    let ca = load_cert(&certs.join("intermediate-ca.cert.pem"))?;
    let ca_key = load_key(&certs.join("intermediate-ca.key.pem"))?;
    let api = |e: ferrohub_runtime::error::ApiError| anyhow::anyhow!("{e}");
    let uploaded = cas
        .upload(CA_NAME, &ca.to_pem(), false, &IfMatch::Any)
        .map_err(api)?;
    if uploaded.is_verified {
        bail!("an upload without proof must start unverified");
    }
    let (_, code) = cas
        .generate_verification_code(CA_NAME, &IfMatch::Any)
        .map_err(api)?;
    let key = PrivateKey::generate(KeyAlgorithm::P256)?;
    let proof = pki::issue(
        &CertRequest::new(Profile::Verification, code.clone(), clock::now()),
        &key,
        Some(Signer {
            cert: &ca,
            key: &ca_key,
        }),
    )?;
    let verified = cas
        .verify(CA_NAME, &IfMatch::Any, &proof.to_pem())
        .map_err(api)?;
    if !verified.is_verified {
        bail!("the CA is still unverified after a valid proof");
    }
    Ok(format!("{} verified with code {code}", verified.subject))
}
