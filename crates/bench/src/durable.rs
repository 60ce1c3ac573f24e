//! `ferrohub bench durable-log`: appends to a durable-log with group commit and fdatasync (the
//! hub's events log). W concurrent writers each append a record and wait until it is durable
//! before the next, so every counted append was acknowledged after the fdatasync of its commit.
//! Afterwards the log is closed and reopened: recovery must find every acknowledged record, with
//! its CRC intact. There is no peer: the figure is compared with the goal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde_json::json;

use super::stats::{Goal, Latency, Machine, Report, Timeline};
use crate::clock;

#[derive(Debug, Args)]
pub struct DurableArgs {
    /// Concurrent writers, each with one append in flight.
    #[arg(long, default_value_t = 512)]
    writers: usize,
    /// Record payload bytes.
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// How long to append (at most 300 s).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many appends instead (at most 100,000,000).
    #[arg(long)]
    appends: Option<u64>,
    /// Directory for the log (a fresh temporary directory inside it; default: the system's).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DurableArgs) -> Result<bool> {
    if args.writers == 0 || args.writers > 100_000 || args.seconds > 300 {
        bail!("--writers must be 1..=100000 and --seconds at most 300");
    }
    if args.appends.is_some_and(|n| n == 0 || n > 100_000_000) {
        bail!("--appends must be 1..=100000000");
    }
    let machine = Machine::now();
    let dir = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .context("cannot create a temporary directory")?;
    let config = durable_log::LogConfig {
        dir: dir.path().join("log"),
        fsync: true,
        ..durable_log::LogConfig::default()
    };
    let (log, _) = durable_log::Log::open(config.clone())?;
    let began = clock::instant();
    let (lat, counts, acked) = append_phase(&log, &args, began).await?;
    let elapsed = began.elapsed().as_secs_f64();
    let stats = log.stats();
    log.close()?;
    // Recovery must find every acknowledged record (and verifies the last segment's CRCs).
    let (reopened, recovery) = durable_log::Log::open(config)?;
    let recovered = reopened.next_offset();
    let readable = count_readable(&reopened)?;
    reopened.close()?;
    let rate = acked as f64 / elapsed.max(1e-9);
    let mut report = Report::new("durable-log", "append-256", machine, None);
    report.params = json!({"writers": args.writers, "payload_bytes": args.payload,
        "seconds": args.appends.is_none().then_some(args.seconds), "appends": args.appends,
        "fsync": true, "max_batch": durable_log::LogConfig::default().max_batch,
        "filesystem_of": dir.path().display().to_string()});
    report.ferrohub = json!({
        "acknowledged": acked,
        "recovered": recovered,
        "readable_after_reopen": readable,
        "truncated_bytes_on_reopen": recovery.truncated_bytes,
        "lost": acked.saturating_sub(readable),
        "complete": readable >= acked,
        "seconds": elapsed,
        "appends_per_sec": rate,
        "fsynced_commits": stats.commits,
        "records_per_commit": stats.appends as f64 / stats.commits.max(1) as f64,
        "latency": lat.summary(),
        "timeline": {"bucket_ms": 100, "counts": counts},
    });
    report.ratios = json!({"vs_goal_200k": rate / 200_000.0});
    report.goal = Goal {
        text: format!(
            "durable-log appends, {} B, group commit: ≥ 200,000/s, each acknowledged append durable",
            args.payload
        ),
        met: Some(rate >= 200_000.0 && readable >= acked),
    };
    report.zero_loss = readable >= acked;
    report.emit(args.json)?;
    Ok(report.zero_loss)
}

/// W writers append until the time (or the count) is up; returns the latencies, appends per
/// 100 ms and the number of acknowledged appends.
async fn append_phase(
    log: &durable_log::Log,
    args: &DurableArgs,
    began: std::time::Instant,
) -> Result<(Latency, Vec<u64>, u64)> {
    let budget = args
        .appends
        .map(|n| Arc::new(std::sync::atomic::AtomicU64::new(n)));
    let stop = Arc::new(AtomicBool::new(false));
    let pb = super::bar(args.appends.unwrap_or(0), "durable appends");
    let mut tasks = Vec::with_capacity(args.writers);
    for w in 0..args.writers {
        let (log, budget, stop, pb) = (log.clone(), budget.clone(), stop.clone(), pb.clone());
        let payload = vec![b'a' + (w % 26) as u8; args.payload];
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut tl, mut n) = (Latency::new(), Timeline::new(began, 100), 0u64);
            while !stop.load(Ordering::Relaxed) {
                if let Some(b) = &budget
                    && b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                        .is_err()
                {
                    break;
                }
                let t = clock::instant();
                let ts = u64::try_from(clock::now().unix_timestamp()).unwrap_or(0) * 1000;
                log.append(ts, payload.clone()).await?;
                let done = clock::instant();
                lat.record(done.duration_since(t));
                tl.add(done, 1);
                n += 1;
                pb.inc(1);
            }
            anyhow::Ok((lat, tl, n))
        }));
    }
    if args.appends.is_none() {
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let (mut lat, mut counts, mut acked) = (Latency::new(), Vec::<u64>::new(), 0u64);
    for t in tasks {
        let (l, tl, n) = t.await.context("a writer panicked")??;
        lat.add(&l);
        if counts.len() < tl.counts.len() {
            counts.resize(tl.counts.len(), 0);
        }
        for (c, x) in counts.iter_mut().zip(&tl.counts) {
            *c += x;
        }
        acked += n;
    }
    pb.finish_and_clear();
    Ok((lat, counts, acked))
}

/// Reads the whole log back (each record's CRC is checked by the reader); returns the count.
fn count_readable(log: &durable_log::Log) -> Result<u64> {
    let (mut offset, mut n) = (log.start_offset(), 0u64);
    loop {
        let batch = log.read(offset, 65_536, 64 << 20)?;
        let Some(last) = batch.last() else {
            return Ok(n);
        };
        offset = last.offset + 1;
        n += batch.len() as u64;
    }
}
