//! Through the gateway, a child gets everything it would get from the hub (direct methods, twin
//! GET / reported / desired patches, cloud-to-device messages), and the edge device's own modules
//! connect locally, with routes from the `$edgeHub` twin moving module outputs to module inputs
//! and child telemetry upstream.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Mqtt, TestHub};
use hyper::{Method, StatusCode};
use mqtt_codec::{Packet, Publish, QoS, Subscribe};
use serde_json::{Value, json};

async fn subscribe(c: &mut Mqtt, filters: &[&str]) {
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 7,
        filters: filters
            .iter()
            .map(|f| ((*f).to_owned(), QoS::AtLeastOnce))
            .collect(),
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
}

async fn publish(c: &mut Mqtt, topic: &str, payload: &[u8], packet_id: u16) {
    c.send(&common::publish(topic, packet_id, payload)).await;
}

/// The next PUBLISH whose topic starts with `prefix` (QoS 1 ones are acknowledged; PUBACKs and
/// other publishes are skipped).
async fn next(c: &mut Mqtt, prefix: &str) -> Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => {
                if let (QoS::AtLeastOnce, Some(id)) = (p.qos, p.packet_id) {
                    c.send(&Packet::PubAck(id)).await;
                }
                if p.topic.starts_with(prefix) {
                    return p;
                }
            }
            Some(_) => {}
            None => panic!("connection closed while waiting for {prefix}"),
        }
    }
}

fn json_of(p: &Publish) -> Value {
    serde_json::from_slice(&p.payload).unwrap()
}

async fn call(t: &TestHub, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let r = t
        .client()
        .send(method, path, body.as_ref(), &[])
        .await
        .unwrap();
    (r.status, r.json())
}

#[tokio::test]
async fn a_child_gets_methods_twins_and_c2d_through_the_gateway() {
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    let g = support::start(&t, &[]).await;
    let mut c = g.connect("child").await;
    subscribe(
        &mut c,
        &[
            "$iothub/twin/res/#",
            "$iothub/methods/POST/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "devices/child/messages/devicebound/#",
        ],
    )
    .await;

    // A direct method from the service reaches the child through the gateway, and its answer
    // comes back (the hub waits for the gateway's upstream session to subscribe).
    let body = json!({"methodName": "reboot", "payload": {"delay": 1},
                      "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 10});
    let hub_calls = tokio::spawn({
        let client = t.client();
        async move {
            client
                .send(Method::POST, "/twins/child/methods", Some(&body), &[])
                .await
                .unwrap()
                .json()
        }
    });
    let req = next(&mut c, "$iothub/methods/POST/reboot/").await;
    assert_eq!(json_of(&req), json!({"delay": 1}));
    let rid = req.topic.split("$rid=").nth(1).unwrap().to_owned();
    publish(
        &mut c,
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        br#"{"rebooted":true}"#,
        1,
    )
    .await;
    let answer = hub_calls.await.unwrap();
    assert_eq!(
        answer,
        json!({"status": 200, "payload": {"rebooted": true}})
    );

    // Twin: GET and a reported patch are answered by the hub.
    publish(
        &mut c,
        "$iothub/twin/PATCH/properties/reported/?$rid=r2",
        br#"{"temp":21}"#,
        2,
    )
    .await;
    let res = next(&mut c, "$iothub/twin/res/").await;
    assert!(
        res.topic.starts_with("$iothub/twin/res/204/?$rid=r2"),
        "{}",
        res.topic
    );
    let (_, twin) = call(&t, Method::GET, "/twins/child", None).await;
    assert_eq!(twin["properties"]["reported"]["temp"], 21);
    publish(&mut c, "$iothub/twin/GET/?$rid=r3", b"", 3).await;
    let res = next(&mut c, "$iothub/twin/res/").await;
    assert!(
        res.topic.starts_with("$iothub/twin/res/200/?$rid=r3"),
        "{}",
        res.topic
    );
    assert_eq!(json_of(&res)["reported"]["temp"], 21);

    // A desired patch from the service is pushed to the child.
    let (s, _) = call(
        &t,
        Method::PATCH,
        "/twins/child",
        Some(json!({"properties": {"desired": {"mode": "eco"}}})),
    )
    .await;
    assert!(s.is_success());
    let patch = next(&mut c, "$iothub/twin/PATCH/properties/desired/").await;
    assert_eq!(json_of(&patch)["mode"], "eco");

    // Cloud-to-device: queued at the gateway, delivered, completed at the hub once the gateway
    // has it.
    let (s, _) = call(
        &t,
        Method::POST,
        "/devices/child/messages/deviceBound",
        Some(json!({"body": "hello", "properties": {"k": "v"}, "messageId": "m-1"})),
    )
    .await;
    assert!(s.is_success());
    let msg = next(&mut c, "devices/child/messages/devicebound/").await;
    assert_eq!(msg.payload, b"hello");
    assert!(msg.topic.contains("k=v"), "{}", msg.topic);
    assert!(
        msg.topic.contains("%24.mid=m-1") || msg.topic.contains("$.mid=m-1"),
        "{}",
        msg.topic
    );
    let store = t.hub.registry.store().clone();
    let now = ferrohub_runtime::time::now_ms(t.hub.clock.as_ref());
    for _ in 0..200 {
        if store.c2d_pending("child", now).unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.c2d_pending("child", now).unwrap().is_empty(),
        "completed at the hub"
    );

    // Once the child is gone, the hub sees nobody listening for its methods: 404.
    c.send(&Packet::Disconnect).await;
    drop(c);
    let mut status = StatusCode::OK;
    for _ in 0..100 {
        let body = json!({"methodName": "reboot", "responseTimeoutInSeconds": 5});
        status = call(&t, Method::POST, "/twins/child/methods", Some(body))
            .await
            .0;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "DeviceNotOnline after the child left"
    );
    assert!(g.gateway.relay.stats.relayed_down.load(Ordering::Relaxed) >= 4);

    // A child added at the hub after the gateway's last scope sync connects at once: the gateway
    // looks the unknown identity up. A device outside the scope is still refused.
    support::child(&t, &gw, "late").await;
    let mut late = Mqtt::tls_to(g.addr, &g.root, None).await;
    let token = common::device_token("late", common::KEY, common::expiry());
    assert_eq!(
        late.connect("late", Some(token), true).await.1,
        mqtt_codec::ConnectReturnCode::Accepted
    );
    // Without a subscription or a message, the hub sees it connected: its upstream session opens
    // when it connects to the gateway (as with IoT Edge).
    let mut state = Value::Null;
    for _ in 0..250 {
        state = call(&t, Method::GET, "/devices/late", None).await.1["connectionState"].clone();
        if state == "Connected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "Connected", "the hub sees the late child connected");
    support::create(
        &t,
        "/devices/outsider",
        json!({"deviceId": "outsider", "authentication": support::sas_keys()}),
    )
    .await;
    let mut outsider = Mqtt::tls_to(g.addr, &g.root, None).await;
    let token = common::device_token("outsider", common::KEY, common::expiry());
    assert_eq!(
        outsider.connect("outsider", Some(token), true).await.1,
        mqtt_codec::ConnectReturnCode::NotAuthorized
    );
    let _ = g.stop.send(true);
}

fn hub_events(hub: &hub::Hub) -> Vec<hub::events::EventRecord> {
    hub.events
        .read(0, 10_000, 16 << 20)
        .unwrap()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.payload).ok())
        .collect()
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn set_desired(t: &TestHub, desired: Value) {
    let (s, body) = call(
        t,
        Method::PATCH,
        "/twins/gw/modules/$edgeHub",
        Some(json!({"properties": {"desired": desired}})),
    )
    .await;
    assert!(s.is_success(), "{body}");
}

#[tokio::test]
async fn edge_hub_twin_routes_module_outputs_to_inputs_and_children_upstream() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let t = TestHub::start().await;
    let gw = support::edge_device(&t).await;
    support::child(&t, &gw, "child").await;
    for m in ["a", "b"] {
        support::create(
            &t,
            &format!("/devices/gw/modules/{m}"),
            json!({"moduleId": m, "authentication": support::sas_keys()}),
        )
        .await;
    }
    set_desired(
        &t,
        json!({
            "schemaVersion": "1.1",
            "routes": {
                "aToB": "FROM /messages/modules/a/outputs/o1 INTO BrokeredEndpoint(\"/modules/b/inputs/i1\")",
                "up": {"route": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO $upstream", "priority": 0}
            },
            "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
        }),
    )
    .await;
    let g = support::start(&t, &[]).await;
    let gateway = g.gateway.clone();
    until("the $edgeHub routes", || {
        gateway.stats.desired_applied.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(
        gateway
            .routes()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["aToB", "up"]
    );

    // Module a's output o1 reaches module b's input i1, with the sender's properties.
    let mut b = g.connect("gw/b").await;
    subscribe(&mut b, &["devices/gw/modules/b/inputs/#"]).await;
    let mut a = g.connect("gw/a").await;
    publish(
        &mut a,
        "devices/gw/modules/a/messages/events/%24.on=o1&k=v",
        b"m1",
        1,
    )
    .await;
    assert!(matches!(a.recv().await, Some(Packet::PubAck(1))));
    let input = next(&mut b, "devices/gw/modules/b/inputs/i1/").await;
    assert_eq!(input.payload, b"m1");
    assert!(input.topic.contains("k=v"), "{}", input.topic);
    assert!(input.topic.contains("cmid=a"), "{}", input.topic);

    // The child's telemetry goes upstream; module a's does not (no route for it).
    let mut c = g.connect("child").await;
    publish(&mut c, "devices/child/messages/events/", b"c1", 1).await;
    assert!(matches!(c.recv().await, Some(Packet::PubAck(1))));
    until("the child's message at the hub", || {
        hub_events(&t.hub)
            .iter()
            .any(|e| e.device_id == "child" && e.body == "c1")
    })
    .await;
    assert!(!hub_events(&t.hub).iter().any(|e| e.module_id.is_some()));

    // A desired patch adds a route: module a's outputs now go upstream, as module a.
    set_desired(
        &t,
        json!({"routes": {"aUp": "FROM /messages/modules/a/outputs/* INTO $upstream"}}),
    )
    .await;
    until("the patched routes", || {
        gateway.stats.desired_applied.load(Ordering::Relaxed) >= 2
    })
    .await;
    publish(
        &mut a,
        "devices/gw/modules/a/messages/events/%24.on=o2",
        b"m2",
        2,
    )
    .await;
    assert!(matches!(a.recv().await, Some(Packet::PubAck(2))));
    until("module a's message at the hub", || {
        hub_events(&t.hub).iter().any(|e| {
            e.module_id.as_deref() == Some("a")
                && e.body == "m2"
                && e.system_properties
                    .get("iothub-connection-module-id")
                    .map(String::as_str)
                    == Some("a")
        })
    })
    .await;

    // A broken route is refused with the reason logged; the routes in force stay.
    set_desired(&t, json!({"routes": {"bad": "FROM /messages/* INTO"}})).await;
    until("the refusal", || {
        gateway.stats.desired_refused.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(gateway.routes().len(), 3);

    // A module the hub does not know cannot connect to the gateway.
    let mut stranger = Mqtt::tls_to(g.addr, &g.root, None).await;
    let token = common::device_token("gw/modules/zz", common::KEY, common::expiry());
    assert_ne!(
        stranger.connect("gw/zz", Some(token), true).await.1,
        mqtt_codec::ConnectReturnCode::Accepted
    );
    let _ = g.stop.send(true);
}
