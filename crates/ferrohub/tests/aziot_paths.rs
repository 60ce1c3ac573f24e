//! `ferrohub config apply --aziot-paths` then `ferrohub identity run`, through the binary: an
//! agent's principal file dropped in aziot's identityd `config.d` is accepted, and the two calls
//! of aziot's agent guide (identity, then a keyd signature) answer on the aziot sockets. All
//! below a temporary `--root`; the real /etc and /run are never touched. The module identity
//! path with a hub is `crates/identity/tests/aziot.rs`.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

fn ferrohub(args: &[&str], root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrohub"));
    c.args(args).arg("--root").arg(root);
    c.env("FERROHUB_LOG", "warn");
    c
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl ARGS`: the body as JSON, or `None` while nothing answers.
fn curl(args: &[String]) -> Option<Value> {
    let out = Command::new("curl").args(args).output().unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn the_guides_curl_calls_answer_on_the_aziot_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("trial");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "hostname = \"box.example\"\n[provisioning]\nsource = \"manual\"\n\
         connection_string = \"HostName=hub.example;DeviceId=box;SharedAccessKey=c2VjcmV0LWtleS1mb3ItYm94\"\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let out = ferrohub(&["config", "apply", "-c", c, "--aziot-paths"], &root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("aziot paths on"), "{stdout}");
    let aziot_dropins = root.join("etc/aziot/identityd/config.d");
    assert!(aziot_dropins.is_dir(), "{stdout}");
    // The installer's registration: bare keys, aziot's directory, this test's uid.
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    std::fs::write(
        aziot_dropins.join("box-agent.toml"),
        format!("uid = {uid}\nname = \"box-agent\"\nidtype = [\"device\"]\n"),
    )
    .unwrap();

    let log = dir.path().join("identity.log");
    let mut run = ferrohub(&["identity", "run"], &root);
    run.stderr(std::fs::File::create(&log).unwrap());
    let _daemon = Running(run.spawn().unwrap());
    let sock = |d: &str| {
        root.join(format!("run/aziot/{d}.sock"))
            .display()
            .to_string()
    };
    let get_identity = [
        "--unix-socket".to_owned(),
        sock("identityd"),
        "http://identityd.sock/identities/identity?api-version=2020-09-01".to_owned(),
    ];
    let mut identity = None;
    for _ in 0..400 {
        identity = curl(&get_identity).filter(|v| v.get("spec").is_some());
        if identity.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let identity = identity.unwrap_or_else(|| panic!("identityd never answered: {}", log_text()));
    assert_eq!(identity["spec"]["deviceId"], "box", "{identity}");
    let handle = identity["spec"]["auth"]["keyHandle"].as_str().unwrap();

    let body = json!({"keyHandle": handle, "algorithm": "HMAC-SHA256",
        "parameters": {"message": "aHViLmV4YW1wbGUlMkZkZXZpY2VzJTJGYm94CjE4MDAwMDAwMDA="}});
    let signed = curl(&[
        "--unix-socket".to_owned(),
        sock("keyd"),
        "-X".to_owned(),
        "POST".to_owned(),
        "-H".to_owned(),
        "content-type: application/json".to_owned(),
        "--data-raw".to_owned(),
        body.to_string(),
        "http://keyd.sock/sign?api-version=2020-09-01".to_owned(),
    ])
    .unwrap_or_else(|| panic!("keyd did not answer: {}", log_text()));
    let signature = signed["signature"].as_str().unwrap_or_default();
    assert_eq!(signature.len(), 44, "a base64 HMAC-SHA256: {signed}");

    // A second identity service on the same root stops at once, naming the first one's pid.
    let second = ferrohub(&["identity", "run"], &root).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains(&format!("pid {}", _daemon.0.id())),
        "the holder's pid named: {err}"
    );
}
