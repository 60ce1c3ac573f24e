//! Seed conformance (issue 20): request shapes the unmodified SDKs and the Azure CLI send that
//! the hub must answer as IoT Hub does.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{HOST, KEY, Mqtt, TestHub, base64_decode, device_token, expiry};
use ferrohub_runtime::client::ServiceClient;
use hub::config::{Policy, Right};
use hyper::{Method, StatusCode};
use mqtt_codec::ConnectReturnCode;
use serde_json::json;

/// The Node service SDK's `Registry.list()` asks for `GET /devices/`; the other routes take
/// their trailing-slash forms too, with the query kept.
#[tokio::test]
async fn every_route_accepts_one_trailing_slash() {
    let t = TestHub::start().await;
    let c = t.client();
    let body = json!({"deviceId": "d1"});
    let r = c
        .send(Method::PUT, "/devices/d1/", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "PUT /devices/d1/: {:?}", r.json());
    let m = json!({"deviceId": "d1", "moduleId": "m1"});
    let r = c
        .send(Method::PUT, "/devices/d1/modules/m1/", Some(&m), &[])
        .await
        .unwrap();
    assert!(r.status.is_success(), "PUT module: {:?}", r.json());
    let r = c.send(Method::GET, "/devices/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "GET /devices/: {:?}", r.json());
    assert_eq!(r.json()[0]["deviceId"], "d1");
    let r = c
        .send(Method::GET, "/devices/d1/modules/", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()[0]["moduleId"], "m1");
    let r = c.send(Method::GET, "/twins/d1/", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["deviceId"], "d1");
    let r = c
        .send(Method::GET, "/twins/d1/modules/m1/", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["moduleId"], "m1");
    // Stripping stops at one slash and never makes up a route.
    let r = c.send(Method::GET, "/devices//", None, &[]).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = c
        .send(Method::GET, "/devices/nope/", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// `POST /devices/{id}/applyConfigurationContent` (`az iot edge set-modules`, the service SDKs'
/// apply-on-edge-device) writes the module twins as `ferrohub hub edge set-modules` does.
#[tokio::test]
async fn apply_configuration_content_writes_the_module_twins() {
    let t = TestHub::start_with(|cfg| {
        cfg.policies.push(Policy {
            name: "registryRead".into(),
            primary_key: KEY.into(),
            secondary_key: KEY.into(),
            rights: vec![Right::RegistryRead],
        });
    })
    .await;
    let c = t.client();
    let edge = json!({"deviceId": "gw", "capabilities": {"iotEdge": true}});
    let r = c
        .send(Method::PUT, "/devices/gw", Some(&edge), &[])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{:?}", r.json());
    let leaf = json!({"deviceId": "leaf"});
    c.send(Method::PUT, "/devices/leaf", Some(&leaf), &[])
        .await
        .unwrap();
    let content = json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "modules": {"sensor": {}}}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {"up": "FROM /messages/* INTO $upstream"}}},
        "sensor": {"properties": {"desired": {"interval": 5}}},
    }});
    let path = "/devices/gw/applyConfigurationContent";
    let r = c
        .send(Method::POST, path, Some(&content), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json());
    let twin = |m: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .send(Method::GET, &format!("/twins/gw/modules/{m}"), None, &[])
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK, "{m}: {:?}", r.json());
            r.json()["properties"]["desired"].clone()
        }
    };
    assert_eq!(twin("$edgeAgent").await["modules"]["sensor"], json!({}));
    assert_eq!(
        twin("$edgeHub").await["routes"]["up"],
        "FROM /messages/* INTO $upstream"
    );
    assert_eq!(twin("sensor").await["interval"], 5);
    let r = c
        .send(Method::GET, "/devices/gw/modules/sensor", None, &[])
        .await
        .unwrap();
    assert_eq!(r.json()["managedBy"], "iotEdge");

    let bad = |body: serde_json::Value, want: StatusCode, dev: &'static str| {
        let c = c.clone();
        async move {
            let p = format!("/devices/{dev}/applyConfigurationContent");
            let r = c.send(Method::POST, &p, Some(&body), &[]).await.unwrap();
            assert_eq!(r.status, want, "{body}: {:?}", r.json());
        }
    };
    bad(json!([1]), StatusCode::BAD_REQUEST, "gw").await;
    bad(json!({"modulesContent": 3}), StatusCode::BAD_REQUEST, "gw").await;
    bad(
        json!({"modulesContent": {"$edgeAgent": {}}}),
        StatusCode::BAD_REQUEST,
        "gw",
    )
    .await;
    bad(
        json!({"deviceContent": {"properties.desired.x": 1}}),
        StatusCode::BAD_REQUEST,
        "gw",
    )
    .await;
    bad(content.clone(), StatusCode::NOT_FOUND, "nope").await;
    bad(content.clone(), StatusCode::BAD_REQUEST, "leaf").await;
    let empty_extras = json!({"modulesContent": content["modulesContent"], "deviceContent": null, "moduleContent": {}});
    bad(empty_extras, StatusCode::NO_CONTENT, "gw").await;
    let reader = ServiceClient::new(
        t.https.to_string(),
        HOST.into(),
        "registryRead".into(),
        base64_decode(KEY),
        ferrohub_runtime::tls::client_config(&t.root).unwrap(),
    )
    .with_token_time(u64::try_from(common::now().unix_timestamp()).unwrap());
    let r = reader
        .send(Method::POST, path, Some(&content), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "RegistryRead only");
}

/// A device or module that connects with `model-id=` in its MQTT user name (IoT Plug and Play)
/// shows `modelId` in its twin and identity; a service write neither sets nor clears it.
#[tokio::test]
async fn plug_and_play_model_id_is_recorded_at_connect() {
    let t = TestHub::start().await;
    common::sas_device(&t, "pnp", hub_wire::model::Status::Enabled);
    let c = t.client();
    let model = "dtmi:com:example:Thermostat;1";
    let mut mqtt = Mqtt::tls(&t, None).await;
    let user = format!("{HOST}/pnp/?api-version=2021-04-12&model-id={model}");
    let token = device_token("pnp", KEY, expiry());
    let (_, code) = mqtt.connect_as("pnp", &user, Some(token), true).await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    let get = |path: &'static str| {
        let c = c.clone();
        async move {
            let r = c.send(Method::GET, path, None, &[]).await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.json());
            r.json()
        }
    };
    assert_eq!(get("/twins/pnp").await["modelId"], model);
    assert_eq!(get("/devices/pnp").await["modelId"], model);
    // A replace by the service keeps it, and a model id in its body is not taken.
    let body = json!({"deviceId": "pnp", "modelId": "dtmi:other;1", "status": "enabled"});
    let r = c
        .send(
            Method::PUT,
            "/devices/pnp",
            Some(&body),
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(get("/twins/pnp").await["modelId"], model);
    // A device that never announced one has an empty model id in its twin, as at IoT Hub.
    common::sas_device(&t, "plain", hub_wire::model::Status::Enabled);
    assert_eq!(get("/twins/plain").await["modelId"], "");

    let m = json!({"deviceId": "pnp", "moduleId": "m1",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    let r = c
        .send(Method::PUT, "/devices/pnp/modules/m1", Some(&m), &[])
        .await
        .unwrap();
    assert!(r.status.is_success(), "{:?}", r.json());
    let mut module = Mqtt::tls(&t, None).await;
    let user = format!("{HOST}/pnp/m1/?api-version=2021-04-12&model-id={model}");
    let token = device_token("pnp/modules/m1", KEY, expiry());
    let (_, code) = module.connect_as("pnp/m1", &user, Some(token), true).await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    assert_eq!(get("/twins/pnp/modules/m1").await["modelId"], model);
    assert_eq!(get("/devices/pnp/modules/m1").await["modelId"], model);
}
