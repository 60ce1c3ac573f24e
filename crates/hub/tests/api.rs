//! The service REST API over HTTPS: status codes and error bodies the SDKs parse, etags, paging,
//! CA proof of possession, the events stream, and bad input.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as common;

use common::{KEY, Mqtt, TestHub, device_token, expiry, now};
use hyper::{Method, StatusCode};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};
use serde_json::{Value, json};

#[tokio::test]
async fn devices_crud_with_generated_keys_etags_and_error_bodies() {
    let t = TestHub::start().await;
    let c = t.client();
    // The Node SDK sends empty keys: the hub generates them. PUT answers 200 (the Python SDK insists).
    let body = json!({"deviceId": "dev1", "authentication": {"symmetricKey": {"primaryKey": "", "secondaryKey": ""}}});
    let r = c
        .send(Method::PUT, "/devices/dev1", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .contains("application/json")
    );
    let d = r.json();
    assert_eq!(d["authentication"]["type"], "sas");
    assert!(
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .len()
            >= 40
    );
    assert_eq!(d["lastActivityTime"], "0001-01-01T00:00:00Z");
    let etag = d["etag"].as_str().unwrap().to_owned();

    let again = c
        .send(Method::PUT, "/devices/dev1", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.json()["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:DeviceAlreadyExists;")
    );

    let stale = c
        .send(
            Method::PUT,
            "/devices/dev1",
            Some(&d),
            &[("if-match", "\"not-the-etag\"")],
        )
        .await
        .unwrap();
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    let quoted = format!("\"{etag}\"");
    let mut disabled = d.clone();
    disabled["status"] = json!("disabled");
    let ok = c
        .send(
            Method::PUT,
            "/devices/dev1",
            Some(&disabled),
            &[("if-match", &quoted)],
        )
        .await
        .unwrap();
    assert_eq!(ok.status, StatusCode::OK);
    assert_ne!(ok.json()["etag"], json!(etag));
    assert_eq!(
        ok.json()["authentication"],
        d["authentication"],
        "keys are kept on update"
    );

    let missing = c
        .send(Method::GET, "/devices/nope", None, &[])
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.headers["iothub-errorcode"], "DeviceNotFound");
    assert!(
        missing.json()["Message"]
            .as_str()
            .unwrap()
            .starts_with("ErrorCode:DeviceNotFound;")
    );

    let edge = c
        .send(
            Method::PUT,
            "/devices/gw",
            Some(&json!({"deviceId": "gw", "capabilities": {"iotEdge": true}})),
            &[],
        )
        .await
        .unwrap()
        .json();
    assert!(
        edge["deviceScope"]
            .as_str()
            .unwrap()
            .starts_with("ms-azure-iot-edge://gw-")
    );
    let modules = c
        .send(Method::GET, "/devices/gw/modules", None, &[])
        .await
        .unwrap()
        .json();
    let ids: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["moduleId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["$edgeAgent", "$edgeHub"]);
    let child = json!({"deviceId": "child", "deviceScope": edge["deviceScope"]});
    let child = c
        .send(Method::PUT, "/devices/child", Some(&child), &[])
        .await
        .unwrap()
        .json();
    assert_eq!(child["parentScopes"], json!([edge["deviceScope"]]));

    let m = c
        .send(
            Method::PUT,
            "/devices/dev1/modules/m1",
            Some(&json!({"moduleId": "m1"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(m.status, StatusCode::CREATED);
    assert_eq!(
        c.send(Method::DELETE, "/devices/dev1", None, &[])
            .await
            .unwrap()
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.send(Method::GET, "/devices/dev1/modules/m1", None, &[])
            .await
            .unwrap()
            .status,
        StatusCode::NOT_FOUND
    );
    let stats = c
        .send(Method::GET, "/statistics/devices", None, &[])
        .await
        .unwrap()
        .json();
    assert_eq!(stats["totalDeviceCount"], 2);
}

/// `managedBy` names the service that manages a device: stored and shown; a replace that leaves it
/// out (the service SDKs do not know it) keeps it, `""` clears it; it survives a restart.
#[tokio::test]
async fn managed_by_is_stored_kept_on_replace_and_cleared_only_on_request() {
    let t = TestHub::start().await;
    let c = t.client();
    let put = |body: Value| {
        let c = c.clone();
        async move {
            let r = c
                .send(
                    Method::PUT,
                    "/devices/dev1",
                    Some(&body),
                    &[("if-match", "*")],
                )
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK);
            r.json()
        }
    };
    let plain = json!({"deviceId": "dev1"});
    assert!(
        put(plain.clone()).await.get("managedBy").is_none(),
        "absent unless set"
    );
    let marked = put(json!({"deviceId": "dev1", "managedBy": "dps:0ne1"})).await;
    assert_eq!(marked["managedBy"], "dps:0ne1");
    let mut disabled = marked.clone();
    disabled.as_object_mut().unwrap().remove("managedBy");
    disabled["status"] = json!("disabled");
    assert_eq!(put(disabled).await["managedBy"], "dps:0ne1", "kept");
    let (dir, cfg, root) = t.stop().await;
    let t = TestHub::start_in(dir, cfg, root).await;
    let shown = t
        .client()
        .send(Method::GET, "/devices/dev1", None, &[])
        .await
        .unwrap()
        .json();
    assert_eq!(shown["managedBy"], "dps:0ne1", "stored: {shown}");
    let c = t.client();
    let r = c
        .send(
            Method::PUT,
            "/devices/dev1",
            Some(&json!({"deviceId": "dev1", "managedBy": ""})),
            &[("if-match", "*")],
        )
        .await
        .unwrap();
    assert!(r.json().get("managedBy").is_none(), "cleared");
}

#[tokio::test]
async fn bad_requests_get_protocol_correct_refusals() {
    let t = TestHub::start().await;
    let c = t.client();
    let r = c
        .send(
            Method::PUT,
            "/devices/dev1?api-version=1999-01-01",
            Some(&json!({})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["Message"]
            .as_str()
            .unwrap()
            .contains("api-version 1999-01-01 is not supported")
    );
    let bad_id = c
        .send(
            Method::PUT,
            "/devices/bad%20id",
            Some(&json!({"deviceId": "bad id"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    let bad_key = json!({"deviceId": "k", "authentication": {"symmetricKey": {"primaryKey": "!!", "secondaryKey": ""}}});
    assert_eq!(
        c.send(Method::PUT, "/devices/k", Some(&bad_key), &[])
            .await
            .unwrap()
            .status,
        StatusCode::BAD_REQUEST
    );
    let bad_thumb = json!({"deviceId": "t", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "xyz"}}});
    assert_eq!(
        c.send(Method::PUT, "/devices/t", Some(&bad_thumb), &[])
            .await
            .unwrap()
            .status,
        StatusCode::BAD_REQUEST
    );
    let q = c
        .send(
            Method::POST,
            "/devices/query",
            Some(&json!({"query": "SELECT * FROM nowhere"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(q.status, StatusCode::BAD_REQUEST);

    // Malformed JSON, sent raw.
    let wrong_key = ferrohub_runtime::client::ServiceClient::new(
        t.https.to_string(),
        "localhost".into(),
        "iothubowner".into(),
        common::base64_decode("YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU="),
        ferrohub_runtime::tls::client_config(&t.root).unwrap(),
    )
    .with_token_time(u64::try_from(now().unix_timestamp()).unwrap());
    assert_eq!(
        wrong_key
            .send(Method::GET, "/devices", None, &[])
            .await
            .unwrap()
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.hub.registry.list_devices(None).unwrap().len(),
        0,
        "nothing was created by bad requests"
    );
}

#[tokio::test]
async fn query_pages_with_continuation_only_when_more_remain() {
    let t = TestHub::start().await;
    let c = t.client();
    for i in 0..5 {
        let edge = i % 2 == 0;
        c.send(
            Method::PUT,
            &format!("/devices/d{i}"),
            Some(&json!({"deviceId": format!("d{i}"), "capabilities": {"iotEdge": edge}})),
            &[],
        )
        .await
        .unwrap();
    }
    let q = json!({"query": "SELECT * FROM devices WHERE capabilities.iotEdge = true"});
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "2")];
        let t_owned = token.clone();
        if let Some(tok) = t_owned.as_deref() {
            headers.push(("x-ms-continuation", tok));
        }
        let r = c
            .send(Method::POST, "/devices/query", Some(&q), &headers)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-ms-item-type"], "twin");
        seen.extend(
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["deviceId"].as_str().unwrap().to_owned()),
        );
        token = r
            .headers
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_owned());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, vec!["d0", "d2", "d4"]);
}

#[tokio::test]
async fn ca_proof_of_possession_over_rest() {
    let t = TestHub::start().await;
    let c = t.client();
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let ca = pki::issue(
        &CertRequest::new(Profile::RootCa, "REST CA", now()),
        &key,
        None,
    )
    .unwrap();
    let up = c
        .send(
            Method::PUT,
            "/certificates/rest-ca",
            Some(&json!({"properties": {"certificate": ca.to_pem()}})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(up.status, StatusCode::OK);
    assert_eq!(up.json()["properties"]["isVerified"], false);
    assert_eq!(
        up.json()["properties"]["thumbprint"],
        json!(ca.thumbprint_sha1())
    );
    let code = c
        .send(
            Method::POST,
            "/certificates/rest-ca/generateVerificationCode",
            None,
            &[],
        )
        .await
        .unwrap()
        .json();
    let code = code["properties"]["verificationCode"]
        .as_str()
        .unwrap()
        .to_owned();
    // Signed by another key: refused, and the CA stays unverified.
    let other = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let other_ca = pki::issue(
        &CertRequest::new(Profile::RootCa, "REST CA", now()),
        &other,
        None,
    )
    .unwrap();
    let k = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let forged = pki::issue(
        &CertRequest::new(Profile::Verification, code.clone(), now()),
        &k,
        Some(Signer {
            cert: &other_ca,
            key: &other,
        }),
    )
    .unwrap();
    let r = c
        .send(
            Method::POST,
            "/certificates/rest-ca/verify",
            Some(&json!({"certificate": forged.to_pem()})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let good = pki::issue(
        &CertRequest::new(Profile::Verification, code, now()),
        &k,
        Some(Signer {
            cert: &ca,
            key: &key,
        }),
    )
    .unwrap();
    let r = c
        .send(
            Method::POST,
            "/certificates/rest-ca/verify",
            Some(&json!({"certificate": good.to_pem()})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["properties"]["isVerified"], true);
    // A leaf is not a CA.
    let leaf_up = c
        .send(
            Method::PUT,
            "/certificates/leaf",
            Some(&json!({"properties": {"certificate": good.to_pem()}})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(leaf_up.status, StatusCode::BAD_REQUEST);
    let list: Value = c
        .send(Method::GET, "/certificates", None, &[])
        .await
        .unwrap()
        .json();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn events_endpoint_streams_ndjson_by_device() {
    let t = TestHub::start().await;
    let c = t.client();
    for id in ["a", "b"] {
        let body = json!({"deviceId": id, "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
        c.send(Method::PUT, &format!("/devices/{id}"), Some(&body), &[])
            .await
            .unwrap();
        let mut m = Mqtt::tls(&t, None).await;
        m.connect(id, Some(device_token(id, KEY, expiry())), true)
            .await;
        for i in 1..=3u16 {
            m.send(&mqtt_codec::Packet::Publish(mqtt_codec::Publish {
                dup: false,
                qos: mqtt_codec::QoS::AtLeastOnce,
                retain: false,
                topic: format!("devices/{id}/messages/events/n={i}"),
                packet_id: Some(i),
                payload: b"hello".to_vec(),
            }))
            .await;
            assert_eq!(m.recv().await, Some(mqtt_codec::Packet::PubAck(i)));
        }
    }
    let r = c
        .send(Method::GET, "/events?from=start&device=b", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let lines: Vec<Value> = std::str::from_utf8(&r.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["deviceId"] == "b"));
    assert_eq!(lines[0]["offset"], 3);
    assert_eq!(lines[2]["properties"]["n"], "3");
    let limited = c
        .send(Method::GET, "/events?from=1&limit=2", None, &[])
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&limited.body).unwrap().lines().count(),
        2
    );
}
