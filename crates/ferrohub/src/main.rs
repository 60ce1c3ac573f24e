//! `ferrohub`: one binary, one subcommand per role. Kept thin: parsing, logging, dispatch.
#![forbid(unsafe_code)]

/// mimalloc instead of glibc's malloc: the servers allocate per message on several threads,
/// where glibc's arenas contend (bench/RESULTS.md, "mimalloc").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent_cmd;
mod aziot_users;
mod bench;
mod certs;
mod clock;
mod config_cmd;
mod config_template;
mod connect_check;
mod connect_fix;
mod device_client;
mod dps_cmd;
mod edge_cmd;
mod hints;
mod hub_cmd;
mod identity_cmd;
mod quickstart;
mod quickstart_edge;
mod quickstart_hub;
mod quickstart_provision;
mod system_status;
mod tls_probe;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FERROHUB_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let json = std::env::var("FERROHUB_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
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
pub(crate) fn lock_data_dir(database: &std::path::Path) -> anyhow::Result<hub::datalock::DataLock> {
    let dir = database
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    Ok(hub::datalock::DataLock::acquire(dir)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
