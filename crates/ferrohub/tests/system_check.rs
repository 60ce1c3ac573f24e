//! `ferrohub system check` connects as the device and names the fix when the hub refuses it, and
//! `ferrohub system reprovision` re-assigns it — through the binary: a hub on free loopback ports,
//! the identity service under a temporary `--root`, an X.509 device whose key stays in keyd.
//!
//! The check reads the device identity and signs with its key through the daemons, which only
//! root may do for a device without a principal: as another user the tests are skipped with the
//! reason printed, except under CI (`CI` set), where they fail.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;
use common::{is_root, ok, text};
use test_support::net::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{certs_ok, p};

/// The binary, logging warnings only.
fn bin() -> Command {
    let mut c = common::bin();
    c.env("FERROHUB_LOG", "warn");
    c
}

/// False (with the reason printed) when the test cannot run here; fails under CI instead.
fn can_run() -> bool {
    if is_root() {
        return true;
    }
    let why = "it needs root (the device identity and its key through the daemons)";
    assert!(
        std::env::var_os("CI").is_none(),
        "cannot run under CI: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

/// Processes killed when the test ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A hub serving on free loopback ports, and the device's side under `root`.
struct Env {
    dir: PathBuf,
    hub_config: PathBuf,
    root: PathBuf,
    mqtt: u16,
    https: u16,
    /// The hub, stopped when the test ends.
    _children: Children,
    /// The in-process identity service's runtime and its stop signal.
    daemons: Option<(tokio::runtime::Runtime, tokio::sync::watch::Sender<bool>)>,
}

impl Env {
    fn hub(&self, args: &[&str]) -> Output {
        bin()
            .arg("hub")
            .args(args)
            .arg("--config")
            .arg(&self.hub_config)
            .output()
            .unwrap()
    }

    /// Proves possession of the devices' root CA at the hub (seed 003's steps).
    fn verify_ca(&self) {
        let code = ok(self.hub(&["ca", "verification-code", "devices-root"]))
            .trim()
            .to_owned();
        let certs = self.dir.join("certs");
        certs_ok(
            &certs,
            &["verification-cert", "--code", &code, "--issuer", "root-ca"],
        );
        let proof = p(&certs, &format!("verification-{code}.cert.pem"));
        ok(self.hub(&["ca", "verify", "devices-root", "--cert", &proof]));
    }

    /// `system check` against this hub; (passed, stdout).
    fn check(&self) -> (bool, String) {
        let out = bin()
            .args(["system", "check", "--root"])
            .arg(&self.root)
            .args(["--hub-mqtt", &format!("127.0.0.1:{}", self.mqtt)])
            .args(["--hub-https", &format!("127.0.0.1:{}", self.https)])
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    }

    /// Starts keyd, certd and identityd from the configs `config apply` wrote under `root`, in
    /// this process: as `ferrohub identity run` does, except that identityd reaches the hub's
    /// HTTPS API at its free port rather than at `localhost:443`.
    fn start_identity(&mut self) {
        use identity::config::{CertdConfig, IdentitydConfig, KeydConfig, load_daemon};
        let paths = identity::config::apply::Paths::under(&self.root);
        let load = |svc| (paths.daemon_config(svc), paths.dropin_dir(svc));
        let (file, dropins) = load("keyd");
        let keyd: KeydConfig = load_daemon(&file, &dropins).unwrap();
        let (file, dropins) = load("certd");
        let certd: CertdConfig = load_daemon(&file, &dropins).unwrap();
        let (file, dropins) = load("identityd");
        let idd: IdentitydConfig = load_daemon(&file, &dropins).unwrap();
        let options = identity::identityd::Options {
            hub_addresses: [("localhost".to_owned(), format!("127.0.0.1:{}", self.https))].into(),
            config_paths: Some((file, dropins)),
            ..Default::default()
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        rt.block_on(async {
            let daemon = identity::keyd::Keyd::open(&keyd).unwrap();
            let store = daemon.store();
            let options = identity::identityd::Options {
                store: Some(store.clone()),
                ..options
            };
            let keyd_rx = rx.clone();
            tokio::spawn(
                async move { identity::keyd::serve_on(daemon, &keyd, &[], keyd_rx).await },
            );
            tokio::spawn(identity::certd::serve(certd, store, rx.clone()));
            tokio::spawn(identity::identityd::serve(idd, options, rx));
        });
        self.daemons = Some((rt, stop));
        for _ in 0..400 {
            let out = bin()
                .args(["system", "status", "--root"])
                .arg(&self.root)
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(" on hub ") {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the identity service did not provision the device");
    }

    /// Stops the identity service.
    fn stop_identity(&mut self) {
        if let Some((rt, stop)) = self.daemons.take() {
            let _ = stop.send(true);
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A hub with X.509 CA device `dev1` whose root CA is uploaded unverified, and the device's
/// identity service configured (manual X.509 provisioning, key preloaded into keyd).
fn setup(dir: &Path) -> Env {
    let certs = dir.join("certs");
    certs_ok(&certs, &["root-ca"]);
    certs_ok(&certs, &["intermediate-ca"]);
    certs_ok(&certs, &["device", "dev1"]);
    let (mqtt, https) = (free_port(), free_port());
    let hub_dir = dir.join("hub");
    ok(bin()
        .args(["hub", "init", "--dir"])
        .arg(&hub_dir)
        .args(["--hostname", "localhost", "--hostname", "127.0.0.1"])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--https", &format!("127.0.0.1:{https}")])
        .output()
        .unwrap());
    let hub_config = hub_dir.join("hub.toml");
    let child = bin()
        .args(["hub", "--config"])
        .arg(&hub_config)
        .spawn()
        .unwrap();
    let mut env = Env {
        dir: dir.to_owned(),
        hub_config,
        root: dir.join("device"),
        mqtt,
        https,
        _children: Children(vec![child]),
        daemons: None,
    };
    for _ in 0..200 {
        if env.hub(&["device", "list"]).status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(env.hub(&["device", "create", "dev1", "--auth", "ca"]));
    let root_ca = p(&certs, "root-ca.cert.pem");
    ok(env.hub(&["ca", "upload", "devices-root", "--cert", &root_ca]));

    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"dev1-box\"\n\
             trust_bundle_cert = \"file://{}\"\n\
             [provisioning]\nsource = \"manual\"\niothub_hostname = \"localhost\"\n\
             device_id = \"dev1\"\n\
             [provisioning.authentication]\nmethod = \"x509\"\n\
             identity_cert = \"file://{}\"\nidentity_pk = \"file://{}\"\n",
            hub_dir.join("certs/root-ca.cert.pem").display(),
            certs.join("iot-device-dev1-full-chain.cert.pem").display(),
            certs.join("iot-device-dev1.key.pem").display(),
        ),
    )
    .unwrap();
    ok(bin()
        .args(["config", "apply", "-c"])
        .arg(&config)
        .arg("--root")
        .arg(&env.root)
        .output()
        .unwrap());
    env.start_identity();
    env
}

#[test]
fn check_names_the_refusal_and_its_fix_then_passes_once_fixed() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let env = setup(tmp.path());

    // The CA is uploaded but not verified: reachable over TLS, refused at CONNECT.
    let (passed, out) = env.check();
    assert!(!passed, "{out}");
    assert!(out.contains("✓ hub localhost at 127.0.0.1:"), "{out}");
    assert!(
        out.contains("✗ the hub refuses dev1 at CONNECT (unverified_ca)"),
        "{out}"
    );
    assert!(out.contains("not verified"), "{out}");
    for command in [
        "ferrohub hub ca verification-code NAME",
        "ferrohub certs verification-cert --code CODE --issuer CA",
        "ferrohub hub ca verify NAME --cert",
    ] {
        assert!(out.contains(command), "{command}: {out}");
    }
    assert!(out.contains("1 check(s) failed"), "{out}");

    // The fix it names, done: the check passes.
    env.verify_ca();
    let (passed, out) = env.check();
    assert!(passed, "{out}");
    assert!(
        out.contains(&format!(
            "✓ dev1 connects to 127.0.0.1:{} over MQTT (CONNACK accepted)",
            env.mqtt
        )),
        "{out}"
    );
    assert!(out.contains("0 check(s) failed"), "{out}");

    // Disabled at the hub: named, with the command that enables it.
    ok(env.hub(&["device", "set-status", "dev1", "disabled"]));
    let (passed, out) = env.check();
    assert!(!passed, "{out}");
    assert!(out.contains("(disabled): device dev1 is disabled"), "{out}");
    assert!(
        out.contains("ferrohub hub device set-status dev1 enabled"),
        "{out}"
    );
}

#[test]
fn reprovision_reports_the_refusal_then_the_new_assignment() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut env = setup(tmp.path());
    let reprovision = |root: &Path, json: bool| {
        let mut c = bin();
        c.args(["system", "reprovision", "--root"]).arg(root);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    // The hub refuses the device (its CA is not verified): the error, and where to look.
    let out = reprovision(&env.root, false);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("reprovisioning failed"), "{said}");
    assert!(said.contains("ferrohub system check"), "{said}");
    let out = reprovision(&env.root, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reprovisioned"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("reconciling"), "{v}");

    // Fixed at the hub: the device is assigned again, and the command says where.
    env.verify_ca();
    let out = ok(reprovision(&env.root, false));
    assert!(
        out.contains("reprovisioned: device dev1 on hub localhost (gateway host localhost)"),
        "{out}"
    );
    let out = reprovision(&env.root, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(v["reprovisioned"], true, "{v}");
    assert_eq!(v["deviceId"], "dev1", "{v}");
    assert_eq!(v["hubName"], "localhost", "{v}");
    let cache = env.root.join("var/lib/ferrohub/identityd/device_info");
    assert!(
        cache.exists(),
        "the assignment is cached: {}",
        cache.display()
    );

    // Without the service: the error, and how to start it.
    env.stop_identity();
    let out = reprovision(&env.root, false);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("reprovisioning failed"), "{said}");
    assert!(said.contains("ferrohub identity run"), "{said}");
}
