//! certd through its router (`oneshot` with a `Caller`), and one round trip on a Unix socket.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use ferrohub_runtime::time::FixedClock;
use http_body_util::BodyExt as _;
use identity::certd::{self, Certd};
use identity::config::CertdConfig;
use identity::config::daemons::{
    CertIssuance, CertIssuanceOptions, CertdPrincipal, LocalCa, PreloadedCert,
};
use identity::keyd::{KeyError, KeyKind, KeyStore};
use identity::uds::Caller;
use pki::csr::{Csr, CsrOptions};
use pki::{CertRequest, Certificate, ChainValidator, KeyAlgorithm, PrivateKey, Profile, Purpose};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt as _;

const V: &str = "api-version=2020-09-01";

/// Key pairs as PEM and symmetric keys as bytes, in memory.
#[derive(Default)]
struct MemKeys {
    pairs: Mutex<HashMap<String, String>>,
    symmetric: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemKeys {
    fn insert(&self, id: &str, key: &PrivateKey) {
        self.pairs
            .lock()
            .unwrap()
            .insert(id.to_owned(), key.to_pem());
    }
}

impl KeyStore for MemKeys {
    fn symmetric(&self, id: &str, create: bool) -> Result<Vec<u8>, KeyError> {
        let mut map = self.symmetric.lock().unwrap();
        match map.get(id) {
            Some(k) => Ok(k.clone()),
            None if create => Ok(map.entry(id.to_owned()).or_insert(vec![1; 32]).clone()),
            None => Err(KeyError::NotFound(id.to_owned())),
        }
    }
    fn import_symmetric(&self, id: &str, bytes: &[u8]) -> Result<(), KeyError> {
        self.symmetric
            .lock()
            .unwrap()
            .insert(id.to_owned(), bytes.to_vec());
        Ok(())
    }
    fn key_pair(&self, id: &str, create_with: Option<&str>) -> Result<PrivateKey, KeyError> {
        let mut map = self.pairs.lock().unwrap();
        if create_with.is_some() && !map.contains_key(id) {
            let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
            map.insert(id.to_owned(), key.to_pem());
        }
        let pem = map
            .get(id)
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
        PrivateKey::from_pem(pem).map_err(|e| KeyError::Crypto(e.to_string()))
    }
    fn move_key_pair(&self, from: &str, to: &str) -> Result<(), KeyError> {
        let mut map = self.pairs.lock().unwrap();
        let pem = map
            .remove(from)
            .ok_or_else(|| KeyError::NotFound(from.to_owned()))?;
        map.insert(to.to_owned(), pem);
        Ok(())
    }
    fn delete(&self, kind: KeyKind, id: &str) -> Result<(), KeyError> {
        match kind {
            KeyKind::Key => drop(self.symmetric.lock().unwrap().remove(id)),
            KeyKind::KeyPair => drop(self.pairs.lock().unwrap().remove(id)),
        }
        Ok(())
    }
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn base_config(home: &Path) -> CertdConfig {
    CertdConfig {
        homedir: home.to_path_buf(),
        socket: home.join("run/certd.sock"),
        max_requests: 10,
        keyd_homedir: home.join("keyd"),
        cert_issuance: CertIssuance::default(),
        preloaded_certs: BTreeMap::new(),
        principals: Vec::new(),
    }
}

fn issuance(method: &str, expiry_days: Option<u32>) -> CertIssuanceOptions {
    CertIssuanceOptions {
        method: method.into(),
        expiry_days,
        common_name: None,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    home: std::path::PathBuf,
    keys: Arc<MemKeys>,
    certd: Arc<Certd>,
    app: Router,
}

/// certd at `t0()` over a temporary home; `edit` adjusts the config first.
fn fixture(edit: impl FnOnce(&mut CertdConfig, &Path)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_path_buf();
    let mut config = base_config(&home);
    edit(&mut config, &home);
    let keys = Arc::new(MemKeys::default());
    let clock = Arc::new(FixedClock(Mutex::new(t0())));
    let certd = Certd::open_with_clock(&config, keys.clone(), clock).unwrap();
    let app = certd::router(certd.clone());
    Fixture {
        _dir: dir,
        home,
        keys,
        certd,
        app,
    }
}

impl Fixture {
    async fn call(
        &self,
        uid: u32,
        method: Method,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        let app = self
            .app
            .clone()
            .layer(axum::Extension(Caller { uid, pid: None }));
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn json(&self, uid: u32, method: Method, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.call(uid, method, uri, Some(&body.to_string())).await
    }

    /// A CA certificate and key pair stored under `id` (cert in certd, key pair in the store).
    async fn add_ca(&self, id: &str, days: u32) -> Certificate {
        let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let mut req = CertRequest::new(Profile::RootCa, format!("{id} CA"), t0());
        req.days = days;
        let ca = pki::issue(&req, &key, None).unwrap();
        self.keys.insert(id, &key);
        let uri = format!("/certificates/{id}?{V}");
        let (status, _) = self
            .json(0, Method::PUT, &uri, &json!({ "pem": ca.to_pem() }))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        ca
    }
}

fn csr_pem(key: &PrivateKey, cn: &str) -> String {
    Csr::create(key, &CsrOptions::new(Profile::DeviceClient, cn))
        .unwrap()
        .to_pem()
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

fn chain(v: &Value) -> Vec<Certificate> {
    Certificate::chain_from_pem(v["pem"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn self_signed_issuance_signs_with_the_key_pair_of_the_same_id() {
    let f = fixture(|c, _| {
        let opts = issuance("self_signed", None);
        c.cert_issuance.certs.insert("device-id".into(), opts);
    });
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    f.keys.insert("device-id", &key);
    let body = json!({ "certId": "device-id", "csr": csr_pem(&key, "dev1") });
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let certs = chain(&v);
    assert_eq!(certs.len(), 1, "a self-signed cert has no issuer chain");
    let cert = &certs[0];
    assert_eq!(cert.public_key_raw(), key.public_key_raw());
    assert!(cert.is_self_issued());
    cert.parsed()
        .verify_signature(None)
        .expect("signed by its own key");
    assert_eq!(cert.common_name().as_deref(), Some("dev1"));
    assert_eq!(cert.not_before(), t0());
    assert_eq!(cert.not_after(), t0() + Duration::days(30));
    let info = cert.info();
    assert!(info.subject_key_id.is_some());
    assert!(
        info.signature_algorithm.to_lowercase().contains("sha256"),
        "{info:?}"
    );

    let file = f
        .home
        .join("certs")
        .join(identity::keyd::file_name("device-id", "cer"));
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        v["pem"].as_str().unwrap()
    );
    let (status, got) = f
        .call(
            0,
            Method::GET,
            &format!("/certificates/device-id?{V}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["pem"], v["pem"]);
    assert_eq!(
        f.certd.get_pem("device-id").unwrap(),
        v["pem"].as_str().unwrap()
    );

    // A CSR for another key cannot be self-signed by the key pair "device-id".
    let other = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let body = json!({ "certId": "device-id", "csr": csr_pem(&other, "dev1") });
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
}

#[tokio::test]
async fn local_ca_issuance_chains_to_the_local_ca_and_expiry_is_capped() {
    let f = fixture(|c, _| {
        let ci = &mut c.cert_issuance;
        ci.local_ca = Some(LocalCa {
            cert: "local-ca".into(),
            pk: "local-ca".into(),
        });
        ci.certs.insert("leaf".into(), issuance("local_ca", None));
        ci.certs
            .insert("long".into(), issuance("local_ca", Some(400)));
    });
    let ca = f.add_ca("local-ca", 3650).await;
    let key = PrivateKey::generate(KeyAlgorithm::Rsa2048).unwrap();
    let body = json!({ "certId": "leaf", "csr": csr_pem(&key, "leaf") });
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let certs = chain(&v);
    assert_eq!(certs.len(), 2, "leaf then the issuer");
    assert_eq!(certs[1], ca);
    assert_eq!(certs[0].public_key_raw(), key.public_key_raw());
    assert_eq!(
        certs[0].not_after(),
        t0() + Duration::days(30),
        "default 30 days"
    );
    let info = certs[0].info();
    assert!(info.subject_key_id.is_some() && info.authority_key_id.is_some());
    let validator = ChainValidator::new([ca.clone()]).unwrap();
    validator
        .verify(&certs[0], &certs[1..], t0(), Purpose::ClientAuth)
        .unwrap();

    // A CA that ends in 10 days caps a 400-day request.
    let short = f.add_ca("local-ca", 10).await;
    let body = json!({ "certId": "long", "csr": csr_pem(&key, "long") });
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let certs = chain(&v);
    assert_eq!(certs[0].not_after(), short.not_after());
    ChainValidator::new([short])
        .unwrap()
        .verify(&certs[0], &[], t0(), Purpose::ClientAuth)
        .unwrap();
}

#[tokio::test]
async fn an_explicit_issuer_signs_with_its_own_key_pair() {
    let f = fixture(|c, _| {
        let opts = issuance("self_signed", Some(5));
        c.cert_issuance.certs.insert("server".into(), opts);
    });
    let ca = f.add_ca("edge-ca", 90).await;
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let mut opts = CsrOptions::new(Profile::Server, "edge.local");
    opts.subject_alt_names = vec!["edge.local".into(), "127.0.0.1".into()];
    let csr = Csr::create(&key, &opts).unwrap().to_pem();
    let body = json!({
        "certId": "server",
        "csr": csr,
        "issuer": { "certId": "edge-ca", "privateKeyHandle": "not parsed by certd" },
    });
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let certs = chain(&v);
    assert_eq!(
        certs[0].not_after(),
        t0() + Duration::days(5),
        "expiry_days applies"
    );
    assert_eq!(certs[0].info().subject_alt_names.len(), 2);
    ChainValidator::new([ca])
        .unwrap()
        .verify(&certs[0], &[], t0(), Purpose::ServerAuth)
        .unwrap();

    // An issuer certd does not have, or whose key pair is not in the store.
    for issuer in ["nope", "orphan"] {
        if issuer == "orphan" {
            let ca = f.add_ca("orphan", 90).await;
            assert!(ca.is_ca());
            f.keys.delete(KeyKind::KeyPair, "orphan").unwrap();
        }
        let body = json!({
            "certId": "server", "csr": csr,
            "issuer": { "certId": issuer, "privateKeyHandle": {} },
        });
        let (status, v) = f
            .json(0, Method::POST, &format!("/certificates?{V}"), &body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(message(&v).contains("issuer"), "{v}");
    }
}

#[tokio::test]
async fn bad_csrs_and_missing_issuance_config_are_400() {
    let f = fixture(|_, _| {});
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let csr = Csr::create(&key, &CsrOptions::new(Profile::DeviceClient, "tampered")).unwrap();
    let mut der = csr.der().to_vec();
    let at = der.windows(8).position(|w| w == b"tampered").unwrap();
    der[at] ^= 0x01;
    let bad = pki::pem::encode("CERTIFICATE REQUEST", &der);
    for csr in [bad.as_str(), "not a CSR"] {
        let body = json!({ "certId": "x", "csr": csr });
        let (status, v) = f
            .json(0, Method::POST, &format!("/certificates?{V}"), &body)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(message(&v).contains("parameter \"csr\""), "{v}");
    }
    let body = json!({ "certId": "x", "csr": csr.to_pem() });
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        message(&v).contains("issuer is required for locally-issued certs"),
        "{v}"
    );
}

#[tokio::test]
async fn import_get_and_delete() {
    let f = fixture(|_, _| {});
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let root = pki::issue(&CertRequest::new(Profile::RootCa, "R", t0()), &key, None).unwrap();
    let leaf_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let signer = pki::Signer {
        cert: &root,
        key: &key,
    };
    let leaf_req = CertRequest::new(Profile::DeviceClient, "d", t0());
    let leaf = pki::issue(&leaf_req, &leaf_key, Some(signer)).unwrap();
    let pem = format!("{}{}", leaf.to_pem(), root.to_pem());
    let uri = format!("/certificates/my%20cert?{V}");

    let (status, v) = f.json(0, Method::PUT, &uri, &json!({ "pem": pem })).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["pem"], pem.as_str(), "the imported PEM is echoed");
    let (status, v) = f.call(0, Method::GET, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["pem"], pem.as_str());
    assert_eq!(f.certd.get_pem("my cert").unwrap(), pem);

    let (status, v) = f
        .json(0, Method::PUT, &uri, &json!({ "pem": "nope" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    let (status, _) = f.call(0, Method::DELETE, &uri, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = f.call(0, Method::GET, &uri, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&v).starts_with("parameter \"id\""), "{v}");
    let (status, _) = f.call(0, Method::DELETE, &uri, None).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "deleting a missing cert is fine"
    );
}

#[tokio::test]
async fn preloaded_files_and_bundles() {
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    let root = pki::issue(&CertRequest::new(Profile::RootCa, "R1", t0()), &key, None).unwrap();
    let other = pki::issue(&CertRequest::new(Profile::RootCa, "R2", t0()), &key, None).unwrap();
    let f = fixture(|c, home| {
        let path = home.join("etc/root.pem");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, root.to_pem()).unwrap();
        let pre = &mut c.preloaded_certs;
        let uri = format!("file://{}", path.display());
        pre.insert("root".into(), PreloadedCert::Uri(uri));
        let writable = home.join("etc/writable.pem");
        pre.insert(
            "writable".into(),
            PreloadedCert::Uri(writable.display().to_string()),
        );
        let members = vec!["root".into(), "missing".into(), "extra".into()];
        pre.insert("bundle".into(), PreloadedCert::Ids(members));
    });
    let get = |id: &str| format!("/certificates/{id}?{V}");

    let (status, v) = f.call(1234, Method::GET, &get("root"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["pem"], root.to_pem().as_str());

    let (status, v) = f.call(0, Method::GET, &get("bundle"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["pem"],
        root.to_pem().as_str(),
        "missing members are skipped"
    );
    let (status, _) = f
        .json(
            0,
            Method::PUT,
            &get("extra"),
            &json!({ "pem": other.to_pem() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, v) = f.call(0, Method::GET, &get("bundle"), None).await;
    assert_eq!(
        v["pem"],
        format!("{}{}", root.to_pem(), other.to_pem()).as_str()
    );
    assert_eq!(chain(&v), vec![root.clone(), other.clone()]);

    let (status, v) = f
        .json(
            0,
            Method::PUT,
            &get("bundle"),
            &json!({ "pem": other.to_pem() }),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a bundle is read-only: {v}"
    );

    // Writing a preloaded id writes its file.
    let (status, _) = f
        .json(
            0,
            Method::PUT,
            &get("writable"),
            &json!({ "pem": other.to_pem() }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let written = std::fs::read_to_string(f.home.join("etc/writable.pem")).unwrap();
    assert_eq!(written, other.to_pem());
}

#[tokio::test]
async fn reading_is_open_but_changes_need_a_matching_principal() {
    let f = fixture(|c, _| {
        c.principals.push(CertdPrincipal {
            uid: 1000,
            certs: vec!["module-*".into(), "device-?".into()],
        });
        let opts = issuance("self_signed", None);
        c.cert_issuance.certs.insert("module-a".into(), opts);
    });
    f.add_ca("edge-ca", 90).await;
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    f.keys.insert("module-a", &key);
    let pem = f.certd.get_pem("edge-ca").unwrap();
    let path = |id: &str| format!("/certificates/{id}?{V}");

    let (status, v) = f.call(4242, Method::GET, &path("edge-ca"), None).await;
    assert_eq!(status, StatusCode::OK, "anyone may read: {v}");

    let (status, v) = f
        .json(4242, Method::PUT, &path("edge-ca"), &json!({ "pem": pem }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        message(&v),
        "user 4242 is not authorized to modify the cert edge-ca"
    );
    let (status, v) = f.call(4242, Method::DELETE, &path("edge-ca"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message(&v).contains("user 4242"), "{v}");
    let body = json!({ "certId": "module-a", "csr": csr_pem(&key, "module-a") });
    let (status, v) = f
        .json(4242, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message(&v).contains("user 4242"), "{v}");

    // uid 1000 may change what its patterns match, and nothing else.
    let (status, v) = f
        .json(1000, Method::POST, &format!("/certificates?{V}"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, _) = f
        .json(1000, Method::PUT, &path("device-1"), &json!({ "pem": pem }))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = f
        .json(
            1000,
            Method::PUT,
            &path("device-12"),
            &json!({ "pem": pem }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = f.call(1000, Method::DELETE, &path("device-1"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Naming an issuer needs authorization for it too (the key handle is not checked).
    let with_issuer = json!({
        "certId": "module-a", "csr": csr_pem(&key, "module-a"),
        "issuer": { "certId": "edge-ca", "privateKeyHandle": "x" },
    });
    let (status, v) = f
        .json(
            1000,
            Method::POST,
            &format!("/certificates?{V}"),
            &with_issuer,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(message(&v).contains("edge-ca"), "{v}");
    let (status, v) = f
        .json(0, Method::POST, &format!("/certificates?{V}"), &with_issuer)
        .await;
    assert_eq!(status, StatusCode::CREATED, "root may: {v}");
}

#[tokio::test]
async fn api_versions_methods_paths_and_bodies() {
    let f = fixture(|_, _| {});
    let (status, v) = f.call(0, Method::GET, "/certificates/x", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&v), "api-version not specified");
    let (status, v) = f
        .call(
            0,
            Method::GET,
            "/certificates/x?api-version=2019-01-01",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&v), "invalid api-version \"2019-01-01\"");
    let (status, v) = f
        .call(
            0,
            Method::POST,
            "/certificates?api-version=2021-05-01",
            Some("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    let (status, _) = f.call(0, Method::GET, &format!("/nothing?{V}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = f
        .call(0, Method::GET, &format!("/certificates?{V}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&v), "method not allowed");
    let (status, v) = f
        .call(0, Method::PATCH, &format!("/certificates/x?{V}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&v), "method not allowed");

    let (status, _) = f
        .call(
            0,
            Method::POST,
            &format!("/certificates?{V}"),
            Some("{nope"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = f
        .call(
            0,
            Method::POST,
            &format!("/certificates?{V}"),
            Some(r#"{"certId": 1}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = f
        .call(0, Method::PUT, &format!("/certificates/x?{V}"), Some("[1]"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, v) = f
        .call(0, Method::PUT, &format!("/certificates/x?{V}"), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(message(&v), "missing request body");
}

#[tokio::test]
async fn round_trip_over_the_unix_socket() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path());
    // This process's uid, whatever it is, may change everything.
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    config.principals.push(CertdPrincipal {
        uid,
        certs: vec!["*".into()],
    });
    config
        .cert_issuance
        .certs
        .insert("dev".into(), issuance("self_signed", None));
    let keys = Arc::new(MemKeys::default());
    let key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
    keys.insert("dev", &key);
    let socket = config.socket.clone();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(certd::serve(config, keys, shutdown));

    let client = identity::client::UdsClient::new(&socket);
    let mut ready = false;
    for _ in 0..100 {
        if socket.exists() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready, "certd did not bind {}", socket.display());

    let body = json!({ "certId": "dev", "csr": csr_pem(&key, "dev") });
    let created = client
        .call(Method::POST, &format!("/certificates?{V}"), Some(&body))
        .await
        .unwrap();
    let pem = created["pem"].as_str().unwrap();
    assert_eq!(
        Certificate::from_pem(pem).unwrap().public_key_raw(),
        key.public_key_raw()
    );
    let got = client
        .call(Method::GET, &format!("/certificates/dev?{V}"), None)
        .await
        .unwrap();
    assert_eq!(got["pem"], created["pem"]);
    let (status, v) = client
        .send(Method::GET, &format!("/certificates/nope?{V}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}
