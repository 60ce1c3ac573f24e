//! The quickstart's hub stage (seed 003): an in-process hub on ephemeral loopback ports, the
//! intermediate CA verified by proof of possession, the downstream devices registered, telemetry
//! from both sent over MQTT/TLS and read back from the durable events log.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use hub::config::{AuthSettings, HubConfig, Limits, Listen, Storage, Tls};
use hub::events::EventRecord;
use hub::model::{AuthType, Authentication, Device, X509Thumbprint};
use hub::registry::IfMatch;
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};

use crate::certs::store::{load_cert, load_certs, load_key};
use crate::certs::{KeyOpts, Plan, issue_files};
use crate::clock;
use crate::device_client::DeviceConn;

pub const CA_NAME: &str = "quickstart-intermediate";
const MESSAGES: usize = 10;

struct Running {
    hub: Arc<hub::Hub>,
    mqtt: SocketAddr,
    https: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), hub::HubError>>,
}

/// Holds the runtime and the running hub between quickstart steps.
pub struct HubStage {
    pub rt: tokio::runtime::Runtime,
    running: RefCell<Option<Running>>,
    /// The `iothubowner` key, for the provisioning service's link to the hub.
    pub owner_key: String,
}

impl HubStage {
    pub fn new() -> Result<Self> {
        Ok(Self {
            rt: crate::hub_cmd::runtime()?,
            running: RefCell::new(None),
            owner_key: hub::registry::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?,
        })
    }

    /// The running hub, its MQTT and its HTTPS address.
    pub fn endpoints(&self) -> Result<(Arc<hub::Hub>, SocketAddr, SocketAddr)> {
        let r = self.running.borrow();
        let r = r
            .as_ref()
            .context("the hub is not running (an earlier step failed)")?;
        Ok((r.hub.clone(), r.mqtt, r.https))
    }

    fn hub(&self) -> Result<(Arc<hub::Hub>, SocketAddr)> {
        let r = self.running.borrow();
        let r = r
            .as_ref()
            .context("the hub is not running (an earlier step failed)")?;
        Ok((r.hub.clone(), r.mqtt))
    }

    /// Starts a hub with its own server certificate (signed by the intermediate).
    pub fn start(&self, certs: &Path) -> Result<String> {
        if !certs.join("server-hub.cert.pem").exists() {
            let plan = Plan {
                what: "hub server certificate",
                profile: Profile::Server,
                cn: "localhost".into(),
                sans: vec!["localhost".into(), "127.0.0.1".into()],
                stem: "server-hub".into(),
                full_chain: true,
                issuer: Some(("intermediate-ca".into(), None)),
            };
            issue_files(
                certs,
                &plan,
                &KeyOpts {
                    key_alg: KeyAlgorithm::P256,
                    days: None,
                    not_before: None,
                    force: false,
                },
            )?;
        }
        let data = certs.parent().unwrap_or(Path::new(".")).join("hub-data");
        let cfg = HubConfig {
            hostname: "localhost".into(),
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
        };
        let running = self.rt.block_on(async {
            let hub = hub::Hub::open(cfg, Arc::new(hub::time::SystemClock))?;
            let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let (addr, https_addr) = (mqtt.local_addr()?, https.local_addr()?);
            let (stop, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(hub::run(hub.clone(), hub::Listeners { mqtt, https }, rx));
            Ok::<_, anyhow::Error>(Running {
                hub,
                mqtt: addr,
                https: https_addr,
                stop,
                task,
            })
        })?;
        let text = format!("MQTT/TLS on {}, data in {}", running.mqtt, data.display());
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
            self.rt.block_on(async {
                let mut conn = DeviceConn::connect_x509(addr, "localhost", roots.clone(), id, chain, &key_pem).await?;
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
        let running = self
            .running
            .borrow_mut()
            .take()
            .context("the hub is not running")?;
        let _ = running.stop.send(true);
        self.rt
            .block_on(running.task)
            .context("the hub task failed")??;
        Ok(format!(
            "{} events stored in total",
            running.hub.events.next_offset()
        ))
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
pub fn prove_ca(cas: &hub::cas::CaService, certs: &Path) -> Result<String> {
    let ca = load_cert(&certs.join("intermediate-ca.cert.pem"))?;
    let ca_key = load_key(&certs.join("intermediate-ca.key.pem"))?;
    let api = |e: hub::error::ApiError| anyhow::anyhow!("{e}");
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
