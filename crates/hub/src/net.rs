//! Accepting TCP and TLS, shared by the MQTT and HTTPS listeners of the hub and the provisioning
//! service.

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

/// The TLS client certificate chain of a connection (empty when none was sent), for handlers.
#[derive(Clone, Default)]
pub struct PeerChain(pub std::sync::Arc<Vec<rustls::pki_types::CertificateDer<'static>>>);

/// The certificates the client presented at the handshake.
pub fn peer_chain<IO>(tls: &TlsStream<IO>) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// Serves `app` over HTTPS (HTTP/1.1 and h2) until `shutdown` changes; each connection's
/// [`PeerChain`] is available to handlers as an `axum::Extension`.
pub async fn serve_https(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    app: axum::Router,
    handshake_timeout: Duration,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
) {
    use tracing::Instrument as _;
    let acceptor = TlsAcceptor::from(tls);
    while let Some((tcp, peer)) = accept_next(&listener, &mut shutdown, name).await {
        // Streamed responses (the events follow stream, method results) are small writes; without
        // this, Nagle's algorithm holds them until the previous segment is acknowledged.
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(
            async move {
                let Some(tls) = handshake(&acceptor, tcp, handshake_timeout).await else {
                    return;
                };
                let chain = PeerChain(std::sync::Arc::new(peer_chain(&tls)));
                let service = hyper_util::service::TowerToHyperService::new(
                    app.layer(axum::Extension(chain)),
                );
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                if let Err(e) = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(error = %e, "HTTPS connection ended with an error");
                }
            }
            .instrument(tracing::info_span!("https", listener = name, %peer)),
        );
    }
    info!(listener = name, "HTTPS listener stopped");
}

/// Binds the token-free metrics listener (`listen.metrics`), if one is configured.
pub async fn bind_metrics(
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, (SocketAddr, std::io::Error)> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| (addr, e))?;
    info!(%addr, "Serving /metrics over plain HTTP without a token (loopback only)");
    Ok(Some(listener))
}

/// Serves `GET /metrics` (the text `render` returns) over plain HTTP on `listener` until
/// `shutdown` changes: the token-free loopback listener of the hub, the provisioning service and
/// the gateway. Nothing else is served there.
pub async fn serve_metrics<F>(listener: TcpListener, render: F, mut shutdown: watch::Receiver<bool>)
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { crate::api::metrics_text(render()) }
        }),
    );
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(error = %e, "The metrics endpoint stopped");
    }
}
