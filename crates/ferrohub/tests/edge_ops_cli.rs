//! `ferrohub edge list|logs|restart|check` on a gateway run without the edge agent: a real
//! `ferrohub hub` process and a real `ferrohub edge --config edge.toml` process on loopback. The
//! gateway answers on its own control socket, logs to its data directory, restarts in place
//! (same process, serving again), and `edge check` passes when all is well and names the fix when
//! the children's host name is not in its certificate or the hub is down. Also: a gateway in
//! identity service mode refuses a data directory another process holds, naming its pid.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

mod kill9;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use common::{run, text};
use kill9::ferrohub;
use mqtt_codec::ConnectReturnCode::Accepted;
use serde_json::Value;
use test_support::hub::Mqtt;
use test_support::net::free_addr;

struct Rig {
    dir: tempfile::TempDir,
    hub: Child,
    gw: Child,
    gw_addr: SocketAddr,
    token: String,
}

impl Rig {
    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).to_string_lossy().into_owned()
    }

    fn edge(&self, args: &[&str]) -> Output {
        let config = self.path("edge/edge.toml");
        run(&[&["edge"], args, &["--config", &config]].concat())
    }

    /// `edge check --json`, parsed, by id.
    fn check(&self, extra: &[&str]) -> (bool, Vec<Value>) {
        let out = self.edge(&[&["check", "--json"], extra].concat());
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("edge check --json printed no JSON ({e}): {}", text(&out)));
        (out.status.success(), v.as_array().unwrap().clone())
    }
}

fn by_id<'a>(checks: &'a [Value], id: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:?}"))
}

fn setup() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
    let (mqtt, https, gw_addr) = (free_addr(), free_addr(), free_addr());
    let hub_config = kill9::init_hub(
        &dir.path().join("hub"),
        &mqtt.to_string(),
        &https.to_string(),
    );
    let gw_s = gw_addr.to_string();
    let hub = kill9::start(
        &["hub", "--config", &hub_config],
        mqtt,
        &dir.path().join("hub.log"),
        800,
    );
    ferrohub(&[
        "edge",
        "init",
        "--dir",
        &path("edge"),
        "--edge-id",
        "gw",
        "--hostname",
        "localhost",
        "--hostname",
        "127.0.0.1",
        "--listen",
        &gw_s,
        "--config",
        &hub_config,
        "--ca-dir",
        &path("hub/certs"),
    ]);
    let token = kill9::create_device(&hub_config, "child", &["--parent", "gw"]);
    let gw = kill9::start(
        &["edge", "--config", &path("edge/edge.toml")],
        gw_addr,
        &dir.path().join("edge.log"),
        800,
    );
    Rig {
        dir,
        hub,
        gw,
        gw_addr,
        token,
    }
}

/// A child connects to the gateway and is accepted (retried while it syncs its scope).
async fn child_connects(gw: SocketAddr, root: &Path, token: &str) {
    for _ in 0..400 {
        let mut c = Mqtt::tls_to(gw, root, None).await;
        if c.connect("child", Some(token.to_owned()), true).await.1 == Accepted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the child could not connect to the gateway");
}

/// Polls `edge list` until the gateway reports its hub session (a bounded wait).
fn wait_listed_connected(rig: &Rig) -> String {
    let mut last = String::new();
    for _ in 0..200 {
        let out = rig.edge(&["list"]);
        last = text(&out);
        if out.status.success() && last.contains("hub connected") {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("edge list never showed the gateway connected: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_logs_restart_and_check_work_without_an_agent() {
    let mut rig = setup();
    let root = rig.dir.path().join("hub/certs/root-ca.cert.pem");

    // list: the gateway answers on its own control socket.
    let listed = wait_listed_connected(&rig);
    assert!(listed.starts_with("NAME"), "{listed}");
    let line = listed.lines().find(|l| l.starts_with("edgeHub")).unwrap();
    assert!(line.contains("running") && line.contains("Up "), "{line}");
    assert!(line.contains("edge --config"), "{line}");

    // logs: the gateway's own rotated log file in its data directory.
    let out = rig.edge(&["logs", "edgeHub", "--tail", "50"]);
    assert!(out.status.success(), "{}", text(&out));
    let logs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(logs.contains("Device scope synced"), "{logs}");
    assert!(
        Path::new(&rig.path("edge/data/logs/edgeHub.log")).exists(),
        "the log is in the data directory"
    );
    let out = rig.edge(&["logs", "ai_insights"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("the only one"), "{}", text(&out));

    // check: all passes on a healthy gateway (hostname: its listen IP, in the certificate).
    child_connects(rig.gw_addr, &root, &rig.token).await;
    let out = rig.edge(&["check"]);
    assert!(out.status.success(), "edge check failed:\n{}", text(&out));
    assert!(text(&out).contains("0 check(s) failed"), "{}", text(&out));
    let (ok, checks) = rig.check(&[]);
    assert!(ok);
    for c in &checks {
        assert!(
            c["ok"].is_boolean() && c["detail"].is_string() && c["fix"].is_string(),
            "{c}"
        );
    }
    for id in [
        "gateway-running",
        "config",
        "cert-present",
        "cert-expiry",
        "cert-hostname",
        "cert-chain",
        "store-disk",
        "store-writable",
        "hub-mqtt",
        "hub-https",
        "hub-auth",
        "clock-skew",
    ] {
        assert_eq!(by_id(&checks, id)["ok"], true, "{id}: {checks:?}");
    }

    // A name children might use that the certificate does not hold: fails, with the fix.
    let (ok, checks) = rig.check(&["--hostname", "gw.example"]);
    assert!(!ok);
    let c = by_id(&checks, "cert-hostname");
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["detail"].as_str().unwrap().contains("\"gw.example\""),
        "{c}"
    );
    assert!(
        c["fix"].as_str().unwrap().contains("--hostname gw.example"),
        "{c}"
    );

    // restart: in place (the same process), serving children again afterwards.
    let out = rig.edge(&["restart", "edgeHub"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "edgeHub");
    assert!(
        rig.gw.try_wait().unwrap().is_none(),
        "same process, still running"
    );
    child_connects(rig.gw_addr, &root, &rig.token).await;
    wait_listed_connected(&rig);
    let log = std::fs::read_to_string(rig.path("edge/data/logs/edgeHub.log")).unwrap();
    assert!(log.contains("Restarting: re-executing"), "{log}");
    let out = rig.edge(&["restart", "nope"]);
    assert_eq!(out.status.code(), Some(2));

    // The gateway stopped: its check fails; the hub still accepts $edgeHub (a real CONNECT).
    rig.gw.kill().unwrap();
    rig.gw.wait().unwrap();
    let (ok, checks) = rig.check(&[]);
    assert!(!ok);
    let c = by_id(&checks, "gateway-running");
    assert_eq!(c["ok"], false);
    assert!(
        c["fix"].as_str().unwrap().contains("ferrohub edge -c"),
        "{c}"
    );
    let c = by_id(&checks, "hub-auth");
    assert_eq!(c["ok"], true, "{c}");
    assert!(c["detail"].as_str().unwrap().contains("CONNACK"), "{c}");
    let out = rig.edge(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not answering"), "{}", text(&out));

    // The hub is down: unreachable, with the fix.
    rig.hub.kill().unwrap();
    rig.hub.wait().unwrap();
    let (ok, checks) = rig.check(&[]);
    assert!(!ok);
    for id in ["hub-mqtt", "hub-https"] {
        let c = by_id(&checks, id);
        assert_eq!(c["ok"], false, "{c}");
        assert!(
            c["detail"].as_str().unwrap().contains("cannot connect"),
            "{c}"
        );
        assert!(c["fix"].as_str().unwrap().contains("start the hub"), "{c}");
    }
    let out = rig.edge(&["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("✗ cannot connect"), "{}", text(&out));
}

/// A gateway process (file mode) holding `root`'s identity-mode data directory.
fn holder(dir: &Path, root: &Path) -> (Child, SocketAddr) {
    let p = |s: &str| dir.join(s).to_string_lossy().into_owned();
    kill9::init_hub(&dir.join("hub"), "127.0.0.1:1", "127.0.0.1:1");
    let addr = free_addr();
    let data: PathBuf = root.join("var/lib/ferrohub/edge");
    std::fs::write(
        dir.join("edge.toml"),
        format!(
            "edge_id = \"gw\"\nhub_hostname = \"localhost\"\nhub_mqtt = \"127.0.0.1:1\"\n\
             hub_https = \"127.0.0.1:1\"\nhub_ca = \"{}\"\nedge_hub_key = \"MDEyMzQ1Njc4OWFiY2RlZg==\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\ndata_dir = \"{}\"\nlisten = \"{addr}\"\n",
            p("hub/certs/root-ca.cert.pem"),
            p("hub/certs/server-localhost-full-chain.cert.pem"),
            p("hub/certs/server-localhost.key.pem"),
            data.display()
        ),
    )
    .unwrap();
    let child = kill9::start(
        &["edge", "-c", &p("edge.toml")],
        addr,
        &dir.join("holder.log"),
        800,
    );
    (child, addr)
}

#[test]
fn identity_mode_refuses_a_data_directory_in_use_naming_the_pid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (mut first, _) = holder(dir.path(), &root);
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "hostname = \"gw.example\"\n[provisioning]\nsource = \"manual\"\n\
         connection_string = \"HostName=localhost;DeviceId=gw;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==\"\n",
    )
    .unwrap();
    let out = run(&[
        "edge",
        "-c",
        config.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("in use by another ferrohub process")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    assert!(err.contains("var/lib/ferrohub/edge"), "{err}");
}
