//! Accepting TCP and TLS, shared by the MQTT and HTTPS listeners.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

/// The next connection, or `None` once `shutdown` changes. Accept errors (out of file
/// descriptors, ...) are logged and retried after a short pause.
pub async fn accept_next(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    warn!(error = %e, listener = what, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The TLS handshake within `limit`; failures are logged and give `None`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    limit: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            info!(timeout_secs = limit.as_secs(), "TLS handshake timed out");
            None
        }
    }
}
