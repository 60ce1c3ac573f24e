//! keyd end to end: over its Unix socket with `UdsClient` (as the test's own uid), and through the
//! router with a chosen caller uid for the ACL.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{digest, hmac, signature};
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt as _;
use hyper::{Method, Request, StatusCode};
use identity::client::UdsClient;
use identity::config::KeydConfig;
use identity::config::daemons::KeydPrincipal;
use identity::keyd::{self, KeyKind, Keyd};
use identity::uds::Caller;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const V: &str = "api-version=2020-09-01";
const INVALID: &str = "a parameter has an invalid value";

fn b64(b: &[u8]) -> String {
    STANDARD.encode(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    STANDARD.decode(v.as_str().unwrap()).unwrap()
}

/// `path` with the api-version added unless it has a query already.
fn with_version(path: &str) -> String {
    if path.contains('?') {
        path.to_owned()
    } else {
        format!("{path}?{V}")
    }
}

fn config(home: &Path, principals: Vec<KeydPrincipal>) -> KeydConfig {
    KeydConfig {
        homedir: home.join("home"),
        socket: home.join("sock").join("keyd.sock"),
        max_requests: 10,
        preloaded_keys: BTreeMap::new(),
        principals,
    }
}

/// The uid the tests run as (root in CI): it gets every key so the socket tests work either way.
fn own_principal(dir: &Path) -> KeydPrincipal {
    KeydPrincipal {
        uid: std::fs::metadata(dir).unwrap().uid(),
        keys: vec!["*".into()],
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    tag.as_ref().to_vec()
}

fn hmac_body(handle: &Value, msg: &[u8]) -> Value {
    json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": b64(msg)}})
}

struct Running {
    cfg: KeydConfig,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    client: UdsClient,
    _dir: Option<tempfile::TempDir>,
}

async fn start(cfg: &KeydConfig) -> Running {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(keyd::serve(cfg.clone(), rx));
    for _ in 0..200 {
        if tokio::net::UnixStream::connect(&cfg.socket).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running {
        cfg: cfg.clone(),
        stop,
        task,
        client: UdsClient::new(&cfg.socket),
        _dir: None,
    }
}

/// keyd in a fresh temporary home, the test's uid allowed every key.
async fn fresh() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut k = start(&config(dir.path(), vec![own_principal(dir.path())])).await;
    k._dir = Some(dir);
    k
}

impl Running {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let path = with_version(path);
        self.client
            .send(method, &path, body.as_ref())
            .await
            .unwrap()
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }
    async fn delete(&self, path: &str, handle: &Value) -> StatusCode {
        let body = json!({ "keyHandle": handle });
        self.send(Method::DELETE, path, Some(body)).await.0
    }
    /// POST expecting 200.
    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, v) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        v
    }
    /// A handle from POST `path`.
    async fn handle(&self, path: &str, body: Value) -> Value {
        self.ok(path, body).await["keyHandle"].clone()
    }
    async fn hmac(&self, handle: &Value, msg: &[u8]) -> (StatusCode, Value) {
        self.post("/sign", hmac_body(handle, msg)).await
    }
    async fn parameter(&self, name: &str, handle: &Value) -> Value {
        let path = format!("/parameters/{name}");
        self.ok(&path, json!({ "keyHandle": handle })).await["value"].clone()
    }
    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn imported_keys_sign_and_load_by_id() {
    let k = fresh().await;
    let device_key = [0x42u8; 32];
    let body = json!({"keyId": "device-id", "usage": "sign", "keyBytes": b64(&device_key)});
    let imported = k.handle("/key", body).await;
    let (status, v) = k.hmac(&imported, b"sr\n123").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unb64(&v["signature"]), hmac_sha256(&device_key, b"sr\n123"));
    // By id, percent-encoded, with the other API version: another handle, the same key.
    let (status, loaded) = k.get("/key/device%2Did?api-version=2021-05-01").await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(loaded["keyHandle"], imported);
    let (_, again) = k.hmac(&loaded["keyHandle"], b"sr\n123").await;
    assert_eq!(again["signature"], v["signature"]);
    let (status, v) = k.get("/key/missing").await;
    assert_eq!((status, message(&v)), (StatusCode::BAD_REQUEST, INVALID));
    k.stop().await;
}

#[tokio::test]
async fn created_keys_derive_and_export() {
    let k = fresh().await;
    let body = json!({"keyId": "master", "usage": "derive,sign"});
    let master = k.handle("/key", body.clone()).await;
    let same = k.handle("/key", body).await;
    let file = k
        .cfg
        .homedir
        .join("keys")
        .join(keyd::file_name("master", "key"));
    let master_bytes = std::fs::read(file).unwrap();
    assert_eq!(master_bytes.len(), 32);
    let (_, s1) = k.hmac(&master, b"m").await;
    let (_, s2) = k.hmac(&same, b"m").await;
    assert_eq!(unb64(&s1["signature"]), hmac_sha256(&master_bytes, b"m"));
    assert_eq!(s1, s2, "created once, then loaded");
    let body = json!({"baseKeyHandle": master, "derivationData": b64(b"mod1:gen:primary")});
    let derived = k.handle("/derivedkey", body).await;
    let exported = k
        .ok("/derivedkey/export", json!({ "keyHandle": derived }))
        .await;
    let expected = hmac_sha256(&master_bytes, b"mod1:gen:primary");
    assert_eq!(unb64(&exported["key"]), expected);
    let (_, s) = k.hmac(&derived, b"token").await;
    assert_eq!(unb64(&s["signature"]), hmac_sha256(&expected, b"token"));
    let nested = json!({"baseKeyHandle": derived, "derivationData": b64(b"x")});
    let (status, v) = k.post("/derivedkey", nested).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&v).contains("nested derived keys are not supported"),
        "{v}"
    );
    let (status, _) = k
        .post("/derivedkey/export", json!({ "keyHandle": master }))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only derived keys are exported"
    );
    k.stop().await;
}

#[tokio::test]
async fn aead_with_symmetric_and_derived_keys() {
    let k = fresh().await;
    let master = k
        .handle("/key", json!({"keyId": "m", "usage": "encrypt"}))
        .await;
    let body = json!({"baseKeyHandle": master, "derivationData": b64(b"enc")});
    let derived = k.handle("/derivedkey", body).await;
    for handle in [&derived, &master] {
        let params = json!({"iv": b64(&[7u8; 12]), "aad": b64(b"module")});
        let enc = |pt: &[u8]| json!({"keyHandle": handle, "algorithm": "AEAD", "parameters": params, "plaintext": b64(pt)});
        let dec = |ct: &[u8]| json!({"keyHandle": handle, "algorithm": "AEAD", "parameters": params, "ciphertext": b64(ct)});
        let ct = unb64(&k.ok("/encrypt", enc(b"secret")).await["ciphertext"]);
        assert_eq!(
            (ct[0], ct.len()),
            (2, 1 + 6 + 16),
            "version 2: ciphertext then tag"
        );
        let pt = k.ok("/decrypt", dec(&ct)).await;
        assert_eq!(unb64(&pt["plaintext"]), b"secret");
        let mut bad = ct.clone();
        bad[3] ^= 1;
        assert_eq!(
            k.post("/decrypt", dec(&bad)).await.0,
            StatusCode::BAD_REQUEST
        );
        let short = json!({"keyHandle": handle, "algorithm": "AEAD", "parameters": {"iv": b64(&[7u8; 8])}, "plaintext": ""});
        assert_eq!(
            k.post("/encrypt", short).await.0,
            StatusCode::BAD_REQUEST,
            "12-byte iv only"
        );
        let rsa = json!({"keyHandle": handle, "algorithm": "RSA-PKCS1", "plaintext": b64(b"x")});
        let (status, v) = k.post("/encrypt", rsa).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message(&v).contains("not supported"), "{v}");
    }
    k.stop().await;
}

#[tokio::test]
async fn ecdsa_key_pairs_sign_digests() {
    let k = fresh().await;
    let body = json!({"keyId": "device-pk", "preferredAlgorithms": "ec-p256:rsa-2048:*"});
    let pair = k.handle("/keypair", body).await;
    assert_eq!(k.parameter("algorithm", &pair).await, "ECDSA");
    let oid = unb64(&k.parameter("ec-curve-oid", &pair).await);
    assert_eq!(
        oid,
        [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
    );
    let point = unb64(&k.parameter("ec-point", &pair).await);
    assert_eq!((point.len(), point[0]), (65, 4), "uncompressed point");
    let modulus = k
        .post("/parameters/rsa-modulus", json!({ "keyHandle": pair }))
        .await;
    assert_eq!(modulus.0, StatusCode::BAD_REQUEST);
    // ECDSA over the caller's digest, DER, verifies over the message.
    let msg = b"tls 1.3 transcript";
    let d = digest::digest(&digest::SHA256, msg);
    let body =
        json!({"keyHandle": pair, "algorithm": "ECDSA", "parameters": {"digest": b64(d.as_ref())}});
    let sig = unb64(&k.ok("/sign", body).await["signature"]);
    assert_eq!(sig[0], 0x30, "DER SEQUENCE");
    let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &point);
    public.verify(msg, &sig).unwrap();
    assert!(public.verify(b"other", &sig).is_err());
    let (status, v) = k.hmac(&pair, b"x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&v).starts_with("parameter \"mechanism\""), "{v}");
    let (_, loaded) = k.get("/keypair/device-pk").await;
    let again = k.parameter("ec-point", &loaded["keyHandle"]).await;
    assert_eq!(again, b64(&point));
    k.stop().await;
}

#[tokio::test]
async fn rsa_key_pairs_on_request() {
    let k = fresh().await;
    let body = json!({"keyId": "rsa", "preferredAlgorithms": "ed448:rsa-2048"});
    let rsa = k.handle("/keypair", body).await;
    assert_eq!(k.parameter("algorithm", &rsa).await, "RSA");
    assert_eq!(unb64(&k.parameter("rsa-exponent", &rsa).await), [1, 0, 1]);
    assert_eq!(unb64(&k.parameter("rsa-modulus", &rsa).await).len(), 256);
    let (status, _) = k
        .post("/parameters/ec-point", json!({ "keyHandle": rsa }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = k
        .post("/parameters/colour", json!({ "keyHandle": rsa }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    k.stop().await;
}

#[tokio::test]
async fn key_pairs_move_and_keys_delete() {
    let k = fresh().await;
    let pair = k.handle("/keypair", json!({"keyId": "old"})).await;
    let point = k.parameter("ec-point", &pair).await;
    let (status, _) = k.post("/keypair/new", json!({"from": "old"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = k.get("/keypair/old").await;
    assert_eq!((status, message(&v)), (StatusCode::BAD_REQUEST, INVALID));
    let (_, moved) = k.get("/keypair/new").await;
    let moved = moved["keyHandle"].clone();
    assert_eq!(k.parameter("ec-point", &moved).await, point);
    let (status, _) = k.post("/keypair/new", json!({"from": "new"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "moving onto itself");
    assert_eq!(k.delete("/keypair", &moved).await, StatusCode::NO_CONTENT);
    let (status, _) = k
        .post("/parameters/ec-point", json!({ "keyHandle": moved }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let key = k
        .handle("/key", json!({"keyId": "gone", "usage": "sign"}))
        .await;
    assert_eq!(
        k.delete("/keypair", &key).await,
        StatusCode::BAD_REQUEST,
        "not a key pair"
    );
    assert_eq!(k.delete("/key", &key).await, StatusCode::NO_CONTENT);
    let (status, v) = k.hmac(&key, b"x").await;
    assert_eq!((status, message(&v)), (StatusCode::BAD_REQUEST, INVALID));
    k.stop().await;
}

#[tokio::test]
async fn api_versions_methods_and_paths() {
    let k = fresh().await;
    let body = json!({"keyId": "k", "usage": "sign"});
    let (status, v) = k.post("/key?", body.clone()).await;
    assert_eq!(
        (status, message(&v)),
        (StatusCode::BAD_REQUEST, "api-version not specified")
    );
    let (status, v) = k.post("/key?api-version=1999-01-01", body.clone()).await;
    let expected = "invalid api-version \"1999-01-01\"";
    assert_eq!((status, message(&v)), (StatusCode::BAD_REQUEST, expected));
    let (status, v) = k.send(Method::PUT, "/key", Some(body)).await;
    assert_eq!(
        (status, message(&v)),
        (StatusCode::BAD_REQUEST, "method not allowed")
    );
    let (status, v) = k.get("/nope").await;
    assert_eq!((status, message(&v)), (StatusCode::NOT_FOUND, "not found"));
    k.stop().await;
}

#[tokio::test]
async fn bad_bodies_are_refused() {
    let k = fresh().await;
    let (status, _) = k.post("/key", json!({"keyId": "k"})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "usage is required"
    );
    let (status, _) = k.post("/key", json!({"keyId": "k", "usage": "fly"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = k.post("/sign", json!("not an object")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let handle = k
        .handle("/key", json!({"keyId": "k", "usage": "sign"}))
        .await;
    let bad =
        json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": "%%%"}});
    assert_eq!(
        k.post("/sign", bad).await.0,
        StatusCode::UNPROCESSABLE_ENTITY,
        "base64"
    );
    let md5 = json!({"keyHandle": handle, "algorithm": "MD5", "parameters": {}});
    assert_eq!(
        k.post("/sign", md5).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // keyd's own key cannot be named, not even by root.
    let (status, _) = k.get("/key/handle-validation-key").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    k.stop().await;
}

#[tokio::test]
async fn tampered_handles_are_refused() {
    let k = fresh().await;
    let handle = k
        .handle("/key", json!({"keyId": "k", "usage": "sign"}))
        .await;
    let h = handle.as_str().unwrap();
    let (sr, sig) = h.strip_prefix("sr=").unwrap().split_once("&sig=").unwrap();
    let mut sr_json = STANDARD.decode(sr).unwrap();
    let at = sr_json.iter().position(|&c| c == b'k').unwrap();
    sr_json[at] = b'x';
    let tampered = json!(format!("sr={}&sig={sig}", b64(&sr_json)));
    for bad in [tampered, json!("garbage"), json!(format!("{h}A"))] {
        let (status, v) = k.hmac(&bad, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(message(&v).starts_with("parameter \"handle\""), "{v}");
    }
    assert_eq!(k.hmac(&handle, b"x").await.0, StatusCode::OK);
    k.stop().await;
}

/// The JSON inside a handle's `sr`.
fn sr_json(handle: &Value) -> String {
    let h = handle.as_str().unwrap().strip_prefix("sr=").unwrap();
    String::from_utf8(STANDARD.decode(h.split_once("&sig=").unwrap().0).unwrap()).unwrap()
}

#[tokio::test]
async fn key_files_are_private_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), vec![own_principal(dir.path())]);
    let k = start(&cfg).await;
    let key = k
        .handle("/key", json!({"keyId": "k", "usage": "sign"}))
        .await;
    let pair = k.handle("/keypair", json!({"keyId": "p"})).await;
    let (_, before) = k.hmac(&key, b"m").await;
    k.stop().await;
    let keys = cfg.homedir.join("keys");
    assert_eq!(std::fs::metadata(&keys).unwrap().mode() & 0o777, 0o700);
    let files: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        3,
        "k, p and the handle-validation key: {files:?}"
    );
    let visible = format!("{key}{pair}{}{}", sr_json(&key), sr_json(&pair));
    for f in &files {
        assert_eq!(std::fs::metadata(f).unwrap().mode() & 0o777, 0o600, "{f:?}");
        let bytes = std::fs::read(f).unwrap();
        let as_json = serde_json::to_string(&bytes).unwrap();
        for shown in [
            b64(&bytes),
            hex::encode(&bytes),
            as_json[1..as_json.len() - 1].into(),
        ] {
            assert!(!visible.contains(&shown), "{f:?} shows in a handle");
        }
    }
    // Restart on the same home: old handles still work.
    let k = start(&cfg).await;
    let (status, after) = k.hmac(&key, b"m").await;
    assert_eq!((status, &after), (StatusCode::OK, &before));
    assert_eq!(k.parameter("algorithm", &pair).await, "ECDSA");
    k.stop().await;
}

/// keyd's router called directly, as `uid`.
struct AsUid(axum::Router);

impl AsUid {
    async fn call(&self, uid: u32, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let req = Request::builder()
            .method(method)
            .uri(with_version(path))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let caller = Caller {
            uid,
            pid: Some(4242),
        };
        let app = self.0.clone().layer(axum::Extension(caller));
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

fn acl_keyd(dir: &Path) -> Arc<Keyd> {
    let principals = vec![
        KeydPrincipal {
            uid: 1001,
            keys: vec!["module-*".into()],
        },
        KeydPrincipal {
            uid: 1001,
            keys: vec!["device-id".into()],
        },
        KeydPrincipal {
            uid: 1002,
            keys: vec!["other-?".into()],
        },
    ];
    Keyd::open(&config(dir, principals)).unwrap()
}

fn key(id: &str) -> Value {
    json!({"keyId": id, "usage": "sign"})
}

#[tokio::test]
async fn unlisted_key_ids_are_401_with_the_uid() {
    let dir = tempfile::tempdir().unwrap();
    let keyd = acl_keyd(dir.path());
    let store = keyd.store();
    let app = AsUid(keyd::router(keyd));
    for id in ["module-a", "device-id"] {
        let (status, v) = app.call(1001, Method::POST, "/key", key(id)).await;
        assert_eq!(status, StatusCode::OK, "{id}: {v}");
    }
    let denied = [
        (Method::POST, "/key", key("secret")),
        (
            Method::POST,
            "/key",
            json!({"keyId": "secret", "usage": "sign", "keyBytes": "eA=="}),
        ),
        (Method::GET, "/key/secret", Value::Null),
        (Method::POST, "/keypair", json!({"keyId": "secret"})),
        (Method::GET, "/keypair/secret", Value::Null),
        (Method::POST, "/keypair/module-b", json!({"from": "secret"})),
        (Method::POST, "/keypair/secret", json!({"from": "module-b"})),
    ];
    for (method, path, body) in denied {
        let (status, v) = app.call(1001, method, path, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {v}");
        assert_eq!(
            message(&v),
            "user 1001 is not authorized to access the key secret"
        );
    }
    assert!(
        store.symmetric("secret", false).is_err(),
        "nothing made for a refused caller"
    );
    let (status, _) = app.call(1002, Method::POST, "/key", key("other-1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app
        .call(1002, Method::GET, "/key/module-a", Value::Null)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        message(&v),
        "user 1002 is not authorized to access the key module-a"
    );
}

#[tokio::test]
async fn root_may_do_anything_and_only_derived_handles_are_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let keyd = acl_keyd(dir.path());
    let store = keyd.store();
    let app = AsUid(keyd::router(keyd));
    let (status, v) = app.call(0, Method::POST, "/key", key("secret")).await;
    assert_eq!(status, StatusCode::OK);
    let handle = v["keyHandle"].clone();
    // A key's own handle is no way in for a uid the ACL does not name.
    let (status, _) = app
        .call(1002, Method::POST, "/sign", hmac_body(&handle, b"m"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = json!({ "keyHandle": handle });
    let (status, _) = app.call(1002, Method::DELETE, "/key", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let derive = json!({"baseKeyHandle": handle, "derivationData": STANDARD.encode("mod-a")});
    let (status, _) = app
        .call(1002, Method::POST, "/derivedkey", derive.clone())
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A derived key's handle is bound to the uid it was issued to: root's own is no way in for
    // uid 1002 (issue 19: handles were bearer tokens) ...
    let (status, mine) = app
        .call(0, Method::POST, "/derivedkey", derive.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            1002,
            Method::POST,
            "/sign",
            hmac_body(&mine["keyHandle"], b"m"),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // ... while one made for 1002 by someone allowed to is 1002's, for that key only.
    let mut derive = derive;
    derive["ownerUid"] = json!(1002);
    let (status, d) = app.call(0, Method::POST, "/derivedkey", derive).await;
    assert_eq!(status, StatusCode::OK);
    let (status, s) = app
        .call(
            1002,
            Method::POST,
            "/sign",
            hmac_body(&d["keyHandle"], b"m"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let secret = store.symmetric("secret", false).unwrap();
    assert_eq!(
        unb64(&s["signature"]),
        hmac_sha256(&hmac_sha256(&secret, b"mod-a"), b"m")
    );
    let (status, _) = app.call(0, Method::DELETE, "/key", body).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(store.symmetric("secret", false).is_err());
    let (status, _) = app
        .call(0, Method::POST, "/keypair/moved", json!({"from": "x"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "root passes the ACL; x does not exist"
    );
    store.delete(KeyKind::Key, "module-a").unwrap();
}
