//! A connection's writer task: it owns the write half and sends two streams, coalescing whatever is
//! ready into one write:
//!
//! - packets queued by the session (SUBACKs, twin responses, C2D, methods, ...), and
//! - the PUBACKs of telemetry, in the order the publishes arrived, each once its record is
//!   durable. The log's completion wakes this task directly: no task per message and no extra
//!   hop between durability and the PUBACK.
//!
//! A storage failure stops acknowledging and asks the session to close, so the device resends
//! what was not acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt as _;
use mqtt_codec::Packet;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::queue;
use tracing::{error, warn};

use crate::Hub;
use crate::device_session::Subscription;
use crate::device_session::revoke::EndReason;
use crate::device_session::telemetry::Durable;

/// A QoS 1 publish whose record is being made durable.
pub struct PendingAck {
    packet_id: u16,
    started: std::time::Instant,
    /// Completes when the log's writer has made the record durable; the writer awaits it
    /// directly.
    append: durable_log::PendingAppend,
}

impl PendingAck {
    /// The PUBACK of `packet_id`, due when `durable` completes; counted in flight until the
    /// writer settles it.
    pub fn new(hub: &Hub, packet_id: u16, durable: Durable) -> Self {
        crate::metrics::Metrics::inc(&hub.metrics.inflight);
        let Durable { started, append } = durable;
        Self {
            packet_id,
            started,
            append,
        }
    }
}

/// A write grows up to about this many bytes before it is sent.
const MAX_WRITE: usize = 64 * 1024;

/// What woke the writer.
enum Event {
    Packet(Option<Packet>),
    Queued(Option<PendingAck>),
    Durable(PendingAck, Result<u64, durable_log::LogError>),
}

/// The queues the writer serves.
pub struct Queues {
    pub packets: queue::Receiver<Packet>,
    pub acks: queue::Receiver<PendingAck>,
}

/// Runs until both queues are closed and every queued acknowledgement is settled, or the network
/// fails.
pub async fn run<W: AsyncWrite + Unpin>(
    mut wr: W,
    q: Queues,
    hub: Arc<Hub>,
    session: Arc<Subscription>,
) {
    let Queues {
        mut packets,
        mut acks,
    } = q;
    let (mut packets_open, mut acks_open) = (true, true);
    let mut head: Option<PendingAck> = None;
    while packets_open || acks_open || head.is_some() {
        let event = tokio::select! {
            r = durable(&mut head) => r,
            p = packets.recv(), if packets_open => Event::Packet(p),
            a = acks.recv(), if acks_open && head.is_none() => Event::Queued(a),
        };
        // A buffer per write, freed after it: an idle connection holds none.
        let mut buf = Vec::new();
        match event {
            Event::Packet(None) => packets_open = false,
            Event::Packet(Some(p)) => encode(&p, &mut buf),
            Event::Queued(None) => acks_open = false,
            Event::Queued(Some(a)) => head = Some(a),
            Event::Durable(a, result) => {
                // Acknowledge it and what else is already durable, in order, in the same write.
                let mut ready = Some((a, result));
                while let Some((a, result)) = ready.take() {
                    if !acknowledge(&hub, &a, result, &mut buf) {
                        session.close(EndReason::Storage);
                        acks_open = false;
                        drop_queued(&hub, &mut acks);
                        break;
                    }
                    if buf.len() >= MAX_WRITE {
                        break;
                    }
                    let Some(mut next) = acks.try_recv() else {
                        break;
                    };
                    match (&mut next.append).now_or_never() {
                        Some(result) => ready = Some((next, result)),
                        None => head = Some(next),
                    }
                }
            }
        }
        while buf.len() < MAX_WRITE {
            let Some(p) = packets.try_recv() else { break };
            encode(&p, &mut buf);
        }
        if !buf.is_empty() && (wr.write_all(&buf).await.is_err() || wr.flush().await.is_err()) {
            break;
        }
    }
    // The network failed: nothing more can be acknowledged; the device resends it.
    if head.take().is_some() {
        settled(&hub);
    }
    drop_queued(&hub, &mut acks);
    let _ = wr.shutdown().await;
}

/// The oldest unacknowledged publish, once durable; never completes while there is none.
async fn durable(head: &mut Option<PendingAck>) -> Event {
    match head {
        Some(a) => {
            let result = (&mut a.append).await;
            match head.take() {
                Some(a) => Event::Durable(a, result),
                None => std::future::pending().await,
            }
        }
        None => std::future::pending().await,
    }
}

/// Adds the PUBACK of a durable publish; false when the record could not be stored.
fn acknowledge(
    hub: &Hub,
    a: &PendingAck,
    result: Result<u64, durable_log::LogError>,
    buf: &mut Vec<u8>,
) -> bool {
    settled(hub);
    match result {
        Ok(_offset) => {
            hub.metrics.telemetry_latency.observe(a.started.elapsed());
            encode(&Packet::PubAck(a.packet_id), buf);
            true
        }
        Err(e) => {
            error!(error = %e, "Telemetry could not be stored; closing the connection so the device resends it");
            false
        }
    }
}

/// Publishes still queued were not acknowledged; the device will resend them.
fn drop_queued(hub: &Hub, acks: &mut queue::Receiver<PendingAck>) {
    acks.close();
    while acks.try_recv().is_some() {
        settled(hub);
    }
}

fn settled(hub: &Hub) {
    hub.metrics.inflight.fetch_sub(1, Ordering::Relaxed);
}

fn encode(p: &Packet, buf: &mut Vec<u8>) {
    if let Err(e) = mqtt_codec::encode(p, buf) {
        warn!(error = %e, "Could not encode an outgoing packet");
    }
}
