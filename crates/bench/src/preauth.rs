//! `ferrohub bench preauth`: N connections held open before authentication, each in one
//! half-open state, and the server's resident memory growth per connection: (VmRSS with all of
//! them open − VmRSS before) / N, from `/proc/PID/status` of `ferrohub hub --config …` run as a
//! child, fresh for each state. While they are held, a real device (mTLS, CONNECT) must still be
//! served. The hub's limits are raised for the run (connections, per address, and a 600 s
//! `connect_timeout_secs`, so the deadline closes nothing while RSS is read).
//!
//! States, on the MQTT listener and on the HTTPS one:
//! - `tcp`: TCP connected, nothing sent;
//! - `hello`: a TLS 1.3 ClientHello sent, the server's answer left unread (handshake not done);
//! - `tls`: TLS completed (no client certificate), nothing sent after it (no CONNECT, no request).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::process::ensure_loopback;
use super::stats::{Goal, Machine, Report, lookup};
use super::target::{Fixture, Target};

/// The per-connection budget the issue sets for an unauthenticated connection.
const BUDGET_BYTES: f64 = 16.0 * 1024.0;

/// Where a held connection stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum State {
    Tcp,
    Hello,
    Tls,
    HttpsTcp,
    HttpsHello,
    HttpsTls,
}

impl State {
    const ALL: [State; 6] = [
        State::Tcp,
        State::Hello,
        State::Tls,
        State::HttpsTcp,
        State::HttpsHello,
        State::HttpsTls,
    ];

    /// The key of this state in the JSON results.
    pub fn key(self) -> &'static str {
        match self {
            State::Tcp => "tcp",
            State::Hello => "hello",
            State::Tls => "tls",
            State::HttpsTcp => "https_tcp",
            State::HttpsHello => "https_hello",
            State::HttpsTls => "https_tls",
        }
    }

    fn https(self) -> bool {
        matches!(self, State::HttpsTcp | State::HttpsHello | State::HttpsTls)
    }
}

#[derive(Debug, Args)]
pub struct PreauthArgs {
    /// Half-open connections to hold in each state (each needs a file descriptor here and at
    /// the server).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Connection attempts in flight at once while opening them.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Seconds to wait after the last connection before reading the server's RSS.
    #[arg(long, default_value_t = 2)]
    settle: u64,
    /// The states to measure, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = State::ALL)]
    states: Vec<State>,
    /// Pin the server to these CPUs (`taskset -c LIST`).
    #[arg(long, value_name = "LIST")]
    server_cpus: Option<String>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: PreauthArgs) -> Result<bool> {
    let n = args.connections;
    super::process::check_connection_count(n)?;
    let machine = Machine::now();
    let fx = Fixture::new(1)?;
    let limits = hub::config::Limits {
        max_connections: n + 64,
        max_connections_per_ip: n + 64,
        connect_timeout_secs: 600,
        ..hub::config::Limits::default()
    };
    let mut ferrohub = json!({});
    let mut worst: f64 = 0.0;
    let mut all_served = true;
    for state in &args.states {
        eprintln!(
            "ferrohub: {n} half-open connections, state {} ...",
            state.key()
        );
        let t = Target::ferrohub_with(&fx, args.server_cpus.clone(), false, limits.clone()).await?;
        let r = hold(&t, &fx, &args, *state).await;
        t.stop().await?;
        let r = r?;
        worst = worst.max(lookup(&r, "bytes_per_connection").unwrap_or(f64::INFINITY));
        all_served &= r["device_served"] == true && r["failed"] == 0;
        ferrohub[state.key()] = r;
    }
    ferrohub["max_kib_per_connection"] = json!(worst / 1024.0);
    let mut report = Report::new("preauth", "half-open", machine, None);
    report.server_cpus = args.server_cpus.clone();
    report.params = json!({"connections": n, "concurrency": args.concurrency,
        "settle_seconds": args.settle,
        "states": args.states.iter().map(|s| s.key()).collect::<Vec<_>>()});
    report.ferrohub = ferrohub;
    report.goal = Goal {
        text: "≤ 16 KiB of server RSS per unauthenticated connection, in every state".into(),
        met: Some(worst <= BUDGET_BYTES),
    };
    report.zero_loss = all_served;
    report.emit(args.json)?;
    Ok(report.zero_loss)
}

/// Opens `connections` connections to `target` and leaves each in `state`; reads the server's
/// RSS before and with all of them open, and checks that a device is still served meanwhile.
async fn hold(target: &Target, fx: &Fixture, args: &PreauthArgs, state: State) -> Result<Value> {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = target.process.rss_kib()?;
    let n = args.connections;
    let addr = if state.https() {
        target.https.context("no HTTPS listener")?
    } else {
        target.mqtt()
    };
    ensure_loopback(addr)?;
    let cfg = anonymous_client_config(fx.roots.clone())?;
    let pb = super::bar(n as u64, &format!("{} connections", state.key()));
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (slots, pb, cfg) = (slots.clone(), pb.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = slots.acquire_owned().await?;
            let held = tokio::time::timeout(Duration::from_secs(30), open(addr, cfg, state))
                .await
                .context("timed out")??;
            pb.inc(1);
            anyhow::Ok(held)
        }));
    }
    let (held, errors) = super::process::gather(tasks).await?;
    pb.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = target.process.rss_kib()?;
    let served = device_served(target, fx).await;
    let connected = held.len();
    drop(held);
    let bytes = (after.saturating_sub(before) * 1024) as f64 / connected.max(1) as f64;
    Ok(json!({
        "connections": n,
        "connected": connected,
        "failed": n - connected,
        "errors": errors,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_connection": bytes,
        "kib_per_connection": bytes / 1024.0,
        "device_served": served.is_ok(),
        "device_error": served.err().map(|e| format!("{e:#}")),
    }))
}

/// A connection held in its state until dropped.
enum Held {
    Tcp(#[allow(dead_code)] TcpStream),
    Tls(#[allow(dead_code)] Box<super::mqtt::Tls>),
}

async fn open(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, state: State) -> Result<Held> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    match state {
        State::Tcp | State::HttpsTcp => Ok(Held::Tcp(tcp)),
        State::Hello | State::HttpsHello => {
            let mut client =
                rustls::ClientConnection::new(cfg, ServerName::try_from("localhost")?)?;
            let mut hello = Vec::new();
            client.write_tls(&mut hello)?;
            tcp.write_all(&hello).await?;
            // The server's first byte: it has read the ClientHello and answered.
            let mut first = [0u8; 1];
            if tcp.read(&mut first).await? == 0 {
                bail!("the server closed the connection after the ClientHello");
            }
            Ok(Held::Tcp(tcp))
        }
        State::Tls | State::HttpsTls => {
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(ServerName::try_from("localhost")?, tcp)
                .await
                .with_context(|| format!("TLS handshake with {addr} failed"))?;
            Ok(Held::Tls(Box::new(tls)))
        }
    }
}

/// A client that trusts the bench CA and presents no certificate, as anyone on the network can.
fn anonymous_client_config(roots: Arc<rustls::RootCertStore>) -> Result<Arc<rustls::ClientConfig>> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(super::mqtt::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// The first fixture device connects over mTLS and gets CONNACK 0, then disconnects.
async fn device_served(target: &Target, fx: &Fixture) -> Result<()> {
    let dev = fx.devices.first().context("no fixture device")?;
    let cfg = super::mqtt::client_config(dev, fx.roots.clone())?;
    let connect = super::mqtt::connect_tls(target.mqtt(), cfg, &dev.id, 60);
    let mut tls = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .context("the device's connection timed out")??;
    super::mqtt::disconnect(&mut tls).await;
    Ok(())
}
