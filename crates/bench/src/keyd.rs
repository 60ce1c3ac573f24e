//! `ferrohub bench keyd`: HMAC-SHA256 signing through keyd's Unix-socket API, closed loop.
//!
//! keyd runs in-process on a temporary socket and home. A symmetric key with known bytes is
//! imported; then each caller, on its own keep-alive HTTP/1.1 connection, POSTs
//! `/sign?api-version=2020-09-01` over a fixed message and checks every answer against the
//! signature computed locally. Latency is the whole request round trip.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use identity::config::KeydConfig;
use identity::config::daemons::KeydPrincipal;
use identity::wire::keyd::{B64, CreateKeyRequest, KeyHandleResponse, SignRequest, SignResponse};
use serde_json::json;

use super::percentile_ms;
use crate::clock;

const SIGN_PATH: &str = "/sign?api-version=2020-09-01";

#[derive(Debug, Args)]
pub struct KeydArgs {
    /// Concurrent callers, each with its own connection and one request in flight.
    #[arg(long, default_value_t = 8)]
    callers: usize,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes of the message each request signs.
    #[arg(long, default_value_t = 64)]
    message: usize,
    /// Print the results as JSON on stdout (the `bench report` shape).
    #[arg(long)]
    json: bool,
}

/// The uid this process runs as (the owner of a directory it just created).
fn own_uid(dir: &Path) -> Result<u32> {
    Ok(std::fs::metadata(dir)?.uid())
}

async fn wait_for_socket(path: &Path) -> Result<()> {
    for _ in 0..500 {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("keyd did not start listening on {}", path.display())
}

/// One caller: its own connection, requests back to back until `deadline`; µs latencies.
async fn caller(
    socket: std::path::PathBuf,
    body: Bytes,
    expected: Bytes,
    deadline: std::time::Instant,
) -> Result<Vec<u32>> {
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut latencies = Vec::with_capacity(1 << 16);
    while clock::instant() < deadline {
        let req = Request::builder()
            .method(Method::POST)
            .uri(SIGN_PATH)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))?;
        let t = clock::instant();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let answer = resp.into_body().collect().await?.to_bytes();
        latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
        if status != StatusCode::OK || answer != expected {
            bail!("{SIGN_PATH}: {status} {}", String::from_utf8_lossy(&answer));
        }
    }
    Ok(latencies)
}

pub async fn run(args: KeydArgs) -> Result<()> {
    if args.callers == 0 || args.callers > 10_000 || args.seconds > 300 {
        bail!("--callers must be 1..=10000 and --seconds at most 300");
    }
    let machine = super::stats::Machine::now();
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let cfg = KeydConfig {
        homedir: dir.path().join("home"),
        socket: dir.path().join("keyd.sock"),
        max_requests: args.callers + 4,
        preloaded_keys: Default::default(),
        principals: vec![KeydPrincipal {
            uid: own_uid(dir.path())?,
            keys: vec!["bench-*".into()],
        }],
    };
    let (stop, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(identity::keyd::serve(cfg.clone(), rx));
    wait_for_socket(&cfg.socket).await?;

    let mut key = [0u8; 32];
    pki::random_fill(&mut key)?;
    let message = "m".repeat(args.message);
    let client = identity::client::UdsClient::new(&cfg.socket);
    let create = CreateKeyRequest {
        key_bytes: Some(B64(key.to_vec())),
        key_id: "bench-key".into(),
        usage: "sign".into(),
    };
    let created: KeyHandleResponse = client.post("/key?api-version=2020-09-01", &create).await?;
    let body = SignRequest::hmac_sha256(&created.key_handle, message.as_bytes());
    // base64(HMAC-SHA256(key, text)), computed here to check every answer.
    let signature = iot_auth::derive_device_key(&STANDARD.encode(key), &message)?;
    let expected = Bytes::from(serde_json::to_vec(&SignResponse { signature })?);
    let body = Bytes::from(serde_json::to_vec(&body)?);

    let deadline = clock::instant() + Duration::from_secs(args.seconds);
    let began = clock::instant();
    let tasks: Vec<_> = (0..args.callers)
        .map(|_| {
            tokio::spawn(caller(
                cfg.socket.clone(),
                body.clone(),
                expected.clone(),
                deadline,
            ))
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.context("a caller panicked")??);
    }
    let elapsed = began.elapsed();
    let _ = stop.send(true);
    server.await.context("keyd panicked")??;
    if args.json {
        return json_report(&args, &lat, elapsed, machine);
    }
    report(&args, lat, elapsed);
    Ok(())
}

fn json_report(
    args: &KeydArgs,
    lat: &[u32],
    elapsed: Duration,
    machine: super::stats::Machine,
) -> Result<()> {
    let mut h = super::stats::Latency::new();
    for us in lat {
        h.record_us(u64::from(*us));
    }
    let rate = lat.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let summary = h.summary();
    let mut r = super::stats::Report::new("keyd", "hmac-sign", machine, None);
    r.params =
        json!({"callers": args.callers, "seconds": args.seconds, "message_bytes": args.message});
    r.goal = super::stats::Goal {
        text: "keyd HMAC sign over UDS: ≥ 20,000/s, p99 < 200 µs".into(),
        met: Some(rate >= 20_000.0 && summary.p99_ms < 0.2),
    };
    r.ferrohub = json!({"signs": lat.len(), "seconds": elapsed.as_secs_f64(),
        "signs_per_sec": rate, "latency": summary});
    r.emit(true)
}

fn report(args: &KeydArgs, mut lat: Vec<u32>, elapsed: Duration) {
    lat.sort_unstable();
    let rate = lat.len() as f64 / elapsed.as_secs_f64();
    let p99_us = percentile_ms(&lat, 0.99) * 1000.0;
    println!(
        "keyd: {} callers, one keep-alive connection each, HMAC-SHA256 over {} B",
        args.callers, args.message
    );
    println!(
        "  completed:     {} signs in {:.2} s = {rate:.0} signs/s",
        lat.len(),
        elapsed.as_secs_f64(),
    );
    println!(
        "  latency (POST /sign -> 200): p50 {:.3} ms, p99 {:.3} ms ({p99_us:.0} µs), p99.9 {:.3} ms, max {:.3} ms",
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 0.999),
        percentile_ms(&lat, 1.0)
    );
    let met = rate >= 20_000.0 && p99_us < 200.0;
    println!(
        "  goal (>= 20000 signs/s, p99 < 200 µs): {}",
        if met { "met" } else { "missed" }
    );
}
