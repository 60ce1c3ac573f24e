//! The AMQP endpoint over real TLS with an AMQP 1.0 client speaking as the Azure SDKs do (plain
//! AMQP header, no SASL, tokens on `$cbs`): telemetry stored with its properties, cloud-to-device
//! complete/reject/abandon, twin get/patch/desired pushes, direct methods, X.509 devices, the
//! service's cloud-to-device sender, and refusals that leave the connection serving.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::time::Duration;

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Connection, Session};
use hub_wire::model::{AuthType, Status};
use test_support::hub as common;

use common::{KEY, TestHub, device_token, expiry, stored};

struct Client {
    connection: fe2o3_amqp::connection::ConnectionHandle<()>,
    session: fe2o3_amqp::session::SessionHandle<()>,
}

impl Client {
    async fn open(t: &TestHub, cert: Option<common::ClientCert>) -> Self {
        let tls = common::tls_stream(t.amqp, &t.root, cert).await;
        let mut connection = Connection::builder()
            .container_id("test-device")
            .hostname(common::HOST)
            .scheme("amqp")
            .open_with_stream(tls)
            .await
            .unwrap();
        let session = Session::begin(&mut connection).await.unwrap();
        Self {
            connection,
            session,
        }
    }

    /// Puts `token` for `audience` on `$cbs`: the answer's status code.
    async fn put_token(&mut self, audience: &str, token: &str) -> i64 {
        let mut tx = Sender::attach(&mut self.session, "cbs-tx", "$cbs")
            .await
            .unwrap();
        let mut rx = Receiver::attach(&mut self.session, "cbs-rx", "$cbs")
            .await
            .unwrap();
        let request = Message::builder()
            .properties(Properties {
                message_id: Some(MessageId::String("put-1".into())),
                reply_to: Some("cbs".into()),
                ..Properties::default()
            })
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", "servicebus.windows.net:sastoken")
                    .insert("name", audience)
                    .build(),
            )
            .value(token.to_owned())
            .build();
        let outcome = tx.send(request).await.unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)));
        let answer = rx.recv::<Body<Value>>().await.unwrap();
        rx.accept(&answer).await.unwrap();
        let m = answer.message();
        assert_eq!(
            m.properties.as_ref().unwrap().correlation_id,
            Some(MessageId::String("put-1".into()))
        );
        let status = m
            .application_properties
            .as_ref()
            .unwrap()
            .0
            .get("status-code")
            .unwrap()
            .clone();
        let _ = tx.close().await;
        let _ = rx.close().await;
        match status {
            SimpleValue::Int(n) => i64::from(n),
            other => panic!("status-code {other:?}"),
        }
    }

    async fn sender(&mut self, address: &str) -> Sender {
        Sender::attach(&mut self.session, format!("tx-{address}"), address)
            .await
            .unwrap()
    }

    async fn receiver(&mut self, address: &str) -> Receiver {
        Receiver::attach(&mut self.session, format!("rx-{address}"), address)
            .await
            .unwrap()
    }

    async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// A message with `body` as its one data section.
fn data_message(body: &[u8]) -> Message<Data> {
    Message::builder().data(Binary::from(body.to_vec())).build()
}

/// Sends `m` on a link the hub is expected to have refused: the outcome, or the timeout.
async fn refused_send(
    tx: &mut Sender,
    m: Message<Data>,
) -> Result<Result<Outcome, fe2o3_amqp::link::SendError>, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(10), tx.send(m)).await
}

fn encoded_audience(resource: &str) -> String {
    iot_auth::percent_encode(&format!("{}/devices/{resource}", common::HOST))
}

async fn sas_client(t: &TestHub, id: &str) -> Client {
    common::sas_device(t, id, Status::Enabled);
    let mut c = Client::open(t, None).await;
    let token = device_token(id, KEY, expiry());
    assert_eq!(c.put_token(&encoded_audience(id), &token).await, 200);
    c
}

fn data(m: &Message<Body<Value>>) -> Vec<u8> {
    match &m.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
        other => panic!("not a data body: {other:?}"),
    }
}

fn annotation(m: &Message<Body<Value>>, key: &str) -> Option<Value> {
    m.message_annotations
        .as_ref()?
        .0
        .get(&OwnedKey::Symbol(Symbol::from(key)))
        .cloned()
}

#[tokio::test]
async fn telemetry_is_accepted_once_stored_with_its_properties() {
    let t = TestHub::start().await;
    let mut c = sas_client(&t, "dev1").await;
    let mut tx = c.sender("/devices/dev1/messages/events").await;
    for i in 0..20 {
        let m = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(MessageId::String(format!("m-{i}")))
                    .content_type(Symbol::from("application/json"))
                    .content_encoding(Symbol::from("utf-8"))
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("color", "red")
                    .build(),
            )
            .data(Binary::from(format!("{{\"n\":{i}}}").into_bytes()))
            .build();
        assert!(matches!(tx.send(m).await.unwrap(), Outcome::Accepted(_)));
    }
    let events = stored(&t);
    assert_eq!(events.len(), 20, "every accepted message is already stored");
    let e = &events[3];
    assert_eq!(e.device_id, "dev1");
    assert_eq!(e.system_properties["messageId"], "m-3");
    assert_eq!(e.system_properties["contentType"], "application/json");
    assert_eq!(e.system_properties["iothub-connection-device-id"], "dev1");
    assert!(e.system_properties["iothub-connection-auth-method"].contains("\"sas\""));
    assert_eq!(e.properties["color"], Some("red".into()));
    // A body over IoT Hub's 256 KiB is rejected with its condition; the link goes on.
    let big = Message::builder()
        .data(Binary::from(vec![b'x'; 260 * 1024]))
        .build();
    match tx.send(big).await {
        Ok(Outcome::Rejected(r)) => assert_eq!(
            r.error.unwrap().condition,
            fe2o3_amqp::types::definitions::LinkError::MessageSizeExceeded.into()
        ),
        other => panic!("a 260 KiB message was not rejected: {other:?}"),
    }
    // Beyond the link's advertised maximum the client does not even send it.
    let huge = Message::builder()
        .data(Binary::from(vec![b'x'; 300 * 1024]))
        .build();
    assert!(tx.send(huge).await.is_err());
    let m = data_message(b"after");
    assert!(matches!(tx.send(m).await.unwrap(), Outcome::Accepted(_)));
    assert_eq!(stored(&t).len(), 21);
    c.close().await;
}

#[tokio::test]
async fn cloud_to_device_complete_reject_and_abandon() {
    let t = TestHub::start().await;
    let mut c = sas_client(&t, "dev1").await;
    for (id, body) in [("a", "one"), ("b", "two"), ("c", "three")] {
        let req = hub_wire::SendRequest {
            body: body.into(),
            body_encoding: None,
            properties: [("k".to_owned(), id.to_owned())].into(),
            message_id: Some(id.into()),
            correlation_id: None,
            ttl_seconds: None,
        };
        hub::c2d::send(&t.hub, "dev1", req).unwrap();
    }
    let mut rx = c.receiver("/devices/dev1/messages/devicebound").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = rx.recv::<Body<Value>>().await.unwrap();
        let id = d.message().properties.as_ref().unwrap().message_id.clone();
        seen.push((id, data(d.message())));
        match seen.len() {
            1 => rx.accept(&d).await.unwrap(),
            2 => rx.reject(&d, None).await.unwrap(),
            _ => rx.release(&d).await.unwrap(),
        }
    }
    assert_eq!(
        seen[0],
        (Some(MessageId::String("a".into())), b"one".to_vec())
    );
    // The abandoned one comes back, marked as delivered before.
    let again = tokio::time::timeout(Duration::from_secs(10), rx.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.message().properties.as_ref().unwrap().message_id,
        Some(MessageId::String("c".into()))
    );
    assert!(again.message().header.as_ref().unwrap().delivery_count >= 1);
    rx.accept(&again).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now_ms = ferrohub_runtime::time::now_ms(t.hub.clock.as_ref());
    let left = t.hub.registry.store().c2d_pending("dev1", now_ms).unwrap();
    assert!(
        left.is_empty(),
        "completed and rejected messages left the queue: {left:?}"
    );
    assert_eq!(
        t.hub
            .metrics
            .c2d_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    c.close().await;
}

#[tokio::test]
async fn twin_get_patch_and_desired_push() {
    let t = TestHub::start().await;
    let mut c = sas_client(&t, "dev1").await;
    let mut tx = c.sender("/devices/dev1/twin").await;
    let mut rx = c.receiver("/devices/dev1/twin").await;
    let request = |op: &str, resource: Option<&str>, cid: &str, body: &[u8]| {
        let mut a = MessageAnnotations::builder().insert("operation", op.to_owned());
        if let Some(r) = resource {
            a = a.insert("resource", r.to_owned());
        }
        Message::builder()
            .properties(Properties {
                correlation_id: Some(MessageId::String(cid.into())),
                ..Properties::default()
            })
            .message_annotations(a.build())
            .data(Binary::from(body.to_vec()))
            .build()
    };
    tx.send(request(
        "PATCH",
        Some("/properties/reported"),
        "r1",
        br#"{"fw":"1.0"}"#,
    ))
    .await
    .unwrap();
    let answer = rx.recv::<Body<Value>>().await.unwrap();
    rx.accept(&answer).await.unwrap();
    assert_eq!(
        annotation(answer.message(), "status"),
        Some(Value::Int(204))
    );
    tx.send(request("GET", None, "r2", b" ")).await.unwrap();
    let answer = rx.recv::<Body<Value>>().await.unwrap();
    rx.accept(&answer).await.unwrap();
    assert_eq!(
        answer.message().properties.as_ref().unwrap().correlation_id,
        Some(MessageId::String("r2".into()))
    );
    let twin: serde_json::Value = serde_json::from_slice(&data(answer.message())).unwrap();
    assert_eq!(twin["reported"]["fw"], "1.0");
    tx.send(request(
        "PUT",
        Some("/notifications/twin/properties/desired"),
        "r3",
        b" ",
    ))
    .await
    .unwrap();
    let answer = rx.recv::<Body<Value>>().await.unwrap();
    rx.accept(&answer).await.unwrap();
    assert_eq!(
        annotation(answer.message(), "status"),
        Some(Value::Int(200))
    );
    let r = t
        .client()
        .send(
            hyper::Method::PATCH,
            "/twins/dev1",
            Some(&serde_json::json!({"properties": {"desired": {"rate": 5}}})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let push = tokio::time::timeout(Duration::from_secs(10), rx.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    rx.accept(&push).await.unwrap();
    assert!(
        push.message().properties.is_none(),
        "a push has no correlation id"
    );
    let patch: serde_json::Value = serde_json::from_slice(&data(push.message())).unwrap();
    assert_eq!(patch["rate"], 5);
    c.close().await;
}

#[tokio::test]
async fn a_direct_method_is_delivered_and_answered() {
    let t = TestHub::start().await;
    let mut c = sas_client(&t, "dev1").await;
    let mut calls = c.receiver("/devices/dev1/methods/devicebound").await;
    let mut answers = c.sender("/devices/dev1/methods/devicebound").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = t.client();
    let invoke = tokio::spawn(async move {
        let body = serde_json::json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10});
        client
            .send(hyper::Method::POST, "/twins/dev1/methods", Some(&body), &[])
            .await
            .unwrap()
    });
    let call = calls.recv::<Body<Value>>().await.unwrap();
    calls.accept(&call).await.unwrap();
    let m = call.message();
    assert_eq!(
        m.application_properties
            .as_ref()
            .unwrap()
            .0
            .get("IoThub-methodname")
            .unwrap()
            .clone(),
        SimpleValue::String("reboot".into())
    );
    let answer = Message::builder()
        .properties(Properties {
            correlation_id: m.properties.as_ref().unwrap().correlation_id.clone(),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("IoThub-status", 201i32)
                .build(),
        )
        .data(Data(Binary::from(br#"{"ok":true}"#.to_vec())))
        .build();
    assert!(matches!(
        answers.send(answer).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let r = invoke.await.unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], 201);
    assert_eq!(v["payload"]["ok"], true);
    c.close().await;
}

#[tokio::test]
async fn x509_device_needs_no_token() {
    let t = TestHub::start().await;
    let ca = common::Pki::new("amqp test CA");
    let cert = ca.valid("xdev");
    let thumb = pki::Certificate::from_der(cert.chain[0].as_ref())
        .unwrap()
        .thumbprint_sha1();
    common::x509_device(&t, "xdev", AuthType::SelfSigned, vec![thumb]);
    let mut c = Client::open(&t, Some(cert)).await;
    let mut tx = c.sender("/devices/xdev/messages/events").await;
    let m = data_message(b"hi");
    assert!(matches!(tx.send(m).await.unwrap(), Outcome::Accepted(_)));
    let events = stored(&t);
    assert_eq!(events[0].device_id, "xdev");
    assert!(events[0].system_properties["iothub-connection-auth-method"].contains("x509"));
    c.close().await;
}

#[tokio::test]
async fn refusals_are_per_link_and_the_connection_goes_on() {
    let t = TestHub::start().await;
    common::sas_device(&t, "other", Status::Enabled);
    let mut c = sas_client(&t, "dev1").await;
    // A token with a bad signature, and one put for another audience.
    let wrong = device_token(
        "dev1",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        expiry(),
    );
    assert_eq!(c.put_token(&encoded_audience("dev1"), &wrong).await, 401);
    let dev1 = device_token("dev1", KEY, expiry());
    assert_eq!(c.put_token(&encoded_audience("other"), &dev1).await, 401);
    // A link to a device this connection holds no token for.
    let mut tx = c.sender("/devices/other/messages/events").await;
    let m = data_message(b"x");
    let sent = tokio::time::timeout(Duration::from_secs(10), tx.send(m)).await;
    assert!(
        matches!(sent, Ok(Err(_))),
        "sending as another device must fail: {sent:?}"
    );
    // An unknown node.
    let mut tx = c.sender("/queues/q1").await;
    let m = data_message(b"x");
    let sent = refused_send(&mut tx, m).await;
    assert!(matches!(sent, Ok(Err(_))), "{sent:?}");
    // The device's own links still work on the same connection.
    let mut tx = c.sender("/devices/dev1/messages/events").await;
    let m = data_message(b"ok");
    assert!(matches!(tx.send(m).await.unwrap(), Outcome::Accepted(_)));
    assert_eq!(stored(&t).len(), 1);
    c.close().await;
}

#[tokio::test]
async fn service_sends_cloud_to_device_with_a_policy_token() {
    let t = TestHub::start().await;
    let mut device = sas_client(&t, "dev1").await;
    let mut rx = device.receiver("/devices/dev1/messages/devicebound").await;
    let mut service = Client::open(&t, None).await;
    let policy_token = iot_auth::sas::generate_sas_token(
        common::HOST,
        &common::base64_decode(KEY),
        Some("iothubowner"),
        expiry(),
    );
    // Without a token the service link is refused.
    let mut tx = service.sender("/messages/devicebound").await;
    let m = data_message(b"x");
    assert!(tx.send(m).await.is_err());
    assert_eq!(service.put_token(common::HOST, &policy_token).await, 200);
    let mut tx = service.sender("/messages/devicebound").await;
    let m = Message::builder()
        .properties(Properties {
            message_id: Some(MessageId::String("svc-1".into())),
            to: Some("/devices/dev1/messages/devicebound".into()),
            ..Properties::default()
        })
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", "full")
                .build(),
        )
        .data(Binary::from(b"from the service".to_vec()))
        .build();
    assert!(matches!(tx.send(m).await.unwrap(), Outcome::Accepted(_)));
    // A message for a device that does not exist is rejected.
    let m = Message::builder()
        .properties(Properties {
            to: Some("/devices/nobody/messages/devicebound".into()),
            ..Properties::default()
        })
        .data(Binary::from(b"x".to_vec()))
        .build();
    assert!(matches!(tx.send(m).await.unwrap(), Outcome::Rejected(_)));
    let d = tokio::time::timeout(Duration::from_secs(10), rx.recv::<Body<Value>>())
        .await
        .unwrap()
        .unwrap();
    rx.accept(&d).await.unwrap();
    assert_eq!(data(d.message()), b"from the service");
    assert_eq!(
        d.message().properties.as_ref().unwrap().message_id,
        Some(MessageId::String("svc-1".into()))
    );
    service.close().await;
    device.close().await;
}

#[tokio::test]
async fn an_expired_token_ends_its_links_and_a_renewed_one_keeps_them() {
    let t = TestHub::start().await;
    common::sas_device(&t, "dev1", Status::Enabled);
    common::sas_device(&t, "dev2", Status::Enabled);
    let soon = u64::try_from(common::now().unix_timestamp()).unwrap() + 2;
    let mut c = Client::open(&t, None).await;
    for id in ["dev1", "dev2"] {
        let token = device_token(id, KEY, soon);
        assert_eq!(c.put_token(&encoded_audience(id), &token).await, 200);
    }
    let mut tx1 = c.sender("/devices/dev1/messages/events").await;
    let mut tx2 = c.sender("/devices/dev2/messages/events").await;
    let msg = || data_message(b"x");
    assert!(matches!(
        tx1.send(msg()).await.unwrap(),
        Outcome::Accepted(_)
    ));
    assert!(matches!(
        tx2.send(msg()).await.unwrap(),
        Outcome::Accepted(_)
    ));
    // dev2 puts a new token before the first expires (as the SDKs renew); dev1 does not.
    let renewed = device_token("dev2", KEY, expiry());
    assert_eq!(c.put_token(&encoded_audience("dev2"), &renewed).await, 200);
    t.set_time(common::now() + time::Duration::seconds(10));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = tokio::time::timeout(Duration::from_secs(10), tx1.send(msg())).await;
    assert!(
        matches!(sent, Ok(Err(_))),
        "dev1's link outlived its token: {sent:?}"
    );
    assert!(matches!(
        tx2.send(msg()).await.unwrap(),
        Outcome::Accepted(_)
    ));
    assert_eq!(common::reason_count(&t, "expired_token"), 1);
    c.close().await;
}

#[tokio::test]
async fn a_disabled_device_loses_its_links_and_cannot_attach_again_with_its_old_token() {
    let t = TestHub::start().await;
    let mut c = sas_client(&t, "dev1").await;
    let mut tx = c.sender("/devices/dev1/messages/events").await;
    let msg = || data_message(b"x");
    assert!(matches!(
        tx.send(msg()).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let mut d = t.hub.registry.get_device("dev1").unwrap();
    d.status = Status::Disabled;
    t.hub
        .registry
        .put_device("dev1", d, &ferrohub_runtime::etag::IfMatch::Any)
        .unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(10), tx.send(msg())).await;
    assert!(
        matches!(sent, Ok(Err(_))),
        "the link outlived the device: {sent:?}"
    );
    // A new link on the same connection is refused: the old token is spent.
    let mut again = c.sender("/devices/dev1/messages/events").await;
    let sent = refused_send(&mut again, msg()).await;
    assert!(matches!(sent, Ok(Err(_))), "{sent:?}");
    // And a new token for a disabled device is refused.
    let token = device_token("dev1", KEY, expiry());
    assert_eq!(c.put_token(&encoded_audience("dev1"), &token).await, 401);
    assert_eq!(stored(&t).len(), 1);
    c.close().await;
}
