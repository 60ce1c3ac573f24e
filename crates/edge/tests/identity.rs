//! The gateway in identity mode, end to end on loopback: a super-config applied with `config
//! apply`'s logic, real keyd, certd and identityd on Unix sockets (manual provisioning from a
//! connection string), an in-process hub. The gateway gets its device and `$edgeHub` identity from
//! identityd, signs its tokens in keyd, and serves a certificate certd issued from the edge CA in
//! `[edge_ca]`; a child's telemetry reaches the hub as the child; when the (injected) clock passes
//! two thirds of the certificate's life it is renewed: the open child connection keeps publishing,
//! and a new handshake gets the new certificate.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{KEY, Mqtt, TestHub, device_token, expiry};
use edge::identity_source::{IdentitySettings, open};
use ferrohub_runtime::time::{Clock as _, FixedClock, SharedClock, SystemClock};
use identity::config::apply::{self, Paths};
use identity::config::superconfig::SuperConfig;
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig, load_daemon};
use mqtt_codec::{ConnectReturnCode, Packet};
use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};
use time::OffsetDateTime;

/// A root and an edge CA (pathLen 0) under it, valid from 2020 for decades; returns the root,
/// the edge CA's full chain (as `ferrohub certs edge-ca` writes it) and its key.
fn edge_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let start = OffsetDateTime::from_unix_timestamp(1_577_836_800).unwrap();
    let root_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let mut req = CertRequest::new(Profile::RootCa, "Gateway Test Root", start);
    req.days = 20_000;
    let root = pki::issue(&req, &root_key, None).unwrap();
    let ca_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let mut req = CertRequest::new(Profile::EdgeCa, "gw edge CA", start);
    req.days = 20_000;
    let signer = Signer {
        cert: &root,
        key: &root_key,
    };
    let ca = pki::issue(&req, &ca_key, Some(signer)).unwrap();
    let paths = (
        dir.join("root-ca.cert.pem"),
        dir.join("iot-edge-device-ca-gw-full-chain.cert.pem"),
        dir.join("iot-edge-device-ca-gw.key.pem"),
    );
    std::fs::write(&paths.0, root.to_pem()).unwrap();
    std::fs::write(&paths.1, ca.to_pem() + &root.to_pem()).unwrap();
    std::fs::write(&paths.2, ca_key.to_pem()).unwrap();
    paths
}

/// `config apply` of `super_config` under `root`, then keyd, certd (on `cert_clock`) and
/// identityd (reaching `t` for the hub) as `ferrohub identity run` starts them.
async fn identity_service(
    t: &TestHub,
    super_config: &Path,
    root: &Path,
    cert_clock: SharedClock,
) -> tokio::sync::watch::Sender<bool> {
    let paths = Paths::under(root);
    let sc = SuperConfig::load(super_config).unwrap();
    apply::write(&apply::plan(&sc, &paths).unwrap(), &paths).unwrap();
    let load = |svc: &str| (paths.daemon_config(svc), paths.dropin_dir(svc));
    let (f, d) = load("keyd");
    let keyd: KeydConfig = load_daemon(&f, &d).unwrap();
    let (f, d) = load("certd");
    let certd: CertdConfig = load_daemon(&f, &d).unwrap();
    let (f, d) = load("identityd");
    let idd: IdentitydConfig = load_daemon(&f, &d).unwrap();
    let keyd_daemon = identity::keyd::Keyd::open(&keyd).unwrap();
    let store = keyd_daemon.store();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let rx2 = rx.clone();
    tokio::spawn(async move { identity::keyd::serve_with(keyd_daemon, &keyd, rx2).await });
    let certd_daemon =
        identity::certd::Certd::open_with_clock(&certd, store.clone(), cert_clock).unwrap();
    let listener = identity::uds::bind(&certd.socket).unwrap();
    let app = identity::certd::router(certd_daemon);
    tokio::spawn(identity::uds::serve(listener, app, 10, "certd", rx.clone()));
    let options = identity::identityd::Options {
        store: Some(store),
        hub_addresses: [("localhost".to_owned(), t.https.to_string())].into(),
        clock: Some(Arc::new(FixedClock(Mutex::new(common::now())))),
        config_paths: None,
    };
    tokio::spawn(identity::identityd::serve(idd, options, rx));
    for _ in 0..200 {
        if ["keyd", "certd", "identityd"]
            .iter()
            .all(|s| paths.socket(s).exists())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop
}

async fn publish(c: &mut Mqtt, seq: u16) {
    c.send(&common::publish(
        "devices/child/messages/events/",
        seq,
        format!("m{seq}").as_bytes(),
    ))
    .await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(p)) if p == seq),
        "the gateway acknowledges m{seq}"
    );
}

/// Bodies of the child's messages at the hub (sent on its behalf, so marked as its own).
async fn at_hub(t: &TestHub, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..500 {
        bodies = t
            .hub
            .events
            .read(0, 10_000, 16 << 20)
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_slice::<hub::events::EventRecord>(&r.payload).ok())
            .filter(|e| {
                e.device_id == "child"
                    && e.system_properties
                        .get("iothub-connection-device-id")
                        .map(String::as_str)
                        == Some("child")
            })
            .map(|e| e.body.clone())
            .collect();
        if bodies.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bodies
}

fn serial(der: &[u8]) -> String {
    Certificate::from_der(der.to_vec()).unwrap().info().serial
}

fn peer_serial(c: &Mqtt) -> String {
    serial(c.stream().get_ref().1.peer_certificates().unwrap()[0].as_ref())
}

async fn connect_child(addr: std::net::SocketAddr, root: &Path) -> Mqtt {
    for _ in 0..200 {
        let mut c = Mqtt::tls_to(addr, root, None).await;
        let token = device_token("child", KEY, expiry());
        if c.connect("child", Some(token), true).await.1 == ConnectReturnCode::Accepted {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the child could not connect to the gateway");
}

/// A hub with edge device `gw` and its child, the identity service from a super-config whose
/// `[edge_ca]` section is `edge_ca`, and the gateway opened in identity mode (not yet running).
/// Certificates are issued on `cert_clock`, which starts at `now - back`.
struct Setup {
    t: TestHub,
    dir: tempfile::TempDir,
    real_now: OffsetDateTime,
    cert_clock: Arc<FixedClock>,
    opened: edge::identity_source::IdentityGateway,
    _stop_identity: tokio::sync::watch::Sender<bool>,
}

async fn setup(edge_ca: impl FnOnce(&Path, &TestHub) -> String, back: time::Duration) -> Setup {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    let dir = tempfile::tempdir().unwrap();
    let super_config = dir.path().join("config.toml");
    std::fs::write(
        &super_config,
        format!(
            "hostname = \"localhost\"\ntrust_bundle_cert = \"file://{}\"\n\n[provisioning]\n\
             source = \"manual\"\nconnection_string = \"HostName=localhost;DeviceId=gw;SharedAccessKey={KEY}\"\n\n{}",
            dir.path().join("trust-bundle.pem").display(),
            edge_ca(dir.path(), &t),
        ),
    )
    .unwrap();
    let real_now = SystemClock.now().replace_nanosecond(0).unwrap();
    let cert_clock = Arc::new(FixedClock(Mutex::new(real_now - back)));
    let root = dir.path().join("root");
    let stop = identity_service(&t, &super_config, &root, cert_clock.clone()).await;
    let mut settings = IdentitySettings::new(&super_config);
    settings.root = root.clone();
    settings.listen = "127.0.0.1:0".parse().unwrap();
    settings.ips = vec!["127.0.0.1".parse().unwrap()];
    settings.hub_mqtt = Some(t.mqtt.to_string());
    settings.hub_https = Some(t.https.to_string());
    let gateway_clock: SharedClock = Arc::new(FixedClock(Mutex::new(common::now())));
    let opened = open(&settings, gateway_clock, cert_clock.clone())
        .await
        .unwrap();
    Setup {
        t,
        dir,
        real_now,
        cert_clock,
        opened,
        _stop_identity: stop,
    }
}

/// Writes `[edge_ca]` from an edge CA under a new root, and a trust bundle with that root and
/// the hub's (as with a single root for both).
fn preloaded_edge_ca(dir: &Path, hub_root: &Path) -> String {
    let (root_ca, edge_chain, edge_key) = edge_pki(dir);
    let bundle =
        std::fs::read_to_string(hub_root).unwrap() + &std::fs::read_to_string(root_ca).unwrap();
    std::fs::write(dir.join("trust-bundle.pem"), bundle).unwrap();
    format!(
        "[edge_ca]\ncert = \"file://{}\"\npk = \"file://{}\"\n",
        edge_chain.display(),
        edge_key.display()
    )
}

type Running = (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), edge::EdgeError>>,
);

/// Runs the gateway on an ephemeral loopback port.
async fn serve(opened: &edge::identity_source::IdentityGateway) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let gateway = opened.gateway.clone();
    let run = tokio::spawn(gateway.run(listener, Duration::from_secs(3600), rx));
    (addr, stop, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_runs_on_the_identity_service_and_renews_its_certificate_in_place() {
    // The first certificate (30 days) is issued 21 days back on the certificates' clock: valid
    // now for the TLS clients, and due once that clock is moved to now.
    let s = setup(
        |dir, t| preloaded_edge_ca(dir, &t.root),
        time::Duration::days(21),
    )
    .await;
    let (t, opened, real_now) = (&s.t, &s.opened, s.real_now);
    let root_ca = s.dir.path().join("root-ca.cert.pem");
    assert_eq!(opened.identity.device_id, "gw");
    assert_eq!(opened.identity.hub_name, "localhost");
    assert_eq!(
        opened.gateway.config.edge_hub_key, "",
        "no key material in the gateway"
    );

    // The chain: server → edge CA → root, naming the hostname and the IP, verifying to the root.
    let certs = opened.certs.clone();
    let chain = certs.chain();
    assert_eq!(chain.len(), 3, "the full chain is presented");
    let info = chain[0].info();
    assert!(
        info.subject_alt_names.contains(&"DNS:localhost".to_owned()),
        "{info:?}"
    );
    assert!(
        info.subject_alt_names.contains(&"IP:127.0.0.1".to_owned()),
        "{info:?}"
    );
    let anchor = Certificate::from_pem(&std::fs::read_to_string(&root_ca).unwrap()).unwrap();
    pki::ChainValidator::new([anchor])
        .unwrap()
        .verify(&chain[0], &chain[1..], real_now, pki::Purpose::ServerAuth)
        .unwrap();
    let key_mode =
        std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(certs.key_path()).unwrap());
    assert_eq!(key_mode & 0o777, 0o600);
    assert_eq!(certs.renews_at(), Some(renews(&chain[0])));

    let (addr, stop, run) = serve(opened).await;

    // A child (trusting only the gateway's root) connects and its telemetry reaches the hub as
    // itself: upstream runs on the $edgeHub token keyd signed.
    let mut child = connect_child(addr, &root_ca).await;
    let first_serial = peer_serial(&child);
    assert_eq!(first_serial, info.serial);
    publish(&mut child, 1).await;
    assert_eq!(at_hub(t, 1).await, ["m1"]);

    // Not due yet: nothing happens.
    assert!(!certs.renew_if_due().await.unwrap());
    // Two thirds of the life passed on the injected clock: renewed in place.
    *s.cert_clock.0.lock().unwrap() = real_now;
    assert!(certs.renew_if_due().await.unwrap());
    let renewed = certs.chain();
    assert_ne!(renewed[0].info().serial, first_serial);
    assert_eq!(renewed[0].not_before(), real_now);
    assert_eq!(certs.renewals.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert!(
        !certs.renew_if_due().await.unwrap(),
        "the new one is not due"
    );

    // The open connection stays up and keeps publishing; a new handshake sees the new serial.
    publish(&mut child, 2).await;
    let fresh = Mqtt::tls_to(addr, &root_ca, None).await;
    assert_eq!(peer_serial(&fresh), renewed[0].info().serial);
    drop(fresh);
    assert_eq!(
        peer_serial(&child),
        first_serial,
        "the open session keeps its certificate"
    );
    publish(&mut child, 3).await;
    assert_eq!(at_hub(t, 3).await, ["m1", "m2", "m3"]);
    let mut second = connect_child(addr, &root_ca).await;
    assert_eq!(peer_serial(&second), renewed[0].info().serial);
    publish(&mut second, 4).await;
    assert_eq!(at_hub(t, 4).await, ["m1", "m2", "m3", "m4"]);
    let on_disk =
        Certificate::chain_from_pem(&std::fs::read_to_string(certs.chain_path()).unwrap()).unwrap();
    assert_eq!(on_disk, renewed);

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
}

fn renews(c: &Certificate) -> OffsetDateTime {
    edge::server_cert::renewal_time(c.not_before(), c.not_after())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_edge_ca_a_quickstart_ca_is_made_in_keyd_and_both_are_renewed() {
    // No [edge_ca]: a 90-day quickstart CA, made 25 days back on the certificates' clock with the
    // first server certificate (30 days): both valid now, the certificate due now, the CA at 60 days.
    let s = setup(
        |dir, t| {
            std::fs::copy(&t.root, dir.join("trust-bundle.pem")).unwrap();
            String::new()
        },
        time::Duration::days(25),
    )
    .await;
    let certs = &s.opened.certs;
    let chain = certs.chain();
    assert_eq!(chain.len(), 2, "server → quickstart CA");
    let ca = chain[1].clone();
    assert!(ca.is_ca() && ca.is_self_issued());
    assert_eq!(ca.info().path_len, Some(0));
    assert_eq!(ca.not_after() - ca.not_before(), time::Duration::days(90));
    let ca_file = certs.quickstart_ca_path().unwrap();
    let read_ca = || Certificate::from_pem(&std::fs::read_to_string(&ca_file).unwrap()).unwrap();
    assert_eq!(read_ca(), ca);
    // The CA's private key stays in keyd: the gateway holds only its own server key.
    let mut files: Vec<String> = std::fs::read_dir(ca_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["edge-ca.cert.pem", "server-chain.pem", "server.key.pem"]
    );

    let (addr, stop, run) = serve(&s.opened).await;
    let mut child = connect_child(addr, &ca_file).await;
    publish(&mut child, 1).await;
    assert_eq!(at_hub(&s.t, 1).await, ["m1"]);

    // Now: the certificate is due, the CA is not.
    assert!(!certs.renew_if_due().await.unwrap());
    *s.cert_clock.0.lock().unwrap() = s.real_now;
    assert!(certs.renew_if_due().await.unwrap());
    let renewed = certs.chain();
    assert_ne!(renewed[0].info().serial, chain[0].info().serial);
    assert_eq!(renewed[1], ca, "the CA is not due yet");
    publish(&mut child, 2).await;
    let fresh = Mqtt::tls_to(addr, &ca_file, None).await;
    assert_eq!(peer_serial(&fresh), renewed[0].info().serial);
    drop(fresh);
    publish(&mut child, 3).await;
    assert_eq!(at_hub(&s.t, 3).await, ["m1", "m2", "m3"]);

    // 61 days on: the CA is due; it is made again on keyd's same key, and the certificate with it.
    let later = s.real_now + time::Duration::days(61);
    *s.cert_clock.0.lock().unwrap() = later;
    assert!(certs.renew_if_due().await.unwrap());
    let third = certs.chain();
    assert_ne!(
        third[1].info().serial,
        ca.info().serial,
        "a new CA certificate"
    );
    assert_eq!(
        third[1].public_key_raw(),
        ca.public_key_raw(),
        "on keyd's same key"
    );
    assert_eq!(third[1].not_before(), later);
    assert_eq!(read_ca(), third[1]);
    pki::ChainValidator::new([read_ca()])
        .unwrap()
        .verify(&third[0], &third[1..], later, pki::Purpose::ServerAuth)
        .unwrap();
    assert_eq!(certs.renewals.load(std::sync::atomic::Ordering::Relaxed), 2);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;
}
