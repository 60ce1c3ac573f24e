//! `ferrohub hub init`: a ready-to-run hub directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use ferrohub_runtime::config::{Listen, Tls};
use hub::config::{AuthSettings, HubConfig, Limits, Policy, Right, Storage};
use pki::{KeyAlgorithm, Profile};

use crate::certs::{KeyOpts, Plan, issue_files};

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  ferrohub hub init --dir hub --hostname localhost --hostname 127.0.0.1 \\\n      \
    --mqtt 127.0.0.1:8883 --https 127.0.0.1:443 --amqp 127.0.0.1:5671"
)]
pub struct InitArgs {
    /// Directory to create the configuration, certificates and data in.
    #[arg(long, default_value = "hub")]
    dir: PathBuf,
    /// Host names and IP addresses of the hub; the first is its HostName. Repeat for more.
    #[arg(long = "hostname", required = true, value_name = "HOST")]
    hostnames: Vec<String>,
    /// MQTT over TLS listen address.
    #[arg(long, default_value = "0.0.0.0:8883")]
    mqtt: SocketAddr,
    /// HTTPS listen address (service API, events).
    #[arg(long, default_value = "0.0.0.0:443")]
    https: SocketAddr,
    /// AMQP over TLS listen address (devices and the service SDKs over AMQP). Default:
    /// 0.0.0.0:5671 when --mqtt is left at its default, off when --mqtt is given without it
    /// (so hubs on other addresses of one machine don't compete for 5671).
    #[arg(long, value_name = "ADDR")]
    amqp: Option<SocketAddr>,
    /// Replace an existing hub.toml (certificates and data are kept).
    #[arg(long)]
    force: bool,
}

/// Standard policies, as IoT Hub creates them.
const POLICIES: [(&str, &[Right]); 5] = [
    (
        "iothubowner",
        &[
            Right::RegistryRead,
            Right::RegistryWrite,
            Right::ServiceConnect,
            Right::DeviceConnect,
        ],
    ),
    ("service", &[Right::ServiceConnect]),
    ("device", &[Right::DeviceConnect]),
    ("registryRead", &[Right::RegistryRead]),
    (
        "registryReadWrite",
        &[Right::RegistryRead, Right::RegistryWrite],
    ),
];

pub fn run(args: &InitArgs) -> Result<()> {
    let config_path = args.dir.join("hub.toml");
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it, or choose another --dir",
            config_path.display()
        );
    }
    let hostname = args.hostnames[0].clone();
    let certs = args.dir.join("certs");
    let server_stem = format!("server-{}", hostname.replace(':', "_"));
    let key = KeyOpts {
        key_alg: KeyAlgorithm::P256,
        days: None,
        not_before: None,
        force: false,
    };
    if !certs.join("root-ca.cert.pem").exists() {
        let ca = Plan {
            what: "hub CA",
            profile: Profile::RootCa,
            cn: format!("ferrohub Hub CA {hostname}"),
            sans: vec![],
            stem: "root-ca".into(),
            full_chain: false,
            issuer: None,
        };
        issue_files(&certs, &ca, &key)?;
    }
    if !certs.join(format!("{server_stem}.cert.pem")).exists() {
        let server = Plan {
            what: "hub server certificate",
            profile: Profile::Server,
            cn: hostname.clone(),
            sans: args.hostnames.clone(),
            stem: server_stem.clone(),
            full_chain: true,
            issuer: Some(("root-ca".into(), None)),
        };
        issue_files(&certs, &server, &key)?;
    }
    let mut policies = Vec::new();
    for (name, rights) in POLICIES {
        let primary_key = hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?;
        let secondary_key = hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"))?;
        policies.push(Policy {
            name: name.into(),
            primary_key,
            secondary_key,
            rights: rights.to_vec(),
        });
    }
    let config = HubConfig {
        hostname,
        hostname_aliases: Vec::new(),
        listen: Listen {
            mqtt: args.mqtt,
            https: args.https,
            amqp: args.amqp.or_else(|| {
                (args.mqtt == SocketAddr::from(([0, 0, 0, 0], 8883)))
                    .then(|| SocketAddr::from(([0, 0, 0, 0], 5671)))
            }),
            ..Listen::default()
        },
        tls: Tls {
            cert: format!("certs/{server_stem}-full-chain.cert.pem").into(),
            key: format!("certs/{server_stem}.key.pem").into(),
            ca: Some("certs/root-ca.cert.pem".into()),
        },
        storage: Storage {
            registry: "data/registry.sqlite".into(),
            events: "data/events".into(),
            fsync: true,
            retention_hours: Some(24 * 7),
            retention_mib: None,
        },
        auth: AuthSettings::default(),
        limits: Limits::default(),
        policies,
    };
    let text = config.to_toml().context("cannot write the configuration")?;
    crate::certs::cert_dir::write_all(&[crate::certs::cert_dir::Output {
        path: config_path.clone(),
        contents: format!("# ferrohub hub configuration (created by `ferrohub hub init`)\n{text}"),
        secret: true,
    }])?;
    // Check it loads exactly as the hub will load it.
    let loaded = super::load(&config_path)?;
    println!("Created {}", config_path.display());
    println!(
        "  hub CA (clients trust this): {}",
        args.dir.join("certs/root-ca.cert.pem").display()
    );
    println!("  MQTT: {}   HTTPS: {}", args.mqtt, args.https);
    println!("Service connection string (iothubowner):");
    println!(
        "{}",
        loaded.connection_string("iothubowner").unwrap_or_default()
    );
    println!(
        "Start it with: ferrohub hub --config {}",
        config_path.display()
    );
    Ok(())
}
