//! What the `kill -9` tests share: running `ferrohub` commands and processes, a device's token
//! from the CLI's connection string, the numbered QoS 1 messages and reading them back at the hub.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mqtt_codec::{Packet, Publish, QoS};

/// A SAS expiry far in the future (2100), so no clock is read here.
pub const EXPIRY: u64 = 4_102_444_800;

/// Runs `ferrohub ARGS` to completion; its stdout.
pub fn ferrohub(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ferrohub {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `ferrohub hub init --dir DIR --hostname localhost --mqtt MQTT --https HTTPS`; the hub.toml path.
pub fn init_hub(dir: &Path, mqtt: &str, https: &str) -> String {
    let dir_s = dir.to_string_lossy();
    ferrohub(&[
        "hub",
        "init",
        "--dir",
        &dir_s,
        "--hostname",
        "localhost",
        "--mqtt",
        mqtt,
        "--https",
        https,
    ]);
    dir.join("hub.toml").to_string_lossy().into_owned()
}

/// Starts `ferrohub ARGS` with its log appended to `log`, once it listens on `addr` (checked
/// every 25 ms, at most `tries` times: a bounded wait, not a timing assertion).
pub fn start(args: &[&str], addr: SocketAddr, log: &Path, tries: u32) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args(args)
        .env("FERROHUB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    for _ in 0..tries {
        if std::net::TcpStream::connect(addr).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "ferrohub {args:?} did not listen on {addr}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// `ferrohub hub device create ID [EXTRA…]`, and a SAS token for it from the printed key.
pub fn create_device(hub_config: &str, id: &str, extra: &[&str]) -> String {
    let mut args = vec!["hub", "device", "create", id];
    args.extend_from_slice(extra);
    args.extend(["--config", hub_config]);
    let created = ferrohub(&args);
    let key = created
        .split("SharedAccessKey=")
        .nth(1)
        .and_then(|s| s.split([';', '\n', ' ']).next())
        .unwrap()
        .to_owned();
    iot_auth::sas::generate_sas_token(
        &format!("localhost/devices/{id}"),
        &iot_auth::sas::decode_key(&key).unwrap(),
        None,
        EXPIRY,
    )
}

/// The body of message `seq`: its number and padding of varying length.
pub fn body(seq: u32) -> Vec<u8> {
    format!(
        "{{\"seq\":{seq},\"pad\":\"{}\"}}",
        "x".repeat((seq % 64) as usize)
    )
    .into_bytes()
}

/// Message `seq` from `device` at QoS 1.
pub fn publish(device: &str, seq: u32) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: format!("devices/{device}/messages/events/"),
        packet_id: Some(packet_id(seq)),
        payload: body(seq),
    })
}

fn packet_id(seq: u32) -> u16 {
    u16::try_from(seq % 60_000 + 1).unwrap()
}

/// The packet ids of messages `first..first + n`, mapped back to their numbers.
pub fn window(first: u32, n: u32) -> BTreeMap<u16, u32> {
    (first..first + n)
        .map(|seq| (packet_id(seq), seq))
        .collect()
}

/// The numbers of the messages at the hub, in the order they were stored, each body checked.
pub fn stored(hub_config: &str) -> Vec<u32> {
    let events = ferrohub(&["hub", "events", "--config", hub_config, "--from-start"]);
    let mut seqs = Vec::new();
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = e["body"].as_str().unwrap();
        let b: serde_json::Value = serde_json::from_str(text).unwrap();
        let seq = u32::try_from(b["seq"].as_u64().unwrap()).unwrap();
        assert_eq!(text.as_bytes(), body(seq), "stored body of {seq}");
        seqs.push(seq);
    }
    seqs
}
