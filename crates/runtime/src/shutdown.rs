//! Stopping a server: every `ferrohub` server runs until SIGTERM (systemd, `docker stop`) or
//! Ctrl-C, then turns its shutdown `watch` to `true` and drains.

/// Returns when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
