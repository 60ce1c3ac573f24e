//! Cloud-to-device messages: delivery with properties, completion by PUBACK, redelivery after a
//! reconnect, the queue depth limit, TTL and purge.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{KEY, Mqtt, TestHub, device_token, expiry, now};
use hyper::{Method, StatusCode};
use mqtt_codec::{Packet, QoS, Subscribe};
use serde_json::json;

async fn setup() -> TestHub {
    let t = TestHub::start().await;
    let body = json!({"deviceId": "dev1", "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    assert_eq!(
        t.client()
            .send(Method::PUT, "/devices/dev1", Some(&body), &[])
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    t
}

async fn subscribed(t: &TestHub, clean: bool) -> Mqtt {
    let mut c = Mqtt::tls(t, None).await;
    c.connect("dev1", Some(device_token("dev1", KEY, expiry())), clean)
        .await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "devices/dev1/messages/devicebound/#".into(),
            QoS::AtLeastOnce,
        )],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

async fn send(t: &TestHub, body: &str, ttl: u64) -> (StatusCode, serde_json::Value) {
    let req = json!({"body": body, "properties": {"color": "red blue"}, "messageId": body, "ttlSeconds": ttl});
    let r = t
        .client()
        .send(
            Method::POST,
            "/devices/dev1/messages/deviceBound",
            Some(&req),
            &[],
        )
        .await
        .unwrap();
    (r.status, r.json())
}

#[tokio::test]
async fn delivered_with_properties_completed_by_puback_and_redelivered_after_reconnect() {
    let t = setup().await;
    let mut c = subscribed(&t, false).await;
    assert_eq!(send(&t, "first", 600).await.0, StatusCode::OK);
    assert_eq!(send(&t, "second", 600).await.0, StatusCode::OK);
    let Some(Packet::Publish(p1)) = c.recv().await else {
        panic!("no delivery")
    };
    assert_eq!(p1.payload, b"first");
    assert!(
        p1.topic.starts_with("devices/dev1/messages/devicebound/"),
        "{}",
        p1.topic
    );
    assert!(
        p1.topic.contains("%24.mid=first") && p1.topic.contains("color=red%20blue"),
        "{}",
        p1.topic
    );
    assert!(!p1.dup);
    let Some(Packet::Publish(p2)) = c.recv().await else {
        panic!("no second delivery")
    };
    assert_eq!(p2.payload, b"second");
    // Acknowledge only the first, then drop the connection.
    c.send(&Packet::PubAck(p1.packet_id.unwrap())).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    drop(c);
    // The persisted session is still subscribed: the unacknowledged message comes again, marked DUP.
    let mut c = Mqtt::tls(&t, None).await;
    let (present, _) = c
        .connect("dev1", Some(device_token("dev1", KEY, expiry())), false)
        .await;
    assert!(present);
    let Some(Packet::Publish(again)) = c.recv().await else {
        panic!("no redelivery")
    };
    assert_eq!(again.payload, b"second");
    assert!(again.dup);
    c.send(&Packet::PubAck(again.packet_id.unwrap())).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    assert!(
        t.hub
            .registry
            .store()
            .c2d_pending("dev1", 0)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn queue_depth_ttl_purge_and_unknown_device() {
    let t = setup().await;
    for i in 0..50 {
        assert_eq!(send(&t, &format!("m{i}"), 600).await.0, StatusCode::OK);
    }
    let (status, body) = send(&t, "one too many", 600).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:DeviceMaximumQueueDepthExceeded;")
    );
    assert_eq!(
        t.hub.registry.store().c2d_pending("dev1", 0).unwrap().len(),
        50,
        "nothing else lost"
    );
    let purged = t
        .client()
        .send(Method::DELETE, "/devices/dev1/commands", None, &[])
        .await
        .unwrap()
        .json();
    assert_eq!(purged["totalMessagesPurged"], 50);
    // Expired messages are never delivered.
    assert_eq!(send(&t, "short", 1).await.0, StatusCode::OK);
    t.set_time(now() + time::Duration::seconds(5));
    let mut c = subscribed(&t, true).await;
    c.send(&Packet::PingReq).await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PingResp),
        "the expired message must not arrive"
    );
    let missing = t
        .client()
        .send(
            Method::POST,
            "/devices/ghost/messages/deviceBound",
            Some(&json!({"body": "x"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = t
        .client()
        .send(
            Method::POST,
            "/devices/dev1/messages/deviceBound",
            Some(&json!({"body": "x", "ttlSeconds": 0})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
