//! Store-and-forward: every message a child or module sent is already durable in the gateway's
//! local events log (acknowledged after fsync). Two tasks read that log, each with its own
//! recorded position, and route every message:
//!
//! - the upstream task (see [`crate::pipeline`]) sends `$upstream` messages to the hub as their
//!   sender (on its behalf), in order per sender, and records how far the hub has acknowledged;
//! - the inputs task puts `BrokeredEndpoint("/modules/{m}/inputs/{i}")` messages in module `m`'s
//!   durable input queue (delivered over MQTT, completed by the module's PUBACK).
//!
//! While the hub is away the log keeps the backlog; after a restart each task resumes from its
//! recorded position, so delivery is at least once. A message older than its route's
//! `timeToLiveSecs` (or the store's TTL) when its turn comes is dropped and counted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use durable_log::Record;
use hub::events::EventRecord;
use iot_auth::topic::{PropertyBag, SystemProperty};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Gateway;

/// System properties a sender sets that travel with the message (upstream and to module inputs).
const CARRIED: [SystemProperty; 8] = [
    SystemProperty::MessageId,
    SystemProperty::CorrelationId,
    SystemProperty::UserId,
    SystemProperty::ContentType,
    SystemProperty::ContentEncoding,
    SystemProperty::CreationTimeUtc,
    SystemProperty::MessageSchema,
    SystemProperty::OutputName,
];

/// Live messages a module's input queue may hold before routing to it waits.
pub const INPUT_DEPTH: usize = 1000;

/// Which sink a forwarding task serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lane {
    Upstream,
    Inputs,
}

impl Lane {
    fn file(self) -> &'static str {
        match self {
            Lane::Upstream => "forwarded-offset",
            Lane::Inputs => "inputs-offset",
        }
    }
}

fn offset_file(g: &Gateway, lane: Lane) -> PathBuf {
    g.config.data_dir.join(lane.file())
}

/// The recorded position of a lane (0 when none).
pub fn load_offset(g: &Gateway, lane: Lane) -> u64 {
    std::fs::read_to_string(offset_file(g, lane))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// How often, at most, a lane's committed offset is written by time alone.
const SAVE_EVERY: Duration = Duration::from_millis(100);
/// A lane's offset is also written once it is this many records past the saved one.
const SAVE_EVERY_RECORDS: u64 = 4096;

/// When a lane's committed offset is written: once it is [`SAVE_EVERY`] old or
/// [`SAVE_EVERY_RECORDS`] behind, and when the lane idles or stops. Forwarding is at least once,
/// so after a crash at most that much is sent again (never skipped), and a busy gateway does not
/// rewrite the offset file after every batch.
pub(crate) struct OffsetSaver {
    lane: Lane,
    saved: u64,
    due: tokio::time::Instant,
}

impl OffsetSaver {
    pub(crate) fn new(lane: Lane, offset: u64) -> Self {
        Self {
            lane,
            saved: offset,
            due: tokio::time::Instant::now(),
        }
    }

    /// Whether `offset` is not written yet.
    pub(crate) fn behind(&self, offset: u64) -> bool {
        offset != self.saved
    }

    /// When an unwritten offset is due by time (for a lane waiting for new records).
    pub(crate) fn due(&self) -> tokio::time::Instant {
        self.due
    }

    /// Writes `offset` if it moved and is due, or anyway when `now` is set.
    pub(crate) async fn offer(&mut self, g: &Gateway, offset: u64, now: bool) {
        let due = tokio::time::Instant::now() >= self.due
            || offset.saturating_sub(self.saved) >= SAVE_EVERY_RECORDS;
        if self.behind(offset) && (now || due) {
            save_offset(g, self.lane, offset).await;
            self.saved = offset;
            self.due = tokio::time::Instant::now() + SAVE_EVERY;
        }
    }
}

/// Replaces the lane's offset file atomically and durably (after a crash it holds the old offset
/// or the new one), on a blocking thread: its fsyncs would stall the tasks sharing this one.
async fn save_offset(g: &Gateway, lane: Lane, offset: u64) {
    let path = offset_file(g, lane);
    let write = move || {
        ferrohub_runtime::atomic::write(
            &path,
            offset.to_string().as_bytes(),
            ferrohub_runtime::fsperm::FILE_MODE,
        )
    };
    let written = tokio::task::spawn_blocking(write)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    match written {
        Ok(()) => {
            let slot = match lane {
                Lane::Upstream => &g.stats.upstream_offset,
                Lane::Inputs => &g.stats.inputs_offset,
            };
            slot.store(offset, Ordering::Relaxed);
        }
        Err(e) => warn!(error = %e, "Could not record the forwarding offset"),
    }
}

/// The sinks the current routes pick for a stored message, with the shortest TTL among the
/// routes to each sink.
fn sinks(g: &Gateway, ev: &EventRecord, body: &[u8]) -> Vec<(routes::Sink, Option<u64>)> {
    let mut system: BTreeMap<String, String> = ev.system_properties.clone();
    system.insert("connectionDeviceId".into(), ev.device_id.clone());
    if let Some(m) = &ev.module_id {
        system.insert("connectionModuleId".into(), m.clone());
    }
    let output = ev.system_properties.get("outputName").map(String::as_str);
    let source = match &ev.module_id {
        Some(m) => routes::Source::Module { module: m, output },
        None => routes::Source::Device,
    };
    let msg = routes::Message {
        source,
        system: &system,
        app: &ev.properties,
        body,
    };
    let table = g.routes();
    let mut out: Vec<(routes::Sink, Option<u64>)> = Vec::new();
    for r in routes::select(&table, &msg) {
        let ttl = r.ttl_secs.or(g.store_ttl_secs());
        match out.iter_mut().find(|(s, _)| *s == r.sink) {
            Some((_, t)) => *t = min_ttl(*t, ttl),
            None => out.push((r.sink.clone(), ttl)),
        }
    }
    out
}

fn min_ttl(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn expired(g: &Gateway, rec: &Record, ttl: Option<u64>) -> bool {
    let Some(ttl) = ttl else { return false };
    let now = u64::try_from(ferrohub_runtime::time::now_ms(g.clock.as_ref())).unwrap_or(0);
    now.saturating_sub(rec.timestamp_ms) > ttl.saturating_mul(1000)
}

fn carried(ev: &EventRecord) -> PropertyBag {
    let mut bag = PropertyBag::new();
    for p in CARRIED {
        if let Some(v) = ev.system_properties.get(p.name()) {
            bag.push_system(p, v.clone());
        }
    }
    for (k, v) in &ev.properties {
        bag.push(k.clone(), v.clone());
    }
    bag
}

pub(crate) fn client_of(ev: &EventRecord) -> String {
    match &ev.module_id {
        Some(m) => format!("{}/{m}", ev.device_id),
        None => ev.device_id.clone(),
    }
}

/// Runs one lane until `shutdown`; never skips a message it must deliver: on a failure it waits
/// and retries the same one.
pub async fn run(g: Arc<Gateway>, lane: Lane, mut shutdown: watch::Receiver<bool>) {
    if lane == Lane::Upstream {
        return crate::pipeline::run(g, shutdown).await;
    }
    let mut offset = load_offset(&g, lane).max(g.local.events.start_offset());
    let mut head = g.local.events.subscribe();
    let mut saver = OffsetSaver::new(lane, offset);
    info!(offset, ?lane, "Forwarding");
    loop {
        let records = match g.local.events.read(offset, 256, 4 << 20) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Could not read the store");
                Vec::new()
            }
        };
        if records.is_empty() {
            tokio::select! {
                _ = head.changed() => continue,
                () = tokio::time::sleep_until(saver.due()), if saver.behind(offset) => {
                    saver.offer(&g, offset, true).await;
                    continue;
                }
                _ = shutdown.changed() => {
                    saver.offer(&g, offset, true).await;
                    return;
                }
            }
        }
        let done = inputs_pass(&g, records, &mut offset, &mut shutdown).await;
        saver.offer(&g, offset, !done).await;
        if !done {
            return;
        }
    }
}

/// The upstream topic of a stored message when a route sends it to `$upstream` and it has not
/// outlived the route's TTL (expired ones are counted).
pub(crate) fn upstream_message(g: &Gateway, rec: &Record, ev: &EventRecord) -> Option<String> {
    let body = ev.body_bytes();
    let (_, ttl) = sinks(g, ev, &body)
        .into_iter()
        .find(|(s, _)| *s == routes::Sink::Upstream)?;
    if expired(g, rec, ttl) {
        g.stats.expired.fetch_add(1, Ordering::Relaxed);
        debug!(offset = rec.offset, "Dropped an expired message");
        return None;
    }
    Some(iot_auth::topic::telemetry_topic(
        &ev.device_id,
        ev.module_id.as_deref(),
        &carried(ev),
    ))
}

/// Sends one sender's batch (store offset, topic, body) until the hub has it all; `false` when
/// shut down first. Messages the store dropped meanwhile (TTL, `drop_oldest`) are not sent.
pub(crate) async fn deliver(
    g: &Arc<Gateway>,
    client: &str,
    mut batch: Vec<(u64, String, Vec<u8>)>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        let start = g.local.events.start_offset();
        batch.retain(|(offset, _, _)| *offset >= start);
        if batch.is_empty() {
            return true;
        }
        let n = batch.len() as u64;
        let messages = batch
            .iter()
            .map(|(_, t, b)| (t.clone(), b.clone()))
            .collect();
        match g.relay.forward_batch(messages).await {
            Ok(()) => {
                g.forwarded.fetch_add(n, Ordering::Relaxed);
                return true;
            }
            Err(e) => {
                g.stats.upstream_retries.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, client, held = n, "Hub unreachable; holding messages");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return false,
                }
            }
        }
    }
}

/// Puts a page of records in module input queues; `false` when shut down first.
async fn inputs_pass(
    g: &Arc<Gateway>,
    records: Vec<Record>,
    offset: &mut u64,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    for rec in records {
        let Ok(ev) = serde_json::from_slice::<EventRecord>(&rec.payload) else {
            *offset = rec.offset + 1;
            continue;
        };
        let body = ev.body_bytes();
        for (sink, ttl) in sinks(g, &ev, &body) {
            let routes::Sink::ModuleInput { module, input } = sink else {
                continue;
            };
            if expired(g, &rec, ttl) {
                g.stats.expired.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let target = format!("{}/{module}", g.config.edge_id);
            let msg = input_message(&ev, &body, &input, &rec, ttl);
            loop {
                match hub::c2d::enqueue(&g.local, &target, &msg, INPUT_DEPTH) {
                    Ok(true) => {
                        g.stats.to_modules.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(false) => debug!(target, "Module input queue full; waiting"),
                    Err(e) => warn!(error = %e, target, "Cannot queue a module input message"),
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => return false,
                }
            }
        }
        *offset = rec.offset + 1;
    }
    true
}

/// A stored message as a module input message: the sender's properties, plus the connection
/// device/module id system properties IoT Edge adds.
fn input_message(
    ev: &EventRecord,
    body: &[u8],
    input: &str,
    rec: &Record,
    ttl: Option<u64>,
) -> hub::store::C2dMessage {
    let mut system = BTreeMap::new();
    for p in CARRIED {
        if let Some(v) = ev.system_properties.get(p.name()) {
            system.insert(p.wire_name().to_owned(), v.clone());
        }
    }
    system.insert(
        SystemProperty::ConnectionDeviceId.wire_name().to_owned(),
        ev.device_id.clone(),
    );
    if let Some(m) = &ev.module_id {
        system.insert(
            SystemProperty::ConnectionModuleId.wire_name().to_owned(),
            m.clone(),
        );
    }
    let enqueued_ms = i64::try_from(rec.timestamp_ms).unwrap_or(0);
    let ttl_ms = ttl.map_or(i64::MAX, |t| i64::try_from(t * 1000).unwrap_or(i64::MAX));
    hub::store::C2dMessage {
        seq: 0,
        message_id: ev
            .system_properties
            .get(SystemProperty::MessageId.name())
            .cloned()
            .unwrap_or_else(|| format!("gw-{}", rec.offset)),
        correlation_id: ev
            .system_properties
            .get(SystemProperty::CorrelationId.name())
            .cloned(),
        properties: ev
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
            .collect(),
        body: base64::engine::general_purpose::STANDARD.encode(body),
        enqueued_ms,
        expiry_ms: enqueued_ms.saturating_add(ttl_ms),
        delivery_count: 0,
        input: Some(input.to_owned()),
        system,
    }
}
