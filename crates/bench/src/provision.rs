//! `ferrohub bench provision`: X.509 registrations end to end. Each registration is a new TLS
//! connection to the provisioning service with the device's certificate chain, CONNECT (attested
//! against an X.509 enrollment group), register, polls until assigned; the service validates the
//! chain and creates the device at the hub through the hub's REST API. Both run in-process on
//! loopback, durability on. The client polls every 2 ms instead of waiting `retry-after`, so the
//! figure is the service's capacity, not the SDKs' pacing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use mqtt_codec::{Packet, Publish};
use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile, Signer};
use serde_json::Value;

use super::{BenchHub, DeviceCreds, percentile_ms};
use crate::clock;
use device_client::DeviceConn;

const SCOPE: &str = "0ne0BE0C0FF";

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Registrations in flight at once (devices registering concurrently).
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Devices to register, each with its own certificate (registered once; at most 50,000).
    #[arg(long, default_value_t = 4000)]
    registrations: usize,
    /// Print the results as JSON on stdout (the `bench report` shape).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ProvisionArgs) -> Result<()> {
    if args.registrations == 0 || args.registrations > 50_000 || args.concurrency > 5000 {
        bail!("--registrations must be 1..=50000 and --concurrency at most 5000");
    }
    let machine = super::stats::Machine::now();
    let bench = BenchHub::start(0, true, 32).await?;
    let (dps, dps_addr, stop) = start_dps(&bench).await?;
    let creds = issue_devices(&bench, args.registrations)?;
    let pb = indicatif::ProgressBar::new(creds.len() as u64);
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let began = clock::instant();
    let mut tasks = Vec::with_capacity(creds.len());
    for c in creds {
        let permit = slots.clone().acquire_owned().await?;
        let (roots, pb) = (bench.roots.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let t = clock::instant();
            register(dps_addr, roots, c).await?;
            pb.inc(1);
            anyhow::Ok(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX))
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    for t in tasks {
        lat.push(t.await.context("a registration task panicked")??);
    }
    let elapsed = began.elapsed();
    pb.finish_and_clear();
    let _ = stop.send(true);
    let hub = bench.stop().await;
    let stats = hub
        .registry
        .statistics()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if stats.total_device_count != lat.len() as u64 {
        bail!(
            "{} registrations but {} devices at the hub",
            lat.len(),
            stats.total_device_count
        );
    }
    drop(dps);
    if args.json {
        return json_report(&args, &lat, elapsed, stats.total_device_count, machine);
    }
    lat.sort_unstable();
    println!(
        "provision: {} X.509 registrations, {} in flight, group enrollment (CA chain), fsync on",
        lat.len(),
        args.concurrency
    );
    println!(
        "  completed:     {} registrations in {:.2} s = {:.0} registrations/s ({} devices at the hub)",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        stats.total_device_count
    );
    println!(
        "  latency (TLS + CONNECT + register + polls until assigned): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0)
    );
    Ok(())
}

fn json_report(
    args: &ProvisionArgs,
    lat: &[u32],
    elapsed: Duration,
    at_hub: u64,
    machine: super::stats::Machine,
) -> Result<()> {
    let mut h = super::stats::Latency::new();
    for us in lat {
        h.record_us(u64::from(*us));
    }
    let rate = lat.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut r = super::stats::Report::new("provision", "x509-group", machine, None);
    r.params =
        serde_json::json!({"registrations": args.registrations, "concurrency": args.concurrency});
    r.goal = super::stats::Goal {
        text: "DPS X.509 registrations: ≥ 500/s end to end".into(),
        met: Some(rate >= 500.0),
    };
    r.ferrohub = serde_json::json!({"registrations": lat.len(), "devices_at_hub": at_hub,
        "seconds": elapsed.as_secs_f64(), "registrations_per_sec": rate, "latency": h.summary()});
    r.emit(true)
}

/// A provisioning service linked to the bench hub, with one X.509 group trusting the bench CA.
async fn start_dps(
    bench: &BenchHub,
) -> Result<(
    Arc<dps::Dps>,
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
)> {
    let dir = bench.dir();
    let cfg = dps::config::DpsConfig {
        hostname: "localhost".into(),
        id_scope: SCOPE.into(),
        allocation_policy: "hashed".into(),
        listen: dps::config::Listen::default(),
        tls: ferrohub_runtime::config::Tls {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            ca: Some(dir.join("ca.pem")),
        },
        storage: dps::config::Storage {
            database: dir.join("dps.sqlite"),
        },
        policies: vec![],
        linked_hubs: vec![dps::config::LinkedHub {
            connection_string: format!(
                "HostName=localhost;SharedAccessKeyName=service;SharedAccessKey={}",
                bench.service_key
            ),
            ca: Some(dir.join("ca.pem")),
            address: Some(bench.https.to_string()),
            allocation_weight: 1,
        }],
    };
    cfg.check().map_err(|e| anyhow::anyhow!(e))?;
    let dps = dps::Dps::open(cfg, Arc::new(ferrohub_runtime::time::SystemClock))?;
    use dps::model::{AttestationMechanism, EnrollmentGroup, X509Attestation};
    let group = EnrollmentGroup::new(
        "bench",
        AttestationMechanism::x509(X509Attestation::signing_certificate(bench.ca.to_pem())),
    );
    dps.store.put_group(&group)?;
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let https = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = mqtt.local_addr()?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(dps::run(dps.clone(), dps::Listeners { mqtt, https }, rx));
    Ok((dps, addr, stop))
}

fn issue_devices(bench: &BenchHub, n: usize) -> Result<Vec<DeviceCreds>> {
    let pb = indicatif::ProgressBar::new(n as u64);
    pb.set_message("issuing device certificates");
    let start = clock::now() - time::Duration::days(1);
    let mut creds = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("reg-{i:06}");
        let key = PrivateKey::generate(KeyAlgorithm::P256)?;
        let cert = pki::issue(
            &CertRequest::new(Profile::DeviceClient, id.clone(), start),
            &key,
            Some(Signer {
                cert: &bench.ca,
                key: &bench.ca_key,
            }),
        )?;
        creds.push(DeviceCreds {
            id,
            chain: vec![cert.to_rustls(), bench.ca.to_rustls()],
            key_pem: key.to_pem(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(creds)
}

fn publish(topic: String) -> Packet {
    Packet::Publish(Publish::at_most_once(topic, b" ".to_vec()))
}

/// One registration over MQTT: the status code and body of each answer until `assigned`.
async fn register(
    addr: std::net::SocketAddr,
    roots: Arc<rustls::RootCertStore>,
    c: DeviceCreds,
) -> Result<()> {
    let username = format!("{SCOPE}/registrations/{}/api-version=2019-03-31", c.id);
    let mut conn = DeviceConn::connect_x509_as(
        addr,
        "localhost",
        roots,
        &c.id,
        &username,
        c.chain,
        &c.key_pem,
    )
    .await?;
    conn.subscribe("$dps/registrations/res/#").await?;
    conn.send(&publish(
        "$dps/registrations/PUT/iotdps-register/?$rid=1".into(),
    ))
    .await?;
    let mut rid = 1;
    loop {
        let Packet::Publish(p) = conn.recv().await? else {
            continue;
        };
        let body: Value = serde_json::from_slice(&p.payload)?;
        match body["status"].as_str() {
            Some("assigned") => break,
            Some("assigning") => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                rid += 1;
                let op = body["operationId"].as_str().unwrap_or_default();
                let topic = format!(
                    "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}"
                );
                conn.send(&publish(topic)).await?;
            }
            _ => bail!("{}: {} {body}", c.id, p.topic),
        }
    }
    conn.disconnect().await;
    Ok(())
}
