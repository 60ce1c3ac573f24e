//! Device authentication over real MQTT/TLS connections to an in-process hub: every accepted
//! kind, and every refusal with its CONNACK code and counted reason.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use common::{ClientCert, KEY, Mqtt, TestHub, device_token, expiry, now, sas_device};
use hub::model::{AuthType, Authentication, Device, Status, X509Thumbprint};
use hub::registry::IfMatch;
use mqtt_codec::ConnectReturnCode::{Accepted, IdentifierRejected, NotAuthorized};
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};

fn x509_device(t: &TestHub, id: &str, kind: AuthType, thumbs: Vec<String>) {
    let d = Device {
        device_id: id.into(),
        authentication: Authentication {
            kind: Some(kind),
            symmetric_key: None,
            x509_thumbprint: Some(X509Thumbprint {
                primary_thumbprint: thumbs.first().cloned(),
                secondary_thumbprint: thumbs.get(1).cloned(),
            }),
        },
        ..Default::default()
    };
    t.hub.registry.put_device(id, d, &IfMatch::Absent).unwrap();
}

fn reason_count(t: &TestHub, reason: &str) -> u64 {
    t.hub
        .metrics
        .auth_failures
        .lock()
        .unwrap()
        .get(reason)
        .copied()
        .unwrap_or(0)
}

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
    c.send(&mqtt_codec::Packet::Connect(Box::new(
        mqtt_codec::Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: true,
            keep_alive: 60,
            client_id: "someone-else".into(),
            will: None,
            username: Some("localhost/dev1/?api-version=2021-04-12".into()),
            password: Some(device_token("dev1", KEY, expiry()).into_bytes()),
        },
    )))
    .await;
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

struct Pki {
    root: Certificate,
    root_key: PrivateKey,
}

impl Pki {
    fn new(cn: &str) -> Self {
        let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let root = pki::issue(
            &CertRequest::new(Profile::RootCa, cn, now() - time::Duration::days(10)),
            &root_key,
            None,
        )
        .unwrap();
        Self { root, root_key }
    }

    fn device(&self, cn: &str, not_before: time::OffsetDateTime, days: u32) -> ClientCert {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let mut req = CertRequest::new(Profile::DeviceClient, cn, not_before);
        req.days = days;
        let cert = pki::issue(
            &req,
            &key,
            Some(Signer {
                cert: &self.root,
                key: &self.root_key,
            }),
        )
        .unwrap();
        ClientCert::new(&[&cert, &self.root], &key)
    }

    fn valid(&self, cn: &str) -> ClientCert {
        self.device(cn, now() - time::Duration::days(1), 30)
    }
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
    use hub::model::ConnectionState::{Connected, Disconnected};
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
