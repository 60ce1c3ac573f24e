//! `kill -9` of the hub under QoS 1 load: a real `ferrohub hub` process on loopback receives
//! pipelined QoS 1 telemetry; it is SIGKILLed while a window of messages is in flight, several
//! times, and restarted on the same files and ports each time. Afterwards the acknowledged set
//! is reconciled against what a consumer reads from the hub (`ferrohub hub events`): every
//! message that got a PUBACK must be there, with its body. Unacknowledged messages may or may
//! not be (a device resends them); that count is reported, not asserted.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

#[path = "../../hub/tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Mqtt;
use mqtt_codec::ConnectReturnCode::Accepted;
use mqtt_codec::{Packet, Publish, QoS};

const KILLS: u32 = 6;
const WINDOW: u32 = 16;
/// A SAS expiry far in the future (2100), so no clock is read here.
const EXPIRY: u64 = 4_102_444_800;

fn ferrohub(args: &[&str]) -> String {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_hub(config: &Path, mqtt: SocketAddr, log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .arg("hub")
        .arg("--config")
        .arg(config)
        .env("FERROHUB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    // Bounded wait for the listener (not a timing assertion).
    for _ in 0..400 {
        if std::net::TcpStream::connect(mqtt).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the hub did not start listening on {mqtt}");
}

fn body(seq: u32) -> Vec<u8> {
    format!(
        "{{\"seq\":{seq},\"pad\":\"{}\"}}",
        "x".repeat((seq % 50) as usize)
    )
    .into_bytes()
}

fn publish(seq: u32) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/dev1/messages/events/".into(),
        packet_id: Some(u16::try_from(seq % 60_000 + 1).unwrap()),
        payload: body(seq),
    })
}

struct Load {
    acked: BTreeSet<u32>,
    sent: u32,
}

impl Load {
    /// Sends windows of QoS 1 messages and collects their PUBACKs; after `windows` windows the
    /// hub is SIGKILLed with the last window in flight. Returns once the connection dropped.
    async fn run(
        &mut self,
        mqtt: SocketAddr,
        root: &Path,
        token: &str,
        hub: &mut Child,
        windows: u32,
    ) {
        let mut c = Mqtt::tls_to(mqtt, root, None).await;
        let (_, code) = c.connect("dev1", Some(token.to_owned()), true).await;
        assert_eq!(code, Accepted);
        for w in 0..=windows {
            let first = self.sent + 1;
            let ids: BTreeMap<u16, u32> = (first..first + WINDOW)
                .map(|seq| (u16::try_from(seq % 60_000 + 1).unwrap(), seq))
                .collect();
            for seq in first..first + WINDOW {
                c.send(&publish(seq)).await;
            }
            self.sent += WINDOW;
            if w == windows {
                hub.kill().unwrap(); // SIGKILL, with this window in flight
                hub.wait().unwrap();
            }
            for _ in 0..WINDOW {
                match c.recv().await {
                    Some(Packet::PubAck(id)) => {
                        self.acked.insert(ids[&id]);
                    }
                    None => return,
                    other => panic!("expected PUBACK, got {other:?}"),
                }
            }
        }
        // Every PUBACK of the last window arrived before the kill took effect: drain the close.
        assert_eq!(c.recv().await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_under_qos1_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let hub_dir = dir.path().join("hub");
    let (mqtt_port, https_port) = (free_port(), free_port());
    let mqtt: SocketAddr = format!("127.0.0.1:{mqtt_port}").parse().unwrap();
    let https = format!("127.0.0.1:{https_port}");
    let hub_dir_s = hub_dir.to_string_lossy().into_owned();
    ferrohub(&[
        "hub",
        "init",
        "--dir",
        &hub_dir_s,
        "--hostname",
        "localhost",
        "--mqtt",
        &mqtt.to_string(),
        "--https",
        &https,
    ]);
    let config = hub_dir.join("hub.toml");
    let config_s = config.to_string_lossy().into_owned();
    let root: PathBuf = hub_dir.join("certs/root-ca.cert.pem");
    let log = dir.path().join("hub.log");

    let mut hub = start_hub(&config, mqtt, &log);
    let created = ferrohub(&["hub", "device", "create", "dev1", "--config", &config_s]);
    let key = created
        .split("SharedAccessKey=")
        .nth(1)
        .and_then(|s| s.split([';', '\n', ' ']).next())
        .unwrap()
        .to_owned();
    let token = iot_auth::sas::generate_sas_token(
        "localhost/devices/dev1",
        &common::base64_decode(&key),
        None,
        EXPIRY,
    );

    let mut rng = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut load = Load {
        acked: BTreeSet::new(),
        sent: 0,
    };
    for _ in 0..KILLS {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let windows = u32::try_from((rng >> 33) % 6).unwrap();
        load.run(mqtt, &root, &token, &mut hub, windows).await;
        hub = start_hub(&config, mqtt, &log);
    }
    // One more clean window after the last restart: the hub serves as before.
    let before = load.acked.len();
    let mut c = Mqtt::tls_to(mqtt, &root, None).await;
    let (_, code) = c.connect("dev1", Some(token.clone()), true).await;
    assert_eq!(code, Accepted);
    for seq in load.sent + 1..=load.sent + WINDOW {
        c.send(&publish(seq)).await;
        assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
        load.acked.insert(seq);
    }
    load.sent += WINDOW;
    assert_eq!(load.acked.len(), before + WINDOW as usize);
    drop(c);

    // Reconcile with what a consumer reads.
    let events = ferrohub(&["hub", "events", "--config", &config_s, "--from-start"]);
    hub.kill().unwrap();
    hub.wait().unwrap();
    let mut stored: BTreeMap<u32, usize> = BTreeMap::new();
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = e["body"].as_str().unwrap();
        let b: serde_json::Value = serde_json::from_str(text).unwrap();
        let seq = u32::try_from(b["seq"].as_u64().unwrap()).unwrap();
        assert_eq!(text.as_bytes(), body(seq), "stored body of {seq}");
        *stored.entry(seq).or_default() += 1;
    }
    let lost: Vec<u32> = load
        .acked
        .iter()
        .copied()
        .filter(|s| !stored.contains_key(s))
        .collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(
        stored.values().all(|&n| n == 1),
        "a message was stored twice"
    );
    let unacked_stored = stored.keys().filter(|s| !load.acked.contains(s)).count();
    eprintln!(
        "RELIABILITY|hub process killed (SIGKILL) under QoS 1 load|{} QoS 1 messages pipelined \
         in windows of {WINDOW} from one device, fsync on|{KILLS} SIGKILLs with a window in \
         flight, restart on the same files and ports|{} acknowledged, all read back by a \
         consumer with their bodies; {unacked_stored} unacknowledged also stored (a device \
         resends those); served normally after the last restart|0",
        load.sent,
        load.acked.len()
    );
}
