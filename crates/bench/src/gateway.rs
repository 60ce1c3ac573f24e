//! `ferrohub bench gateway`: QoS 1 telemetry from N children through an edge gateway to a hub, and
//! the backlog drain after a hub outage, side by side with mosquitto bridging to mosquitto.
//!
//! ```text
//! ferrohub:  children ──MQTT/TLS, SAS──► edge::Gateway (fsync, PUBACK) ──on their behalf──► hub (fsync)
//! mosquitto: children ──MQTT/TLS──► mosquitto "edge" ──bridge, TLS, QoS 1──► mosquitto "hub" ──► subscriber
//! ```
//!
//! A message has arrived when it is in the hub's durable events log (ferrohub) or when the QoS 1
//! subscriber with a persistent session on the hub broker has it (mosquitto). Every body starts with
//! the message's sequence number, so each (child, sequence) is checked off: loss and duplicates are
//! counted, never inferred from totals. Both chains run the same children, payloads, windows and
//! phases, one after the other in the same process.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use mqtt_codec::Packet;
use serde::Serialize;

use crate::clock;
use device_client::DeviceConn;

mod ferrohub;
mod mosquitto;

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Downstream devices, each with its own TLS connection to the gateway.
    #[arg(long, default_value_t = 20)]
    children: usize,
    /// Messages per child in the end-to-end phase.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Body bytes (at least 10: the sequence number).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Unacknowledged publishes per child.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Messages (all children together) published while the hub is down; 0 skips the outage.
    #[arg(long, default_value_t = 10_000)]
    outage_messages: usize,
    /// The peer run side by side: mosquitto bridging to mosquitto, or none.
    #[arg(long, value_enum, default_value_t = PeerKind::Mosquitto)]
    peer: PeerKind,
    /// The mosquitto binary.
    #[arg(long, default_value = "mosquitto")]
    mosquitto: std::path::PathBuf,
    /// Seconds each phase may take before it is reported as failed.
    #[arg(long, default_value_t = 120)]
    phase_timeout: u64,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    Mosquitto,
    None,
}

/// What every chain runs.
pub struct Plan {
    pub children: usize,
    pub messages: usize,
    /// Messages per child during the outage.
    pub outage: Vec<usize>,
    pub payload: usize,
    pub inflight: usize,
    pub timeout: Duration,
}

impl Plan {
    fn outage_total(&self) -> u64 {
        self.outage.iter().sum::<usize>() as u64
    }
}

pub const HOST: &str = "localhost";
/// The body of the warm-up message each child sends before the measured phases.
const PROBE: &[u8] = b"probe";

pub fn child_id(i: usize) -> String {
    format!("child-{i:04}")
}

pub fn child_index(id: &str) -> Option<usize> {
    id.strip_prefix("child-")?.parse().ok()
}

fn topic(i: usize) -> String {
    format!("devices/{}/messages/events/", child_id(i))
}

/// `seq` as ten digits, then `x` up to `payload` bytes.
fn body(seq: usize, payload: usize) -> Vec<u8> {
    let mut b = format!("{seq:010}").into_bytes();
    b.resize(payload.max(10), b'x');
    b
}

/// Which (child, sequence) pairs have arrived at the hub, and when.
pub struct Tracker {
    seen: Vec<Vec<bool>>,
    probes: Vec<bool>,
    unique: u64,
    duplicates: u64,
    unexpected: u64,
    /// First and last new arrival since [`Tracker::begin_phase`].
    first: Option<Instant>,
    last: Option<Instant>,
}

pub type Arrivals = Arc<Mutex<Tracker>>;

pub fn lock(a: &Arrivals) -> MutexGuard<'_, Tracker> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tracker {
    fn new(plan: &Plan) -> Self {
        Self {
            seen: (0..plan.children)
                .map(|i| vec![false; plan.messages + plan.outage[i]])
                .collect(),
            probes: vec![false; plan.children],
            unique: 0,
            duplicates: 0,
            unexpected: 0,
            first: None,
            last: None,
        }
    }

    /// One message from `child` (None: not one of ours) arrived at `at`.
    pub fn record(&mut self, child: Option<usize>, body: &[u8], at: Instant) {
        let Some(i) = child.filter(|i| *i < self.seen.len()) else {
            self.unexpected += 1;
            return;
        };
        if body == PROBE {
            self.probes[i] = true;
            return;
        }
        let seq = body
            .get(..10)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse::<usize>().ok());
        match seq.and_then(|s| self.seen[i].get_mut(s)) {
            None => self.unexpected += 1,
            Some(true) => self.duplicates += 1,
            Some(slot) => {
                *slot = true;
                self.unique += 1;
                self.first.get_or_insert(at);
                self.last = Some(at);
            }
        }
    }

    fn begin_phase(&mut self) {
        self.first = None;
        self.last = None;
    }
}

/// One side of the comparison: a gateway (or edge broker) in front of a hub (or hub broker), with
/// something feeding arrivals at the hub into the shared [`Tracker`].
pub trait Chain {
    /// Where children connect (MQTT over TLS, server name `localhost`).
    fn edge(&self) -> SocketAddr;
    fn roots(&self) -> Arc<rustls::RootCertStore>;
    /// The MQTT password child `i` presents.
    fn password(&self, i: usize) -> String;
    /// The hub goes away (gracefully); the edge stays.
    async fn stop_upstream(&mut self) -> Result<()>;
    /// The hub comes back with its stored state.
    async fn start_upstream(&mut self) -> Result<()>;
    /// Stops everything; returns details worth reporting.
    async fn finish(self) -> Result<serde_json::Value>;
}

#[derive(Debug, Default, Serialize)]
pub struct PhaseResult {
    pub sent: u64,
    /// PUBACKs the children received (from the gateway / edge broker).
    pub acknowledged: u64,
    /// Distinct (child, sequence) pairs that reached the hub.
    pub arrived: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    /// All messages arrived within the phase timeout.
    pub complete: bool,
    /// First publish → last arrival (end to end), or hub restart → last arrival (outage).
    pub seconds: f64,
    pub msgs_per_sec: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct OutageResult {
    #[serde(flatten)]
    pub delivery: PhaseResult,
    /// Time the children needed to get every outage message acknowledged by the edge.
    pub ingest_seconds: f64,
    pub ingest_msgs_per_sec: f64,
    /// First → last arrival after the restart: the backlog drain itself.
    pub drain_seconds: f64,
    pub drain_msgs_per_sec: f64,
}

#[derive(Debug, Serialize)]
pub struct ChainResult {
    pub end_to_end: PhaseResult,
    pub outage: Option<OutageResult>,
    pub details: serde_json::Value,
}

impl ChainResult {
    fn lost(&self) -> u64 {
        self.end_to_end.lost + self.outage.as_ref().map_or(0, |o| o.delivery.lost)
    }

    fn complete(&self) -> bool {
        self.end_to_end.complete && self.outage.as_ref().is_none_or(|o| o.delivery.complete)
    }
}

pub async fn run(args: GatewayArgs) -> Result<bool> {
    if args.children == 0 || args.messages == 0 || args.inflight == 0 {
        bail!("--children, --messages and --inflight must be at least 1");
    }
    let plan = Plan {
        children: args.children,
        messages: args.messages,
        outage: (0..args.children)
            .map(|i| {
                args.outage_messages / args.children
                    + usize::from(i < args.outage_messages % args.children)
            })
            .collect(),
        payload: args.payload.max(10),
        inflight: args.inflight,
        timeout: Duration::from_secs(args.phase_timeout.max(1)),
    };
    let peer_version = match args.peer {
        PeerKind::Mosquitto => Some(crate::mosquitto::version(&args.mosquitto)?),
        PeerKind::None => None,
    };
    eprintln!("ferrohub: gateway → hub ...");
    let arrivals = Arc::new(Mutex::new(Tracker::new(&plan)));
    let chain = ferrohub::Ferro::start(&plan, arrivals.clone()).await?;
    let ferro = drive(chain, &plan, &arrivals).await?;
    let peer = match &peer_version {
        Some(_) => {
            eprintln!("mosquitto: edge broker → bridge → hub broker ...");
            let arrivals = Arc::new(Mutex::new(Tracker::new(&plan)));
            let chain = mosquitto::Mosquitto::start(&args.mosquitto, arrivals.clone()).await?;
            Some(drive(chain, &plan, &arrivals).await?)
        }
        None => None,
    };
    let ok = ferro.lost() == 0
        && ferro.complete()
        && peer.as_ref().is_none_or(|p| p.lost() == 0 && p.complete());
    let report = Report::new(&plan, ferro, peer, peer_version, ok);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(ok)
}

/// Runs the phases against one chain.
async fn drive<C: Chain>(mut chain: C, plan: &Plan, arrivals: &Arrivals) -> Result<ChainResult> {
    let mut conns = Vec::with_capacity(plan.children);
    for i in 0..plan.children {
        let id = child_id(i);
        let conn =
            DeviceConn::connect_sas(chain.edge(), HOST, chain.roots(), &id, &chain.password(i))
                .await
                .with_context(|| format!("{id} cannot connect to the edge"))?;
        conns.push(conn);
    }
    // Warm-up: one message per child through the whole chain, so upstream connections and the
    // bridge are up before anything is timed.
    for (i, c) in conns.iter_mut().enumerate() {
        c.publish_acked(&topic(i), PROBE.to_vec()).await?;
    }
    let deadline = clock::instant() + plan.timeout;
    while lock(arrivals).probes.iter().any(|p| !p) {
        if clock::instant() >= deadline {
            bail!("the warm-up messages did not all reach the hub");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ranges: Vec<Range<usize>> = (0..plan.children).map(|_| 0..plan.messages).collect();
    let target = (plan.children * plan.messages) as u64;
    lock(arrivals).begin_phase();
    let began = clock::instant();
    let (conns, acked) = publish_phase(conns, ranges, plan).await?;
    let end_to_end = await_arrivals(arrivals, 0, target, began, plan, acked, "end to end").await;
    let (conns, outage) = if plan.outage_total() > 0 && end_to_end.complete {
        let (conns, o) = outage(&mut chain, conns, plan, arrivals).await?;
        (conns, Some(o))
    } else {
        (conns, None)
    };
    for c in conns {
        c.disconnect().await;
    }
    let details = chain.finish().await?;
    Ok(ChainResult {
        end_to_end,
        outage,
        details,
    })
}

/// Hub down; the children publish the outage messages (each acknowledged by the edge); hub up;
/// everything must arrive.
async fn outage<C: Chain>(
    chain: &mut C,
    conns: Vec<DeviceConn>,
    plan: &Plan,
    arrivals: &Arrivals,
) -> Result<(Vec<DeviceConn>, OutageResult)> {
    chain.stop_upstream().await?;
    let ranges = (0..plan.children)
        .map(|i| plan.messages..plan.messages + plan.outage[i])
        .collect();
    let began = clock::instant();
    let (conns, acked) = publish_phase(conns, ranges, plan).await?;
    let ingest = began.elapsed().as_secs_f64();
    let base = lock(arrivals).unique;
    chain.start_upstream().await?;
    lock(arrivals).begin_phase();
    let restarted = clock::instant();
    let total = plan.outage_total();
    let delivery = await_arrivals(
        arrivals,
        base,
        base + total,
        restarted,
        plan,
        acked,
        "backlog",
    )
    .await;
    let drain = {
        let t = lock(arrivals);
        match (t.first, t.last) {
            (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
            _ => 0.0,
        }
    };
    Ok((
        conns,
        OutageResult {
            delivery,
            ingest_seconds: ingest,
            ingest_msgs_per_sec: total as f64 / ingest.max(1e-9),
            drain_seconds: drain,
            drain_msgs_per_sec: if drain > 0.0 {
                total as f64 / drain
            } else {
                0.0
            },
        },
    ))
}

/// Each child publishes its range of sequence numbers, `inflight` at a time; returns the
/// connections and the number of PUBACKs received.
async fn publish_phase(
    conns: Vec<DeviceConn>,
    ranges: Vec<Range<usize>>,
    plan: &Plan,
) -> Result<(Vec<DeviceConn>, u64)> {
    let mut tasks = Vec::with_capacity(conns.len());
    for (i, (conn, range)) in conns.into_iter().zip(ranges).enumerate() {
        let (payload, inflight) = (plan.payload, plan.inflight);
        tasks.push(tokio::spawn(async move {
            publish_range(conn, i, range, payload, inflight).await
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    let mut acked = 0;
    let all = async {
        for t in tasks {
            let (c, n) = t.await.context("a child task panicked")??;
            conns.push(c);
            acked += n;
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(plan.timeout, all)
        .await
        .context("the edge did not acknowledge the children's messages within --phase-timeout")??;
    Ok((conns, acked))
}

async fn publish_range(
    mut conn: DeviceConn,
    i: usize,
    range: Range<usize>,
    payload: usize,
    inflight: usize,
) -> Result<(DeviceConn, u64)> {
    let topic = topic(i);
    let total = range.len() as u64;
    let (mut next, mut acked, mut window) = (range.start, 0u64, 0usize);
    while acked < total {
        if next < range.end && window < inflight {
            conn.publish(&topic, body(next, payload)).await?;
            next += 1;
            window += 1;
            continue;
        }
        if let Packet::PubAck(_) = conn.recv().await? {
            acked += 1;
            window -= 1;
        }
    }
    Ok((conn, acked))
}

/// Waits (with a progress bar) until `target` distinct messages have arrived or the phase times
/// out; the phase lasted from `began` to the last arrival.
async fn await_arrivals(
    arrivals: &Arrivals,
    base: u64,
    target: u64,
    began: Instant,
    plan: &Plan,
    acknowledged: u64,
    what: &str,
) -> PhaseResult {
    let (dup0, unexp0) = {
        let t = lock(arrivals);
        (t.duplicates, t.unexpected)
    };
    let pb = indicatif::ProgressBar::new(target - base);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what:>10} {{bar:40}} {{pos}}/{{len}} at the hub {{per_sec}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let deadline = clock::instant() + plan.timeout;
    let complete = loop {
        let unique = lock(arrivals).unique;
        pb.set_position(unique.saturating_sub(base));
        if unique >= target {
            break true;
        }
        if clock::instant() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    pb.finish_and_clear();
    let t = lock(arrivals);
    let arrived = t.unique.saturating_sub(base);
    let seconds = t
        .last
        .map_or(0.0, |l| l.duration_since(began).as_secs_f64());
    PhaseResult {
        sent: target - base,
        acknowledged,
        arrived,
        lost: (target - base).saturating_sub(arrived),
        duplicates: t.duplicates - dup0,
        unexpected: t.unexpected - unexp0,
        complete,
        seconds,
        msgs_per_sec: if seconds > 0.0 {
            arrived as f64 / seconds
        } else {
            0.0
        },
    }
}

#[derive(Serialize)]
struct Report {
    command: String,
    machine: Machine,
    versions: serde_json::Value,
    children: usize,
    messages_per_child: usize,
    payload_bytes: usize,
    inflight_per_child: usize,
    outage_messages: u64,
    ferrohub: ChainResult,
    mosquitto: Option<ChainResult>,
    /// ferrohub ÷ mosquitto.
    ratios: Option<Ratios>,
    zero_loss: bool,
}

#[derive(Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
}

#[derive(Serialize)]
struct Ratios {
    end_to_end: f64,
    drain: Option<f64>,
}

impl Report {
    fn new(
        plan: &Plan,
        ferrohub: ChainResult,
        mosquitto: Option<ChainResult>,
        peer_version: Option<String>,
        ok: bool,
    ) -> Self {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let ratios = mosquitto.as_ref().map(|m| Ratios {
            end_to_end: ratio(ferrohub.end_to_end.msgs_per_sec, m.end_to_end.msgs_per_sec),
            drain: match (&ferrohub.outage, &m.outage) {
                (Some(f), Some(m)) => Some(ratio(f.drain_msgs_per_sec, m.drain_msgs_per_sec)),
                _ => None,
            },
        });
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: Machine {
                nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
                cpu,
            },
            versions: serde_json::json!({
                "ferrohub": env!("CARGO_PKG_VERSION"),
                "mosquitto": peer_version,
            }),
            children: plan.children,
            messages_per_child: plan.messages,
            payload_bytes: plan.payload,
            inflight_per_child: plan.inflight,
            outage_messages: plan.outage_total(),
            ferrohub,
            mosquitto,
            ratios,
            zero_loss: ok,
        }
    }

    /// The results as a Markdown table (ratios are ferrohub ÷ mosquitto).
    fn print(&self) {
        println!(
            "gateway: {} children x {} messages, {} B bodies, QoS 1, {} in flight per child; {} messages during the outage",
            self.children,
            self.messages_per_child,
            self.payload_bytes,
            self.inflight_per_child,
            self.outage_messages
        );
        println!(
            "machine: {} x {}; ferrohub {}; {}",
            self.machine.nproc,
            self.machine.cpu,
            self.versions["ferrohub"].as_str().unwrap_or("?"),
            self.versions["mosquitto"]
                .as_str()
                .unwrap_or("mosquitto not run")
        );
        self.print_table();
        if let Some(r) = &self.ratios {
            let met = r.end_to_end >= 1.5 && self.zero_loss;
            println!(
                "\ngoal >= 1.5x mosquitto end to end with zero loss: {} ({:.2}x)",
                if met { "met" } else { "NOT met" },
                r.end_to_end
            );
        }
        print_internals(&self.ferrohub.details);
        if !self.zero_loss {
            println!("\nLOSS or an unfinished phase: see the table; the command fails.");
        }
    }

    /// The scenario table: each figure for both chains and their ratio, then loss and duplicates.
    fn print_table(&self) {
        println!("\n| scenario | ferrohub | mosquitto | ratio |\n|---|---:|---:|---:|");
        let (f, m) = (&self.ferrohub, self.mosquitto.as_ref());
        let fo = f.outage.as_ref();
        let mo = m.and_then(|m| m.outage.as_ref());
        let rows: [(&str, Option<f64>, Option<f64>, u8); 4] = [
            (
                "end to end msg/s (first publish -> last arrival at the hub)",
                Some(f.end_to_end.msgs_per_sec),
                m.map(|m| m.end_to_end.msgs_per_sec),
                0,
            ),
            (
                "outage: acknowledged by the edge msg/s (hub down)",
                fo.map(|o| o.ingest_msgs_per_sec),
                mo.map(|o| o.ingest_msgs_per_sec),
                0,
            ),
            (
                "backlog drain msg/s (first -> last arrival after the restart)",
                fo.map(|o| o.drain_msgs_per_sec),
                mo.map(|o| o.drain_msgs_per_sec),
                0,
            ),
            (
                "hub restart -> whole backlog arrived, s (lower is better)",
                fo.map(|o| o.delivery.seconds),
                mo.map(|o| o.delivery.seconds),
                2,
            ),
        ];
        for (name, a, b, digits) in rows {
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            println!(
                "| {name} | {} | {} | {ratio} |",
                num(a, digits),
                num(b, digits)
            );
        }
        let lost = |c: &ChainResult| {
            format!(
                "{} + {}",
                c.end_to_end.lost,
                c.outage.as_ref().map_or(0, |o| o.delivery.lost)
            )
        };
        let dups = |c: &ChainResult| {
            (c.end_to_end.duplicates + c.outage.as_ref().map_or(0, |o| o.delivery.duplicates))
                .to_string()
        };
        println!(
            "| lost (end to end + outage) | {} | {} | |",
            lost(f),
            m.map_or("-".into(), lost)
        );
        println!(
            "| duplicates | {} | {} | |",
            dups(f),
            m.map_or("-".into(), dups)
        );
    }
}

/// Where ferrohub's time goes, from the run's counters: how many records each fsync'ed group
/// commit carried at the gateway and at the hub.
fn print_internals(d: &serde_json::Value) {
    let n = |v: &serde_json::Value| num(v.as_f64(), 0);
    let runs = d["hub_events"].as_array().cloned().unwrap_or_default();
    let hub: Vec<String> = runs
        .iter()
        .zip(["before the outage", "after the restart"])
        .map(|(r, when)| {
            let (a, c) = (n(&r["appends"]), n(&r["fsynced_commits"]));
            format!("{a} records in {c} fsyncs {when}")
        })
        .collect();
    println!(
        "\nferrohub counters: gateway store {} records in {} fsyncs; hub {}; {:.1} consecutive \
         records of the same child in the gateway's store on average (the forwarder's batch is \
         that, at most 64)",
        n(&d["gateway_store"]["appends"]),
        n(&d["gateway_store"]["fsynced_commits"]),
        hub.join(", "),
        d["gateway_store_same_child_runs"].as_f64().unwrap_or(0.0)
    );
}

/// `v` with thousands separators (digits = 0) or with `digits` decimals; `-` when absent.
fn num(v: Option<f64>, digits: u8) -> String {
    let Some(v) = v else { return "-".into() };
    if digits > 0 {
        return format!("{v:.*}", usize::from(digits));
    }
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_counts_each_message_once_and_flags_strangers() {
        let plan = Plan {
            children: 2,
            messages: 3,
            outage: vec![1, 0],
            payload: 16,
            inflight: 1,
            timeout: Duration::from_secs(1),
        };
        let mut t = Tracker::new(&plan);
        let at = clock::instant();
        t.record(Some(0), PROBE, at);
        for seq in [0, 1, 3, 1] {
            t.record(Some(0), &body(seq, 16), at);
        }
        t.record(Some(1), &body(3, 16), at); // child 1 has no outage message 3
        t.record(None, &body(0, 16), at); // not one of the children
        t.record(Some(1), b"garbage", at);
        assert_eq!((t.unique, t.duplicates, t.unexpected), (3, 1, 3));
        assert_eq!(t.probes, [true, false]);
        assert_eq!(child_index(&child_id(7)), Some(7));
        assert_eq!(child_index("bench-edge"), None);
    }
}
