//! `ferrohub bench idle`: N idle MQTT connections held open (mTLS, CONNECT accepted, keep-alive
//! 300 s so nothing is sent while they are held), and the server's resident memory growth per
//! connection: (VmRSS after − VmRSS before) / N, read from `/proc/PID/status` of the server process
//! (`ferrohub hub --config …` as a child, or mosquitto). Without TLS: each server again, fresh, on a
//! plain listener (the hub's `listen.mqtt_plain`, devices signing in with a policy SAS token).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::stats::{Goal, Machine, Report, lookup, ratio};
use super::target::{self, Fixture, Peer, ServerArgs, Target};

#[derive(Debug, Args)]
pub struct IdleArgs {
    /// Idle connections to hold open (at most 19,000; each needs a file descriptor here and at
    /// the server).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connection attempts in flight at once while opening them.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Seconds to wait after the last connection before reading the server's RSS.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// Skip mosquitto's without-TLS round.
    #[arg(long)]
    no_plain: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(args: IdleArgs) -> Result<bool> {
    let n = args.connections;
    super::process::check_connection_count(n)?;
    let machine = Machine::now();
    let peer_version = args.server.peer_version()?;
    let fx = Fixture::new(n)?;
    eprintln!("ferrohub: {n} idle mTLS connections ...");
    let cpus = args.server.server_cpus.clone();
    let t = Target::ferrohub(&fx, cpus.clone(), !args.no_plain).await?;
    let r = hold(&t, &fx, &args, false).await;
    t.stop().await?;
    let mut ferrohub = r?;
    if !args.no_plain {
        // A fresh process, so the TLS round's memory does not count.
        eprintln!("ferrohub: {n} idle plain connections ...");
        let t = Target::ferrohub(&fx, cpus, true).await?;
        let r = hold(&t, &fx, &args, true).await;
        t.stop().await?;
        ferrohub["plain"] = r?;
    }
    let mosquitto = if args.server.peer == Peer::Mosquitto {
        eprintln!("mosquitto: {n} idle mTLS connections ...");
        let t = target::start("mosquitto", &fx, &args.server).await?;
        let r = hold(&t, &fx, &args, false).await;
        t.stop().await?;
        let mut m = r?;
        if !args.no_plain {
            eprintln!("mosquitto: {n} idle plain connections ...");
            let cpus = args.server.server_cpus.clone();
            let t = Target::mosquitto(&fx, &args.server.mosquitto, cpus, true).await?;
            let r = hold(&t, &fx, &args, true).await;
            t.stop().await?;
            m["plain"] = r?;
        }
        Some(m)
    } else {
        None
    };
    let mut report = Report::new("idle", "mtls", machine, peer_version.as_deref());
    report.server_cpus = args.server.server_cpus.clone();
    report.params = json!({"connections": n, "concurrency": args.concurrency,
        "settle_seconds": args.settle, "keep_alive_seconds": 300});
    report.ferrohub = ferrohub;
    report.mosquitto = mosquitto;
    let m = report.mosquitto.as_ref();
    let per_conn = ratio(
        lookup(&report.ferrohub, "bytes_per_connection"),
        m.and_then(|m| lookup(m, "bytes_per_connection")),
    );
    let plain = lookup(&report.ferrohub["plain"], "bytes_per_connection");
    let plain_ratio = ratio(
        plain,
        m.and_then(|m| lookup(&m["plain"], "bytes_per_connection")),
    );
    report.ratios = json!({"bytes_per_connection_lower_is_better": per_conn,
        "plain_bytes_per_connection_lower_is_better": plain_ratio});
    report.goal = Goal {
        text: "≤ 0.8× mosquitto's RSS per idle mTLS connection, and ≤ 10 KB without TLS".into(),
        // Both parts, when both were measured (--no-plain leaves the second out).
        met: per_conn.map(|r| r <= 0.8 && plain.is_none_or(|b| b <= 10_000.0)),
    };
    report.zero_loss = std::iter::once(&report.ferrohub)
        .chain(m)
        .all(|r| r["failed"] == 0);
    report.emit(args.server.json)?;
    Ok(report.zero_loss)
}

/// Opens `connections` idle connections to `target` (TLS, or plain when `plain`), reads the
/// server's RSS before, with all of them open, and after closing them.
async fn hold(target: &Target, fx: &Fixture, args: &IdleArgs, plain: bool) -> Result<Value> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.process.rss_kib()?;
    let n = args.connections;
    let what = if plain { "plain" } else { "mTLS" };
    let pb = super::bar(n as u64, &format!("{} {what} connections", target.name));
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for c in fx.devices.iter().take(n) {
        let (slots, pb, id) = (slots.clone(), pb.clone(), c.id.clone());
        let addr = if plain {
            target.plain
        } else {
            Some(target.mqtt())
        };
        let addr = addr.context("no plain listener")?;
        let cfg = if plain {
            None
        } else {
            Some(super::mqtt::client_config(c, fx.roots.clone())?)
        };
        // The hub's plain listener wants a SAS token; mosquitto's takes anyone.
        let password = match (plain, target.name) {
            (true, "ferrohub") => Some(Target::plain_password(fx, &id)?),
            _ => None,
        };
        tasks.push(tokio::spawn(async move {
            let _permit = slots.acquire_owned().await?;
            let conn = match cfg {
                Some(cfg) => Conn::Tls(Box::new(
                    super::mqtt::connect_tls(addr, cfg, &id, 300).await?,
                )),
                None => Conn::Plain(super::mqtt::connect_plain(addr, &id, 300, password).await?),
            };
            pb.inc(1);
            anyhow::Ok(conn)
        }));
    }
    let (mut held, errors) = super::process::gather(tasks).await?;
    pb.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = target.process.rss_kib()?;
    let connected = held.len();
    for c in &mut held {
        c.close().await;
    }
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = target.process.rss_kib()?;
    let bytes = (after.saturating_sub(before) * 1024) as f64 / connected.max(1) as f64;
    Ok(json!({
        "connections": n,
        "connected": connected,
        "failed": n - connected,
        "errors": errors,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_close_kib": after_close,
        "bytes_per_connection": bytes,
        "kb_per_connection": bytes / 1000.0,
    }))
}

enum Conn {
    Tls(Box<super::mqtt::Tls>),
    Plain(tokio::net::TcpStream),
}

impl Conn {
    async fn close(&mut self) {
        match self {
            Conn::Tls(t) => super::mqtt::disconnect(t.as_mut()).await,
            Conn::Plain(t) => super::mqtt::disconnect(t).await,
        }
    }
}
