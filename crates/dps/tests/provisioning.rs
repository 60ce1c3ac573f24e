//! Provisioning end to end over real TLS: enrollments through the service API, devices registering
//! over MQTT and HTTPS with SAS and X.509, devices created at linked hubs, refusals that leave
//! nothing behind, and reprovisioning between two hubs.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::dps as common;
use test_support::hub as hubtest;

use common::{TestDps, ca, device_cert, dps_token, register};
use hubtest::{ClientCert, KEY, start_2020};
use hyper::{Method, StatusCode};
use mqtt_codec::ConnectReturnCode;
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};
use serde_json::{Value, json};

async fn hub_device(t: &TestDps, hub: &str, id: &str) -> Option<Value> {
    t.hub_device(hub, id).await
}

async fn hub_twin(t: &TestDps, hub: &str, id: &str) -> Value {
    t.hub(hub)
        .client()
        .send(Method::GET, &format!("/twins/{id}"), None, &[])
        .await
        .unwrap()
        .json()
}

#[tokio::test]
async fn symmetric_key_group_registers_and_the_device_reaches_its_hub() {
    let t = TestDps::start(1).await;
    let (status, g) = t
        .put(
            "/enrollmentGroups/grp1",
            json!({
                "enrollmentGroupId": "grp1",
                "attestation": {"type": "symmetricKey"},
                "capabilities": {"iotEdge": true},
                "initialTwin": {"tags": {"site": "lab"}, "properties": {"desired": {"rate": 5}}}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let group_key = g["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(g["etag"].is_string() && g["reprovisionPolicy"]["updateHubAssignment"] == true);
    let device_key = iot_auth::derive_device_key(&group_key, "sensor-1").unwrap();
    let (mut c, code) = t
        .connect("sensor-1", Some(dps_token("sensor-1", &device_key)), None)
        .await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    let op = register(&mut c, "sensor-1", json!({"model": "x1"})).await;
    assert_eq!(op["status"], "assigned", "{op}");
    let state = &op["registrationState"];
    assert_eq!(state["assignedHub"], "hub1");
    assert_eq!(state["deviceId"], "sensor-1");
    assert_eq!(state["substatus"], "initialAssignment");
    assert_eq!(state["payload"], json!({"model": "x1"}));
    assert_eq!(state["symmetricKey"]["enrollmentGroupId"], "grp1");
    let device = hub_device(&t, "hub1", "sensor-1").await.unwrap();
    assert_eq!(device["capabilities"]["iotEdge"], true);
    assert_eq!(
        device["authentication"]["symmetricKey"]["primaryKey"],
        device_key.as_str()
    );
    let twin = hub_twin(&t, "hub1", "sensor-1").await;
    assert_eq!(twin["tags"]["site"], "lab");
    assert_eq!(twin["properties"]["desired"]["rate"], 5);
    // The device connects to the assigned hub with the same derived key.
    let mut h = hubtest::Mqtt::tls(t.hub("hub1"), None).await;
    let token = iot_auth::sas::generate_sas_token(
        "localhost/devices/sensor-1",
        &hubtest::base64_decode(&device_key),
        None,
        hubtest::expiry(),
    );
    // hub1's hostname is hub1: sign for it.
    let token_hub1 = iot_auth::sas::generate_sas_token(
        "hub1/devices/sensor-1",
        &hubtest::base64_decode(&device_key),
        None,
        hubtest::expiry(),
    );
    let (_, refused) = h.connect("sensor-1", Some(token), true).await;
    assert_ne!(
        refused,
        ConnectReturnCode::Accepted,
        "a token for another host is refused"
    );
    let mut h = hubtest::Mqtt::tls(t.hub("hub1"), None).await;
    let username = "hub1/sensor-1/?api-version=2021-04-12";
    let (_, code) = h
        .connect_as("sensor-1", username, Some(token_hub1), true)
        .await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    // The registration record is visible to the service, and by group.
    let (status, r) = t.get("/registrations/sensor-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["assignedHub"], "hub1");
    let q = t
        .service()
        .send(
            Method::POST,
            "/registrations/grp1/query",
            Some(&json!({})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(q.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn refusals_leave_nothing_at_the_hub() {
    let t = TestDps::start(1).await;
    let (_, g) = t
        .put(
            "/enrollmentGroups/grp1",
            json!({"enrollmentGroupId": "grp1", "attestation": {"type": "symmetricKey"}}),
        )
        .await;
    let group_key = g["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    // A wrong key (the group key itself, not the derived one).
    let (_, code) = t
        .connect("dev-a", Some(dps_token("dev-a", &group_key)), None)
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    // A token for another registration id.
    let key_b = iot_auth::derive_device_key(&group_key, "dev-b").unwrap();
    let (_, code) = t
        .connect("dev-a", Some(dps_token("dev-b", &key_b)), None)
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    // An unknown ID scope.
    let mut c = hubtest::Mqtt::tls_to(t.mqtt, &t.root, None).await;
    let (_, code) = c
        .connect_as(
            "dev-b",
            "0ne99999999/registrations/dev-b/api-version=2019-03-31",
            Some(dps_token("dev-b", &key_b)),
            true,
        )
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    // A disabled individual enrollment overrides the group.
    let (status, _) = t
        .put("/enrollments/dev-b", json!({"registrationId": "dev-b", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}, "provisioningStatus": "disabled"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, code) = t
        .connect("dev-b", Some(dps_token("dev-b", KEY)), None)
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    for id in ["dev-a", "dev-b"] {
        assert!(
            hub_device(&t, "hub1", id).await.is_none(),
            "{id} was not created"
        );
        assert_eq!(
            t.get(&format!("/registrations/{id}")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let metrics = dps::render_metrics(&t.dps);
    assert!(
        metrics.contains("reason=\"bad_signature\"")
            || metrics.contains("reason=\"no_enrollment\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("reason=\"enrollment_disabled\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn x509_group_needs_a_verified_ca_and_the_cn_as_registration_id() {
    let t = TestDps::start(1).await;
    let root = ca("Devices Root");
    let svc = t.service();
    let (status, _) = t
        .put(
            "/certificates/devroot",
            json!({"properties": {"certificate": root.0.to_pem()}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, g) = t
        .put("/enrollmentGroups/x509grp", json!({"enrollmentGroupId": "x509grp", "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "devroot"}}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let dev = device_cert("edge-7", &root, 365 * 30);
    let chain = || ClientCert::new(&[&dev.0, &root.0], &dev.1);
    // Uploaded but not verified: refused, nothing at the hub.
    let (_, code) = t.connect("edge-7", None, Some(chain())).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    assert!(hub_device(&t, "hub1", "edge-7").await.is_none());
    // Proof of possession.
    let r = svc
        .send(
            Method::POST,
            "/certificates/devroot/generateVerificationCode",
            None,
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    let code_cn = r.json()["properties"]["verificationCode"]
        .as_str()
        .unwrap()
        .to_owned();
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let mut proof_req = CertRequest::new(Profile::Verification, code_cn, start_2020());
    proof_req.days = 20_000;
    let proof = pki::issue(
        &proof_req,
        &key,
        Some(Signer {
            cert: &root.0,
            key: &root.1,
        }),
    )
    .unwrap();
    let r = svc
        .send(
            Method::POST,
            "/certificates/devroot/verify",
            Some(&json!({"certificate": proof.to_pem()})),
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    // CN ≠ registration id: refused.
    let (_, code) = t.connect("edge-8", None, Some(chain())).await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    // Expired device certificate: refused.
    let old = device_cert("edge-old", &root, 30);
    let (_, code) = t
        .connect(
            "edge-old",
            None,
            Some(ClientCert::new(&[&old.0, &root.0], &old.1)),
        )
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let (mut c, code) = t.connect("edge-7", None, Some(chain())).await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    let op = register(&mut c, "edge-7", Value::Null).await;
    assert_eq!(op["status"], "assigned", "{op}");
    assert_eq!(
        op["registrationState"]["x509"]["enrollmentGroupId"],
        "x509grp"
    );
    assert_eq!(
        op["registrationState"]["x509"]["certificateInfo"]["sha1Thumbprint"],
        dev.0.thumbprint_sha1()
    );
    let device = hub_device(&t, "hub1", "edge-7").await.unwrap();
    // The hub knows the leaf's thumbprint (as Azure DPS does), not the DPS's CA.
    assert_eq!(device["authentication"]["type"], "selfSigned");
}

#[tokio::test]
async fn individual_x509_over_https_gets_a_thumbprint_identity() {
    let t = TestDps::start(1).await;
    let root = ca("Some Root");
    let dev = device_cert("cam-1", &root, 365 * 30);
    let (status, e) = t
        .put("/enrollments/cam-1", json!({"registrationId": "cam-1", "deviceId": "camera-one", "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": dev.0.to_pem()}}}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(
        e["attestation"]["x509"]["clientCertificates"]["primary"]["info"]["sha1Thumbprint"],
        dev.0.thumbprint_sha1()
    );
    // HTTPS with the client certificate, as the Node HTTP transport does.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            Certificate::from_pem(&std::fs::read_to_string(&t.root).unwrap())
                .unwrap()
                .to_rustls(),
        )
        .unwrap();
    let cc = ClientCert::new(&[&dev.0], &dev.1);
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(cc.chain, cc.key)
        .unwrap();
    let client = ferrohub_runtime::client::ServiceClient::new(
        t.https.to_string(),
        "localhost".into(),
        "none".into(),
        vec![0; 16],
        std::sync::Arc::new(tls),
    )
    .with_api_version("2019-03-31");
    let path = format!("/{}/registrations/cam-1/register", common::SCOPE);
    // ServiceClient signs every request; a registration with a policy token is refused...
    let r = client
        .send(
            Method::PUT,
            &path,
            Some(&json!({"registrationId": "cam-1"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a token that is not the device's is refused"
    );
    // ...so use a raw request without Authorization.
    let op = https_register_with_cert(&t, &dev.0, &dev.1, "cam-1").await;
    assert_eq!(op["status"], "assigned", "{op}");
    assert_eq!(op["registrationState"]["deviceId"], "camera-one");
    let device = hub_device(&t, "hub1", "camera-one").await.unwrap();
    assert_eq!(device["authentication"]["type"], "selfSigned");
    assert_eq!(
        device["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        dev.0.thumbprint_sha1()
    );
    // The enrollment now shows its registration state.
    let (_, e) = t.get("/enrollments/cam-1").await;
    assert_eq!(e["registrationState"]["assignedHub"], "hub1");
}

/// PUT register then GET the operation over HTTPS/1.1 with a client certificate, no token.
async fn https_register_with_cert(
    t: &TestDps,
    cert: &Certificate,
    key: &PrivateKey,
    id: &str,
) -> Value {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            Certificate::from_pem(&std::fs::read_to_string(&t.root).unwrap())
                .unwrap()
                .to_rustls(),
        )
        .unwrap();
    let cc = ClientCert::new(&[cert], key);
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(cc.chain, cc.key)
            .unwrap(),
    );
    let request = |method: &str, path: String, body: &str| {
        format!(
            "{method} {path}?api-version=2019-03-31 HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let send = |req: String| {
        let tls = tls.clone();
        let addr = t.https;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut s = tokio_rustls::TlsConnector::from(tls)
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            let text = String::from_utf8_lossy(&out).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            (
                status,
                serde_json::from_str::<Value>(body).unwrap_or(Value::Null),
            )
        }
    };
    let body = json!({"registrationId": id}).to_string();
    let (status, op) = send(request(
        "PUT",
        format!("/{}/registrations/{id}/register", common::SCOPE),
        &body,
    ))
    .await;
    assert_eq!(status, 202, "{op}");
    let op_id = op["operationId"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (status, op) = send(request(
            "GET",
            format!("/{}/registrations/{id}/operations/{op_id}", common::SCOPE),
            "",
        ))
        .await;
        if status == 200 {
            return op;
        }
        assert_eq!(status, 202, "{op}");
    }
    panic!("still assigning")
}

/// Moving a device between hubs by changing its enrollment: with migration the twin follows,
/// with reset the new hub gets the initial twin; the old hub forgets the device either way.
#[tokio::test]
async fn reprovisioning_moves_the_device_with_or_without_its_data() {
    let t = TestDps::start(2).await;
    for (id, migrate, expected_sub, expected_tag) in [
        ("mover-m", true, "deviceDataMigrated", "changed"),
        ("mover-r", false, "deviceDataReset", "initial"),
    ] {
        let enrollment = |hub: &str| {
            json!({
                "registrationId": id,
                "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}},
                "allocationPolicy": "static",
                "iotHubHostName": hub,
                "initialTwin": {"tags": {"state": "initial"}},
                "reprovisionPolicy": {"updateHubAssignment": true, "migrateDeviceData": migrate}
            })
        };
        assert_eq!(
            t.put(&format!("/enrollments/{id}"), enrollment("hub1"))
                .await
                .0,
            StatusCode::OK
        );
        let (mut c, _) = t.connect(id, Some(dps_token(id, KEY)), None).await;
        let op = register(&mut c, id, Value::Null).await;
        assert_eq!(op["registrationState"]["assignedHub"], "hub1", "{op}");
        // The application changes the twin at hub1.
        let r = t
            .hub("hub1")
            .client()
            .send(
                Method::PATCH,
                &format!("/twins/{id}"),
                Some(&json!({"tags": {"state": "changed"}})),
                &[("if-match", "*")],
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            t.put(&format!("/enrollments/{id}"), enrollment("hub2"))
                .await
                .0,
            StatusCode::OK
        );
        let (mut c, _) = t.connect(id, Some(dps_token(id, KEY)), None).await;
        let op = register(&mut c, id, Value::Null).await;
        assert_eq!(op["registrationState"]["assignedHub"], "hub2", "{op}");
        assert_eq!(op["registrationState"]["substatus"], expected_sub);
        assert!(hub_device(&t, "hub1", id).await.is_none(), "{id} left hub1");
        assert!(hub_device(&t, "hub2", id).await.is_some());
        assert_eq!(
            hub_twin(&t, "hub2", id).await["tags"]["state"],
            expected_tag,
            "{id}"
        );
    }
}

#[tokio::test]
async fn service_api_validates_and_pages() {
    let t = TestDps::start(1).await;
    for (body, why) in [
        (
            json!({"registrationId": "a", "attestation": {"type": "tpm", "tpm": {"endorsementKey": "x"}}}),
            "tpm",
        ),
        (
            json!({"registrationId": "a", "attestation": {"type": "x509", "x509": {}}}),
            "no certs",
        ),
        (
            json!({"registrationId": "a", "attestation": {"type": "symmetricKey"}, "iotHubs": ["elsewhere"]}),
            "unlinked hub",
        ),
        (
            json!({"registrationId": "a", "attestation": {"type": "symmetricKey"}, "allocationPolicy": "custom"}),
            "custom",
        ),
        (
            json!({"registrationId": "b", "attestation": {"type": "symmetricKey"}}),
            "id mismatch",
        ),
    ] {
        assert_eq!(
            t.put("/enrollments/a", body).await.0,
            StatusCode::BAD_REQUEST,
            "{why}"
        );
    }
    for i in 0..5 {
        let id = format!("e{i}");
        assert_eq!(
            t.put(
                &format!("/enrollments/{id}"),
                json!({"registrationId": id, "attestation": {"type": "symmetricKey"}})
            )
            .await
            .0,
            StatusCode::OK
        );
    }
    let svc = t.service();
    let first = svc
        .send(
            Method::POST,
            "/enrollments/query",
            Some(&json!({"query": "*"})),
            &[("x-ms-max-item-count", "3")],
        )
        .await
        .unwrap();
    assert_eq!(first.json().as_array().unwrap().len(), 3);
    let cont = first
        .headers
        .get("x-ms-continuation")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let second = svc
        .send(
            Method::POST,
            "/enrollments/query",
            Some(&json!({"query": "*"})),
            &[("x-ms-max-item-count", "3"), ("x-ms-continuation", &cont)],
        )
        .await
        .unwrap();
    assert_eq!(second.json().as_array().unwrap().len(), 2);
    assert!(
        second.headers.get("x-ms-continuation").is_none(),
        "no continuation on the last page"
    );
    // Stale etag → 412; the stored enrollment is unchanged.
    let r = svc.send(Method::PUT, "/enrollments/e1", Some(&json!({"registrationId": "e1", "attestation": {"type": "symmetricKey"}, "provisioningStatus": "disabled"})), &[("if-match", "\"stale\"")]).await.unwrap();
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        t.get("/enrollments/e1").await.1["provisioningStatus"],
        "enabled"
    );
    // A wrong policy key is refused.
    let bad = ferrohub_runtime::client::ServiceClient::new(
        t.https.to_string(),
        "localhost".into(),
        "provisioningserviceowner".into(),
        vec![1; 32],
        ferrohub_runtime::tls::client_config(&t.root).unwrap(),
    )
    .with_api_version("2021-10-01")
    .with_token_time(u64::try_from(hubtest::now().unix_timestamp()).unwrap());
    assert_eq!(
        bad.send(Method::GET, "/enrollments/e1", None, &[])
            .await
            .unwrap()
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        svc.send(Method::DELETE, "/enrollments/e1", None, &[])
            .await
            .unwrap()
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(t.get("/enrollments/e1").await.0, StatusCode::NOT_FOUND);
}
