//! The MQTT 3.1.1 over TLS device endpoint.

pub mod auth;
mod conn;
pub mod io;
mod on_behalf;
pub mod session;
mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument as _, info, warn};

use crate::Hub;
use crate::metrics::Metrics;

pub use telemetry::MAX_BODY_BYTES;

/// Accepts connections until `shutdown` turns true. Each connection runs in its own task, within
/// `limits.max_connections`; TLS and CONNECT must complete within `limits.connect_timeout_secs`.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(hub.config.limits.max_connections));
    let handshake_timeout = Duration::from_secs(hub.config.limits.connect_timeout_secs);
    while let Some((tcp, peer)) = crate::net::accept_next(&listener, &mut shutdown, "mqtt").await {
        Metrics::inc(&hub.metrics.connections_accepted);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            Metrics::inc(&hub.metrics.connections_refused_limit);
            warn!(%peer, limit = hub.config.limits.max_connections, "Refusing connection: limits.max_connections reached");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (hub, acceptor) = (hub.clone(), acceptor.clone());
        let span = tracing::info_span!("conn", %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                let Some(tls) = crate::net::handshake(&acceptor, tcp, handshake_timeout).await
                else {
                    return;
                };
                let chain = crate::net::peer_chain(&tls);
                hub.connections
                    .tasks
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                conn::serve(hub.clone(), tls, chain).await;
                hub.connections
                    .tasks
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
            .instrument(span),
        );
    }
    // A stopped hub serves no one: live sessions end too (their wills are published, their
    // unacknowledged messages stay for redelivery).
    hub.connections.kick_all();
    for _ in 0..500 {
        if hub
            .connections
            .tasks
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    info!("MQTT listener stopped");
}
