//! The gateway's upstream link under faults, through a TCP proxy between gateway and hub that
//! can refuse connections, present a certificate the gateway does not trust, black-hole an
//! established link (accept, never forward, never answer) and flap (cut every connection after a
//! while). Throughout, a child keeps getting PUBACKs from the gateway (after its fsync); the
//! stalled session is detected by its keep-alive and torn down; the gateway's memory stays
//! bounded while it holds a backlog far larger than its forwarding window; and once the link is
//! healthy again every acknowledged message reaches the hub, in order.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use test_support::gateway as support;
use test_support::hub as common;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Mqtt, TestHub};
use mqtt_codec::Packet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Forward to the hub.
    Forward,
    /// Nothing listens: connection refused; open connections are cut.
    Refuse,
    /// New connections are accepted and never answered; open ones stop forwarding both ways.
    BlackHole,
    /// Forward new connections to a TLS server whose certificate the gateway does not trust.
    BadTls,
    /// Forward, cutting every connection after this long.
    Flap(Duration),
}

struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(hub: SocketAddr, untrusted: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Forward);
        let accepted = Arc::new(AtomicU64::new(0));
        let targets = (hub, untrusted);
        tokio::spawn(listen(Some(listener), addr, rx, targets, accepted.clone()));
        Self {
            addr,
            mode,
            accepted,
        }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn listen(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    mut rx: watch::Receiver<Mode>,
    targets: (SocketAddr, SocketAddr),
    accepted: Arc<AtomicU64>,
) {
    loop {
        if *rx.borrow_and_update() == Mode::Refuse {
            drop(listener.take());
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let Some(l) = &listener else {
            listener = Some(bind_again(addr).await);
            continue;
        };
        tokio::select! {
            got = l.accept() => if let Ok((tcp, _)) = got {
                accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(tcp, rx.clone(), targets));
            },
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..500 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cannot listen on {addr} again");
}

async fn connection(
    mut client: TcpStream,
    mut rx: watch::Receiver<Mode>,
    (hub, untrusted): (SocketAddr, SocketAddr),
) {
    let mode = *rx.borrow_and_update();
    let target = match mode {
        Mode::Refuse => return,
        Mode::BlackHole => return hold(vec![client], rx).await,
        Mode::BadTls => untrusted,
        Mode::Forward | Mode::Flap(_) => hub,
    };
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let cut = match mode {
        Mode::Flap(after) => after,
        _ => Duration::from_secs(24 * 3600),
    };
    let changed = async {
        loop {
            if rx.changed().await.is_err() {
                return Mode::Refuse;
            }
            let now = *rx.borrow_and_update();
            if now != mode {
                return now;
            }
        }
    };
    let next = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => None,
        () = tokio::time::sleep(cut) => None,
        now = changed => Some(now),
    };
    if next == Some(Mode::BlackHole) {
        hold(vec![client, upstream], rx).await;
    }
}

/// Keeps the sockets open without reading or writing until the black hole ends.
async fn hold(sockets: Vec<TcpStream>, mut rx: watch::Receiver<Mode>) {
    while *rx.borrow_and_update() == Mode::BlackHole {
        if rx.changed().await.is_err() {
            break;
        }
    }
    drop(sockets);
}

/// A TLS server with a certificate from a CA nobody here trusts; counts handshakes attempted.
async fn untrusted_tls_server() -> (SocketAddr, Arc<AtomicU64>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (_root, cert, key) = common::server_pki(dir.path());
    let tls = ferrohub_runtime::tls::device_server_config(&cert, &key, &[]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tried = Arc::new(AtomicU64::new(0));
    let count = tried.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::Relaxed);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (addr, tried, dir)
}

/// Body of message `seq`: its number, padded to `BODY` bytes.
const BODY: usize = 2048;

fn body(seq: u64) -> Vec<u8> {
    let mut b = format!("{seq:010}").into_bytes();
    b.resize(BODY, b'.');
    b
}

/// Sends `seqs` as the child at QoS 1, 100 in flight; every one must be acknowledged.
async fn send(child: &mut Mqtt, seqs: Range<u64>) {
    let mut next = seqs.start;
    while next < seqs.end {
        let window = next..(next + 100).min(seqs.end);
        for seq in window.clone() {
            child
                .send(&common::publish(
                    "devices/child/messages/events/",
                    u16::try_from(seq % 60_000 + 1).unwrap(),
                    &body(seq),
                ))
                .await;
        }
        for seq in window.clone() {
            let want = u16::try_from(seq % 60_000 + 1).unwrap();
            assert_eq!(
                child.recv().await,
                Some(Packet::PubAck(want)),
                "the gateway acknowledges {seq}"
            );
        }
        next = window.end;
    }
}

/// The child's messages stored at the hub, read incrementally.
struct Arrivals {
    offset: u64,
    seqs: Vec<u64>,
}

impl Arrivals {
    fn poll(&mut self, hub: &hub::Hub) {
        loop {
            let records = hub.events.read(self.offset, 2000, 16 << 20).unwrap();
            let Some(last) = records.last() else { return };
            self.offset = last.offset + 1;
            for r in &records {
                let e: hub::events::EventRecord = serde_json::from_slice(&r.payload).unwrap();
                if e.device_id == "child" {
                    self.seqs.push(
                        e.body_bytes()[..10]
                            .iter()
                            .fold(0, |n, d| n * 10 + u64::from(d - b'0')),
                    );
                }
            }
        }
    }

    /// Distinct messages, in arrival order (a batch cut off in flight may arrive twice).
    fn unique(&self) -> Vec<u64> {
        let mut seen = std::collections::HashSet::new();
        self.seqs
            .iter()
            .copied()
            .filter(|s| seen.insert(*s))
            .collect()
    }

    /// Waits (at most two minutes) until `n` distinct messages have arrived.
    async fn wait_for(&mut self, hub: &hub::Hub, n: usize) {
        for _ in 0..1200 {
            self.poll(hub);
            if self.unique().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} of {n} messages arrived", self.unique().len());
    }
}

/// Waits (at most two minutes) for `what`.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The process's resident set (KiB), from /proc/self/status.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Rig {
    hub: TestHub,
    proxy: Proxy,
    gw: support::Gw,
    child: Mqtt,
    arrivals: Arrivals,
    untrusted_tried: Arc<AtomicU64>,
    _untrusted_dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Self {
        let hub = TestHub::start().await;
        let gw_device = support::edge_device(&hub).await;
        support::child(&hub, &gw_device, "child").await;
        let (untrusted, untrusted_tried, dir) = untrusted_tls_server().await;
        let proxy = Proxy::start(hub.mqtt, untrusted).await;
        let proxy_addr = proxy.addr;
        let gw = support::start_with(&hub, &[], |c| c.hub_mqtt = proxy_addr.to_string()).await;
        // Seconds instead of the production 10 s connect timeout and 30 s keep-alive.
        gw.gateway
            .relay
            .set_timing(Duration::from_secs(1), Duration::from_millis(500));
        let child = gw.connect("child").await;
        Self {
            hub,
            proxy,
            gw,
            child,
            arrivals: Arrivals {
                offset: 0,
                seqs: Vec::new(),
            },
            untrusted_tried,
            _untrusted_dir: dir,
        }
    }

    fn failures(&self) -> u64 {
        self.gw
            .gateway
            .relay
            .stats
            .connect_failures
            .load(Ordering::Relaxed)
    }

    fn connects(&self) -> u64 {
        self.gw.gateway.relay.stats.connects.load(Ordering::Relaxed)
    }
}

/// What the run measured, for the reliability table.
#[derive(Default)]
struct Report {
    acknowledged: u64,
    failures: u64,
    proxied: u64,
    untrusted: u64,
    rss_growth_kib: u64,
    backlog_kib: u64,
    flap_connects: u64,
    duplicates: usize,
}

#[tokio::test]
async fn acknowledged_messages_survive_refused_untrusted_black_holed_and_flapping_links() {
    let mut r = Rig::start().await;
    let mut report = Report::default();
    // Healthy link.
    send(&mut r.child, 0..50).await;
    r.arrivals.wait_for(&r.hub.hub, 50).await;

    // Refused: nothing listens where the hub was; the gateway keeps acknowledging.
    r.proxy.set(Mode::Refuse);
    let before = r.failures();
    send(&mut r.child, 50..250).await;
    until("refused connection attempts", || r.failures() >= before + 2).await;

    // A certificate the gateway does not trust: every attempt fails its TLS handshake.
    r.proxy.set(Mode::BadTls);
    let (before, tried) = (r.failures(), r.untrusted_tried.load(Ordering::Relaxed));
    send(&mut r.child, 250..450).await;
    until("TLS failures", || {
        r.failures() >= before + 2 && r.untrusted_tried.load(Ordering::Relaxed) >= tried + 2
    })
    .await;
    r.arrivals.poll(&r.hub.hub);
    assert_eq!(
        r.arrivals.unique().len(),
        50,
        "nothing passed an untrusted hub"
    );

    // Healthy again: the backlog drains.
    r.proxy.set(Mode::Forward);
    r.arrivals.wait_for(&r.hub.hub, 450).await;

    black_hole(&mut r, &mut report).await;
    flap(&mut r, &mut report).await;

    // Healthy: everything acknowledged arrives, in order.
    r.proxy.set(Mode::Forward);
    let total = 500 + BLACK_HOLE + FLAP;
    r.arrivals.wait_for(&r.hub.hub, total as usize).await;
    let unique = r.arrivals.unique();
    let first_wrong = unique.iter().zip(0..total).position(|(a, b)| *a != b);
    assert!(
        unique.len() as u64 == total && first_wrong.is_none(),
        "every message, in order: {} distinct of {total}, first out of place at {first_wrong:?}: {:?}",
        unique.len(),
        first_wrong.map(|i| &unique[i.saturating_sub(3)..(i + 5).min(unique.len())])
    );
    report.acknowledged = total;
    report.failures = r.failures();
    report.proxied = r.proxy.accepted();
    report.untrusted = r.untrusted_tried.load(Ordering::Relaxed);
    report.duplicates = r.arrivals.seqs.len() - unique.len();
    print_row(&report);
    let _ = r.gw.stop.send(true);
}

/// Messages sent while the established link is black-holed (2 KiB each: a backlog several times
/// the gateway's forwarding window).
const BLACK_HOLE: u64 = 20_000;
/// Messages sent while the link flaps.
const FLAP: u64 = 2_000;

/// The established session stalls: its keep-alive gives it up (new attempts then time out in the
/// black hole), the child keeps getting PUBACKs, and memory does not follow the backlog.
async fn black_hole(r: &mut Rig, report: &mut Report) {
    // An established session that is busy: it has just delivered.
    send(&mut r.child, 450..500).await;
    r.arrivals.wait_for(&r.hub.hub, 500).await;
    let rss_before = rss_kib();
    r.proxy.set(Mode::BlackHole);
    let before = r.failures();
    send(&mut r.child, 500..500 + BLACK_HOLE).await;
    // Only a session that was torn down makes new attempts (each lost in the black hole).
    until("the stalled session to be given up and retried", || {
        r.failures() >= before + 2
    })
    .await;
    r.arrivals.poll(&r.hub.hub);
    assert!(r.arrivals.unique().len() < 500 + BLACK_HOLE as usize);
    let rss_after = rss_kib();
    report.rss_growth_kib = rss_after.saturating_sub(rss_before);
    report.backlog_kib = BLACK_HOLE * BODY as u64 / 1024;
    eprintln!(
        "black hole: RSS {rss_before} KiB -> {rss_after} KiB with a {} KiB backlog held",
        report.backlog_kib
    );
    assert!(
        report.rss_growth_kib < report.backlog_kib / 2,
        "memory grew by {} KiB while {} KiB were held: the backlog must stay on disk",
        report.rss_growth_kib,
        report.backlog_kib
    );
}

/// The link is cut every 400 ms: sessions reconnect (with back-off) and deliver in between.
async fn flap(r: &mut Rig, report: &mut Report) {
    r.proxy.set(Mode::Flap(Duration::from_millis(400)));
    let connects = r.connects();
    let start = 500 + BLACK_HOLE;
    send(&mut r.child, start..start + FLAP).await;
    // Progress while flapping: the black-holed backlog starts arriving over short-lived links.
    let arrived = r.arrivals.unique().len();
    let hub = r.hub.hub.clone();
    let mut progress = 0;
    until("deliveries over the flapping link", || {
        r.arrivals.poll(&hub);
        progress = r.arrivals.unique().len() - arrived;
        progress >= 1000 && r.connects() >= connects + 3
    })
    .await;
    report.flap_connects = r.connects() - connects;
}

fn print_row(r: &Report) {
    println!(
        "RELIABILITY|gateway upstream faults (refused, untrusted TLS, black hole, flapping)|{} QoS 1 messages of {} B from one child through a TCP proxy between gateway and hub|connection refused; a hub certificate from an untrusted CA; established link black-holed with a {} KiB backlog; link cut every 400 ms|every message acknowledged by the gateway; stalled session given up by keep-alive; {} failed connection attempts, {} proxied connections, {} reconnects while flapping; RSS +{} KiB while holding the backlog; all {} arrived in order ({} duplicates)|0",
        r.acknowledged,
        BODY,
        r.backlog_kib,
        r.failures,
        r.proxied,
        r.flap_connects,
        r.rss_growth_kib,
        r.acknowledged,
        r.duplicates
    );
}
