//! `ferrohub bench gateway` in small (3 children × 50 messages, 60 more during a hub outage, no
//! mosquitto): the binary runs children → gateway → hub over real TLS on loopback, stops and
//! restarts the hub, and checks every (child, sequence) off at the hub. The test asserts zero loss
//! and the JSON shape, never timings.

#![allow(clippy::unwrap_used)] // tests: a panic is a test failure

use std::process::Command;

use serde_json::Value;

#[test]
fn a_small_gateway_run_loses_nothing_through_an_outage() {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrohub"))
        .args([
            "bench",
            "gateway",
            "--children",
            "3",
            "--messages",
            "50",
            "--inflight",
            "4",
            "--outage-messages",
            "60",
            "--peer",
            "none",
            "--phase-timeout",
            "60",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench gateway failed:\n{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["zero_loss"], true);
    assert_eq!(v["children"], 3);
    assert_eq!(v["messages_per_child"], 50);
    assert_eq!(v["outage_messages"], 60);
    assert!(v["mosquitto"].is_null() && v["ratios"].is_null(), "{v:#}");
    assert!(v["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert!(v["command"].as_str().unwrap().contains("gateway"));

    let e2e = &v["ferrohub"]["end_to_end"];
    assert_eq!(e2e["sent"], 150);
    assert_eq!(e2e["acknowledged"], 150);
    assert_eq!(e2e["arrived"], 150);
    assert_eq!(e2e["lost"], 0);
    assert_eq!(e2e["unexpected"], 0);
    assert_eq!(e2e["complete"], true);
    assert!(e2e["msgs_per_sec"].as_f64().unwrap() > 0.0);

    // The hub was down while the gateway acknowledged these 60; all of them reached it after.
    let outage = &v["ferrohub"]["outage"];
    assert_eq!(outage["sent"], 60);
    assert_eq!(outage["acknowledged"], 60);
    assert_eq!(outage["arrived"], 60);
    assert_eq!(outage["lost"], 0);
    assert_eq!(outage["complete"], true);
    for key in [
        "seconds",
        "ingest_msgs_per_sec",
        "drain_msgs_per_sec",
        "duplicates",
    ] {
        assert!(outage[key].is_number(), "{key} in {outage:#}");
    }

    // 3 warm-up messages + 150 + 60 went through the gateway's store and up to the hub.
    let details = &v["ferrohub"]["details"];
    assert!(
        details["gateway_forwarded"].as_u64().unwrap() >= 213,
        "{details:#}"
    );
    let at_hub: u64 = details["hub_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["appends"].as_u64().unwrap())
        .sum();
    assert!(at_hub >= 213, "{details:#}");
}
