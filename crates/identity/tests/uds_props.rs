//! Property tests for the identity service's Unix-socket APIs: keyd's and certd's routes given
//! arbitrary JSON bodies (and raw bytes) from privileged and unprivileged uids never answer 5xx or
//! panic, answer errors as JSON with a message, and leave the service serving and its stored keys
//! and certificates intact.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::collections::BTreeMap;

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper::{Method, Request, StatusCode};
use identity::certd::{self, Certd};
use identity::config::daemons::{CertIssuance, KeydPrincipal};
use identity::config::{CertdConfig, KeydConfig};
use identity::keyd::{self, Keyd};
use identity::uds::Caller;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const ROUTES: [(&str, &str, &str); 16] = [
    ("keyd", "POST", "/key"),
    ("keyd", "DELETE", "/key"),
    ("keyd", "GET", "/key/kept"),
    ("keyd", "POST", "/keypair"),
    ("keyd", "GET", "/keypair/pair"),
    ("keyd", "POST", "/parameters/algorithm"),
    ("keyd", "POST", "/derivedkey"),
    ("keyd", "POST", "/derivedkey/export"),
    ("keyd", "POST", "/sign"),
    ("keyd", "POST", "/encrypt"),
    ("keyd", "POST", "/decrypt"),
    ("certd", "POST", "/certificates"),
    ("certd", "PUT", "/certificates/imported"),
    ("certd", "GET", "/certificates/kept"),
    ("certd", "DELETE", "/certificates/other"),
    ("keyd", "POST", "/keypair/moved"),
];

struct Daemons {
    _dir: tempfile::TempDir,
    keyd: axum::Router,
    certd: axum::Router,
    kept_handle: String,
}

fn daemons() -> Daemons {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let kc = KeydConfig {
        homedir: home.join("keyd"),
        socket: home.join("keyd.sock"),
        max_requests: 10,
        preloaded_keys: BTreeMap::new(),
        principals: vec![KeydPrincipal {
            uid: 1001,
            keys: vec!["module-*".into()],
        }],
    };
    let k = Keyd::open(&kc).unwrap();
    let kept_handle = k.create_key("kept").unwrap();
    let cc = CertdConfig {
        homedir: home.join("certd"),
        socket: home.join("certd.sock"),
        max_requests: 10,
        keyd_homedir: home.join("keyd"),
        cert_issuance: CertIssuance::default(),
        preloaded_certs: BTreeMap::new(),
        principals: Vec::new(),
    };
    let c = Certd::open(&cc, k.store()).unwrap();
    Daemons {
        keyd: keyd::router(k),
        certd: certd::router(c),
        kept_handle,
        _dir: dir,
    }
}

async fn call(
    app: &axum::Router,
    uid: u32,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("{path}?api-version=2021-05-01"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let app = app
        .clone()
        .layer(axum::Extension(Caller { uid, pid: Some(1) }));
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

/// JSON values shaped like the APIs' bodies: their field names, handle-like and base64-like
/// strings, wrong types, nesting.
fn body() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "keyId",
        "keyHandle",
        "baseKeyHandle",
        "derivationData",
        "algorithm",
        "parameters",
        "message",
        "digest",
        "iv",
        "aad",
        "plaintext",
        "ciphertext",
        "preferredAlgorithms",
        "usage",
        "from",
        "csr",
        "certId",
        "pem",
        "issuer",
        "certificate",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9+/=&:_*.-]{0,40}".prop_map(Value::String),
        Just(json!("sr=eyJrZXlfaWQiOnsiS2V5Ijoia2VwdCJ9fQ==&sig=AAAA")),
        Just(json!("HMAC-SHA256")),
        Just(json!("ECDSA")),
        Just(json!(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"
        )),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(field.clone(), inner, 0..6).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_break_keyd_or_certd(
        cases in prop::collection::vec(
            (0..ROUTES.len(), prop::sample::select(vec![0u32, 1001, 4242]),
             prop_oneof![body().prop_map(|v| v.to_string().into_bytes()),
                         prop::collection::vec(any::<u8>(), 0..64)]),
            1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let d = daemons();
            for (route, uid, bytes) in cases {
                let (daemon, method, path) = ROUTES[route];
                let app = if daemon == "keyd" { &d.keyd } else { &d.certd };
                let (status, answer) = call(app, uid, method, path, bytes).await;
                prop_assert!(!status.is_server_error(), "{method} {path} as {uid}: {status}");
                if !status.is_success() {
                    let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
                    prop_assert!(v["message"].is_string(), "{method} {path}: error without a message: {v}");
                }
            }
            // Still serving, the stored key intact.
            let sign = json!({"keyHandle": d.kept_handle, "algorithm": "HMAC-SHA256",
                              "parameters": {"message": "bQ=="}});
            let (status, _) = call(&d.keyd, 0, "POST", "/sign", sign.to_string().into_bytes()).await;
            prop_assert_eq!(status, StatusCode::OK);
            Ok(())
        })?;
    }
}
