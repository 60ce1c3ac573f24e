//! The CLI's answers to newcomers' usual mistakes and its readable defaults, through the binary:
//! `hub events` as a block per event or JSON lines, a missing config naming the `init` command
//! that creates it, a privileged port refused with the fix, `config template` valid and applied,
//! and each cause of an error printed once.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod common;
mod kill9;

use std::path::Path;
use std::process::Command;

use common::{is_root, run};
use kill9::{ferrohub, init_hub};
use mqtt_codec::ConnectReturnCode::Accepted;
use mqtt_codec::{Packet, Publish, QoS};
use test_support::hub::Mqtt;
use test_support::net::free_addr;

/// The stderr of a command that must fail.
fn fails(args: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ferrohub {args:?} succeeded: {err}");
    err
}

fn event(topic: &str, id: u16, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        packet_id: Some(id),
        payload: payload.to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_events_prints_blocks_as_text_and_json_lines_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, https) = (free_addr(), free_addr());
    let config = init_hub(
        &dir.path().join("hub"),
        &mqtt.to_string(),
        &https.to_string(),
    );
    let log = dir.path().join("hub.log");
    let mut hub = kill9::start(&["hub", "--config", &config], mqtt, &log, 400);
    let token = kill9::create_device(&config, "dev1", &[]);
    let root = dir.path().join("hub/certs/root-ca.cert.pem");
    let mut c = Mqtt::tls_to(mqtt, &root, None).await;
    assert_eq!(c.connect("dev1", Some(token), true).await.1, Accepted);
    let topic = "devices/dev1/messages/events/alert=1&%24.mid=m1";
    c.send(&event(topic, 1, br#"{"t":1}"#)).await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(1)));
    c.send(&event(
        "devices/dev1/messages/events/",
        2,
        &[0x00, 0xff, 0x10],
    ))
    .await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(2)));

    let read = |extra: &[&str]| {
        let mut args = vec!["hub", "events", "--from-start", "--config", &config];
        args.extend_from_slice(extra);
        ferrohub(&args)
    };
    let text = read(&["--format", "text"]);
    let blocks: Vec<&str> = text.split("\n2").collect();
    assert_eq!(blocks.len(), 2, "one block per event:\n{text}");
    assert!(
        text.contains("  dev1  (offset ")
            && text.contains("  properties: alert=1\n")
            && text.contains("  system: ")
            && text.contains("messageId=m1")
            && text.contains("  body: {\"t\":1}\n")
            && text.contains("  body (hex, 3 bytes): 00ff10\n"),
        "{text}"
    );
    // --json, and the default when stdout is not a terminal: JSON lines, as before.
    for lines in [read(&["--json"]), read(&[])] {
        let events: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2, "{lines}");
        assert_eq!(events[0]["body"], "{\"t\":1}");
        assert_eq!(events[1]["bodyEncoding"], "base64");
    }
    let help = ferrohub(&["hub", "events", "--help"]);
    assert!(
        help.contains("--json") && help.contains("--json | jq"),
        "{help}"
    );
    hub.kill().unwrap();
    hub.wait().unwrap();
}

#[test]
fn a_missing_config_names_the_command_that_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let at = |rel: &str| dir.path().join(rel).to_string_lossy().into_owned();
    let (hub, dps, edge, agent) = (
        at("hub/hub.toml"),
        at("dps/dps.toml"),
        at("edge/edge.toml"),
        at("edge/agent.toml"),
    );
    let cases: [(&[&str], &str); 9] = [
        (&["hub", "--config", &hub], "hub init --dir"),
        (
            &["hub", "device", "list", "--config", &hub],
            "hub init --dir",
        ),
        (
            &["hub", "connection-string", "--config", &hub],
            "hub init --dir",
        ),
        (&["dps", "--config", &dps], "dps init --dir"),
        (&["dps", "id-scope", "--config", &dps], "dps init --dir"),
        (&["edge", "--config", &edge], "edge init --dir"),
        (&["edge", "list", "--config", &agent], "edge agent init"),
        (&["config", "apply", "-c", &at("config.toml")], "config mp"),
        (
            &["identity", "run", "--root", &at("trial")],
            "config apply --root",
        ),
    ];
    for (args, init) in cases {
        let err = fails(args);
        assert!(
            err.contains(" not found") && err.contains(&format!("create it with `ferrohub {init}")),
            "ferrohub {args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn a_config_apply_error_names_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::create_dir(&file).unwrap(); // exists, but cannot be read as a file
    let root = dir.path().join("trial").to_string_lossy().into_owned();
    let err = fails(&[
        "config",
        "apply",
        "-c",
        &file.to_string_lossy(),
        "--root",
        &root,
    ]);
    let cause = std::io::Error::from_raw_os_error(21).to_string(); // EISDIR
    assert_eq!(err.matches(&cause).count(), 1, "{err}");
}

#[test]
fn the_config_template_applies_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let template = ferrohub(&["config", "template"]);
    assert!(
        [
            "[provisioning]",
            "# [aziot_max_requests]",
            "# [cert_issuance.local_ca]",
            "# [edge_ca]",
            "# [[principal]]",
            "source = \"dps\""
        ]
        .iter()
        .all(|s| template.contains(s)),
        "{template}"
    );
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &template).unwrap();
    let root = dir.path().join("trial").to_string_lossy().into_owned();
    let applied = ferrohub(&[
        "config",
        "apply",
        "-c",
        &file.to_string_lossy(),
        "--root",
        &root,
    ]);
    assert!(applied.contains("wrote"), "{applied}");
}

/// A port below both 1024 and the unprivileged start on this machine that root can bind now.
fn privileged_port() -> Option<u16> {
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    (600..start.min(1024))
        .rev()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
}

/// `ferrohub ARGS` as uid/gid 65534 without capabilities; its stderr, once it failed.
fn as_nobody(args: &[&str]) -> String {
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["--inh-caps", "-all", "--bounding-set", "-all", "--"])
        .arg(env!("CARGO_BIN_EXE_ferrohub"))
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "ferrohub {args:?} as nobody: {err}");
    err
}

#[test]
fn a_privileged_port_refusal_names_root_or_setcap() {
    if !is_root() {
        println!("skipped: needs root to run the services as uid 65534 with setpriv");
        return;
    }
    let Some(port) = privileged_port() else {
        println!(
            "skipped: net.ipv4.ip_unprivileged_port_start lets anyone bind every port below 1024 \
             here (or none is free), so no bind can be refused"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let low = format!("127.0.0.1:{port}");
    let hub = init_hub(&dir.path().join("hub"), &low, &free_addr().to_string());
    let cs = ferrohub(&["hub", "connection-string", "--config", &hub]);
    let dps_dir = dir.path().join("dps").to_string_lossy().into_owned();
    let ca_dir = dir.path().join("hub/certs").to_string_lossy().into_owned();
    ferrohub(&[
        "dps",
        "init",
        "--dir",
        &dps_dir,
        "--hostname",
        "localhost",
        "--mqtt",
        &low,
        "--https",
        &free_addr().to_string(),
        "--link-hub",
        cs.trim(),
        "--ca-dir",
        &ca_dir,
    ]);
    let dps = format!("{dps_dir}/dps.toml");
    let edge = dir.path().join("edge.toml");
    std::fs::write(
        &edge,
        format!(
            "edge_id = \"gw\"\nhub_hostname = \"localhost\"\nhub_mqtt = \"127.0.0.1:1\"\n\
             hub_https = \"127.0.0.1:1\"\nhub_ca = \"ca.pem\"\nedge_hub_key = \"a2V5\"\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ndata_dir = \"data\"\nlisten = \"{low}\"\n"
        ),
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let edge = edge.to_string_lossy().into_owned();
    for args in [
        ["hub", "--config", &hub],
        ["dps", "--config", &dps],
        ["edge", "--config", &edge],
    ] {
        let err = as_nobody(&args);
        let fix = format!(
            "run as root or grant CAP_NET_BIND_SERVICE (setcap 'cap_net_bind_service=+ep' {})",
            env!("CARGO_BIN_EXE_ferrohub")
        );
        assert!(
            err.contains(&low) && err.contains(&fix),
            "ferrohub {args:?}: {err}"
        );
    }
}

/// The CONNACK code of a SAS connection of `dev1` with `token`.
async fn connect_code(mqtt: std::net::SocketAddr, root: &Path, token: &str) -> u8 {
    let mut c = Mqtt::tls_to(mqtt, root, None).await;
    c.connect("dev1", Some(token.to_owned()), true).await.1 as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_sas_is_switched_off_and_on_from_the_cli_and_stays_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, https) = (free_addr(), free_addr());
    let config = init_hub(
        &dir.path().join("hub"),
        &mqtt.to_string(),
        &https.to_string(),
    );
    let log = dir.path().join("hub.log");
    let start = || kill9::start(&["hub", "--config", &config], mqtt, &log, 400);
    let mut hub = start();
    let token = kill9::create_device(&config, "dev1", &[]);
    let root = dir.path().join("hub/certs/root-ca.cert.pem");
    let auth = |args: &[&str]| {
        let mut all = vec!["hub", "auth"];
        all.extend_from_slice(args);
        all.extend(["--config", &config]);
        ferrohub(&all)
    };
    assert_eq!(connect_code(mqtt, &root, &token).await, Accepted as u8);
    let off = auth(&["device-sas", "off"]);
    assert!(
        off.contains("device SAS: off") && off.contains("module SAS: on"),
        "{off}"
    );
    let not_authorized = 5;
    assert_eq!(connect_code(mqtt, &root, &token).await, not_authorized);
    hub.kill().unwrap();
    hub.wait().unwrap();
    hub = start();
    assert!(auth(&["show"]).contains("device SAS: off"));
    assert_eq!(
        connect_code(mqtt, &root, &token).await,
        not_authorized,
        "the switch survives a restart"
    );
    assert!(auth(&["device-sas", "on"]).contains("device SAS: on"));
    assert_eq!(connect_code(mqtt, &root, &token).await, Accepted as u8);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("sas_disabled"),
        "the refusal is logged: {log_text}"
    );
    hub.kill().unwrap();
    hub.wait().unwrap();
}
