//! Who the gateway lets in, and who it drops: a child disabled at the hub, or whose parent link
//! is removed, loses its live session at the next scope sync and cannot come back; a CA-signed
//! child whose certificate comes from a CA the hub has not verified is refused; the others keep
//! being served.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

#[path = "../../hub/tests/common/mod.rs"]
mod common;
mod support;

use common::{ClientCert, KEY, Mqtt, TestHub, device_token, expiry, now};
use hyper::Method;
use mqtt_codec::{ConnectReturnCode, Packet};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};
use serde_json::json;

async fn update(t: &TestHub, path: &str, body: &serde_json::Value) {
    let r = t
        .client()
        .send(Method::PUT, path, Some(body), &[("If-Match", "*")])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{path}: {:?}", r.json());
}

async fn refused(g: &support::Gw, id: &str) -> ConnectReturnCode {
    let mut c = Mqtt::tls_to(g.addr, &g.root, None).await;
    c.connect(id, Some(device_token(id, KEY, expiry())), true)
        .await
        .1
}

/// A device certificate for `cn` under a root nobody uploaded to the hub.
fn foreign_cert(cn: &str) -> ClientCert {
    let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let root = pki::issue(
        &CertRequest::new(
            Profile::RootCa,
            "Foreign Root",
            now() - time::Duration::days(1),
        ),
        &root_key,
        None,
    )
    .unwrap();
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let cert = pki::issue(
        &CertRequest::new(Profile::DeviceClient, cn, now() - time::Duration::days(1)),
        &key,
        Some(Signer {
            cert: &root,
            key: &root_key,
        }),
    )
    .unwrap();
    ClientCert::new(&[&cert, &root], &key)
}

#[tokio::test]
async fn disabled_and_unparented_children_are_dropped_and_refused() {
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    for id in ["stays", "disabled", "orphan"] {
        support::child(&t, &gw, id).await;
    }
    support::create(
        &t,
        "/devices/foreign",
        json!({"deviceId": "foreign", "deviceScope": gw["deviceScope"],
               "authentication": {"type": "certificateAuthority"}}),
    )
    .await;
    let g = support::start(&t, &[]).await;
    let mut stays = g.connect("stays").await;
    let mut disabled = g.connect("disabled").await;
    let mut orphan = g.connect("orphan").await;

    let mut foreign = Mqtt::tls_to(g.addr, &g.root, Some(foreign_cert("foreign"))).await;
    assert_eq!(
        foreign.connect("foreign", None, true).await.1,
        ConnectReturnCode::NotAuthorized,
        "a certificate from a CA the hub has not verified"
    );

    // At the hub: one child is disabled, another loses its parent link.
    let client = t.client();
    let mut d = client
        .send(Method::GET, "/devices/disabled", None, &[])
        .await
        .unwrap()
        .json();
    d["status"] = json!("disabled");
    update(&t, "/devices/disabled", &d).await;
    let mut o = client
        .send(Method::GET, "/devices/orphan", None, &[])
        .await
        .unwrap()
        .json();
    o["deviceScope"] = json!(null);
    o["parentScopes"] = json!([]);
    update(&t, "/devices/orphan", &o).await;

    g.gateway.sync_scope().await.unwrap();
    assert!(
        disabled.recv().await.is_none(),
        "the disabled child's session is closed"
    );
    assert!(
        orphan.recv().await.is_none(),
        "the unparented child's session is closed"
    );
    assert_eq!(
        refused(&g, "disabled").await,
        ConnectReturnCode::NotAuthorized
    );
    assert_eq!(
        refused(&g, "orphan").await,
        ConnectReturnCode::NotAuthorized
    );

    // The remaining child is still served.
    stays.send(&Packet::PingReq).await;
    assert!(matches!(stays.recv().await, Some(Packet::PingResp)));
    let _ = g.stop.send(true);
}
