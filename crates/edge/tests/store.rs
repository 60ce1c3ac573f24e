//! The gateway's store limit while the hub is away: `refuse` closes the sender's connection
//! without acknowledging (every acknowledged message still arrives), `drop_oldest` keeps
//! accepting and drops the oldest undelivered messages (counted); metrics show the backlog.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Mqtt, TestHub};
use mqtt_codec::Packet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A 32 KiB body: 1 MiB of store holds about 32 of them.
fn body(seq: u64) -> Vec<u8> {
    let mut b = format!("{seq:08}").into_bytes();
    b.resize(32 * 1024, b'x');
    b
}

/// Publishes `seq` and waits for its PUBACK; `false` when the gateway closed the connection.
async fn send(c: &mut Mqtt, seq: u64) -> bool {
    let packet_id = u16::try_from(seq % 60_000 + 1).unwrap();
    c.send(&common::publish(
        "devices/child/messages/events/",
        packet_id,
        &body(seq),
    ))
    .await;
    matches!(c.recv().await, Some(Packet::PubAck(p)) if p == packet_id)
}

/// Sequence numbers of the child's messages at `hub`, waiting until `n` distinct ones arrived.
async fn arrived(hub: &hub::Hub, n: usize) -> Vec<u64> {
    let mut seen = Vec::new();
    for _ in 0..1500 {
        seen = hub
            .events
            .read(0, 100_000, 256 << 20)
            .unwrap()
            .iter()
            .filter_map(|r| serde_json::from_slice::<hub::events::EventRecord>(&r.payload).ok())
            .filter(|e| e.device_id == "child")
            .map(|e| e.body[..8].parse().unwrap())
            .collect();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

async fn restart(
    cfg: hub::config::HubConfig,
    mqtt: std::net::SocketAddr,
    https: std::net::SocketAddr,
) -> (Arc<hub::Hub>, tokio::sync::watch::Sender<bool>) {
    let clock = Arc::new(ferrohub_runtime::time::FixedClock(std::sync::Mutex::new(
        common::now(),
    )));
    let hub = hub::Hub::open(cfg, clock).unwrap();
    let listeners = hub::Listeners::without_amqp(
        tokio::net::TcpListener::bind(mqtt).await.unwrap(),
        tokio::net::TcpListener::bind(https).await.unwrap(),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hub::run(hub.clone(), listeners, rx));
    (hub, stop)
}

async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_full_store_refuses_new_messages_and_loses_none_it_acknowledged() {
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    let metrics_addr = test_support::net::free_addr();
    let g = support::start_with(&t, &[], |c| {
        c.store_max_mib = 1;
        c.metrics_listen = Some(metrics_addr);
    })
    .await;
    let mut c = g.connect("child").await;
    let (mqtt, https) = (t.mqtt, t.https);
    let (_dir, cfg, _root) = t.stop().await;

    // With the hub away, the store fills up; then the gateway closes the connection instead of
    // acknowledging (the device keeps that message).
    let mut acked = 0;
    loop {
        if !send(&mut c, acked).await {
            break;
        }
        acked += 1;
        assert!(acked < 2_000, "the store limit never applied");
        if acked % 16 == 0 {
            // The fill level is checked periodically.
            tokio::time::sleep(edge::store::TICK).await;
        }
    }
    assert!(
        acked >= 16,
        "the gateway took messages before it was full ({acked})"
    );
    assert!(g.gateway.stats.refused.load(Ordering::Relaxed) >= 1);
    let text = metrics(metrics_addr).await;
    assert_eq!(metric(&text, "gateway_store_full"), 1.0);
    assert_eq!(
        metric(&text, "gateway_store_backlog_messages"),
        acked as f64
    );
    assert!(metric(&text, "gateway_refused_total") >= 1.0);
    assert!(text.contains("gateway_store_oldest_age_seconds"));

    // The hub comes back: every acknowledged message arrives, the store drains and takes
    // messages again.
    let (hub, stop) = restart(cfg, mqtt, https).await;
    assert_eq!(
        arrived(&hub, acked as usize).await,
        (0..acked).collect::<Vec<_>>()
    );
    for _ in 0..200 {
        if !g.gateway.stats.full.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut c = g.connect("child").await;
    assert!(send(&mut c, acked).await, "accepted again once drained");
    assert_eq!(g.gateway.stats.dropped.load(Ordering::Relaxed), 0);
    let _ = (stop.send(true), g.stop.send(true));
}

#[tokio::test]
async fn drop_oldest_keeps_accepting_and_counts_what_it_dropped() {
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    let g = support::start_with(&t, &[], |c| {
        c.store_max_mib = 1;
        c.store_full = edge::StoreFull::DropOldest;
    })
    .await;
    let mut c = g.connect("child").await;
    let (mqtt, https) = (t.mqtt, t.https);
    let (_dir, cfg, _root) = t.stop().await;
    let sent = 200; // 6.4 MiB through a 1 MiB store
    for seq in 0..sent {
        assert!(send(&mut c, seq).await, "drop_oldest never refuses ({seq})");
        if seq % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(edge::store::TICK * 3).await;
    let dropped = g.gateway.stats.dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "the oldest messages were dropped");
    let (hub, stop) = restart(cfg, mqtt, https).await;
    let seen = arrived(&hub, (sent - dropped) as usize).await;
    // What arrives is the newest part, in full; with what was dropped, it accounts for all.
    assert_eq!(seen.len() as u64 + dropped, sent);
    assert_eq!(seen, (dropped..sent).collect::<Vec<_>>());
    let _ = (stop.send(true), g.stop.send(true));
}

#[test]
fn a_metrics_listener_off_loopback_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    let config = |listen: &str| {
        format!(
            "edge_id = \"gw\"\nhub_hostname = \"localhost\"\nhub_mqtt = \"127.0.0.1:8883\"\n\
             hub_https = \"127.0.0.1:443\"\nhub_ca = \"ca.pem\"\nedge_hub_key = \"k\"\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ndata_dir = \"data\"\n\
             metrics_listen = \"{listen}\"\n"
        )
    };
    std::fs::write(&path, config("0.0.0.0:9601")).unwrap();
    let err = edge::EdgeConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("metrics_listen") && err.contains("loopback") && err.contains("edge.toml"),
        "{err}"
    );
    std::fs::write(&path, config("127.0.0.1:9601")).unwrap();
    edge::EdgeConfig::load(&path).unwrap();
}
