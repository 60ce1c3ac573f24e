//! `kill -9` of the edge gateway under QoS 1 load: a real `ferrohub edge --config edge.toml`
//! process between a child and a real `ferrohub hub` process, both on loopback. The child sends
//! pipelined QoS 1 telemetry to the gateway, which is SIGKILLed while a window of messages is in
//! flight, several times, and restarted on the same files and port each time. Afterwards every
//! message the gateway acknowledged must reach the hub (read back with `ferrohub hub events`),
//! with its body, the acknowledged ones in order of first arrival. The gateway delivers at least
//! once: duplicates (a batch in flight upstream at a kill) are counted, not refused.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

mod kill9;

use std::collections::{BTreeSet, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use kill9::{ferrohub, publish, stored, window};
use mqtt_codec::ConnectReturnCode::Accepted;
use mqtt_codec::Packet;
use test_support::hub::Mqtt;
use test_support::net::free_addr;

/// Rounds of kill and restart (`EDGE_KILL_ROUNDS` overrides; `scripts/reliability` sets it).
fn kills() -> u32 {
    std::env::var("EDGE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}
const WINDOW: u32 = 32;

/// Starts `ferrohub ARGS` once it listens on `addr` (the gateway syncs its scope first).
fn start(args: &[&str], addr: SocketAddr, log: &Path) -> Child {
    kill9::start(args, addr, log, 800)
}

/// The child connected to the gateway (retried while the gateway syncs its device scope).
async fn child(gw: SocketAddr, root: &Path, token: &str) -> Mqtt {
    for _ in 0..400 {
        let mut c = Mqtt::tls_to(gw, root, None).await;
        if c.connect("child", Some(token.to_owned()), true).await.1 == Accepted {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the child could not connect to the gateway");
}

struct Load {
    acked: BTreeSet<u32>,
    sent: u32,
}

impl Load {
    /// Sends windows of QoS 1 messages to the gateway and collects their PUBACKs; in window
    /// `windows` the gateway is SIGKILLed after `acks_first` of its PUBACKs, with the rest of
    /// the window in flight.
    async fn run(
        &mut self,
        gw_addr: SocketAddr,
        root: &Path,
        token: &str,
        gw: &mut Child,
        (windows, acks_first): (u32, u32),
    ) {
        let mut c = child(gw_addr, root, token).await;
        for w in 0..=windows {
            let first = self.sent + 1;
            let ids = window(first, WINDOW);
            for seq in first..first + WINDOW {
                c.send(&publish("child", seq)).await;
            }
            self.sent += WINDOW;
            for n in 0..WINDOW {
                if w == windows && n == acks_first {
                    gw.kill().unwrap(); // SIGKILL, with the rest of this window in flight
                    gw.wait().unwrap();
                }
                match c.recv().await {
                    Some(Packet::PubAck(id)) => {
                        self.acked.insert(ids[&id]);
                    }
                    None => return,
                    other => panic!("expected PUBACK, got {other:?}"),
                }
            }
        }
        assert_eq!(c.recv().await, None);
    }
}

/// A hub process, an edge.toml for gateway `gw` in front of it, and child `child` with a token.
struct Rig {
    dir: tempfile::TempDir,
    hub: Child,
    hub_config: String,
    gw_addr: SocketAddr,
    root: std::path::PathBuf,
    token: String,
}

impl Rig {
    fn path(&self, p: &str) -> String {
        self.dir.path().join(p).to_string_lossy().into_owned()
    }

    fn setup() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
        let (mqtt, https, gw_addr) = (free_addr(), free_addr(), free_addr());
        let hub_config = kill9::init_hub(
            &dir.path().join("hub"),
            &mqtt.to_string(),
            &https.to_string(),
        );
        let gw_s = gw_addr.to_string();
        let hub = start(
            &["hub", "--config", &hub_config],
            mqtt,
            &dir.path().join("hub.log"),
        );
        ferrohub(&[
            "edge",
            "init",
            "--dir",
            &path("edge"),
            "--edge-id",
            "gw",
            "--hostname",
            "localhost",
            "--listen",
            &gw_s,
            "--config",
            &hub_config,
            "--ca-dir",
            &path("hub/certs"),
        ]);
        let token = kill9::create_device(&hub_config, "child", &["--parent", "gw"]);
        let root = dir.path().join("hub/certs/root-ca.cert.pem");
        Self {
            dir,
            hub,
            hub_config,
            gw_addr,
            root,
            token,
        }
    }

    /// Starts `ferrohub edge --config edge/edge.toml`.
    fn gateway(&self) -> Child {
        let config = self.path("edge/edge.toml");
        let log = self.dir.path().join("edge.log");
        start(&["edge", "--config", &config], self.gw_addr, &log)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_of_the_gateway_under_qos1_load_loses_no_acknowledged_message() {
    let mut rig = Rig::setup();
    let (gw_addr, root, token) = (rig.gw_addr, rig.root.clone(), rig.token.clone());
    let mut rng = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut load = Load {
        acked: BTreeSet::new(),
        sent: 0,
    };
    let kills = kills();
    for _ in 0..kills {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let windows = u32::try_from((rng >> 33) % 6).unwrap();
        let acks_first = u32::try_from((rng >> 40) % u64::from(WINDOW)).unwrap();
        let mut gw = rig.gateway();
        load.run(gw_addr, &root, &token, &mut gw, (windows, acks_first))
            .await;
    }
    // After the last restart the gateway serves and delivers as before.
    let mut gw = rig.gateway();
    let mut c = child(gw_addr, &root, &token).await;
    for seq in load.sent + 1..=load.sent + WINDOW {
        c.send(&publish("child", seq)).await;
        assert!(matches!(c.recv().await, Some(Packet::PubAck(_))));
        load.acked.insert(seq);
    }
    load.sent += WINDOW;
    drop(c);

    // Bounded wait for the backlog to reach the hub (not a timing assertion).
    let mut seqs = Vec::new();
    for _ in 0..360 {
        seqs = stored(&rig.hub_config);
        let have: HashSet<u32> = seqs.iter().copied().collect();
        if load.acked.iter().all(|s| have.contains(s)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gw.kill().unwrap();
    gw.wait().unwrap();
    rig.hub.kill().unwrap();
    rig.hub.wait().unwrap();
    report(&load, &seqs, kills);
}

/// Checks what arrived against what was acknowledged and prints the reliability row.
fn report(load: &Load, seqs: &[u32], kills: u32) {
    let have: HashSet<u32> = seqs.iter().copied().collect();
    let lost: Vec<u32> = load
        .acked
        .iter()
        .copied()
        .filter(|s| !have.contains(s))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged by the gateway but lost: {lost:?}"
    );
    let mut first = HashSet::new();
    let order: Vec<u32> = seqs
        .iter()
        .copied()
        .filter(|s| load.acked.contains(s) && first.insert(*s))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "acknowledged messages arrive in order"
    );
    let duplicates = seqs.len() - have.len();
    let unacked_stored = have.iter().filter(|s| !load.acked.contains(s)).count();
    eprintln!(
        "RELIABILITY|gateway process killed (SIGKILL) under QoS 1 load|{} QoS 1 messages \
         pipelined in windows of {WINDOW} from one child through `ferrohub edge` to a \
         `ferrohub hub` process, fsync on both|{kills} SIGKILLs of the gateway with a window in \
         flight, restart on the same files and port|{} acknowledged by the gateway, all read \
         back at the hub with their bodies, in order; {duplicates} duplicates (at least once); \
         {unacked_stored} unacknowledged also delivered (a device resends those)|0",
        load.sent,
        load.acked.len()
    );
}
