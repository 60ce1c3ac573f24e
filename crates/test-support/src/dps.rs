//! A provisioning service linked to in-process hubs, all on ephemeral loopback ports, and the
//! device side of registering with it over MQTT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dps::config::{DpsConfig, LinkedHub, Listen, Policy, Right, Storage};
use dps::{Dps, Listeners};
use ferrohub_runtime::time::{FixedClock, SharedClock};
use hyper::{Method, StatusCode};
use mqtt_codec::{ConnectReturnCode, Packet, QoS, Subscribe};
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};
use serde_json::{Value, json};

use crate::hub::{self as hubtest, ClientCert, KEY, Mqtt, TestHub, base64_decode, now, start_2020};

pub const SCOPE: &str = "0ne00000A11";

pub struct TestDps {
    pub dps: Arc<Dps>,
    pub hubs: Vec<TestHub>,
    pub mqtt: SocketAddr,
    pub https: SocketAddr,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
    /// Held for the service's lifetime: dropping it stops the service.
    _stop: tokio::sync::watch::Sender<bool>,
}

impl TestDps {
    /// A DPS linked to hubs named `hub1`, `hub2`, ... (`n` of them).
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// [`TestDps::start`], with a last word on the DPS configuration.
    pub async fn start_with(n: usize, tweak: impl FnOnce(&mut DpsConfig)) -> Self {
        let mut hubs = Vec::new();
        for i in 1..=n {
            hubs.push(TestHub::start_with(|c| c.hostname = format!("hub{i}")).await);
        }
        let dir = tempfile::tempdir().unwrap();
        let (root, cert, key) = hubtest::server_pki(dir.path());
        let linked = hubs
            .iter()
            .map(|h| LinkedHub {
                connection_string: format!(
                    "HostName={};SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}",
                    h.hub.config.hostname
                ),
                ca: Some(h.root.clone()),
                address: Some(h.https.to_string()),
                allocation_weight: 1,
            })
            .collect();
        let mut cfg = DpsConfig {
            hostname: "localhost".into(),
            id_scope: SCOPE.into(),
            allocation_policy: "hashed".into(),
            listen: Listen::default(),
            tls: ferrohub_runtime::config::Tls {
                cert,
                key,
                ca: Some(root.clone()),
            },
            storage: Storage {
                database: dir.path().join("dps.sqlite"),
            },
            policies: vec![Policy {
                name: "provisioningserviceowner".into(),
                primary_key: KEY.into(),
                secondary_key: KEY.into(),
                rights: Right::ALL.to_vec(),
            }],
            linked_hubs: linked,
        };
        tweak(&mut cfg);
        cfg.check().unwrap();
        let clock: SharedClock = Arc::new(FixedClock(std::sync::Mutex::new(now())));
        let dps = Dps::open(cfg, clock).unwrap();
        let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mqtt_addr, https_addr) = (mqtt.local_addr().unwrap(), https.local_addr().unwrap());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let d = dps.clone();
        tokio::spawn(async move { dps::run(d, Listeners { mqtt, https }, rx).await.unwrap() });
        Self {
            dps,
            hubs,
            mqtt: mqtt_addr,
            https: https_addr,
            root,
            dir,
            _stop: stop,
        }
    }

    pub fn hub(&self, name: &str) -> &TestHub {
        self.hubs
            .iter()
            .find(|h| h.hub.config.hostname == name)
            .unwrap()
    }

    /// Device `id` as linked hub `hub`'s service API shows it; `None` when the hub has none.
    pub async fn hub_device(&self, hub: &str, id: &str) -> Option<Value> {
        let r = self
            .hub(hub)
            .client()
            .send(Method::GET, &format!("/devices/{id}"), None, &[])
            .await
            .unwrap();
        (r.status == StatusCode::OK).then(|| r.json())
    }

    /// The service API client (provisioningserviceowner).
    pub fn service(&self) -> ferrohub_runtime::client::ServiceClient {
        ferrohub_runtime::client::ServiceClient::new(
            self.https.to_string(),
            "localhost".into(),
            "provisioningserviceowner".into(),
            base64_decode(KEY),
            ferrohub_runtime::tls::client_config(&self.root).unwrap(),
        )
        .with_api_version("2021-10-01")
        .with_token_time(u64::try_from(now().unix_timestamp()).unwrap())
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .service()
            .send(Method::PUT, path, Some(&body), &[])
            .await
            .unwrap();
        (r.status, r.json())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .service()
            .send(Method::GET, path, None, &[])
            .await
            .unwrap();
        (r.status, r.json())
    }

    /// An MQTT connection to the DPS as `registration_id`; returns the CONNACK code.
    pub async fn connect(
        &self,
        registration_id: &str,
        password: Option<String>,
        cert: Option<ClientCert>,
    ) -> (Mqtt, ConnectReturnCode) {
        let mut c = Mqtt::tls_to(self.mqtt, &self.root, cert).await;
        let username = format!(
            "{SCOPE}/registrations/{registration_id}/api-version=2019-03-31&ClientVersion=test"
        );
        let (_, code) = c
            .connect_as(registration_id, &username, password, true)
            .await;
        (c, code)
    }
}

/// A device SAS token for the DPS (`sr` percent-encoded, no `skn`, as the Python SDK makes it).
pub fn dps_token(registration_id: &str, key_b64: &str) -> String {
    iot_auth::sas::generate_sas_token(
        &format!("{SCOPE}/registrations/{registration_id}"),
        &base64_decode(key_b64),
        None,
        hubtest::expiry(),
    )
}

fn publish(topic: &str, body: &Value) -> Packet {
    hubtest::publish(topic, 7, body.to_string().as_bytes())
}

/// The next response publish: (status, body).
async fn response(c: &mut Mqtt) -> (u16, Value) {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                let status = p.topic.strip_prefix("$dps/registrations/res/").unwrap();
                let status: u16 = status.split('/').next().unwrap().parse().unwrap();
                return (status, serde_json::from_slice(&p.payload).unwrap());
            }
            Some(Packet::PubAck(_) | Packet::SubAck(_)) => {}
            other => panic!("expected a response, got {other:?}"),
        }
    }
}

/// Subscribe, register, poll until done: the final operation status.
pub async fn register(c: &mut Mqtt, registration_id: &str, payload: Value) -> Value {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("$dps/registrations/res/#".into(), QoS::AtLeastOnce)],
    }))
    .await;
    let body = hub_wire::body(&hub_wire::dps::DeviceRegistration::new(
        registration_id,
        Some(payload),
    ));
    c.send(&publish(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        &body,
    ))
    .await;
    let (status, mut op) = response(c).await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(op["status"], "assigning");
    let op_id = op["operationId"].as_str().unwrap().to_owned();
    for rid in 2..200 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let topic = format!(
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op_id}"
        );
        c.send(&publish(&topic, &json!(" "))).await;
        let (status, body) = response(c).await;
        op = body;
        if status == 200 {
            return op;
        }
        assert_eq!(status, 202, "{op}");
    }
    panic!("still assigning: {op}")
}

/// A certificate of `profile` for `cn`, signed by `issuer` (self-signed without one).
pub fn issue(
    profile: Profile,
    cn: &str,
    issuer: Option<&(Certificate, PrivateKey)>,
    days: u32,
) -> (Certificate, PrivateKey) {
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let mut req = CertRequest::new(profile, cn, start_2020());
    req.days = days;
    let signer = issuer.map(|(cert, key)| Signer { cert, key });
    (pki::issue(&req, &key, signer).unwrap(), key)
}

/// A self-signed root CA.
pub fn ca(cn: &str) -> (Certificate, PrivateKey) {
    issue(Profile::RootCa, cn, None, 20_000)
}

/// A device client certificate for `cn`, valid `days` from 2020-01-01.
pub fn device_cert(
    cn: &str,
    issuer: &(Certificate, PrivateKey),
    days: u32,
) -> (Certificate, PrivateKey) {
    issue(Profile::DeviceClient, cn, Some(issuer), days)
}
