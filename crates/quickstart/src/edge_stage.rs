//! The quickstart's gateway and outage stages (seeds 000 and 001): the edge device, provisioned
//! through DPS by the identity service, becomes a transparent gateway with seed 000's routes to
//! `$upstream` and a server certificate from its edge CA; a CA-signed X.509 child and a SAS child
//! (registered in the edge device's scope) send telemetry through it and show up at the hub as
//! themselves; a direct method and a desired-property patch reach a child through it; then the hub
//! is stopped, the children keep sending (the gateway acknowledges every message after its fsync),
//! the hub comes back on the same ports and every message is counted there.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use ferrohub_runtime::etag::IfMatch;
use hub::events::EventRecord;
use hub_wire::model::{Authentication, Device};
use hub_wire::{MethodRequest, TwinPatch};
use hyper::Method;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use tokio::sync::watch;

use device_client::DeviceConn;
use ferrohub_certs::cert_dir::{load_cert, load_certs, load_key};

use crate::hub_stage::{HUB_HOST, HubStage};

/// The second child: a symmetric-key device.
pub const CHILD_SAS: &str = "child-sas";
/// Seed 000's two routes to `$upstream`, verbatim (name, route).
pub const ROUTES: [(&str, &str); 2] = [
    ("route", "FROM /messages/* INTO $upstream"),
    (
        "AIInsightsToIoTHub",
        "FROM /messages/modules/ai_insights/outputs/output1 INTO $upstream",
    ),
];
/// Messages per child through the gateway while the hub is up, and while it is down.
const MESSAGES: u64 = 10;
const OUTAGE_MESSAGES: u64 = 100;
/// How often the gateway re-reads its device scope from the hub.
const SCOPE_REFRESH: Duration = Duration::from_secs(5);
/// How long a child waits for a method call or twin patch relayed by the gateway.
const RELAY_WAIT: Duration = Duration::from_secs(5);

struct Running {
    gateway: Arc<edge::Gateway>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), edge::EdgeError>>,
}

/// How a child authenticates.
#[derive(Clone)]
enum ChildAuth {
    X509 {
        chain: Vec<CertificateDer<'static>>,
        key_pem: String,
    },
    Sas {
        token: String,
    },
}

/// What a child needs to connect through the gateway.
#[derive(Clone)]
struct Child {
    id: String,
    auth: ChildAuth,
    roots: Arc<rustls::RootCertStore>,
    addr: SocketAddr,
    gateway_host: String,
}

impl Child {
    async fn connect(&self) -> Result<DeviceConn> {
        let (addr, host, roots) = (self.addr, &self.gateway_host, self.roots.clone());
        match &self.auth {
            ChildAuth::X509 { chain, key_pem } => {
                DeviceConn::connect_x509_via(
                    addr,
                    host,
                    HUB_HOST,
                    roots,
                    &self.id,
                    chain.clone(),
                    key_pem,
                )
                .await
            }
            ChildAuth::Sas { token } => {
                DeviceConn::connect_sas_via(addr, host, HUB_HOST, roots, &self.id, token).await
            }
        }
        .with_context(|| format!("{} cannot connect to the gateway at {addr}", self.id))
    }

    /// `count` QoS 1 messages tagged with `run` and `phase`, `seq` in the body; every one must be
    /// acknowledged (the gateway does so after its fsync).
    async fn send(&self, conn: &mut DeviceConn, run: &str, phase: &str, count: u64) -> Result<()> {
        let topic = format!(
            "devices/{}/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&run={run}&phase={phase}",
            self.id
        );
        for start in (0..count).step_by(50) {
            let window = (start..count.min(start + 50))
                .map(|seq| {
                    (
                        topic.clone(),
                        json!({ "seq": seq }).to_string().into_bytes(),
                    )
                })
                .collect();
            conn.publish_all_acked(window)
                .await
                .with_context(|| format!("{}: not every message was acknowledged", self.id))?;
        }
        Ok(())
    }
}

/// Messages of one child and phase found at the hub.
struct Arrived {
    total: usize,
    unique: usize,
    in_order: bool,
}

pub struct EdgeStage<'a> {
    hub: &'a HubStage,
    data: PathBuf,
    edge_id: &'static str,
    x509_child: &'static str,
    /// Tags this run's messages, so leftovers of an interrupted earlier run are not counted.
    run_id: String,
    running: RefCell<Option<Running>>,
    sas_key: RefCell<Option<String>>,
    /// The hub's events offset when the outage began.
    outage_from: RefCell<Option<u64>>,
}

impl<'a> EdgeStage<'a> {
    pub fn new(
        hub: &'a HubStage,
        data: &Path,
        edge_id: &'static str,
        x509_child: &'static str,
    ) -> Self {
        let mut b = [0u8; 6];
        let _ = pki::random_fill(&mut b);
        Self {
            hub,
            data: data.to_owned(),
            edge_id,
            x509_child,
            run_id: b.iter().map(|x| format!("{x:02x}")).collect(),
            running: RefCell::new(None),
            sas_key: RefCell::new(None),
            outage_from: RefCell::new(None),
        }
    }

    /// Where children reach the gateway while it runs.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.running.borrow().as_ref().map(|r| r.addr)
    }

    /// The SAS child's key, once registered.
    pub fn sas_key(&self) -> Option<String> {
        self.sas_key.borrow().clone()
    }

    /// The running gateway's address; fails with its own error when it died.
    fn gateway_alive(&self) -> Result<SocketAddr> {
        let finished = match self.running.borrow().as_ref() {
            None => bail!("the gateway is not running (an earlier step failed)"),
            Some(r) => r.task.is_finished(),
        };
        if !finished {
            return self.gateway_addr().context("the gateway is not running");
        }
        let r = self
            .running
            .borrow_mut()
            .take()
            .context("the gateway is not running")?;
        let cause = match self.hub.rt.block_on(r.task) {
            Ok(Ok(())) => "it stopped serving".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("its task failed: {e}"),
        };
        bail!("the gateway died: {cause}")
    }

    /// Both children, ready to connect through the gateway.
    fn children(&self, certs: &Path) -> Result<[Child; 2]> {
        let addr = self.gateway_alive()?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(load_cert(&certs.join("root-ca.cert.pem"))?.to_rustls())?;
        let roots = Arc::new(roots);
        let stem = format!("iot-device-{}", self.x509_child);
        let chain = load_certs(&certs.join(format!("{stem}-full-chain.cert.pem")))?
            .iter()
            .map(pki::Certificate::to_rustls)
            .collect();
        let key_pem = load_key(&certs.join(format!("{stem}.key.pem")))?.to_pem();
        let key = self
            .sas_key()
            .context("the SAS child is not registered (an earlier step failed)")?;
        let key = iot_auth::sas::decode_key(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
        let expiry = u64::try_from(crate::clock::now().unix_timestamp())? + 3600;
        let resource = format!("{HUB_HOST}/devices/{CHILD_SAS}");
        let token = iot_auth::sas::generate_sas_token(&resource, &key, None, expiry);
        let child = |id: &str, auth| Child {
            id: id.to_owned(),
            auth,
            roots: roots.clone(),
            addr,
            gateway_host: self.hub.addrs.gateway_host.clone(),
        };
        Ok([
            child(self.x509_child, ChildAuth::X509 { chain, key_pem }),
            child(CHILD_SAS, ChildAuth::Sas { token }),
        ])
    }

    /// Seed 001: the CA-signed device and a new SAS device become children of the edge device
    /// (their `deviceScope` is the edge device's scope).
    pub fn register_children(&self) -> Result<String> {
        let (hub, _, _) = self.hub.endpoints()?;
        let api = |e: ferrohub_runtime::error::ApiError| anyhow::anyhow!("{e}");
        let edge = hub.registry.get_device(self.edge_id).map_err(api)?;
        if !edge.capabilities.iot_edge {
            bail!("{} is not an IoT Edge device at the hub", self.edge_id);
        }
        let scope = edge
            .device_scope
            .context("the edge device has no deviceScope")?;
        let mut x509 = hub.registry.get_device(self.x509_child).map_err(api)?;
        x509.device_scope = Some(scope.clone());
        x509.parent_scopes = vec![];
        hub.registry
            .put_device(self.x509_child, x509, &IfMatch::Any)
            .map_err(api)?;
        let key = hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?;
        let sas = Device {
            device_id: CHILD_SAS.into(),
            authentication: Authentication::sas(
                Some(key.clone()),
                Some(hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?),
            ),
            device_scope: Some(scope.clone()),
            ..Default::default()
        };
        hub.registry
            .put_device(CHILD_SAS, sas, &IfMatch::Any)
            .map_err(api)?;
        for id in [self.x509_child, CHILD_SAS] {
            let d = hub.registry.get_device(id).map_err(api)?;
            if d.device_scope.as_deref() != Some(scope.as_str()) {
                bail!("{id} is not in the edge device's scope at the hub");
            }
        }
        *self.sas_key.borrow_mut() = Some(key);
        Ok(format!(
            "{} (certificateAuthority) and {CHILD_SAS} (sas): deviceScope {scope}",
            self.x509_child
        ))
    }

    /// The gateway with seed 000's routes and the server certificate issued by the edge CA,
    /// authenticating children from the device scope it reads from the hub.
    pub fn start(&self, certs: &Path, cert_stem: &str, edge_ca_stem: &str) -> Result<String> {
        let (hub, mqtt, https) = self.hub.endpoints()?;
        let module = hub
            .registry
            .get_module(self.edge_id, "$edgeHub")
            .map_err(|e| anyhow::anyhow!("the edge device's $edgeHub module: {e}"))?;
        let key = module
            .authentication
            .symmetric_key
            .and_then(|k| k.primary_key)
            .context("$edgeHub has no SAS key")?;
        let cert = load_cert(&certs.join(format!("{cert_stem}.cert.pem")))?;
        let edge_ca = load_cert(&certs.join(format!("{edge_ca_stem}.cert.pem")))?;
        if cert.issuer() != edge_ca.subject() {
            bail!("the gateway certificate is not issued by the edge CA");
        }
        let config = edge::EdgeConfig {
            edge_id: self.edge_id.into(),
            hub_hostname: HUB_HOST.into(),
            hub_mqtt: mqtt.to_string(),
            hub_https: https.to_string(),
            hub_ca: certs.join("root-ca.cert.pem"),
            edge_hub_key: key,
            tls_cert: certs.join(format!("{cert_stem}-full-chain.cert.pem")),
            tls_key: certs.join(format!("{cert_stem}.key.pem")),
            data_dir: self.data.join("edge-data"),
            routes: ROUTES.iter().map(|(_, r)| (*r).to_owned()).collect(),
            store_ttl_hours: 2,
            listen: self.hub.addrs.gateway,
            store_max_mib: 1024,
            store_full: edge::StoreFull::default(),
            metrics_listen: None,
            local_api_listen: None,
        };
        let gateway = edge::Gateway::open(config, Arc::new(ferrohub_runtime::time::SystemClock))?;
        let listen = self.hub.addrs.gateway;
        let (running, synced) = self.hub.within(20, async {
            let synced = gateway.sync_scope().await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen for the gateway on {listen}"))?;
            let addr = listener.local_addr()?;
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(gateway.clone().run(listener, SCOPE_REFRESH, rx));
            anyhow::Ok((
                Running {
                    gateway: gateway.clone(),
                    addr,
                    stop,
                    task,
                },
                synced,
            ))
        })?;
        let addr = running.addr;
        *self.running.borrow_mut() = Some(running);
        for id in [self.x509_child, CHILD_SAS] {
            gateway
                .local
                .registry
                .get_device(id)
                .map_err(|e| anyhow::anyhow!("{id} is not in the gateway's scope: {e}"))?;
        }
        let names: Vec<&str> = ROUTES.iter().map(|(n, _)| *n).collect();
        Ok(format!(
            "MQTT/TLS on {addr} as GatewayHostName={}, routes {}; {synced} children in scope\n\
             server certificate {} issued by {}",
            self.hub.addrs.gateway_host,
            names.join(", "),
            cert.subject(),
            edge_ca.subject()
        ))
    }

    /// Seed 001's downstream telemetry: each child sends through the gateway; the hub's events
    /// show every message as the child's.
    pub fn telemetry(&self, certs: &Path) -> Result<String> {
        let children = self.children(certs)?;
        let (hub, _, _) = self.hub.endpoints()?;
        let from = hub.events.next_offset();
        let run = self.run_id.clone();
        let arrived = self.hub.within(40, async {
            for c in &children {
                let mut conn = c.connect().await?;
                c.send(&mut conn, &run, "gateway", MESSAGES).await?;
                conn.disconnect().await;
            }
            wait_for_hub(&hub, from, &children, &run, "gateway", MESSAGES).await
        })?;
        let unique: usize = arrived.iter().map(|a| a.unique).sum();
        let total: usize = arrived.iter().map(|a| a.total).sum();
        let mut lines = vec![format!(
            "{} sent, each acknowledged by the gateway; {unique} at the hub as the children, {} duplicates",
            MESSAGES * 2,
            total - unique
        )];
        for (c, a) in children.iter().zip(&arrived) {
            lines.push(format!(
                "{}: {MESSAGES} acknowledged by the gateway, {} at the hub as {}",
                c.id, a.unique, c.id
            ));
        }
        Ok(lines.join("\n"))
    }

    /// A direct method invoked at the hub's service API reaches the X.509 child, subscribed at
    /// the gateway, and its answer comes back.
    pub fn method(&self, certs: &Path) -> Result<String> {
        let [x509, _] = self.children(certs)?;
        let client = self.hub.service_client(certs)?;
        let nonce = self.run_id.clone();
        self.hub.within(30, async move {
            let mut conn = x509.connect().await?;
            conn.subscribe("$iothub/methods/POST/#").await?;
            let id = x509.id.clone();
            let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
            let device = tokio::spawn(async move {
                let call = tokio::select! {
                    call = conn.next_publish() => Some(call),
                    _ = cancelled => None,
                };
                let answered = match call {
                    None => Ok(None),
                    Some(Err(e)) => Err(e),
                    Some(Ok(call)) => {
                        let request: Value =
                            serde_json::from_slice(&call.payload).unwrap_or(Value::Null);
                        let answer = json!({"answeredBy": id, "request": request});
                        conn.answer_method(&call.topic, 200, answer.to_string().into_bytes())
                            .await
                            .map(Some)
                    }
                };
                conn.disconnect().await;
                answered
            });
            let body = hub_wire::body(&MethodRequest {
                method_name: "quickstartPing".into(),
                payload: json!({"nonce": nonce}),
                response_timeout_in_seconds: Some(RELAY_WAIT.as_secs()),
                connect_timeout_in_seconds: Some(RELAY_WAIT.as_secs()),
            });
            let path = format!("/twins/{}/methods", x509.id);
            let r = client.send(Method::POST, &path, Some(&body), &[]).await;
            let _ = cancel.send(());
            let name = device.await??;
            let r = r?;
            if !r.status.is_success() {
                bail!(
                    "the hub answered the method call with {}: {}",
                    r.status,
                    r.json()["Message"]
                );
            }
            let result = r.json();
            if result["status"] != 200
                || result["payload"]["answeredBy"] != x509.id.as_str()
                || result["payload"]["request"]["nonce"] != nonce.as_str()
            {
                bail!("unexpected method result {result}");
            }
            Ok(format!(
                "{} answered {} through the gateway: status 200, payload {}",
                x509.id,
                name.unwrap_or_default(),
                result["payload"]
            ))
        })
    }

    /// A desired-property patch made at the hub's service API reaches the SAS child through the
    /// gateway; the child reports it back and the hub's twin shows the report.
    pub fn twin(&self, certs: &Path) -> Result<String> {
        let [_, sas] = self.children(certs)?;
        let client = self.hub.service_client(certs)?;
        let nonce = self.run_id.clone();
        self.hub.within(30, async move {
            let mut conn = sas.connect().await?;
            let exchanged = twin_exchange(&mut conn, &client, &sas.id, &nonce).await;
            conn.disconnect().await;
            let version = exchanged?;
            let path = format!("/twins/{}", sas.id);
            let twin = client.send(Method::GET, &path, None, &[]).await?.ok()?.json();
            if twin["properties"]["reported"]["quickstart"]["nonce"] != nonce.as_str() {
                bail!("the hub's twin does not show the child's report: {}", twin["properties"]);
            }
            Ok(format!(
                "{}: desired version {version} received through the gateway, reported back, visible at the hub",
                sas.id
            ))
        })
    }

    /// Stops the hub (its ports stay reserved for its return) and has both children keep sending
    /// through the gateway, which acknowledges every message after storing it.
    pub fn outage(&self, certs: &Path) -> Result<String> {
        let children = self.children(certs)?;
        // Not holding on to the hub: it must really go away.
        let from = self.hub.endpoints()?.0.events.next_offset();
        let stopped = self.hub.pause()?;
        *self.outage_from.borrow_mut() = Some(from);
        let run = self.run_id.clone();
        self.hub.within(60, async {
            for c in &children {
                let mut conn = c.connect().await?;
                c.send(&mut conn, &run, "outage", OUTAGE_MESSAGES).await?;
                conn.disconnect().await;
            }
            anyhow::Ok(())
        })?;
        Ok(format!(
            "{} messages ({OUTAGE_MESSAGES} per child) acknowledged by the gateway while the hub was down\n{stopped}",
            OUTAGE_MESSAGES * 2
        ))
    }

    /// Brings the hub back on the same ports and counts the outage messages arriving there.
    pub fn recovery(&self, certs: &Path) -> Result<String> {
        let back = self.hub.resume()?;
        let from = self
            .outage_from
            .borrow_mut()
            .take()
            .context("the outage step did not run")?;
        let children = self.children(certs)?;
        let (hub, _, _) = self.hub.endpoints()?;
        let run = self.run_id.clone();
        let arrived = self.hub.within(60, async {
            wait_for_hub(&hub, from, &children, &run, "outage", OUTAGE_MESSAGES).await
        })?;
        let total: usize = arrived.iter().map(|a| a.total).sum();
        let unique: usize = arrived.iter().map(|a| a.unique).sum();
        let in_order = arrived.iter().all(|a| a.in_order);
        Ok(format!(
            "{unique} of {} arrived, {} duplicates, {}\n{back}",
            OUTAGE_MESSAGES * 2,
            total - unique,
            if in_order { "in order" } else { "out of order" }
        ))
    }

    pub fn stop(&self) -> Result<String> {
        let running = self
            .running
            .borrow_mut()
            .take()
            .context("the gateway is not running")?;
        let _ = running.stop.send(true);
        let forwarded = running
            .gateway
            .forwarded
            .load(std::sync::atomic::Ordering::Relaxed);
        self.hub.finish_within(10, async move {
            running.task.await.context("the gateway task failed")??;
            anyhow::Ok(())
        })?;
        Ok(format!(
            "{forwarded} messages forwarded to the hub in this run"
        ))
    }
}

/// The child's side of the twin step: subscribe, read the twin, get the service's patch, report
/// it back. Returns the desired version the service's patch made.
async fn twin_exchange(
    conn: &mut DeviceConn,
    client: &ferrohub_runtime::client::ServiceClient,
    id: &str,
    nonce: &str,
) -> Result<Value> {
    conn.subscribe("$iothub/twin/res/#").await?;
    conn.subscribe("$iothub/twin/PATCH/properties/desired/#")
        .await?;
    // As the SDKs do: read the twin once subscribed (the answer says the subscriptions are in
    // place), then wait for patches.
    conn.publish_qos0("$iothub/twin/GET/?$rid=1", Vec::new())
        .await?;
    wait_topic(conn, "$iothub/twin/res/200/?$rid=1", "the twin").await?;
    let patch = hub_wire::body(&TwinPatch::desired(json!({"quickstart": {"nonce": nonce}})));
    let r = client
        .send(
            Method::PATCH,
            &format!("/twins/{id}"),
            Some(&patch),
            &[("if-match", "*")],
        )
        .await?
        .ok()?;
    let version = r.json()["properties"]["desired"]["$version"].clone();
    let got = wait_topic(
        conn,
        "$iothub/twin/PATCH/properties/desired/",
        "the desired-property patch",
    )
    .await?;
    let desired: Value = serde_json::from_slice(&got.payload).unwrap_or(Value::Null);
    if desired["quickstart"]["nonce"] != nonce {
        bail!("the child got {desired}, not the patch");
    }
    let reported = json!({"quickstart": {"nonce": nonce, "applied": true}});
    conn.publish_qos0(
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        reported.to_string().into_bytes(),
    )
    .await?;
    wait_topic(conn, "$iothub/twin/res/204/?$rid=2", "the reported patch").await?;
    Ok(version)
}

/// The next PUBLISH whose topic starts with `prefix`, within [`RELAY_WAIT`].
async fn wait_topic(
    conn: &mut DeviceConn,
    prefix: &str,
    what: &str,
) -> Result<mqtt_codec::Publish> {
    let wait = async {
        loop {
            let p = conn.next_publish().await?;
            if p.topic.starts_with(prefix) {
                return anyhow::Ok(p);
            }
        }
    };
    match tokio::time::timeout(RELAY_WAIT, wait).await {
        Ok(r) => r,
        Err(_) => bail!(
            "{what} did not reach the child through the gateway within {} s",
            RELAY_WAIT.as_secs()
        ),
    }
}

/// Waits until the hub's events log holds `count` distinct messages of each child for this run
/// and phase, stamped with the child's own identity.
async fn wait_for_hub(
    hub: &hub::Hub,
    from: u64,
    children: &[Child],
    run: &str,
    phase: &str,
    count: u64,
) -> Result<Vec<Arrived>> {
    let want = usize::try_from(count)?;
    let mut arrived = Vec::new();
    // 30 s in 20 ms steps (the forwarder retries the hub every second).
    for _ in 0..1500 {
        arrived = arrivals(hub, from, children, run, phase)?;
        if arrived.iter().all(|a| a.unique >= want) {
            return Ok(arrived);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: Vec<String> = children
        .iter()
        .zip(&arrived)
        .map(|(c, a)| format!("{}: {} of {want}", c.id, a.unique))
        .collect();
    bail!("not every message reached the hub: {}", seen.join(", "))
}

fn arrivals(
    hub: &hub::Hub,
    from: u64,
    children: &[Child],
    run: &str,
    phase: &str,
) -> Result<Vec<Arrived>> {
    let records = hub.events.read(from, 100_000, 64 << 20)?;
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in records
        .iter()
        .filter_map(|r| serde_json::from_slice::<EventRecord>(&r.payload).ok())
    {
        let Some(c) = children.iter().find(|c| c.id == e.device_id) else {
            continue;
        };
        let stamped = e
            .system_properties
            .get("iothub-connection-device-id")
            .map(String::as_str)
            == Some(c.id.as_str());
        let tagged = e.properties.get("run") == Some(&Some(run.to_owned()))
            && e.properties.get("phase") == Some(&Some(phase.to_owned()));
        let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
        if let (true, true, Some(seq)) = (stamped, tagged, body["seq"].as_u64()) {
            seqs.entry(c.id.as_str()).or_default().push(seq);
        }
    }
    Ok(children
        .iter()
        .map(|c| {
            let all = seqs.remove(c.id.as_str()).unwrap_or_default();
            // In order: each message's first arrival comes after the previous one's.
            let mut seen = std::collections::BTreeSet::new();
            let firsts: Vec<u64> = all.iter().copied().filter(|s| seen.insert(*s)).collect();
            Arrived {
                total: all.len(),
                unique: firsts.len(),
                in_order: firsts.windows(2).all(|w| w[0] < w[1]),
            }
        })
        .collect())
}
