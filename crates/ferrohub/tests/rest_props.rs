//! Property tests for the hub's service REST API bodies: a real hub on loopback receives
//! generated JSON bodies, some shaped like the real ones with wrong types and values, some
//! arbitrary, on every endpoint that takes a body. The hub must answer each with a 2xx or 4xx
//! (never a 5xx, never a dropped connection), and keep serving: the known device still reads
//! back unchanged unless a request was allowed to change it.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::sync::OnceLock;

use hyper::Method;
use proptest::prelude::*;
use serde_json::{Value, json};
use test_support::hub::TestHub;

struct Env {
    rt: tokio::runtime::Runtime,
    hub: TestHub,
    client: ferrohub_runtime::client::ServiceClient,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hub = rt.block_on(TestHub::start());
        let client = hub.client();
        rt.block_on(async {
            let r = client
                .send(
                    Method::PUT,
                    "/devices/anchor",
                    Some(&json!({"deviceId": "anchor"})),
                    &[],
                )
                .await
                .unwrap();
            assert!(r.status.is_success(), "{:?}", r.body);
        });
        Env { rt, hub, client }
    })
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        ".{0,20}".prop_map(Value::String),
        Just(json!("sas")),
        Just(json!("selfSigned")),
        Just(json!("certificateAuthority")),
        Just(json!("disabled")),
        Just(json!("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")),
        Just(json!("*")),
    ]
}

/// JSON whose keys are the ones the API reads (and some it does not), with any values.
fn body() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("deviceId"),
        Just("moduleId"),
        Just("etag"),
        Just("status"),
        Just("authentication"),
        Just("type"),
        Just("symmetricKey"),
        Just("primaryKey"),
        Just("secondaryKey"),
        Just("x509Thumbprint"),
        Just("primaryThumbprint"),
        Just("capabilities"),
        Just("iotEdge"),
        Just("deviceScope"),
        Just("parentScopes"),
        Just("properties"),
        Just("desired"),
        Just("tags"),
        Just("$version"),
        Just("query"),
        Just("methodName"),
        Just("payload"),
        Just("responseTimeoutInSeconds"),
        Just("connectTimeoutInSeconds"),
        Just("certificate"),
        Just("isVerified"),
        Just("x"),
    ]
    .prop_map(str::to_owned);
    scalar().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("anchor".to_owned()),
        Just("dev1".to_owned()),
        "[a-z0-9.%_-]{1,12}",
    ]
}

/// The endpoints that take a body, for ids `d` and `m`.
fn requests(d: &str, m: &str) -> Vec<(Method, String)> {
    vec![
        (Method::PUT, format!("/devices/{d}")),
        (Method::POST, "/devices/query".into()),
        (Method::POST, format!("/devices/{d}/messages/deviceBound")),
        (Method::PUT, format!("/devices/{d}/modules/{m}")),
        (Method::PATCH, format!("/twins/{d}")),
        (Method::PUT, format!("/twins/{d}")),
        (Method::POST, format!("/twins/{d}/methods")),
        (Method::PATCH, format!("/twins/{d}/modules/{m}")),
        (Method::POST, format!("/twins/{d}/modules/{m}/methods")),
        (Method::PUT, format!("/certificates/{m}")),
        (Method::POST, format!("/certificates/{m}/verify")),
        (Method::POST, "/devices".into()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn generated_bodies_get_a_client_error_or_success_and_the_hub_keeps_serving(
        b in body(),
        d in id(),
        m in id(),
        pick in prop::collection::vec(any::<prop::sample::Index>(), 1..5),
    ) {
        let env = env();
        let all = requests(&d, &m);
        env.rt.block_on(async {
            for i in &pick {
                let (method, path) = &all[i.index(all.len())];
                let r = env.client.send(method.clone(), path, Some(&b), &[]).await;
                let r = r.unwrap_or_else(|e| panic!("{method} {path} {b}: no answer: {e}"));
                assert!(
                    !r.status.is_server_error(),
                    "{method} {path} {b}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                );
            }
            // Still serving, registry intact.
            let r = env.client.send(Method::GET, "/devices/anchor", None, &[]).await.unwrap();
            if r.status.is_success() {
                assert_eq!(r.json()["deviceId"], "anchor");
            } else {
                // Only a request for `anchor` may have removed or replaced it.
                assert_eq!(d, "anchor", "anchor vanished: {}", r.status);
            }
            let r = env.client.send(Method::GET, "/statistics/devices", None, &[]).await.unwrap();
            assert!(r.status.is_success());
        });
        let _ = &env.hub;
    }
}
