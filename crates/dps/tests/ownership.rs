//! The provisioning service writes only the hub devices it created (`managedBy: dps:{idScope}`):
//! registering the id of a device that already exists at the hub fails with 409201 and leaves the
//! device as it was, unless the enrollment allows overwriting; its own devices re-register.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::dps as common;
use test_support::hub as hubtest;

use common::{SCOPE, TestDps, dps_token, register};
use hubtest::{KEY, Mqtt};
use hyper::{Method, StatusCode};
use mqtt_codec::ConnectReturnCode;
use serde_json::{Value, json};

const MARK: &str = "dps:0ne00000A11";
const NOT_MANAGED: &str = "device exists and is not managed by this provisioning service";

/// Creates or replaces a device at hub1 through its service API; returns what the hub answered.
async fn put_hub_device(t: &TestDps, id: &str, body: Value) -> Value {
    let r = t
        .hub("hub1")
        .client()
        .send(
            Method::PUT,
            &format!("/devices/{id}"),
            Some(&body),
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.json());
    r.json()
}

/// Three devices an operator created at hub1 without the provisioning service: a SAS device
/// (keys [`KEY`]), an X.509 CA device and an IoT Edge gateway.
async fn operator_devices(t: &TestDps) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for (id, body) in [
        (
            "boiler-1",
            json!({"deviceId": "boiler-1", "authentication": {"type": "sas",
                "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}}),
        ),
        (
            "camera-ca",
            json!({"deviceId": "camera-ca", "authentication": {"type": "certificateAuthority"}}),
        ),
        (
            "gateway-1",
            json!({"deviceId": "gateway-1", "authentication": {"type": "sas"},
                "capabilities": {"iotEdge": true}}),
        ),
    ] {
        put_hub_device(t, id, body).await;
        out.push((id, t.hub_device("hub1", id).await.unwrap()));
    }
    out
}

/// A symmetric-key group (extra fields merged in); returns its primary key.
async fn sas_group(t: &TestDps, id: &str, extra: Value) -> String {
    let mut body = json!({"enrollmentGroupId": id, "attestation": {"type": "symmetricKey"}});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, g) = t.put(&format!("/enrollmentGroups/{id}"), body).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    g["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Registers `id` over MQTT with SAS `key`; the final operation status.
async fn register_with(t: &TestDps, id: &str, key: &str) -> Value {
    let (mut c, code) = t.connect(id, Some(dps_token(id, key)), None).await;
    assert_eq!(code, ConnectReturnCode::Accepted, "{id} attests");
    register(&mut c, id, Value::Null).await
}

/// What hub1 answers a device connecting as `id` with SAS `key`.
async fn hub_connect(t: &TestDps, id: &str, key: &str) -> ConnectReturnCode {
    let token = iot_auth::sas::generate_sas_token(
        &format!("hub1/devices/{id}"),
        &hubtest::base64_decode(key),
        None,
        hubtest::expiry(),
    );
    let mut h = Mqtt::tls(t.hub("hub1"), None).await;
    let username = format!("hub1/{id}/?api-version=2021-04-12");
    h.connect_as(id, &username, Some(token), true).await.1
}

fn assert_refused(op: &Value, id: &str) {
    assert_eq!(op["status"], "failed", "{id}: {op}");
    let state = &op["registrationState"];
    assert_eq!(state["status"], "failed", "{id}: {op}");
    assert_eq!(state["errorCode"], 409_201, "{id}: {op}");
    assert_eq!(state["errorMessage"], NOT_MANAGED, "{id}: {op}");
    assert!(state["assignedHub"].is_null(), "{id}: {op}");
}

#[tokio::test]
async fn a_group_registration_does_not_take_over_existing_hub_devices() {
    let t = TestDps::start(1).await;
    let before = operator_devices(&t).await;
    let group_key = sas_group(&t, "grp1", json!({})).await;
    for (id, _) in &before {
        let key = iot_auth::derive_device_key(&group_key, id).unwrap();
        let op = register_with(&t, id, &key).await;
        assert_refused(&op, id);
        let (status, record) = t.get(&format!("/registrations/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(record["errorCode"], 409_201, "{record}");
    }
    // An individual enrollment of an existing device's id is refused the same way.
    let (status, _) = t
        .put(
            "/enrollments/boiler-1",
            json!({"registrationId": "boiler-1", "attestation": {"type": "symmetricKey",
                "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}, "capabilities": {"iotEdge": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_refused(&register_with(&t, "boiler-1", KEY).await, "boiler-1");
    for (id, was) in &before {
        let now = t.hub_device("hub1", id).await.unwrap();
        assert_eq!(
            &now, was,
            "{id} is untouched: keys, type, capabilities, etag"
        );
        assert!(now.get("managedBy").is_none(), "{now}");
    }
    // The real boiler still connects with its key; the group's derived key does not.
    assert_eq!(
        hub_connect(&t, "boiler-1", KEY).await,
        ConnectReturnCode::Accepted
    );
    let derived = iot_auth::derive_device_key(&group_key, "boiler-1").unwrap();
    assert_ne!(
        hub_connect(&t, "boiler-1", &derived).await,
        ConnectReturnCode::Accepted
    );
    let metrics = dps::render_metrics(&t.dps);
    assert!(
        metrics.contains("ferrohub_dps_registrations_not_managed_total 4"),
        "{metrics}"
    );
    println!(
        "RELIABILITY|security: DPS registering the id of a hub device it did not create|{} operator devices at the hub (SAS, X.509 CA, IoT Edge)|{} symmetric-key group registrations with their ids, 1 individual enrollment of an existing id|each refused (409201, counted), every device byte-for-byte unchanged (keys, type, capabilities, etag), the real key still connects, the group's derived key does not|0",
        before.len(),
        before.len()
    );
}

#[tokio::test]
async fn an_enrollment_that_allows_overwrite_adopts_existing_devices() {
    let t = TestDps::start(1).await;
    let before = operator_devices(&t).await;
    let group_key = sas_group(&t, "adopt", json!({"allowOverwrite": true})).await;
    let (_, shown) = t.get("/enrollmentGroups/adopt").await;
    assert_eq!(shown["allowOverwrite"], true, "{shown}");
    let (_, plain) = t
        .put(
            "/enrollmentGroups/plain",
            json!({"enrollmentGroupId": "plain", "attestation": {"type": "symmetricKey"}}),
        )
        .await;
    assert!(
        plain.get("allowOverwrite").is_none(),
        "off by default: {plain}"
    );
    for (id, _) in &before {
        let key = iot_auth::derive_device_key(&group_key, id).unwrap();
        for round in ["adopted", "re-registered"] {
            let op = register_with(&t, id, &key).await;
            assert_eq!(op["status"], "assigned", "{id} {round}: {op}");
            assert_eq!(op["registrationState"]["assignedHub"], "hub1");
        }
        let now = t.hub_device("hub1", id).await.unwrap();
        assert_eq!(now["managedBy"], MARK, "{now}");
        assert_eq!(now["authentication"]["type"], "sas", "{now}");
        assert_eq!(
            now["authentication"]["symmetricKey"]["primaryKey"],
            key.as_str()
        );
        assert_eq!(now["capabilities"]["iotEdge"], false, "{now}");
        assert_eq!(hub_connect(&t, id, &key).await, ConnectReturnCode::Accepted);
    }
    // An individual enrollment may adopt too.
    put_hub_device(
        &t,
        "meter-9",
        json!({"deviceId": "meter-9", "authentication": {"type": "certificateAuthority"}}),
    )
    .await;
    let (status, e) = t
        .put(
            "/enrollments/meter-9",
            json!({"registrationId": "meter-9", "attestation": {"type": "symmetricKey",
                "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}, "allowOverwrite": true}),
        )
        .await;
    assert_eq!(
        (status, &e["allowOverwrite"]),
        (StatusCode::OK, &json!(true))
    );
    let op = register_with(&t, "meter-9", KEY).await;
    assert_eq!(op["status"], "assigned", "{op}");
    let now = t.hub_device("hub1", "meter-9").await.unwrap();
    assert_eq!(
        (&now["managedBy"], &now["authentication"]["type"]),
        (&json!(MARK), &json!("sas"))
    );
}

#[tokio::test]
async fn devices_the_service_created_carry_its_mark_and_re_register() {
    let t = TestDps::start(1).await;
    let group_key = sas_group(&t, "grp1", json!({"capabilities": {"iotEdge": true}})).await;
    let key = iot_auth::derive_device_key(&group_key, "sensor-1").unwrap();
    let op = register_with(&t, "sensor-1", &key).await;
    assert_eq!(
        op["registrationState"]["substatus"], "initialAssignment",
        "{op}"
    );
    let first = t.hub_device("hub1", "sensor-1").await.unwrap();
    assert_eq!(
        first["managedBy"], MARK,
        "the service API shows the owner: {first}"
    );
    assert!(MARK.ends_with(SCOPE));
    // The application disables and re-enables it with a service SDK, which sends no managedBy.
    let mut d = first.clone();
    d.as_object_mut().unwrap().remove("managedBy");
    d["status"] = json!("disabled");
    put_hub_device(&t, "sensor-1", d.clone()).await;
    d["status"] = json!("enabled");
    assert_eq!(put_hub_device(&t, "sensor-1", d).await["managedBy"], MARK);
    let op = register_with(&t, "sensor-1", &key).await;
    assert_eq!(
        op["status"], "assigned",
        "the same device registers again: {op}"
    );
    let again = t.hub_device("hub1", "sensor-1").await.unwrap();
    assert_eq!(again["authentication"], first["authentication"]);
    assert_eq!(again["generationId"], first["generationId"]);
    assert_eq!(again["capabilities"]["iotEdge"], true);
    // Without a mark (as devices provisioned before marks existed), its own registration record
    // and unchanged credentials make it the service's again.
    let mut d = again.clone();
    d["managedBy"] = json!("");
    assert!(
        put_hub_device(&t, "sensor-1", d.clone())
            .await
            .get("managedBy")
            .is_none()
    );
    let op = register_with(&t, "sensor-1", &key).await;
    assert_eq!(op["status"], "assigned", "{op}");
    assert_eq!(
        t.hub_device("hub1", "sensor-1").await.unwrap()["managedBy"],
        MARK
    );
    // Handed to someone else, it is no longer the service's to write.
    d["managedBy"] = json!("manual");
    let handed = put_hub_device(&t, "sensor-1", d).await;
    assert_refused(&register_with(&t, "sensor-1", &key).await, "sensor-1");
    assert_eq!(t.hub_device("hub1", "sensor-1").await.unwrap(), handed);
}
