//! The core session without sockets: a hub opened on a temporary directory, calls as a protocol
//! head makes them, and what they leave in the registry, the events log and the queues.
#![allow(clippy::unwrap_used)] // a panic is a test failure

use std::sync::Arc;

use base64::Engine as _;
use iot_auth::topic::PropertyBag;
use time::OffsetDateTime;

use super::auth::{Credentials, Identity, Refusal, authenticate};
use super::revoke::EndReason;
use super::{DeviceSession, Interests, Notification, TelemetryRefused, c2d};
use crate::Hub;
use crate::config::{AuthSettings, HubConfig, Limits, Storage};
use ferrohub_runtime::config::{Listen, Tls};
use ferrohub_runtime::etag::IfMatch;
use ferrohub_runtime::time::FixedClock;
use hub_wire::model::{AuthType, Authentication, Device, Status};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const HOST: &str = "hub.example";
const NOW: i64 = 1_800_000_000;

struct Fixture {
    hub: Arc<Hub>,
    clock: Arc<FixedClock>,
    _dir: tempfile::TempDir,
}

fn hub() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = HubConfig {
        hostname: HOST.into(),
        hostname_aliases: Vec::new(),
        listen: Listen::default(),
        // Not read: nothing here serves TLS.
        tls: Tls {
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            ca: None,
        },
        storage: Storage {
            registry: dir.path().join("registry.sqlite"),
            events: dir.path().join("events"),
            fsync: false,
            retention_hours: None,
            retention_mib: None,
        },
        auth: AuthSettings::default(),
        limits: Limits::default(),
        policies: Vec::new(),
    };
    let at = OffsetDateTime::from_unix_timestamp(NOW).unwrap();
    let clock = Arc::new(FixedClock(std::sync::Mutex::new(at)));
    let hub = Hub::open(config, clock.clone()).unwrap();
    Fixture {
        hub,
        clock,
        _dir: dir,
    }
}

fn sas_device(hub: &Hub, id: &str, status: Status) {
    let device = Device {
        device_id: id.into(),
        status,
        authentication: Authentication::sas(Some(KEY.into()), None),
        ..Default::default()
    };
    hub.registry
        .put_device(id, device, &IfMatch::Absent)
        .unwrap();
}

fn token(device_id: &str, expiry: u64) -> Vec<u8> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let resource = format!("{HOST}/devices/{device_id}");
    iot_auth::sas::generate_sas_token(&resource, &key, None, expiry).into_bytes()
}

fn creds<'a>(host: &'a str, device_id: &'a str, token: &'a [u8]) -> Credentials<'a> {
    Credentials {
        host,
        device_id,
        module_id: None,
        auth_chain: None,
        sas_token: Some(token),
    }
}

/// An admitted session of SAS device `id`, its token valid for an hour.
fn session(f: &Fixture, id: &str) -> DeviceSession {
    sas_device(&f.hub, id, Status::Enabled);
    session_of(f, id)
}

#[test]
fn sas_credentials_admit_the_identity_and_every_refusal_is_named() {
    let f = hub();
    sas_device(&f.hub, "d1", Status::Enabled);
    sas_device(&f.hub, "off", Status::Disabled);
    let good = token("d1", NOW as u64 + 60);
    let identity: Identity = authenticate(&f.hub, &creds(HOST, "d1", &good), &[]).unwrap();
    assert_eq!(identity.client_id(), "d1");
    assert_eq!(identity.auth_type, AuthType::Sas);
    assert_eq!(identity.token_expiry, Some(NOW as u64 + 60));

    let refused = |c: Credentials<'_>| authenticate(&f.hub, &c, &[]).unwrap_err();
    assert!(matches!(
        refused(creds("other.example", "d1", &good)),
        Refusal::WrongHost { .. }
    ));
    assert_eq!(
        refused(creds(HOST, "nobody", &good)),
        Refusal::UnknownDevice("nobody".into())
    );
    let off = token("off", NOW as u64 + 60);
    assert_eq!(
        refused(creds(HOST, "off", &off)),
        Refusal::Disabled("off".into())
    );
    let expired = token("d1", NOW as u64 - 3600);
    assert_eq!(refused(creds(HOST, "d1", &expired)), Refusal::ExpiredToken);
    assert!(matches!(
        refused(creds(HOST, "d1", &token("d2", NOW as u64 + 60))),
        Refusal::WrongAudience(_)
    ));
    let x509 = Credentials {
        sas_token: None,
        ..creds(HOST, "d1", &good)
    };
    assert!(matches!(refused(x509), Refusal::WrongAuthType { .. }));
}

#[tokio::test]
async fn telemetry_is_stored_as_from_the_identity_and_becomes_durable() {
    let f = hub();
    let mut s = session(&f, "d1");
    let mut props = PropertyBag::default();
    props.push("color".to_owned(), Some("blue".to_owned()));
    let durable = s
        .send_telemetry("d1", None, &props, b"{\"t\":21}", false)
        .unwrap();
    let offset = durable.append.await.unwrap();
    let records = f.hub.events.read(offset, 1, 1 << 20).unwrap();
    let record: crate::events::EventRecord = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(record.device_id, "d1");
    assert_eq!(record.body_bytes(), b"{\"t\":21}");
    assert_eq!(record.properties.get("color"), Some(&Some("blue".into())));
    assert_eq!(
        record.system_properties["iothub-connection-device-id"],
        "d1"
    );

    // Another identity's topic, or a body over the limit, ends the session.
    assert!(matches!(
        s.send_telemetry("d2", None, &props, b"x", false),
        Err(TelemetryRefused::Violation(_))
    ));
    let big = vec![b'x'; super::telemetry::MAX_BODY_BYTES + 1];
    assert!(matches!(
        s.send_telemetry("d1", None, &props, &big, false),
        Err(TelemetryRefused::Violation(_))
    ));
}

#[test]
fn reported_properties_patch_the_twin_and_bad_json_is_a_400() {
    let f = hub();
    let s = session(&f, "d1");
    let patched = s.twin_patch_reported(br#"{"firmware":"1.2"}"#);
    assert_eq!((patched.status, patched.body.as_str()), (204, ""));
    let version = patched.version.unwrap();
    let twin = s.twin_get();
    assert_eq!(twin.status, 200);
    let body: serde_json::Value = serde_json::from_str(&twin.body).unwrap();
    assert_eq!(body["reported"]["firmware"], "1.2");
    assert_eq!(body["reported"]["$version"], version);

    let bad = s.twin_patch_reported(b"{not json");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("errorCode"), "{}", bad.body);
}

#[test]
fn a_method_answer_completes_only_this_identitys_call() {
    let f = hub();
    let s = session(&f, "d1");
    let other = session(&f, "d2");
    let (call, mut answer) = f.hub.methods.register("d1");
    assert!(!s.method_response("no-such-rid", 200, b"{}".to_vec()));
    assert!(!other.method_response(&call.rid, 200, b"{}".to_vec()));
    assert!(s.method_response(&call.rid, 201, b"{\"ok\":1}".to_vec()));
    assert_eq!(answer.try_recv().unwrap(), (201, b"{\"ok\":1}".to_vec()));
}

fn queue_c2d(hub: &Hub, device_id: &str, body: &str) {
    let req = hub_wire::SendRequest {
        body: body.into(),
        body_encoding: None,
        properties: Default::default(),
        message_id: None,
        correlation_id: None,
        ttl_seconds: None,
    };
    crate::c2d::send(hub, device_id, req).unwrap();
}

fn wants_c2d() -> Interests {
    Interests {
        c2d: true,
        ..Interests::default()
    }
}

#[test]
fn c2d_is_delivered_when_wanted_completed_by_tag_and_redelivered_to_the_next_session() {
    let f = hub();
    let mut s = session(&f, "d1");
    queue_c2d(&f.hub, "d1", "one");
    queue_c2d(&f.hub, "d1", "two");
    assert!(s.c2d_take().is_empty(), "not wanted yet");
    s.set_interests(wants_c2d());
    let batch = s.c2d_take();
    assert_eq!(batch.len(), 2);
    assert!(batch.iter().all(|d| d.tag != 0 && !d.redelivery()));
    for d in &batch {
        s.c2d_sent(d);
    }
    assert!(s.c2d_take().is_empty(), "both are in flight");
    assert!(s.c2d_complete(batch[0].tag));
    assert!(!s.c2d_complete(batch[0].tag), "completed once");

    // The second was never completed: the next session gets it again, marked as redelivered.
    drop(s);
    let mut next = session_of(&f, "d1");
    next.set_interests(wants_c2d());
    let again = next.c2d_take();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.seq, batch[1].message.seq);
    assert!(again[0].redelivery());
}

/// Another session of an already registered SAS device.
fn session_of(f: &Fixture, id: &str) -> DeviceSession {
    let token = token(id, NOW as u64 + 3600);
    let identity = authenticate(&f.hub, &creds(HOST, id, &token), &[]).unwrap();
    DeviceSession::new(f.hub.clone(), Arc::new(identity))
}

#[test]
fn c2d_stays_within_its_window_and_stops_when_the_token_expires() {
    let f = hub();
    let mut s = session(&f, "d1");
    s.set_interests(wants_c2d());
    for i in 0..c2d::WINDOW + 3 {
        queue_c2d(&f.hub, "d1", &format!("m{i}"));
    }
    let first = s.c2d_take();
    assert_eq!(first.len(), c2d::WINDOW);
    assert!(s.c2d_take().is_empty(), "the window is full");
    assert!(s.c2d_complete(first[0].tag));
    assert_eq!(s.c2d_take().len(), 1, "one slot freed");

    assert!(!s.expired());
    *f.clock.0.lock().unwrap() = OffsetDateTime::from_unix_timestamp(NOW + 3601).unwrap();
    assert!(s.expired());
    assert!(s.c2d_complete(first[1].tag));
    assert!(s.c2d_take().is_empty(), "nothing for an expired session");
}

#[test]
fn interests_reach_the_live_session_table() {
    let f = hub();
    let mut s = session(&f, "d1");
    let features = s.subscription().clone();
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    assert!(!features.desired.load(relaxed) && !features.methods.load(relaxed));
    s.set_interests(Interests {
        desired: true,
        methods: true,
        c2d: false,
    });
    assert!(features.desired.load(relaxed) && features.methods.load(relaxed));
}

/// An attached session of SAS device `id` that wants `wants`.
fn attached(f: &Fixture, id: &str, wants: Interests) -> DeviceSession {
    let mut s = session(f, id);
    s.set_interests(wants);
    assert!(!s.attach(), "no earlier session of {id}");
    s
}

/// A call of method `reboot` that waits 5 s for its answer and not for the device to connect.
fn method_call(payload: serde_json::Value) -> hub_wire::MethodRequest {
    hub_wire::MethodRequest {
        method_name: "reboot".into(),
        payload,
        response_timeout_in_seconds: Some(5),
        connect_timeout_in_seconds: None,
    }
}

#[tokio::test]
async fn a_method_call_arrives_as_a_typed_notification_and_its_answer_completes_it() {
    let f = hub();
    let wants = Interests {
        methods: true,
        ..Interests::default()
    };
    let s = attached(&f, "d1", wants);
    let call = tokio::spawn({
        let hub = f.hub.clone();
        let req = method_call(serde_json::json!({"delay": 5}));
        async move { crate::methods::invoke(&hub, "d1", None, req).await }
    });
    let Notification::MethodRequest { name, rid, payload } = s.subscription().next().await else {
        panic!("a method call was expected");
    };
    assert_eq!(name, "reboot");
    assert_eq!(payload, br#"{"delay":5}"#);
    assert!(s.method_response(&rid, 200, br#"{"done":true}"#.to_vec()));
    let result = call.await.unwrap().unwrap();
    assert_eq!(result.status, 200);
    assert_eq!(result.payload, serde_json::json!({"done": true}));
}

#[tokio::test]
async fn a_method_call_to_a_session_that_does_not_want_methods_is_refused_as_not_online() {
    let f = hub();
    let s = attached(&f, "d1", Interests::default());
    let req = method_call(serde_json::Value::Null);
    let refused = crate::methods::invoke(&f.hub, "d1", None, req).await;
    assert_eq!(refused.unwrap_err().code, "DeviceNotOnline");
    assert_eq!(s.subscription().try_next(), None, "nothing was delivered");
}

fn patch_desired(f: &Fixture, id: &str, desired: serde_json::Value) {
    let patch = serde_json::json!({ "properties": { "desired": desired } });
    f.hub
        .twins
        .patch_service(&f.hub, id, &patch, &IfMatch::Any, false)
        .unwrap();
}

#[test]
fn a_desired_patch_reaches_only_a_session_that_wants_it() {
    let f = hub();
    let mut s = attached(&f, "d1", Interests::default());
    patch_desired(&f, "d1", serde_json::json!({"fan": 1}));
    assert_eq!(s.subscription().try_next(), None, "not wanted");

    s.set_interests(Interests {
        desired: true,
        ..Interests::default()
    });
    patch_desired(&f, "d1", serde_json::json!({"fan": 2}));
    let Some(Notification::DesiredPatch { version, body }) = s.subscription().try_next() else {
        panic!("a desired patch was expected");
    };
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["fan"], 2);
    assert_eq!(body["$version"], version);
    assert_eq!(
        version,
        f.hub.twins.get(&f.hub, "d1").unwrap().desired_version
    );
}

#[test]
fn queued_c2d_a_revocation_and_a_newer_session_are_notifications_too() {
    let f = hub();
    let s = attached(&f, "d1", wants_c2d());
    queue_c2d(&f.hub, "d1", "one");
    assert_eq!(
        s.subscription().try_next(),
        Some(Notification::C2dAvailable)
    );

    // A newer session of the identity replaces this one.
    let newer = session_of(&f, "d1");
    assert!(newer.attach());
    assert_eq!(
        s.subscription().try_next(),
        Some(Notification::Close(EndReason::Replaced))
    );
    s.detach();
    assert!(f.hub.connections.is_connected("d1"), "the newer one stays");

    // Disabling the device ends the newer one as well.
    let mut device = f.hub.registry.get_device("d1").unwrap();
    device.status = Status::Disabled;
    f.hub
        .registry
        .put_device("d1", device, &IfMatch::Any)
        .unwrap();
    assert_eq!(
        newer.subscription().try_next(),
        Some(Notification::Close(EndReason::Disabled))
    );
    newer.detach();
    assert!(!f.hub.connections.is_connected("d1"));
}

#[test]
fn a_detached_session_receives_nothing() {
    let f = hub();
    let wants = Interests {
        desired: true,
        methods: true,
        c2d: true,
    };
    let s = attached(&f, "d1", wants);
    s.detach();
    queue_c2d(&f.hub, "d1", "one");
    patch_desired(&f, "d1", serde_json::json!({"fan": 1}));
    assert_eq!(s.subscription().try_next(), None);
    let late = Notification::C2dAvailable;
    assert!(s.subscription().deliver(late).is_err());
}

#[test]
fn a_rejected_c2d_message_leaves_the_queue_and_is_counted() {
    let f = hub();
    let mut s = session(&f, "d1");
    s.set_interests(wants_c2d());
    queue_c2d(&f.hub, "d1", "bad");
    queue_c2d(&f.hub, "d1", "good");
    let batch = s.c2d_take();
    assert_eq!(batch.len(), 2);
    assert!(s.c2d_reject(batch[0].tag));
    assert!(!s.c2d_reject(batch[0].tag), "settled once");
    assert!(!s.c2d_complete(batch[0].tag), "settled once");
    assert_eq!(
        f.hub
            .metrics
            .c2d_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The next session gets only the message that was neither rejected nor completed.
    drop(s);
    let mut next = session_of(&f, "d1");
    next.set_interests(wants_c2d());
    let again = next.c2d_take();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.seq, batch[1].message.seq);
}

#[test]
fn an_abandoned_c2d_message_is_delivered_again_with_its_delivery_count_grown() {
    let f = hub();
    let mut s = session(&f, "d1");
    s.set_interests(wants_c2d());
    queue_c2d(&f.hub, "d1", "retry me");
    let first = s.c2d_take();
    s.c2d_sent(&first[0]);
    assert!(s.c2d_take().is_empty(), "in flight");
    assert!(s.c2d_abandon(first[0].tag));
    assert!(!s.c2d_abandon(first[0].tag), "settled once");

    let again = s.c2d_take();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message.seq, first[0].message.seq);
    assert_ne!(again[0].tag, first[0].tag, "a new delivery");
    assert!(again[0].redelivery());
    s.c2d_sent(&again[0]);
    assert!(s.c2d_abandon(again[0].tag));
    assert_eq!(s.c2d_take()[0].message.delivery_count, 2);
}
