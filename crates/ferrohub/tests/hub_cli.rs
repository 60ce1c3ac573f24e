//! `ferrohub hub` end to end through the binary: init, serve on high ports, manage devices and CA
//! certificates through the service API, read events, stop on SIGTERM with state kept.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;
use common::{bin, ok};
use test_support::net::free_port;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use common::{certs_ok, p};

fn hub(config: &Path, args: &[&str]) -> Output {
    bin()
        .arg("hub")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn start(config: &Path, https: u16) -> Child {
    let mut child = bin().args(["hub", "--config"]).arg(config).spawn().unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", https)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the hub did not start");
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the hub must exit cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn init_serve_manage_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let (mqtt, https) = (free_port(), free_port());
    let out = ok(bin()
        .args(["hub", "init", "--dir"])
        .arg(&dir)
        .args(["--hostname", "localhost", "--hostname", "127.0.0.1"])
        .args([
            "--mqtt",
            &format!("127.0.0.1:{mqtt}"),
            "--https",
            &format!("127.0.0.1:{https}"),
        ])
        .output()
        .unwrap());
    assert!(
        out.contains("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="),
        "{out}"
    );
    let config = dir.join("hub.toml");
    let cs = ok(hub(&config, &["connection-string"]));
    assert!(out.contains(cs.trim()));
    // init refuses to overwrite.
    let again = bin()
        .args(["hub", "init", "--dir"])
        .arg(&dir)
        .args(["--hostname", "localhost"])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let child = start(&config, https);
    let created = ok(hub(&config, &["device", "create", "dev1", "--json"]));
    let d: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert!(
        d["authentication"]["symmetricKey"]["primaryKey"]
            .as_str()
            .unwrap()
            .len()
            > 20
    );
    // Parent and child: set-parent links a device to an edge device, --none unlinks it.
    let gw: serde_json::Value = serde_json::from_str(&ok(hub(
        &config,
        &["device", "create", "gw", "--edge", "--json"],
    )))
    .unwrap();
    let scope = gw["deviceScope"].as_str().unwrap().to_owned();
    // Modules: an edge device's module with a connection string for behind the gateway.
    let made = ok(hub(
        &config,
        &["module", "create", "gw", "filter", "--gateway", "127.0.0.4"],
    ));
    assert!(
        made.contains("DeviceId=gw;ModuleId=filter;SharedAccessKey=")
            && made.contains(";GatewayHostName=127.0.0.4"),
        "{made}"
    );
    let listed = ok(hub(&config, &["module", "list", "gw"]));
    for m in ["$edgeAgent", "$edgeHub", "filter"] {
        assert!(listed.contains(m), "{listed}");
    }
    // Twins and direct methods.
    let patched = ok(hub(
        &config,
        &["twin", "update", "dev1", "--desired", r#"{"interval": 5}"#],
    ));
    let twin: serde_json::Value = serde_json::from_str(&patched).unwrap();
    assert_eq!(twin["properties"]["desired"]["interval"], 5);
    let shown = ok(hub(&config, &["twin", "show", "gw", "--module", "filter"]));
    assert!(shown.contains("\"moduleId\": \"filter\""), "{shown}");
    let offline = hub(&config, &["invoke-method", "dev1", "reboot"]);
    assert!(!offline.status.success());
    assert!(
        String::from_utf8_lossy(&offline.stderr).contains("404 Not Found: dev1 is not connected"),
        "{offline:?}"
    );
    ok(hub(&config, &["module", "delete", "gw", "filter"]));
    let gone = hub(&config, &["module", "show", "gw", "filter"]);
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("404 Not Found"),
        "{gone:?}"
    );
    assert!(scope.starts_with("ms-azure-iot-edge://gw-"), "{scope}");
    let linked: serde_json::Value = serde_json::from_str(&ok(hub(
        &config,
        &["device", "set-parent", "dev1", "--parent", "gw", "--json"],
    )))
    .unwrap();
    assert_eq!(linked["deviceScope"], scope.as_str());
    let not_edge = hub(&config, &["device", "set-parent", "gw", "--parent", "dev1"]);
    assert!(!not_edge.status.success());
    let unlinked: serde_json::Value = serde_json::from_str(&ok(hub(
        &config,
        &["device", "set-parent", "dev1", "--none", "--json"],
    )))
    .unwrap();
    assert!(unlinked["deviceScope"].is_null(), "{unlinked}");
    let shown = ok(hub(&config, &["device", "show", "dev1"]));
    assert!(
        shown.contains("connection string: HostName=localhost;DeviceId=dev1;SharedAccessKey="),
        "{shown}"
    );
    ok(hub(
        &config,
        &[
            "device",
            "set-status",
            "dev1",
            "disabled",
            "--reason",
            "test",
        ],
    ));
    assert!(ok(hub(&config, &["device", "list"])).contains("disabled"));
    let missing = hub(&config, &["device", "show", "nope"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("Device nope not found"),
        "{missing:?}"
    );

    // Seed 003's CA flow through the CLI.
    let pki = tmp.path().join("pki");
    certs_ok(&pki, &["root-ca"]);
    ok(hub(
        &config,
        &[
            "ca",
            "upload",
            "my-ca",
            "--cert",
            &p(&pki, "root-ca.cert.pem"),
        ],
    ));
    let code = ok(hub(&config, &["ca", "verification-code", "my-ca"]))
        .trim()
        .to_owned();
    assert_eq!(code.len(), 48);
    certs_ok(
        &pki,
        &["verification-cert", "--code", &code, "--issuer", "root-ca"],
    );
    let verified = ok(hub(
        &config,
        &[
            "ca",
            "verify",
            "my-ca",
            "--cert",
            &p(&pki, &format!("verification-{code}.cert.pem")),
        ],
    ));
    assert!(verified.contains("verified: true"), "{verified}");

    let events = ok(hub(&config, &["events", "--from-start"]));
    assert_eq!(events.trim(), "", "no telemetry yet");
    stop(child);

    // State survives the restart.
    let child = start(&config, https);
    assert!(ok(hub(&config, &["device", "show", "dev1"])).contains("status:          disabled"));
    assert!(ok(hub(&config, &["ca", "list"])).contains("my-ca"));
    let deleted: serde_json::Value =
        serde_json::from_str(&ok(hub(&config, &["device", "delete", "dev1", "--json"]))).unwrap();
    assert_eq!(deleted["deleted"], true);
    assert!(!hub(&config, &["device", "show", "dev1"]).status.success());
    stop(child);
}

#[test]
fn a_broken_config_is_named_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("hub.toml");
    std::fs::write(&config, "hostname = \"x\"\n[tls]\ncert = \"a\"\n").unwrap();
    let out = bin()
        .args(["hub", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hub.toml: line 2: missing field `key`"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `hub init` in `dir` on two free loopback ports: the config's path and the HTTPS port.
fn init_hub(dir: &Path) -> (PathBuf, u16) {
    let (mqtt, https) = (free_port(), free_port());
    ok(bin()
        .args(["hub", "init", "--dir"])
        .arg(dir)
        .args(["--hostname", "localhost"])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--https", &format!("127.0.0.1:{https}")])
        .output()
        .unwrap());
    (dir.join("hub.toml"), https)
}

/// A second hub on the same configuration (the same data directory) stops at once and names the
/// pid of the hub that holds the directory; the first keeps serving, and once it stops the
/// directory is free again.
#[test]
fn a_second_hub_on_the_same_data_directory_names_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let (config, https) = init_hub(&dir);
    let first = start(&config, https);
    let second = bin()
        .args(["hub", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr).to_string();
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "in use by another ferrohub process (pid {},",
            first.id()
        )),
        "{err}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", https)).is_ok());
    stop(first);
    let again = start(&config, https);
    stop(again);
}

#[test]
fn an_id_mqtt_cannot_carry_is_created_with_a_warning_and_metrics_take_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let (config, https) = init_hub(&dir);
    // Stopped even when an assertion fails first.
    let _hub = KillOnDrop(start(&config, https));
    let wild = hub(&config, &["device", "create", "a#b", "--json"]);
    let stderr = String::from_utf8_lossy(&wild.stderr).into_owned();
    let d: serde_json::Value = serde_json::from_str(&ok(wild)).unwrap();
    assert_eq!(d["deviceId"], "a#b");
    assert!(
        stderr.contains("warning:") && stderr.contains("MQTT"),
        "{stderr}"
    );
    let plain = hub(&config, &["device", "create", "plain", "--json"]);
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("warning"));
    ok(plain);
    let module = hub(&config, &["module", "create", "plain", "m+1"]);
    assert!(String::from_utf8_lossy(&module.stderr).contains("MQTT"));
    ok(module);
    let dots = hub(&config, &["device", "create", ".."]);
    assert!(!dots.status.success());
    assert!(String::from_utf8_lossy(&dots.stderr).contains("must not be"));

    // /metrics over HTTPS with a token from `sas-token`; a device-scoped one is refused.
    let metrics = |token: &str| {
        let token = token.trim().to_owned();
        let root = dir.join("certs/root-ca.cert.pem");
        ferrohub_runtime::tls::client_config(&root).map(|tls| {
            let client = ferrohub_runtime::client::ServiceClient::new(
                format!("127.0.0.1:{https}"),
                "localhost".into(),
                String::new(),
                Vec::new(),
                tls,
            )
            .with_authorization(Some(token));
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(client.send(hyper::Method::GET, "/metrics", None, &[]))
                .unwrap()
                .status
        })
    };
    let token = ok(hub(&config, &["sas-token", "--days", "1"]));
    assert_eq!(metrics(&token).unwrap(), hyper::StatusCode::OK);
    let scoped = ok(hub(&config, &["sas-token", "--device", "plain"]));
    assert_eq!(metrics(&scoped).unwrap(), hyper::StatusCode::UNAUTHORIZED);
}

/// A served hub that is killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
