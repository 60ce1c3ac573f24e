//! The ferrohub side of `ferrohub bench gateway`: an in-process hub, an IoT Edge device with its
//! children, and an `edge::Gateway` in front of the hub; arrivals are read from the hub's events log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::{Authentication, Capabilities, Device};
use tokio::sync::watch;

use super::{Arrivals, Chain, HOST, Plan, child_id, child_index, lock};
use crate::clock;
use crate::{BenchHub, PausedHub};

/// The ferrohub chain, in process: a hub, an edge device with its children, and a gateway.
pub struct Ferro {
    hub: Option<BenchHub>,
    paused: Option<PausedHub>,
    gateway: Arc<edge::Gateway>,
    edge_addr: SocketAddr,
    gw_stop: watch::Sender<bool>,
    gw_task: tokio::task::JoinHandle<Result<(), edge::EdgeError>>,
    counter: Option<(watch::Sender<bool>, tokio::task::JoinHandle<u64>)>,
    /// Where the arrival counter continues in the hub's events log.
    offset: u64,
    arrivals: Arrivals,
    /// The hub's events-log counters for each run of the hub (before the outage, after it).
    hub_runs: Vec<serde_json::Value>,
    tokens: Vec<String>,
    roots: Arc<rustls::RootCertStore>,
    _gw_dir: tempfile::TempDir,
}

impl Ferro {
    pub async fn start(plan: &Plan, arrivals: Arrivals) -> Result<Self> {
        let bench = BenchHub::start(0, true, 128).await?;
        let (edge_hub_key, child_key) = register_edge(&bench.hub, plan.children)?;
        let gw_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let (cert, key) = crate::server_cert(gw_dir.path(), &bench.ca, &bench.ca_key, "gateway")?;
        let config = edge::EdgeConfig {
            edge_id: "bench-edge".into(),
            hub_hostname: HOST.into(),
            hub_mqtt: bench.mqtt.to_string(),
            hub_https: bench.https.to_string(),
            hub_ca: bench.dir().join("ca.pem"),
            edge_hub_key,
            tls_cert: cert,
            tls_key: key,
            data_dir: gw_dir.path().join("edge"),
            routes: vec![],
            store_ttl_hours: 2,
            listen: "127.0.0.1:0".parse()?,
            store_max_mib: 1024,
            store_full: edge::StoreFull::default(),
            metrics_listen: None,
            local_api_listen: None,
        };
        let gateway = edge::Gateway::open(config, Arc::new(ferrohub_runtime::time::SystemClock))?;
        gateway
            .sync_scope()
            .await
            .context("the gateway cannot read its device scope")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let edge_addr = listener.local_addr()?;
        let (gw_stop, rx) = watch::channel(false);
        let gw_task = tokio::spawn(gateway.clone().run(listener, Duration::from_secs(3600), rx));
        let expiry = u64::try_from(clock::now().unix_timestamp())? + 24 * 3600;
        let tokens = (0..plan.children)
            .map(|i| {
                let resource = format!("{HOST}/devices/{}", child_id(i));
                iot_auth::sas::generate_sas_token(&resource, &child_key, None, expiry)
            })
            .collect();
        let mut chain = Self {
            offset: bench.hub.events.next_offset(),
            roots: bench.roots.clone(),
            hub: Some(bench),
            paused: None,
            gateway,
            edge_addr,
            gw_stop,
            gw_task,
            counter: None,
            arrivals,
            hub_runs: Vec::new(),
            tokens,
            _gw_dir: gw_dir,
        };
        chain.start_counter();
        Ok(chain)
    }

    fn start_counter(&mut self) {
        if let Some(b) = &self.hub {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(follow_log(
                b.hub.clone(),
                self.offset,
                self.arrivals.clone(),
                rx,
            ));
            self.counter = Some((tx, task));
        }
    }

    async fn stop_counter(&mut self) {
        if let Some((tx, task)) = self.counter.take() {
            let _ = tx.send(true);
            if let Ok(offset) = task.await {
                self.offset = offset;
            }
        }
    }
}

impl Chain for Ferro {
    fn edge(&self) -> SocketAddr {
        self.edge_addr
    }

    fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }

    fn password(&self, i: usize) -> String {
        self.tokens.get(i).cloned().unwrap_or_default()
    }

    async fn stop_upstream(&mut self) -> Result<()> {
        self.stop_counter().await;
        if let Some(b) = self.hub.take() {
            let s = b.hub.events.stats();
            self.hub_runs.push(log_stats(s.appends, s.commits));
            self.paused = Some(b.pause().await?);
        }
        Ok(())
    }

    async fn start_upstream(&mut self) -> Result<()> {
        if let Some(p) = self.paused.take() {
            self.hub = Some(p.resume().await?);
        }
        self.start_counter();
        Ok(())
    }

    async fn finish(mut self) -> Result<serde_json::Value> {
        self.stop_counter().await;
        let store = self.gateway.local.events.stats();
        let runs = device_runs(&self.gateway);
        let _ = self.gw_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.gw_task).await;
        if let Some(b) = self.hub.take() {
            let s = b.stop().await.events.stats();
            self.hub_runs.push(log_stats(s.appends, s.commits));
        }
        let retries = self.gateway.stats.upstream_retries.load(Relaxed);
        Ok(serde_json::json!({
            "gateway_store": log_stats(store.appends, store.commits),
            "gateway_forwarded": self.gateway.forwarded.load(Relaxed),
            "gateway_upstream_retries": retries,
            "gateway_store_same_child_runs": runs,
            "hub_events": self.hub_runs,
        }))
    }
}

/// An events log's appends and fsync'ed group commits since it was opened.
fn log_stats(appends: u64, commits: u64) -> serde_json::Value {
    serde_json::json!({"appends": appends, "fsynced_commits": commits})
}

/// Registers the edge device (IoT Edge, so it gets `$edgeHub`) and `children` SAS children in
/// its scope; returns the `$edgeHub` key and the children's key.
fn register_edge(hub: &hub::Hub, children: usize) -> Result<(String, Vec<u8>)> {
    let err = |e: ferrohub_runtime::error::ApiError| anyhow::anyhow!("{e}");
    let edge = hub
        .registry
        .put_device(
            "bench-edge",
            Device {
                device_id: "bench-edge".into(),
                capabilities: Capabilities { iot_edge: true },
                ..Default::default()
            },
            &IfMatch::Absent,
        )
        .map_err(err)?;
    let key = hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?;
    for i in 0..children {
        let id = child_id(i);
        let device = Device {
            device_id: id.clone(),
            device_scope: edge.device_scope.clone(),
            authentication: Authentication::sas(Some(key.clone()), Some(key.clone())),
            ..Default::default()
        };
        hub.registry
            .put_device(&id, device, &IfMatch::Absent)
            .map_err(err)?;
    }
    let module = hub
        .registry
        .get_module("bench-edge", "$edgeHub")
        .map_err(err)?;
    let edge_hub_key = module
        .authentication
        .symmetric_key
        .and_then(|k| k.primary_key)
        .context("$edgeHub has no key")?;
    let child_key = base64::engine::general_purpose::STANDARD.decode(&key)?;
    Ok((edge_hub_key, child_key))
}

/// Follows the hub's events log from `offset`, checking off each child's messages (as stamped by
/// the hub: `iothub-connection-device-id` must be the child), until `stop`; returns where it got.
async fn follow_log(
    hub: Arc<hub::Hub>,
    mut offset: u64,
    arrivals: Arrivals,
    mut stop: watch::Receiver<bool>,
) -> u64 {
    let mut head = hub.events.subscribe();
    loop {
        let records = hub.events.read(offset, 4096, 16 << 20).unwrap_or_default();
        if records.is_empty() {
            tokio::select! {
                r = head.changed() => if r.is_err() { return offset },
                _ = stop.changed() => return offset,
            }
            continue;
        }
        let at = clock::instant();
        let mut t = lock(&arrivals);
        for r in records {
            offset = r.offset + 1;
            let Ok(ev) = serde_json::from_slice::<hub::events::EventRecord>(&r.payload) else {
                t.unexpected += 1;
                continue;
            };
            let stamped = ev.system_properties.get("iothub-connection-device-id");
            let child = child_index(&ev.device_id).filter(|_| stamped == Some(&ev.device_id));
            t.record(child, &ev.body_bytes(), at);
        }
    }
}

/// How many consecutive records of the same child the gateway's store holds on average: the
/// forwarder sends one child's run at a time, so this is its average upstream batch.
fn device_runs(g: &edge::Gateway) -> f64 {
    let log = &g.local.events;
    let (mut offset, mut runs, mut records, mut prev) = (log.start_offset(), 0u64, 0u64, None);
    while let Ok(batch) = log.read(offset, 4096, 16 << 20) {
        let Some(last) = batch.last() else { break };
        offset = last.offset + 1;
        for r in &batch {
            if let Ok(ev) = serde_json::from_slice::<hub::events::EventRecord>(&r.payload) {
                records += 1;
                if prev.as_ref() != Some(&ev.device_id) {
                    runs += 1;
                    prev = Some(ev.device_id);
                }
            }
        }
    }
    records as f64 / runs.max(1) as f64
}
