//! The telemetry scenario's consumers, where a message "arrives": ferrohub's events stream
//! (`GET /events?from=end&follow=true` over HTTPS with a `service` policy token: it serves durable
//! records only) and a subscriber on `devices/+/messages/events/#` at mosquitto (its own client
//! certificate, QoS as published, PUBACKs sent at once). Every body carries (sequence, device,
//! send time), so each message is checked off once: loss and duplicates are counted.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use mqtt_codec::{Packet, PacketReader, QoS, SubAckReturnCode, Subscribe};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;

use super::stats::{Latency, Timeline};
use super::target::{Fixture, Target};
use crate::clock;

/// The process-wide time origin that send times in bodies are counted from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(clock::instant)
}

/// Microseconds since [`base`].
pub fn now_us() -> u64 {
    u64::try_from(base().elapsed().as_micros()).unwrap_or(u64::MAX)
}

pub const BODY_HEADER: usize = 32;

/// `{seq:010}{device:06}{sent_us:016}` then `x` up to `payload` bytes.
pub fn body(seq: usize, device: usize, sent_us: u64, payload: usize) -> Vec<u8> {
    let mut b = format!("{seq:010}{device:06}{sent_us:016}").into_bytes();
    b.resize(payload.max(BODY_HEADER), b'x');
    b
}

/// The warm-up body of `device`.
pub fn probe(device: usize) -> Vec<u8> {
    format!("probe{device:06}").into_bytes()
}

/// Which (device, sequence) pairs arrived, and when.
pub struct Arrivals {
    seen: Vec<Vec<bool>>,
    probes: Vec<bool>,
    pub probes_seen: usize,
    pub unique: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub latency: Latency,
    pub timeline: Option<Timeline>,
    pub last: Option<Instant>,
}

pub type Shared = Arc<Mutex<Arrivals>>;

pub fn lock(a: &Shared) -> MutexGuard<'_, Arrivals> {
    a.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Arrivals {
    pub fn new(devices: usize, messages: usize) -> Shared {
        Arc::new(Mutex::new(Self {
            seen: vec![vec![false; messages]; devices],
            probes: vec![false; devices],
            probes_seen: 0,
            unique: 0,
            duplicates: 0,
            unexpected: 0,
            latency: Latency::new(),
            timeline: None,
            last: None,
        }))
    }

    /// Starts the measured phase: arrivals from now on are timed and counted per bucket.
    pub fn begin(&mut self, at: Instant, bucket_ms: u64) {
        self.timeline = Some(Timeline::new(at, bucket_ms));
    }

    /// One body arrived at `at` (`at_us` on the [`now_us`] clock).
    pub fn record(&mut self, body: &[u8], at: Instant, at_us: u64) {
        if let Some(d) = body.strip_prefix(b"probe") {
            let i = parse(d, 0, 6);
            match i.and_then(|i| self.probes.get_mut(i)) {
                Some(p) if !*p => {
                    *p = true;
                    self.probes_seen += 1;
                }
                _ => self.unexpected += 1,
            }
            return;
        }
        let (seq, dev, sent) = (parse(body, 0, 10), parse(body, 10, 16), parse(body, 16, 32));
        let slot = match (seq, dev) {
            (Some(s), Some(d)) => self.seen.get_mut(d).and_then(|v| v.get_mut(s)),
            _ => None,
        };
        match slot {
            None => self.unexpected += 1,
            Some(true) => self.duplicates += 1,
            Some(slot) => {
                *slot = true;
                self.unique += 1;
                if let Some(sent) = sent {
                    self.latency.record_us(at_us.saturating_sub(sent as u64));
                }
                if let Some(t) = &mut self.timeline {
                    t.add(at, 1);
                }
                self.last = Some(at);
            }
        }
    }
}

/// Decimal digits `body[from..to]`.
fn parse(body: &[u8], from: usize, to: usize) -> Option<usize> {
    std::str::from_utf8(body.get(from..to)?).ok()?.parse().ok()
}

/// A running consumer; stops when told and returns how many records it read.
pub struct Consumer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<u64>>,
}

impl Consumer {
    /// Connects the consumer for `target` and returns once it is receiving.
    pub async fn start(target: &Target, fx: &Fixture, qos: QoS, arrivals: Shared) -> Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready) = watch::channel(false);
        let task = match target.https {
            Some(https) => {
                let client = ferrohub_runtime::client::ServiceClient::new(
                    https.to_string(),
                    "localhost".into(),
                    "service".into(),
                    base64::engine::general_purpose::STANDARD.decode(&fx.service_key)?,
                    Arc::new(
                        rustls::ClientConfig::builder()
                            .with_root_certificates(fx.roots.clone())
                            .with_no_client_auth(),
                    ),
                );
                tokio::spawn(events_stream(client, arrivals, ready_tx, stop_rx))
            }
            None => {
                let creds = fx.devices.last().context("no consumer certificate")?;
                let cfg = super::mqtt::client_config(creds, fx.roots.clone())?;
                let (addr, id) = (target.mqtt(), creds.id.clone());
                tokio::spawn(async move {
                    let tls = super::mqtt::connect_tls(addr, cfg, &id, 300).await?;
                    subscriber(tls, qos, arrivals, ready_tx, stop_rx).await
                })
            }
        };
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(20), ready.wait_for(|r| *r)).await;
        if !matches!(waited, Ok(Ok(_))) {
            if task.is_finished() {
                task.await.context("the consumer panicked")??;
            }
            bail!("the consumer was not receiving within 20 s");
        }
        Ok(Self { stop, task })
    }

    pub async fn finish(self) -> Result<u64> {
        let _ = self.stop.send(true);
        self.task.await.context("the consumer panicked")?
    }
}

/// Reads ferrohub's NDJSON events stream, checking off each record's body.
async fn events_stream(
    client: ferrohub_runtime::client::ServiceClient,
    arrivals: Shared,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let mut body = client
        .stream("/events?from=end&follow=true")
        .await
        .map_err(|e| anyhow::anyhow!("events stream: {e}"))?;
    ready.send_replace(true);
    let (mut pending, mut records) = (Vec::<u8>::with_capacity(1 << 20), 0u64);
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.changed() => return Ok(records),
        };
        let Some(frame) = frame else {
            bail!("the events stream ended")
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let (at, at_us) = (clock::instant(), now_us());
        let mut a = lock(&arrivals);
        for line in pending[..end].split(|b| *b == b'\n') {
            records += 1;
            match json_body(line) {
                Some(b) => a.record(b, at, at_us),
                None => a.unexpected += 1,
            }
        }
        drop(a);
        pending.drain(..=end);
    }
}

/// The `"body"` string of an events-stream line (bench bodies are plain ASCII, so no escapes).
fn json_body(line: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"body\":\"";
    let start = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[start..].iter().position(|b| *b == b'"')?;
    Some(&line[start..start + len])
}

/// mosquitto's subscriber: subscribes, then checks off every PUBLISH and acknowledges it.
async fn subscriber(
    mut s: super::mqtt::Tls,
    qos: QoS,
    arrivals: Shared,
    ready: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<u64> {
    let mut out = Vec::with_capacity(64 * 1024);
    mqtt_codec::encode(
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![("devices/+/messages/events/#".into(), qos)],
        }),
        &mut out,
    )?;
    s.write_all(&out).await?;
    s.flush().await?;
    let (mut reader, mut records) = (super::mqtt::packet_reader(1 << 20), 0u64);
    loop {
        tokio::select! {
            more = reader.fill(&mut s) => if !more? { bail!("mosquitto closed the subscriber") },
            _ = stop.changed() => {
                super::mqtt::disconnect(&mut s).await;
                return Ok(records);
            }
        }
        out.clear();
        records += take_packets(&mut reader, &mut out, &arrivals, qos, &ready)?;
        if !out.is_empty() {
            s.write_all(&out).await?;
            s.flush().await?;
        }
    }
}

/// Decodes every complete packet read so far: checks off PUBLISHes and queues their PUBACKs in
/// `out`; returns how many PUBLISHes there were.
fn take_packets(
    reader: &mut PacketReader,
    out: &mut Vec<u8>,
    arrivals: &Shared,
    qos: QoS,
    ready: &watch::Sender<bool>,
) -> Result<u64> {
    let (at, at_us) = (clock::instant(), now_us());
    let mut records = 0u64;
    let mut a = lock(arrivals);
    while let Some(p) = reader.try_next()? {
        match p {
            Packet::Publish(p) => {
                records += 1;
                a.record(&p.payload, at, at_us);
                if let Some(id) = p.packet_id {
                    mqtt_codec::encode(&Packet::PubAck(id), out)?;
                }
            }
            Packet::SubAck(ack) => {
                if ack.return_codes != [SubAckReturnCode::Success(qos)] {
                    bail!("mosquitto did not grant the subscription: {ack:?}");
                }
                ready.send_replace(true);
            }
            _ => {}
        }
    }
    drop(a);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_off_once() {
        let a = Arrivals::new(2, 3);
        let mut a = lock(&a);
        let at = clock::instant();
        a.record(&probe(1), at, 0);
        a.record(&body(2, 1, 5, 64), at, 105);
        a.record(&body(2, 1, 5, 64), at, 105);
        a.record(&body(3, 1, 5, 64), at, 105); // no sequence 3
        a.record(b"noise", at, 0);
        assert_eq!(
            (a.probes_seen, a.unique, a.duplicates, a.unexpected),
            (1, 1, 1, 2)
        );
        assert_eq!(a.latency.len(), 1);
        let line =
            br#"{"offset":1,"deviceId":"d","body":"0000000002000001","bodyEncoding":"utf-8"}"#;
        assert_eq!(json_body(line), Some(&b"0000000002000001"[..]));
    }
}
