//! A gateway's `$edgeHub` connection may carry telemetry for its edge device, its modules and its
//! children: each message is stored as the sender's. Messages for anyone else are acknowledged and
//! dropped (counted, logged) without closing the gateway's connection; any other identity that
//! publishes to another's topic is still disconnected.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{KEY, Mqtt, TestHub, device_token, expiry, publish};
use hyper::Method;
use mqtt_codec::{ConnectReturnCode, Packet};
use serde_json::{Value, json};

async fn put(t: &TestHub, path: &str, body: Value) -> Value {
    let r = t
        .client()
        .send(Method::PUT, path, Some(&body), &[("if-match", "*")])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{path}: {:?}", r.json());
    r.json()
}

async fn get(t: &TestHub, path: &str) -> Value {
    t.client()
        .send(Method::GET, path, None, &[])
        .await
        .unwrap()
        .json()
}

fn keys() -> Value {
    json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}})
}

/// Registers the edge device `gw` and its child `child` (SAS, key [`KEY`]); returns both.
async fn edge_with_child(t: &TestHub) -> (Value, Value) {
    let gw = json!({"deviceId": "gw", "capabilities": {"iotEdge": true}, "authentication": keys()});
    let gw = put(t, "/devices/gw", gw).await;
    let scope = gw["deviceScope"].as_str().unwrap();
    let child = json!({"deviceId": "child", "deviceScope": scope, "authentication": keys()});
    let child = put(t, "/devices/child", child).await;
    (gw, child)
}

/// Sends `body` on `topic` and expects the PUBACK.
async fn acked(c: &mut Mqtt, topic: &str, id: u16, body: &str) {
    c.send(&publish(topic, id, body.as_bytes())).await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(id)), "{topic}");
}

/// (device, module, body, generation id) of every stored message.
fn stored(t: &TestHub) -> Vec<(String, Option<String>, String, String)> {
    t.hub
        .events
        .read(0, 100, 1 << 20)
        .unwrap()
        .iter()
        .map(|r| {
            let e: hub::events::EventRecord = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(
                e.system_properties["iothub-connection-device-id"],
                e.device_id
            );
            let generation = e.system_properties["iothub-connection-auth-generation-id"].clone();
            (e.device_id, e.module_id, e.body, generation)
        })
        .collect()
}

#[tokio::test]
async fn the_edge_hub_connection_carries_its_childrens_telemetry_only() {
    let t = TestHub::start().await;
    let (gw, child) = edge_with_child(&t).await;
    put(
        &t,
        "/devices/child/modules/m",
        json!({"moduleId": "m", "authentication": keys()}),
    )
    .await;
    put(
        &t,
        "/devices/stranger",
        json!({"deviceId": "stranger", "authentication": keys()}),
    )
    .await;
    let edge_hub = get(&t, "/devices/gw/modules/$edgeHub").await;
    let edge_key = edge_hub["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();

    let mut c = Mqtt::tls(&t, None).await;
    let token = device_token("gw/modules/$edgeHub", edge_key, expiry());
    let (_, code) = c.connect("gw/$edgeHub", Some(token), true).await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    acked(&mut c, "devices/child/messages/events/", 1, "from-child").await;
    acked(
        &mut c,
        "devices/child/modules/m/messages/events/",
        2,
        "from-m",
    )
    .await;
    acked(&mut c, "devices/gw/messages/events/", 3, "from-gw").await;
    // Not a child: acknowledged (the gateway must not send it forever) but not stored.
    acked(&mut c, "devices/stranger/messages/events/", 4, "x").await;
    acked(
        &mut c,
        "devices/child/modules/nope/messages/events/",
        5,
        "x",
    )
    .await;

    // Disabled at the hub: the connection notices at the next message (the registry changed).
    let mut disabled = child.clone();
    disabled["status"] = json!("disabled");
    put(&t, "/devices/child", disabled).await;
    acked(&mut c, "devices/child/messages/events/", 6, "after-disable").await;
    // Still serving the devices it may speak for.
    acked(&mut c, "devices/gw/messages/events/", 7, "gw-again").await;

    let got = stored(&t);
    let module = get(&t, "/devices/child/modules/m").await;
    let generation = |v: &Value| v["generationId"].as_str().unwrap().to_owned();
    let want = [
        ("child", None, "from-child", generation(&child)),
        ("child", Some("m"), "from-m", generation(&module)),
        ("gw", None, "from-gw", generation(&gw)),
        ("gw", None, "gw-again", generation(&gw)),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(d, m, b, g)| (d.to_owned(), m.map(str::to_owned), b.to_owned(), g))
        .collect();
    assert_eq!(got, want);
    let metrics = t.hub.metrics.render(0);
    assert!(
        metrics.contains("ferrohub_messages_refused_total 3"),
        "{metrics}"
    );
    for reason in ["out_of_scope", "unknown_module", "disabled"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"}} 1")),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test]
async fn any_other_identity_publishing_for_another_is_disconnected() {
    let t = TestHub::start().await;

    edge_with_child(&t).await;
    put(
        &t,
        "/devices/gw/modules/other",
        json!({"moduleId": "other", "authentication": keys()}),
    )
    .await;
    // The edge device itself and another of its modules are not its `$edgeHub`.
    for (client, resource) in [("gw", "gw"), ("gw/other", "gw/modules/other")] {
        let mut c = Mqtt::tls(&t, None).await;
        let (_, code) = c
            .connect(client, Some(device_token(resource, KEY, expiry())), true)
            .await;
        assert_eq!(code, ConnectReturnCode::Accepted, "{client}");
        c.send(&publish("devices/child/messages/events/", 1, b"x"))
            .await;
        assert_eq!(c.recv().await, None, "{client} must be disconnected");
    }
    assert!(stored(&t).is_empty());
}
