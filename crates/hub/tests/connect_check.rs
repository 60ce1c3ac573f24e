//! `GET /devices/{id}/connectCheck` (a ferrohub extension): the MQTT CONNECT decision over HTTPS
//! with the device's own credentials, answering the refusal's reason that CONNACK cannot carry.
//! Each case is also tried as a real MQTT CONNECT, so the two must agree.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use std::sync::Arc;

use common::{ClientCert, KEY, Mqtt, Pki, TestHub, device_token, expiry, reason_count};
use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::{AuthType, Module, Status};
use hyper::{Method, StatusCode};
use mqtt_codec::ConnectReturnCode::{Accepted, NotAuthorized};
use serde_json::Value;

/// A client of the hub's HTTPS port presenting `cert` (if any) and `authorization` (if any).
fn device_client(
    t: &TestHub,
    cert: Option<&ClientCert>,
    authorization: Option<String>,
) -> ferrohub_runtime::client::ServiceClient {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(&t.root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    ferrohub_runtime::client::ServiceClient::new(
        t.https.to_string(),
        t.hub.config.hostname.clone(),
        String::new(),
        Vec::new(),
        Arc::new(tls),
    )
    .with_authorization(authorization)
}

async fn check(
    client: &ferrohub_runtime::client::ServiceClient,
    path: &str,
) -> (StatusCode, Value) {
    let r = client.send(Method::GET, path, None, &[]).await.unwrap();
    (r.status, r.json())
}

/// Asserts a 401 naming `reason`, counted like a CONNECT refusal.
async fn refused(
    t: &TestHub,
    client: &ferrohub_runtime::client::ServiceClient,
    path: &str,
    reason: &str,
) {
    let before = reason_count(t, reason);
    let (status, body) = check(client, path).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    assert_eq!(body["accepted"], false, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(body["connack"], 5, "{body}");
    assert_eq!(reason_count(t, reason), before + 1, "{reason} counted");
}

async fn mqtt_x509(t: &TestHub, id: &str, cert: ClientCert) -> mqtt_codec::ConnectReturnCode {
    Mqtt::tls(t, Some(cert))
        .await
        .connect(id, None, true)
        .await
        .1
}

#[tokio::test]
async fn a_ca_device_is_told_unknown_then_unverified_then_accepted() {
    let t = TestHub::start().await;
    let pki = Pki::new("Check Root");
    common::x509_device(&t, "cadev", AuthType::CertificateAuthority, vec![]);
    let cert = pki.valid("cadev");
    let client = device_client(&t, Some(&cert), None);
    let path = "/devices/cadev/connectCheck";

    refused(&t, &client, path, "unknown_ca").await;
    assert_eq!(
        mqtt_x509(&t, "cadev", pki.valid("cadev")).await,
        NotAuthorized
    );

    let pem = pki.root.to_pem();
    t.hub
        .cas
        .upload("root", &pem, false, &IfMatch::Any)
        .unwrap();
    refused(&t, &client, path, "unverified_ca").await;
    assert_eq!(
        mqtt_x509(&t, "cadev", pki.valid("cadev")).await,
        NotAuthorized
    );

    t.hub.cas.upload("root", &pem, true, &IfMatch::Any).unwrap();
    let (status, body) = check(&client, path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], true, "{body}");
    assert_eq!(body["deviceId"], "cadev", "{body}");
    assert_eq!(body["authType"], "certificateAuthority", "{body}");
    assert_eq!(mqtt_x509(&t, "cadev", pki.valid("cadev")).await, Accepted);

    // Another device's certificate is not this device's (CN = the identity).
    let other = device_client(&t, Some(&pki.valid("someone-else")), None);
    refused(&t, &other, path, "cn_mismatch").await;
    // Without a certificate the CA device offered nothing it accepts.
    let bare = device_client(&t, None, None);
    refused(&t, &bare, path, "no_client_certificate").await;
}

#[tokio::test]
async fn a_self_signed_device_with_another_certificate_is_a_wrong_thumbprint() {
    let t = TestHub::start().await;
    let pki = Pki::new("Thumb Root");
    common::x509_device(&t, "thumb", AuthType::SelfSigned, vec!["00".repeat(20)]);
    let client = device_client(&t, Some(&pki.valid("thumb")), None);
    refused(
        &t,
        &client,
        "/devices/thumb/connectCheck",
        "wrong_thumbprint",
    )
    .await;
}

#[tokio::test]
async fn sas_devices_and_modules_get_the_connect_decision() {
    let t = TestHub::start().await;
    common::sas_device(&t, "sasdev", Status::Enabled);
    let token = device_token("sasdev", KEY, expiry());
    let path = "/devices/sasdev/connectCheck";
    let (status, body) = check(&device_client(&t, None, Some(token.clone())), path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["authType"], "sas", "{body}");

    let expired = device_token("sasdev", KEY, expiry() - 7200);
    refused(
        &t,
        &device_client(&t, None, Some(expired)),
        path,
        "expired_token",
    )
    .await;
    let wrong_key = device_token("sasdev", &KEY.replace('M', "N"), expiry());
    refused(
        &t,
        &device_client(&t, None, Some(wrong_key)),
        path,
        "bad_signature",
    )
    .await;
    // A SAS device that offers no token offered X.509, which it does not use.
    refused(&t, &device_client(&t, None, None), path, "wrong_auth_type").await;
    refused(
        &t,
        &device_client(&t, None, Some(token.clone())),
        "/devices/nobody/connectCheck",
        "unknown_device",
    )
    .await;

    // A module: its own token, and an unknown module.
    let module = Module {
        authentication: hub_wire::model::Authentication {
            kind: Some(AuthType::Sas),
            symmetric_key: Some(hub_wire::model::SymmetricKey {
                primary_key: Some(KEY.into()),
                secondary_key: None,
            }),
            x509_thumbprint: None,
        },
        ..Default::default()
    };
    t.hub
        .registry
        .put_module("sasdev", "m1", module, &IfMatch::Absent)
        .unwrap();
    let module_token = device_token("sasdev/modules/m1", KEY, expiry());
    let (status, body) = check(
        &device_client(&t, None, Some(module_token.clone())),
        "/devices/sasdev/modules/m1/connectCheck",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["moduleId"], "m1", "{body}");
    refused(
        &t,
        &device_client(&t, None, Some(module_token)),
        "/devices/sasdev/modules/m2/connectCheck",
        "unknown_module",
    )
    .await;

    // Disabled: refused over HTTPS and at CONNECT alike.
    t.hub
        .registry
        .set_status("sasdev", Status::Disabled, None)
        .unwrap();
    refused(
        &t,
        &device_client(&t, None, Some(token.clone())),
        path,
        "disabled",
    )
    .await;
    let mut mqtt = Mqtt::tls(&t, None).await;
    assert_eq!(
        mqtt.connect("sasdev", Some(token), true).await.1,
        NotAuthorized
    );
}

#[tokio::test]
async fn the_api_version_is_checked_as_on_every_route() {
    let t = TestHub::start().await;
    common::sas_device(&t, "v", Status::Enabled);
    let token = device_token("v", KEY, expiry());
    let client = device_client(&t, None, Some(token)).with_api_version("1999-01-01");
    let (status, body) = check(&client, "/devices/v/connectCheck").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
