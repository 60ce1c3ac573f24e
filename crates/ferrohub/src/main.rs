//! `ferrohub`: one binary, one subcommand per role. Kept thin: parsing, logging, dispatch.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's malloc: the servers allocate per message on several threads,
/// where glibc's arenas contend (bench/RESULTS.md, "mimalloc").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent_cmd;
mod aziot_users;
mod checks;
mod config_cmd;
mod config_template;
mod connect_check;
mod connect_fix;
mod dps_cmd;
mod edge_check;
mod edge_cmd;
mod edge_ops;
mod edge_run;
mod edge_target;
mod hub_cmd;
mod identity_cmd;
mod system_status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
// The commands implemented in libraries, under the names the front end's modules use.
use ferrohub_bench as bench;
use ferrohub_certs as certs;
use ferrohub_cli_support::hints;
use ferrohub_quickstart as quickstart;
use ferrohub_runtime::clock;

/// ferrohub: a self-hostable X.509 device identity stack (PKI, hub, provisioning, edge gateway).
#[derive(Debug, Parser)]
#[command(name = "ferrohub", version, propagate_version = true)]
#[command(
    after_help = "Examples:\n  ferrohub quickstart            # run the whole scenario on loopback\n  \
    ferrohub certs root-ca         # start a PKI in ./certs\n  ferrohub certs --help          # every certificate command\n\n\
    Logging: FERROHUB_LOG=debug (filter), FERROHUB_LOG_FORMAT=json."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Certificates: root, intermediate, edge CA, device, server, self-signed, proof of possession,
    /// inspect and verify.
    Certs(certs::CertsArgs),
    /// The IoT hub: `hub init` creates a configuration, `hub --config FILE` serves it; devices,
    /// CA certificates and telemetry are managed through its service API.
    Hub(hub_cmd::HubArgs),
    /// The device provisioning service: `dps init` creates a configuration linked to hubs,
    /// `dps --config FILE` serves it; enrollments, registrations and CA certificates are managed
    /// through its service API.
    Dps(dps_cmd::DpsArgs),
    /// The edge gateway: `edge init` registers the edge device and writes edge.toml,
    /// `edge --config FILE` serves downstream devices and forwards to the hub.
    Edge(edge_cmd::EdgeArgs),
    /// The on-device identity service: keyd, certd and identityd in one process.
    #[command(subcommand)]
    Identity(identity_cmd::IdentityCmd),
    /// The device super-config: `config apply` writes the identity daemons' configs, `config mp`
    /// writes a manual-provisioning super-config from a connection string, `config template`
    /// prints a commented one covering every section.
    #[command(subcommand)]
    Config(config_cmd::ConfigCmd),
    /// Diagnostics of the identity service: status, checks with next steps, logs.
    #[command(subcommand)]
    System(identity_cmd::SystemCmd),
    /// Run keyd alone (keys behind opaque handles) on its Unix socket.
    #[command(after_help = "Example:\n  ferrohub keyd --root /")]
    Keyd(identity_cmd::RootArg),
    /// Run certd alone (certificates, CSR issuance, trust bundles) on its Unix socket.
    #[command(after_help = "Example:\n  ferrohub certd --root /")]
    Certd(identity_cmd::RootArg),
    /// Run identityd alone (device and module identities) on its Unix socket.
    #[command(after_help = "Example:\n  ferrohub identityd --root /")]
    Identityd(identity_cmd::RootArg),
    /// Load generators: measured runs against an in-process server on loopback.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Run the seed scenario end to end on this machine (loopback, high ports, no root needed).
    Quickstart(quickstart::QuickstartArgs),
}

/// Logs to standard error (FERROHUB_LOG filter, default warn; FERROHUB_LOG_FORMAT=json), and,
/// for a gateway, also to its rotated log file (FERROHUB_LOG, default info) that
/// `ferrohub edge logs edgeHub` reads.
pub(crate) fn init_logging(file: Option<edge::logs::RotatingLog>) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = |default: &str| {
        EnvFilter::try_from_env("FERROHUB_LOG").unwrap_or_else(|_| EnvFilter::new(default))
    };
    let json = std::env::var("FERROHUB_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let stderr = if json {
        stderr.json().with_filter(filter("warn")).boxed()
    } else {
        stderr.with_filter(filter("warn")).boxed()
    };
    let file = file.map(|log| {
        let log = std::sync::Arc::new(std::sync::Mutex::new(log));
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || LogFileWriter(log.clone()));
        if json {
            layer.json().with_filter(filter("info")).boxed()
        } else {
            layer.with_filter(filter("info")).boxed()
        }
    });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

/// One formatted event at a time into the gateway's rotated log file.
struct LogFileWriter(std::sync::Arc<std::sync::Mutex<edge::logs::RotatingLog>>);

impl std::io::Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut log = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("log file lock poisoned"))?;
        log.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Makes what a server creates readable by its own uid only (umask 0o077): SQLite temporaries,
/// files a dependency writes, directories. The libraries create their data 0600/0700 themselves
/// (they also run in-process, in tests, without this), and what other uids must reach, the
/// identity service's sockets and their directory, gets its mode set explicitly. Called by the
/// serving subcommands only: `certs`, `init` and `config` write files meant to be shared.
pub(crate) fn server_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Locks the data directory holding `database` (its parent) for the rest of the process: a second
/// server on the same directory stops here, naming the first one's pid.
pub(crate) fn lock_data_dir(
    database: &std::path::Path,
) -> anyhow::Result<ferrohub_runtime::datalock::DataLock> {
    let dir = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    Ok(ferrohub_runtime::datalock::DataLock::acquire(dir)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A gateway sets up its logging itself, once it knows its data directory (its log file).
    if !matches!(&cli.cmd, Cmd::Edge(a) if a.serves()) {
        init_logging(None);
    }
    let result = match cli.cmd {
        Cmd::Certs(args) => certs::run(args),
        Cmd::Quickstart(args) => quickstart::run(&args),
        Cmd::Hub(args) => hub_cmd::run(args),
        Cmd::Dps(args) => dps_cmd::run(args),
        Cmd::Bench(cmd) => bench::run(cmd),
        Cmd::Identity(cmd) => identity_cmd::run(cmd),
        Cmd::Edge(args) => edge_cmd::run(args),
        Cmd::Config(cmd) => config_cmd::run(cmd),
        Cmd::System(cmd) => identity_cmd::system(cmd),
        Cmd::Keyd(root) => identity_cmd::run_daemon(identity_cmd::Daemon::Keyd, &root),
        Cmd::Certd(root) => identity_cmd::run_daemon(identity_cmd::Daemon::Certd, &root),
        Cmd::Identityd(root) => identity_cmd::run_daemon(identity_cmd::Daemon::Identityd, &root),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // One line: the context chain, outermost first, each cause once.
            eprintln!("error: {}", hints::one_line(&e));
            ExitCode::from(2)
        }
    }
}
