//! What every side-by-side scenario reports: latency histograms (HdrHistogram, microseconds),
//! throughput over time, the machine, and the JSON envelope `bench report` turns into tables and
//! plots.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // 1 µs ..= 600 s with 3 significant digits cannot be refused by the constructor.
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    pub fn add(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Summary {
        let h = &self.0;
        let ms = |us: u64| us as f64 / 1000.0;
        // The percentile curve the plots draw: 0, 50, 75, 87.5, ... up to 99.999 %.
        let mut distribution = Vec::new();
        if !h.is_empty() {
            let mut p = 0.0f64;
            while p < 99.9995 {
                distribution.push([p, ms(h.value_at_quantile(p / 100.0))]);
                p = if p == 0.0 {
                    50.0
                } else {
                    100.0 - (100.0 - p) / 2.0
                };
            }
            distribution.push([100.0, ms(h.max())]);
        }
        Summary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
            distribution,
        }
    }
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// `[percentile, ms]` points from 0 to 100 %, denser towards the tail.
    pub distribution: Vec<[f64; 2]>,
}

/// Events counted per fixed time bucket from `start`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timeline {
    pub bucket_ms: u64,
    pub counts: Vec<u64>,
    #[serde(skip)]
    start: Option<Instant>,
}

impl Timeline {
    pub fn new(start: Instant, bucket_ms: u64) -> Self {
        Self {
            bucket_ms: bucket_ms.max(1),
            counts: Vec::new(),
            start: Some(start),
        }
    }

    pub fn add(&mut self, at: Instant, n: u64) {
        let Some(start) = self.start else { return };
        let ms = u64::try_from(at.saturating_duration_since(start).as_millis()).unwrap_or(0);
        let i = usize::try_from(ms / self.bucket_ms).unwrap_or(usize::MAX);
        // Ten minutes of buckets at most: the bench's duration is bounded anyway.
        if i >= 600_000 / self.bucket_ms as usize {
            return;
        }
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
    }
}

/// The machine a result was measured on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub mem_gib: f64,
    pub kernel: String,
    /// `/proc/loadavg`'s first three fields when the scenario started.
    pub load_before: String,
    /// CPUs this bench process may run on (`taskset` shows up here).
    pub bench_cpus: String,
}

impl Machine {
    pub fn now() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let status = read("/proc/self/status");
        let bench_cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        // The machine's CPUs, not the ones `taskset` leaves this process.
        let nproc = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        Self {
            nproc,
            cpu,
            mem_gib: (mem_kib / 1_048_576.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_before: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            bench_cpus,
        }
    }
}

/// The common envelope of `--json` output: one scenario, ferrohub and (maybe) its peer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    /// A short name for this run's settings (`qos1`, `qos1-rate`, ...), for file and plot names.
    pub variant: String,
    pub command: String,
    pub machine: Machine,
    pub versions: serde_json::Value,
    /// `taskset -c` list the servers were pinned to, if any.
    pub server_cpus: Option<String>,
    pub params: serde_json::Value,
    pub ferrohub: serde_json::Value,
    pub mosquitto: Option<serde_json::Value>,
    /// ferrohub ÷ mosquitto for the scenario's headline figures (higher is better for ferrohub
    /// unless the key says otherwise).
    pub ratios: serde_json::Value,
    /// The goal for this scenario and whether this run met it.
    pub goal: Goal,
    pub zero_loss: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Goal {
    pub text: String,
    /// None: not measurable in this run (e.g. no peer).
    pub met: Option<bool>,
}

impl Report {
    /// A report with the command line, machine and versions filled in.
    pub fn new(scenario: &str, variant: &str, machine: Machine, mosquitto: Option<&str>) -> Self {
        Self {
            scenario: scenario.into(),
            variant: variant.into(),
            command: command_line(),
            machine,
            versions: serde_json::json!({
                "ferrohub": env!("CARGO_PKG_VERSION"),
                "mosquitto": mosquitto,
            }),
            server_cpus: None,
            params: serde_json::Value::Null,
            ferrohub: serde_json::Value::Null,
            mosquitto: None,
            ratios: serde_json::Value::Null,
            goal: Goal {
                text: String::new(),
                met: None,
            },
            zero_loss: true,
        }
    }

    /// Prints the report as JSON, or as a short table for people.
    pub fn emit(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        println!("{} ({}): {}", self.scenario, self.variant, self.command);
        println!(
            "machine: {} x {}, load {}; server CPUs {}",
            self.machine.nproc,
            self.machine.cpu,
            self.machine.load_before,
            self.server_cpus.as_deref().unwrap_or("not pinned")
        );
        println!("\n| figure | ferrohub | mosquitto | ratio |\n|---|---:|---:|---:|");
        for (label, key) in super::report::rows(&self.scenario) {
            let f = lookup(&self.ferrohub, key);
            let m = self.mosquitto.as_ref().and_then(|m| lookup(m, key));
            let ratio = match (f, m) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            println!("| {label} | {} | {} | {ratio} |", fmt(f), fmt(m));
        }
        let met = match self.goal.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured in this run",
        };
        println!("\ngoal: {}: {met}", self.goal.text);
        if !self.zero_loss {
            println!("LOSS or an unfinished run: the command fails.");
        }
        Ok(())
    }
}

/// `a.b.c` in a JSON value, as a number.
pub fn lookup(v: &serde_json::Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// A number for a table: thousands separators above 100, else 2–3 significant decimals.
pub fn fmt(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    if v.abs() >= 100.0 {
        return thousands(v);
    }
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `v` rounded, with thousands separators.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    if v < 0.0 {
        out.push('-');
    }
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a / b`, or None when `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// This process's command line, with the binary's path shortened to `ferrohub`.
pub fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "ferrohub".into();
    }
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_numbers() {
        let mut l = Latency::new();
        for us in 1..=1000 {
            l.record_us(us);
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.01, "{s:?}");
        assert_eq!(s.distribution.last().map(|p| p[0]), Some(100.0));
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(fmt(Some(0.0421)), "0.042");
        assert_eq!(fmt(None), "-");
        let v = serde_json::json!({"a": {"b": 2.0}});
        assert_eq!(lookup(&v, "a.b"), Some(2.0));
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
    }
}
