//! `ferrohub bench methods` and `ferrohub bench twin`: request/response traffic between the service
//! and devices, closed loop (each device or caller has one request outstanding at a time).
//!
//! Methods: one caller per device, on the service client's keep-alive HTTPS connections, POSTs
//! `/twins/{id}/methods`; the device answers from its MQTT connection. Latency is the whole REST
//! round trip. Twin: each device PATCHes its reported properties and waits for the `204`.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use hyper::{Method, StatusCode};
use mqtt_codec::Packet;
use serde_json::json;

use super::{BenchHub, DeviceCreds, percentile_ms};
use crate::clock;
use device_client::DeviceConn;

#[derive(Debug, Args)]
pub struct InteractiveArgs {
    /// Connected devices, each with its own certificate and TLS connection.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes of payload in each request.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

async fn connect(bench: &BenchHub, c: &DeviceCreds, filter: &str) -> Result<DeviceConn> {
    let mut conn = DeviceConn::connect_x509(
        bench.mqtt,
        "localhost",
        bench.roots.clone(),
        &c.id,
        c.chain.clone(),
        &c.key_pem,
    )
    .await?;
    conn.subscribe(filter).await?;
    Ok(conn)
}

/// Answers every method request with status 200 and the request's payload, until `stop`.
async fn answer_methods(
    mut conn: DeviceConn,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    loop {
        let packet = tokio::select! {
            p = conn.recv() => p?,
            _ = stop.changed() => {
                conn.disconnect().await;
                return Ok(());
            }
        };
        let Packet::Publish(p) = packet else {
            continue;
        };
        let Some(rid) = p.topic.split("?$rid=").nth(1) else {
            bail!("method request without $rid: {}", p.topic);
        };
        let topic = format!("$iothub/methods/res/200/?$rid={rid}");
        conn.publish_qos0(&topic, p.payload).await?;
    }
}

pub async fn methods(args: InteractiveArgs) -> Result<()> {
    let bench = BenchHub::start(args.devices, true, 32).await?;
    let mut responders = Vec::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for c in &bench.creds {
        let conn = connect(&bench, c, "$iothub/methods/POST/#").await?;
        responders.push(tokio::spawn(answer_methods(conn, stopped.clone())));
    }
    let body = hub_wire::body(&hub_wire::MethodRequest {
        method_name: "echo".into(),
        payload: json!({ "data": "x".repeat(args.payload) }),
        response_timeout_in_seconds: Some(30),
        connect_timeout_in_seconds: None,
    });
    let deadline = clock::instant() + Duration::from_secs(args.seconds);
    let began = clock::instant();
    let mut callers = Vec::new();
    for c in &bench.creds {
        let (service, body) = (bench.service.clone(), body.clone());
        let path = format!("/twins/{}/methods", c.id);
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while clock::instant() < deadline {
                let t = clock::instant();
                let r = service.send(Method::POST, &path, Some(&body), &[]).await?;
                if r.status != StatusCode::OK || r.json()["payload"] != body["payload"] {
                    bail!("{path}: {} {:?}", r.status, r.json());
                }
                latencies.push(micros(t.elapsed()));
            }
            anyhow::Ok(latencies)
        }));
    }
    let latencies = collect(callers).await?;
    let elapsed = began.elapsed();
    let _ = stop.send(true);
    for r in responders {
        r.await.context("a device task panicked")??;
    }
    bench.stop().await;
    report(
        &format!(
            "methods: {} devices, one call in flight per device, {} B payload",
            args.devices, args.payload
        ),
        "calls",
        "POST /twins/{id}/methods -> device -> 200",
        latencies,
        elapsed,
    );
    Ok(())
}

pub async fn twin(args: InteractiveArgs) -> Result<()> {
    let bench = BenchHub::start(args.devices, true, 32).await?;
    let deadline = clock::instant() + Duration::from_secs(args.seconds);
    let began = clock::instant();
    let mut devices = Vec::new();
    for c in &bench.creds {
        let mut conn = connect(&bench, c, "$iothub/twin/res/#").await?;
        let payload = args.payload;
        devices.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut rid = 0u64;
            while clock::instant() < deadline {
                rid += 1;
                let patch = json!({ "seq": rid, "data": "x".repeat(payload) });
                let t = clock::instant();
                let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
                conn.publish_qos0(&topic, patch.to_string().into_bytes())
                    .await?;
                let expected = format!("$iothub/twin/res/204/?$rid={rid}&");
                match conn.recv().await? {
                    Packet::Publish(p) if p.topic.starts_with(&expected) => {}
                    other => bail!("expected a 204 for $rid={rid}, got {other:?}"),
                }
                latencies.push(micros(t.elapsed()));
            }
            conn.disconnect().await;
            anyhow::Ok(latencies)
        }));
    }
    let mut per_device = Vec::new();
    for t in devices {
        per_device.push(t.await.context("a bench task panicked")??);
    }
    let elapsed = began.elapsed();
    let ids: Vec<String> = bench.creds.iter().map(|c| c.id.clone()).collect();
    let hub = bench.stop().await;
    // Every acknowledged patch is in the stored twin: its reported version counts them.
    for (c, acked) in ids.iter().zip(&per_device) {
        let version = hub.twins.get(&hub, c)?.reported_version;
        if version != acked.len() as u64 + 1 {
            bail!(
                "{c}: {} patches acknowledged but reported $version is {version}",
                acked.len()
            );
        }
    }
    println!("  check: every device's reported $version = its acknowledged patches + 1");
    let latencies = per_device.concat();
    report(
        &format!(
            "twin: {} devices, reported-property patches, one in flight per device, {} B",
            args.devices, args.payload
        ),
        "patches",
        "PATCH reported -> 204",
        latencies,
        elapsed,
    );
    Ok(())
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Result<Vec<u32>>>>) -> Result<Vec<u32>> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.context("a bench task panicked")??);
    }
    Ok(all)
}

fn report(title: &str, unit: &str, what: &str, mut lat: Vec<u32>, elapsed: Duration) {
    lat.sort_unstable();
    println!("{title}");
    println!(
        "  completed:     {} {unit} in {:.2} s = {:.0} {unit}/s",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency ({what}): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 0.999),
        percentile_ms(&lat, 1.0)
    );
}
