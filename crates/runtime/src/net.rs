//! Accepting TCP and TLS, shared by the MQTT and HTTPS listeners of the hub, the provisioning
//! service and the gateway, and the token-free `/metrics` listener.

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

/// Waits, by `deadline`, until the client has sent its first bytes (or closed); `false` when the
/// deadline passed first. Until then a connection holds only its socket and a small task: no TLS
/// state, buffer or boxed handshake, so an unauthenticated peer that sends nothing costs little.
pub async fn first_bytes(tcp: &TcpStream, deadline: tokio::time::Instant) -> bool {
    // A readiness error is left to the handshake, which reports it.
    tokio::time::timeout_at(deadline, tcp.readable())
        .await
        .is_ok()
}

/// What a listener does when a client missed its deadline, besides closing the connection (the
/// hub counts it under `limits.connect_timeout_secs` and logs the limit).
pub type OnTimeout = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The TLS handshake by `deadline`; failures are logged and give `None`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    deadline: tokio::time::Instant,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            info!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            handshake_timed_out();
            None
        }
    }
}

fn handshake_timed_out() {
    info!("Closing connection: TLS handshake not done in time");
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
/// [`PeerChain`] is available to handlers as an `axum::Extension`. A client must complete TLS and
/// send its first request within `handshake_timeout` of the TCP connection being accepted, else it
/// is closed and `on_timeout` runs.
pub async fn serve_https(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    app: axum::Router,
    (handshake_timeout, on_timeout): (Duration, OnTimeout),
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
) {
    use tracing::Instrument as _;
    let acceptor = TlsAcceptor::from(tls);
    while let Some((tcp, peer)) = accept_next(&listener, &mut shutdown, name).await {
        // Streamed responses (the events follow stream, method results) are small writes; without
        // this, Nagle's algorithm holds them until the previous segment is acknowledged.
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, on_timeout) = (acceptor.clone(), app.clone(), on_timeout.clone());
        tokio::spawn(
            async move {
                let deadline = tokio::time::Instant::now() + handshake_timeout;
                if !first_bytes(&tcp, deadline).await {
                    handshake_timed_out();
                    on_timeout();
                    return;
                }
                // Each stage in its own allocation, taken when the previous one is done: the
                // task itself stays small while a client has not sent anything.
                let handshake = tokio::time::timeout_at(deadline, acceptor.accept(tcp));
                let tls = match Box::pin(handshake).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return info!(error = %e, "TLS handshake failed"),
                    Err(_) => {
                        handshake_timed_out();
                        return on_timeout();
                    }
                };
                if !Box::pin(serve_connection(tls, app, deadline)).await {
                    on_timeout();
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
            async move { crate::metrics::metrics_text(render()) }
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

/// Serves HTTP on an established TLS connection; closes it when no request has begun by
/// `deadline`, and then returns `false`.
async fn serve_connection(
    tls: TlsStream<TcpStream>,
    app: axum::Router,
    deadline: tokio::time::Instant,
) -> bool {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let chain = PeerChain(Arc::new(peer_chain(&tls)));
    let requested = Arc::new(AtomicBool::new(false));
    let seen = requested.clone();
    // The chain goes into each request's extensions (rather than a layer on a per-connection copy
    // of the router, which would wrap every route again for each connection).
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(chain.clone());
            req
        },
    );
    let service = hyper_util::service::TowerToHyperService::new(app);
    let builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = match tokio::time::timeout_at(deadline, conn.as_mut()).await {
        Ok(result) => result,
        Err(_) if requested.load(Ordering::Relaxed) => conn.await,
        Err(_) => {
            info!("Closing connection: no request by the TLS and first-request deadline");
            return false;
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTPS connection ended with an error");
    }
    true
}

/// Wraps `app` so each request path ending in one `/` (`/devices/`, `/devices/d1/modules/`) is
/// routed as the path without it, as IoT Hub and the provisioning service accept it: the Node
/// service SDK lists devices with `GET /devices/`. One mechanism for every route: the slash is
/// stripped before `app` routes the request, so no route is declared twice.
pub fn accept_trailing_slash(app: axum::Router) -> axum::Router {
    axum::Router::new()
        .fallback_service(app)
        .layer(axum::middleware::map_request(strip_trailing_slash))
}

async fn strip_trailing_slash(mut req: axum::extract::Request) -> axum::extract::Request {
    let uri = req.uri();
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let stripped = &path[..path.len() - 1];
        let path_and_query = match uri.query() {
            Some(q) => format!("{stripped}?{q}"),
            None => stripped.to_owned(),
        };
        let mut parts = uri.clone().into_parts();
        // A path cut at an ASCII `/` stays a valid path, the query is copied as received.
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(new) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = new;
            }
        }
    }
    req
}
