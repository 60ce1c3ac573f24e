//! No key material and no SAS signature in any log line at any level. The full quickstart (PKI,
//! hub, DPS, identity service with keyd signing for a module, transparent gateway with an X.509
//! and a SAS child, hub outage) runs with `FERROHUB_LOG=trace`, once as text and once as JSON;
//! then every secret it created is looked for in everything it printed:
//!
//! - every private key PEM (body lines) under the data directory, and the words `PRIVATE KEY`;
//! - keyd's raw key files (as base64 and as hex);
//! - every symmetric key stored by the hub registry, DPS and the gateway's scope cache (the
//!   base64 of 32 bytes found in their SQLite files) and in `quickstart.json`;
//! - any `sig=` with a value, and any `SharedAccessKey=` with a value.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;

fn run_quickstart(dir: &Path, json: bool, fresh: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrohub"));
    cmd.arg("quickstart")
        .arg("--data-dir")
        .arg(dir)
        .arg("--verbose")
        .env("FERROHUB_LOG", "trace");
    if fresh {
        cmd.arg("--fresh");
    }
    if json {
        cmd.env("FERROHUB_LOG_FORMAT", "json");
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "quickstart failed:\n{text}");
    text
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.is_file() {
            // Regular files only: the identity service leaves its Unix sockets behind.
            out.push(path);
        }
    }
}

/// Runs of 43 base64 characters and `=`: the base64 of 32 bytes, the size of every symmetric
/// key ferrohub generates.
fn base64_keys(bytes: &[u8]) -> Vec<String> {
    let is_b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    let mut keys = Vec::new();
    let mut i = 0;
    while i + 44 <= bytes.len() {
        let run = &bytes[i..i + 44];
        let starts = i == 0 || !is_b64(&bytes[i - 1]);
        if starts && run[..43].iter().all(is_b64) && run[43] == b'=' {
            let key = String::from_utf8(run.to_vec()).unwrap();
            if base64::engine::general_purpose::STANDARD
                .decode(&key)
                .is_ok_and(|k| k.len() == 32)
            {
                keys.push(key);
            }
            i += 44;
        } else {
            i += 1;
        }
    }
    keys
}

/// Every secret the run left on disk, with where it came from.
fn secrets(dir: &Path) -> Vec<(String, String)> {
    let mut all = Vec::new();
    files(dir, &mut all);
    let mut secrets = Vec::new();
    for path in all {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("PRIVATE KEY-----") {
            for line in text
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 32)
            {
                secrets.push((format!("private key {name}"), line.to_owned()));
            }
        } else if path.extension().is_some_and(|e| e == "key") {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            secrets.push((format!("keyd key {name} (base64)"), b64));
            secrets.push((format!("keyd key {name} (hex)"), hex(&bytes)));
        } else if name.contains("sqlite") || name.ends_with(".json") || name.ends_with(".toml") {
            for key in base64_keys(&bytes) {
                secrets.push((format!("symmetric key in {name}"), key));
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    secrets
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `name=VALUE` occurrences whose value is more than a few characters of key-like text.
fn valued<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    log.match_indices(name)
        .filter_map(|(i, _)| {
            let rest = &log[i + name.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "%+/=".contains(c)))
                .unwrap_or(rest.len());
            (end >= 8).then(|| &log[i..i + name.len() + end])
        })
        .collect()
}

#[test]
fn no_key_or_signature_in_any_log_line_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("qs");
    let text_log = run_quickstart(&data, false, true);
    let json_log = run_quickstart(&data, true, false);
    let secrets = secrets(&data);

    // The scan must have something to find: keys of every kind were created.
    let kinds = |what: &str| secrets.iter().filter(|(w, _)| w.contains(what)).count();
    assert!(kinds("private key") >= 10, "{secrets:?}");
    assert!(kinds("keyd key") >= 2, "{secrets:?}");
    assert!(kinds("symmetric key in registry") >= 2, "{secrets:?}");
    assert!(
        kinds("symmetric key in quickstart.json") >= 2,
        "{secrets:?}"
    );
    // ...and the logs are real trace logs of every service.
    for log in [&text_log, &json_log] {
        assert!(log.contains("TRACE"), "trace logging is on");
        assert!(log.lines().count() > 500);
        assert!(log.contains("30 of 30 steps verified"));
    }

    for (format, log) in [("text", &text_log), ("json", &json_log)] {
        for (what, secret) in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "{format} log contains {what}"
            );
        }
        assert!(
            !log.contains("PRIVATE KEY"),
            "{format} log contains a PEM private key"
        );
        for name in [
            "sig=",
            "sig%3D",
            "SharedAccessKey=",
            "\"primaryKey\":\"",
            "primary_key",
        ] {
            let found = valued(log, name);
            assert!(found.is_empty(), "{format} log: {found:?}");
        }
    }
    // One row of docs/reliability.md (collected by scripts/reliability).
    eprintln!(
        "RELIABILITY|secrets in logs|full quickstart (hub, DPS, identity service, gateway, \
         outage) at FERROHUB_LOG=trace, text and JSON: {} log lines|{} secrets on disk looked \
         for (private keys, keyd keys, registry/DPS/gateway symmetric keys), plus any sig= or \
         SharedAccessKey= value|none found|0",
        text_log.lines().count() + json_log.lines().count(),
        secrets.len()
    );
}

#[test]
fn the_scanners_find_what_they_look_for() {
    let key = "WmaQ8wol7j06OqBQt3CFHsRHjZbo0BliHa0vD7piAe0=";
    assert_eq!(base64_keys(format!("x'{key}'y").as_bytes()), vec![key]);
    assert!(base64_keys(b"A".repeat(43).as_slice()).is_empty());
    let log =
        format!("sr=a%2Fb&sig=7%2FYBn2%2BOH0Ppft&se=1 ok sig= HostName=h;SharedAccessKey={key}");
    assert_eq!(valued(&log, "sig="), vec!["sig=7%2FYBn2%2BOH0Ppft"]);
    assert_eq!(valued(&log, "SharedAccessKey=").len(), 1);
}
