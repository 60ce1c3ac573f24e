//! aziot's principal files and paths: an agent installer written for the Azure IoT Identity
//! Service drops a bare principal file in `/etc/aziot/identityd/config.d/` and calls the daemons
//! with `curl --unix-socket /run/aziot/...`. Here everything lives below a temporary root (the
//! same layout as `ferrohub config apply --root DIR --aziot-paths`), never in the real /etc or /run.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::{Method, StatusCode};
use identity::config::apply::{self, Paths};
use identity::config::aziot::{self, AziotPaths};
use identity::config::superconfig::SuperConfig;
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig, load_daemon, load_daemon_aziot};
use mqtt_codec::ConnectReturnCode;
use serde_json::{Value, json};
use test_support::hub::{self as hubtest, KEY, Mqtt, TestHub};

/// A manual-SAS super-config with aziot's paths on, trusting `bundle` for the hub.
fn super_config(bundle: &Path) -> String {
    format!(
        "hostname = \"edge-box\"\naziot_paths = true\ntrust_bundle_cert = \"file://{}\"\n\
         [provisioning]\nsource = \"manual\"\n\
         connection_string = \"HostName=hub1;DeviceId=dev1;SharedAccessKey={KEY}\"\n",
        bundle.display()
    )
}

/// Parses and applies `text` below `root`, as `ferrohub config apply --root` does.
fn apply_under(root: &Path, text: &str) -> Paths {
    let config = SuperConfig::parse(text, Path::new("config.toml")).unwrap();
    assert!(config.aziot_paths);
    let paths = Paths::under(root).with_aziot(root);
    let applied = apply::plan(&config, &paths).unwrap();
    apply::write(&applied, &paths).unwrap();
    paths
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn load<T: serde::de::DeserializeOwned>(paths: &Paths, daemon: &str) -> Result<T, String> {
    load_daemon(&paths.daemon_config(daemon), &paths.dropin_dir(daemon)).map_err(|e| e.to_string())
}

#[test]
fn aziot_principal_files_are_read_in_each_shape_and_location() {
    let root = tempfile::tempdir().unwrap();
    let paths = apply_under(root.path(), &super_config(Path::new("/nowhere/bundle.pem")));
    let r = root.path();
    for d in apply::DAEMONS {
        assert!(
            aziot::config_dir(r, d).is_dir(),
            "apply creates {d}'s aziot config.d"
        );
    }
    // aziot's installer shape: one principal as bare keys, in /etc/aziot/identityd/config.d.
    write(
        &aziot::config_dir(r, "identityd").join("telemetry.toml"),
        "uid = 4321\nname = \"telemetry-agent\"\nidtype = [\"module\"]\n",
    );
    // The same bare shape in ferrohub's own drop-in directory, and a single [principal] table.
    write(
        &paths.dropin_dir("identityd").join("50-reader.toml"),
        "uid = 4322\nname = \"inventory\"\nidtype = [\"device\"]\n",
    );
    write(
        &aziot::config_dir(r, "identityd").join("local.toml"),
        "[principal]\nuid = 4323\nname = \"lan-peer\"\nidtype = [\"local\"]\n\
         localid = { type = \"x509\", attributes = \"server\" }\n",
    );
    // keyd and certd: aziot-edged's shape, [[principal]] with the ids it may use.
    write(
        &aziot::config_dir(r, "keyd").join("agent.toml"),
        "[[principal]]\nuid = 4321\nkeys = [\"agent-*\"]\n",
    );
    write(
        &aziot::config_dir(r, "certd").join("agent.toml"),
        "uid = 4321\ncerts = [\"agent-server\"]\n",
    );
    let idd: IdentitydConfig = load(&paths, "identityd").unwrap();
    let mut names: Vec<(u32, String, Vec<String>)> = idd
        .principals
        .iter()
        .map(|p| (p.uid, p.name.clone(), p.idtype.clone().unwrap_or_default()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (4321, "telemetry-agent".into(), vec!["module".into()]),
            (4322, "inventory".into(), vec!["device".into()]),
            (4323, "lan-peer".into(), vec!["local".into()]),
        ]
    );
    let keyd: KeydConfig = load(&paths, "keyd").unwrap();
    assert_eq!(keyd.principals.len(), 1);
    assert_eq!(keyd.principals[0].keys, ["agent-*"]);
    let certd: CertdConfig = load(&paths, "certd").unwrap();
    assert_eq!(certd.principals[0].certs, ["agent-server"]);
    let (_, found): (IdentitydConfig, AziotPaths) = load_daemon_aziot(
        &paths.daemon_config("identityd"),
        &paths.dropin_dir("identityd"),
    )
    .unwrap();
    assert_eq!(found.socket, Some(aziot::socket(r, "identityd")));

    // Only principals belong in aziot's directories; anything else is named with its file.
    write(
        &aziot::config_dir(r, "identityd").join("zz-stray.toml"),
        "hostname = \"other\"\n",
    );
    let err = load::<IdentitydConfig>(&paths, "identityd").unwrap_err();
    assert!(
        err.contains("zz-stray.toml") && err.contains("hostname") && err.contains("super-config"),
        "{err}"
    );
}

/// keyd, certd and identityd served from the applied configs, each also on its aziot socket.
async fn serve(paths: &Paths, hub: &TestHub) -> tokio::sync::watch::Sender<bool> {
    let load_with = |d: &str| (paths.daemon_config(d), paths.dropin_dir(d));
    let (f, d) = load_with("keyd");
    let (keyd, k): (KeydConfig, AziotPaths) = load_daemon_aziot(&f, &d).unwrap();
    let (f, d) = load_with("certd");
    let (certd, c): (CertdConfig, AziotPaths) = load_daemon_aziot(&f, &d).unwrap();
    let (f, d) = load_with("identityd");
    let (idd, i): (IdentitydConfig, AziotPaths) = load_daemon_aziot(&f, &d).unwrap();
    let keyd_daemon = identity::keyd::Keyd::open(&keyd).unwrap();
    let store = keyd_daemon.store();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let also = |p: AziotPaths| p.socket.into_iter().collect::<Vec<PathBuf>>();
    let (k, c, i) = (also(k), also(c), also(i));
    let krx = rx.clone();
    tokio::spawn(async move { identity::keyd::serve_on(keyd_daemon, &keyd, &k, krx).await });
    tokio::spawn(identity::certd::serve_on(
        certd,
        store.clone(),
        c,
        rx.clone(),
    ));
    wait_for(&paths.socket("certd")).await;
    let options = identity::identityd::Options {
        store: Some(store),
        hub_addresses: [("hub1".to_owned(), hub.https.to_string())].into(),
        clock: Some(Arc::new(ferrohub_runtime::time::FixedClock(
            std::sync::Mutex::new(hubtest::now()),
        ))),
        config_paths: None,
    };
    tokio::spawn(identity::identityd::serve_on(idd, options, i, rx));
    stop
}

async fn wait_for(socket: &Path) {
    for _ in 0..500 {
        if socket.exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} did not appear within 5 s", socket.display());
}

/// Runs curl with `args` (the seed's own arguments) and parses its output as JSON.
async fn curl(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn an_agents_curl_calls_answer_on_the_aziot_sockets() {
    let hub = TestHub::start_with(|c| c.hostname = "hub1".into()).await;
    let device = json!({"deviceId": "dev1", "authentication": {"symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}});
    let r = hub
        .client()
        .send(Method::PUT, "/devices/dev1", Some(&device), &[])
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let paths = apply_under(r, &super_config(&hub.root));
    // The agent's registration, for the uid this test runs as.
    let uid = std::fs::metadata(r).unwrap().uid();
    write(
        &aziot::config_dir(r, "identityd").join("fleet-agent.toml"),
        &format!("uid = {uid}\nname = \"fleet-agent\"\nidtype = [\"module\"]\n"),
    );
    let stop = serve(&paths, &hub).await;
    let identityd_sock = aziot::socket(r, "identityd");
    wait_for(&identityd_sock).await;

    // Step 1 of the guide: the caller's identity from identityd.
    let identity = curl(vec![
        "--unix-socket".into(),
        identityd_sock.display().to_string(),
        "http://identityd.sock/identities/identity?api-version=2020-09-01".into(),
    ])
    .await;
    let spec = &identity["spec"];
    assert_eq!(spec["hubName"], "hub1", "{identity}");
    assert_eq!(spec["deviceId"], "dev1", "{identity}");
    assert_eq!(spec["moduleId"], "fleet-agent", "{identity}");
    assert_eq!(spec["auth"]["type"], "sas", "{identity}");
    let key_handle = spec["auth"]["keyHandle"].as_str().unwrap().to_owned();

    // Step 3: keyd signs the token's string-to-sign with the module's key handle.
    let resource = iot_auth::percent_encode("hub1/devices/dev1/modules/fleet-agent");
    let expiry = hubtest::expiry();
    let message = base64_encode(format!("{resource}\n{expiry}").as_bytes());
    let body = json!({"keyHandle": key_handle, "algorithm": "HMAC-SHA256", "parameters": {"message": message}});
    let signed = curl(vec![
        "--unix-socket".into(),
        aziot::socket(r, "keyd").display().to_string(),
        "-X".into(),
        "POST".into(),
        "-H".into(),
        "content-type: application/json".into(),
        "--data-raw".into(),
        body.to_string(),
        "http://keyd.sock/sign?api-version=2020-09-01".into(),
    ])
    .await;
    let signature = signed["signature"].as_str().unwrap();

    // The token built from it is accepted by the hub for the module.
    let token = format!(
        "SharedAccessSignature sr={resource}&sig={}&se={expiry}",
        iot_auth::percent_encode(signature)
    );
    let mut mqtt = Mqtt::tls(&hub, None).await;
    let username = "hub1/dev1/fleet-agent/?api-version=2021-04-12";
    let (_, code) = mqtt
        .connect_as("dev1/fleet-agent", username, Some(token), true)
        .await;
    assert_eq!(code, ConnectReturnCode::Accepted);
    // certd answers on its aziot socket too.
    let bundle = curl(vec![
        "--unix-socket".into(),
        aziot::socket(r, "certd").display().to_string(),
        "http://certd.sock/certificates/trust-bundle?api-version=2020-09-01".into(),
    ])
    .await;
    assert!(
        bundle["pem"]
            .as_str()
            .unwrap_or_default()
            .contains("BEGIN CERTIFICATE"),
        "{bundle}"
    );
    let _ = stop.send(true);
}
