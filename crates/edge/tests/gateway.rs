//! The gateway end to end on loopback: children in its scope connect to it as they would to the
//! hub and their telemetry reaches the hub as theirs; devices outside its scope are refused; while
//! the hub is down the gateway keeps acknowledging (durably) 10,000 messages and delivers them
//! all, in order, once the hub is back.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

#[path = "../../hub/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{HOST, KEY, Mqtt, TestHub, device_token, expiry};
use hyper::Method;
use mqtt_codec::{ConnectReturnCode, Packet, Publish, QoS};
use serde_json::{Value, json};

/// Messages sent while the hub is down.
const OUTAGE: u64 = 10_000;

async fn create(t: &TestHub, path: &str, body: Value) -> Value {
    let r = t
        .client()
        .send(Method::PUT, path, Some(&body), &[])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{path}: {:?}", r.json());
    r.json()
}

fn child_events(hub: &hub::Hub, id: &str) -> Vec<u64> {
    hub.events
        .read(0, 100_000, 64 << 20)
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_slice::<hub::events::EventRecord>(&r.payload).ok())
        .filter(|e| {
            e.device_id == id
                && e.system_properties
                    .get("iothub-connection-device-id")
                    .map(String::as_str)
                    == Some(id)
        })
        .map(|e| e.body.parse().unwrap())
        .collect()
}

async fn wait_for(hub: &hub::Hub, id: &str, n: usize) -> Vec<u64> {
    for _ in 0..3000 {
        let seen = child_events(hub, id);
        let mut unique = seen.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() >= n {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child_events(hub, id)
}

async fn publish(c: &mut Mqtt, id: &str, seq: u64) {
    let packet_id = u16::try_from(seq % 60_000 + 1).unwrap();
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: format!("devices/{id}/messages/events/kind=test"),
        packet_id: Some(packet_id),
        payload: seq.to_string().into_bytes(),
    }))
    .await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(p)) if p == packet_id),
        "the gateway acknowledges {seq}"
    );
}

#[tokio::test]
async fn children_reach_the_hub_through_the_gateway_and_survive_an_outage() {
    let t = TestHub::start().await;
    let keys = json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}});
    let gw = create(
        &t,
        "/devices/gw",
        json!({"deviceId": "gw", "capabilities": {"iotEdge": true}, "authentication": keys}),
    )
    .await;
    create(
        &t,
        "/devices/child",
        json!({"deviceId": "child", "deviceScope": gw["deviceScope"], "authentication": keys}),
    )
    .await;
    create(
        &t,
        "/devices/stranger",
        json!({"deviceId": "stranger", "authentication": keys}),
    )
    .await;
    let edge_hub = t
        .client()
        .send(Method::GET, "/devices/gw/modules/$edgeHub", None, &[])
        .await
        .unwrap()
        .json();
    let dir = tempfile::tempdir().unwrap();
    let (gw_root, gw_cert, gw_key) = common::server_pki(dir.path());
    let config = edge::EdgeConfig {
        edge_id: "gw".into(),
        hub_hostname: HOST.into(),
        hub_mqtt: t.mqtt.to_string(),
        hub_https: t.https.to_string(),
        hub_ca: t.root.clone(),
        edge_hub_key: edge_hub["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .into(),
        tls_cert: gw_cert,
        tls_key: gw_key,
        data_dir: dir.path().join("edge"),
        routes: vec![],
        store_ttl_hours: 2,
        listen: "127.0.0.1:0".parse().unwrap(),
    };
    let clock: hub::time::SharedClock =
        Arc::new(hub::time::FixedClock(std::sync::Mutex::new(common::now())));
    let gateway = edge::Gateway::open(config, clock).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(gateway.clone().run(listener, Duration::from_secs(3600), rx));

    // A child connects with the hub's HostName in its username and token, to the gateway's address.
    let mut child = Mqtt::tls_to(gw_addr, &gw_root, None).await;
    let mut code = ConnectReturnCode::ServerUnavailable;
    for _ in 0..100 {
        // The first scope sync may still be running.
        child = Mqtt::tls_to(gw_addr, &gw_root, None).await;
        code = child
            .connect("child", Some(device_token("child", KEY, expiry())), true)
            .await
            .1;
        if code == ConnectReturnCode::Accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, ConnectReturnCode::Accepted);
    let mut stranger = Mqtt::tls_to(gw_addr, &gw_root, None).await;
    assert_eq!(
        stranger
            .connect(
                "stranger",
                Some(device_token("stranger", KEY, expiry())),
                true
            )
            .await
            .1,
        ConnectReturnCode::NotAuthorized,
        "not in the gateway's scope"
    );
    for seq in 0..10 {
        publish(&mut child, "child", seq).await;
    }
    assert_eq!(
        wait_for(&t.hub, "child", 10).await,
        (0..10).collect::<Vec<_>>()
    );

    // Outage: the hub goes away; the gateway keeps acknowledging; everything arrives afterwards.
    let (mqtt_addr, https_addr) = (t.mqtt, t.https);
    let (hub_dir, hub_cfg, _root) = t.stop().await;
    // 10,000 messages while the hub is down, 100 in flight at a time; each is acknowledged by the
    // gateway after its fsync.
    for window in (10..OUTAGE + 10).step_by(100) {
        for seq in window..window + 100 {
            let packet_id = u16::try_from(seq % 60_000 + 1).unwrap();
            child
                .send(&Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "devices/child/messages/events/kind=test".into(),
                    packet_id: Some(packet_id),
                    payload: seq.to_string().into_bytes(),
                }))
                .await;
        }
        for _ in 0..100 {
            assert!(matches!(child.recv().await, Some(Packet::PubAck(_))));
        }
    }
    let hub = hub::Hub::open(
        hub_cfg,
        Arc::new(hub::time::FixedClock(std::sync::Mutex::new(common::now()))),
    )
    .unwrap();
    let listeners = hub::Listeners {
        mqtt: tokio::net::TcpListener::bind(mqtt_addr).await.unwrap(),
        https: tokio::net::TcpListener::bind(https_addr).await.unwrap(),
    };
    let (hub_stop, hub_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hub::run(hub.clone(), listeners, hub_rx));
    let seen = wait_for(&hub, "child", OUTAGE as usize + 10).await;
    // At least once: a batch in flight when the hub stopped may arrive twice, but in order.
    let mut unique = seen.clone();
    unique.dedup();
    let expected: Vec<u64> = (0..OUTAGE + 10).collect();
    let first_wrong = unique.iter().zip(&expected).position(|(a, b)| a != b);
    assert!(
        unique.len() == expected.len() && first_wrong.is_none(),
        "every message, in order: {} unique of {}, first out of place at {first_wrong:?}",
        unique.len(),
        expected.len()
    );
    eprintln!("redelivered duplicates: {}", seen.len() - unique.len());
    assert!(gateway.forwarded.load(std::sync::atomic::Ordering::Relaxed) >= OUTAGE + 10);
    let _ = stop.send(true);
    let _ = hub_stop.send(true);
    drop(hub_dir);
}
