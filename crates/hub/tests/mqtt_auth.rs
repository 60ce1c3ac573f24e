//! Device authentication over real MQTT/TLS connections to an in-process hub: every accepted
//! kind, and every refusal with its CONNACK code and counted reason (including a username naming
//! another hub, a will on a topic that is not the identity's own telemetry, and a CONNECT with its
//! reserved flag set).

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{
    ClientCert, KEY, Mqtt, Pki, TestHub, device_token, expiry, now, reason_count, sas_device,
    x509_device,
};
use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::{AuthType, Status};
use mqtt_codec::ConnectReturnCode::{
    Accepted, BadUsernameOrPassword, IdentifierRejected, NotAuthorized,
};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};

async fn attempt(
    t: &TestHub,
    client_id: &str,
    password: Option<String>,
    cert: Option<ClientCert>,
) -> mqtt_codec::ConnectReturnCode {
    let mut c = Mqtt::tls(t, cert).await;
    c.connect(client_id, password, true).await.1
}

async fn refused(
    t: &TestHub,
    client_id: &str,
    password: Option<String>,
    cert: Option<ClientCert>,
    code: mqtt_codec::ConnectReturnCode,
    reason: &str,
) {
    let before = reason_count(t, reason);
    assert_eq!(
        attempt(t, client_id, password, cert).await,
        code,
        "{reason}"
    );
    assert_eq!(
        reason_count(t, reason),
        before + 1,
        "reason {reason} not counted"
    );
}

#[tokio::test]
async fn sas_devices_connect_and_every_sas_refusal_is_named() {
    let t = TestHub::start().await;
    sas_device(&t, "dev1", Status::Enabled);
    sas_device(&t, "off", Status::Disabled);
    assert_eq!(
        attempt(&t, "dev1", Some(device_token("dev1", KEY, expiry())), None).await,
        Accepted
    );
    // A policy with DeviceConnect may connect on behalf of the device.
    let policy_token = iot_auth::sas::generate_sas_token(
        "localhost/devices/dev1",
        &common::base64_decode(KEY),
        Some("iothubowner"),
        expiry(),
    );
    assert_eq!(
        attempt(&t, "dev1", Some(policy_token), None).await,
        Accepted
    );

    let other_key = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU=";
    refused(
        &t,
        "dev1",
        Some(device_token("dev1", other_key, expiry())),
        None,
        NotAuthorized,
        "bad_signature",
    )
    .await;
    refused(
        &t,
        "ghost",
        Some(device_token("ghost", KEY, expiry())),
        None,
        NotAuthorized,
        "unknown_device",
    )
    .await;
    refused(
        &t,
        "off",
        Some(device_token("off", KEY, expiry())),
        None,
        NotAuthorized,
        "disabled",
    )
    .await;
    refused(
        &t,
        "dev1",
        Some("SharedAccessSignature nonsense".into()),
        None,
        NotAuthorized,
        "bad_token",
    )
    .await;
    refused(
        &t,
        "dev1",
        Some(device_token("dev2", KEY, expiry())),
        None,
        NotAuthorized,
        "wrong_audience",
    )
    .await;
    let expired = u64::try_from(now().unix_timestamp()).unwrap() - 400;
    refused(
        &t,
        "dev1",
        Some(device_token("dev1", KEY, expired)),
        None,
        NotAuthorized,
        "expired_token",
    )
    .await;
    // Within the 5-minute skew an expired token still passes.
    let just = u64::try_from(now().unix_timestamp()).unwrap() - 200;
    assert_eq!(
        attempt(&t, "dev1", Some(device_token("dev1", KEY, just)), None).await,
        Accepted
    );

    // The client id must be the username's identity.
    let mut c = Mqtt::tls(&t, None).await;
    let before = reason_count(&t, "client_id_mismatch");
    let login = mqtt_client::Login::new("someone-else")
        .username("localhost/dev1/?api-version=2021-04-12")
        .password(device_token("dev1", KEY, expiry()));
    c.send(&login.packet()).await;
    assert!(
        matches!(c.recv().await, Some(mqtt_codec::Packet::ConnAck(a)) if a.code == IdentifierRejected)
    );
    assert_eq!(reason_count(&t, "client_id_mismatch"), before + 1);
    let metrics = t.hub.metrics.render(0);
    assert!(
        metrics.contains("ferrohub_auth_failures_total{reason=\"expired_token\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sas_can_be_disabled_hub_wide() {
    let t = TestHub::start_with(|c| c.auth.disable_device_sas = true).await;
    sas_device(&t, "dev1", Status::Enabled);
    refused(
        &t,
        "dev1",
        Some(device_token("dev1", KEY, expiry())),
        None,
        NotAuthorized,
        "sas_disabled",
    )
    .await;
}

#[tokio::test]
async fn ca_signed_devices_need_a_verified_ca() {
    let t = TestHub::start().await;
    let pki = Pki::new("Device Root");
    x509_device(&t, "cadev", AuthType::CertificateAuthority, vec![]);
    refused(
        &t,
        "cadev",
        None,
        Some(pki.valid("cadev")),
        NotAuthorized,
        "unknown_ca",
    )
    .await;

    t.hub
        .cas
        .upload("devroot", &pki.root.to_pem(), false, &IfMatch::Absent)
        .unwrap();
    refused(
        &t,
        "cadev",
        None,
        Some(pki.valid("cadev")),
        NotAuthorized,
        "unverified_ca",
    )
    .await;

    // Proof of possession: a certificate with CN = code, signed by the CA's key.
    let (_, code) = t
        .hub
        .cas
        .generate_verification_code("devroot", &IfMatch::Any)
        .unwrap();
    let k = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let proof = pki::issue(
        &CertRequest::new(Profile::Verification, code, now()),
        &k,
        Some(Signer {
            cert: &pki.root,
            key: &pki.root_key,
        }),
    )
    .unwrap();
    t.hub
        .cas
        .verify("devroot", &IfMatch::Any, &proof.to_pem())
        .unwrap();
    assert_eq!(
        attempt(&t, "cadev", None, Some(pki.valid("cadev"))).await,
        Accepted
    );

    refused(
        &t,
        "cadev",
        None,
        Some(pki.valid("not-cadev")),
        NotAuthorized,
        "cn_mismatch",
    )
    .await;
    let old = pki.device("cadev", now() - time::Duration::days(5), 2);
    refused(&t, "cadev", None, Some(old), NotAuthorized, "cert_expired").await;
    let future = pki.device("cadev", now() + time::Duration::days(5), 2);
    refused(
        &t,
        "cadev",
        None,
        Some(future),
        NotAuthorized,
        "cert_not_yet_valid",
    )
    .await;
    refused(
        &t,
        "cadev",
        None,
        None,
        NotAuthorized,
        "no_client_certificate",
    )
    .await;
    // A SAS device cannot use a certificate instead.
    sas_device(&t, "sasdev", Status::Enabled);
    refused(
        &t,
        "sasdev",
        None,
        Some(pki.valid("sasdev")),
        NotAuthorized,
        "wrong_auth_type",
    )
    .await;
}

#[tokio::test]
async fn self_signed_devices_match_sha1_or_sha256_thumbprints() {
    let t = TestHub::start().await;
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let cert = pki::issue(
        &CertRequest::new(
            Profile::SelfSignedDevice,
            "thumb",
            now() - time::Duration::days(1),
        ),
        &key,
        None,
    )
    .unwrap();
    x509_device(
        &t,
        "thumb",
        AuthType::SelfSigned,
        vec![cert.thumbprint_sha1()],
    );
    assert_eq!(
        attempt(&t, "thumb", None, Some(ClientCert::new(&[&cert], &key))).await,
        Accepted
    );
    x509_device(&t, "wrong", AuthType::SelfSigned, vec!["CD".repeat(20)]);
    refused(
        &t,
        "wrong",
        None,
        Some(ClientCert::new(&[&cert], &key)),
        NotAuthorized,
        "wrong_thumbprint",
    )
    .await;
    // Registered by its SHA-256 thumbprint, as the secondary.
    let key3 = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let cert3 = pki::issue(
        &CertRequest::new(
            Profile::SelfSignedDevice,
            "thumb256",
            now() - time::Duration::days(1),
        ),
        &key3,
        None,
    )
    .unwrap();
    x509_device(
        &t,
        "thumb256b",
        AuthType::SelfSigned,
        vec!["AB".repeat(20), cert3.thumbprint_sha256()],
    );
    assert_eq!(
        attempt(
            &t,
            "thumb256b",
            None,
            Some(ClientCert::new(&[&cert3], &key3))
        )
        .await,
        Accepted
    );
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one() {
    let t = TestHub::start().await;
    sas_device(&t, "dev1", Status::Enabled);
    let mut first = Mqtt::tls(&t, None).await;
    assert_eq!(
        first
            .connect("dev1", Some(device_token("dev1", KEY, expiry())), true)
            .await
            .1,
        Accepted
    );
    let mut second = Mqtt::tls(&t, None).await;
    assert_eq!(
        second
            .connect("dev1", Some(device_token("dev1", KEY, expiry())), true)
            .await
            .1,
        Accepted
    );
    assert!(
        first.recv().await.is_none(),
        "the first connection must be closed"
    );
    second.send(&mqtt_codec::Packet::PingReq).await;
    assert_eq!(second.recv().await, Some(mqtt_codec::Packet::PingResp));
}

/// Connection state is served at once from memory and reaches the registry file in a batch: a
/// restarted hub shows the last connect and disconnect times.
#[tokio::test]
async fn connection_state_is_live_at_once_and_survives_a_restart() {
    use hub_wire::model::ConnectionState::{Connected, Disconnected};
    let t = TestHub::start().await;
    sas_device(&t, "dev1", Status::Enabled);
    let never = t
        .hub
        .registry
        .get_device("dev1")
        .unwrap()
        .last_activity_time;
    let mut c = Mqtt::tls(&t, None).await;
    let token = device_token("dev1", KEY, expiry());
    assert_eq!(c.connect("dev1", Some(token), true).await.1, Accepted);
    let live = t.hub.registry.get_device("dev1").unwrap();
    assert_eq!(live.connection_state, Connected, "visible without a flush");
    assert_ne!(live.last_activity_time, never);
    let stored = t.hub.registry.store().get_device("dev1").unwrap().unwrap();
    assert_eq!(
        stored.connection_state, Disconnected,
        "no write on the connect path"
    );
    // The batch writer stores it within about a second.
    let mut tries = 0;
    while t
        .hub
        .registry
        .store()
        .get_device("dev1")
        .unwrap()
        .unwrap()
        .connection_state
        != Connected
    {
        tries += 1;
        assert!(tries < 200, "never written");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.send(&mqtt_codec::Packet::Disconnect).await;
    assert!(c.recv().await.is_none());
    let mut tries = 0;
    while t.hub.registry.get_device("dev1").unwrap().connection_state != Disconnected {
        tries += 1;
        assert!(tries < 500, "disconnect not seen");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (dir, cfg, root) = t.stop().await;
    let t = TestHub::start_in(dir, cfg, root).await;
    let d = t.hub.registry.get_device("dev1").unwrap();
    assert_eq!(d.connection_state, Disconnected);
    assert_ne!(
        d.connection_state_updated_time, never,
        "the flush on stop kept the time"
    );
    assert_eq!(t.hub.registry.flush_connections().unwrap(), 0);
}

#[tokio::test]
async fn the_username_must_name_this_hub_or_one_of_its_aliases() {
    let t = TestHub::start_with(|c| c.hostname_aliases = vec!["hub.example.net".into()]).await;
    sas_device(&t, "dev1", Status::Enabled);
    let token = Some(device_token("dev1", KEY, expiry()));
    let cases = [
        ("localhost", Accepted),
        ("LocalHost", Accepted),
        ("HUB.example.net", Accepted),
        ("other-hub.example.net", BadUsernameOrPassword),
        ("127.0.0.1", BadUsernameOrPassword),
    ];
    for (host, code) in cases {
        let mut c = Mqtt::tls(&t, None).await;
        let username = format!("{host}/dev1/?api-version=2021-04-12");
        let got = c.connect_as("dev1", &username, token.clone(), true).await.1;
        assert_eq!(got, code, "username host {host}");
    }
    assert_eq!(reason_count(&t, "wrong_host"), 2);
    // A token for the alias is accepted too.
    let alias_token = iot_auth::sas::generate_sas_token(
        "hub.example.net/devices/dev1",
        &common::base64_decode(KEY),
        None,
        expiry(),
    );
    let mut c = Mqtt::tls(&t, None).await;
    let username = "hub.example.net/dev1/?api-version=2021-04-12";
    let got = c
        .connect_as("dev1", username, Some(alias_token), true)
        .await
        .1;
    assert_eq!(got, Accepted, "a token whose audience is the alias");
    println!(
        "RELIABILITY|security: MQTT username naming another hub|a hub with one alias|{} CONNECTs whose username names the hub, its alias in other case, another host name, an address; a token for the alias|another host and the address refused with CONNACK 4 (wrong_host counted {}), the hub's names accepted ignoring case|0",
        cases.len(),
        reason_count(&t, "wrong_host")
    );
}

#[tokio::test]
async fn a_will_may_only_be_the_identitys_own_telemetry() {
    let t = TestHub::start().await;
    sas_device(&t, "dev1", Status::Enabled);
    sas_device(&t, "dev2", Status::Enabled);
    let cases = [
        ("devices/dev1/messages/events/", Accepted),
        ("devices/dev1/messages/events/kind=will", Accepted),
        ("devices/dev2/messages/events/", NotAuthorized),
        ("devices/dev1/modules/m1/messages/events/", NotAuthorized),
        ("devices/dev1/messages/devicebound/", NotAuthorized),
        (
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            NotAuthorized,
        ),
        ("anything/else", NotAuthorized),
    ];
    for (topic, code) in cases {
        let mut connect = common::connect_packet("dev1", Some(device_token("dev1", KEY, expiry())));
        if let mqtt_codec::Packet::Connect(c) = &mut connect {
            c.will = Some(mqtt_codec::Will {
                topic: topic.into(),
                payload: b"gone".to_vec(),
                qos: mqtt_codec::QoS::AtMostOnce,
                retain: false,
            });
        }
        let mut c = Mqtt::tls(&t, None).await;
        c.send(&connect).await;
        let got = match c.recv().await {
            Some(mqtt_codec::Packet::ConnAck(a)) => a.code,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        assert_eq!(got, code, "will topic {topic}");
    }
    assert_eq!(reason_count(&t, "will_topic"), 5);
    println!(
        "RELIABILITY|security: MQTT will on another topic|2 devices|{} CONNECTs of one device with a will on its own telemetry, another device's, a module's, C2D, twin and arbitrary topics|{} refused with CONNACK 5 (will_topic counted), the own telemetry topics accepted|0",
        cases.len(),
        reason_count(&t, "will_topic")
    );
}

#[tokio::test]
async fn a_connect_with_its_reserved_flag_set_is_closed_without_an_answer() {
    let t = TestHub::start().await;
    sas_device(&t, "dev1", Status::Enabled);
    let mut bytes = Vec::new();
    let connect = common::connect_packet("dev1", Some(device_token("dev1", KEY, expiry())));
    mqtt_codec::encode(&connect, &mut bytes).unwrap();
    // Fixed header (type byte, remaining length), protocol name (2 + 4 bytes), level: then flags.
    let header = 1 + bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    let flags = header + 6 + 1;
    assert_eq!(bytes[flags] & 0x01, 0);
    bytes[flags] |= 0x01;
    let errors = || {
        t.hub
            .metrics
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = errors();
    let mut c = Mqtt::tls(&t, None).await;
    c.send_raw(&bytes).await;
    assert_eq!(
        c.recv().await,
        None,
        "closed, no CONNACK (MQTT 3.1.1 3.1.2-3)"
    );
    assert_eq!(errors(), before + 1);
    // The hub keeps serving.
    assert_eq!(
        attempt(&t, "dev1", Some(device_token("dev1", KEY, expiry())), None).await,
        Accepted
    );
    println!(
        "RELIABILITY|security: CONNECT with its reserved flag set|a device|a valid CONNECT with bit 0 of its connect flags set|closed without a CONNACK (MQTT 3.1.1 3.1.2-3), counted as a protocol error; the same device connects normally afterwards|0"
    );
}
