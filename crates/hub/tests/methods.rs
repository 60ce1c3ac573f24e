//! Direct methods end to end over real TLS: delivery and answer, 404 when the device is offline or
//! not subscribed, 504 when it does not answer, correlation with many calls in flight to many
//! devices, and module methods and twins managed with the device's own token.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use std::time::Duration;

use common::{HOST, KEY, Mqtt, TestHub, base64_decode, device_token, expiry};
use hyper::{Method, StatusCode};
use mqtt_codec::{Packet, Publish, QoS, Subscribe};
use serde_json::{Value, json};

async fn create_device(t: &TestHub, id: &str) {
    let body = json!({"deviceId": id, "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    let r = t
        .client()
        .send(Method::PUT, &format!("/devices/{id}"), Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

/// Connects `client_id` (a device, or `device/module`) and subscribes to method requests.
async fn method_listener(t: &TestHub, client_id: &str) -> Mqtt {
    let resource = client_id.replace('/', "/modules/");
    let mut c = Mqtt::tls(t, None).await;
    c.connect(
        client_id,
        Some(device_token(&resource, KEY, expiry())),
        true,
    )
    .await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("$iothub/methods/POST/#".into(), QoS::AtMostOnce)],
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

/// The method name and `$rid` of a request publish.
fn parse_request(p: &Publish) -> (String, String) {
    let rest = p.topic.strip_prefix("$iothub/methods/POST/").unwrap();
    let (name, query) = rest.split_once("/?").unwrap();
    let rid = query.strip_prefix("$rid=").unwrap();
    (name.to_owned(), rid.to_owned())
}

async fn answer(c: &mut Mqtt, rid: &str, status: u16, body: &Value) {
    c.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: format!("$iothub/methods/res/{status}/?$rid={rid}"),
        packet_id: None,
        payload: body.to_string().into_bytes(),
    }))
    .await;
}

async fn invoke(t: &TestHub, path: &str, body: Value) -> (StatusCode, Value) {
    let r = t
        .client()
        .send(Method::POST, path, Some(&body), &[])
        .await
        .unwrap();
    (r.status, r.json())
}

fn error_code(v: &Value) -> String {
    v["Message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_method_is_delivered_and_answered() {
    let t = TestHub::start().await;
    create_device(&t, "dev1").await;
    let mut dev = method_listener(&t, "dev1").await;
    let device = tokio::spawn(async move {
        let Some(Packet::Publish(p)) = dev.recv().await else {
            panic!("no method request")
        };
        let (name, rid) = parse_request(&p);
        assert_eq!(name, "reboot");
        let payload: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(payload, json!({"delay": 5}));
        answer(&mut dev, &rid, 201, &json!({"rebooting": true})).await;
        dev
    });
    let (status, result) = invoke(
        &t,
        "/twins/dev1/methods",
        json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(
        result,
        json!({"status": 201, "payload": {"rebooting": true}})
    );
    let mut dev = device.await.unwrap();
    // A made-up or late answer is ignored; the connection keeps serving.
    answer(&mut dev, "ffff", 200, &json!(null)).await;
    dev.send(&Packet::PingReq).await;
    assert!(matches!(dev.recv().await, Some(Packet::PingResp)));
    assert!(t.hub.methods.in_flight() == 0);
}

#[tokio::test]
async fn offline_unsubscribed_and_unknown_targets_get_404() {
    let t = TestHub::start().await;
    create_device(&t, "dev1").await;
    let call = json!({"methodName": "m", "responseTimeoutInSeconds": 5});
    let (status, body) = invoke(&t, "/twins/dev1/methods", call.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_code(&body).contains("DeviceNotOnline"), "{body}");
    // Connected but not subscribed to methods: still not online for methods.
    let mut c = Mqtt::tls(&t, None).await;
    c.connect("dev1", Some(device_token("dev1", KEY, expiry())), true)
        .await;
    let (status, body) = invoke(&t, "/twins/dev1/methods", call.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_code(&body).contains("DeviceNotOnline"), "{body}");
    let (status, body) = invoke(&t, "/twins/nobody/methods", call).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_code(&body).contains("DeviceNotFound"), "{body}");
    for bad in [
        json!({"methodName": "", "responseTimeoutInSeconds": 5}),
        json!({"methodName": "a/b"}),
        json!({"methodName": "m", "responseTimeoutInSeconds": 1}),
        json!({"payload": 1}),
    ] {
        let (status, body) = invoke(&t, "/twins/dev1/methods", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }
}

#[tokio::test]
async fn connect_timeout_waits_for_the_device_to_subscribe() {
    let t = TestHub::start().await;
    create_device(&t, "dev1").await;
    let client = t.client();
    let call = tokio::spawn(async move {
        let body = json!({"methodName": "late", "responseTimeoutInSeconds": 10, "connectTimeoutInSeconds": 10});
        client
            .send(Method::POST, "/twins/dev1/methods", Some(&body), &[])
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut dev = method_listener(&t, "dev1").await;
    let Some(Packet::Publish(p)) = dev.recv().await else {
        panic!("no method request")
    };
    let (_, rid) = parse_request(&p);
    answer(&mut dev, &rid, 200, &json!("done")).await;
    let r = call.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"status": 200, "payload": "done"}));
}

#[tokio::test]
async fn a_silent_device_gets_504_and_the_call_is_forgotten() {
    let t = TestHub::start().await;
    create_device(&t, "dev1").await;
    let mut dev = method_listener(&t, "dev1").await;
    let (status, body) = invoke(
        &t,
        "/twins/dev1/methods",
        json!({"methodName": "slow", "responseTimeoutInSeconds": 5}),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(error_code(&body).contains("GatewayTimeout"), "{body}");
    assert_eq!(t.hub.methods.in_flight(), 0);
    // The request did reach the device; answering now changes nothing and breaks nothing.
    let Some(Packet::Publish(p)) = dev.recv().await else {
        panic!("no method request")
    };
    answer(&mut dev, &parse_request(&p).1, 200, &json!(1)).await;
    dev.send(&Packet::PingReq).await;
    assert!(matches!(dev.recv().await, Some(Packet::PingResp)));
}

/// 10 devices × 10 calls in flight at once; each device answers its calls in reverse order with
/// the call's own payload, so any mix-up of request ids shows as a wrong answer.
#[tokio::test]
async fn answers_match_their_calls_with_many_in_flight() {
    let t = TestHub::start().await;
    let (devices, calls) = (10, 10);
    let mut listeners = Vec::new();
    for d in 0..devices {
        let id = format!("dev{d}");
        create_device(&t, &id).await;
        let mut c = method_listener(&t, &id).await;
        listeners.push(tokio::spawn(async move {
            let mut requests = Vec::new();
            while requests.len() < calls {
                let Some(Packet::Publish(p)) = c.recv().await else {
                    panic!("connection closed")
                };
                let (_, rid) = parse_request(&p);
                let payload: Value = serde_json::from_slice(&p.payload).unwrap();
                requests.push((rid, payload));
            }
            for (rid, payload) in requests.into_iter().rev() {
                answer(&mut c, &rid, 200, &json!({"echo": payload, "from": id})).await;
            }
            c
        }));
    }
    let mut pending = Vec::new();
    for d in 0..devices {
        for n in 0..calls {
            let client = t.client();
            pending.push(tokio::spawn(async move {
                let body = json!({"methodName": "echo", "payload": {"d": d, "n": n}, "responseTimeoutInSeconds": 30});
                let r = client
                    .send(Method::POST, &format!("/twins/dev{d}/methods"), Some(&body), &[])
                    .await
                    .unwrap();
                assert_eq!(r.status, StatusCode::OK);
                assert_eq!(
                    r.json()["payload"],
                    json!({"echo": {"d": d, "n": n}, "from": format!("dev{d}")})
                );
            }));
        }
    }
    for p in pending {
        p.await.unwrap();
    }
    for l in listeners {
        l.await.unwrap();
    }
    assert_eq!(t.hub.methods.in_flight(), 0);
}

#[tokio::test]
async fn a_device_manages_its_own_modules_and_their_twins_and_methods() {
    let t = TestHub::start().await;
    create_device(&t, "edge1").await;
    create_device(&t, "other").await;
    let tls = ferrohub_runtime::tls::client_config(&t.root).unwrap();
    let own = ferrohub_runtime::client::ServiceClient::for_device(
        t.https.to_string(),
        HOST.into(),
        "edge1",
        base64_decode(KEY),
        tls.clone(),
    )
    .with_token_time(u64::try_from(common::now().unix_timestamp()).unwrap());
    let module = json!({"moduleId": "filter", "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    let r = own
        .send(
            Method::PUT,
            "/devices/edge1/modules/filter",
            Some(&module),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    // Never connected: a date the service SDKs parse, not an empty string.
    assert_eq!(r.json()["lastActivityTime"], "0001-01-01T00:00:00Z");
    assert_eq!(
        r.json()["connectionStateUpdatedTime"],
        "0001-01-01T00:00:00Z"
    );
    // Its token opens nothing else: another device's modules, or devices themselves.
    for (method, path) in [
        (Method::PUT, "/devices/other/modules/filter"),
        (Method::GET, "/devices/other/modules"),
        (Method::GET, "/devices/edge1"),
        (Method::POST, "/twins/edge1/modules/filter/methods"),
    ] {
        let r = own.send(method, path, Some(&module), &[]).await.unwrap();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = own
        .send(
            Method::PATCH,
            "/twins/edge1/modules/filter",
            Some(&json!({"properties": {"desired": {"threshold": 7}}})),
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["properties"]["desired"]["threshold"], 7);
    assert_eq!(r.json()["moduleId"], "filter");
    // The module connects with its own credentials, reads its twin and answers a method.
    let mut m = method_listener(&t, "edge1/filter").await;
    m.send(&Packet::Subscribe(Subscribe {
        packet_id: 2,
        filters: vec![("$iothub/twin/res/#".into(), QoS::AtMostOnce)],
    }))
    .await;
    assert!(matches!(m.recv().await, Some(Packet::SubAck(_))));
    m.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "$iothub/twin/GET/?$rid=1".into(),
        packet_id: None,
        payload: b" ".to_vec(),
    }))
    .await;
    let Some(Packet::Publish(twin)) = m.recv().await else {
        panic!("no twin")
    };
    assert_eq!(twin.topic, "$iothub/twin/res/200/?$rid=1");
    let doc: Value = serde_json::from_slice(&twin.payload).unwrap();
    assert_eq!(doc["desired"]["threshold"], 7);
    let module_side = tokio::spawn(async move {
        let Some(Packet::Publish(p)) = m.recv().await else {
            panic!("no method request")
        };
        let (name, rid) = parse_request(&p);
        answer(&mut m, &rid, 200, &json!({"module": name})).await;
        m
    });
    let (status, result) = invoke(
        &t,
        "/twins/edge1/modules/filter/methods",
        json!({"methodName": "flush", "responseTimeoutInSeconds": 10}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["payload"], json!({"module": "flush"}));
    drop(module_side.await.unwrap());
    let r = own
        .send(Method::DELETE, "/devices/edge1/modules/filter", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn an_x509_device_manages_its_modules_with_its_certificate() {
    let t = TestHub::start().await;
    create_device(&t, "other").await;
    let key = pki::PrivateKey::generate(pki::KeyAlgorithm::P256).unwrap();
    let mut req = pki::CertRequest::new(
        pki::Profile::SelfSignedDevice,
        "x509dev",
        common::now() - time::Duration::days(1),
    );
    req.days = 30;
    let cert = pki::issue(&req, &key, None).unwrap();
    let body = json!({"deviceId": "x509dev", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": cert.thumbprint_sha1()}}});
    let r = t
        .client()
        .send(Method::PUT, "/devices/x509dev", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            pki::Certificate::from_pem(&std::fs::read_to_string(&t.root).unwrap())
                .unwrap()
                .to_rustls(),
        )
        .unwrap();
    let cc = common::ClientCert::new(&[&cert], &key);
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(cc.chain, cc.key)
        .unwrap();
    let device = ferrohub_runtime::client::ServiceClient::new(
        t.https.to_string(),
        HOST.into(),
        String::new(),
        vec![],
        std::sync::Arc::new(tls),
    )
    .with_authorization(None);
    let module = json!({"moduleId": "agent"});
    let r = device
        .send(
            Method::PUT,
            "/devices/x509dev/modules/agent",
            Some(&module),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json());
    let r = device
        .send(Method::GET, "/devices/x509dev/modules", None, &[])
        .await
        .unwrap();
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = device
        .send(
            Method::PUT,
            "/devices/other/modules/agent",
            Some(&module),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another device's modules"
    );
    let r = device
        .send(Method::GET, "/devices/x509dev", None, &[])
        .await
        .unwrap();
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the certificate opens only the module API"
    );
}
