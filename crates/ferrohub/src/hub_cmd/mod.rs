//! `ferrohub hub`: create a hub configuration, run the hub, and manage it through its service API.

pub mod admin;
mod auth;
mod edge;
mod events;
mod init;
mod module;
mod twin;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

pub use init::InitArgs;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  ferrohub hub init --dir hub --hostname localhost --hostname 127.0.0.1\n  \
    ferrohub hub --config hub/hub.toml                      # serve MQTT 8883 and HTTPS 443\n  \
    ferrohub hub device create dev1 --config hub/hub.toml   # a SAS device with generated keys\n  \
    ferrohub hub events --follow --config hub/hub.toml      # watch telemetry"
)]
pub struct HubArgs {
    /// The hub configuration to serve.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<HubCmd>,
}

#[derive(Debug, Subcommand)]
pub enum HubCmd {
    /// Create DIR/hub.toml with a hub CA, a TLS server certificate and shared-access policies.
    Init(InitArgs),
    /// Serve the hub (same as `ferrohub hub --config FILE`).
    Run(ConfigArg),
    /// Print the service connection string of a policy.
    ConnectionString {
        #[command(flatten)]
        config: ConfigArg,
        /// Policy name.
        #[arg(long, default_value = "iothubowner")]
        policy: String,
    },
    /// Print a SAS token of a policy: for a Prometheus scrape of /metrics over HTTPS, or scoped to
    /// one device or module for a service that may touch only that one.
    #[command(
        after_help = "Examples:\n  ferrohub hub sas-token --policy service --days 365 > prometheus.sas\n  \
        ferrohub hub sas-token --device dev1 --days 1   # only dev1: identity, twin, methods, modules"
    )]
    SasToken(SasTokenArgs),
    /// Read telemetry from the hub's events endpoint: a readable block per event on a terminal,
    /// JSON lines when piped or with --json.
    #[command(
        after_help = "Examples:\n  ferrohub hub events --config hub/hub.toml --from-start\n  \
        ferrohub hub events --config hub/hub.toml --follow --device dev1\n  \
        ferrohub hub events --config hub/hub.toml --json | jq -r .body   # JSON lines, one per event\n\n\
        Without --follow it prints what is stored (from the start unless --from is given) and exits;\n\
        with --follow it starts at the end (unless --from-start/--from) and waits for new events.\n\
        On a terminal each event is a block (enqueued time, device/module, properties, body as text,\n\
        or hex when it is not UTF-8); piped, or with --json, each is one JSON object per line."
    )]
    Events(events::EventsArgs),
    /// Device identities (like `az iot hub device-identity`).
    #[command(subcommand)]
    Device(admin::DeviceCmd),
    /// Device and module twins (like `az iot hub device-twin`).
    #[command(subcommand)]
    Twin(twin::TwinCmd),
    /// Call a direct method on a device or module and print its answer (exit 1 unless 2xx).
    InvokeMethod(twin::InvokeArgs),
    /// Module identities (like `az iot hub module-identity`).
    #[command(subcommand)]
    Module(module::ModuleCmd),
    /// CA certificates with proof of possession.
    #[command(subcommand)]
    Ca(admin::CaCmd),
    /// Cloud-to-device messages: send to a device's queue, or purge it.
    #[command(subcommand)]
    C2d(admin::C2dCmd),
    /// IoT Edge deployments: set-modules, and what an edge device's agent reports.
    #[command(subcommand)]
    Edge(edge::EdgeCmd),
    /// Switch device or module SAS authentication off or on at the running hub (kept across
    /// restarts), or show it.
    #[command(subcommand)]
    Auth(auth::AuthCmd),
}

#[derive(Debug, Args)]
pub struct SasTokenArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Policy name.
    #[arg(long, default_value = "iothubowner")]
    policy: String,
    /// Scope the token to this device (`sr={hostname}/devices/ID`).
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Scope it further to this module of --device.
    #[arg(long, value_name = "ID", requires = "device")]
    module: Option<String>,
    /// Days until the token expires.
    #[arg(long, default_value_t = 365)]
    days: u32,
}

/// A policy token from the config's key, signed for the hub or one device or module.
fn sas_token(a: &SasTokenArgs) -> Result<String> {
    use base64::Engine as _;
    let cfg = load(&a.config.config)?;
    let policy = cfg.policy(&a.policy).with_context(|| {
        format!(
            "{} has no policy named {}",
            a.config.config.display(),
            a.policy
        )
    })?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&policy.primary_key)
        .context("the policy's primary key is not base64")?;
    let mut resource = cfg.hostname.clone();
    if let Some(d) = &a.device {
        resource = format!("{resource}/devices/{d}");
    }
    if let Some(m) = &a.module {
        resource = format!("{resource}/modules/{m}");
    }
    let now = u64::try_from(crate::clock::now().unix_timestamp()).unwrap_or(0);
    let expiry = now + u64::from(a.days) * 86_400;
    Ok(iot_auth::sas::generate_sas_token(
        &resource,
        &key,
        Some(&a.policy),
        expiry,
    ))
}

/// `--config FILE`, for commands that talk to a hub.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The hub configuration (hub.toml).
    #[arg(long, short = 'c', value_name = "FILE", default_value = "hub/hub.toml")]
    pub config: PathBuf,
}

pub fn run(args: HubArgs) -> Result<bool> {
    match (args.cmd, args.config) {
        (Some(HubCmd::Init(a)), _) => init::run(&a).map(|()| true),
        (Some(HubCmd::Run(c)), _) => serve(&c.config),
        (None, Some(config)) => serve(&config),
        (None, None) => anyhow::bail!(
            "pass --config FILE to serve a hub, or a subcommand (see `ferrohub hub --help`)"
        ),
        (Some(HubCmd::ConnectionString { config, policy }), _) => {
            let cfg = load(&config.config)?;
            let cs = cfg.connection_string(&policy).with_context(|| {
                format!("{} has no policy named {policy}", config.config.display())
            })?;
            println!("{cs}");
            Ok(true)
        }
        (Some(HubCmd::SasToken(a)), _) => {
            println!("{}", sas_token(&a)?);
            Ok(true)
        }
        (Some(HubCmd::Events(a)), _) => runtime()?.block_on(events::events(a)).map(|()| true),
        (Some(HubCmd::Device(cmd)), _) => runtime()?.block_on(admin::device(cmd)).map(|()| true),
        (Some(HubCmd::Twin(cmd)), _) => runtime()?.block_on(twin::twin(cmd)).map(|()| true),
        (Some(HubCmd::InvokeMethod(a)), _) => runtime()?.block_on(twin::invoke(a)),
        (Some(HubCmd::Module(cmd)), _) => runtime()?.block_on(module::run(cmd)).map(|()| true),
        (Some(HubCmd::Ca(cmd)), _) => runtime()?.block_on(admin::ca(cmd)).map(|()| true),
        (Some(HubCmd::C2d(cmd)), _) => runtime()?.block_on(admin::c2d(cmd)).map(|()| true),
        (Some(HubCmd::Edge(cmd)), _) => runtime()?.block_on(edge::run(cmd)),
        (Some(HubCmd::Auth(cmd)), _) => runtime()?.block_on(auth::run(cmd)).map(|()| true),
    }
}

pub fn load(path: &std::path::Path) -> Result<hub::config::HubConfig> {
    crate::hints::require_config(path, crate::hints::ConfigKind::Hub)?;
    hub::config::HubConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

pub use ferrohub_cli_support::runtime;

fn serve(config: &std::path::Path) -> Result<bool> {
    crate::server_umask();
    let cfg = load(config)?;
    let _lock = crate::lock_data_dir(&cfg.storage.registry)?;
    runtime()?.block_on(async move {
        let clock: ferrohub_runtime::time::SharedClock =
            std::sync::Arc::new(ferrohub_runtime::time::SystemClock);
        let hub = hub::Hub::open(cfg, clock)?;
        let listeners = hub::Listeners::bind(&hub.config)
            .await
            .map_err(crate::hints::bind_failed)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("Shutting down");
            let _ = tx.send(true);
        });
        eprintln!(
            "hub {} serving MQTT on {} and HTTPS on {} (Ctrl-C to stop)",
            hub.config.hostname,
            listeners.mqtt.local_addr()?,
            listeners.https.local_addr()?
        );
        hub::run(hub, listeners, rx).await.map_err(|e| match e {
            listen @ hub::HubError::Listen { .. } => crate::hints::bind_failed(listen),
            other => other.into(),
        })?;
        Ok::<_, anyhow::Error>(true)
    })
}

pub(crate) use ferrohub_runtime::shutdown::wait_for_signal;
