//! The provisioning service API's hardening: `/metrics` behind a token or on a loopback listener,
//! the registration id alphabet, 507 on a full disk, the request-body depth limit, and paths
//! with a trailing slash.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::dps as common;
use test_support::hub as hubtest;

use common::TestDps;
use hubtest::SmallDisk;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde_json::json;
use test_support::net::free_port;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn metrics_need_a_token_or_the_loopback_listener() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let t = TestDps::start_with(1, |c| c.listen.metrics = Some(addr)).await;
    let anonymous = t.service().with_authorization(None);
    let r = anonymous
        .send(Method::GET, "/metrics", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["x-ms-error-code"], "Unauthorized");
    let r = t
        .service()
        .send(Method::GET, "/metrics", None, &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        std::str::from_utf8(&r.body)
            .unwrap()
            .contains("ferrohub_dps_http_requests_total")
    );

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("ferrohub_dps_registrations_assigned_total"),
        "{out}"
    );

    let mut cfg = t.dps.config.clone();
    cfg.listen.metrics = Some("192.0.2.1:9600".parse().unwrap());
    let err = cfg.check().unwrap_err();
    assert!(
        err.contains("listen.metrics") && err.contains("loopback"),
        "{err}"
    );
}

#[tokio::test]
async fn enrollment_and_registration_ids_use_the_dps_alphabet() {
    let t = TestDps::start(1).await;
    for id in ["%2E", "%2E%2E", "a%23b", "a%2Bb", "a%2Fb", "-a", "%C3%A9"] {
        let body = json!({"registrationId": id, "attestation": {"type": "symmetricKey"}});
        let (status, err) = t.put(&format!("/enrollments/{id}"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains("-._:"),
            "{id}: {err}"
        );
        let group = json!({"enrollmentGroupId": id, "attestation": {"type": "symmetricKey"}});
        let (status, _) = t.put(&format!("/enrollmentGroups/{id}"), group).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "group {id}");
    }
}

#[tokio::test]
async fn bodies_nested_past_the_limit_are_refused() {
    let t = TestDps::start(1).await;
    let limit = hub_wire::limits::MAX_BODY_DEPTH;
    let deep = format!("{}{}", "[".repeat(limit), "]".repeat(limit));
    let body = format!(
        "{{\"registrationId\":\"e1\",\"attestation\":{{\"type\":\"symmetricKey\"}},\"x\":{deep}}}"
    );
    let r = t
        .service()
        .send_bytes(Method::PUT, "/enrollments/e1", Bytes::from(body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains(&format!("the limit is {limit}"))
    );
    assert_eq!(t.get("/enrollments/e1").await.0, StatusCode::NOT_FOUND);
    // An initialTwin at the twin limit fits.
    let mut leaf = json!(1);
    for i in 0..hub_wire::limits::TWIN_MAX_DEPTH - 1 {
        leaf = json!({ format!("l{i}"): leaf });
    }
    let body = json!({"registrationId": "e1", "attestation": {"type": "symmetricKey"},
        "initialTwin": {"properties": {"desired": leaf}}});
    assert_eq!(t.put("/enrollments/e1", body).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_full_disk_answers_507_naming_it_and_service_resumes() {
    let mount_dir = tempfile::tempdir().unwrap();
    let disk = match SmallDisk::mount(mount_dir.path(), "1m") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root): {e}");
            return;
        }
    };
    let database = disk.0.join("dps.sqlite");
    let t = TestDps::start_with(1, |c| c.storage.database = database.clone()).await;
    let enrollment =
        |id: &str| json!({"registrationId": id, "attestation": {"type": "symmetricKey"}});
    assert_eq!(
        t.put("/enrollments/e1", enrollment("e1")).await.0,
        StatusCode::OK
    );
    let filler = disk.0.join("filler");
    disk.fill(&filler);
    let (status, err) = t.put("/enrollments/e2", enrollment("e2")).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{err}");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("disk full at {}", database.display())),
        "{message}"
    );
    assert_eq!(t.get("/enrollments/e1").await.0, StatusCode::OK);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        t.put("/enrollments/e2", enrollment("e2")).await.0,
        StatusCode::OK
    );
    drop(t);
    drop(disk);
}

/// The service SDKs' trailing-slash forms route as the paths without it, as at the hub.
#[tokio::test]
async fn paths_with_one_trailing_slash_are_routed() {
    let t = TestDps::start_with(1, |_| {}).await;
    let body = json!({"registrationId": "e1", "attestation": {"type": "symmetricKey"}});
    assert_eq!(t.put("/enrollments/e1/", body).await.0, StatusCode::OK);
    let (status, e) = t.get("/enrollments/e1/").await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(e["registrationId"], "e1");
    assert_eq!(t.get("/enrollments/e1//").await.0, StatusCode::NOT_FOUND);
}
