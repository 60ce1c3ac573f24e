//! The AMQP 1.0 over TLS device and service endpoint (`listen.amqp`, IoT Hub's port 5671), on
//! the `fe2o3-amqp` engine. This head only translates: links and deliveries into the core's
//! device-session calls ([`crate::device_session`]) and back, as the MQTT head does with packets.
//!
//! - [`address`]: which node a link reaches;
//! - [`cbs`]: put-token on `$cbs` (SAS tokens of devices, modules and service policies);
//! - [`message`]: AMQP messages to and from the core's forms;
//! - [`conn`]: one connection: protocol header, SASL, sessions, routing and admission of links;
//! - [`peer`] and [`links`]: one identity's session and its telemetry, cloud-to-device, twin and
//!   method links;
//! - [`service`]: the service's cloud-to-device sender.
//!
//! Connections share the MQTT listeners' limits (`limits.max_connections`, per IP, the connect
//! timeout for TLS and the protocol header).

pub mod address;
pub mod cbs;
mod conn;
mod links;
pub mod message;
mod peer;
mod service;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{Instrument as _, info};

use crate::Hub;

/// Accepts AMQP connections until `shutdown` turns true; each runs in its own task and ends
/// when the hub stops.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let timeout = Duration::from_secs(hub.config.limits.connect_timeout_secs);
    while let Some((tcp, peer)) =
        ferrohub_runtime::net::accept_next(&listener, &mut shutdown, "amqp").await
    {
        let span = tracing::info_span!("amqp", %peer);
        let Some(slots) = span.in_scope(|| crate::mqtt::take_slots(&hub, peer)) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (hub, acceptor, stop) = (hub.clone(), acceptor.clone(), shutdown.clone());
        tokio::spawn(
            async move {
                let _slots = slots;
                let deadline = tokio::time::Instant::now() + timeout;
                if !ferrohub_runtime::net::first_bytes(&tcp, deadline).await {
                    crate::mqtt::connect_timed_out(&hub);
                    return;
                }
                let tls = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        info!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        crate::mqtt::connect_timed_out(&hub);
                        return;
                    }
                };
                let chain = ferrohub_runtime::net::peer_chain(&tls);
                Box::pin(conn::serve(hub, tls, chain, stop)).await;
            }
            .instrument(span),
        );
    }
    info!("AMQP listener stopped");
}
