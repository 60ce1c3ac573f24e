//! identityd end to end with real keyd and certd on Unix sockets and real hubs and DPS on loopback:
//! module identities created at the hub with derived keys, the caller's identity by uid, SAS
//! tokens signed in keyd that the hub accepts, refusals, reconciliation, offline start, and DPS
//! provisioning with reprovisioning to another hub.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::dps as dpstest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use hyper::{Method, Request, StatusCode};
use identity::client::UdsClient;
use identity::config::daemons::{
    CertdConfig, DpsAttestation, IdentitydConfig, KeydConfig, ManualAuth, PreloadedCert, Principal,
    Provisioning,
};
use identity::identityd::{Identityd, Options, Trigger};
use identity::uds::Caller;
use mqtt_codec::ConnectReturnCode;
use serde_json::{Value, json};
use test_support::hub::{self as hubtest, KEY, Mqtt, TestHub};
use tower::ServiceExt as _;

struct Stack {
    dir: PathBuf,
    keyd: UdsClient,
    store: Arc<dyn identity::keyd::KeyStore>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// keyd and certd on sockets under `dir`, with the device key and a trust bundle preloaded.
async fn daemons(dir: &Path, roots: &[&Path]) -> Stack {
    daemons_with(dir, roots, None).await
}

/// Like [`daemons`]; with `x509 = Some((cert_pem, key_pem))` the device identity is that
/// certificate and key pair instead of a SAS key.
async fn daemons_with(dir: &Path, roots: &[&Path], x509: Option<(String, String)>) -> Stack {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("device-id"), hubtest::base64_decode(KEY)).unwrap();
    let mut preloaded_certs = BTreeMap::new();
    if let Some((cert, key)) = &x509 {
        std::fs::write(secrets.join("device-id"), key).unwrap();
        std::fs::write(secrets.join("device-id.cert.pem"), cert).unwrap();
        let uri = format!("file://{}", secrets.join("device-id.cert.pem").display());
        preloaded_certs.insert("device-id".to_owned(), PreloadedCert::Uri(uri));
    }
    let bundle: String = roots
        .iter()
        .map(|r| std::fs::read_to_string(r).unwrap())
        .collect();
    std::fs::write(dir.join("bundle.pem"), bundle).unwrap();
    let keyd = KeydConfig {
        homedir: dir.join("keyd"),
        socket: dir.join("run/keyd.sock"),
        max_requests: 10,
        preloaded_keys: BTreeMap::from([(
            "device-id".into(),
            format!("file://{}", secrets.join("device-id").display()),
        )]),
        principals: vec![],
    };
    let certd = CertdConfig {
        homedir: dir.join("certd"),
        socket: dir.join("run/certd.sock"),
        max_requests: 10,
        keyd_homedir: dir.join("keyd"),
        cert_issuance: Default::default(),
        preloaded_certs: {
            preloaded_certs.insert(
                "trust-bundle".into(),
                PreloadedCert::Uri(format!("file://{}", dir.join("bundle.pem").display())),
            );
            preloaded_certs
        },
        principals: vec![],
    };
    let store = identity::keyd::Keyd::open(&keyd).unwrap().store();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let keyd_socket = keyd.socket.clone();
    tokio::spawn(identity::keyd::serve(keyd, rx.clone()));
    tokio::spawn(identity::certd::serve(certd, store.clone(), rx));
    for _ in 0..100 {
        if dir.join("run/certd.sock").exists() && keyd_socket.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Stack {
        dir: dir.to_owned(),
        keyd: UdsClient::new(keyd_socket),
        store,
        stop,
    }
}

fn principal(uid: u32, name: &str) -> Principal {
    Principal {
        uid,
        name: name.into(),
        idtype: Some(vec!["module".into()]),
    }
}

fn identityd_config(
    s: &Stack,
    provisioning: Provisioning,
    principals: Vec<Principal>,
) -> IdentitydConfig {
    IdentitydConfig {
        hostname: "edge-box".into(),
        homedir: s.dir.join("identityd"),
        socket: s.dir.join("run/identityd.sock"),
        max_requests: 10,
        keyd_socket: s.dir.join("run/keyd.sock"),
        certd_socket: s.dir.join("run/certd.sock"),
        prefer_module_identity_cache: false,
        trust_bundle: Some("trust-bundle".into()),
        auto_reprovisioning_mode: "Dynamic".into(),
        provisioning,
        principals,
    }
}

fn options(s: &Stack, hubs: &[&TestHub]) -> Options {
    Options {
        store: Some(s.store.clone()),
        hub_addresses: hubs
            .iter()
            .map(|h| (h.hub.config.hostname.clone(), h.https.to_string()))
            .collect(),
        clock: Some(Arc::new(ferrohub_runtime::time::FixedClock(
            std::sync::Mutex::new(hubtest::now()),
        ))),
        config_paths: None,
    }
}

/// A request to identityd as `uid`.
async fn call(
    idd: &Arc<Identityd>,
    uid: u32,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .unwrap();
    let app =
        identity::identityd::router(idd.clone()).layer(axum::Extension(Caller { uid, pid: None }));
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Signs a SAS token through keyd with `handle` for `resource`, as a module process would.
async fn token(keyd: &UdsClient, handle: &str, resource: &str) -> String {
    let expiry = hubtest::expiry();
    let sr = iot_auth::percent_encode(resource);
    let message = base64_encode(format!("{sr}\n{expiry}").as_bytes());
    let body = json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": message}});
    let v = keyd
        .call(Method::POST, "/sign?api-version=2020-09-01", Some(&body))
        .await
        .unwrap();
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}",
        iot_auth::percent_encode(v["signature"].as_str().unwrap())
    )
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

async fn mqtt_connect(hub: &TestHub, client_id: &str, token: String) -> ConnectReturnCode {
    let mut c = Mqtt::tls(hub, None).await;
    let username = format!(
        "{}/{client_id}/?api-version=2021-04-12",
        hub.hub.config.hostname
    );
    c.connect_as(client_id, &username, Some(token), true)
        .await
        .1
}

async fn hub_modules(hub: &TestHub, device: &str) -> Vec<String> {
    let r = hub
        .client()
        .send(
            Method::GET,
            &format!("/devices/{device}/modules"),
            None,
            &[],
        )
        .await
        .unwrap();
    let mut names: Vec<String> = r
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["moduleId"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const API: &str = "api-version=2020-09-01";

#[tokio::test]
async fn manual_sas_device_modules_callers_and_offline_start() {
    let hub = TestHub::start_with(|c| c.hostname = "hub1".into()).await;
    let r = hub.client().send(Method::PUT, "/devices/dev1", Some(&json!({"deviceId": "dev1", "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}})), &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let s = daemons(dir.path(), &[&hub.root]).await;
    let provisioning = Provisioning::Manual {
        iothub_hostname: "hub1".into(),
        device_id: "dev1".into(),
        local_gateway_hostname: None,
        authentication: ManualAuth::Sas {
            device_id_pk: "device-id".into(),
        },
    };
    let config = identityd_config(
        &s,
        provisioning,
        vec![principal(1001, "mymodule"), principal(1002, "othermod")],
    );
    let idd = Identityd::new(config.clone(), options(&s, &[&hub]));
    idd.reprovision(Trigger::Startup).await.unwrap();
    assert_eq!(hub_modules(&hub, "dev1").await, ["mymodule", "othermod"]);

    // The module process (uid 1001) reads its identity and signs a token in keyd; the hub accepts it.
    let (status, id) = call(
        &idd,
        1001,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(id["type"], "aziot");
    let spec = &id["spec"];
    assert_eq!(
        (
            spec["hubName"].as_str(),
            spec["deviceId"].as_str(),
            spec["moduleId"].as_str()
        ),
        (Some("hub1"), Some("dev1"), Some("mymodule"))
    );
    assert_eq!(spec["auth"]["type"], "sas");
    let handle = spec["auth"]["keyHandle"].as_str().unwrap();
    let t = token(&s.keyd, handle, "hub1/devices/dev1/modules/mymodule").await;
    assert_eq!(
        mqtt_connect(&hub, "dev1/mymodule", t).await,
        ConnectReturnCode::Accepted
    );
    // keyd counts what it answered (Prometheus text at /metrics, no api-version needed).
    let (status, text) = s
        .keyd
        .send_raw(Method::GET, "/metrics", None)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("ferrohub_keyd_requests_total"), "{text}");
    assert!(!text.contains("ferrohub_keyd_requests_total 0\n"), "{text}");
    // A tampered handle is refused by keyd.
    let tampered = handle.replacen('A', "B", 1);
    let body = json!({"keyHandle": tampered, "algorithm": "HMAC-SHA256", "parameters": {"message": "aGk="}});
    assert_eq!(
        s.keyd
            .send(Method::POST, "/sign?api-version=2020-09-01", Some(&body))
            .await
            .unwrap()
            .0,
        StatusCode::BAD_REQUEST
    );

    // Refusals: another module's identity, an uid without a principal, module creation by a module.
    assert_eq!(
        call(
            &idd,
            1001,
            Method::GET,
            &format!("/identities/modules/othermod?{API}&type=aziot"),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &idd,
            4242,
            Method::GET,
            &format!("/identities/identity?{API}"),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(
            &idd,
            1001,
            Method::POST,
            &format!("/identities/modules?{API}"),
            Some(json!({"type": "aziot", "moduleId": "x"}))
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&idd, 0, Method::GET, "/identities/identity", None)
            .await
            .0,
        StatusCode::BAD_REQUEST,
        "api-version is required"
    );

    // root gets the device identity; its key handle signs a device token the hub accepts.
    let (status, dev) = call(
        &idd,
        0,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dev}");
    assert!(dev["spec"].get("moduleId").is_none());
    let t = token(
        &s.keyd,
        dev["spec"]["auth"]["keyHandle"].as_str().unwrap(),
        "hub1/devices/dev1",
    )
    .await;
    assert_eq!(
        mqtt_connect(&hub, "dev1", t).await,
        ConnectReturnCode::Accepted
    );
    let (status, bundle) = call(
        &idd,
        4242,
        Method::GET,
        &format!("/trust-bundle?{API}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        bundle["certificate"],
        std::fs::read_to_string(&hub.root).unwrap()
    );

    // A principal removed from the config: its module goes away at the hub; the other keeps its keys.
    let gen_before = call(
        &idd,
        1001,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await
    .1["spec"]["genId"]
        .clone();
    idd.reload(identityd_config(
        &s,
        config.provisioning.clone(),
        vec![principal(1001, "mymodule")],
    ))
    .await
    .unwrap();
    assert_eq!(hub_modules(&hub, "dev1").await, ["mymodule"]);
    assert_eq!(
        call(
            &idd,
            1001,
            Method::GET,
            &format!("/identities/identity?{API}"),
            None
        )
        .await
        .1["spec"]["genId"],
        gen_before
    );

    // Offline: the hub goes away; a restarted identityd still serves the module identity.
    drop(hub.stop().await);
    let idd2 = Identityd::new(
        identityd_config(
            &s,
            config.provisioning.clone(),
            vec![principal(1001, "mymodule")],
        ),
        options(&s, &[]),
    );
    idd2.reprovision(Trigger::Startup).await.unwrap();
    let (status, id) = call(
        &idd2,
        1001,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(id["spec"]["genId"], gen_before);
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn dps_symmetric_key_provisioning_and_reprovisioning_to_another_hub() {
    let t = dpstest::TestDps::start(2).await;
    let enroll = |hub: &str| {
        json!({
            "registrationId": "edge-dps",
            "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}},
            "allocationPolicy": "static", "iotHubHostName": hub, "capabilities": {"iotEdge": true},
        })
    };
    assert_eq!(
        t.put("/enrollments/edge-dps", enroll("hub1")).await.0,
        StatusCode::OK
    );
    let dir = tempfile::tempdir().unwrap();
    let roots: Vec<&Path> = vec![&t.root, &t.hubs[0].root, &t.hubs[1].root];
    let s = daemons(dir.path(), &roots).await;
    let provisioning = Provisioning::Dps {
        global_endpoint: format!("https://localhost:{}", t.https.port()),
        scope_id: dpstest::SCOPE.into(),
        payload: None,
        attestation: DpsAttestation::SymmetricKey {
            registration_id: "edge-dps".into(),
            symmetric_key: "device-id".into(),
        },
    };
    let hubs: Vec<&TestHub> = t.hubs.iter().collect();
    let idd = Identityd::new(
        identityd_config(&s, provisioning, vec![principal(1001, "agent")]),
        options(&s, &hubs),
    );
    let d = idd.reprovision(Trigger::Startup).await.unwrap();
    assert_eq!(
        (d.hub_name.as_str(), d.device_id.as_str()),
        ("hub1", "edge-dps")
    );
    // An edge device: the hub's system modules stay, next to the one for the principal.
    assert_eq!(
        hub_modules(t.hub("hub1"), "edge-dps").await,
        ["$edgeAgent", "$edgeHub", "agent"]
    );
    let dev = t
        .hub("hub1")
        .client()
        .send(Method::GET, "/devices/edge-dps", None, &[])
        .await
        .unwrap()
        .json();
    assert_eq!(dev["capabilities"]["iotEdge"], true);
    let backup = std::fs::read_to_string(dir.path().join("identityd/device_info")).unwrap();
    assert!(backup.contains("hub1"), "{backup}");
    // The enrollment moves to hub2; a reprovision request follows it.
    assert_eq!(
        t.put("/enrollments/edge-dps", enroll("hub2")).await.0,
        StatusCode::OK
    );
    let (status, body) = call(
        &idd,
        0,
        Method::POST,
        &format!("/identities/device/reprovision?{API}"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(idd.device().unwrap().hub_name, "hub2");
    assert_eq!(
        hub_modules(t.hub("hub2"), "edge-dps").await,
        ["$edgeAgent", "$edgeHub", "agent"]
    );
    let (_, id) = call(
        &idd,
        1001,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await;
    assert_eq!(id["spec"]["hubName"], "hub2");
    let (status, prov) = call(
        &idd,
        4242,
        Method::GET,
        "/identities/provisioning?api-version=2021-12-01",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (prov["source"].as_str(), prov["auth"].as_str()),
        (Some("dps"), Some("symmetric_key"))
    );
    // Restart with DPS and the hubs unreachable: the device backup and the module cache answer.
    let offline = Provisioning::Dps {
        global_endpoint: "https://localhost:1".into(),
        scope_id: dpstest::SCOPE.into(),
        payload: None,
        attestation: DpsAttestation::SymmetricKey {
            registration_id: "edge-dps".into(),
            symmetric_key: "device-id".into(),
        },
    };
    let mut unreachable = options(&s, &[]);
    unreachable.hub_addresses = BTreeMap::from([("hub2".into(), "127.0.0.1:1".into())]);
    let idd2 = Identityd::new(
        identityd_config(&s, offline, vec![principal(1001, "agent")]),
        unreachable,
    );
    let d = idd2.reprovision(Trigger::Startup).await.unwrap();
    assert_eq!(d.hub_name, "hub2", "from the backup, without DPS");
    let (status, id) = call(
        &idd2,
        1001,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(id["spec"]["moduleId"], "agent");
    let _ = s.stop.send(true);
}

#[tokio::test]
async fn manual_x509_device_manages_its_modules_with_its_certificate() {
    let hub = TestHub::start_with(|c| c.hostname = "hub1".into()).await;
    let key = pki::PrivateKey::generate(pki::KeyAlgorithm::P256).unwrap();
    let start = hubtest::now() - time::Duration::days(1);
    let mut req = pki::CertRequest::new(pki::Profile::SelfSignedDevice, "x509-box", start);
    req.days = 30;
    let cert = pki::issue(&req, &key, None).unwrap();
    let body = json!({"deviceId": "x509-box", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": cert.thumbprint_sha1()}}});
    let r = hub
        .client()
        .send(Method::PUT, "/devices/x509-box", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let s = daemons_with(
        dir.path(),
        &[&hub.root],
        Some((cert.to_pem(), key.to_pem())),
    )
    .await;
    let provisioning = Provisioning::Manual {
        iothub_hostname: "hub1".into(),
        device_id: "x509-box".into(),
        local_gateway_hostname: None,
        authentication: ManualAuth::X509 {
            identity_cert: "device-id".into(),
            identity_pk: "device-id".into(),
        },
    };
    let idd = Identityd::new(
        identityd_config(&s, provisioning, vec![principal(1001, "sensor")]),
        options(&s, &[&hub]),
    );
    idd.reprovision(Trigger::Startup).await.unwrap();
    assert_eq!(hub_modules(&hub, "x509-box").await, ["sensor"]);
    let (status, dev) = call(
        &idd,
        0,
        Method::POST,
        &format!("/identities/device?{API}"),
        Some(json!({"type": "aziot"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{dev}");
    assert_eq!(
        (
            dev["spec"]["auth"]["type"].as_str(),
            dev["spec"]["auth"]["certId"].as_str()
        ),
        (Some("x509"), Some("device-id"))
    );
    // The module signs with its derived key even though the device itself uses a certificate.
    let (_, id) = call(
        &idd,
        1001,
        Method::GET,
        &format!("/identities/identity?{API}"),
        None,
    )
    .await;
    let t = token(
        &s.keyd,
        id["spec"]["auth"]["keyHandle"].as_str().unwrap(),
        "hub1/devices/x509-box/modules/sensor",
    )
    .await;
    assert_eq!(
        mqtt_connect(&hub, "x509-box/sensor", t).await,
        ConnectReturnCode::Accepted
    );
    let _ = s.stop.send(true);
}
