//! A device (or module) reaches only its own twin, messages and inputs: subscribing to another
//! identity's topics disconnects it, and twin requests always answer for the caller.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use common::{KEY, Mqtt, TestHub, device_token, expiry};
use hyper::{Method, StatusCode};
use mqtt_codec::{Packet, Publish, QoS, Subscribe};
use serde_json::{Value, json};

async fn create(t: &TestHub, path: &str, body: Value) {
    let r = t
        .client()
        .send(Method::PUT, path, Some(&body), &[])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{path}: {:?}", r.json());
}

async fn connected(t: &TestHub, client_id: &str) -> Mqtt {
    let mut c = Mqtt::tls(t, None).await;
    let resource = client_id.replace('/', "/modules/");
    let (_, code) = c
        .connect(
            client_id,
            Some(device_token(&resource, KEY, expiry())),
            true,
        )
        .await;
    assert_eq!(code, mqtt_codec::ConnectReturnCode::Accepted);
    c
}

async fn subscribe(c: &mut Mqtt, filter: &str) -> Option<Packet> {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(filter.into(), QoS::AtLeastOnce)],
    }))
    .await;
    c.recv().await
}

#[tokio::test]
async fn identities_reach_only_their_own_topics() {
    let t = TestHub::start().await;
    let keys = json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}});
    for d in ["dev1", "dev2"] {
        create(
            &t,
            &format!("/devices/{d}"),
            json!({"deviceId": d, "authentication": keys}),
        )
        .await;
    }
    create(
        &t,
        "/devices/dev1/modules/m1",
        json!({"moduleId": "m1", "authentication": keys}),
    )
    .await;
    create(
        &t,
        "/devices/dev1/modules/m2",
        json!({"moduleId": "m2", "authentication": keys}),
    )
    .await;
    let r = t
        .client()
        .send(
            Method::PATCH,
            "/twins/dev1",
            Some(&json!({"tags": {"secret": "dev1 only"}, "properties": {"desired": {"s": 1}}})),
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // Another device's cloud-to-device topic, another module's inputs, a device's C2D from a module.
    for (who, filter) in [
        ("dev2", "devices/dev1/messages/devicebound/#"),
        ("dev1/m2", "devices/dev1/modules/m1/inputs/#"),
        ("dev1/m1", "devices/dev1/messages/devicebound/#"),
    ] {
        let mut c = connected(&t, who).await;
        assert_eq!(
            subscribe(&mut c, filter).await,
            None,
            "{who} subscribing to {filter} is disconnected"
        );
    }
    // Twin requests carry no identity: dev2 gets dev2's (empty) twin, never dev1's.
    let mut c = connected(&t, "dev2").await;
    assert!(matches!(
        subscribe(&mut c, "$iothub/twin/res/#").await,
        Some(Packet::SubAck(_))
    ));
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$iothub/twin/GET/?$rid=9".into(),
        packet_id: None,
        payload: b" ".to_vec(),
    }))
    .await;
    let Some(Packet::Publish(p)) = c.recv().await else {
        panic!("no twin")
    };
    let twin: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(twin["desired"], json!({"$version": 1}), "dev2's own twin");
    // The module's own inputs are allowed.
    let mut m = connected(&t, "dev1/m1").await;
    assert!(matches!(
        subscribe(&mut m, "devices/dev1/modules/m1/inputs/#").await,
        Some(Packet::SubAck(_))
    ));
}
