//! Seed 002: a device of an X.509 enrollment reaches its assigned hub with the certificate it
//! registered with, although only the provisioning service knows the CA (the hub has none).

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::dps as common;
use test_support::hub as hubtest;

use common::{TestDps, ca, device_cert, issue, register};
use hubtest::{ClientCert, Mqtt, publish};
use hyper::StatusCode;
use mqtt_codec::{ConnectReturnCode, Packet};
use pki::{Certificate, PrivateKey, Profile};
use serde_json::{Value, json};

/// Connects to hub1 over MQTT with `chain` as `id`; on success sends one telemetry message and
/// returns whether the hub acknowledged it.
async fn hub_session(t: &TestDps, id: &str, chain: ClientCert) -> (ConnectReturnCode, bool) {
    let mut h = Mqtt::tls(t.hub("hub1"), Some(chain)).await;
    let username = format!("hub1/{id}/?api-version=2021-04-12");
    let (_, code) = h.connect_as(id, &username, None, true).await;
    if code != ConnectReturnCode::Accepted {
        return (code, false);
    }
    let topic = format!("devices/{id}/messages/events/");
    h.send(&publish(&topic, 1, br#"{"temperature": 21.5}"#))
        .await;
    (code, h.recv().await == Some(Packet::PubAck(1)))
}

async fn register_with(t: &TestDps, id: &str, chain: ClientCert) -> Value {
    let (mut c, code) = t.connect(id, None, Some(chain)).await;
    assert_eq!(
        code,
        ConnectReturnCode::Accepted,
        "the DPS accepts the chain"
    );
    register(&mut c, id, Value::Null).await
}

fn chain(leaf: &(Certificate, PrivateKey), intermediate: &Certificate) -> ClientCert {
    ClientCert::new(&[&leaf.0, intermediate], &leaf.1)
}

#[tokio::test]
async fn group_device_connects_to_a_hub_without_its_ca_and_renews() {
    let t = TestDps::start(1).await;
    let root = ca("Fleet Root");
    let inter = issue(
        Profile::IntermediateCa { path_len: Some(0) },
        "Fleet Intermediate",
        Some(&root),
        20_000,
    );
    let (status, g) = t
        .put("/enrollmentGroups/fleet", json!({"enrollmentGroupId": "fleet", "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": inter.0.to_pem()}}}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let hub_cas = t.hub("hub1").hub.cas.list().unwrap();
    assert_eq!(hub_cas.len(), 0, "the hub has no CA");

    let dev = device_cert("edge-9", &inter, 365 * 30);
    let op = register_with(&t, "edge-9", chain(&dev, &inter.0)).await;
    assert_eq!(op["status"], "assigned", "{op}");
    assert_eq!(op["registrationState"]["assignedHub"], "hub1");
    let device = t.hub_device("hub1", "edge-9").await.unwrap();
    assert_eq!(device["authentication"]["type"], "selfSigned", "{device}");
    assert_eq!(
        device["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        dev.0.thumbprint_sha1()
    );
    let (code, acked) = hub_session(&t, "edge-9", chain(&dev, &inter.0)).await;
    assert_eq!(
        code,
        ConnectReturnCode::Accepted,
        "the hub accepts the device"
    );
    assert!(acked, "the hub acknowledges its telemetry");

    // Renewal: a new leaf registers again and replaces the thumbprint; the old leaf is refused.
    let renewed = device_cert("edge-9", &inter, 365 * 31);
    let op = register_with(&t, "edge-9", chain(&renewed, &inter.0)).await;
    assert_eq!(op["status"], "assigned", "{op}");
    let device = t.hub_device("hub1", "edge-9").await.unwrap();
    assert_eq!(
        device["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        renewed.0.thumbprint_sha1()
    );
    let (code, acked) = hub_session(&t, "edge-9", chain(&renewed, &inter.0)).await;
    assert_eq!(
        code,
        ConnectReturnCode::Accepted,
        "the renewed leaf is accepted"
    );
    assert!(acked);
    let (code, _) = hub_session(&t, "edge-9", chain(&dev, &inter.0)).await;
    assert_ne!(
        code,
        ConnectReturnCode::Accepted,
        "the replaced leaf is refused"
    );

    // A device of another enrollment with the same id is not taken over by the group.
    let stranger = device_cert("edge-9", &ca("Other Root"), 365 * 30);
    let (_, code) = t
        .connect(
            "edge-9",
            None,
            Some(ClientCert::new(&[&stranger.0], &stranger.1)),
        )
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

/// A device of a group anchored at the root that sends its certificate without the intermediate
/// is told its chain is incomplete (and which issuer is missing), not that its CA is unknown.
#[tokio::test]
async fn a_leaf_without_its_intermediate_is_an_incomplete_chain() {
    let t = TestDps::start(1).await;
    let root = ca("Anchor Root");
    let inter = issue(
        Profile::IntermediateCa { path_len: Some(0) },
        "Missing Intermediate",
        Some(&root),
        20_000,
    );
    let (status, g) = t
        .put("/enrollmentGroups/rooted", json!({"enrollmentGroupId": "rooted", "attestation": {"type": "x509", "x509": {"signingCertificates": {"primary": {"certificate": root.0.to_pem()}}}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{g}");
    let dev = device_cert("leaf-only", &inter, 365 * 30);
    let (_, code) = t
        .connect("leaf-only", None, Some(ClientCert::new(&[&dev.0], &dev.1)))
        .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    let metrics = dps::render_metrics(&t.dps);
    assert!(metrics.contains("reason=\"incomplete_chain\""), "{metrics}");
    assert!(!metrics.contains("reason=\"unknown_ca\""), "{metrics}");
    // With the intermediate the same certificate is accepted.
    let (_, code) = t
        .connect("leaf-only", None, Some(chain(&dev, &inter.0)))
        .await;
    assert_eq!(code, ConnectReturnCode::Accepted);
}
