//! `ferrohub certs` end to end: generated chains pass `openssl verify`, thumbprints equal
//! openssl's, `certs verify` reports the failing certificate, and bad input leaves nothing behind.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::{certs, certs_ok, hierarchy, listing, openssl, p};

#[test]
fn every_generated_chain_passes_openssl_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    hierarchy(d);
    certs_ok(d, &["device", "dev1"]);
    certs_ok(d, &["device", "dev1/mod1"]);
    certs_ok(
        d,
        &[
            "device",
            "dev-under-edge",
            "--issuer",
            "iot-edge-device-ca-gw",
        ],
    );
    certs_ok(
        d,
        &[
            "server",
            "localhost",
            "127.0.0.1",
            "--issuer",
            "iot-edge-device-ca-gw",
        ],
    );
    certs_ok(d, &["device", "rsa-dev", "--key-alg", "rsa2048"]);
    certs_ok(d, &["device", "p384-dev", "--key-alg", "p384"]);
    certs_ok(d, &["self-signed", "thumb-dev"]);
    certs_ok(
        d,
        &[
            "verification-cert",
            "--code",
            "ABCDEF0123",
            "--issuer",
            "root-ca",
        ],
    );

    let root = p(d, "root-ca.cert.pem");
    let inter = p(d, "intermediate-ca.cert.pem");
    let edge = p(d, "iot-edge-device-ca-gw.cert.pem");
    let both = d.join("untrusted.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&inter).unwrap() + &std::fs::read_to_string(&edge).unwrap(),
    )
    .unwrap();
    let both = both.to_string_lossy().into_owned();
    let cases: [(&str, Option<&str>, &str); 9] = [
        ("intermediate-ca.cert.pem", None, ""),
        ("iot-edge-device-ca-gw.cert.pem", Some(&inter), ""),
        ("iot-device-dev1.cert.pem", Some(&inter), "sslclient"),
        ("iot-module-dev1-mod1.cert.pem", Some(&inter), "sslclient"),
        (
            "iot-device-dev-under-edge.cert.pem",
            Some(&both),
            "sslclient",
        ),
        ("server-localhost.cert.pem", Some(&both), "sslserver"),
        ("iot-device-rsa-dev.cert.pem", Some(&inter), "sslclient"),
        ("iot-device-p384-dev.cert.pem", Some(&inter), "sslclient"),
        ("verification-ABCDEF0123.cert.pem", None, ""),
    ];
    for (leaf, untrusted, purpose) in cases {
        let leaf_path = p(d, leaf);
        let mut args = vec!["verify", "-x509_strict", "-CAfile", &root];
        if let Some(u) = untrusted {
            args.extend(["-untrusted", u]);
        }
        if !purpose.is_empty() {
            args.extend(["-purpose", purpose]);
        }
        args.push(&leaf_path);
        let (ok, text) = openssl(&args);
        assert!(ok && text.contains(": OK"), "{leaf}: {text}");
    }
    // The full-chain files hold leaf, issuers and root, in that order.
    let chain =
        std::fs::read_to_string(d.join("iot-device-dev-under-edge-full-chain.cert.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 4);
    // The self-signed device certificate verifies only against itself.
    let selfie = p(d, "self-signed-thumb-dev.cert.pem");
    assert!(!openssl(&["verify", "-CAfile", &root, &selfie]).0);
    assert!(openssl(&["verify", "-CAfile", &selfie, &selfie]).0);
    // Keys are private.
    for entry in listing(d) {
        if entry.to_string_lossy().ends_with(".key.pem") {
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", entry.display());
        }
    }
}

#[test]
fn inspect_thumbprints_equal_openssl_fingerprints() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    hierarchy(d);
    certs_ok(d, &["device", "dev1"]);
    certs_ok(d, &["self-signed", "thumb-dev", "--key-alg", "rsa2048"]);
    for file in [
        "root-ca.cert.pem",
        "iot-device-dev1.cert.pem",
        "self-signed-thumb-dev.cert.pem",
    ] {
        let path = p(d, file);
        let json = certs_ok(d, &["inspect", &path, "--json"]);
        let info: serde_json::Value = serde_json::from_str(&json).unwrap();
        for (alg, field) in [
            ("-sha1", "thumbprint_sha1"),
            ("-sha256", "thumbprint_sha256"),
        ] {
            let (ok, text) = openssl(&["x509", "-noout", "-fingerprint", alg, "-in", &path]);
            assert!(ok, "{text}");
            let theirs = text.trim().split_once('=').unwrap().1.replace(':', "");
            assert_eq!(info[0][field].as_str().unwrap(), theirs, "{file} {alg}");
        }
    }
    let text = certs_ok(
        d,
        &["inspect", &p(d, "iot-device-dev1-full-chain.cert.pem")],
    );
    assert!(
        text.contains("[2]") && text.contains("Subject:            CN=dev1"),
        "{text}"
    );
    assert!(text.contains("Extended key usage: clientAuth"), "{text}");
    let edge = certs_ok(
        d,
        &["inspect", &p(d, "iot-edge-device-ca-gw.cert.pem"), "--json"],
    );
    let edge: serde_json::Value = serde_json::from_str(&edge).unwrap();
    assert_eq!(edge[0]["is_ca"], true);
    assert_eq!(edge[0]["path_len"], 0);
    assert!(
        edge[0]["key_usage"]
            .as_array()
            .unwrap()
            .contains(&"keyCertSign".into())
    );
    let serial = edge[0]["serial"].as_str().unwrap();
    assert_eq!(serial.len(), 40, "20-byte serial: {serial}");
}

#[test]
fn verify_command_reports_the_failing_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    hierarchy(d);
    certs_ok(d, &["device", "dev1", "--days", "10"]);
    let root = p(d, "root-ca.cert.pem");
    let full = p(d, "iot-device-dev1-full-chain.cert.pem");
    let ok = certs_ok(
        d,
        &["verify", &full, "--trust", &root, "--purpose", "client"],
    );
    assert!(ok.contains(": OK"), "{ok}");

    let leaf = p(d, "iot-device-dev1.cert.pem");
    let out = certs(d, &["verify", &leaf, "--trust", &root]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAILED")
            && text.contains("certificate #0 (CN=dev1)")
            && text.contains("unable to find its issuer"),
        "{text}"
    );

    let inter = p(d, "intermediate-ca.cert.pem");
    let out = certs(
        d,
        &[
            "verify",
            &leaf,
            "--chain",
            &inter,
            "--trust",
            &root,
            "--at",
            "2099-01-01T00:00:00Z",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("expired"), "{text}");

    let out = certs(
        d,
        &[
            "verify",
            &leaf,
            "--chain",
            &inter,
            "--trust",
            &root,
            "--purpose",
            "server",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("does not allow serverAuth"));
}

#[test]
fn nothing_is_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    certs_ok(d, &["root-ca"]);
    let before = std::fs::read(d.join("root-ca.cert.pem")).unwrap();
    let out = certs(d, &["root-ca"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(d.join("root-ca.cert.pem")).unwrap(), before);
    certs_ok(d, &["root-ca", "--force"]);
    assert_ne!(std::fs::read(d.join("root-ca.cert.pem")).unwrap(), before);
}

/// Runs a failing command and checks: non-zero exit, one stderr line naming `needle`, and the
/// directory unchanged.
fn refused(d: &std::path::Path, args: &[&str], needles: &[&str]) {
    let before = listing(d);
    let out = certs(d, args);
    assert!(!out.status.success(), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    // clap adds a "For more information, try '--help'." hint after its one-line error.
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
        .collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: "),
        "{args:?}: expected one error line, got:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} should mention {n:?}");
    }
    assert_eq!(listing(d), before, "{args:?} left files behind");
}

#[test]
fn bad_input_gets_one_clear_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    hierarchy(d);
    let missing = p(d, "nope.pem");
    refused(d, &["inspect", &missing], &["cannot read", "nope.pem"]);
    let garbage = d.join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let garbage = garbage.to_string_lossy().into_owned();
    refused(
        d,
        &["inspect", &garbage],
        &["garbage.pem", "no CERTIFICATE found"],
    );
    let broken = d.join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let broken = broken.to_string_lossy().into_owned();
    refused(
        d,
        &["verify", &broken, "--trust", &p(d, "root-ca.cert.pem")],
        &["broken.pem", "not a valid X.509 certificate"],
    );

    // A key that belongs to another certificate.
    let other_key = p(d, "intermediate-ca.key.pem");
    refused(
        d,
        &[
            "device",
            "dev1",
            "--issuer",
            "root-ca",
            "--issuer-key",
            &other_key,
        ],
        &["does not belong to certificate", "intermediate-ca.key.pem"],
    );

    // An encrypted key.
    let enc = p(d, "encrypted.key.pem");
    let (ok, text) = openssl(&[
        "pkey",
        "-in",
        &p(d, "root-ca.key.pem"),
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        &enc,
    ]);
    assert!(ok, "{text}");
    refused(
        d,
        &[
            "device",
            "dev1",
            "--issuer",
            "root-ca",
            "--issuer-key",
            &enc,
        ],
        &["encrypted.key.pem", "encrypted"],
    );

    // Unknown algorithm, bad ids, non-CA issuer, CA below pathLen 0, missing issuer.
    refused(
        d,
        &["device", "dev1", "--key-alg", "dsa1024"],
        &["dsa1024", "p256"],
    );
    refused(d, &["device", "bad id"], &["invalid device id"]);
    certs_ok(d, &["device", "leafy"]);
    refused(
        d,
        &["device", "dev2", "--issuer", "iot-device-leafy"],
        &["is not a CA", "basicConstraints"],
    );
    refused(
        d,
        &["edge-ca", "nested", "--issuer", "iot-edge-device-ca-gw"],
        &["pathLen is 0"],
    );
    let empty = tempfile::tempdir().unwrap();
    refused(
        empty.path(),
        &["device", "dev1"],
        &["root-ca.cert.pem does not exist", "certs root-ca"],
    );
    refused(d, &["server", "bad host!"], &["invalid DNS name"]);
    refused(
        d,
        &[
            "verification-cert",
            "--code",
            "../../etc",
            "--issuer",
            "root-ca",
        ],
        &["verification code"],
    );
}
