//! `ferrohub bench connect`: a TLS connection storm with X.509 client certificates. Each attempt
//! is a new TCP connection, a full TLS 1.3 handshake (no resumption, X25519, P-256 certificates)
//! presenting one of thousands of distinct device certificates, MQTT CONNECT and an accepted
//! CONNACK — the server has validated the client chain by then (mosquitto in the handshake,
//! ferrohub at CONNECT against its verified CA) — then DISCONNECT. Handshakes/s and connect latency
//! (HdrHistogram), ferrohub and mosquitto one after the other with the same certificates.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::stats::{Goal, Latency, Machine, Report, Timeline, lookup, ratio};
use super::target::{self, Fixture, Peer, ServerArgs, Target};
use crate::clock;

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Distinct device certificates (at most 20,000); each connection uses the next one.
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Connections per server (default: one per device; at most 100,000).
    #[arg(long)]
    connections: Option<usize>,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Seconds a server's storm may take before it is reported as incomplete (at most 600).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(args: ConnectArgs) -> Result<bool> {
    let connections = args.connections.unwrap_or(args.devices);
    if args.devices == 0 || args.devices > 20_000 || connections == 0 || connections > 100_000 {
        bail!("--devices must be 1..=20000 and --connections 1..=100000");
    }
    let machine = Machine::now();
    let peer_version = args.server.peer_version()?;
    let fx = Fixture::new(args.devices)?;
    // Client configurations are built before anything is timed (key parsing is the client's).
    let pb = super::bar(args.devices as u64, "preparing client TLS configs");
    let mut configs = Vec::with_capacity(args.devices);
    for c in &fx.devices {
        configs.push((
            c.id.clone(),
            super::mqtt::client_config(c, fx.roots.clone())?,
        ));
        pb.inc(1);
    }
    pb.finish_and_clear();
    let configs = Arc::new(configs);
    let mut results = Vec::new();
    for name in ["ferrohub", "mosquitto"] {
        if name == "mosquitto" && args.server.peer == Peer::None {
            continue;
        }
        eprintln!(
            "{name}: {connections} mTLS connects, {} at a time ...",
            args.concurrency
        );
        let t = target::start(name, &fx, &args.server).await?;
        let r = storm(&t, &configs, connections, &args).await;
        t.stop().await?;
        results.push(r?);
    }
    let mut report = Report::new("connect", "mtls", machine, peer_version.as_deref());
    report.server_cpus = args.server.server_cpus.clone();
    report.params = json!({
        "devices": args.devices, "connections": connections, "concurrency": args.concurrency,
        "tls": "TLS 1.3, X25519, ECDSA P-256 server and client certificates, no resumption",
    });
    let mut results = results.into_iter();
    report.ferrohub = results.next().unwrap_or(Value::Null);
    report.mosquitto = results.next();
    let m = report.mosquitto.as_ref();
    let key = |k: &str| ratio(lookup(&report.ferrohub, k), m.and_then(|m| lookup(m, k)));
    report.ratios = json!({
        "handshakes_per_sec": key("handshakes_per_sec"),
        "p99_lower_is_better": key("latency.p99_ms"),
    });
    report.goal = Goal {
        text: "TLS handshakes with client-certificate validation: ≥ 3× mosquitto handshakes/s"
            .into(),
        met: report.ratios["handshakes_per_sec"]
            .as_f64()
            .map(|r| r >= 3.0),
    };
    report.zero_loss = std::iter::once(&report.ferrohub)
        .chain(m)
        .all(|r| r["failed"] == 0 && r["complete"] == true);
    report.emit(args.server.json)?;
    Ok(report.zero_loss)
}

type WorkerOut = (
    Latency,
    Timeline,
    u64,
    Vec<String>,
    Option<super::mqtt::Negotiated>,
);

/// One of the concurrent connectors: takes the next attempt number until all are taken.
async fn worker(
    addr: std::net::SocketAddr,
    configs: Arc<Vec<(String, Arc<rustls::ClientConfig>)>>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    connections: usize,
    began: std::time::Instant,
    pb: indicatif::ProgressBar,
) -> WorkerOut {
    let (mut lat, mut tl, mut failed) = (Latency::new(), Timeline::new(began, 100), 0u64);
    let (mut errors, mut negotiated) = (Vec::new(), None);
    loop {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n >= connections {
            break;
        }
        let (id, cfg) = &configs[n % configs.len()];
        let t = clock::instant();
        match super::mqtt::connect_tls(addr, cfg.clone(), id, 60).await {
            Ok(mut tls) => {
                let done = clock::instant();
                lat.record(done.duration_since(t));
                tl.add(done, 1);
                negotiated.get_or_insert_with(|| super::mqtt::negotiated(&tls));
                super::mqtt::disconnect(&mut tls).await;
            }
            Err(e) => {
                failed += 1;
                if errors.len() < 3 {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        pb.inc(1);
    }
    (lat, tl, failed, errors, negotiated)
}

/// `connections` connects against one server, `concurrency` at a time.
async fn storm(
    target: &Target,
    configs: &Arc<Vec<(String, Arc<rustls::ClientConfig>)>>,
    connections: usize,
    args: &ConnectArgs,
) -> Result<Value> {
    let pb = super::bar(connections as u64, &format!("{} connecting", target.name));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu = super::process::CpuMark::now(&target.process);
    let began = clock::instant();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1).min(connections) {
        let (configs, next, pb, addr) = (configs.clone(), next.clone(), pb.clone(), target.mqtt());
        tasks.push(tokio::spawn(worker(
            addr,
            configs,
            next,
            connections,
            began,
            pb,
        )));
    }
    let (mut lat, mut counts, mut failed, mut errors, mut negotiated) =
        (Latency::new(), Vec::<u64>::new(), 0u64, Vec::new(), None);
    let all = async {
        for t in tasks {
            let (l, tl, f, e, n) = t.await.context("a connect task panicked")?;
            lat.add(&l);
            if counts.len() < tl.counts.len() {
                counts.resize(tl.counts.len(), 0);
            }
            for (c, x) in counts.iter_mut().zip(&tl.counts) {
                *c += x;
            }
            failed += f;
            errors.extend(e);
            negotiated = negotiated.take().or(n);
        }
        anyhow::Ok(())
    };
    let complete = tokio::time::timeout(Duration::from_secs(args.timeout.clamp(1, 600)), all)
        .await
        .is_ok();
    let elapsed = began.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let done = lat.len();
    errors.truncate(5);
    let cpu = cpu.since(&target.process);
    let per = |k: &str| cpu[k].as_f64().map(|s| s * 1e6 / done.max(1) as f64);
    Ok(json!({
        "cpu": cpu,
        "server_cpu_us_per_handshake": per("server_cpu_seconds"),
        "bench_cpu_us_per_handshake": per("bench_cpu_seconds"),
        "connections": connections,
        "completed": done,
        "failed": failed + (connections as u64).saturating_sub(done + failed),
        "complete": complete,
        "seconds": elapsed,
        "handshakes_per_sec": done as f64 / elapsed.max(1e-9),
        "latency": lat.summary(),
        "timeline": {"bucket_ms": 100, "counts": counts},
        "negotiated": negotiated,
        "errors": errors,
    }))
}
