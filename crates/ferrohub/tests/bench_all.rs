//! The side-by-side bench scenarios in small, ferrohub only (`--peer none --json`): telemetry at
//! QoS 1 and 0 and a handshake storm against `ferrohub hub --config …` started by the bench as a
//! child process on loopback, idle connections with the hub's RSS read from /proc, durable-log
//! appends with a reopen, and `bench report` turning the results into Markdown and PNG plots. The
//! tests assert the JSON shape and zero loss, never timings.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .arg("bench")
        .args(args)
        .env("FERROHUB_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed:\n{stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))
}

/// The envelope every scenario shares.
fn check_envelope(v: &Value, scenario: &str) {
    assert_eq!(v["scenario"], scenario, "{v:#}");
    assert_eq!(v["zero_loss"], true, "{v:#}");
    assert!(v["mosquitto"].is_null(), "{v:#}");
    assert!(v["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(v["command"].as_str().unwrap().contains(scenario));
    assert!(!v["goal"]["text"].as_str().unwrap().is_empty());
}

fn check_latency(l: &Value, count: u64) {
    assert_eq!(l["count"], count, "{l:#}");
    for k in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
        assert!(l[k].as_f64().unwrap() > 0.0, "{k} in {l:#}");
    }
    assert!(l["p50_ms"].as_f64() <= l["p99_ms"].as_f64());
    let dist = l["distribution"].as_array().unwrap();
    assert_eq!(dist.last().unwrap()[0], 100.0);
}

fn timeline_total(t: &Value) -> u64 {
    assert!(t["bucket_ms"].as_u64().unwrap() > 0);
    t["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum()
}

#[test]
fn small_telemetry_connect_idle_and_durable_log_runs_lose_nothing_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, v: &Value| {
        std::fs::write(dir.path().join(name), serde_json::to_vec(v).unwrap()).unwrap();
    };
    save("01-telemetry.json", &telemetry());
    save("02-connect.json", &connect());
    idle();
    save("03-durable-log.json", &durable_log());
    check_report(dir.path());
}

fn telemetry() -> Value {
    // QoS 1: every message acknowledged (after fsync) and read back from the events stream.
    let common = [
        "--devices",
        "3",
        "--messages",
        "40",
        "--inflight",
        "4",
        "--peer",
        "none",
    ];
    let v = bench(&[&["telemetry"], &common[..], &["--timeout", "60", "--json"]].concat());
    check_envelope(&v, "telemetry");
    let f = &v["ferrohub"];
    for (k, n) in [
        ("sent", 120),
        ("acknowledged", 120),
        ("arrived", 120),
        ("lost", 0),
    ] {
        assert_eq!(f[k], n, "{k} in {f:#}");
    }
    assert_eq!(
        (f["duplicates"].as_u64(), f["unexpected"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(f["complete"], true);
    assert!(f["msgs_per_sec"].as_f64().unwrap() > 0.0);
    check_latency(&f["e2e_latency"], 120);
    check_latency(&f["ack_latency"], 120);
    assert_eq!(timeline_total(&f["timeline"]), 120);
    let qos1 = v;

    // QoS 0: no acknowledgements, but every message must still reach the consumer.
    let v = bench(&[&["telemetry", "--qos", "0"], &common[..], &["--json"]].concat());
    check_envelope(&v, "telemetry");
    assert_eq!(v["variant"], "qos0");
    assert_eq!(v["ferrohub"]["arrived"], 120);
    assert!(v["ferrohub"]["acknowledged"].is_null());

    qos1
}

fn connect() -> Value {
    // Handshake storm: 12 connections over 6 distinct certificates, all accepted.
    let v = bench(&[
        "connect",
        "--devices",
        "6",
        "--connections",
        "12",
        "--concurrency",
        "3",
        "--peer",
        "none",
        "--json",
    ]);
    check_envelope(&v, "connect");
    let f = &v["ferrohub"];
    assert_eq!(
        (f["completed"].as_u64(), f["failed"].as_u64()),
        (Some(12), Some(0))
    );
    assert!(f["handshakes_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(f["negotiated"]["protocol"], "Some(TLSv1_3)");
    check_latency(&f["latency"], 12);

    v
}

fn idle() {
    // Idle connections, over mTLS and then plain: the hub's RSS is read before and with all of
    // them open.
    let v = bench(&[
        "idle",
        "--connections",
        "20",
        "--settle",
        "0",
        "--peer",
        "none",
        "--json",
    ]);
    check_envelope(&v, "idle");
    let f = &v["ferrohub"];
    assert_eq!(
        (f["connected"].as_u64(), f["failed"].as_u64()),
        (Some(20), Some(0))
    );
    assert!(f["rss_before_kib"].as_u64().unwrap() > 0);
    assert!(f["rss_after_kib"].as_u64().unwrap() > 0);
    assert!(f["bytes_per_connection"].is_number());
    // The second round: the hub's plain listener, devices signing in with a policy token.
    let plain = &f["plain"];
    assert_eq!(
        (plain["connected"].as_u64(), plain["failed"].as_u64()),
        (Some(20), Some(0)),
        "{plain}"
    );
    assert!(plain["bytes_per_connection"].is_number());
}

fn durable_log() -> Value {
    // durable-log: every acknowledged append is found again after a reopen.
    let v = bench(&[
        "durable-log",
        "--writers",
        "8",
        "--appends",
        "400",
        "--json",
    ]);
    check_envelope(&v, "durable-log");
    let f = &v["ferrohub"];
    for (k, n) in [
        ("acknowledged", 400),
        ("recovered", 400),
        ("readable_after_reopen", 400),
        ("lost", 0),
    ] {
        assert_eq!(f[k], n, "{k} in {f:#}");
    }
    assert!(f["fsynced_commits"].as_u64().unwrap() >= 1);
    check_latency(&f["latency"], 400);

    v
}

fn check_report(dir: &Path) {
    // The report: a generated section between markers, the rest of the file kept, plots written.
    let results = dir.join("RESULTS.md");
    std::fs::write(
        &results,
        "# Results\n\nIntro.\n\n## Older section\n\nkept\n",
    )
    .unwrap();
    let plots = dir.join("plots");
    for _ in 0..2 {
        report(dir, &results, &plots);
    }
    let md = std::fs::read_to_string(&results).unwrap();
    assert_eq!(md.matches("<!-- bench/run-all: begin").count(), 1, "{md}");
    assert!(md.contains("## Older section\n\nkept"), "{md}");
    assert!(md.contains("| scenario | goal | this run | met |"), "{md}");
    assert!(md.contains("](plots/telemetry-latency.png)"), "{md}");
    for png in [
        "telemetry-latency.png",
        "telemetry-throughput.png",
        "connect-latency.png",
    ] {
        let bytes = std::fs::read(plots.join(png)).unwrap();
        assert_eq!(&bytes[..4], b"\x89PNG", "{png}");
    }
}

fn report(input: &Path, results: &Path, plots: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args(["bench", "report", "--input"])
        .arg(input)
        .arg("--results")
        .arg(results)
        .arg("--plots")
        .arg(plots)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
