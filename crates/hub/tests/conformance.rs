//! Seed conformance (issue 20): request shapes the unmodified SDKs and the Azure CLI send that
//! the hub must answer as IoT Hub does.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use common::TestHub;
use hyper::{Method, StatusCode};
use serde_json::json;

/// The Node service SDK's `Registry.list()` asks for `GET /devices/`; the other routes take
/// their trailing-slash forms too, with the query kept.
#[tokio::test]
async fn every_route_accepts_one_trailing_slash() {
    let t = TestHub::start().await;
    let c = t.client();
    let body = json!({"deviceId": "d1"});
    let r = c.send(Method::PUT, "/devices/d1/", Some(&body), &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "PUT /devices/d1/: {:?}", r.json());
    let m = json!({"deviceId": "d1", "moduleId": "m1"});
    let r = c.send(Method::PUT, "/devices/d1/modules/m1/", Some(&m), &[]).await.unwrap();
    assert!(r.status.is_success(), "PUT module: {:?}", r.json());
    let r = c.send(Method::GET, "/devices/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "GET /devices/: {:?}", r.json());
    assert_eq!(r.json()[0]["deviceId"], "d1");
    let r = c.send(Method::GET, "/devices/d1/modules/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()[0]["moduleId"], "m1");
    let r = c.send(Method::GET, "/twins/d1/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["deviceId"], "d1");
    let r = c.send(Method::GET, "/twins/d1/modules/m1/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["moduleId"], "m1");
    // Stripping stops at one slash and never makes up a route.
    let r = c.send(Method::GET, "/devices//", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c.send(Method::GET, "/devices/nope/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}
