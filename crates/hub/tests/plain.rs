//! The optional plain MQTT listener (`listen.mqtt_plain`): SAS devices work as over TLS,
//! certificate devices are refused (no certificate without TLS), a non-loopback address is
//! refused at startup unless `plain_remote`.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{KEY, TestHub, device_token, expiry};
use ferrohub_runtime::etag::IfMatch;
use hub_wire::model::{AuthType, Authentication, Device, Status};
use mqtt_codec::{ConnectReturnCode, Packet, PacketReader, ReadError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A device that can only authenticate with a certificate.
fn ca_device(t: &TestHub, id: &str) {
    let d = Device {
        device_id: id.into(),
        authentication: Authentication {
            kind: Some(AuthType::CertificateAuthority),
            ..Default::default()
        },
        ..Default::default()
    };
    t.hub.registry.put_device(id, d, &IfMatch::Absent).unwrap();
}

async fn send(s: &mut TcpStream, p: Packet) {
    let mut out = Vec::new();
    mqtt_codec::encode(&p, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
}

async fn recv(s: &mut TcpStream, reader: &mut PacketReader) -> Option<Packet> {
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), reader.next(s));
    match read.await.unwrap() {
        Ok(p) => p,
        Err(ReadError::Decode(e)) => panic!("malformed packet from the hub: {e}"),
        Err(_) => None,
    }
}

async fn connect(
    t: &TestHub,
    id: &str,
    password: Option<String>,
) -> (TcpStream, PacketReader, ConnectReturnCode) {
    let addr = t.hub.config.listen.mqtt_plain.unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    let mut client = mqtt_client::Client::new(s);
    let login = common::login(id, password);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), client.login(&login));
    match read.await.unwrap() {
        Ok(a) => {
            let (s, reader) = client.into_parts();
            (s, reader, a.code)
        }
        Err(e) => panic!("expected CONNACK, got {e}"),
    }
}

#[tokio::test]
async fn sas_devices_use_the_plain_listener_and_certificate_devices_cannot() {
    let port = test_support::net::free_port();
    let t = TestHub::start_with(|c| {
        c.listen.mqtt_plain = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    })
    .await;
    common::sas_device(&t, "sas1", Status::Enabled);
    ca_device(&t, "x509");
    // Wait for the listener (bound by the hub's task).
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let token = device_token("sas1", KEY, expiry());
    let (mut s, mut buf, code) = connect(&t, "sas1", Some(token)).await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    send(
        &mut s,
        common::publish("devices/sas1/messages/events/", 7, b"plain"),
    )
    .await;
    assert_eq!(recv(&mut s, &mut buf).await, Some(Packet::PubAck(7)));
    let stored = t.hub.events.read(0, 10, 1 << 20).unwrap();
    assert!(
        stored
            .iter()
            .any(|r| String::from_utf8_lossy(&r.payload).contains("\"deviceId\":\"sas1\"")),
        "the message is in the events log"
    );
    let (_s, _b, code) = connect(&t, "x509", None).await;
    assert_eq!(
        code,
        ConnectReturnCode::NotAuthorized,
        "no certificate without TLS"
    );
    let (_s, _b, code) = connect(
        &t,
        "sas1",
        Some("SharedAccessSignature sr=x&sig=y&se=1".into()),
    )
    .await;
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

#[test]
fn a_plain_listener_off_loopback_needs_plain_remote() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cert, key) = common::server_pki(dir.path());
    let mut cfg = common::config(dir.path(), cert, key, root);
    cfg.listen.mqtt_plain = Some("0.0.0.0:1883".parse().unwrap());
    let err = cfg.check().unwrap_err();
    assert!(
        err.contains("listen.mqtt_plain") && err.contains("plain_remote"),
        "{err}"
    );
    cfg.listen.plain_remote = true;
    cfg.check().unwrap();
    cfg.listen.mqtt_plain = Some("127.0.0.1:1883".parse().unwrap());
    cfg.listen.plain_remote = false;
    cfg.check().unwrap();
}
