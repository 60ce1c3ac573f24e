//! Authorization of live MQTT sessions: a device or module publishing as someone else; a SAS
//! token replayed on a second connection (allowed, as IoT Hub does: the newer connection replaces
//! the older), for the device's own modules (allowed) or for another identity (refused); a device
//! disabled or deleted while connected (its sessions and its modules' are closed at once and it
//! cannot come back); and a token that expires during a session.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use common::{Mqtt, TestHub, device_token, expiry, now};
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
/// one); so does this hub, at the session's next packet after the expiry (plus the clock skew).
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
