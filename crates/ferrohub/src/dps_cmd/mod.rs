//! `ferrohub dps`: create a provisioning service configuration, run it, and manage enrollments,
//! registrations and CA certificates through its service API.

mod admin;
mod enroll;
mod init;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

pub use init::InitArgs;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(
    after_help = "Examples:\n  ferrohub dps init --dir dps --hostname localhost --ca-dir hub/certs \\\n      \
    --link-hub \"$(ferrohub hub connection-string --config hub/hub.toml)\"\n  \
    ferrohub dps --config dps/dps.toml                                   # serve MQTT 8883 and HTTPS 443\n  \
    ferrohub dps enrollment-group create grp1 --symmetric-key --config dps/dps.toml\n  \
    ferrohub dps derive-key --group-key KEY --registration-id dev1       # a device's key in that group"
)]
pub struct DpsArgs {
    /// The provisioning service configuration to serve.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<DpsCmd>,
}

#[derive(Debug, Subcommand)]
pub enum DpsCmd {
    /// Create DIR/dps.toml with an ID scope, a TLS server certificate, policies and linked hubs.
    Init(InitArgs),
    /// Serve the provisioning service (same as `ferrohub dps --config FILE`).
    #[command(after_help = "Example:\n  ferrohub dps run --config dps/dps.toml")]
    Run(ConfigArg),
    /// Print the ID scope devices register with.
    #[command(after_help = "Example:\n  ferrohub dps id-scope --config dps/dps.toml")]
    IdScope(ConfigArg),
    /// Print the service connection string of a policy.
    #[command(
        after_help = "Example:\n  ferrohub dps connection-string --config dps/dps.toml --policy enrollmentread"
    )]
    ConnectionString {
        #[command(flatten)]
        config: ConfigArg,
        /// Policy name: provisioningserviceowner, enrollmentread or enrollmentwrite.
        #[arg(long, default_value = "provisioningserviceowner")]
        policy: String,
    },
    /// Derive a device's symmetric key from an enrollment group key (no service needed).
    #[command(
        after_help = "Example:\n  ferrohub dps derive-key --group-key \"$(ferrohub dps enrollment-group show grp1 --json | jq -r .attestation.symmetricKey.primaryKey)\" \\\n      \
        --registration-id dev1\n\n\
        The key is base64(HMAC-SHA256(group key, registration id)), as the Azure SDKs compute it."
    )]
    DeriveKey {
        /// The enrollment group's primary (or secondary) key, base64.
        #[arg(long, value_name = "KEY")]
        group_key: String,
        /// The device's registration id.
        #[arg(long, value_name = "ID")]
        registration_id: String,
    },
    /// Enrollment groups: many devices sharing a CA or a group key.
    #[command(subcommand)]
    EnrollmentGroup(enroll::GroupCmd),
    /// Individual enrollments: one device, with its own certificate or keys.
    #[command(subcommand)]
    Enrollment(enroll::EnrollmentCmd),
    /// Registration records: which hub and device id a device was assigned.
    #[command(subcommand)]
    Registration(admin::RegistrationCmd),
    /// CA certificates with proof of possession (for groups with --ca-ref).
    #[command(subcommand)]
    Ca(admin::CaCmd),
}

/// `--config FILE`, for commands that read a provisioning service configuration.
#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// The provisioning service configuration (dps.toml).
    #[arg(long, short = 'c', value_name = "FILE", default_value = "dps/dps.toml")]
    pub config: PathBuf,
}

pub fn run(args: DpsArgs) -> Result<bool> {
    let rt = crate::hub_cmd::runtime;
    match (args.cmd, args.config) {
        (Some(DpsCmd::Init(a)), _) => init::run(&a).map(|()| true),
        (Some(DpsCmd::Run(c)), _) => serve(&c.config),
        (None, Some(config)) => serve(&config),
        (None, None) => anyhow::bail!(
            "pass --config FILE to serve a provisioning service, or a subcommand (see `ferrohub dps --help`)"
        ),
        (Some(DpsCmd::IdScope(c)), _) => {
            println!("{}", load(&c.config)?.id_scope);
            Ok(true)
        }
        (Some(DpsCmd::ConnectionString { config, policy }), _) => {
            let cfg = load(&config.config)?;
            let cs = cfg.connection_string(&policy).with_context(|| {
                format!(
                    "{} has no policy named {policy} (it has: {})",
                    config.config.display(),
                    policy_names(&cfg)
                )
            })?;
            println!("{cs}");
            Ok(true)
        }
        (
            Some(DpsCmd::DeriveKey {
                group_key,
                registration_id,
            }),
            _,
        ) => {
            let key = iot_auth::derive_device_key(&group_key, &registration_id)
                .map_err(|e| anyhow::anyhow!("--group-key: {e} (pass the group's base64 key)"))?;
            println!("{key}");
            Ok(true)
        }
        (Some(DpsCmd::EnrollmentGroup(cmd)), _) => {
            rt()?.block_on(enroll::group(cmd)).map(|()| true)
        }
        (Some(DpsCmd::Enrollment(cmd)), _) => {
            rt()?.block_on(enroll::enrollment(cmd)).map(|()| true)
        }
        (Some(DpsCmd::Registration(cmd)), _) => {
            rt()?.block_on(admin::registration(cmd)).map(|()| true)
        }
        (Some(DpsCmd::Ca(cmd)), _) => rt()?.block_on(admin::ca(cmd)).map(|()| true),
    }
}

pub fn load(path: &Path) -> Result<dps::config::DpsConfig> {
    crate::hints::require_config(path, crate::hints::ConfigKind::Dps)?;
    dps::config::DpsConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `a, b, c`: the policy names of a configuration, for error messages.
pub fn policy_names(cfg: &dps::config::DpsConfig) -> String {
    let names: Vec<&str> = cfg.policies.iter().map(|p| p.name.as_str()).collect();
    names.join(", ")
}

fn serve(config: &Path) -> Result<bool> {
    crate::server_umask();
    let cfg = load(config)?;
    let _lock = crate::lock_data_dir(&cfg.storage.database)?;
    crate::hub_cmd::runtime()?.block_on(async move {
        let clock: ferrohub_runtime::time::SharedClock = std::sync::Arc::new(ferrohub_runtime::time::SystemClock);
        let dps = dps::Dps::open(cfg, clock)?;
        let listeners = dps::Listeners::bind(&dps.config)
            .await
            .map_err(crate::hints::bind_failed)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::hub_cmd::wait_for_signal().await;
            tracing::info!("Shutting down");
            let _ = tx.send(true);
        });
        eprintln!(
            "provisioning service {} (ID scope {}) serving MQTT on {} and HTTPS on {} (Ctrl-C to stop)",
            dps.config.hostname,
            dps.config.id_scope,
            listeners.mqtt.local_addr()?,
            listeners.https.local_addr()?
        );
        dps::run(dps, listeners, rx).await?;
        Ok::<_, anyhow::Error>(true)
    })
}
