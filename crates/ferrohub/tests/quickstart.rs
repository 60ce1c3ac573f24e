//! `ferrohub quickstart` (PKI, hub, provisioning and identity stages): exits 0 only when every
//! step verified, and reuses its data.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::process::Command;

fn quickstart(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .arg("quickstart")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn quickstart_runs_and_reuses_its_pki() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, text) = quickstart(tmp.path(), &["--fresh"]);
    assert!(ok, "{text}");
    assert!(text.contains("21 of 21 steps verified"), "{text}");
    assert!(
        text.contains("edge-gateway-01 assigned to hub localhost through DPS"),
        "{text}"
    );
    assert!(
        text.contains("quickstart-module: identity from identityd, token signed by keyd"),
        "{text}"
    );
    assert!(
        text.contains("child-x509: 10 messages acknowledged after fsync and read back"),
        "{text}"
    );
    assert!(
        text.contains("TLS handshake with the gateway chain"),
        "{text}"
    );
    let root = std::fs::read(tmp.path().join("certs/root-ca.cert.pem")).unwrap();

    let (ok, text) = quickstart(tmp.path(), &["--verbose"]);
    assert!(ok, "{text}");
    assert!(text.contains("reused"), "{text}");
    assert_eq!(
        std::fs::read(tmp.path().join("certs/root-ca.cert.pem")).unwrap(),
        root
    );
}

#[test]
fn quickstart_fails_loudly_on_a_broken_pki() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(quickstart(tmp.path(), &[]).0);
    // Swap in a key that does not belong to the root certificate.
    let certs = tmp.path().join("certs");
    std::fs::copy(
        certs.join("intermediate-ca.key.pem"),
        certs.join("root-ca.key.pem"),
    )
    .unwrap();
    let (ok, text) = quickstart(tmp.path(), &[]);
    assert!(!ok, "{text}");
    assert!(text.contains('✗'), "{text}");
}
