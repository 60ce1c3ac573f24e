//! Abuse against the MQTT endpoint, each bounded by a named `[limits]` budget: a connection flood
//! from one address (`max_connections_per_ip`), a full hub (`max_connections`), half-open TLS
//! handshakes and a CONNECT trickled byte by byte (`connect_timeout_secs`), a subscription flood
//! (`max_subscriptions_per_connection`), an oversized packet (`max_packet_bytes`) and more
//! unacknowledged publishes than allowed (`max_inflight_per_connection`). Every case checks the
//! metric and the log line that name the limit, and that a well-behaved client connected at the
//! same time keeps working.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{KEY, Mqtt, TestHub, device_token, expiry};
use hub_wire::model::Status;
use mqtt_codec::ConnectReturnCode::Accepted;
use mqtt_codec::{Packet, QoS, SubAck, SubAckReturnCode, Subscribe};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// Every log event of the test binary, as `LEVEL field=value ...` lines.
mod logs {
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata};

    static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture(AtomicU64);

    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            *m.level() <= Level::INFO
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(self.0.fetch_add(1, Ordering::Relaxed) + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let mut line = Line(e.metadata().level().to_string());
            e.record(&mut line);
            LINES.lock().unwrap().push(line.0);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    pub fn install() {
        let _ = tracing::subscriber::set_global_default(Capture(AtomicU64::new(0)));
    }

    /// The lines (so far) that contain every one of `words`.
    pub fn matching(words: &[&str]) -> Vec<String> {
        LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .cloned()
            .collect()
    }
}

/// A hub with `tweak` applied to its limits, devices `good` and `bad` registered.
async fn hub_with(tweak: impl FnOnce(&mut hub::config::Limits)) -> TestHub {
    logs::install();
    let t = TestHub::start_with(|c| tweak(&mut c.limits)).await;
    common::sas_device(&t, "good", Status::Enabled);
    common::sas_device(&t, "bad", Status::Enabled);
    t
}

async fn connected(t: &TestHub, id: &str) -> Mqtt {
    let mut c = Mqtt::tls(t, None).await;
    let (_, code) = c
        .connect(id, Some(device_token(id, KEY, expiry())), true)
        .await;
    assert_eq!(code, Accepted, "{id} connects");
    c
}

fn publish(id: &str, packet_id: u16, body: &[u8]) -> Packet {
    common::publish(&format!("devices/{id}/messages/events/"), packet_id, body)
}

/// The well-behaved client still gets its messages acknowledged and its pings answered.
async fn still_works(c: &mut Mqtt, packet_id: u16) {
    c.send(&publish("good", packet_id, b"still here")).await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(packet_id)));
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
}

/// The metric and the log line both name `limit`.
fn named(t: &TestHub, limit: &str, at_least: u64) {
    let n = t.hub.metrics.limit_count(limit);
    assert!(
        n >= at_least,
        "{limit} reached {n} times, expected {at_least}"
    );
    let text = t.hub.metrics.render(0);
    assert!(
        text.contains(&format!(
            "ferrohub_limits_reached_total{{limit=\"{limit}\"}}"
        )),
        "metric for {limit}"
    );
    assert!(
        !logs::matching(&[&format!("limits.{limit}")]).is_empty(),
        "a log line names limits.{limit}"
    );
}

/// Waits (polling, at most a minute) until `limit` was reached `n` times.
async fn reached(t: &TestHub, limit: &str, n: u64) {
    for _ in 0..3000 {
        if t.hub.metrics.limit_count(limit) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{limit} reached {} times, expected {n}",
        t.hub.metrics.limit_count(limit)
    );
}

/// One row of the reliability table (`scripts/reliability`); no message is lost in any of them.
fn row(scenario: &str, load: &str, faults: &str, outcome: &str) {
    println!("RELIABILITY|{scenario}|{load}|{faults}|{outcome}|0");
}

/// A plain TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// True once the peer has closed `s` (end of stream or reset); bytes it sends are skipped.
async fn closed_by_hub<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_refused_past_max_connections_per_ip() {
    let t = hub_with(|l| l.max_connections_per_ip = 4).await;
    let mut good = connected(&t, "good").await;
    // 4 connections from 127.0.0.2 are held open (TLS not even started), 16 more are refused.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tcp_from("127.0.0.2", t.mqtt).await);
    }
    let mut flood = Vec::new();
    for _ in 0..16 {
        flood.push(tcp_from("127.0.0.2", t.mqtt).await);
    }
    reached(&t, "max_connections_per_ip", 16).await;
    for s in &mut flood {
        assert!(
            closed_by_hub(s).await,
            "a connection past the limit is closed"
        );
    }
    assert_eq!(t.hub.metrics.limit_count("max_connections_per_ip"), 16);
    named(&t, "max_connections_per_ip", 16);
    // Other addresses are not affected: the connected device and a new one from 127.0.0.1.
    still_works(&mut good, 1).await;
    let mut other = connected(&t, "bad").await;
    other.send(&Packet::PingReq).await;
    assert_eq!(other.recv().await, Some(Packet::PingResp));
    // The address gets its slots back when its connections close.
    drop(held);
    let mut admitted = false;
    for _ in 0..500 {
        if connect_from(&t, "127.0.0.2", "bad").await {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        admitted,
        "127.0.0.2 is admitted again once its connections closed"
    );
    row(
        "connection flood from one address",
        "20 TCP connections from 127.0.0.2 held open without TLS, devices on 127.0.0.1 publishing",
        "limits.max_connections_per_ip = 4",
        &format!(
            "{} refused at accept, each counted in ferrohub_limits_reached_total{{limit=\"max_connections_per_ip\"}} and logged with the limit's name; devices on other addresses served throughout; the address admitted again once its connections closed",
            t.hub.metrics.limit_count("max_connections_per_ip")
        ),
    );
}

/// TLS and CONNECT as `id` from the loopback address `from`; true when the hub accepted it.
async fn connect_from(t: &TestHub, from: &str, id: &str) -> bool {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&t.root).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tcp_from(from, t.mqtt).await;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let Ok(tls) = connector
        .connect(ServerName::try_from(common::HOST).unwrap(), tcp)
        .await
    else {
        return false;
    };
    let login = common::login(id, Some(device_token(id, KEY, expiry())));
    mqtt_client::Client::connect(tls, &login).await.is_ok()
}

#[tokio::test]
async fn a_full_hub_refuses_new_connections_and_serves_the_open_ones() {
    let t = hub_with(|l| l.max_connections = 2).await;
    let mut good = connected(&t, "good").await;
    let _second = tcp_from("127.0.0.1", t.mqtt).await;
    let mut refused = Vec::new();
    for _ in 0..5 {
        refused.push(tcp_from("127.0.0.3", t.mqtt).await);
    }
    reached(&t, "max_connections", 5).await;
    for s in &mut refused {
        assert!(closed_by_hub(s).await);
    }
    named(&t, "max_connections", 5);
    assert!(
        t.hub
            .metrics
            .render(0)
            .contains("ferrohub_mqtt_connections_refused_limit_total 5")
    );
    still_works(&mut good, 1).await;
    row(
        "connection flood beyond the hub's capacity",
        "1 device connected, 1 idle TCP connection, 5 more connections",
        "limits.max_connections = 2",
        &format!(
            "{} refused at accept, counted (limit=\"max_connections\") and logged; the connected device served throughout",
            t.hub.metrics.limit_count("max_connections")
        ),
    );
}

#[tokio::test]
async fn half_open_tls_and_a_trickled_connect_are_closed_by_connect_timeout_secs() {
    let t = hub_with(|l| l.connect_timeout_secs = 2).await;
    let mut good = connected(&t, "good").await;
    // Half-open: TCP, then nothing (or half a ClientHello) and no more.
    let mut silent = tcp_from("127.0.0.1", t.mqtt).await;
    let mut partial = tcp_from("127.0.0.1", t.mqtt).await;
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(closed_by_hub(&mut silent).await, "a silent peer is closed");
    assert!(
        closed_by_hub(&mut partial).await,
        "half a handshake is closed"
    );
    // Slowloris: TLS done, then a CONNECT announcing 40,000 bytes sent one byte at a time, for as
    // long as the hub lets it.
    let mut slow = Mqtt::tls(&t, None).await;
    let mut connect = vec![0x10, 0xC0, 0xB8, 0x02];
    connect.extend(std::iter::repeat_n(0u8, 40_000));
    let mut sent = 0;
    let mut closed = false;
    for byte in &connect {
        let write = async {
            slow.stream_mut().write_all(&[*byte]).await?;
            slow.stream_mut().flush().await
        };
        if write.await.is_err() {
            closed = true;
            break;
        }
        sent += 1;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), slow.stream_mut().read(&mut buf))
            .await
        {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("the hub answered a CONNECT that never finished"),
            Err(_) => {}
        }
    }
    assert!(closed, "the trickled CONNECT is cut off");
    assert!(
        sent < connect.len(),
        "closed before the CONNECT was complete"
    );
    reached(&t, "connect_timeout_secs", 3).await;
    named(&t, "connect_timeout_secs", 3);
    still_works(&mut good, 1).await;
    row(
        "half-open TLS and slowloris",
        "a silent TCP peer, half a TLS ClientHello, a CONNECT announcing 40,000 bytes trickled 1 byte per 100 ms, next to a connected device",
        "limits.connect_timeout_secs = 2 (TLS and CONNECT together)",
        &format!(
            "all 3 closed by the hub ({sent} bytes of the CONNECT accepted before the cut), counted (limit=\"connect_timeout_secs\") and logged; the device served throughout"
        ),
    );
}

#[tokio::test]
async fn a_subscription_flood_gets_suback_failure_past_max_subscriptions_per_connection() {
    let t = hub_with(|l| l.max_subscriptions_per_connection = 2).await;
    let mut good = connected(&t, "good").await;
    let mut bad = connected(&t, "bad").await;
    let filters = [
        "devices/bad/messages/devicebound/#",
        "$iothub/methods/POST/#",
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
    ];
    bad.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: filters
            .iter()
            .map(|f| ((*f).into(), QoS::AtLeastOnce))
            .collect(),
    }))
    .await;
    let ok = SubAckReturnCode::Success(QoS::AtLeastOnce);
    assert_eq!(
        bad.recv().await,
        Some(Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: vec![ok, ok, SubAckReturnCode::Failure, SubAckReturnCode::Failure],
        }))
    );
    // A flood of SUBSCRIBEs: the filters held are granted again, the rest refused; the
    // connection stays and the session does not grow.
    for id in 2..=200u16 {
        let f = filters[usize::from(id) % filters.len()];
        bad.send(&Packet::Subscribe(Subscribe {
            packet_id: id,
            filters: vec![(f.into(), QoS::AtLeastOnce)],
        }))
        .await;
        let expected = if filters[..2].contains(&f) {
            ok
        } else {
            SubAckReturnCode::Failure
        };
        assert_eq!(
            bad.recv().await,
            Some(Packet::SubAck(SubAck {
                packet_id: id,
                return_codes: vec![expected],
            })),
            "SUBSCRIBE {id}"
        );
    }
    named(&t, "max_subscriptions_per_connection", 2 + 100);
    assert_eq!(
        t.hub
            .metrics
            .limit_count("max_subscriptions_per_connection"),
        2 + 100
    );
    bad.send(&publish("bad", 7, b"still connected")).await;
    assert_eq!(bad.recv().await, Some(Packet::PubAck(7)));
    // Another device's topic is not a matter of limits: IoT Hub disconnects for it.
    bad.send(&Packet::Subscribe(Subscribe {
        packet_id: 300,
        filters: vec![(
            "devices/good/messages/devicebound/#".into(),
            QoS::AtLeastOnce,
        )],
    }))
    .await;
    assert_eq!(bad.recv().await, None);
    still_works(&mut good, 1).await;
    row(
        "subscription flood",
        "200 SUBSCRIBE packets for 4 filters from one device, next to another device",
        "limits.max_subscriptions_per_connection = 2",
        "filters past the limit get SUBACK 0x80 (102 times), counted (limit=\"max_subscriptions_per_connection\") and logged, the session keeps its 2 filters and stays connected; another device's topic disconnects (IoT Hub's rule)",
    );
}

#[tokio::test]
async fn an_oversized_packet_closes_only_its_connection() {
    let t = hub_with(|_| {}).await;
    let mut good = connected(&t, "good").await;
    let mut bad = connected(&t, "bad").await;
    // A PUBLISH announcing 1 MiB (max_packet_bytes is 64 KiB in the tests), then its first bytes.
    bad.send_raw(&[0x32, 0x80, 0x80, 0x40]).await;
    bad.send_raw(&[0u8; 1024]).await;
    assert_eq!(bad.recv().await, None);
    reached(&t, "max_packet_bytes", 1).await;
    named(&t, "max_packet_bytes", 1);
    assert!(!logs::matching(&["max=65536", "limits.max_packet_bytes"]).is_empty());
    still_works(&mut good, 1).await;
    row(
        "oversized packet",
        "a PUBLISH announcing 1 MiB, next to a connected device",
        "limits.max_packet_bytes = 64 KiB",
        "refused from its 4-byte header (nothing buffered), that connection closed, counted (limit=\"max_packet_bytes\") and logged with the size; the device served throughout",
    );
}

#[tokio::test]
async fn too_many_unacknowledged_publishes_pause_reading_and_lose_nothing() {
    let t = hub_with(|l| l.max_inflight_per_connection = 2).await;
    let mut good = connected(&t, "good").await;
    let mut bad = connected(&t, "bad").await;
    // 300 publishes in one write: the hub reads on only while at most 2 await their fsync.
    let mut burst = Vec::new();
    for id in 1..=300u16 {
        mqtt_codec::encode(&publish("bad", id, &id.to_be_bytes()), &mut burst).unwrap();
    }
    bad.send_raw(&burst).await;
    for id in 1..=300u16 {
        assert_eq!(bad.recv().await, Some(Packet::PubAck(id)), "PUBACK {id}");
    }
    named(&t, "max_inflight_per_connection", 1);
    // Logged once for the connection, counted every time.
    let lines = logs::matching(&["limits.max_inflight_per_connection", "Pausing reads"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let stored = t.hub.events.read(0, 1000, 1 << 20).unwrap();
    assert_eq!(stored.len(), 300, "every acknowledged message is stored");
    still_works(&mut good, 1).await;
    row(
        "too many in-flight messages",
        "300 QoS 1 publishes in one write from one device",
        "limits.max_inflight_per_connection = 2",
        &format!(
            "reading paused {} times (counted, logged once for the connection); all 300 acknowledged in order and stored; another device served throughout",
            t.hub.metrics.limit_count("max_inflight_per_connection")
        ),
    );
}

/// One HTTP/1.1 request on `s`, and the status line of the answer (its headers read in full).
async fn http_status<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) -> String {
    s.write_all(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "the hub closed early");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    // The body, announced by its length, so the next answer starts clean.
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head.lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn https_clients_without_a_request_are_closed_by_connect_timeout_secs() {
    let t = hub_with(|l| l.connect_timeout_secs = 2).await;
    // A client that asks in time keeps its connection past the deadline (keep-alive).
    let mut asking = Mqtt::tls_to(t.https, &t.root, None).await;
    assert!(
        http_status(asking.stream_mut())
            .await
            .starts_with("HTTP/1.1 ")
    );
    // Half-open: TCP and nothing; TLS done and no request.
    let mut silent = tcp_from("127.0.0.1", t.https).await;
    let mut quiet = Mqtt::tls_to(t.https, &t.root, None).await;
    assert!(closed_by_hub(&mut silent).await, "a silent peer is closed");
    assert!(
        closed_by_hub(quiet.stream_mut()).await,
        "TLS without a request is closed"
    );
    reached(&t, "connect_timeout_secs", 2).await;
    named(&t, "connect_timeout_secs", 2);
    let again = http_status(asking.stream_mut()).await;
    assert!(again.starts_with("HTTP/1.1 "), "{again}");
    row(
        "half-open HTTPS",
        "a silent TCP peer and a TLS connection that sends no request on the service API, next to a client with a request answered before",
        "limits.connect_timeout_secs = 2 (TLS and the first request together)",
        "both half-open connections closed by the hub, counted (limit=\"connect_timeout_secs\") and logged; the client that asked in time keeps its connection and is answered again after the deadline",
    );
}
