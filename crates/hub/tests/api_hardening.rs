//! The service API's hardening: a policy token's `sr` scope, `/metrics` behind a token or on a
//! loopback listener, IoT Hub's id alphabet (and a warning for ids MQTT cannot carry), 507 on a
//! full disk, and the request-body depth limit.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{HOST, KEY, TestHub, base64_decode, expiry};
use ferrohub_runtime::client::{ClientResponse, ServiceClient};
use hub::config::{Policy, Right};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client of the hub's owner policy whose token is scoped to `sr` (`{host}/...`).
fn scoped_client(t: &TestHub, sr: &str) -> ServiceClient {
    let token =
        iot_auth::sas::generate_sas_token(sr, &base64_decode(KEY), Some("iothubowner"), expiry());
    t.client().with_authorization(Some(token))
}

fn assert_unauthorized(r: &ClientResponse, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {:?}", r.body);
    let message = r.json()["Message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.starts_with("ErrorCode:IotHubUnauthorizedAccess;"),
        "{what}: {message}"
    );
}

async fn create(t: &TestHub, id: &str) {
    let body = json!({"deviceId": id});
    let r = t
        .client()
        .send(Method::PUT, &format!("/devices/{id}"), Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{id}: {:?}", r.body);
}

#[tokio::test]
async fn a_device_scoped_policy_token_grants_that_device_only() {
    let t = TestHub::start().await;
    create(&t, "d1").await;
    create(&t, "d2").await;
    let c = scoped_client(&t, &format!("{HOST}/devices/d1"));
    let module = json!({"deviceId": "d1", "moduleId": "m1"});
    let granted: [(Method, &str, Option<&Value>); 5] = [
        (Method::GET, "/devices/d1", None),
        (Method::GET, "/twins/d1", None),
        (Method::PUT, "/devices/d1/modules/m1", Some(&module)),
        (Method::GET, "/devices/d1/modules", None),
        (Method::GET, "/twins/d1/modules/m1", None),
    ];
    for (method, path, body) in granted {
        let r = c.send(method, path, body, &[]).await.unwrap();
        assert!(r.status.is_success(), "{path}: {} {:?}", r.status, r.body);
    }
    let errors_before = t.hub.metrics.render(0);
    let query = json!({"query": "SELECT * FROM devices"});
    let refused: [(Method, &str, Option<&Value>); 9] = [
        (Method::GET, "/devices/d2", None),
        (Method::DELETE, "/devices/d2", None),
        (Method::GET, "/twins/d2", None),
        (Method::GET, "/devices/d2/modules", None),
        (Method::GET, "/devices", None),
        (Method::POST, "/devices/query", Some(&query)),
        (Method::GET, "/statistics/devices", None),
        (Method::GET, "/certificates", None),
        (Method::GET, "/metrics", None),
    ];
    let refused_calls = refused.len();
    for (method, path, body) in refused {
        let r = c.send(method, path, body, &[]).await.unwrap();
        assert_unauthorized(&r, path);
    }
    assert!(
        t.hub.registry.get_device("d2").is_ok(),
        "d2 was deleted by d1's token"
    );
    assert_ne!(
        t.hub.metrics.render(0),
        errors_before,
        "refusals are counted"
    );

    // A module-scoped token: that module, not its device or its siblings.
    let m = scoped_client(&t, &format!("{HOST}/devices/d1/modules/m1"));
    let r = m
        .send(Method::GET, "/devices/d1/modules/m1", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    for path in ["/devices/d1", "/devices/d1/modules", "/twins/d1"] {
        assert_unauthorized(&m.send(Method::GET, path, None, &[]).await.unwrap(), path);
    }

    // The hub-wide token of the same policy reaches everything its rights allow.
    for path in ["/devices", "/devices/d2", "/statistics/devices", "/metrics"] {
        let r = t.client().send(Method::GET, path, None, &[]).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    println!(
        "RELIABILITY|security: a device-scoped policy token on the service API|2 devices; a policy token with sr=HOST/devices/d1 and one with sr=HOST/devices/d1/modules/m1|{refused_calls} calls on another device or on hub-wide routes (list, query, statistics, certificates, metrics) with the device token; 3 on the module's device with the module token|all 401 (counted, logged), the other device intact; each token's own device, twin and modules served; the hub-wide token of the same policy reaches everything|0"
    );
}

/// `GET /metrics` over plain HTTP/1.1; the status and the body.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[tokio::test]
async fn metrics_need_a_service_connect_token_or_the_loopback_listener() {
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], test_support::net::free_port()));
    let t = TestHub::start_with(|cfg| {
        cfg.listen.metrics = Some(metrics_addr);
        cfg.policies.push(Policy {
            name: "registryRead".into(),
            primary_key: KEY.into(),
            secondary_key: KEY.into(),
            rights: vec![Right::RegistryRead],
        });
    })
    .await;
    let anonymous = t.client().with_authorization(None);
    assert_unauthorized(
        &anonymous
            .send(Method::GET, "/metrics", None, &[])
            .await
            .unwrap(),
        "no token",
    );
    let reader = ServiceClient::new(
        t.https.to_string(),
        HOST.into(),
        "registryRead".into(),
        base64_decode(KEY),
        ferrohub_runtime::tls::client_config(&t.root).unwrap(),
    )
    .with_token_time(u64::try_from(common::now().unix_timestamp()).unwrap());
    assert_unauthorized(
        &reader
            .send(Method::GET, "/metrics", None, &[])
            .await
            .unwrap(),
        "RegistryRead only",
    );
    let r = t
        .client()
        .send(Method::GET, "/metrics", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        std::str::from_utf8(&r.body)
            .unwrap()
            .contains("ferrohub_http_errors_total 2")
    );

    // The loopback listener: metrics without a token, and nothing else.
    let (status, body) = plain_get(metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ferrohub_http_requests_total"), "{body}");
    assert_eq!(plain_get(metrics_addr, "/devices").await.0, 404);

    // Off loopback it is refused at load, naming the setting and the alternative.
    let mut cfg = t.hub.config.clone();
    cfg.listen.metrics = Some("0.0.0.0:9600".parse().unwrap());
    let err = cfg.check().unwrap_err();
    assert!(
        err.contains("listen.metrics") && err.contains("loopback") && err.contains("policy token"),
        "{err}"
    );
    cfg.listen.metrics = Some("[::1]:9600".parse().unwrap());
    cfg.check().unwrap();
    println!(
        "RELIABILITY|security: /metrics without credentials|a hub with a RegistryRead policy and a loopback metrics listener|GET /metrics over HTTPS with no token and with a RegistryRead token; a non-loopback listen.metrics|401 twice (counted), served with a ServiceConnect token and on the loopback listener only (404 for anything else there), the off-loopback address refused at load naming the setting|0"
    );
}

#[tokio::test]
async fn ids_follow_iot_hub_rules_and_mqtt_wildcards_are_flagged() {
    let t = TestHub::start().await;
    let c = t.client();
    let long = "d".repeat(129);
    for (path, why) in [
        ("/devices/%2E", "must not be"),
        ("/devices/%2E%2E", "must not be"),
        ("/devices/a%2Fb", "-.+%_#*?!(),:=@$'"),
        ("/devices/a%20b", "-.+%_#*?!(),:=@$'"),
        ("/devices/%C3%A9", "-.+%_#*?!(),:=@$'"),
        (&format!("/devices/{long}"), "1 to 128"),
    ] {
        let body = json!({"deviceId": ""});
        let r = c.send(Method::PUT, path, Some(&body), &[]).await.unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        let message = r.json()["Message"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{path}: {message}");
    }
    assert!(t.hub.registry.list_devices(None).unwrap().is_empty());

    // Every IoT Hub character is accepted; '#' and '+' with a warning header, the body intact.
    let every = "a-._%*?!(),:=@$'z";
    let plain = c
        .send(
            Method::PUT,
            "/devices/a-._%25*%3F!(),:=@$'z",
            Some(&json!({ "deviceId": every })),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.headers.get("warning").is_none());
    assert_eq!(plain.json()["deviceId"], every);
    let wild = c
        .send(
            Method::PUT,
            "/devices/a%23b",
            Some(&json!({"deviceId": "a#b"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(wild.status, StatusCode::OK);
    assert_eq!(wild.json()["deviceId"], "a#b");
    let warning = wild.headers["warning"].to_str().unwrap();
    assert!(
        warning.starts_with("299 ferrohub \"") && warning.contains("MQTT"),
        "{warning}"
    );
    let module = c
        .send(
            Method::PUT,
            "/devices/a-._%25*%3F!(),:=@$'z/modules/m%2B1",
            Some(&json!({"moduleId": "m+1"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(module.status, StatusCode::CREATED);
    assert!(
        module.headers["warning"]
            .to_str()
            .unwrap()
            .contains("'m+1'")
    );
    let dot = c
        .send(
            Method::PUT,
            "/devices/a%23b/modules/%2E%2E",
            Some(&json!({"moduleId": ".."})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(dot.status, StatusCode::BAD_REQUEST);
    println!(
        "RELIABILITY|security: device and module ids outside IoT Hub's rules|a hub|6 device ids (., .., a slash, a space, non-ASCII, 129 characters), a module id ..; ids with # and +|every bad id 400 naming the allowed characters, nothing stored; every IoT Hub character accepted, # and + with a warning header that they cannot be used over MQTT|0"
    );
}

#[tokio::test]
async fn a_full_registry_disk_answers_507_naming_it_and_service_resumes() {
    let mount_dir = tempfile::tempdir().unwrap();
    let disk = match common::SmallDisk::mount(mount_dir.path(), "1m") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {e}");
            return;
        }
    };
    let registry = disk.0.join("registry.sqlite");
    let t = TestHub::start_with(|cfg| cfg.storage.registry = registry.clone()).await;
    create(&t, "before").await;
    let filler = disk.0.join("filler");
    disk.fill(&filler);

    let c = t.client();
    let r = c
        .send(
            Method::PUT,
            "/devices/full",
            Some(&json!({"deviceId": "full"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE, "{:?}", r.body);
    assert_eq!(r.headers["iothub-errorcode"], "InsufficientStorage");
    let message = r.json()["Message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("disk full at {}", registry.display()))
            && message.contains("free space"),
        "{message}"
    );
    // Reads still work while full.
    let r = c
        .send(Method::GET, "/devices/before", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // Space returns: the same running hub stores again.
    std::fs::remove_file(&filler).unwrap();
    create(&t, "full").await;
    assert!(t.hub.registry.get_device("full").is_ok());
    let _ = t.stop().await;
    drop(disk);
    println!(
        "RELIABILITY|security: registry on a full disk|a hub whose registry sits on a 1 MiB tmpfs|the tmpfs filled, a device created; the filler removed|507 InsufficientStorage naming the file and the fix (not a bare 500), reads served while full, writes again without a restart|0"
    );
}

#[tokio::test]
async fn bodies_nested_past_the_limit_are_refused_before_parsing() {
    let t = TestHub::start().await;
    let c = t.client();
    let limit = hub_wire::limits::MAX_BODY_DEPTH;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    // An unknown field the device parser would skip, one level too deep.
    let body = format!("{{\"deviceId\":\"d\",\"unknown\":{}}}", deep(limit));
    let r = c
        .send_bytes(Method::PUT, "/devices/d", Bytes::from(body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let message = r.json()["Message"].as_str().unwrap().to_owned();
    assert!(
        message.contains(&format!("the limit is {limit}")),
        "{message}"
    );
    assert!(t.hub.registry.get_device("d").is_err());

    // 100 000 levels: refused quickly, and the hub keeps serving.
    let r = c
        .send_bytes(
            Method::POST,
            "/devices/query",
            Bytes::from("[".repeat(100_000)),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["Message"].as_str().unwrap().contains("levels"));

    // A twin at its own limit (10 levels of desired properties) fits in the body limit.
    create(&t, "d").await;
    let mut leaf = json!(1);
    for i in 0..hub_wire::limits::TWIN_MAX_DEPTH - 1 {
        leaf = json!({ format!("l{i}"): leaf });
    }
    let patch = json!({"properties": {"desired": leaf}});
    let r = c
        .send(Method::PATCH, "/twins/d", Some(&patch), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    println!(
        "RELIABILITY|security: JSON bodies nested past the depth limit|a hub|an unknown field nested {limit} levels deep in a device body; a 100,000-level body on the query route|both 400 before parsing, naming the limit, nothing stored, the hub serving; a twin patch at the twin depth limit still accepted|0"
    );
}
