//! Authorization across the identity service: a module process reaching for another module's
//! identity or keys (identityd, keyd and the hub), and a uid without a principal on every route
//! of identityd, keyd and certd. The daemons run on Unix sockets (identityd talks to keyd and
//! certd there, as in production); the calls under test go through each daemon's router with the
//! caller's uid set, exactly as the socket layer sets it from SO_PEERCRED.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::hub as hubtest;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hubtest::{KEY, Mqtt, TestHub};
use hyper::{Method, Request, StatusCode};
use identity::config::daemons::{
    CertdConfig, IdentitydConfig, KeydConfig, ManualAuth, PreloadedCert, Principal, Provisioning,
};
use identity::identityd::{Identityd, Options, Trigger};
use identity::uds::Caller;
use mqtt_codec::ConnectReturnCode;
use serde_json::{Value, json};
use tower::ServiceExt as _;

const V: &str = "api-version=2020-09-01";
/// A uid no `[[principal]]` names.
const NOBODY: u32 = 4242;
/// The master key module keys are derived from (aziot's id).
const MASTER: &str = "aziot_identityd_master_id";

struct Stack {
    hub: TestHub,
    idd: Arc<Identityd>,
    keyd: Router,
    certd: Router,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn module(uid: u32, name: &str) -> Principal {
    Principal {
        uid,
        name: name.into(),
        idtype: Some(vec!["module".into()]),
    }
}

/// A hub with device dev1; keyd and certd on sockets; identityd provisioned manually (SAS) with
/// module principals `mymodule` (uid 1001) and `othermod` (uid 1002). keyd has no principals
/// (as `config apply` writes it): module processes get keys only as handles from identityd.
async fn stack() -> Stack {
    let hub = TestHub::start_with(|c| c.hostname = "hub1".into()).await;
    let body = json!({"deviceId": "dev1", "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    let r = hub
        .client()
        .send(Method::PUT, "/devices/dev1", Some(&body), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("secrets")).unwrap();
    std::fs::write(d.join("secrets/device-id"), hubtest::base64_decode(KEY)).unwrap();
    std::fs::copy(&hub.root, d.join("bundle.pem")).unwrap();
    let keyd_cfg = KeydConfig {
        homedir: d.join("keyd"),
        socket: d.join("run/keyd.sock"),
        max_requests: 10,
        preloaded_keys: BTreeMap::from([(
            "device-id".into(),
            format!("file://{}", d.join("secrets/device-id").display()),
        )]),
        principals: vec![],
    };
    let certd_cfg = CertdConfig {
        homedir: d.join("certd"),
        socket: d.join("run/certd.sock"),
        max_requests: 10,
        keyd_homedir: d.join("keyd"),
        cert_issuance: Default::default(),
        preloaded_certs: BTreeMap::from([(
            "trust-bundle".into(),
            PreloadedCert::Uri(format!("file://{}", d.join("bundle.pem").display())),
        )]),
        principals: vec![],
    };
    let keyd = identity::keyd::Keyd::open(&keyd_cfg).unwrap();
    let store = keyd.store();
    let certd = identity::certd::Certd::open(&certd_cfg, store.clone()).unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let serve_keyd = keyd.clone();
    let cfg = keyd_cfg.clone();
    let keyd_rx = rx.clone();
    tokio::spawn(async move { identity::keyd::serve_with(serve_keyd, &cfg, keyd_rx).await });
    tokio::spawn(identity::certd::serve(certd_cfg, store.clone(), rx));
    wait_for(&[&keyd_cfg.socket, &d.join("run/certd.sock")]).await;
    let idd = Identityd::new(identityd_config(d), options(&hub, store));
    idd.reprovision(Trigger::Startup).await.unwrap();
    Stack {
        hub,
        idd,
        keyd: identity::keyd::router(keyd),
        certd: identity::certd::router(certd),
        stop,
        _dir: dir,
    }
}

async fn wait_for(sockets: &[&Path]) {
    for _ in 0..200 {
        if sockets.iter().all(|s| s.exists()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the daemons did not start");
}

fn identityd_config(d: &Path) -> IdentitydConfig {
    IdentitydConfig {
        hostname: "edge-box".into(),
        homedir: d.join("identityd"),
        socket: d.join("run/identityd.sock"),
        max_requests: 10,
        keyd_socket: d.join("run/keyd.sock"),
        certd_socket: d.join("run/certd.sock"),
        prefer_module_identity_cache: false,
        trust_bundle: Some("trust-bundle".into()),
        auto_reprovisioning_mode: "Dynamic".into(),
        provisioning: Provisioning::Manual {
            iothub_hostname: "hub1".into(),
            device_id: "dev1".into(),
            local_gateway_hostname: None,
            authentication: ManualAuth::Sas {
                device_id_pk: "device-id".into(),
            },
        },
        principals: vec![module(1001, "mymodule"), module(1002, "othermod")],
    }
}

fn options(hub: &TestHub, store: Arc<dyn identity::keyd::KeyStore>) -> Options {
    Options {
        store: Some(store),
        hub_addresses: BTreeMap::from([("hub1".into(), hub.https.to_string())]),
        clock: Some(Arc::new(ferrohub_runtime::time::FixedClock(
            std::sync::Mutex::new(hubtest::now()),
        ))),
        config_paths: None,
    }
}

/// `method path` on `app` as `uid` (the api-version is added unless the path has a query).
async fn call(
    app: &Router,
    uid: u32,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let uri = if path.contains('?') {
        path.to_owned()
    } else {
        format!("{path}?{V}")
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let app = app
        .clone()
        .layer(axum::Extension(Caller { uid, pid: None }));
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Stack {
    fn identityd(&self) -> Router {
        identity::identityd::router(self.idd.clone())
    }

    /// The `spec` of `uid`'s own identity.
    async fn own_identity(&self, uid: u32) -> Value {
        let (status, v) = call(
            &self.identityd(),
            uid,
            Method::GET,
            "/identities/identity",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["spec"].clone()
    }

    /// The key bytes behind a derived handle, exported by root.
    async fn export(&self, handle: &str) -> String {
        let body = json!({ "keyHandle": handle });
        let (status, v) = call(
            &self.keyd,
            0,
            Method::POST,
            "/derivedkey/export",
            Some(body),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["key"].as_str().unwrap().to_owned()
    }

    async fn hub_modules(&self) -> Vec<String> {
        let r = self
            .hub
            .client()
            .send(Method::GET, "/devices/dev1/modules", None, &[])
            .await
            .unwrap();
        let mut names: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["moduleId"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }
}

/// A SAS token for `resource` signed in keyd with `handle`, as `uid`.
async fn token(s: &Stack, uid: u32, handle: &str, resource: &str) -> Result<String, StatusCode> {
    let expiry = hubtest::expiry();
    let sr = iot_auth::percent_encode(resource);
    let message = STANDARD.encode(format!("{sr}\n{expiry}"));
    let body = json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": message}});
    let (status, v) = call(&s.keyd, uid, Method::POST, "/sign", Some(body)).await;
    if status != StatusCode::OK {
        return Err(status);
    }
    let sig = iot_auth::percent_encode(v["signature"].as_str().unwrap());
    Ok(format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"
    ))
}

async fn mqtt_connect(hub: &TestHub, client_id: &str, token: String) -> ConnectReturnCode {
    let mut c = Mqtt::tls(hub, None).await;
    let username = format!("hub1/{client_id}/?api-version=2021-04-12");
    c.connect_as(client_id, &username, Some(token), true)
        .await
        .1
}

/// The JSON inside a handle (`sr=<base64 JSON>&sig=...`: authenticated, not encrypted).
fn handle_json(handle: &str) -> Value {
    let (sr, _) = handle
        .strip_prefix("sr=")
        .and_then(|r| r.split_once("&sig="))
        .unwrap();
    serde_json::from_slice(&STANDARD.decode(sr).unwrap()).unwrap()
}

/// `handle` with its JSON changed by `edit` and its signature kept: a forgery.
fn forged(handle: &str, edit: impl FnOnce(&mut Value)) -> String {
    let (_, sig) = handle.split_once("&sig=").unwrap();
    let mut v = handle_json(handle);
    edit(&mut v);
    format!("sr={}&sig={sig}", STANDARD.encode(v.to_string()))
}

#[tokio::test]
async fn a_module_reaches_neither_another_modules_identity_nor_its_keys() {
    let s = stack().await;
    let idd = s.identityd();
    let mine = s.own_identity(1001).await;
    assert_eq!(mine["moduleId"], "mymodule");
    let my_handle = mine["auth"]["keyHandle"].as_str().unwrap().to_owned();
    let (status, other) = call(
        &idd,
        0,
        Method::GET,
        &format!("/identities/modules/othermod?{V}&type=aziot"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{other}");
    let other_handle = other["spec"]["auth"]["keyHandle"]
        .as_str()
        .unwrap()
        .to_owned();
    let other_gen = other["spec"]["genId"].as_str().unwrap().to_owned();

    module_on_identityd(&s).await;
    module_on_keyd(&s, &my_handle, &other_gen).await;
    // The hub: its own key signs for itself, not for the other module.
    let t = token(&s, 1001, &my_handle, "hub1/devices/dev1/modules/othermod")
        .await
        .unwrap();
    assert_eq!(
        mqtt_connect(&s.hub, "dev1/othermod", t).await,
        ConnectReturnCode::NotAuthorized
    );
    let t = token(&s, 1001, &my_handle, "hub1/devices/dev1/modules/mymodule")
        .await
        .unwrap();
    assert_eq!(
        mqtt_connect(&s.hub, "dev1/mymodule", t).await,
        ConnectReturnCode::Accepted
    );
    assert_ne!(s.export(&my_handle).await, s.export(&other_handle).await);
    println!(
        "RELIABILITY|authorization: a module reaching another module's identity or keys|identityd, keyd and certd on Unix sockets, two module principals, a hub|8 identityd operations on the other module or the device, 3 keyd key ids, a nested derivation, an edited handle, a token for the other module signed with its own handle|all refused (401, or 400 for handles keyd did not issue), nothing changed at the hub, the hub refuses the module as the other module; the master key's handle lifted out of a module's own handle is refused for derive, sign and delete|0"
    );
    let _ = s.stop.send(true);
}

/// identityd as module uid 1001: every operation on another module, or on the device, is refused.
async fn module_on_identityd(s: &Stack) {
    let idd = s.identityd();
    let refused = [
        (
            Method::GET,
            format!("/identities/modules/othermod?{V}&type=aziot"),
            None,
        ),
        (
            Method::PUT,
            format!("/identities/modules/othermod?{V}"),
            Some(json!({"type": "aziot", "moduleId": "othermod"})),
        ),
        (
            Method::DELETE,
            format!("/identities/modules/othermod?{V}&type=aziot"),
            None,
        ),
        (
            Method::GET,
            format!("/identities/modules?{V}&type=aziot"),
            None,
        ),
        (
            Method::POST,
            format!("/identities/modules?{V}"),
            Some(json!({"type": "aziot", "moduleId": "x"})),
        ),
        (
            Method::POST,
            format!("/identities/device?{V}"),
            Some(json!({"type": "aziot"})),
        ),
        (
            Method::POST,
            format!("/identities/device/reprovision?{V}"),
            Some(json!({"type": "aziot"})),
        ),
        (Method::POST, format!("/reload?{V}"), None),
    ];
    for (method, path, body) in refused {
        let (status, v) = call(&idd, 1001, method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {v}");
    }
    assert_eq!(
        s.hub_modules().await,
        ["mymodule", "othermod"],
        "nothing changed at the hub"
    );
}

/// keyd as module uid 1001: it names no key id, derives nothing from its own handle, and cannot
/// edit a handle to name another key.
async fn module_on_keyd(s: &Stack, my_handle: &str, other_gen: &str) {
    for id in [MASTER, "device-id", "othermod"] {
        let (status, v) = call(&s.keyd, 1001, Method::GET, &format!("/key/{id}"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{id}: {v}");
    }
    // Its own (derived) handle is no base for another derivation.
    let data = STANDARD.encode(format!("othermod:{other_gen}:primary"));
    let body = json!({"baseKeyHandle": my_handle, "derivationData": data});
    let (status, _) = call(&s.keyd, 1001, Method::POST, "/derivedkey", Some(body)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "nested derivation is refused"
    );
    // A handle edited to name another key fails keyd's signature check.
    let edited = forged(my_handle, |v| v["key_id"] = json!({"Key": MASTER}));
    assert_eq!(
        token(s, 1001, &edited, "hub1/devices/dev1/modules/othermod").await,
        Err(StatusCode::BAD_REQUEST)
    );
}

/// A derived handle carries its base key's handle in readable JSON (as aziot's does), so keyd
/// checks the key behind every non-derived handle against the caller: a module that lifts the
/// master key's handle out of its own can neither derive another module's key with it, nor sign
/// with it (HMAC with the master key over `othermod:gen:primary` would be othermod's key), nor
/// delete it.
#[tokio::test]
async fn a_module_cannot_lift_the_master_key_out_of_its_own_handle() {
    let s = stack().await;
    let mine = s.own_identity(1001).await;
    let my_handle = mine["auth"]["keyHandle"].as_str().unwrap().to_owned();
    let (_, other) = call(
        &s.identityd(),
        0,
        Method::GET,
        &format!("/identities/modules/othermod?{V}&type=aziot"),
        None,
    )
    .await;
    let other_gen = other["spec"]["genId"].as_str().unwrap().to_owned();
    let inner = handle_json(&my_handle);
    let lifted = inner["key_id"]["Derived"][0].as_str().map(str::to_owned);
    if let Some(master) = lifted {
        let data = STANDARD.encode(format!("othermod:{other_gen}:primary"));
        let body = json!({"baseKeyHandle": master, "derivationData": data});
        let (status, v) = call(&s.keyd, 1001, Method::POST, "/derivedkey", Some(body)).await;
        if status == StatusCode::OK {
            let stolen = v["keyHandle"].as_str().unwrap().to_owned();
            let t = token(&s, 1001, &stolen, "hub1/devices/dev1/modules/othermod").await;
            let accepted = match t {
                Ok(t) => {
                    mqtt_connect(&s.hub, "dev1/othermod", t).await == ConnectReturnCode::Accepted
                }
                Err(_) => false,
            };
            assert!(
                !accepted,
                "uid 1001 connected to the hub as othermod with a key it derived from the master handle in its own handle"
            );
        }
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "uid 1001 derived othermod's key: {v}"
        );
        let body = json!({"keyHandle": master, "algorithm": "HMAC-SHA256",
                          "parameters": {"message": data}});
        let (status, _) = call(&s.keyd, 1001, Method::POST, "/sign", Some(body)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "signing with the master handle"
        );
        let body = json!({"keyHandle": master});
        let (status, _) = call(&s.keyd, 1001, Method::DELETE, "/key", Some(body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "deleting the master key");
        // Its own derived handle still works for the module.
        let (status, _) = call(
            &s.keyd,
            1001,
            Method::POST,
            "/sign",
            Some(json!({"keyHandle": my_handle, "algorithm": "HMAC-SHA256",
                        "parameters": {"message": STANDARD.encode("x")}})),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the module signs with its own handle"
        );
    } else {
        panic!("the handle format changed: {inner}");
    }
    let _ = s.stop.send(true);
}

/// A module's key handle is bound to the module's uid (issue 19: handles were bearer tokens): a
/// uid without a principal, or another module, that obtains it gets 401 on every use, export
/// included; the module itself and root may use it. Also through the real socket, as uid 65534.
#[tokio::test]
async fn a_leaked_module_handle_is_useless_to_other_uids() {
    let s = stack().await;
    let mine = s.own_identity(1001).await["auth"]["keyHandle"].clone();
    let m = STANDARD.encode("m");
    let aead = json!({"iv": STANDARD.encode([0u8; 12]), "aad": m});
    let uses = [
        (
            "/sign",
            json!({"keyHandle": mine, "algorithm": "HMAC-SHA256", "parameters": {"message": m}}),
        ),
        ("/derivedkey/export", json!({"keyHandle": mine})),
        (
            "/encrypt",
            json!({"keyHandle": mine, "algorithm": "AEAD", "parameters": aead, "plaintext": m}),
        ),
        (
            "/derivedkey",
            json!({"baseKeyHandle": mine, "derivationData": m}),
        ),
    ];
    for uid in [NOBODY, 1002] {
        for (path, body) in &uses {
            let (status, v) = call(&s.keyd, uid, Method::POST, path, Some(body.clone())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "uid {uid} {path}: {v}");
            assert!(
                !v.to_string().contains("signature") && v.get("key").is_none(),
                "{v}"
            );
        }
    }
    for uid in [1001, 0] {
        for (path, body) in &uses[..3] {
            let (status, v) = call(&s.keyd, uid, Method::POST, path, Some(body.clone())).await;
            assert_eq!(status, StatusCode::OK, "uid {uid} {path}: {v}");
        }
    }
    let code = sign_as_nobody(&s, &uses[0].1).await;
    println!(
        "RELIABILITY|keyd handles bound to their uid|identityd hands module uid 1001 its key handle|uid {NOBODY} (no principal) and module uid 1002 sign, export, encrypt and derive with it; uid 65534 signs over the real socket ({code})|401 every time; uid 1001 and root still use it|0"
    );
    let _ = s.stop.send(true);
}

/// `POST /sign` with `body` on keyd's real socket as uid 65534 (`setpriv` + `curl`): the HTTP
/// status, or a note why it was skipped (not root).
async fn sign_as_nobody(s: &Stack, body: &Value) -> String {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        println!("SKIPPED the real-socket part: not root, cannot run curl as uid 65534");
        return "skipped: not root".into();
    }
    let dir = s._dir.path().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (socket, body) = (dir.join("run/keyd.sock"), body.to_string());
    let args = "--reuid 65534 --regid 65534 --clear-groups curl -s -o /dev/null -w %{http_code}";
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("setpriv")
            .args(args.split(' '))
            .arg("--unix-socket")
            .arg(&socket)
            .args(["-H", "content-type: application/json", "-d", &body])
            .arg(format!("http://keyd.sock/sign?{V}"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code, "401", "uid 65534 on the socket: {out:?}");
    format!("HTTP {code}")
}

#[tokio::test]
async fn a_uid_without_a_principal_is_refused_on_every_route() {
    let s = stack().await;
    let module_handle = s.own_identity(1001).await["auth"]["keyHandle"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = forged(&module_handle, |v| {
        v["key_id"] = json!({"Key": "device-id"})
    });

    let routes =
        nobody_on_identityd(&s).await + nobody_on_keyd(&s, &bad).await + nobody_on_certd(&s).await;
    println!(
        "RELIABILITY|authorization: a uid without a principal on every identity-service route|identityd, keyd and certd routers with the caller's uid|uid {NOBODY} on {routes} route calls (every route of the three daemons; keyd's handle routes with a forged and a garbage handle)|refused (401; 400 for handles keyd did not issue) except the public ones: trust bundle, provisioning summary, certificate reads; no key or handle in any answer; nothing changed|0"
    );
    let _ = s.stop.send(true);
}

/// identityd as a uid without a principal: only the trust bundle and the provisioning summary
/// (no secrets) are open.
async fn nobody_on_identityd(s: &Stack) -> usize {
    let idd = s.identityd();
    let mod_path = |q: &str| format!("/identities/modules/mymodule?{V}{q}");
    let identityd: Vec<(Method, String, Option<Value>, StatusCode)> = vec![
        (
            Method::GET,
            format!("/identities/identity?{V}"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            format!("/identities/device?{V}"),
            Some(json!({"type": "aziot"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            format!("/identities/device/reprovision?{V}"),
            Some(json!({"type": "aziot"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            format!("/identities/modules?{V}&type=aziot"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            format!("/identities/modules?{V}"),
            Some(json!({"type": "aziot", "moduleId": "x"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            mod_path("&type=aziot"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PUT,
            mod_path(""),
            Some(json!({"type": "aziot", "moduleId": "mymodule"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::DELETE,
            mod_path("&type=aziot"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            format!("/reload?{V}"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            format!("/trust-bundle?{V}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/identities/provisioning?api-version=2021-12-01".into(),
            None,
            StatusCode::OK,
        ),
    ];
    let calls = identityd.len();
    for (method, path, body, want) in identityd {
        let (status, v) = call(&idd, NOBODY, method.clone(), &path, body).await;
        assert_eq!(status, want, "identityd {method} {path}: {v}");
        assert!(
            !v.to_string().contains("keyHandle") && !v.to_string().contains(KEY),
            "identityd {method} {path} shows a key: {v}"
        );
    }
    assert_eq!(s.hub_modules().await, ["mymodule", "othermod"]);
    calls
}

/// keyd as a uid without a principal: no key id may be named; a handle keyd did not issue (`bad`,
/// or garbage) is refused on every handle route.
async fn nobody_on_keyd(s: &Stack, bad: &str) -> usize {
    let id_routes = [
        (
            Method::POST,
            "/key",
            json!({"keyId": "device-id", "usage": "sign"}),
        ),
        (
            Method::POST,
            "/key",
            json!({"keyId": "mine", "usage": "sign", "keyBytes": "eA=="}),
        ),
        (Method::GET, "/key/device-id", Value::Null),
        (Method::GET, &format!("/key/{MASTER}"), Value::Null),
        (
            Method::POST,
            "/keypair",
            json!({"keyId": "pair", "preferredAlgorithms": "ec-p256"}),
        ),
        (Method::GET, "/keypair/pair", Value::Null),
        (Method::POST, "/keypair/pair", json!({"from": "other"})),
    ];
    let mut calls = id_routes.len();
    for (method, path, body) in id_routes {
        let body = (!body.is_null()).then_some(body);
        let (status, v) = call(&s.keyd, NOBODY, method.clone(), path, body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "keyd {method} {path}: {v}"
        );
        assert!(v.to_string().contains(&format!("user {NOBODY}")), "{v}");
    }
    let message = STANDARD.encode("m");
    for handle in [bad, "sr=eA==&sig=eA=="] {
        let handle_routes = [
            (Method::DELETE, "/key", json!({"keyHandle": handle})),
            (Method::DELETE, "/keypair", json!({"keyHandle": handle})),
            (
                Method::POST,
                "/parameters/algorithm",
                json!({"keyHandle": handle}),
            ),
            (
                Method::POST,
                "/derivedkey",
                json!({"baseKeyHandle": handle, "derivationData": message}),
            ),
            (
                Method::POST,
                "/derivedkey/export",
                json!({"keyHandle": handle}),
            ),
            (
                Method::POST,
                "/sign",
                json!({"keyHandle": handle, "algorithm": "HMAC-SHA256", "parameters": {"message": message}}),
            ),
            (
                Method::POST,
                "/encrypt",
                json!({"keyHandle": handle, "algorithm": "AEAD", "parameters": {"iv": message, "aad": message}, "plaintext": message}),
            ),
            (
                Method::POST,
                "/decrypt",
                json!({"keyHandle": handle, "algorithm": "AEAD", "parameters": {"iv": message, "aad": message}, "ciphertext": message}),
            ),
        ];
        calls += handle_routes.len();
        for (method, path, body) in handle_routes {
            let (status, v) = call(&s.keyd, NOBODY, method.clone(), path, Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "keyd {method} {path}: {v}");
        }
    }
    let (status, _) = call(&s.keyd, 0, Method::GET, "/key/device-id", None).await;
    assert_eq!(status, StatusCode::OK, "the device key is still there");
    calls
}

/// certd as a uid without a principal: reading is open (certificates are public), every change
/// is refused.
async fn nobody_on_certd(s: &Stack) -> usize {
    let csr = pki::csr::Csr::create(
        &pki::PrivateKey::generate(pki::KeyAlgorithm::P256).unwrap(),
        &pki::csr::CsrOptions::new(pki::Profile::DeviceClient, "x"),
    )
    .unwrap()
    .to_pem();
    let bundle = std::fs::read_to_string(&s.hub.root).unwrap();
    let certd = [
        (
            Method::POST,
            format!("/certificates?{V}"),
            Some(json!({"certId": "x", "csr": csr})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::PUT,
            format!("/certificates/trust-bundle?{V}"),
            Some(json!({"pem": bundle})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::DELETE,
            format!("/certificates/trust-bundle?{V}"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            format!("/certificates/trust-bundle?{V}"),
            None,
            StatusCode::OK,
        ),
    ];
    let calls = certd.len();
    for (method, path, body, want) in certd {
        let (status, v) = call(&s.certd, NOBODY, method.clone(), &path, body).await;
        assert_eq!(status, want, "certd {method} {path}: {v}");
    }
    let (_, v) = call(&s.certd, 0, Method::GET, "/certificates/trust-bundle", None).await;
    assert_eq!(
        v["pem"].as_str(),
        Some(bundle.as_str()),
        "the trust bundle is unchanged"
    );
    calls
}
