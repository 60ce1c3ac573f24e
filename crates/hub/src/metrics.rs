//! Prometheus metrics for the hub, rendered in the text exposition format.
//!
//! Names are fixed here (one place), counters are atomics, latency is a fixed-bucket histogram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrohub_runtime::metrics::Histogram;

/// Every metric the hub exports.
#[derive(Default)]
pub struct Metrics {
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicU64,
    pub connections_refused_limit: AtomicU64,
    pub auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Times a client ran into a `[limits]` budget, by the limit's name.
    pub limits_reached: Mutex<BTreeMap<&'static str, u64>>,
    /// When a limit was last logged (floods are logged at most once a second per limit).
    limit_logged: Mutex<BTreeMap<&'static str, tokio::time::Instant>>,
    pub protocol_errors: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Messages a gateway forwarded for a sender it may not speak for (acknowledged, dropped).
    pub messages_refused: AtomicU64,
    pub telemetry_bytes: AtomicU64,
    pub inflight: AtomicU64,
    /// From PUBLISH decoded to the record being durable.
    pub telemetry_latency: Histogram,
    pub http_requests: AtomicU64,
    pub http_errors: AtomicU64,
    pub methods_not_online: AtomicU64,
    pub methods_timed_out: AtomicU64,
    /// Cloud-to-device messages a device rejected (removed, as IoT Hub dead-letters them).
    pub c2d_rejected: AtomicU64,
    /// From the method request leaving the hub's queue to the device's answer.
    pub method_latency: Histogram,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        ferrohub_runtime::metrics::inc(c);
    }

    pub fn auth_failure(&self, reason: &'static str) {
        if let Ok(mut m) = self.auth_failures.lock() {
            *m.entry(reason).or_insert(0) += 1;
        }
    }

    /// Counts a client running into `limit` (its name in `[limits]`); returns the new total.
    pub fn limit_reached(&self, limit: &'static str) -> u64 {
        match self.limits_reached.lock() {
            Ok(mut m) => {
                let n = m.entry(limit).or_insert(0);
                *n += 1;
                *n
            }
            Err(_) => 0,
        }
    }

    /// Whether a line about `limit` may be logged now: at most one a second per limit, so a flood
    /// of refused connections does not become a flood of log lines.
    pub fn limit_log_due(&self, limit: &'static str) -> bool {
        let now = tokio::time::Instant::now();
        let Ok(mut last) = self.limit_logged.lock() else {
            return false;
        };
        match last.get(limit) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(1) => false,
            _ => {
                last.insert(limit, now);
                true
            }
        }
    }

    /// How often `limit` was reached so far.
    pub fn limit_count(&self, limit: &str) -> u64 {
        self.limits_reached
            .lock()
            .map_or(0, |m| m.get(limit).copied().unwrap_or(0))
    }

    /// The Prometheus text exposition.
    pub fn render(&self, log_records: u64) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "ferrohub_mqtt_connections_total",
            "counter",
            "MQTT connections accepted (TCP).",
            get(&self.connections_accepted),
        );
        counter(
            &mut out,
            "ferrohub_mqtt_connections_active",
            "gauge",
            "Authenticated MQTT connections open now.",
            get(&self.connections_active),
        );
        counter(
            &mut out,
            "ferrohub_mqtt_connections_refused_limit_total",
            "counter",
            "Connections refused by limits.max_connections.",
            get(&self.connections_refused_limit),
        );
        counter(
            &mut out,
            "ferrohub_mqtt_protocol_errors_total",
            "counter",
            "Connections closed for malformed or forbidden packets.",
            get(&self.protocol_errors),
        );
        counter(
            &mut out,
            "ferrohub_messages_in_total",
            "counter",
            "Device-to-cloud messages accepted.",
            get(&self.messages_in),
        );
        counter(
            &mut out,
            "ferrohub_messages_refused_total",
            "counter",
            "Messages a gateway forwarded for a device it may not speak for (dropped).",
            get(&self.messages_refused),
        );
        counter(
            &mut out,
            "ferrohub_messages_out_total",
            "counter",
            "Messages sent to devices.",
            get(&self.messages_out),
        );
        counter(
            &mut out,
            "ferrohub_telemetry_bytes_total",
            "counter",
            "Telemetry body bytes accepted.",
            get(&self.telemetry_bytes),
        );
        counter(
            &mut out,
            "ferrohub_telemetry_inflight",
            "gauge",
            "QoS 1 telemetry waiting to become durable.",
            get(&self.inflight),
        );
        counter(
            &mut out,
            "ferrohub_events_log_records",
            "gauge",
            "Records in the events log (next offset).",
            log_records,
        );
        counter(
            &mut out,
            "ferrohub_http_requests_total",
            "counter",
            "Service API requests.",
            get(&self.http_requests),
        );
        counter(
            &mut out,
            "ferrohub_http_errors_total",
            "counter",
            "Service API requests answered with an error.",
            get(&self.http_errors),
        );
        counter(
            &mut out,
            "ferrohub_methods_not_online_total",
            "counter",
            "Direct-method calls refused because the target was not connected and subscribed.",
            get(&self.methods_not_online),
        );
        counter(
            &mut out,
            "ferrohub_methods_timed_out_total",
            "counter",
            "Direct-method calls the target did not answer in time.",
            get(&self.methods_timed_out),
        );
        counter(
            &mut out,
            "ferrohub_c2d_rejected_total",
            "counter",
            "Cloud-to-device messages devices rejected (removed without redelivery).",
            get(&self.c2d_rejected),
        );
        let _ = writeln!(
            out,
            "# HELP ferrohub_auth_failures_total Refused device authentications by reason.\n# TYPE ferrohub_auth_failures_total counter"
        );
        if let Ok(m) = self.auth_failures.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "ferrohub_auth_failures_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferrohub_limits_reached_total Times a client ran into a [limits] budget, by limit: connection refused or closed, subscription refused, reading paused.\n# TYPE ferrohub_limits_reached_total counter"
        );
        if let Ok(m) = self.limits_reached.lock() {
            for (limit, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "ferrohub_limits_reached_total{{limit=\"{limit}\"}} {n}"
                );
            }
        }
        self.telemetry_latency.render(
            "ferrohub_telemetry_durable_seconds",
            "Time from PUBLISH received to the record being durable.",
            &mut out,
        );
        self.method_latency.render(
            "ferrohub_method_roundtrip_seconds",
            "Time from a direct method call being sent to the device's answer.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_reasons_and_buckets() {
        let m = Metrics::default();
        Metrics::inc(&m.messages_in);
        m.auth_failure("unknown_device");
        m.auth_failure("unknown_device");
        assert_eq!(m.limit_reached("max_connections_per_ip"), 1);
        assert_eq!(m.limit_reached("max_connections_per_ip"), 2);
        assert_eq!(m.limit_count("max_connections_per_ip"), 2);
        m.telemetry_latency.observe(Duration::from_micros(700));
        m.telemetry_latency.observe(Duration::from_secs(9));
        let text = m.render(5);
        assert!(text.contains("ferrohub_messages_in_total 1"));
        assert!(text.contains("ferrohub_auth_failures_total{reason=\"unknown_device\"} 2"));
        assert!(text.contains("ferrohub_telemetry_durable_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("ferrohub_telemetry_durable_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("ferrohub_events_log_records 5"));
        assert!(text.contains("ferrohub_limits_reached_total{limit=\"max_connections_per_ip\"} 2"));
    }
}
