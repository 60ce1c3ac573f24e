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

/// A gateway connects on behalf of a child with `auth-chain={child};{edge}` and its `$edgeHub`
/// token: accepted for its own children only, and the telemetry is the child's.
#[tokio::test]
async fn a_gateway_connects_on_behalf_of_its_children_only() {
    let t = TestHub::start().await;
    let keys = json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}});
    create(
        &t,
        "/devices/gw",
        json!({"deviceId": "gw", "capabilities": {"iotEdge": true}, "authentication": keys}),
    )
    .await;
    let gw = t
        .client()
        .send(Method::GET, "/devices/gw", None, &[])
        .await
        .unwrap()
        .json();
    let scope = gw["deviceScope"].as_str().unwrap().to_owned();
    create(
        &t,
        "/devices/child",
        json!({"deviceId": "child", "deviceScope": scope, "authentication": keys}),
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
    let edge_key = edge_hub["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let gateway_token = |key: &str| device_token("gw/modules/$edgeHub", key, expiry());
    let on_behalf = |who: &str, chain: &str, token: String| {
        let (who, chain) = (who.to_owned(), chain.to_owned());
        let t = &t;
        async move {
            let mut c = Mqtt::tls(t, None).await;
            let username = format!(
                "{}/{who}/?api-version=2021-04-12&auth-chain={chain}",
                common::HOST
            );
            let (_, code) = c.connect_as(&who, &username, Some(token), true).await;
            (c, code)
        }
    };
    use mqtt_codec::ConnectReturnCode::{Accepted, BadUsernameOrPassword, NotAuthorized};
    let (mut c, code) = on_behalf("child", "child;gw", gateway_token(&edge_key)).await;
    assert_eq!(code, Accepted);
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/child/messages/events/".into(),
        packet_id: Some(1),
        payload: b"via-gw".to_vec(),
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(1))));
    let records = t.hub.events.read(0, 100, 1 << 20).unwrap();
    let e: hub::events::EventRecord =
        serde_json::from_slice(&records.last().unwrap().payload).unwrap();
    assert_eq!((e.device_id.as_str(), e.body.as_str()), ("child", "via-gw"));
    assert_eq!(e.system_properties["iothub-connection-device-id"], "child");
    // Not its child, a wrong key, a chain that does not start with the client, no token.
    assert_eq!(
        on_behalf("stranger", "stranger;gw", gateway_token(&edge_key))
            .await
            .1,
        NotAuthorized
    );
    assert_eq!(
        on_behalf("child", "child;gw", gateway_token(KEY)).await.1,
        NotAuthorized
    );
    assert_eq!(
        on_behalf("child", "gw;child", gateway_token(&edge_key))
            .await
            .1,
        BadUsernameOrPassword
    );
    assert_eq!(
        on_behalf("child", "child;stranger", gateway_token(&edge_key))
            .await
            .1,
        NotAuthorized
    );
    let metrics = t.hub.metrics.render(0);
    assert!(metrics.contains("reason=\"out_of_scope\"} 2"), "{metrics}");
}
