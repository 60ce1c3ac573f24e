//! `ferrohub bench telemetry`: QoS 0 or 1 telemetry over TLS from N X.509 devices, against
//! `ferrohub hub` (a child process, fsync on: a QoS 1 PUBACK means the record is fdatasync'ed)
//! and then, in the same invocation, against mosquitto configured like it. Throughput is counted
//! at the consumer (first publish → last arrival); latency is publish → arrival at the consumer
//! (HdrHistogram), and for QoS 1 also publish → PUBACK. With `--rate` the load is open loop and
//! how far the sends fell behind the schedule is reported, so a stall is not hidden.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use mqtt_codec::{Packet, QoS};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

use super::consumer::{self, Arrivals, Consumer, Shared, lock, now_us};
use super::stats::{Goal, Latency, Machine, Report, lookup, ratio};
use super::target::{self, Fixture, Peer, ServerArgs, Target};
use crate::clock;

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    /// Devices, each with its own certificate and TLS connection (at most 5000).
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Messages per device (ignored with --rate; devices × messages at most 10,000,000).
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Unacknowledged QoS 1 publishes per device.
    #[arg(long, default_value_t = 32)]
    inflight: usize,
    /// Body bytes (at least 32: sequence, device and send time).
    #[arg(long, default_value_t = 256)]
    payload: usize,
    /// MQTT QoS of the publishes (0 or 1); the consumer subscribes with the same.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// Total messages/s across devices (open loop); off = as fast as the window allows.
    #[arg(long)]
    rate: Option<u64>,
    /// Duration of a --rate run (at most 300).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds the measured phase may take before it is reported as incomplete (at most 600).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[command(flatten)]
    server: ServerArgs,
}

struct Plan {
    devices: usize,
    messages: usize,
    inflight: usize,
    payload: usize,
    qos: QoS,
    /// Seconds between two messages of one device (open loop).
    interval: Option<f64>,
    timeout: Duration,
}

pub async fn run(args: TelemetryArgs) -> Result<bool> {
    if args.devices == 0 || args.devices > 5000 || args.inflight == 0 || args.seconds > 300 {
        bail!("--devices must be 1..=5000, --inflight at least 1, --seconds at most 300");
    }
    let messages = match args.rate {
        Some(r) => ((r * args.seconds) as usize).div_ceil(args.devices),
        None => args.messages,
    };
    if messages == 0 || messages.saturating_mul(args.devices) > 10_000_000 {
        bail!("devices × messages must be 1..=10,000,000");
    }
    let plan = Plan {
        devices: args.devices,
        messages,
        inflight: args.inflight,
        payload: args.payload.max(consumer::BODY_HEADER),
        qos: if args.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        interval: args.rate.map(|r| args.devices as f64 / r.max(1) as f64),
        timeout: Duration::from_secs(args.timeout.clamp(1, 600)),
    };
    let machine = Machine::now();
    let peer_version = args.server.peer_version()?;
    // One certificate more than devices: mosquitto's subscriber.
    let fx = Fixture::new(plan.devices + 1)?;
    let mut results = Vec::new();
    for name in ["ferrohub", "mosquitto"] {
        if name == "mosquitto" && args.server.peer == Peer::None {
            continue;
        }
        eprintln!("{name}: {} devices, QoS {} ...", plan.devices, args.qos);
        let t = target::start(name, &fx, &args.server).await?;
        let r = round(&t, &fx, &plan).await;
        t.stop().await?;
        results.push(r?);
    }
    let variant = format!(
        "qos{}{}",
        args.qos,
        if args.rate.is_some() { "-rate" } else { "" }
    );
    let mut report = Report::new("telemetry", &variant, machine, peer_version.as_deref());
    report.server_cpus = args.server.server_cpus.clone();
    report.params = json!({
        "devices": plan.devices, "messages_per_device": plan.messages, "inflight": plan.inflight,
        "payload_bytes": plan.payload, "qos": args.qos, "rate": args.rate,
        "seconds": args.rate.map(|_| args.seconds),
    });
    let mut results = results.into_iter();
    report.ferrohub = results.next().unwrap_or(Value::Null);
    report.mosquitto = results.next();
    let m = report.mosquitto.as_ref();
    let key = |k: &str| ratio(lookup(&report.ferrohub, k), m.and_then(|m| lookup(m, k)));
    report.ratios = json!({
        "msgs_per_sec": key("msgs_per_sec"),
        "e2e_p99_lower_is_better": key("e2e_latency.p99_ms"),
        "ack_p99_lower_is_better": key("ack_latency.p99_ms"),
    });
    report.goal = goal(&args, &report);
    report.zero_loss = std::iter::once(&report.ferrohub)
        .chain(m)
        .all(|r| r["lost"] == 0 && r["complete"] == true);
    report.emit(args.server.json)?;
    Ok(report.zero_loss)
}

fn goal(args: &TelemetryArgs, r: &Report) -> Goal {
    match (args.qos, args.rate) {
        (1, None) => Goal {
            text: "QoS 1 over TLS, durable: ≥ 1.5× mosquitto msgs/s".into(),
            met: r.ratios["msgs_per_sec"].as_f64().map(|x| x >= 1.5),
        },
        (1, Some(rate)) => Goal {
            text: format!("p99 publish → consumer ≤ 2 ms at {rate} msg/s"),
            met: lookup(&r.ferrohub, "e2e_latency.p99_ms").map(|p| p <= 2.0),
        },
        _ => Goal {
            text: "QoS 0: no goal in the issue; side by side for reference".into(),
            met: None,
        },
    }
}

/// One server: consumer, devices, warm-up, the measured phase; returns its results as JSON.
async fn round(target: &Target, fx: &Fixture, plan: &Plan) -> Result<Value> {
    let arrivals = Arrivals::new(plan.devices, plan.messages);
    let consumer = Consumer::start(target, fx, plan.qos, arrivals.clone()).await?;
    let conns = tokio::time::timeout(plan.timeout, connect_all(target, fx, plan.devices))
        .await
        .context("the devices could not all connect within --timeout")??;
    // Warm-up: one message per device must reach the consumer before anything is timed.
    let mut conns = warm_up(conns, plan, &arrivals, target).await?;
    let cpu = super::process::CpuMark::now(&target.process);
    let began = clock::instant();
    lock(&arrivals).begin(began, 100);
    let pb = super::bar(
        (plan.devices * plan.messages) as u64,
        &format!("{} publishing", target.name),
    );
    let mut tasks = Vec::with_capacity(plan.devices);
    let shared = Arc::new(PlanCopy::from(plan));
    for (i, tls) in conns.drain(..).enumerate() {
        let (shared, pb) = (shared.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            device(tls, i, shared, began, pb).await
        }));
    }
    let (mut acked, mut ack_lat, mut sent, mut last_ack) = (0u64, Latency::new(), 0u64, began);
    let mut lag_us = 0u64;
    let publishing = async {
        for t in tasks {
            let out = t.await.context("a device task panicked")??;
            acked += out.acked;
            sent += out.sent;
            ack_lat.add(&out.latency);
            last_ack = last_ack.max(out.last_ack);
            lag_us = lag_us.max(out.lag_us);
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(plan.timeout, publishing)
        .await
        .context("the devices did not finish publishing within --timeout")??;
    pb.finish_and_clear();
    let total = (plan.devices * plan.messages) as u64;
    let deadline = began + plan.timeout;
    let complete = loop {
        if lock(&arrivals).unique >= total {
            break true;
        }
        if clock::instant() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let cpu = cpu.since(&target.process);
    let records = consumer.finish().await?;
    let a = lock(&arrivals);
    let seconds = a
        .last
        .map_or(0.0, |l| l.duration_since(began).as_secs_f64());
    let ack_seconds = last_ack.duration_since(began).as_secs_f64();
    let per = |k: &str| cpu[k].as_f64().map(|s| s * 1e6 / a.unique.max(1) as f64);
    Ok(json!({
        "cpu": cpu,
        "server_cpu_us_per_message": per("server_cpu_seconds"),
        "bench_cpu_us_per_message": per("bench_cpu_seconds"),
        "sent": sent,
        "acknowledged": (plan.qos == QoS::AtLeastOnce).then_some(acked),
        "arrived": a.unique,
        "lost": total.saturating_sub(a.unique),
        "duplicates": a.duplicates,
        "unexpected": a.unexpected,
        "complete": complete,
        "consumer_records": records,
        "max_send_lag_ms": plan.interval.map(|_| lag_us as f64 / 1000.0),
        "seconds": seconds,
        "msgs_per_sec": if seconds > 0.0 { a.unique as f64 / seconds } else { 0.0 },
        "ack_msgs_per_sec": (plan.qos == QoS::AtLeastOnce && ack_seconds > 0.0)
            .then(|| acked as f64 / ack_seconds),
        "e2e_latency": a.latency.summary(),
        "ack_latency": (plan.qos == QoS::AtLeastOnce).then(|| ack_lat.summary()),
        "timeline": a.timeline,
    }))
}

/// Connects every device (50 handshakes at a time).
async fn connect_all(
    target: &Target,
    fx: &Fixture,
    devices: usize,
) -> Result<Vec<super::mqtt::Tls>> {
    let pb = super::bar(
        devices as u64,
        &format!("{} connecting devices", target.name),
    );
    let slots = Arc::new(Semaphore::new(50));
    let mut tasks = Vec::with_capacity(devices);
    for c in fx.devices.iter().take(devices) {
        let cfg = super::mqtt::client_config(c, fx.roots.clone())?;
        let (addr, id, slots, pb) = (target.mqtt(), c.id.clone(), slots.clone(), pb.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = slots.acquire_owned().await?;
            let tls = super::mqtt::connect_tls(addr, cfg, &id, 300).await;
            pb.inc(1);
            tls
        }));
    }
    let mut conns = Vec::with_capacity(devices);
    for t in tasks {
        conns.push(t.await.context("a connect task panicked")??);
    }
    pb.finish_and_clear();
    Ok(conns)
}

async fn warm_up(
    mut conns: Vec<super::mqtt::Tls>,
    plan: &Plan,
    arrivals: &Shared,
    target: &Target,
) -> Result<Vec<super::mqtt::Tls>> {
    let log = || super::process::tail(&target.process.log, 15).join("\n");
    let mut out = Vec::new();
    for (i, c) in conns.iter_mut().enumerate() {
        out.clear();
        super::mqtt::encode_publish(&mut out, &topic(i), plan.qos, 1, consumer::probe(i))?;
        c.write_all(&out).await?;
        c.flush().await?;
    }
    if plan.qos == QoS::AtLeastOnce {
        for (i, c) in conns.iter_mut().enumerate() {
            let mut reader = super::mqtt::packet_reader(64);
            let read = super::mqtt::read_packet(c, &mut reader);
            match tokio::time::timeout(Duration::from_secs(20), read).await {
                Ok(Ok(Packet::PubAck(1))) => {}
                Ok(other) => {
                    bail!("expected PUBACK 1 for device {i}'s warm-up message, got {other:?}")
                }
                Err(_) => bail!(
                    "{}: no PUBACK for device {i}'s warm-up message within 20 s; its log:\n{}",
                    target.name,
                    log()
                ),
            }
        }
    }
    let deadline = clock::instant() + Duration::from_secs(20);
    while lock(arrivals).probes_seen < plan.devices {
        if clock::instant() >= deadline {
            let seen = lock(arrivals).probes_seen;
            bail!(
                "{}: {seen} of {} warm-up messages reached the consumer within 20 s; its log:\n{}",
                target.name,
                plan.devices,
                log()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(conns)
}

fn topic(i: usize) -> String {
    format!("devices/{}/messages/events/", target::device_id(i))
}

/// What a device task needs from the plan (owned, for spawned tasks).
struct PlanCopy {
    devices: usize,
    messages: usize,
    inflight: usize,
    payload: usize,
    qos: QoS,
    interval: Option<Duration>,
}

impl From<&Plan> for PlanCopy {
    fn from(p: &Plan) -> Self {
        Self {
            devices: p.devices,
            messages: p.messages,
            inflight: p.inflight,
            payload: p.payload,
            qos: p.qos,
            interval: p.interval.map(Duration::from_secs_f64),
        }
    }
}

struct DeviceOut {
    sent: u64,
    acked: u64,
    latency: Latency,
    last_ack: std::time::Instant,
    /// How far behind its schedule the latest send was (open loop).
    lag_us: u64,
}

/// At most this many publishes go out in one write when several are allowed at once.
const MAX_BATCH: usize = 16;

/// One device: a writer within the window (and schedule), a reader of PUBACKs in order.
async fn device(
    tls: super::mqtt::Tls,
    i: usize,
    p: Arc<PlanCopy>,
    began: std::time::Instant,
    pb: indicatif::ProgressBar,
) -> Result<DeviceOut> {
    let (mut rd, mut wr) = tokio::io::split(tls);
    let qos1 = p.qos == QoS::AtLeastOnce;
    let window = Arc::new(Semaphore::new(if qos1 {
        p.inflight
    } else {
        Semaphore::MAX_PERMITS
    }));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<std::time::Instant>();
    let (reader_window, reader_pb, n) = (window.clone(), pb.clone(), p.messages as u64);
    let reader = tokio::spawn(async move {
        let mut buf = super::mqtt::packet_reader(4096);
        let (mut latency, mut acked, mut last) = (Latency::new(), 0u64, began);
        while qos1 && acked < n {
            if let Packet::PubAck(_) = super::mqtt::read_packet(&mut rd, &mut buf).await? {
                // PUBACKs come in publish order, so this one answers the oldest publish.
                let sent = rx.recv().await.context("a PUBACK for nothing sent")?;
                last = clock::instant();
                latency.record(last.duration_since(sent));
                acked += 1;
                reader_window.add_permits(1);
                reader_pb.inc(1);
            }
        }
        anyhow::Ok((rd, latency, acked, last))
    });
    let (sent, lag_us) = write_all_messages(&mut wr, i, &p, &window, began, &tx, &pb).await?;
    let (rd, latency, acked, last_ack) = reader.await.context("a PUBACK reader panicked")??;
    let mut tls = rd.unsplit(wr);
    super::mqtt::disconnect(&mut tls).await;
    Ok(DeviceOut {
        sent,
        acked,
        latency,
        last_ack,
        lag_us,
    })
}

/// The writer half of [`device`]: every message within the window (and on schedule); returns how
/// many were sent and the largest lag behind the schedule (µs). The send time of each QoS 1 publish goes to the PUBACK reader, in order.
async fn write_all_messages(
    wr: &mut tokio::io::WriteHalf<super::mqtt::Tls>,
    i: usize,
    p: &PlanCopy,
    window: &Semaphore,
    began: std::time::Instant,
    tx: &tokio::sync::mpsc::UnboundedSender<std::time::Instant>,
    pb: &indicatif::ProgressBar,
) -> Result<(u64, u64)> {
    let mut lag_us = 0u64;
    let qos1 = p.qos == QoS::AtLeastOnce;
    let topic = topic(i);
    let mut out = Vec::with_capacity(MAX_BATCH * (p.payload + 64));
    let (mut seq, mut id) = (0usize, 0u16);
    while seq < p.messages {
        window.acquire().await?.forget();
        let mut k = 1;
        while p.interval.is_none()
            && k < MAX_BATCH
            && seq + k < p.messages
            && window.try_acquire().map(|g| g.forget()).is_ok()
        {
            k += 1;
        }
        let mut stamps = Vec::with_capacity(k);
        for _ in 0..k {
            // Open loop: each message has its due time; latency counts from when it was sent (the
            // timer wheel's 1 ms ticks would otherwise be counted as server latency), and how late
            // the sends were behind the schedule is reported (a stalled server shows up there).
            // Device i's schedule is shifted by i/devices of an interval, so the devices together
            // send an even stream at --rate rather than all at the same instant (a burst of
            // `devices` messages every interval, which no fleet of independent devices does).
            if let Some(iv) = p.interval {
                let phase = i as f64 / p.devices as f64;
                let due = began + iv.mul_f64(seq as f64 + phase);
                tokio::time::sleep_until(due.into()).await;
                lag_us = lag_us.max(u64::try_from(due.elapsed().as_micros()).unwrap_or(0));
            }
            let (sent_us, stamp) = (now_us(), clock::instant());
            id = id.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
            let payload = consumer::body(seq, i, sent_us, p.payload);
            super::mqtt::encode_publish(&mut out, &topic, p.qos, id, payload)?;
            stamps.push(stamp);
            seq += 1;
        }
        wr.write_all(&out).await?;
        wr.flush().await?;
        out.clear();
        if qos1 {
            for s in stamps {
                let _ = tx.send(s);
            }
        } else {
            pb.inc(stamps.len() as u64);
        }
    }
    Ok((seq as u64, lag_us))
}
