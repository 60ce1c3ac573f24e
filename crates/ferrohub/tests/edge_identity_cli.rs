//! `ferrohub edge -c FILE` through the binary: a file naming `edge_id` is served as an edge.toml,
//! anything else as the device super-config (identity service mode), whose problems name the fix.
//! The identity mode end to end (daemons, hub, renewal) is `crates/edge/tests/identity.rs`.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::process::{Command, Output};

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .arg("edge")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn identity_flags_are_refused_with_an_edge_toml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, "edge_id = \"gw\"\n").unwrap();
    let out = edge(&["-c", file.to_str().unwrap(), "--ip", "10.0.0.1"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("is an edge.toml") && err.contains("super-config"),
        "{err}"
    );
    // Without identity flags it is read as an edge.toml (and this one is incomplete).
    let out = edge(&["-c", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing field"), "{}", stderr(&out));
}

#[test]
fn a_super_config_needs_the_applied_identity_service() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "hostname = \"gw.example\"\n[provisioning]\nsource = \"manual\"\n\
         connection_string = \"HostName=hub.example;DeviceId=gw;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==\"\n",
    )
    .unwrap();
    let root = dir.path().join("trial");
    let args = [
        "-c",
        file.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
    ];
    let out = edge(&[&args[..], &["--listen", "127.0.0.1:0"]].concat());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("identity service mode"), "{err}");
    assert!(err.contains("ferrohub config apply"), "{err}");

    // Applied but not running: the error says which socket and what to start.
    let apply = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args(["config", "apply", "-c", file.to_str().unwrap(), "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(apply.status.success(), "{}", stderr(&apply));
    let out = edge(&[&args[..], &["--listen", "127.0.0.1:0"]].concat());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("identityd.sock") && err.contains("is the daemon running"),
        "{err}"
    );
}
