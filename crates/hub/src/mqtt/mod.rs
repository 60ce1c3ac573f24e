//! The MQTT 3.1.1 over TLS device endpoint.

pub mod auth;
pub mod c2d_topic;
mod conn;
mod handle;
pub mod io;
pub mod queue;
mod writer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument as _, info, warn};

use crate::Hub;
use crate::metrics::Metrics;

pub use crate::device_session::telemetry::MAX_BODY_BYTES;
pub use handle::{NotSent, RelaySender};

/// Open connections per peer address, for `limits.max_connections_per_ip`.
#[derive(Default)]
pub(crate) struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// The connection limits, shared by every MQTT listener of a hub (TLS and plain).
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
}

/// One connection's place in [`PerIp`], given back when dropped.
pub(crate) struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for `ip`, unless it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.0.lock().ok()?;
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.0.lock()
            && let Some(n) = open.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Counts and logs a connection refused or closed by `limit` before it authenticated (in the
/// connection's span, which names the peer). A flood is logged at most once a second, with the
/// running total.
fn refused_early(hub: &Hub, limit: &'static str, value: u64) {
    let total = hub.metrics.limit_reached(limit);
    if hub.metrics.limit_log_due(limit) {
        let what = match limit {
            "connect_timeout_secs" => {
                "Closing connection: TLS and CONNECT (HTTPS: the first request) not done in time"
            }
            _ => "Refusing connection",
        };
        warn!(
            limit = format!("limits.{limit}"),
            value, total, "{what} (limits.{limit} = {value})"
        );
    }
}

/// A connection's places in `limits.max_connections` and `limits.max_connections_per_ip`.
pub(crate) type Slots = (tokio::sync::OwnedSemaphorePermit, IpSlot);

/// Counts a connection accepted from `peer` and takes its places in the connection limits,
/// which every device listener of the hub (MQTT, MQTT without TLS, AMQP) shares; `None` (counted
/// and logged) when a limit is reached.
pub(crate) fn take_slots(hub: &Hub, peer: std::net::SocketAddr) -> Option<Slots> {
    Metrics::inc(&hub.metrics.connections_accepted);
    let limits = &hub.config.limits;
    let admission = hub.connections.admission.get_or_init(|| Admission {
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        per_ip: Arc::new(PerIp::default()),
    });
    let Ok(permit) = admission.slots.clone().try_acquire_owned() else {
        Metrics::inc(&hub.metrics.connections_refused_limit);
        refused_early(hub, "max_connections", limits.max_connections as u64);
        return None;
    };
    let Some(ip_slot) = admission
        .per_ip
        .take(peer.ip(), limits.max_connections_per_ip)
    else {
        let value = limits.max_connections_per_ip as u64;
        refused_early(hub, "max_connections_per_ip", value);
        return None;
    };
    Some((permit, ip_slot))
}

/// A running session's places in the connection limits and its count in
/// [`crate::device_session::live::Connections::tasks`] (for a clean shutdown): given back when
/// dropped, however the session ends.
pub(crate) struct SessionSlots {
    hub: Arc<Hub>,
    _slots: Slots,
}

impl Drop for SessionSlots {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.hub.connections.tasks.fetch_sub(1, SeqCst);
    }
}

/// Runs an admitted connection's session in a task of its own (counted for a clean shutdown),
/// sized for the session alone: the task that accepted the connection and its handshake end here.
fn spawn_session<S>(hub: Arc<Hub>, admitted: conn::Admitted<S>, slots: Slots)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use std::sync::atomic::Ordering::SeqCst;
    hub.connections.tasks.fetch_add(1, SeqCst);
    let slots = SessionSlots {
        hub: hub.clone(),
        _slots: slots,
    };
    if hub.connections.closing.load(SeqCst) {
        // Its handshake finished while the hub stops: the shutdown below would not see it.
        drop(slots);
        info!("Closing connection: the hub is stopping");
        return;
    }
    let session = conn::run(hub, Box::new(admitted), slots);
    tokio::spawn(session.instrument(tracing::Span::current()));
}

/// TLS, then CONNECT and authentication, within `deadline`.
async fn handshake(
    hub: Arc<Hub>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> Option<conn::Admitted<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>> {
    let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            info!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            connect_timed_out(&hub);
            return None;
        }
    };
    let chain = ferrohub_runtime::net::peer_chain(&tls);
    conn::admit(&hub, tls, chain, deadline).await
}

/// A client did not finish TLS and CONNECT (on HTTPS: its first request) within
/// `limits.connect_timeout_secs`.
pub(crate) fn connect_timed_out(hub: &Hub) {
    refused_early(
        hub,
        "connect_timeout_secs",
        hub.config.limits.connect_timeout_secs,
    );
}

/// Accepts connections until `shutdown` turns true. Each connection runs in its own task, within
/// `limits.max_connections` and `limits.max_connections_per_ip`; TLS and CONNECT together must
/// complete within `limits.connect_timeout_secs`.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    serve_with(hub, listener, Some(acceptor), shutdown).await;
}

/// [`serve`] without TLS (`listen.mqtt_plain`): SAS authentication only, same limits.
pub async fn serve_plain(hub: Arc<Hub>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    serve_with(hub, listener, None, shutdown).await;
}

async fn serve_with(
    hub: Arc<Hub>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = hub.config.limits.clone();
    let handshake_timeout = Duration::from_secs(limits.connect_timeout_secs);
    let name = if acceptor.is_some() {
        "mqtt"
    } else {
        "mqtt-plain"
    };
    hub.connections.closing.store(false, SeqCst);
    while let Some((tcp, peer)) =
        ferrohub_runtime::net::accept_next(&listener, &mut shutdown, name).await
    {
        let span = tracing::info_span!("conn", %peer);
        let Some(slots) = span.in_scope(|| take_slots(&hub, peer)) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (hub, acceptor) = (hub.clone(), acceptor.clone());
        tokio::spawn(
            async move {
                let deadline = tokio::time::Instant::now() + handshake_timeout;
                // Until the client sends its first bytes it holds only its socket and this small
                // task. Then TLS, CONNECT and authentication run in their own allocation, and an
                // admitted device gets a task of its own for its session: an unauthenticated
                // connection never holds the session's state, an idle device only that.
                if !ferrohub_runtime::net::first_bytes(&tcp, deadline).await {
                    connect_timed_out(&hub);
                    return;
                }
                match acceptor {
                    Some(acceptor) => {
                        let admitted = Box::pin(handshake(hub.clone(), acceptor, tcp, deadline));
                        if let Some(admitted) = admitted.await {
                            spawn_session(hub, admitted, slots);
                        }
                    }
                    None => {
                        let admitted = Box::pin(conn::admit(&hub, tcp, Vec::new(), deadline));
                        if let Some(admitted) = admitted.await {
                            spawn_session(hub, admitted, slots);
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
    // A stopped hub serves no one: live sessions end too (their wills are published, their
    // unacknowledged messages stay for redelivery). A handshake still running admits no one now,
    // and a session that registered after a kick is kicked on the next round.
    use std::sync::atomic::Ordering::SeqCst;
    hub.connections.closing.store(true, SeqCst);
    for _ in 0..500 {
        hub.connections.kick_all();
        if hub.connections.tasks.load(SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    info!("MQTT listener stopped");
}
