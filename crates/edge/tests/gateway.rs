//! The gateway end to end on loopback: children in its scope connect to it as they would to the
//! hub and their telemetry reaches the hub as theirs; devices outside its scope are refused; while
//! the hub is down the gateway keeps acknowledging (durably) 10,000 messages and delivers them
//! all, in order, once the hub is back.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::sync::Arc;
use std::time::Duration;

use common::{KEY, Mqtt, TestHub, device_token, expiry};
use mqtt_codec::{ConnectReturnCode, Packet};
use serde_json::json;

/// Messages sent while the hub is down.
const OUTAGE: u64 = 10_000;

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
    c.send(&common::publish(
        &format!("devices/{id}/messages/events/kind=test"),
        packet_id,
        seq.to_string().as_bytes(),
    ))
    .await;
    assert!(
        matches!(c.recv().await, Some(Packet::PubAck(p)) if p == packet_id),
        "the gateway acknowledges {seq}"
    );
}

#[tokio::test]
async fn children_reach_the_hub_through_the_gateway_and_survive_an_outage() {
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    support::create(
        &t,
        "/devices/stranger",
        json!({"deviceId": "stranger", "authentication": support::sas_keys()}),
    )
    .await;
    let g = support::start(&t, &[]).await;
    let (gateway, gw_addr, gw_root) = (g.gateway.clone(), g.addr, g.root.clone());
    // A child connects with the hub's HostName in its username and token, to the gateway's address.
    let mut child = g.connect("child").await;
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
                .send(&common::publish(
                    "devices/child/messages/events/kind=test",
                    packet_id,
                    seq.to_string().as_bytes(),
                ))
                .await;
        }
        for _ in 0..100 {
            assert!(matches!(child.recv().await, Some(Packet::PubAck(_))));
        }
    }
    let hub = hub::Hub::open(
        hub_cfg,
        Arc::new(ferrohub_runtime::time::FixedClock(std::sync::Mutex::new(
            common::now(),
        ))),
    )
    .unwrap();
    let listeners = hub::Listeners::without_amqp(
        tokio::net::TcpListener::bind(mqtt_addr).await.unwrap(),
        tokio::net::TcpListener::bind(https_addr).await.unwrap(),
    );
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
    // The hub stores a batch before the gateway has read its PUBACKs and counted it.
    let forwarded = || gateway.forwarded.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..500 {
        if forwarded() >= OUTAGE + 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(forwarded() >= OUTAGE + 10, "forwarded: {}", forwarded());
    let _ = g.stop.send(true);
    let _ = hub_stop.send(true);
    drop(hub_dir);
}
