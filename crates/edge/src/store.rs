//! The store's limits and the gateway's metrics.
//!
//! A maintenance pass (every [`TICK`]) deletes the parts of the store both forwarding lanes have
//! passed, drops messages older than the TTL, and decides whether the store is full. When it is
//! full, the `store_full` policy applies: `refuse` (default) closes the connection of a sender
//! without acknowledging its message (it keeps it and retries later; nothing acknowledged is
//! lost), `drop_oldest` deletes the oldest undelivered messages instead (counted and logged).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::{Gateway, StoreFull};

/// How often the store is checked.
pub const TICK: Duration = Duration::from_millis(500);

/// The log settings for a store limited to `max_bytes`: segments small enough that it shrinks
/// as it drains, and with `drop_oldest` a size retention at the limit.
pub fn tune(log: &mut durable_log::LogConfig, max_bytes: u64, policy: StoreFull) {
    log.segment_bytes = (max_bytes / 8).clamp(64 * 1024, 8 * 1024 * 1024);
    if policy == StoreFull::DropOldest {
        log.retention_bytes = Some(max_bytes);
    }
}

/// One maintenance pass.
pub fn maintain(g: &Gateway) {
    let events = &g.local.events;
    let consumed = g
        .stats
        .upstream_offset
        .load(Ordering::Relaxed)
        .min(g.stats.inputs_offset.load(Ordering::Relaxed));
    let before = events.start_offset();
    let now_ms = ferrohub_runtime::time::now_ms(g.clock.as_ref()).unsigned_abs();
    match events.release(now_ms, consumed) {
        Ok(report) if report.start_offset > consumed.max(before) => {
            let lost = report.start_offset - consumed.max(before);
            g.stats.dropped.fetch_add(lost, Ordering::Relaxed);
            warn!(
                messages = lost,
                policy = ?g.config.store_full,
                "Dropped undelivered messages from the store (older than its TTL, or the store was full)"
            );
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "Store maintenance failed"),
    }
    let bytes = events.stats().bytes;
    let full = bytes > g.max_store_bytes();
    let was = g.stats.full.swap(full, Ordering::Relaxed);
    if full != was {
        info!(
            bytes,
            limit = g.max_store_bytes(),
            full,
            "Store fill level changed"
        );
    }
}

/// Whether a new message may be stored: not from an identity the hub disabled or removed (the
/// hub would acknowledge and drop it), and not while the store is full under `refuse`.
pub fn admit(g: &Gateway, client_id: &str) -> Result<(), String> {
    if let Some(reason) = g.dropped.reason(client_id) {
        g.dropped.messages.fetch_add(1, Ordering::Relaxed);
        return Err(format!(
            "{client_id} was {} at the hub; its messages are not acknowledged here any more (the hub would drop them)",
            reason.label()
        ));
    }
    if g.config.store_full == StoreFull::Refuse && g.stats.full.load(Ordering::Relaxed) {
        g.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Err(format!(
            "the gateway's store is full ({} MiB); refusing {client_id}'s message until the hub takes the backlog",
            g.config.store_max_mib
        ));
    }
    Ok(())
}

pub async fn maintenance_loop(g: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        maintain(&g);
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The gateway's metrics, Prometheus text format: the local endpoint's (connections,
/// authentication failures, messages in/out, latency) and the store's and the relay's.
pub fn render(g: &Gateway) -> String {
    let events = &g.local.events;
    let mut out = g.local.metrics.render(events.next_offset());
    let next = events.next_offset();
    let up = g.stats.upstream_offset.load(Ordering::Relaxed);
    let oldest_age = events
        .read(up.max(events.start_offset()), 1, 1 << 20)
        .ok()
        .and_then(|r| r.first().map(|r| r.timestamp_ms))
        .map_or(0.0, |ts| {
            let now = ferrohub_runtime::time::now_ms(g.clock.as_ref()).unsigned_abs();
            now.saturating_sub(ts) as f64 / 1000.0
        });
    let r = &g.relay.stats;
    let s = &g.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let d = &g.dropped;
    let rows: [(&str, &str, &str, f64); 16] = [
        (
            "gateway_store_backlog_messages",
            "gauge",
            "Stored messages not yet delivered upstream",
            next.saturating_sub(up) as f64,
        ),
        (
            "gateway_store_oldest_age_seconds",
            "gauge",
            "Age of the oldest message waiting for the hub",
            oldest_age,
        ),
        (
            "gateway_store_bytes",
            "gauge",
            "Bytes in the store",
            events.stats().bytes as f64,
        ),
        (
            "gateway_store_limit_bytes",
            "gauge",
            "The store's size limit",
            g.max_store_bytes() as f64,
        ),
        (
            "gateway_store_full",
            "gauge",
            "1 while the store is over its limit",
            u8::from(s.full.load(Ordering::Relaxed)).into(),
        ),
        (
            "gateway_forwarded_total",
            "counter",
            "Messages delivered to the hub (replays included)",
            load(&g.forwarded) as f64,
        ),
        (
            "gateway_to_modules_total",
            "counter",
            "Messages put in module input queues",
            load(&s.to_modules) as f64,
        ),
        (
            "gateway_expired_total",
            "counter",
            "Messages dropped at delivery time because they outlived their route's TTL",
            load(&s.expired) as f64,
        ),
        (
            "gateway_dropped_total",
            "counter",
            "Undelivered messages deleted from the store (TTL or drop_oldest)",
            load(&s.dropped) as f64,
        ),
        (
            "gateway_refused_total",
            "counter",
            "Messages refused because the store was full",
            load(&s.refused) as f64,
        ),
        (
            "gateway_dropped_sender_refused_total",
            "counter",
            "Messages refused because the hub disabled or removed their sender",
            load(&d.messages) as f64,
        ),
        (
            "gateway_upstream_retries_total",
            "counter",
            "Upstream batches retried because the hub was unreachable",
            load(&s.upstream_retries) as f64,
        ),
        (
            "gateway_upstream_connects_total",
            "counter",
            "Upstream sessions opened",
            load(&r.connects) as f64,
        ),
        (
            "gateway_upstream_connect_failures_total",
            "counter",
            "Upstream connection attempts that failed",
            load(&r.connect_failures) as f64,
        ),
        (
            "gateway_relayed_total",
            "counter",
            "Twin, method and C2D messages relayed (down and up)",
            (load(&r.relayed_down) + load(&r.relayed_up) + load(&r.c2d_queued)) as f64,
        ),
        (
            "gateway_tls_sni_mismatch_total",
            "counter",
            "Child connections whose TLS SNI the gateway's server certificate does not name",
            load(&s.sni_mismatches) as f64,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let name = "gateway_scope_dropped_total";
    let _ = writeln!(
        out,
        "# HELP {name} Devices and modules dropped because the hub disabled or removed them\n\
         # TYPE {name} counter\n{name}{{reason=\"disabled\"}} {}\n{name}{{reason=\"removed\"}} {}",
        load(&d.disabled),
        load(&d.removed)
    );
    out
}

/// Serves `GET /metrics` over plain HTTP on `listener` (a loopback address: `metrics_listen` is
/// checked at load) until `shutdown`.
pub async fn serve_metrics(
    g: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) {
    ferrohub_runtime::net::serve_metrics(listener, move || render(&g), shutdown).await;
}
