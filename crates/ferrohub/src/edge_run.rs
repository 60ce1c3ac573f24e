//! What a gateway process (`ferrohub edge -c FILE`, in either mode, with or without an agent)
//! does around the gateway itself: it locks its data directory, logs to a rotated file there
//! (`edge logs edgeHub`), answers on its control socket (`edge list|restart|check` without an
//! agent), stops cleanly on SIGTERM or Ctrl-C, and restarts by re-executing itself with the same
//! arguments: same pid (systemd and an agent see no exit), lock released and retaken.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use tokio::sync::watch;

/// Restarts so far, carried across re-executions.
const RESTARTS_ENV: &str = "FERROHUB_EDGE_RESTARTS";

/// A gateway process's hold on its data directory.
pub(crate) struct Process {
    lock: ferrohub_runtime::datalock::DataLock,
    restarts: u32,
}

/// Locks `data_dir` (a second gateway on it stops here, naming this one's pid) and starts
/// logging, to standard error and to `{data_dir}/logs/edgeHub.log`.
pub(crate) fn start(data_dir: &Path) -> Result<Process> {
    let lock = match ferrohub_runtime::datalock::DataLock::acquire(data_dir) {
        Ok(l) => l,
        Err(e) => {
            crate::init_logging(None);
            return Err(e.into());
        }
    };
    let path = edge::control::gateway_log(data_dir);
    match edge::logs::RotatingLog::open(&path, edge::logs::LogSettings::default()) {
        Ok(log) => crate::init_logging(Some(log)),
        Err(e) => {
            crate::init_logging(None);
            tracing::warn!(path = %path.display(), error = %e, "No log file; logging to standard error only");
        }
    }
    let restarts = std::env::var(RESTARTS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Process { lock, restarts })
}

/// Serves `gateway` on `listener` with its control socket until a signal (`Ok(false)`) or a
/// restart request (`Ok(true)`). `stop` is the shutdown channel the caller's other tasks watch.
pub(crate) async fn serve(
    process: &Process,
    gateway: Arc<edge::Gateway>,
    listener: tokio::net::TcpListener,
    stop: (watch::Sender<bool>, watch::Receiver<bool>),
) -> Result<bool> {
    let (tx, rx) = stop;
    let tx = Arc::new(tx);
    let on_signal = tx.clone();
    tokio::spawn(async move {
        crate::hub_cmd::wait_for_signal().await;
        let _ = on_signal.send(true);
    });
    let restart = Arc::new(AtomicBool::new(false));
    let control = Arc::new(edge::control::GatewayControl {
        gateway: gateway.clone(),
        started: crate::clock::now(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        restarts: process.restarts,
        restart: {
            let (restart, tx) = (restart.clone(), tx.clone());
            Arc::new(move || {
                restart.store(true, Ordering::SeqCst);
                let _ = tx.send(true);
            })
        },
    });
    let socket = edge::control::gateway_socket(&gateway.config.data_dir);
    let listener_uds = edge::control::bind(&socket)
        .with_context(|| format!("cannot serve the control socket {}", socket.display()))?;
    tokio::spawn(edge::control::serve_gateway(
        listener_uds,
        control,
        rx.clone(),
    ));
    gateway
        .run(listener, std::time::Duration::from_secs(300), rx)
        .await?;
    let _ = std::fs::remove_file(&socket);
    Ok(restart.load(Ordering::SeqCst))
}

/// Ends the process's run: with `restart`, the runtime is shut down, the lock released and this
/// program re-executed in place with the same arguments (returns only if that fails).
pub(crate) fn finish(
    process: Process,
    runtime: tokio::runtime::Runtime,
    restart: bool,
) -> Result<bool> {
    if !restart {
        return Ok(true);
    }
    tracing::info!("Restarting: re-executing with the same arguments");
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    let Process { lock, restarts } = process;
    drop(lock);
    reexec(restarts + 1)
}

fn reexec(restarts: u32) -> Result<bool> {
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("cannot find this program to restart it")?;
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        cmd.arg0(arg0);
    }
    let err = cmd
        .args(args)
        .env(RESTARTS_ENV, restarts.to_string())
        .exec();
    Err(anyhow::Error::new(err).context("cannot re-execute the gateway to restart it"))
}
