//! `ferrohub bench telemetry`: QoS 1 telemetry over TLS from many X.509 devices to an in-process
//! hub with durability on. Latency is PUBLISH sent → PUBACK received, and the hub sends PUBACK only
//! after the record is fdatasync'ed, so it is the durable end-to-end latency. Loopback only.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use hub::config::{AuthSettings, HubConfig, Limits, Listen, Storage, Tls};
use hub::model::{AuthType, Authentication, Device};
use hub::registry::IfMatch;
use mqtt_codec::Packet;
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};
use rustls::pki_types::CertificateDer;

use crate::clock;
use crate::device_client::DeviceConn;

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// QoS 1 telemetry from N X.509 devices over TLS into an in-process hub (fsync on).
    #[command(
        after_help = "Examples:\n  ferrohub bench telemetry --devices 100 --messages 2000\n  \
        ferrohub bench telemetry --devices 100 --rate 10000 --seconds 10   # latency at a fixed rate"
    )]
    Telemetry(TelemetryArgs),
}

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Devices, each with its own certificate and TLS connection.
    #[arg(long, default_value_t = 100)]
    devices: usize,
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

pub fn run(cmd: BenchCmd) -> Result<bool> {
    let BenchCmd::Telemetry(args) = cmd;
    crate::hub_cmd::runtime()?
        .block_on(telemetry(args))
        .map(|()| true)
}

struct DeviceCreds {
    id: String,
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
}

async fn telemetry(args: TelemetryArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let now = clock::now();
    let start = now - time::Duration::days(1);
    let ca_key = PrivateKey::generate(KeyAlgorithm::P256)?;
    let ca = pki::issue(
        &CertRequest::new(Profile::RootCa, "Bench CA", start),
        &ca_key,
        None,
    )?;
    let server_key = PrivateKey::generate(KeyAlgorithm::P256)?;
    let mut req = CertRequest::new(Profile::Server, "localhost", start);
    req.subject_alt_names = vec!["localhost".into()];
    let server = pki::issue(
        &req,
        &server_key,
        Some(Signer {
            cert: &ca,
            key: &ca_key,
        }),
    )?;
    let path = |n: &str| dir.path().join(n);
    std::fs::write(path("ca.pem"), ca.to_pem())?;
    std::fs::write(path("server.pem"), server.to_pem() + &ca.to_pem())?;
    std::fs::write(path("server.key"), server_key.to_pem())?;
    let cfg = HubConfig {
        hostname: "localhost".into(),
        listen: Listen::default(),
        tls: Tls {
            cert: path("server.pem"),
            key: path("server.key"),
            ca: Some(path("ca.pem")),
        },
        storage: Storage {
            registry: path("registry.sqlite"),
            events: path("events"),
            fsync: !args.no_fsync,
            retention_hours: None,
            retention_mib: None,
        },
        auth: AuthSettings::default(),
        limits: Limits {
            max_inflight_per_connection: args.inflight.max(1) * 2,
            ..Limits::default()
        },
        policies: vec![],
    };
    let hub = hub::Hub::open(cfg, Arc::new(hub::time::SystemClock))?;
    hub.cas
        .upload("bench", &ca.to_pem(), true, &IfMatch::Absent)?;
    let pb = indicatif::ProgressBar::new(args.devices as u64);
    pb.set_message("issuing device certificates");
    let mut creds = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let id = format!("bench-{i:05}");
        let key = PrivateKey::generate(KeyAlgorithm::P256)?;
        let cert = pki::issue(
            &CertRequest::new(Profile::DeviceClient, id.clone(), start),
            &key,
            Some(Signer {
                cert: &ca,
                key: &ca_key,
            }),
        )?;
        let device = Device {
            device_id: id.clone(),
            authentication: Authentication {
                kind: Some(AuthType::CertificateAuthority),
                ..Default::default()
            },
            ..Default::default()
        };
        hub.registry
            .put_device(&id, device, &IfMatch::Absent)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        creds.push(DeviceCreds {
            id,
            chain: vec![cert.to_rustls(), ca.to_rustls()],
            key_pem: key.to_pem(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = mqtt.local_addr()?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let server_task = tokio::spawn(hub::run(hub.clone(), hub::Listeners { mqtt, https }, rx));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.to_rustls())?;
    let roots = Arc::new(roots);
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
    for c in creds {
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
    let _ = stop.send(true);
    let _ = server_task.await;
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
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
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
