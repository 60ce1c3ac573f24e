//! The guides in `docs/guides/` work as written: each test runs `scripts/run-guide` on one guide
//! (every ```sh block in order, in a fresh directory, with this build of ferrohub on PATH, real
//! servers on loopback, the Python blocks with the SDK venv) and checks the outputs a reader is
//! told to expect.
//!
//! `docs/seeds.md` (the articles' own command lists) runs the same way with `--isolated`: private
//! copies of /etc, /run and /var/lib and a loopback-only network, so its commands use the real
//! paths and ports; it needs root.
//!
//! Guides 001, 002 and 004 bind port 443 and ask the identity service for the device identity,
//! which needs root; they run only as root (CI runs as root). All guides need the Azure IoT SDK in
//! `.venv` (created by `scripts/test-interop`). A missing prerequisite skips the test with the
//! reason printed, except under CI (`CI` set), where it fails.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::is_root;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn sdk_available() -> bool {
    Command::new(repo().join(".venv/bin/python"))
        .args(["-c", "import azure.iot.device"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why the guide cannot run here, if it cannot.
fn missing(needs_root: bool) -> Option<String> {
    if needs_root && !is_root() {
        return Some("it needs root (port 443 and the identity service's device identity)".into());
    }
    if !sdk_available() {
        return Some(
            "it needs the Azure IoT SDK in .venv (scripts/test-interop creates it)".into(),
        );
    }
    if !repo()
        .join("tests/interop/node/node_modules/azure-iot-device")
        .is_dir()
    {
        return Some(
            "it needs the Node SDK in tests/interop/node (scripts/test-interop installs it)".into(),
        );
    }
    None
}

/// Runs `scripts/run-guide docs/guides/FILE`, asserts it succeeded and returns its output
/// (stdout and stderr), or `None` when skipped.
fn run_guide(file: &str, needs_root: bool) -> Option<String> {
    run_doc(&Path::new("docs/guides").join(file), &[], needs_root)
}

/// Runs `scripts/run-guide [OPTIONS] DOC` (DOC relative to the repository), as [`run_guide`].
fn run_doc(doc: &Path, options: &[&str], needs_root: bool) -> Option<String> {
    let file = doc.file_name().unwrap().to_string_lossy().into_owned();
    if let Some(why) = missing(needs_root) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{file} cannot run under CI: {why}"
        );
        eprintln!("skipped {file}: {why}");
        return None;
    }
    let repo = repo();
    let out = Command::new(repo.join("scripts/run-guide"))
        .args(options)
        .arg(repo.join(doc))
        .env("FERROHUB_BIN", env!("CARGO_BIN_EXE_ferrohub"))
        .env("RUN_GUIDE_PYTHON", repo.join(".venv/bin/python"))
        .current_dir(&repo)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{file} failed:\n{text}");
    assert!(
        text.contains(&format!("run-guide: {file} passed")),
        "{text}"
    );
    Some(text)
}

fn has(text: &str, needle: &str) {
    assert!(text.contains(needle), "expected {needle:?} in:\n{text}");
}

/// The hub events printed by `ferrohub hub events` (one JSON object per line).
fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| l.starts_with("{\"offset\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn prop<'a>(event: &'a Value, name: &str) -> &'a str {
    event["systemProperties"][name].as_str().unwrap_or_default()
}

#[test]
fn guide_000_transparent_gateway() {
    let Some(text) = run_guide("000-transparent-gateway.md", false) else {
        return;
    };
    // The gateway's chain: its certificate, the edge CA, the root; verified with the root only.
    has(&text, "certs/gateway-127.0.0.11-full-chain.cert.pem: OK");
    has(
        &text,
        " 0 s:CN = 127.0.0.11\n 1 s:CN = iot-edge-device-ca-gateway\n 2 s:CN = Gateway Guide Root CA\nVerify return code: 0 (ok)",
    );
    has(&text, "$edgeHub\tsas");
    // The child shares the gateway's device scope.
    let scopes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("deviceScope:"))
        .map(str::trim)
        .collect();
    assert!(scopes.len() >= 2, "{text}");
    assert!(
        scopes
            .iter()
            .all(|s| s.starts_with("ms-azure-iot-edge://gateway-"))
    );
    assert_eq!(scopes[scopes.len() - 1], scopes[scopes.len() - 2], "{text}");
    // The routes: sensor-01's readings went to ai_insights and only its output reached the hub.
    has(&text, "ai_insights forwarded 3 readings to output1");
    let ev = events(&text);
    assert_eq!(ev.len(), 3, "{text}");
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["deviceId"], "gateway");
        assert_eq!(e["moduleId"], "ai_insights");
        assert_eq!(prop(e, "outputName"), "output1");
        assert_eq!(e["properties"]["insight"], "checked");
        assert_eq!(e["body"], format!("{{\"reading\": {i}}}"));
    }
    has(&text, "events recorded as sensor-01's own: 0");
}

#[test]
fn guide_001_downstream_device() {
    let Some(text) = run_guide("001-downstream-device.md", true) else {
        return;
    };
    has(
        &text,
        " 2 s:CN = Downstream Guide Root CA\nVerify return code: 0 (ok)",
    );
    has(&text, "sent 10 messages through the gateway");
    has(
        &text,
        "received from the cloud: {\"led\": \"on\"} {'kind': 'command'}",
    );
    has(&text, "messages recorded as sensor-01's: 10");
    // Troubleshooting: a name not in the certificate, then fixed by reissuing it.
    let mismatch = text
        .find("Verify return code: 62 (hostname mismatch)")
        .unwrap_or_else(|| panic!("no hostname mismatch in:\n{text}"));
    assert!(
        text[mismatch..].contains("DNS:gateway.local")
            && text[mismatch..].contains("Verify return code: 0 (ok)"),
        "the reissued certificate does not verify for gateway.local:\n{text}"
    );
    has(&text, "Connection refused");
    has(
        &text,
        "Verify return code: 19 (self-signed certificate in certificate chain)",
    );
    has(&text, "CERTIFICATE_VERIFY_FAILED");
    has(&text, "thermostat: Credentials invalid");
    has(&text, "Refusing connection client_id=thermostat");
    // system check: failing before the service runs, passing after.
    has(
        &text,
        "✗ keyd answers on gateway-device/run/ferrohub/keyd.sock",
    );
    has(
        &text,
        "✓ hub 127.0.0.20:443 reachable over TLS with the trust bundle",
    );
    has(&text, "0 check(s) failed");
}

#[test]
fn guide_002_provisioning_x509() {
    let Some(text) = run_guide("002-provisioning-x509.md", true) else {
        return;
    };
    has(&text, "device:        edge-01 on hub 127.0.0.30");
    has(&text, "enrollmentGroup:  edge-fleet");
    has(
        &text,
        "deviceId:        edge-01\nstatus:          enabled\nauthentication:  selfSigned",
    );
    has(&text, "iotEdge:         true");
    has(&text, "$edgeAgent\tsas");
    has(&text, "0 check(s) failed");
    has(&text, "edge-01 connected to its hub with its certificate");
    let ev = events(&text);
    assert_eq!(ev.len(), 1, "{text}");
    assert_eq!(ev[0]["deviceId"], "edge-01");
    assert!(prop(&ev[0], "iothub-connection-auth-method").contains("x509Certificate"));
    // edge-02 came in through its individual enrollment, not the group.
    let record = &text[text.rfind("registrationId:   edge-02").unwrap()..];
    let record = &record[..record.find("lastUpdated").unwrap()];
    assert!(
        record.contains("status:           assigned")
            && record.contains("assignedHub:      127.0.0.30")
            && !record.contains("enrollmentGroup"),
        "{record}"
    );
}

#[test]
fn guide_003_x509_ca_proof_of_possession() {
    let Some(text) = run_guide("003-x509-ca-proof-of-possession.md", false) else {
        return;
    };
    has(
        &text,
        "certs/iot-device-smart-widget-001-full-chain.cert.pem: OK",
    );
    let unverified = text.find("verified: false").unwrap();
    let refused = text
        .find("refused: not signed by the company-x key")
        .unwrap();
    let verified = text.find("verified: true").unwrap();
    assert!(unverified < refused && refused < verified, "{text}");
    has(
        &text,
        "smart-widget-001 connected with its certificate chain",
    );
    let ev = events(&text);
    assert_eq!(ev.len(), 1, "{text}");
    assert_eq!(ev[0]["deviceId"], "smart-widget-001");
    assert!(prop(&ev[0], "iothub-connection-auth-method").contains("x509CA"));
    has(&text, "sas-sensor: Credentials invalid");
    has(&text, "smart-widget-001: connected");
    has(&text, "code=\"sas_disabled\"");
    has(&text, "smart-widget-001: Credentials invalid");
    has(
        &text,
        "device smart-widget-001 is disabled code=\"disabled\"",
    );
}

#[test]
fn guide_004_identity_service_agent() {
    let Some(text) = run_guide("004-identity-service-agent.md", true) else {
        return;
    };
    has(&text, "0 check(s) failed");
    has(&text, "mymodule\tsas");
    has(
        &text,
        "I am agent-host/mymodule on 127.0.0.50 (via 127.0.0.50), auth sas",
    );
    has(&text, "mymodule connected with a token signed by keyd");
    let ev = events(&text);
    assert_eq!(ev.len(), 1, "{text}");
    assert_eq!(ev[0]["deviceId"], "agent-host");
    assert_eq!(ev[0]["moduleId"], "mymodule");
    assert!(prop(&ev[0], "iothub-connection-auth-method").contains("\"scope\":\"module\""));
}

/// The five articles' command lists, in their order, with the real paths (`docs/seeds.md`).
#[test]
fn seeds_run_as_written() {
    let Some(text) = run_doc(Path::new("docs/seeds.md"), &["--isolated"], true) else {
        return;
    };
    // 000: the gateway from /etc/ferrohub/config.toml, listed without an agent, routes applied.
    has(&text, "edgeHub   running   Up ");
    has(
        &text,
        "routes: AIInsightsToIoTHub, sensorToAIInsightsInput1",
    );
    // 001: the root CA in the OS store, the Node sample through the gateway, s_client verified.
    has(&text, "1 added, 0 removed; done.");
    has(
        &text,
        "ai_insights connected through the OS certificate store",
    );
    has(&text, "sensor-01 sent 3 messages through the gateway");
    has(
        &text,
        " 0 s:CN = mygateway\n 1 s:CN = iot-edge-device-ca-mygateway\n 2 s:CN = Gateway Root CA\nVerify return code: 0 (ok)",
    );
    for i in 0..3 {
        has(
            &text,
            &format!("mygateway\tai_insights\toutput1\t{{\"reading\":{i}}}"),
        );
    }
    has(&text, "✓ the gateway certificate names hostname mygateway");
    has(&text, "edgeHub\nVerify return code: 0 (ok)");
    // 002: DPS X.509 with no CA at the hub; the hub accepts the device; reprovisioned.
    has(
        &text,
        "edge-01 connects to myhub.example:8883 over MQTT (CONNACK accepted)",
    );
    has(&text, "0 check(s) failed, 1 warning(s)");
    has(&text, "reprovisioned: device edge-01 on hub myhub.example");
    // 003: the two-intermediate chain accepted, SAS refused while switched off.
    has(
        &text,
        "smart-x-widget-1 connected with its certificate chain",
    );
    has(&text, "sas-widget refused: CredentialError");
    // 004: aziot's sockets, accounts and principal files as printed.
    has(
        &text,
        "identity: agent-host/mymodule on myhub.example via myhub.example (sas)",
    );
    has(&text, "mymodule connected with a token signed by keyd");
    has(&text, "myuserid sees agent-host sas");
}
