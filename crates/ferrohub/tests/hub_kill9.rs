//! `kill -9` of the hub under QoS 1 load: a real `ferrohub hub` process on loopback receives
//! pipelined QoS 1 telemetry; it is SIGKILLed while a window of messages is in flight, several
//! times, and restarted on the same files and ports each time. Afterwards the acknowledged set
//! is reconciled against what a consumer reads from the hub (`ferrohub hub events`): every
//! message that got a PUBACK must be there, with its body. Unacknowledged messages may or may
//! not be (a device resends them); that count is reported, not asserted.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod kill9;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;

use kill9::{publish, window};
use mqtt_codec::ConnectReturnCode::Accepted;
use mqtt_codec::Packet;
use test_support::hub::Mqtt;
use test_support::net::free_addr;

const KILLS: u32 = 6;
const WINDOW: u32 = 16;

fn start_hub(config: &str, mqtt: SocketAddr, log: &Path) -> Child {
    kill9::start(&["hub", "--config", config], mqtt, log, 400)
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
            let ids = window(first, WINDOW);
            for seq in first..first + WINDOW {
                c.send(&publish("dev1", seq)).await;
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
    let mqtt = free_addr();
    let https = free_addr().to_string();
    let config_s = kill9::init_hub(&hub_dir, &mqtt.to_string(), &https);
    let root = hub_dir.join("certs/root-ca.cert.pem");
    let log = dir.path().join("hub.log");

    let mut hub = start_hub(&config_s, mqtt, &log);
    let token = kill9::create_device(&config_s, "dev1", &[]);

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
        hub = start_hub(&config_s, mqtt, &log);
    }
    // One more clean window after the last restart: the hub serves as before.
    let before = load.acked.len();
    let mut c = Mqtt::tls_to(mqtt, &root, None).await;
    let (_, code) = c.connect("dev1", Some(token.clone()), true).await;
    assert_eq!(code, Accepted);
    for seq in load.sent + 1..=load.sent + WINDOW {
        c.send(&publish("dev1", seq)).await;
        assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
        load.acked.insert(seq);
    }
    load.sent += WINDOW;
    assert_eq!(load.acked.len(), before + WINDOW as usize);
    drop(c);

    // Reconcile with what a consumer reads.
    let seqs = kill9::stored(&config_s);
    hub.kill().unwrap();
    hub.wait().unwrap();
    let mut stored: BTreeMap<u32, usize> = BTreeMap::new();
    for seq in seqs {
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
