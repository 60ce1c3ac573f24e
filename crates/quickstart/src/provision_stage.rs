//! The quickstart's provisioning and identity-service stages (seeds 002 and 004): a provisioning
//! service linked to the in-process hub, the intermediate CA verified there too, an X.509
//! enrollment group for edge devices, the identity service provisioning the edge device through
//! it from a super-config, and a module process signing through keyd to send telemetry.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use dps::model::{AttestationMechanism, EnrollmentGroup, X509Attestation};
use identity::client::UdsClient;
use identity::wire::identityd::Identity;
use identity::wire::keyd::{SignRequest, SignResponse};
use serde_json::json;

use device_client::DeviceConn;

use crate::hub_stage::{CA_NAME, HUB_HOST, HubStage, prove_ca};

pub const SCOPE: &str = "0ne00QUICK1";
const MODULE: &str = "quickstart-module";

struct Running {
    dps: Arc<dps::Dps>,
    mqtt: SocketAddr,
    https: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), dps::DpsError>>,
}

pub struct ProvisionStage<'a> {
    hub: &'a HubStage,
    data: PathBuf,
    running: RefCell<Option<Running>>,
    identity_stop: RefCell<Option<tokio::sync::watch::Sender<bool>>>,
}

impl<'a> ProvisionStage<'a> {
    pub fn new(hub: &'a HubStage, data: &Path) -> Self {
        Self {
            hub,
            data: data.to_owned(),
            running: RefCell::new(None),
            identity_stop: RefCell::new(None),
        }
    }

    fn dps(&self) -> Result<(Arc<dps::Dps>, SocketAddr)> {
        let r = self.running.borrow();
        let r = r
            .as_ref()
            .context("the provisioning service is not running (an earlier step failed)")?;
        if r.task.is_finished() {
            bail!("the provisioning service died (its task ended)");
        }
        Ok((r.dps.clone(), r.https))
    }

    /// The provisioning service's MQTT and HTTPS addresses while it runs.
    pub fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.running.borrow().as_ref().map(|r| (r.mqtt, r.https))
    }

    /// Starts a provisioning service on loopback, linked to the hub, sharing its TLS certificate.
    pub fn start(&self, certs: &Path) -> Result<String> {
        let (_, _, hub_https) = self.hub.endpoints()?;
        let cfg = dps::config::DpsConfig {
            hostname: self.hub.addrs.dps_host.clone(),
            id_scope: SCOPE.into(),
            allocation_policy: "hashed".into(),
            listen: dps::config::Listen::default(),
            tls: ferrohub_runtime::config::Tls {
                cert: certs.join("server-hub-full-chain.cert.pem"),
                key: certs.join("server-hub.key.pem"),
                ca: Some(certs.join("root-ca.cert.pem")),
            },
            storage: dps::config::Storage {
                database: self.data.join("dps-data/dps.sqlite"),
            },
            policies: vec![],
            linked_hubs: vec![dps::config::LinkedHub {
                connection_string: self.hub.service_connection_string(),
                ca: Some(certs.join("root-ca.cert.pem")),
                address: Some(hub_https.to_string()),
                allocation_weight: 1,
            }],
        };
        cfg.check().map_err(|e| anyhow::anyhow!(e))?;
        let (mqtt_at, https_at) = (self.hub.addrs.dps_mqtt, self.hub.addrs.dps_https);
        let running = self.hub.within(10, async {
            let dps = dps::Dps::open(cfg, Arc::new(ferrohub_runtime::time::SystemClock))?;
            let mqtt = tokio::net::TcpListener::bind(mqtt_at)
                .await
                .with_context(|| format!("cannot listen for DPS MQTT on {mqtt_at}"))?;
            let https = tokio::net::TcpListener::bind(https_at)
                .await
                .with_context(|| format!("cannot listen for DPS HTTPS on {https_at}"))?;
            let (mqtt_addr, https_addr) = (mqtt.local_addr()?, https.local_addr()?);
            let (stop, rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(dps::run(dps.clone(), dps::Listeners { mqtt, https }, rx));
            anyhow::Ok(Running {
                dps,
                mqtt: mqtt_addr,
                https: https_addr,
                stop,
                task,
            })
        })?;
        let text = format!(
            "ID scope {SCOPE}, MQTT on {}, HTTPS on {}, linked to the hub at {hub_https}",
            running.mqtt, running.https
        );
        *self.running.borrow_mut() = Some(running);
        Ok(text)
    }

    pub fn verify_ca(&self, certs: &Path) -> Result<String> {
        let (dps, _) = self.dps()?;
        prove_ca(&dps.cas, certs)
    }

    /// Seed 002's group enrollment: devices chaining to the verified CA, as IoT Edge devices.
    pub fn enroll(&self) -> Result<String> {
        let (dps, _) = self.dps()?;
        let mut group = EnrollmentGroup::new(
            "edge-devices",
            AttestationMechanism::x509(X509Attestation::ca_reference(CA_NAME)),
        );
        group.settings.capabilities.iot_edge = true;
        group.settings.initial_twin = Some(json!({"tags": {"environment": "quickstart"}}));
        dps.store.put_group(&group)?;
        Ok(format!(
            "group edge-devices: X.509 via CA {CA_NAME}, iotEdge"
        ))
    }

    /// Writes a super-config as a user would, applies it under `{data}/identity`, starts keyd,
    /// certd and identityd there and waits for the edge device to be provisioned through DPS.
    pub fn identity(&self, certs: &Path, edge_id: &str) -> Result<String> {
        let (_, dps_https) = self.dps()?;
        let (hub, _, hub_https) = self.hub.endpoints()?;
        let root = self.data.join("identity");
        std::fs::create_dir_all(&root)?;
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&root)?);
        let file = |name: &str| {
            format!(
                "file://{}",
                std::path::absolute(certs.join(name))
                    .unwrap_or_default()
                    .display()
            )
        };
        let text = format!(
            "hostname = \"{edge_id}\"\ntrust_bundle_cert = \"{}\"\n\n[provisioning]\nsource = \"dps\"\nglobal_endpoint = \"https://{}:{}\"\nid_scope = \"{SCOPE}\"\n\n[provisioning.attestation]\nmethod = \"x509\"\nregistration_id = \"{edge_id}\"\nidentity_cert = \"{}\"\nidentity_pk = \"{}\"\n\n[[principal]]\nuid = {uid}\nname = \"{MODULE}\"\nidtype = [\"module\"]\n",
            file("root-ca.cert.pem"),
            self.hub.addrs.dps_host,
            dps_https.port(),
            file(&format!("iot-device-{edge_id}-full-chain.cert.pem")),
            file(&format!("iot-device-{edge_id}.key.pem")),
        );
        let config_path = root.join("config.toml");
        std::fs::write(&config_path, &text)?;
        let sc = identity::config::superconfig::SuperConfig::parse(&text, &config_path)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let paths = identity::config::apply::Paths::under(&root);
        let applied =
            identity::config::apply::plan(&sc, &paths).map_err(|e| anyhow::anyhow!("{e}"))?;
        identity::config::apply::write(&applied, &paths).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stop, rx) = tokio::sync::watch::channel(false);
        let device = self.hub.within(30, async {
            let keyd = identity::keyd::Keyd::open(&applied.keyd)
                .map_err(|e| anyhow::anyhow!("keyd: {e}"))?;
            let store = keyd.store();
            let keyd_cfg = applied.keyd.clone();
            let rx2 = rx.clone();
            tokio::spawn(async move { identity::keyd::serve_with(keyd, &keyd_cfg, rx2).await });
            tokio::spawn(identity::certd::serve(
                applied.certd.clone(),
                store.clone(),
                rx.clone(),
            ));
            wait_for_socket(&applied.certd.socket).await?;
            wait_for_socket(&applied.keyd.socket).await?;
            let options = identity::identityd::Options {
                store: Some(store),
                hub_addresses: [(HUB_HOST.to_owned(), hub_https.to_string())].into(),
                ..Default::default()
            };
            tokio::spawn(identity::identityd::serve(
                applied.identityd.clone(),
                options,
                rx,
            ));
            wait_for_socket(&applied.identityd.socket).await?;
            // This uid is the module principal: it may read its own (module) identity, which
            // names the device and hub identityd was provisioned with.
            let idd = UdsClient::new(&applied.identityd.socket);
            let id: Identity = idd
                .get("/identities/identity?api-version=2020-09-01")
                .await
                .context("identityd did not provision the edge device")?;
            anyhow::Ok(id)
        });
        *self.identity_stop.borrow_mut() = Some(stop);
        let spec = &device?.spec;
        let at_hub = hub
            .registry
            .get_device(edge_id)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if spec.device_id != edge_id
            || spec.module_id.as_deref() != Some(MODULE)
            || !at_hub.capabilities.iot_edge
        {
            bail!("expected {edge_id} as an edge device at the hub, identityd says {spec:?}");
        }
        Ok(format!(
            "{edge_id} assigned to hub {} through DPS with its X.509 identity; iotEdge at the hub; module {MODULE} created; config in {}",
            spec.hub_name,
            root.display()
        ))
    }

    /// Seed 004: the module process (this uid, a principal) reads its identity from identityd,
    /// has keyd sign a SAS token and sends telemetry to the hub with it.
    pub fn module_telemetry(&self, certs: &Path, edge_id: &str) -> Result<String> {
        let (hub, mqtt, _) = self.hub.endpoints()?;
        let run_dir = self.data.join("identity/run/ferrohub");
        let from = hub.events.next_offset();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(
            ferrohub_certs::cert_dir::load_cert(&certs.join("root-ca.cert.pem"))?.to_rustls(),
        )?;
        let roots = Arc::new(roots);
        self.hub.within(30, async {
            let idd = UdsClient::new(run_dir.join("identityd.sock"));
            let id: Identity = idd
                .get("/identities/identity?api-version=2020-09-01")
                .await?;
            let handle = id
                .spec
                .auth
                .map(|a| a.key_handle)
                .context("no key handle")?;
            let resource = format!("{HUB_HOST}/devices/{edge_id}/modules/{MODULE}");
            let sr = iot_auth::percent_encode(&resource);
            let expiry = u64::try_from(crate::clock::now().unix_timestamp())? + 3600;
            let keyd = UdsClient::new(run_dir.join("keyd.sock"));
            let body = SignRequest::hmac_sha256(&handle, format!("{sr}\n{expiry}").as_bytes());
            let signed: SignResponse = keyd.post("/sign?api-version=2020-09-01", &body).await?;
            let sig = iot_auth::percent_encode(&signed.signature);
            let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}");
            let client_id = format!("{edge_id}/{MODULE}");
            let mut conn =
                DeviceConn::connect_sas(mqtt, HUB_HOST, roots, &client_id, &token).await?;
            let topic =
                format!("devices/{edge_id}/modules/{MODULE}/messages/events/%24.on=quickstart");
            for i in 0..5 {
                conn.publish_acked(&topic, format!("{{\"seq\":{i}}}").into_bytes())
                    .await?;
            }
            conn.disconnect().await;
            anyhow::Ok(())
        })?;
        let records = hub.events.read(from, 1000, 16 << 20)?;
        let from_module = records
            .iter()
            .filter_map(|r| serde_json::from_slice::<hub::events::EventRecord>(&r.payload).ok())
            .filter(|e| e.module_id.as_deref() == Some(MODULE))
            .count();
        if from_module != 5 {
            bail!("{from_module} of 5 module messages found in the events log");
        }
        Ok(format!(
            "{MODULE}: identity from identityd, token signed by keyd, 5 messages acknowledged and read back"
        ))
    }

    pub fn stop(&self) -> Result<String> {
        if let Some(stop) = self.identity_stop.borrow_mut().take() {
            let _ = stop.send(true);
        }
        let running = self
            .running
            .borrow_mut()
            .take()
            .context("the provisioning service is not running")?;
        let _ = running.stop.send(true);
        let registrations = running.dps.store.list_registrations()?.len();
        self.hub.finish_within(10, async move {
            running
                .task
                .await
                .context("the provisioning service task failed")??;
            anyhow::Ok(())
        })?;
        Ok(format!("{registrations} registration(s) recorded"))
    }
}

/// Waits until something accepts connections on `path` (a stale file from an earlier run does not
/// count).
async fn wait_for_socket(path: &Path) -> Result<()> {
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    bail!("{} did not appear", path.display())
}
