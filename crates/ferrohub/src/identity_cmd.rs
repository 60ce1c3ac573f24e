//! `ferrohub identity run`, `ferrohub keyd|certd|identityd`, `ferrohub system status|check|reprovision|logs`:
//! the on-device identity service and its diagnostics.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use identity::config::aziot::AziotPaths;
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig, load_daemon_aziot};

/// Where the daemon configs are: `{root}/etc/ferrohub/{svc}/config.toml` and `config.d/`.
#[derive(Debug, Args, Clone)]
pub struct RootArg {
    /// Prefix of /etc/ferrohub, /run/ferrohub and /var/lib/ferrohub (as `config apply --root`).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
}

impl RootArg {
    fn config_files(&self, svc: &str) -> (PathBuf, PathBuf) {
        let dir = self.root.join("etc/ferrohub").join(svc);
        (dir.join("config.toml"), dir.join("config.d"))
    }

    fn load<T: serde::de::DeserializeOwned>(&self, svc: &str) -> Result<T> {
        self.load_with_aziot(svc).map(|(config, _)| config)
    }

    /// The daemon config and the aziot socket and principal directory `config apply` gave it.
    fn load_with_aziot<T: serde::de::DeserializeOwned>(
        &self,
        svc: &str,
    ) -> Result<(T, Vec<PathBuf>)> {
        let (file, dropins) = self.config_files(svc);
        crate::hints::require_daemon_config(&file, &dropins, &self.root)?;
        let (config, AziotPaths { socket, .. }) = load_daemon_aziot(&file, &dropins)
            .map_err(|e| anyhow::anyhow!("{e} (run `ferrohub config apply` first)"))?;
        Ok((config, socket.into_iter().collect()))
    }
}

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// Run keyd, certd and identityd in one process (the usual way).
    #[command(
        after_help = "Example:\n  ferrohub config apply -c /etc/ferrohub/config.toml\n  ferrohub identity run"
    )]
    Run(RootArg),
}

/// Which single daemon to run.
#[derive(Clone, Copy, Debug)]
pub enum Daemon {
    Keyd,
    Certd,
    Identityd,
}

pub fn run(cmd: IdentityCmd) -> Result<bool> {
    crate::server_umask();
    let IdentityCmd::Run(root) = cmd;
    crate::hub_cmd::runtime()?
        .block_on(run_all(root))
        .map(|()| true)
}

pub fn run_daemon(daemon: Daemon, root: &RootArg) -> Result<bool> {
    crate::server_umask();
    crate::hub_cmd::runtime()?
        .block_on(async {
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                crate::hub_cmd::wait_for_signal().await;
                let _ = tx.send(true);
            });
            let (keyd, keyd_also): (KeydConfig, _) = root.load_with_aziot("keyd")?;
            let keyd_daemon =
                identity::keyd::Keyd::open(&keyd).map_err(|e| anyhow::anyhow!("keyd: {e}"))?;
            match daemon {
                Daemon::Keyd => {
                    identity::keyd::serve_on(keyd_daemon, &keyd, &keyd_also, rx).await?
                }
                Daemon::Certd => {
                    let (certd, also) = root.load_with_aziot("certd")?;
                    identity::certd::serve_on(certd, keyd_daemon.store(), also, rx).await?
                }
                Daemon::Identityd => {
                    let options = identity::identityd::Options {
                        store: Some(keyd_daemon.store()),
                        config_paths: Some(root.config_files("identityd")),
                        ..Default::default()
                    };
                    let (config, also) = root.load_with_aziot("identityd")?;
                    identity::identityd::serve_on(config, options, also, rx).await?;
                }
            }
            anyhow::Ok(())
        })
        .map(|()| true)
}

async fn run_all(root: RootArg) -> Result<()> {
    let (keyd, keyd_also): (KeydConfig, _) = root.load_with_aziot("keyd")?;
    let (certd, certd_also): (CertdConfig, _) = root.load_with_aziot("certd")?;
    let (identityd, identityd_also): (IdentitydConfig, _) = root.load_with_aziot("identityd")?;
    // One process per home: a second `identity run` (or a daemon of its own) stops here.
    let homes: std::collections::BTreeSet<_> =
        [&keyd.homedir, &certd.homedir, &identityd.homedir].into();
    let _locks = homes
        .into_iter()
        .map(|home| ferrohub_runtime::datalock::DataLock::acquire(home))
        .collect::<Result<Vec<_>, _>>()?;
    let keyd_daemon =
        identity::keyd::Keyd::open(&keyd).map_err(|e| anyhow::anyhow!("keyd: {e}"))?;
    let store = keyd_daemon.store();
    let (tx, rx) = tokio::sync::watch::channel(false);
    eprintln!(
        "identity service: keyd {}, certd {}, identityd {} (Ctrl-C to stop)",
        keyd.socket.display(),
        certd.socket.display(),
        identityd.socket.display()
    );
    for also in keyd_also.iter().chain(&certd_also).chain(&identityd_also) {
        eprintln!("  also {}", also.display());
    }
    let k = {
        let rx = rx.clone();
        tokio::spawn(
            async move { identity::keyd::serve_on(keyd_daemon, &keyd, &keyd_also, rx).await },
        )
    };
    let c = tokio::spawn(identity::certd::serve_on(
        certd,
        store.clone(),
        certd_also,
        rx.clone(),
    ));
    // identityd provisions at start and calls keyd and certd: give their sockets a moment.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let options = identity::identityd::Options {
        store: Some(store),
        // `POST /reload` (e.g. from `ferrohub config apply`) re-reads these.
        config_paths: Some(root.config_files("identityd")),
        ..Default::default()
    };
    let i = tokio::spawn(identity::identityd::serve_on(
        identityd,
        options,
        identityd_also,
        rx,
    ));
    crate::hub_cmd::wait_for_signal().await;
    tracing::info!("Shutting down");
    let _ = tx.send(true);
    for (name, task) in [("keyd", k), ("certd", c), ("identityd", i)] {
        task.await
            .with_context(|| format!("{name} panicked"))?
            .with_context(|| format!("{name} failed"))?;
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// The daemons, the provisioned device and certificate expiry dates.
    #[command(after_help = "Example:\n  sudo ferrohub system status")]
    Status(RootArg),
    /// Checks with next steps: configuration, daemons, trust bundle, hub reachable over TLS,
    /// the device accepted by its hub at MQTT CONNECT (and if not, why and the fix).
    #[command(after_help = "Example:\n  sudo ferrohub system check\n  \
        sudo ferrohub system check --hub-mqtt 10.0.0.5:8883 --hub-https 10.0.0.5:443\n  \
        sudo ferrohub system check --json | jq '.[] | select(.ok == false)'")]
    Check(CheckArgs),
    /// Register the device again (DPS) or re-read its manual identity, through identityd, and
    /// print the new assignment: hub and device id.
    #[command(after_help = "Example:\n  sudo ferrohub system reprovision\n  \
        sudo ferrohub system reprovision --json   # {\"reprovisioned\":true,\"hubName\":…,\"deviceId\":…}")]
    Reprovision(ReprovisionArgs),
    /// Where the identity service logs go, and the last lines when systemd runs it.
    #[command(after_help = "Example:\n  sudo ferrohub system logs")]
    Logs,
}

/// `system check`: where the daemons are, and where to reach the hub when not at its name.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    root: RootArg,
    /// The hub's (or gateway's) MQTT address [default: GATEWAY_HOST:8883, from identityd].
    #[arg(long, value_name = "HOST:PORT")]
    hub_mqtt: Option<String>,
    /// The hub's HTTPS address [default: HUB:443, from identityd].
    #[arg(long, value_name = "HOST:PORT")]
    hub_https: Option<String>,
    /// Print the checks as JSON: [{"id", "ok", "detail", "fix"}].
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ReprovisionArgs {
    #[command(flatten)]
    root: RootArg,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn system(cmd: SystemCmd) -> Result<bool> {
    let rt = crate::hub_cmd::runtime()?;
    match cmd {
        SystemCmd::Status(root) => rt.block_on(crate::system_status::status(&root)),
        SystemCmd::Check(a) => {
            let addrs = crate::connect_check::HubAddrs {
                mqtt: a.hub_mqtt,
                https: a.hub_https,
            };
            rt.block_on(crate::system_status::check(&a.root, &addrs, a.json))
        }
        SystemCmd::Reprovision(a) => {
            rt.block_on(crate::system_status::reprovision(&a.root, a.json))
        }
        SystemCmd::Logs => crate::system_status::logs(),
    }
}

impl RootArg {
    pub fn load_identityd(&self) -> Result<IdentitydConfig> {
        self.load("identityd")
    }
    pub fn load_certd(&self) -> Result<CertdConfig> {
        self.load("certd")
    }
    pub fn load_keyd(&self) -> Result<KeydConfig> {
        self.load("keyd")
    }
    pub fn config_path(&self, svc: &str) -> PathBuf {
        self.config_files(svc).0
    }
}
