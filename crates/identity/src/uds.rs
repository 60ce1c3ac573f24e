//! Serving an axum router on a Unix socket: the caller's uid and pid from `SO_PEERCRED` go into
//! every request as [`Caller`], and each uid may hold at most `max_requests` connections at once
//! (more are closed without an answer, and logged).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{Instrument as _, debug, info, warn};

/// Who is calling: from the socket's peer credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub pid: Option<i32>,
}

/// Connections per uid allowed at once when a daemon config does not say (aziot's default).
pub const DEFAULT_MAX_REQUESTS: usize = 10;

/// Binds `path`: creates the parent directory, removes a stale socket, and makes the socket
/// connectable by every local user (authorization is by uid, per request).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        create_socket_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// [`bind`] for `primary` and each of `also` (extra sockets of the same daemon).
pub fn bind_all(primary: &Path, also: &[std::path::PathBuf]) -> std::io::Result<Vec<UnixListener>> {
    std::iter::once(primary)
        .chain(also.iter().map(std::path::PathBuf::as_path))
        .map(bind)
        .collect()
}

/// Creates `dir` and its missing parents 0755 whatever the umask (the servers run with 0o077):
/// module processes of other uids must reach the sockets in it. Existing directories are left
/// as they are. The key, certificate and identity stores are elsewhere, and private.
fn create_socket_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", d.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Per-uid connection counts.
#[derive(Default)]
struct Counts(Mutex<HashMap<u32, usize>>);

impl Counts {
    fn enter(&self, uid: u32, max: usize) -> bool {
        let Ok(mut m) = self.0.lock() else {
            return false;
        };
        let n = m.entry(uid).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }
    fn leave(&self, uid: u32) {
        if let Ok(mut m) = self.0.lock()
            && let Some(n) = m.get_mut(&uid)
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// Counters of one daemon's socket, served at `GET /metrics` (Prometheus text).
#[derive(Default)]
pub struct SocketMetrics {
    connections: AtomicU64,
    refused: AtomicU64,
    requests: AtomicU64,
    unauthorized: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
}

impl SocketMetrics {
    fn count(&self, status: axum::http::StatusCode) {
        let inc = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
        inc(&self.requests);
        if status == axum::http::StatusCode::UNAUTHORIZED {
            inc(&self.unauthorized);
        }
        if status.is_client_error() {
            inc(&self.client_errors);
        } else if status.is_server_error() {
            inc(&self.server_errors);
        }
    }

    /// The Prometheus text for daemon `name`.
    pub fn render(&self, name: &str) -> String {
        let mut out = String::new();
        for (metric, help, c) in [
            (
                "connections_total",
                "Connections accepted on the socket.",
                &self.connections,
            ),
            (
                "connections_refused_total",
                "Connections closed because the uid reached max_requests.",
                &self.refused,
            ),
            ("requests_total", "Requests answered.", &self.requests),
            (
                "unauthorized_total",
                "Requests refused because the caller's uid may not do it.",
                &self.unauthorized,
            ),
            (
                "client_errors_total",
                "Requests answered with a 4xx status.",
                &self.client_errors,
            ),
            (
                "server_errors_total",
                "Requests answered with a 5xx status.",
                &self.server_errors,
            ),
        ] {
            let full = format!("ferrohub_{name}_{metric}");
            let _ = writeln!(
                out,
                "# HELP {full} {help}\n# TYPE {full} counter\n{full} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Serves `app` on `listener` until `shutdown` turns true. `name` labels the logs and the
/// metrics, which are added at `GET /metrics`.
pub async fn serve(
    listener: UnixListener,
    app: Router,
    max_requests: usize,
    name: &'static str,
    shutdown: watch::Receiver<bool>,
) {
    serve_many(vec![listener], app, max_requests, name, shutdown).await;
}

/// [`serve`] on several sockets at once (e.g. `/run/ferrohub/x.sock` and `/run/aziot/x.sock`):
/// one daemon, so the per-uid connection limit and the metrics are shared.
pub async fn serve_many(
    listeners: Vec<UnixListener>,
    app: Router,
    max_requests: usize,
    name: &'static str,
    mut shutdown: watch::Receiver<bool>,
) {
    let counts = Arc::new(Counts::default());
    let metrics = Arc::new(SocketMetrics::default());
    let app = with_metrics(app, &metrics, name);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(listener, tx.clone(), name));
    }
    drop(tx);
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = rx.recv() => match accepted {
                Some(s) => s,
                None => break,
            },
        };
        connection(stream, &app, &counts, &metrics, max_requests, name);
    }
    accepting.abort_all();
    info!(daemon = name, "Socket listener stopped");
}

/// `GET /metrics` and the per-status counting.
fn with_metrics(app: Router, metrics: &Arc<SocketMetrics>, name: &'static str) -> Router {
    let render = metrics.clone();
    let counting = metrics.clone();
    app.route(
        "/metrics",
        axum::routing::get(move || {
            let m = render.clone();
            async move { m.render(name) }
        }),
    )
    .layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let m = counting.clone();
            async move {
                let resp = next.run(req).await;
                m.count(resp.status());
                resp
            }
        },
    ))
}

async fn accept_loop(
    listener: UnixListener,
    tx: tokio::sync::mpsc::Sender<UnixStream>,
    name: &'static str,
) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, daemon = name, "Accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// One accepted connection: the caller from its peer credentials, the per-uid limit, then HTTP.
fn connection(
    stream: UnixStream,
    app: &Router,
    counts: &Arc<Counts>,
    metrics: &SocketMetrics,
    max_requests: usize,
    name: &'static str,
) {
    let caller = match stream.peer_cred() {
        Ok(c) => Caller {
            uid: c.uid(),
            pid: c.pid(),
        },
        Err(e) => {
            warn!(error = %e, daemon = name, "Closing connection: no peer credentials");
            return;
        }
    };
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    if !counts.enter(caller.uid, max_requests) {
        metrics.refused.fetch_add(1, Ordering::Relaxed);
        warn!(
            daemon = name,
            uid = caller.uid,
            limit = max_requests,
            "Max simultaneous connections reached for user {}",
            caller.uid
        );
        return;
    }
    let app = app.clone().layer(axum::Extension(caller));
    let counts = counts.clone();
    tokio::spawn(
        async move {
            let service = TowerToHyperService::new(app);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "Connection ended with an error");
            }
            counts.leave(caller.uid);
        }
        .instrument(tracing::info_span!("uds", daemon = name, uid = caller.uid)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_counts_are_per_uid() {
        let c = Counts::default();
        assert!(c.enter(1, 2) && c.enter(1, 2));
        assert!(!c.enter(1, 2), "third connection of uid 1 refused");
        assert!(c.enter(2, 2), "uid 2 has its own budget");
        c.leave(1);
        assert!(c.enter(1, 2));
    }
}
