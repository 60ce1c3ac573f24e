//! A device (or module) reaches only its own twin, messages and inputs: subscribing to another
//! identity's topics disconnects it, and twin requests always answer for the caller.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

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
    c.send(&common::publish(
        "devices/child/messages/events/",
        1,
        b"via-gw",
    ))
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

/// The gateway's `$edgeHub` reads its device scope (itself, its children, their modules, with keys)
/// and nothing else; other tokens are refused.
#[tokio::test]
async fn the_edge_hub_reads_its_device_scope() {
    let t = TestHub::start().await;
    let keys = json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}});
    create(
        &t,
        "/devices/gw",
        json!({"deviceId": "gw", "capabilities": {"iotEdge": true}, "authentication": keys}),
    )
    .await;
    let scope = t
        .client()
        .send(Method::GET, "/devices/gw", None, &[])
        .await
        .unwrap()
        .json()["deviceScope"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..3 {
        create(
            &t,
            &format!("/devices/kid{i}"),
            json!({"deviceId": format!("kid{i}"), "deviceScope": scope, "authentication": keys}),
        )
        .await;
    }
    create(
        &t,
        "/devices/kid0/modules/m",
        json!({"moduleId": "m", "authentication": keys}),
    )
    .await;
    create(
        &t,
        "/devices/other",
        json!({"deviceId": "other", "authentication": keys}),
    )
    .await;
    let edge_key = t
        .client()
        .send(Method::GET, "/devices/gw/modules/$edgeHub", None, &[])
        .await
        .unwrap()
        .json()["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = device_token("gw/modules/$edgeHub", &edge_key, expiry());
    let get = |path: String, token: String| {
        let t = &t;
        async move {
            let tls = ferrohub_runtime::tls::client_config(&t.root).unwrap();
            let c = ferrohub_runtime::client::ServiceClient::new(
                t.https.to_string(),
                common::HOST.into(),
                String::new(),
                vec![],
                tls,
            )
            .with_api_version("2018-08-30-preview")
            .with_authorization(Some(token));
            c.send(Method::GET, &path, None, &[]).await.unwrap()
        }
    };
    let mut ids = Vec::new();
    let mut path =
        "/devices/gw/modules/$edgeHub/devicesAndModulesInDeviceScope?deviceCount=2".to_owned();
    loop {
        let r = get(path.clone(), token.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
        let page = r.json();
        ids.extend(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["deviceId"].as_str().unwrap().to_owned()),
        );
        assert!(
            page["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["authentication"]["symmetricKey"]["primaryKey"].is_string())
        );
        match page["continuationLink"].as_str() {
            Some(link) => path = link.to_owned(),
            None => break,
        }
    }
    assert_eq!(ids, ["gw", "kid0", "kid1", "kid2"]);
    let one = get("/devices/gw/modules/$edgeHub/deviceAndModuleInDeviceScope?targetDeviceId=kid0&targetModuleId=m".into(), token.clone()).await.json();
    assert_eq!(one["devices"][0]["deviceId"], "kid0");
    assert_eq!(one["modules"].as_array().unwrap().len(), 1);
    let outside = get(
        "/devices/gw/modules/$edgeHub/deviceAndModuleInDeviceScope?targetDeviceId=other".into(),
        token,
    )
    .await
    .json();
    assert_eq!(outside["devices"], json!([]));
    let device_token_only = device_token("gw", KEY, expiry());
    assert_eq!(
        get(
            "/devices/gw/modules/$edgeHub/devicesAndModulesInDeviceScope".into(),
            device_token_only
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
}

/// A stopped hub serves no one: live sessions are closed, not left writing to its log.
#[tokio::test]
async fn stopping_the_hub_closes_live_sessions() {
    let t = TestHub::start().await;
    let keys = json!({"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}});
    create(
        &t,
        "/devices/dev1",
        json!({"deviceId": "dev1", "authentication": keys}),
    )
    .await;
    let mut c = connected(&t, "dev1").await;
    drop(t.stop().await);
    assert_eq!(c.recv().await, None, "the connection is closed");
}
