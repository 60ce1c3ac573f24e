//! `ferrohub dps init`: a ready-to-run provisioning service directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use dps::config::{DpsConfig, LinkedHub, Listen, Policy, Right, Storage};
use ferrohub_runtime::config::Tls;
use pki::{KeyAlgorithm, Profile};

use crate::certs::cert_dir::{self, Output};
use crate::certs::{KeyOpts, Plan, issue_files};

#[derive(Debug, Args)]
#[command(
    after_help = "Example (one root CA for the hub and the DPS, so devices trust a single file):\n  \
    ferrohub hub init --dir hub --hostname localhost --mqtt 127.0.0.1:8883 --https 127.0.0.1:8443\n  \
    ferrohub dps init --dir dps --hostname localhost --mqtt 127.0.0.1:9883 --https 127.0.0.1:9443 \\\n      \
    --ca-dir hub/certs --hub-address 127.0.0.1:8443 \\\n      \
    --link-hub \"$(ferrohub hub connection-string --config hub/hub.toml)\""
)]
pub struct InitArgs {
    /// Directory to create the configuration, certificates and data in.
    #[arg(long, default_value = "dps")]
    dir: PathBuf,
    /// Host names and IP addresses of the service; the first is its host name. Repeat for more.
    #[arg(long = "hostname", required = true, value_name = "HOST")]
    hostnames: Vec<String>,
    /// MQTT over TLS listen address (device registrations).
    #[arg(long, default_value = "0.0.0.0:8883")]
    mqtt: SocketAddr,
    /// HTTPS listen address (device registrations and the service API).
    #[arg(long, default_value = "0.0.0.0:443")]
    https: SocketAddr,
    /// A hub to assign devices to: its service connection string with a policy that can write the
    /// registry (e.g. iothubowner). Repeat for more hubs.
    #[arg(long = "link-hub", required = true, value_name = "CONNECTION_STRING")]
    link_hubs: Vec<String>,
    /// The CA that issued the linked hubs' TLS certificates [default: this service's root CA].
    #[arg(long, value_name = "PEM_FILE")]
    hub_ca: Option<PathBuf>,
    /// `host:port` to dial the linked hubs at instead of `{HostName}:443`.
    #[arg(long, value_name = "HOST:PORT")]
    hub_address: Option<String>,
    /// Reuse the root CA in this directory (root-ca.cert.pem and root-ca.key.pem, e.g. hub/certs)
    /// instead of creating one, so devices trust one root for the hub and the DPS.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// The ID scope [default: generated, `0ne` and 8 hex digits].
    #[arg(long, value_name = "SCOPE")]
    id_scope: Option<String>,
    /// Replace an existing dps.toml (certificates and data are kept unless --ca-dir names a
    /// different root, which then replaces the root and the server certificate).
    #[arg(long)]
    force: bool,
}

/// Standard policies, as the Azure provisioning service creates them.
const POLICIES: [(&str, &[Right]); 3] = [
    ("provisioningserviceowner", &Right::ALL),
    (
        "enrollmentread",
        &[Right::EnrollmentRead, Right::RegistrationStatusRead],
    ),
    (
        "enrollmentwrite",
        &[
            Right::EnrollmentRead,
            Right::EnrollmentWrite,
            Right::RegistrationStatusRead,
            Right::RegistrationStatusWrite,
        ],
    ),
];

pub fn run(args: &InitArgs) -> Result<()> {
    let config_path = args.dir.join("dps.toml");
    if config_path.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it, or choose another --dir",
            config_path.display()
        );
    }
    // Check every input before anything is written.
    for cs in &args.link_hubs {
        check_link(cs)?;
    }
    let id_scope = match &args.id_scope {
        Some(s) => check_scope(s)?,
        None => dps::new_id_scope().context("cannot generate an ID scope")?,
    };
    let hub_ca = args.hub_ca.as_deref().map(absolute_file).transpose()?;
    let certs = args.dir.join("certs");
    let root_replaced = match &args.ca_dir {
        Some(from) => copy_root(from, &certs, args.force)?,
        None => false,
    };
    let server_stem = issue_certs(args, &certs, root_replaced)?;
    let config = DpsConfig {
        hostname: args.hostnames[0].clone(),
        id_scope,
        allocation_policy: "hashed".into(),
        listen: Listen {
            mqtt: args.mqtt,
            https: args.https,
            ..Listen::default()
        },
        tls: Tls {
            cert: format!("certs/{server_stem}-full-chain.cert.pem").into(),
            key: format!("certs/{server_stem}.key.pem").into(),
            ca: Some("certs/root-ca.cert.pem".into()),
        },
        storage: Storage {
            database: "data/dps.sqlite".into(),
        },
        policies: policies()?,
        linked_hubs: args
            .link_hubs
            .iter()
            .map(|cs| LinkedHub {
                connection_string: cs.trim().to_owned(),
                ca: hub_ca.clone(),
                address: args.hub_address.clone(),
                allocation_weight: 1,
            })
            .collect(),
    };
    let text = config.to_toml().context("cannot write the configuration")?;
    cert_dir::write_all(&[Output {
        path: config_path.clone(),
        contents: format!(
            "# ferrohub provisioning service configuration (created by `ferrohub dps init`)\n{text}"
        ),
        secret: true,
    }])?;
    // Check it loads exactly as the service will load it.
    let loaded = super::load(&config_path)?;
    print_summary(args, &config_path, &loaded);
    warn_about_hubs(&loaded);
    Ok(())
}

/// Refuses a `--link-hub` value the service could not use, without echoing its key.
fn check_link(cs: &str) -> Result<()> {
    let parsed = iot_auth::ConnectionString::parse(cs.trim())
        .map_err(|e| anyhow::anyhow!("--link-hub: not a connection string: {e}"))?;
    let host = parsed.host_name().unwrap_or_default();
    let hint = "pass a hub's service connection string, e.g. \
        `--link-hub \"$(ferrohub hub connection-string --config hub/hub.toml)\"`";
    if host.is_empty() {
        bail!("--link-hub: the connection string has no HostName; {hint}");
    }
    if parsed.device_id().is_some() || parsed.shared_access_key_name().is_none() {
        bail!(
            "--link-hub {host}: the connection string has no SharedAccessKeyName (it must name a hub \
            policy with registry write rights, such as iothubowner, not a device); {hint}"
        );
    }
    if parsed.shared_access_key().is_none_or(str::is_empty) {
        bail!("--link-hub {host}: the connection string has no SharedAccessKey; {hint}");
    }
    Ok(())
}

fn check_scope(s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!(
            "--id-scope {s:?}: use letters and digits only (e.g. 0ne0004A1B2), or leave it out to generate one"
        );
    }
    Ok(s.to_owned())
}

fn absolute_file(p: &Path) -> Result<PathBuf> {
    if !p.is_file() {
        bail!(
            "--hub-ca {}: no such file (pass the PEM of the CA that issued the hub's TLS certificate, e.g. hub/certs/root-ca.cert.pem)",
            p.display()
        );
    }
    std::path::absolute(p).with_context(|| format!("--hub-ca {}", p.display()))
}

/// Copies `from/root-ca.{cert,key}.pem` into `certs`; true when an existing, different root was
/// replaced (then the server certificate must be issued again).
fn copy_root(from: &Path, certs: &Path, force: bool) -> Result<bool> {
    let names = ["root-ca.cert.pem", "root-ca.key.pem"];
    let mut texts = Vec::new();
    for name in names {
        let src = from.join(name);
        if !src.is_file() {
            bail!(
                "--ca-dir {}: {name} is missing; pass the directory of an existing root CA \
                (e.g. hub/certs after `ferrohub hub init`), or leave --ca-dir out to create a new root",
                from.display()
            );
        }
        texts.push(cert_dir::read_text(&src)?);
    }
    cert_dir::load_cert(&from.join(names[0]))?;
    cert_dir::load_key(&from.join(names[1]))?;
    let dest_cert = certs.join(names[0]);
    let existing = dest_cert
        .is_file()
        .then(|| cert_dir::read_text(&dest_cert))
        .transpose()?;
    match existing {
        Some(text) if text == texts[0] => return Ok(false),
        Some(_) if !force => bail!(
            "{} exists and is a different root CA from {}; pass --force to replace it (and the \
            server certificate), or choose another --dir",
            dest_cert.display(),
            from.join(names[0]).display()
        ),
        _ => {}
    }
    let replaced = existing.is_some();
    let mut texts = texts.into_iter();
    cert_dir::write_all(&[
        Output::cert(dest_cert, texts.next().unwrap_or_default()),
        Output {
            path: certs.join(names[1]),
            contents: texts.next().unwrap_or_default(),
            secret: true,
        },
    ])?;
    Ok(replaced)
}

/// Creates the root CA (unless present) and the server certificate; returns the server's stem.
fn issue_certs(args: &InitArgs, certs: &Path, root_replaced: bool) -> Result<String> {
    let hostname = &args.hostnames[0];
    let server_stem = format!("server-{}", hostname.replace(':', "_"));
    let mut key = KeyOpts {
        key_alg: KeyAlgorithm::P256,
        days: None,
        not_before: None,
        force: false,
    };
    if !certs.join("root-ca.cert.pem").exists() {
        let ca = Plan {
            what: "provisioning service CA",
            profile: Profile::RootCa,
            cn: format!("ferrohub DPS CA {hostname}"),
            sans: vec![],
            stem: "root-ca".into(),
            full_chain: false,
            issuer: None,
        };
        issue_files(certs, &ca, &key)?;
    }
    if root_replaced || !certs.join(format!("{server_stem}.cert.pem")).exists() {
        key.force = true;
        let server = Plan {
            what: "provisioning service server certificate",
            profile: Profile::Server,
            cn: hostname.clone(),
            sans: args.hostnames.clone(),
            stem: server_stem.clone(),
            full_chain: true,
            issuer: Some(("root-ca".into(), None)),
        };
        issue_files(certs, &server, &key)?;
    }
    Ok(server_stem)
}

fn policies() -> Result<Vec<Policy>> {
    let key = || hub_wire::model::gen_key().map_err(|e| anyhow::anyhow!("{e}"));
    POLICIES
        .iter()
        .map(|(name, rights)| {
            Ok(Policy {
                name: (*name).into(),
                primary_key: key()?,
                secondary_key: key()?,
                rights: rights.to_vec(),
            })
        })
        .collect()
}

/// Says on stderr which linked hubs that answer now would refuse the service (an untrusted TLS
/// certificate, a refused key); a hub that is not running yet is checked again at start.
fn warn_about_hubs(cfg: &DpsConfig) {
    let clock: ferrohub_runtime::time::SharedClock =
        std::sync::Arc::new(ferrohub_runtime::time::SystemClock);
    let Ok(hubs) = dps::hubs::LinkedHubs::new(cfg, &clock) else {
        return;
    };
    let Ok(rt) = crate::hub_cmd::runtime() else {
        return;
    };
    for problem in rt.block_on(hubs.probe(std::time::Duration::from_secs(2))) {
        if !matches!(problem, dps::hubs::HubProblem::Unreachable { .. }) {
            eprintln!("warning: {problem}");
        }
    }
}

fn print_summary(args: &InitArgs, config_path: &Path, cfg: &DpsConfig) {
    println!("Created {}", config_path.display());
    println!("ID scope: {}", cfg.id_scope);
    println!(
        "  root CA (devices and clients trust this): {}",
        args.dir.join("certs/root-ca.cert.pem").display()
    );
    println!("  MQTT: {}   HTTPS: {}", args.mqtt, args.https);
    for h in &cfg.linked_hubs {
        let at = h.address.as_deref().unwrap_or("port 443");
        println!("  linked hub: {} (dialled at {at})", h.hostname());
    }
    println!("Service connection string (provisioningserviceowner):");
    println!(
        "{}",
        cfg.connection_string("provisioningserviceowner")
            .unwrap_or_default()
    );
    println!(
        "Start it with: ferrohub dps --config {}",
        config_path.display()
    );
}
