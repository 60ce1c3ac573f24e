//! `ferrohub quickstart`, every stage (PKI, hub, provisioning, identity service, gateway, outage):
//! exits 0 only when every step verified, reuses its data, writes `quickstart.json` with what an
//! SDK client needs, keeps the services up with `--keep-running` until Ctrl-C, and refuses
//! `--azure-ports` with the fix when a port cannot be bound.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Every step of a run, in order, as the summary names them.
const STEPS: [&str; 30] = [
    "Root CA",
    "Intermediate CA",
    "Edge device CA (pathLen 0)",
    "Gateway server certificate",
    "Edge device identity (DPS registration id)",
    "Downstream device, CA-signed",
    "Downstream device, self-signed",
    "Proof of possession of the intermediate CA",
    "Chain validation of every leaf",
    "TLS handshake with the gateway chain",
    "Hub started on loopback (in-process)",
    "Intermediate CA uploaded, verified by proof of possession",
    "Downstream devices registered at the hub",
    "Telemetry from both devices, durable, read back",
    "Provisioning service started, linked to the hub",
    "Intermediate CA verified at the provisioning service",
    "Enrollment group for edge devices (X.509, iotEdge)",
    "Identity service provisions the edge device via DPS",
    "Module signs through keyd, sends telemetry",
    "Children (X.509 CA-signed, SAS) in the edge device's scope",
    "Edge gateway started (seed 000 routes, edge CA cert)",
    "Telemetry from both children through the gateway",
    "Direct method to a child through the gateway",
    "Desired-property patch to a child through the gateway",
    "Hub stopped; the gateway keeps acknowledging",
    "Hub back on the same ports; every message arrives",
    "Connection details written to quickstart.json",
    "Edge gateway stopped",
    "Provisioning and identity services stopped",
    "Hub stopped cleanly",
];

fn quickstart(dir: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .arg("quickstart")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The mark (✓, ✗, -) of `step` in the summary table.
fn mark(text: &str, step: &str) -> char {
    let table = text
        .split_once("\nstep ")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no summary table:\n{text}"));
    let line = table
        .lines()
        .find(|l| l.starts_with(step) && l[step.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("{step:?} is not in the summary:\n{text}"));
    line[step.len()..].trim_start().chars().next().unwrap()
}

/// Every step ran and verified, and the exit status agrees.
fn assert_verified(ok: bool, text: &str) {
    for step in STEPS {
        assert_eq!(mark(text, step), '✓', "{step}\n{text}");
    }
    assert!(ok, "{text}");
    assert!(text.contains("30 of 30 steps verified"), "{text}");
}

fn file(v: &Value) -> &Path {
    let p = Path::new(v.as_str().unwrap_or_else(|| panic!("not a path: {v}")));
    assert!(p.is_absolute() && p.exists(), "{} must exist", p.display());
    p
}

fn check_info(dir: &Path) -> Value {
    let info: Value =
        serde_json::from_slice(&std::fs::read(dir.join("quickstart.json")).unwrap()).unwrap();
    let root = file(&info["rootCaFile"]);
    assert!(root.ends_with("root-ca.cert.pem"));
    for service in ["hub", "dps", "gateway"] {
        assert!(
            info[service]["mqtt"]
                .as_str()
                .unwrap()
                .parse::<std::net::SocketAddr>()
                .is_ok(),
            "{service}: {info}"
        );
    }
    assert_eq!(info["hub"]["hostName"], "localhost");
    let service = info["hub"]["serviceConnectionString"].as_str().unwrap();
    assert!(
        service.starts_with("HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="),
        "{service}"
    );
    assert!(info["hub"]["https"].is_string() && info["dps"]["https"].is_string());
    assert_eq!(info["dps"]["idScope"], "0ne00QUICK1");
    file(&info["dps"]["certFile"]);
    file(&info["dps"]["keyFile"]);
    file(&info["gateway"]["certFile"]);
    for service in ["hub", "gateway"] {
        let cmd = info[service]["opensslCommand"].as_str().unwrap();
        assert!(
            cmd.starts_with("openssl s_client -connect ")
                && cmd.contains(&format!("-CAfile {}", root.display()))
                && cmd.ends_with("-showcerts"),
            "{cmd}"
        );
    }
    let gateway = format!(
        ";GatewayHostName={}",
        info["gateway"]["hostName"].as_str().unwrap()
    );
    let children = info["children"].as_array().unwrap();
    let ids: Vec<&str> = children
        .iter()
        .map(|c| c["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["child-x509", "child-sas"]);
    for c in children {
        let cs = c["connectionString"].as_str().unwrap();
        assert!(
            cs.starts_with("HostName=localhost;DeviceId=") && cs.ends_with(&gateway),
            "{cs}"
        );
        assert_eq!(c["parent"], "edge-gateway-01");
    }
    assert!(
        children[1]["connectionString"]
            .as_str()
            .unwrap()
            .contains(";SharedAccessKey=")
    );
    file(&children[0]["certFile"]);
    file(&children[0]["keyFile"]);
    info
}

#[test]
fn quickstart_runs_every_stage_and_reuses_its_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = quickstart(tmp.path(), &["--fresh"]);
    assert_verified(ok, &text);
    for expected in [
        "edge-gateway-01 assigned to hub localhost through DPS",
        "quickstart-module: identity from identityd, token signed by keyd",
        "child-x509: 10 messages acknowledged after fsync and read back",
        "20 sent, each acknowledged by the gateway; 20 at the hub as the children",
        "200 messages (100 per child) acknowledged by the gateway while the hub was down",
        "200 of 200 arrived",
        "in order",
        "child-x509 answered quickstartPing through the gateway: status 200",
        "child-sas: desired version",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    let info = check_info(tmp.path());
    assert_eq!(info["keepRunning"], false);
    let root = std::fs::read(tmp.path().join("certs/root-ca.cert.pem")).unwrap();

    let (ok, text) = quickstart(tmp.path(), &["--verbose"]);
    assert_verified(ok, &text);
    assert!(text.contains("reused"), "{text}");
    // Details under each step (--verbose).
    for child in ["child-x509", "child-sas"] {
        let line = format!("{child}: 10 acknowledged by the gateway, 10 at the hub as {child}");
        assert!(text.contains(&line), "{line:?} missing:\n{text}");
    }
    for line in [
        "server certificate CN=localhost issued by CN=iot-edge-device-ca-gateway",
        "received through the gateway, reported back, visible at the hub",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert_eq!(
        std::fs::read(tmp.path().join("certs/root-ca.cert.pem")).unwrap(),
        root
    );
    check_info(tmp.path());
}

#[test]
fn quickstart_fails_loudly_on_a_broken_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = quickstart(tmp.path(), &[]);
    assert_verified(ok, &text);
    // Swap in a key that does not belong to the root certificate.
    let certs = tmp.path().join("certs");
    std::fs::copy(
        certs.join("intermediate-ca.key.pem"),
        certs.join("root-ca.key.pem"),
    )
    .unwrap();
    let (ok, text) = quickstart(tmp.path(), &[]);
    assert!(!ok, "{text}");
    assert_eq!(mark(&text, "Root CA"), '✗', "{text}");
}

/// `openssl s_client` against `addr` trusting only `root`: the chain must verify.
fn s_client(addr: &str, root: &Path) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(root)
        .arg("-showcerts")
        .stdin(Stdio::null())
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "{addr}: {text}"
    );
    text
}

#[test]
fn keep_running_serves_until_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .arg("quickstart")
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["--fresh", "--keep-running"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut seen = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("never said the services are up:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Services are up. Press Ctrl-C to stop them.") {
            break;
        }
    }
    assert!(seen.contains("Connect real SDK clients"), "{seen}");
    let info = check_info(tmp.path());
    assert_eq!(info["keepRunning"], true);
    let root = file(&info["rootCaFile"]).to_owned();
    // The gateway presents its chain from the edge CA; the hub its own; both verify.
    let gateway = s_client(info["gateway"]["mqtt"].as_str().unwrap(), &root);
    assert!(
        gateway.contains("issuer=CN = iot-edge-device-ca-gateway")
            || gateway.contains("issuer=CN=iot-edge-device-ca-gateway"),
        "{gateway}"
    );
    s_client(info["hub"]["mqtt"].as_str().unwrap(), &root);

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut exit = None;
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            exit = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(exit) = exit else {
        let _ = child.kill();
        panic!("Ctrl-C did not stop the quickstart within 60 s");
    };
    let text = reader.join().unwrap();
    assert_verified(exit.success(), &text);
    // The services are gone: nothing listens on the gateway's port any more.
    assert!(
        std::net::TcpStream::connect(info["gateway"]["mqtt"].as_str().unwrap()).is_err(),
        "the gateway still listens after Ctrl-C"
    );
}

#[test]
fn azure_ports_refusal_names_the_fix() {
    // Hold the hub's Azure MQTT port (or find it taken already): the quickstart must refuse
    // before any step, saying what is wrong and what to do.
    let _held = std::net::TcpListener::bind("127.0.0.1:8883");
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = quickstart(tmp.path(), &["--azure-ports"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("cannot bind 127.0.0.1:8883 (hub MQTT)") && text.contains("--azure-ports"),
        "{text}"
    );
    assert!(!text.contains("✓"), "no step may run: {text}");
}

#[test]
fn a_crashed_hub_fails_the_run_naming_the_step_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let step = "Direct method to a child through the gateway";
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args(["quickstart", "--fresh", "--data-dir"])
        .arg(tmp.path())
        .env("FERROHUB_QUICKSTART_CRASH_HUB_BEFORE", step)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert_eq!(mark(&text, STEPS[21]), '✓', "steps before the crash pass");
    assert_eq!(mark(&text, step), '✗', "{text}");
    let failure = text
        .split_once(&format!("✗ {step}"))
        .map(|(_, rest)| rest.lines().take(4).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    assert!(
        failure.contains("the hub died: it was killed"),
        "the cause is named:\n{text}"
    );
}
