//! `ferrohub bench telemetry`: QoS 1 telemetry over TLS from many X.509 devices to an in-process
//! hub with durability on. Latency is PUBLISH sent → PUBACK received, and the hub sends PUBACK only
//! after the record is fdatasync'ed, so it is the durable end-to-end latency. Loopback only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use mqtt_codec::Packet;

use super::{BenchHub, DeviceCreds};
use crate::clock;
use crate::device_client::DeviceConn;

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Devices, each with its own certificate and TLS connection.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Messages per device (ignored with --rate).
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Unacknowledged publishes per device.
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// Body bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// Total messages/s across devices (open loop); off = as fast as acknowledgements allow.
    #[arg(long)]
    rate: Option<u64>,
    /// Duration of a --rate run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Turn fdatasync off (numbers are then not durable; for comparison only).
    #[arg(long)]
    no_fsync: bool,
}

pub async fn run(args: TelemetryArgs) -> Result<()> {
    let bench = BenchHub::start(args.devices, !args.no_fsync, args.inflight.max(1) * 2).await?;
    let (addr, roots) = (bench.mqtt, bench.roots.clone());
    let per_device_rate = args
        .rate
        .map(|r| (r as f64 / args.devices as f64).max(0.001));
    let total = match args.rate {
        Some(r) => r * args.seconds,
        None => (args.devices * args.messages) as u64,
    };
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} msgs {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let began = clock::instant();
    let mut tasks = Vec::new();
    for c in bench.creds.clone() {
        let messages = match per_device_rate {
            Some(r) => (r * args.seconds as f64).ceil() as usize,
            None => args.messages,
        };
        let (roots, pb) = (roots.clone(), pb.clone());
        let opts = DeviceRun {
            messages,
            inflight: args.inflight,
            payload: args.payload,
            rate: per_device_rate,
        };
        tasks.push(tokio::spawn(async move {
            device_run(addr, roots, c, opts, pb).await
        }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.context("device task panicked")??);
    }
    let elapsed = began.elapsed();
    pb.finish_and_clear();
    let hub = bench.stop().await;
    report(&args, &mut latencies, elapsed, &hub);
    Ok(())
}

struct DeviceRun {
    messages: usize,
    inflight: usize,
    payload: usize,
    rate: Option<f64>,
}

async fn device_run(
    addr: std::net::SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    c: DeviceCreds,
    o: DeviceRun,
    pb: indicatif::ProgressBar,
) -> Result<Vec<u32>> {
    let mut conn =
        DeviceConn::connect_x509(addr, "localhost", roots, &c.id, c.chain, &c.key_pem).await?;
    let topic = format!(
        "devices/{}/messages/events/%24.ct=application%2Fjson&bench=1",
        c.id
    );
    let body = vec![b'x'; o.payload];
    let mut sent_at = vec![None; o.messages + 1];
    let mut latencies = Vec::with_capacity(o.messages);
    let (mut next, mut acked, mut window) = (1usize, 0usize, 0usize);
    let interval = o.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let t0 = clock::instant();
    while acked < o.messages {
        let due = interval.is_none_or(|i| t0.elapsed() >= i.mul_f64((next - 1) as f64));
        if next <= o.messages && window < o.inflight && due {
            conn.publish(&topic, body.clone()).await?;
            sent_at[next] = Some(clock::instant());
            next += 1;
            window += 1;
            continue;
        }
        let wait = match interval {
            Some(i) if next <= o.messages && window < o.inflight => {
                i.mul_f64((next - 1) as f64).saturating_sub(t0.elapsed())
            }
            _ => Duration::from_secs(30),
        };
        let Ok(packet) = tokio::time::timeout(wait, conn.recv()).await else {
            continue;
        };
        // PUBACKs arrive in publish order, so the n-th one answers the n-th publish.
        if let Packet::PubAck(_) = packet? {
            acked += 1;
            window -= 1;
            if let Some(t) = sent_at.get_mut(acked).and_then(Option::take) {
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            pb.inc(1);
        }
    }
    conn.disconnect().await;
    Ok(latencies)
}

fn report(args: &TelemetryArgs, lat: &mut [u32], elapsed: Duration, hub: &hub::Hub) {
    lat.sort_unstable();
    let pct = |p: f64| super::percentile_ms(lat, p);
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "telemetry: {} devices, QoS 1, {} B bodies, inflight {}/device, fsync {}",
        args.devices,
        args.payload,
        args.inflight,
        if args.no_fsync { "off" } else { "on" }
    );
    if let Some(r) = args.rate {
        println!("  offered rate:  {r} msg/s for {} s", args.seconds);
    }
    println!(
        "  acknowledged:  {} messages in {:.2} s = {rate:.0} msg/s",
        lat.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "  latency (PUBLISH -> durable PUBACK): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    let stats = hub.events.stats();
    println!(
        "  events log: {} records, {} fsync'ed commits ({:.1} records/commit)",
        stats.records,
        stats.commits,
        stats.records as f64 / stats.commits.max(1) as f64
    );
}
