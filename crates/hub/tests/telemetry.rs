//! Telemetry over MQTT: PUBACK after durability, decoded properties, enrichment, the topic rules,
//! limits, and a restart that loses nothing.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{KEY, Mqtt, TestHub, device_token, expiry, publish, stored};
use hub_wire::model::Status;
use mqtt_codec::ConnectReturnCode::Accepted;
use mqtt_codec::{Packet, QoS, SubAck, SubAckReturnCode, Subscribe};

async fn connected(t: &TestHub, id: &str, clean: bool) -> (Mqtt, bool) {
    let mut c = Mqtt::tls(t, None).await;
    let (present, code) = c
        .connect(id, Some(device_token(id, KEY, expiry())), clean)
        .await;
    assert_eq!(code, Accepted);
    (c, present)
}

#[tokio::test]
async fn qos1_telemetry_is_acknowledged_after_it_is_stored_with_decoded_properties() {
    let t = TestHub::start().await;
    common::sas_device(&t, "dev1", Status::Enabled);
    let (mut c, _) = connected(&t, "dev1", true).await;
    // Exactly the shape the Python SDK sends: system properties first, then sorted custom ones.
    let topic = "devices/dev1/messages/events/%24.mid=m-1&%24.ct=application%2Fjson&%24.ce=utf-8&color=red%20blue&flag&empty=";
    for i in 1..=50u16 {
        c.send(&publish(topic, i, format!("{{\"n\":{i}}}").as_bytes()))
            .await;
    }
    for i in 1..=50u16 {
        assert_eq!(c.recv().await, Some(Packet::PubAck(i)), "PUBACKs in order");
    }
    // Every acknowledged message is already in the log.
    let events = stored(&t);
    assert_eq!(events.len(), 50);
    let e = &events[0];
    assert_eq!(e.device_id, "dev1");
    assert_eq!(e.system_properties["messageId"], "m-1");
    assert_eq!(e.system_properties["contentType"], "application/json");
    assert_eq!(e.system_properties["contentEncoding"], "utf-8");
    assert_eq!(e.system_properties["iothub-connection-device-id"], "dev1");
    assert!(e.system_properties["iothub-connection-auth-method"].contains("\"sas\""));
    assert!(e.system_properties.contains_key("iothub-enqueuedtime"));
    assert_eq!(e.properties["color"], Some("red blue".into()));
    assert_eq!(e.properties["flag"], None);
    assert_eq!(e.properties["empty"], Some(String::new()));
    assert_eq!(e.body, "{\"n\":1}");
    assert!(
        t.hub
            .metrics
            .render(0)
            .contains("ferrohub_messages_in_total 50")
    );
}

#[tokio::test]
async fn publishing_to_another_devices_topic_disconnects_and_stores_nothing() {
    let t = TestHub::start().await;
    common::sas_device(&t, "dev1", Status::Enabled);
    common::sas_device(&t, "dev2", Status::Enabled);
    let (mut c, _) = connected(&t, "dev1", true).await;
    c.send(&publish("devices/dev2/messages/events/", 1, b"spoof"))
        .await;
    assert!(c.recv().await.is_none());
    assert!(stored(&t).is_empty());
    // Subscribing to another device's C2D topic is refused the same way.
    let (mut c, _) = connected(&t, "dev1", true).await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "devices/dev2/messages/devicebound/#".into(),
            QoS::AtLeastOnce,
        )],
    }))
    .await;
    assert!(c.recv().await.is_none());
}

#[tokio::test]
async fn malformed_oversize_and_qos2_close_only_that_connection() {
    let t = TestHub::start().await;
    common::sas_device(&t, "dev1", Status::Enabled);
    let (mut c, _) = connected(&t, "dev1", true).await;
    c.send_raw(&[0xF0, 0x00]).await;
    assert!(c.recv().await.is_none());
    let (mut c, _) = connected(&t, "dev1", true).await;
    // A PUBLISH announcing 1 MiB, beyond max_packet_bytes (64 KiB in tests): refused from its header.
    c.send_raw(&[0x32, 0x80, 0x80, 0x40]).await;
    assert!(c.recv().await.is_none());
    let (mut c, _) = connected(&t, "dev1", true).await;
    let Packet::Publish(mut p) = publish("devices/dev1/messages/events/", 1, b"x") else {
        unreachable!()
    };
    p.qos = QoS::ExactlyOnce;
    c.send(&Packet::Publish(p)).await;
    assert!(c.recv().await.is_none());
    // The hub keeps serving.
    let (mut c, _) = connected(&t, "dev1", true).await;
    c.send(&publish("devices/dev1/messages/events/", 9, b"ok"))
        .await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(9)));
    assert!(
        t.hub
            .metrics
            .protocol_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
}

#[tokio::test]
async fn restart_keeps_events_registry_and_persistent_sessions() {
    let t = TestHub::start().await;
    common::sas_device(&t, "dev1", Status::Enabled);
    let (mut c, present) = connected(&t, "dev1", false).await;
    assert!(!present);
    let filter = "devices/dev1/messages/devicebound/#".to_owned();
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 3,
        filters: vec![(filter.clone(), QoS::AtLeastOnce)],
    }))
    .await;
    assert_eq!(
        c.recv().await,
        Some(Packet::SubAck(SubAck {
            packet_id: 3,
            return_codes: vec![SubAckReturnCode::Success(QoS::AtLeastOnce)]
        }))
    );
    for i in 1..=10u16 {
        c.send(&publish("devices/dev1/messages/events/", i, b"before"))
            .await;
        assert_eq!(c.recv().await, Some(Packet::PubAck(i)));
    }
    drop(c);
    let (dir, cfg, root) = t.stop().await;
    let t = TestHub::start_in(dir, cfg, root).await;
    assert_eq!(t.hub.registry.get_device("dev1").unwrap().device_id, "dev1");
    let (mut c, present) = connected(&t, "dev1", false).await;
    assert!(present, "the persistent session survives the restart");
    let session = t.hub.registry.store().get_session("dev1").unwrap().unwrap();
    assert_eq!(session.subscriptions, vec![(filter, 1)]);
    c.send(&publish("devices/dev1/messages/events/", 11, b"after"))
        .await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(11)));
    let bodies: Vec<String> = stored(&t).into_iter().map(|e| e.body).collect();
    assert_eq!(bodies.iter().filter(|b| *b == "before").count(), 10);
    assert_eq!(bodies.iter().filter(|b| *b == "after").count(), 1);
    // A clean session forgets.
    drop(c);
    let (_c, present) = connected(&t, "dev1", true).await;
    assert!(!present);
    assert!(
        t.hub
            .registry
            .store()
            .get_session("dev1")
            .unwrap()
            .is_none()
    );
}
