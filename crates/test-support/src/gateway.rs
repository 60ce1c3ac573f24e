//! A hub with an edge device, and a gateway in front of it, for the gateway's and the edge
//! agent's tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use mqtt_codec::ConnectReturnCode;
use serde_json::{Value, json};

use crate::hub::{HOST, KEY, Mqtt, TestHub, device_token, expiry, now, server_pki};

pub async fn create(t: &TestHub, path: &str, body: Value) -> Value {
    let r = t
        .client()
        .send(Method::PUT, path, Some(&body), &[])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{path}: {:?}", r.json());
    r.json()
}

pub fn sas_keys() -> Value {
    json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}})
}

/// Registers the edge device `gw` (IoT Edge) and returns its device record.
pub async fn edge_device(t: &TestHub) -> Value {
    create(
        t,
        "/devices/gw",
        json!({"deviceId": "gw", "capabilities": {"iotEdge": true}, "authentication": sas_keys()}),
    )
    .await
}

/// Registers `id` as a SAS child of `gw`.
pub async fn child(t: &TestHub, gw: &Value, id: &str) {
    create(
        t,
        &format!("/devices/{id}"),
        json!({"deviceId": id, "deviceScope": gw["deviceScope"], "authentication": sas_keys()}),
    )
    .await;
}

pub struct Gw {
    pub gateway: Arc<edge::Gateway>,
    pub addr: SocketAddr,
    /// The root that signed the gateway's server certificate.
    pub root: PathBuf,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub dir: tempfile::TempDir,
}

/// Starts a gateway for `gw` in front of `t` with `routes` (empty: the default route).
pub async fn start(t: &TestHub, routes: &[&str]) -> Gw {
    start_with(t, routes, |_| {}).await
}

/// [`start`] with a last word on the gateway's configuration.
pub async fn start_with(
    t: &TestHub,
    routes: &[&str],
    tweak: impl FnOnce(&mut edge::EdgeConfig),
) -> Gw {
    let edge_hub = t
        .client()
        .send(Method::GET, "/devices/gw/modules/$edgeHub", None, &[])
        .await
        .unwrap()
        .json();
    let dir = tempfile::tempdir().unwrap();
    let (root, cert, key) = server_pki(dir.path());
    let mut config = edge::EdgeConfig {
        edge_id: "gw".into(),
        hub_hostname: HOST.into(),
        hub_mqtt: t.mqtt.to_string(),
        hub_https: t.https.to_string(),
        hub_ca: t.root.clone(),
        edge_hub_key: edge_hub["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .into(),
        tls_cert: cert,
        tls_key: key,
        data_dir: dir.path().join("edge"),
        routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        store_ttl_hours: 2,
        listen: "127.0.0.1:0".parse().unwrap(),
        store_max_mib: 1024,
        store_full: edge::StoreFull::default(),
        metrics_listen: None,
        local_api_listen: None,
    };
    tweak(&mut config);
    let clock: ferrohub_runtime::time::SharedClock = Arc::new(ferrohub_runtime::time::FixedClock(
        std::sync::Mutex::new(now()),
    ));
    let gateway = edge::Gateway::open(config, clock).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(gateway.clone().run(listener, Duration::from_secs(3600), rx));
    Gw {
        gateway,
        addr,
        root,
        stop,
        dir,
    }
}

impl Gw {
    /// Connects `client_id` (`device` or `device/module`) with a SAS token signed by `KEY`,
    /// retrying while the first scope sync runs.
    pub async fn connect(&self, client_id: &str) -> Mqtt {
        let resource = client_id.replacen('/', "/modules/", 1);
        for _ in 0..200 {
            let mut c = Mqtt::tls_to(self.addr, &self.root, None).await;
            let code = c
                .connect(
                    client_id,
                    Some(device_token(&resource, KEY, expiry())),
                    true,
                )
                .await
                .1;
            if code == ConnectReturnCode::Accepted {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{client_id} could not connect to the gateway");
    }
}
