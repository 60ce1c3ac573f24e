//! Authorization of live MQTT sessions: a device or module publishing as someone else; a SAS
//! token replayed on a second connection (allowed, as IoT Hub does: the newer connection replaces
//! the older), for the device's own modules (allowed) or for another identity (refused); a device
//! disabled or deleted while connected (its sessions and its modules' are closed at once and it
//! cannot come back); keys, thumbprints, a gateway's keys or a CA changed while connected (the
//! sessions that rested on them are closed, no others); and a token that expires during a session
//! (closed at the expiry, and nothing is delivered to it after).

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use std::time::Duration;

use common::{Mqtt, Pki, TestHub, device_token, expiry, now, reason_count, x509_device};
use hub_wire::model::AuthType;
use hyper::{Method, StatusCode};
use mqtt_codec::ConnectReturnCode::{Accepted, NotAuthorized};
use mqtt_codec::{ConnectReturnCode, Packet};
use serde_json::{Value, json};

async fn put(t: &TestHub, path: &str, body: Value) -> Value {
    let r = t
        .client()
        .send(Method::PUT, path, Some(&body), &[("If-Match", "*")])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{path}: {:?}", r.json());
    r.json()
}

/// Every identity has its own SAS key (base64 of 32 bytes made from its client id).
fn key_of(client_id: &str) -> String {
    use base64::Engine as _;
    let mut bytes = format!("{client_id}-key-").into_bytes();
    bytes.resize(32, b'.');
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn keys(client_id: &str) -> Value {
    json!({"symmetricKey": {"primaryKey": key_of(client_id), "secondaryKey": key_of(client_id)}})
}

/// Devices dev1 (with modules m1, m2) and dev2, each with its own SAS key.
async fn registry(t: &TestHub) {
    for d in ["dev1", "dev2"] {
        let body = json!({"deviceId": d, "authentication": keys(d)});
        put(t, &format!("/devices/{d}"), body).await;
    }
    for m in ["m1", "m2"] {
        let body = json!({"moduleId": m, "authentication": keys(&format!("dev1/{m}"))});
        put(t, &format!("/devices/dev1/modules/{m}"), body).await;
    }
}

/// A token for `client_id`'s own resource, signed with its own key.
fn token_for(client_id: &str) -> String {
    signed(client_id, expiry())
}

fn signed(client_id: &str, expiry: u64) -> String {
    device_token(
        &client_id.replace('/', "/modules/"),
        &key_of(client_id),
        expiry,
    )
}

async fn attempt(t: &TestHub, client_id: &str, token: String) -> (Mqtt, ConnectReturnCode) {
    let mut c = Mqtt::tls(t, None).await;
    let (_, code) = c.connect(client_id, Some(token), true).await;
    (c, code)
}

async fn connected(t: &TestHub, client_id: &str) -> Mqtt {
    let (c, code) = attempt(t, client_id, token_for(client_id)).await;
    assert_eq!(code, Accepted, "{client_id} connects");
    c
}

fn publish(topic: &str, packet_id: u16) -> Packet {
    common::publish(topic, packet_id, b"{}")
}

/// The session still works: a QoS 1 message is acknowledged.
async fn alive(c: &mut Mqtt, client_id: &str, packet_id: u16) {
    let topic = match client_id.split_once('/') {
        Some((d, m)) => format!("devices/{d}/modules/{m}/messages/events/"),
        None => format!("devices/{client_id}/messages/events/"),
    };
    c.send(&publish(&topic, packet_id)).await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PubAck(packet_id)),
        "{client_id} is served"
    );
}

fn stored(t: &TestHub) -> usize {
    t.hub.events.read(0, 10_000, 16 << 20).unwrap().len()
}

#[tokio::test]
async fn publishing_as_another_identity_disconnects_and_stores_nothing() {
    let t = TestHub::start().await;
    registry(&t).await;
    let cases = [
        ("dev2", "devices/dev1/messages/events/"),
        ("dev1", "devices/dev2/messages/events/"),
        ("dev1", "devices/dev1/modules/m1/messages/events/"),
        ("dev1/m1", "devices/dev1/messages/events/"),
        ("dev1/m1", "devices/dev1/modules/m2/messages/events/"),
        ("dev1/m2", "devices/dev2/messages/events/"),
    ];
    for (who, topic) in cases {
        let mut c = connected(&t, who).await;
        c.send(&publish(topic, 1)).await;
        assert_eq!(
            c.recv().await,
            None,
            "{who} publishing to {topic} is disconnected"
        );
    }
    assert_eq!(stored(&t), 0, "nothing was stored on anyone's behalf");
    // Each identity's own topic is fine.
    for who in ["dev1", "dev2", "dev1/m1", "dev1/m2"] {
        alive(&mut connected(&t, who).await, who, 7).await;
    }
    assert_eq!(stored(&t), 4);
    println!(
        "RELIABILITY|authorization: publishing as another identity|4 identities (2 devices, 2 modules), each with its own key|{} publishes to another device's or module's telemetry topic|each connection closed at its first such PUBLISH, nothing stored on anyone's behalf; each identity's own topic served|0",
        cases.len()
    );
}

#[tokio::test]
async fn a_replayed_token_is_accepted_for_its_identity_only_and_an_expired_one_never() {
    let t = TestHub::start().await;
    registry(&t).await;
    let token = token_for("dev1");
    let (mut first, code) = attempt(&t, "dev1", token.clone()).await;
    assert_eq!(code, Accepted);
    // The same (unexpired) token from a second connection: accepted, and it replaces the first.
    let (mut second, code) = attempt(&t, "dev1", token.clone()).await;
    assert_eq!(code, Accepted, "IoT Hub accepts a token until it expires");
    assert_eq!(first.recv().await, None, "the older connection is closed");
    alive(&mut second, "dev1", 1).await;
    // Replayed for another device: the token names dev1 and is signed with dev1's key.
    let (_, code) = attempt(&t, "dev2", token.clone()).await;
    assert_eq!(code, NotAuthorized, "dev1's token as dev2");
    // A device's own token also opens its modules (the device owns them, as at IoT Hub) ...
    let (_, code) = attempt(&t, "dev1/m1", token.clone()).await;
    assert_eq!(code, Accepted, "dev1's token for its module m1");
    // ... but a module's token opens neither its device nor a sibling module.
    for other in ["dev1", "dev1/m2"] {
        let (_, code) = attempt(&t, other, token_for("dev1/m1")).await;
        assert_eq!(code, NotAuthorized, "m1's token as {other}");
    }
    // Expired (beyond the 5-minute skew), replayed or fresh: refused.
    let past = u64::try_from(now().unix_timestamp()).unwrap() - 3600;
    let (_, code) = attempt(&t, "dev1", signed("dev1", past)).await;
    assert_eq!(code, NotAuthorized);
    // Once the token has expired, replaying it is refused too.
    t.set_time(now() + time::Duration::hours(2));
    let (_, code) = attempt(&t, "dev1", token).await;
    assert_eq!(code, NotAuthorized, "the same token after its expiry");
    // ... and the session it opened ends at its next packet.
    second
        .send(&publish("devices/dev1/messages/events/", 2))
        .await;
    assert_eq!(
        second.recv().await,
        None,
        "the live session ends with its token"
    );
    println!(
        "RELIABILITY|authorization: replayed and expired SAS tokens|a device and its modules with their own keys|a valid token replayed from a second connection, for another device, across a device and its modules; tokens expired at CONNECT and replayed after their expiry|replay for the same identity accepted and the older connection closed (as IoT Hub), a device's token opens its own modules only, every other identity and every expired token refused (NotAuthorized), a live session closed once its token expired|0"
    );
}

#[tokio::test]
async fn a_device_disabled_during_its_session_is_disconnected_with_its_modules() {
    let t = TestHub::start().await;
    registry(&t).await;
    let mut dev = connected(&t, "dev1").await;
    let mut module = connected(&t, "dev1/m1").await;
    let mut other = connected(&t, "dev2").await;
    alive(&mut dev, "dev1", 1).await;
    let mut record = t
        .client()
        .send(Method::GET, "/devices/dev1", None, &[])
        .await
        .unwrap()
        .json();
    record["status"] = json!("disabled");
    put(&t, "/devices/dev1", record.clone()).await;
    assert_eq!(
        dev.recv().await,
        None,
        "the disabled device's session is closed"
    );
    assert_eq!(module.recv().await, None, "and its module's");
    let (_, code) = attempt(&t, "dev1", token_for("dev1")).await;
    assert_eq!(code, NotAuthorized, "a disabled device cannot come back");
    let (_, code) = attempt(&t, "dev1/m1", token_for("dev1/m1")).await;
    assert_eq!(code, NotAuthorized, "nor its modules");
    alive(&mut other, "dev2", 1).await;
    // Enabled again: it connects.
    record["status"] = json!("enabled");
    put(&t, "/devices/dev1", record).await;
    let mut dev = connected(&t, "dev1").await;
    alive(&mut dev, "dev1", 2).await;
    // Deleted while connected: closed, and unknown from then on.
    let r = t
        .client()
        .send(Method::DELETE, "/devices/dev1", None, &[("If-Match", "*")])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        dev.recv().await,
        None,
        "the deleted device's session is closed"
    );
    let (_, code) = attempt(&t, "dev1", token_for("dev1")).await;
    assert_eq!(code, NotAuthorized);
    alive(&mut other, "dev2", 2).await;
    println!(
        "RELIABILITY|authorization: device disabled or deleted during its session|a device and one of its modules connected, another device connected|status set to disabled through the service API; enabled again; deleted|both sessions of the device closed at once, reconnects refused until enabled again, deleted device refused; the other device served throughout|0"
    );
}

/// IoT Hub closes an MQTT connection when its SAS token expires (the SDKs reconnect with a fresh
/// one); so does this hub, and a packet after the expiry is never served.
#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let t = TestHub::start().await;
    registry(&t).await;
    let soon = u64::try_from(now().unix_timestamp()).unwrap() + 60;
    let (mut c, code) = attempt(&t, "dev1", signed("dev1", soon)).await;
    assert_eq!(code, Accepted);
    alive(&mut c, "dev1", 1).await;
    t.set_time(now() + time::Duration::hours(1));
    c.send(&publish("devices/dev1/messages/events/", 2)).await;
    assert_eq!(c.recv().await, None, "the session ends with its token");
}

async fn get(t: &TestHub, path: &str) -> Value {
    let r = t.client().send(Method::GET, path, None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{path}");
    r.json()
}

/// The hub closes `c` within a few seconds (it promises one).
async fn closed(c: &mut Mqtt, what: &str) {
    let started = tokio::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(3), c.recv()).await;
    assert_eq!(
        got.ok(),
        Some(None),
        "{what}: the session is closed within 3 s"
    );
    println!("{what}: closed after {:?}", started.elapsed());
}

/// Nothing reaches `c` for a while.
async fn silent(c: &mut Mqtt, what: &str) {
    let got = tokio::time::timeout(Duration::from_millis(800), c.recv()).await;
    assert!(got.is_err(), "{what}: nothing may arrive, got {got:?}");
}

#[tokio::test]
async fn new_keys_end_the_sessions_that_rest_on_the_old_ones_only() {
    let t = TestHub::start().await;
    registry(&t).await;
    let mut dev = connected(&t, "dev1").await;
    // m1 connects with its device's token, m2 with its own.
    let (mut m1, code) = attempt(&t, "dev1/m1", token_for("dev1")).await;
    assert_eq!(code, Accepted);
    let mut m2 = connected(&t, "dev1/m2").await;
    let mut other = connected(&t, "dev2").await;
    // Writing a device again unchanged ends nothing.
    let mut record = get(&t, "/devices/dev1").await;
    put(&t, "/devices/dev1", record.clone()).await;
    alive(&mut dev, "dev1", 1).await;
    alive(&mut m1, "dev1/m1", 1).await;
    // New keys for dev1, as a service rotates them.
    record["authentication"] = keys("dev1-rotated");
    put(&t, "/devices/dev1", record).await;
    closed(&mut dev, "dev1 after its keys changed").await;
    closed(&mut m1, "dev1/m1 on dev1's old key").await;
    alive(&mut m2, "dev1/m2", 2).await;
    alive(&mut other, "dev2", 2).await;
    let (_, code) = attempt(&t, "dev1", token_for("dev1")).await;
    assert_eq!(code, NotAuthorized, "the old key no longer opens dev1");
    assert_eq!(reason_count(&t, "credentials_changed"), 2);
    // New keys for m2: m2 closed; m1, now on dev1's new key, stays.
    let new_key = device_token("dev1", &key_of("dev1-rotated"), expiry());
    let (mut m1, code) = attempt(&t, "dev1/m1", new_key).await;
    assert_eq!(code, Accepted, "dev1's new key opens its module");
    let body = json!({"moduleId": "m2", "authentication": keys("dev1/m2-rotated")});
    put(&t, "/devices/dev1/modules/m2", body).await;
    closed(&mut m2, "dev1/m2 after its keys changed").await;
    alive(&mut m1, "dev1/m1", 3).await;
    alive(&mut other, "dev2", 3).await;
    assert_eq!(reason_count(&t, "credentials_changed"), 3);
    println!(
        "RELIABILITY|authorization: keys rotated during a session|a device, a module on its device's key, a module on its own key, another device|the device's keys replaced through the service API, then one module's|the sessions on the replaced keys closed within 1 s and the old key refused; the module on its own key, the other device and an unchanged rewrite untouched|0"
    );
}

#[tokio::test]
async fn a_gateways_new_keys_end_the_sessions_it_opened_for_its_children() {
    let t = TestHub::start().await;
    let body =
        json!({"deviceId": "gw", "capabilities": {"iotEdge": true}, "authentication": keys("gw")});
    let scope = put(&t, "/devices/gw", body).await["deviceScope"]
        .as_str()
        .unwrap()
        .to_owned();
    let edge_hub = get(&t, "/devices/gw/modules/$edgeHub").await;
    let edge_key = edge_hub["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    for d in ["child", "dev2"] {
        let body = json!({"deviceId": d, "deviceScope": scope, "authentication": keys(d)});
        put(&t, &format!("/devices/{d}"), body).await;
    }
    // child through the gateway (its `$edgeHub` token), dev2 with its own key.
    let mut child = Mqtt::tls(&t, None).await;
    let username = format!(
        "{}/child/?api-version=2021-04-12&auth-chain=child;gw",
        common::HOST
    );
    let token = device_token("gw/modules/$edgeHub", &edge_key, expiry());
    let (_, code) = child
        .connect_as("child", &username, Some(token), true)
        .await;
    assert_eq!(code, Accepted);
    let mut other = connected(&t, "dev2").await;
    // The child's own keys are not what its gateway session rests on.
    let mut record = get(&t, "/devices/child").await;
    record["authentication"] = keys("child-rotated");
    put(&t, "/devices/child", record).await;
    alive(&mut child, "child", 1).await;
    // The gateway's are.
    let body = json!({"moduleId": "$edgeHub", "authentication": keys("gw/$edgeHub-rotated")});
    put(&t, "/devices/gw/modules/$edgeHub", body).await;
    closed(
        &mut child,
        "child through gw after gw's $edgeHub keys changed",
    )
    .await;
    alive(&mut other, "dev2", 1).await;
    assert_eq!(reason_count(&t, "gateway_changed"), 1);
}

#[tokio::test]
async fn new_thumbprints_or_a_withdrawn_ca_end_the_sessions_they_anchored() {
    let t = TestHub::start().await;
    let (a, b) = (Pki::new("Root A"), Pki::new("Root B"));
    for (name, pki) in [("ca-a", &a), ("ca-b", &b)] {
        let body = json!({"properties": {"certificate": pki.root.to_pem(), "isVerified": true}});
        put(&t, &format!("/certificates/{name}"), body).await;
    }
    x509_device(&t, "da", AuthType::CertificateAuthority, vec![]);
    x509_device(&t, "db", AuthType::CertificateAuthority, vec![]);
    let cert = a.valid("self");
    let thumb = pki::Certificate::from_der(cert.chain[0].to_vec())
        .unwrap()
        .thumbprint_sha1();
    x509_device(&t, "self", AuthType::SelfSigned, vec![thumb]);
    let x509 = |id: &'static str, cert: common::ClientCert| {
        let t = &t;
        async move {
            let mut c = Mqtt::tls(t, Some(cert)).await;
            assert_eq!(c.connect(id, None, true).await.1, Accepted, "{id}");
            c
        }
    };
    let mut da = x509("da", a.valid("da")).await;
    let mut db = x509("db", b.valid("db")).await;
    let mut own = x509("self", cert).await;
    // New thumbprints for `self`: closed; the CA devices stay.
    let body = json!({"deviceId": "self", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "AB".repeat(20)}}});
    put(&t, "/devices/self", body).await;
    closed(&mut own, "self after its thumbprints changed").await;
    // CA A uploaded again unchanged (as a gateway's sync does): nothing ends.
    let body = json!({"properties": {"certificate": a.root.to_pem(), "isVerified": true}});
    put(&t, "/certificates/ca-a", body).await;
    alive(&mut da, "da", 1).await;
    // CA A deleted: its device closed, B's stays.
    let r = t
        .client()
        .send(
            Method::DELETE,
            "/certificates/ca-a",
            None,
            &[("If-Match", "*")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    closed(&mut da, "da after its CA was deleted").await;
    alive(&mut db, "db", 1).await;
    // CA B set unverified: its device closed too.
    let body = json!({"properties": {"certificate": b.root.to_pem(), "isVerified": false}});
    put(&t, "/certificates/ca-b", body).await;
    closed(&mut db, "db after its CA was set unverified").await;
    assert_eq!(reason_count(&t, "ca_withdrawn"), 2);
    assert_eq!(reason_count(&t, "credentials_changed"), 1);
    println!(
        "RELIABILITY|authorization: X.509 credentials withdrawn during a session|a self-signed device, two CA-signed devices under two verified CAs|thumbprints replaced; one CA re-uploaded unchanged, then deleted; the other set unverified|each session closed within 1 s when what it was anchored by went, the other CA's device untouched, an unchanged re-upload ends nothing|0"
    );
}

/// CONNECT for dev1 with keep-alive 0 (no keep-alive: the device may stay silent forever).
fn silent_connect(token: String) -> Packet {
    let mut p = common::connect_packet("dev1", Some(token));
    if let Packet::Connect(c) = &mut p {
        c.keep_alive = 0;
    }
    p
}

#[tokio::test]
async fn a_silent_session_is_closed_when_its_token_expires() {
    let t = TestHub::start().await;
    registry(&t).await;
    let soon = u64::try_from(now().unix_timestamp()).unwrap() + 2;
    let mut c = Mqtt::tls(&t, None).await;
    c.send(&silent_connect(signed("dev1", soon))).await;
    assert!(matches!(c.recv().await, Some(Packet::ConnAck(a)) if a.code == Accepted));
    c.send(&Packet::PingReq).await;
    assert_eq!(
        c.recv().await,
        Some(Packet::PingResp),
        "served before expiry"
    );
    let started = tokio::time::Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(6), c.recv()).await;
    assert_eq!(
        got.ok(),
        Some(None),
        "closed at its token's expiry, silent as it was"
    );
    println!("closed {:?} after the ping", started.elapsed());
    assert_eq!(reason_count(&t, "expired_token"), 1);
}

#[tokio::test]
async fn nothing_is_delivered_once_the_token_has_expired() {
    let t = TestHub::start().await;
    registry(&t).await;
    let soon = u64::try_from(now().unix_timestamp()).unwrap() + 60;
    let (mut c, code) = attempt(&t, "dev1", signed("dev1", soon)).await;
    assert_eq!(code, Accepted);
    let filters = [
        "$iothub/methods/POST/#",
        "$iothub/twin/PATCH/properties/desired/#",
        "devices/dev1/messages/devicebound/#",
    ];
    c.send(&Packet::Subscribe(mqtt_codec::Subscribe {
        packet_id: 1,
        filters: filters
            .iter()
            .map(|f| ((*f).to_owned(), mqtt_codec::QoS::AtLeastOnce))
            .collect(),
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    let patch = |n: u32| {
        let t = &t;
        async move {
            let body = json!({"properties": {"desired": {"n": n}}});
            let r = t
                .client()
                .send(
                    Method::PATCH,
                    "/twins/dev1",
                    Some(&body),
                    &[("If-Match", "*")],
                )
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK);
        }
    };
    patch(1).await;
    assert!(
        matches!(c.recv().await, Some(Packet::Publish(p)) if p.topic.starts_with("$iothub/twin/PATCH/properties/desired/")),
        "delivered while the token is valid"
    );
    // The token expires; the connection's timer has not fired (the hub's clock jumped).
    t.set_time(now() + time::Duration::seconds(61));
    let call = json!({"methodName": "reboot", "payload": {}, "responseTimeoutInSeconds": 5, "connectTimeoutInSeconds": 0});
    let r = t
        .client()
        .send(Method::POST, "/twins/dev1/methods", Some(&call), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.json());
    patch(2).await;
    let msg = json!({"body": "late", "messageId": "late", "ttlSeconds": 600});
    let r = t
        .client()
        .send(
            Method::POST,
            "/devices/dev1/messages/deviceBound",
            Some(&msg),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    silent(&mut c, "after the token expired").await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, None, "its next packet ends it");
    println!(
        "RELIABILITY|authorization: SAS token expiry during a session|a device with a short token, silent with keep-alive 0; a subscribed device whose token expired before its timer fired|waiting past the expiry; a direct method, a desired patch and a C2D message after the expiry|the silent session closed at the expiry (expired_token counted); nothing delivered after the expiry, the method answered 404 DeviceNotOnline|0"
    );
}
