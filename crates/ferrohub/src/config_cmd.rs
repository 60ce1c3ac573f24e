//! `ferrohub config`: the device super-config (`/etc/ferrohub/config.toml`, aziot's schema) and
//! the keyd, certd and identityd configs made from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};
use identity::config::apply::{self, Applied, Paths};
use identity::config::daemons::PreloadedCert;
use identity::config::superconfig::{self, Provisioning, SuperConfig};
use identity::config::{CertdConfig, IdentitydConfig, KeydConfig, SUPER_CONFIG, load_daemon};

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Turn the super-config into the keyd, certd and identityd configs
    /// (`{keyd,certd,identityd}/config.d/00-super.toml`), then ask a running identityd to reload.
    Apply(ApplyArgs),
    /// Write a minimal super-config for manual provisioning from a device connection string.
    Mp(MpArgs),
    /// Print a commented super-config covering every section (valid as printed: manual
    /// provisioning with a placeholder connection string to replace).
    #[command(after_help = "Examples:\n  ferrohub config template > config.toml\n  \
        $EDITOR config.toml && sudo cp config.toml /etc/ferrohub/config.toml && sudo ferrohub config apply")]
    Template,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sudo ferrohub config apply                      # /etc/ferrohub/config.toml\n  \
    ferrohub config apply -c config.toml --root ./trial   # writes ./trial/etc/ferrohub/..., no root needed\n\n\
    The super-config takes aziot's /etc/aziot/config.toml keys: hostname, [provisioning] (manual\n\
    with a connection string, SAS or X.509; dps with a symmetric key or X.509; none),\n\
    [cert_issuance.local_ca], [edge_ca], trust_bundle_cert, [aziot_max_requests], [[principal]]."
)]
pub struct ApplyArgs {
    /// The super-config [default: /etc/ferrohub/config.toml, below --root when given].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Prefix for every default path (configs, sockets, state, secrets), for trials without root.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Also serve aziot's sockets (/run/aziot/{keyd,certd,identityd}.sock) and read principal
    /// files from /etc/aziot/{keyd,certd,identityd}/config.d (below --root when given); the same
    /// as `aziot_paths = true` in the super-config.
    #[arg(long)]
    aziot_paths: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  sudo ferrohub config mp --connection-string \
    'HostName=hub.example;DeviceId=dev1;SharedAccessKey=...'\n  sudo ferrohub config apply"
)]
pub struct MpArgs {
    /// The device connection string: HostName=...;DeviceId=...;SharedAccessKey=...
    #[arg(long, value_name = "CS")]
    connection_string: String,
    /// Where to write the super-config.
    #[arg(short = 'o', long = "out", value_name = "FILE", default_value = SUPER_CONFIG)]
    out: PathBuf,
    /// This device's host name [default: the machine's, from /etc/hostname].
    #[arg(long, value_name = "NAME")]
    hostname: Option<String>,
    /// Replace an existing file.
    #[arg(long)]
    force: bool,
}

pub fn run(cmd: ConfigCmd) -> Result<bool> {
    match cmd {
        ConfigCmd::Apply(args) => run_apply(&args),
        ConfigCmd::Mp(args) => run_mp(&args),
        ConfigCmd::Template => {
            print!("{}", crate::config_template::TEMPLATE);
            Ok(true)
        }
    }
}

fn run_apply(args: &ApplyArgs) -> Result<bool> {
    let paths = args
        .root
        .as_deref()
        .map_or_else(Paths::default, Paths::under);
    let file = match (&args.config, &args.root) {
        (Some(file), _) => file.clone(),
        (None, Some(root)) => root.join(SUPER_CONFIG.trim_start_matches('/')),
        (None, None) => SUPER_CONFIG.into(),
    };
    crate::hints::require_config(&file, crate::hints::ConfigKind::SuperConfig)?;
    let config = SuperConfig::load(&file)?;
    let paths = if args.aziot_paths || config.aziot_paths {
        let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        paths.with_aziot(&root)
    } else {
        paths
    };
    let applied = apply::plan(&config, &paths).with_context(|| format!("{}", file.display()))?;
    let written =
        apply::write(&applied, &paths).context("nothing was applied; the old files are kept")?;
    println!("Applied {}:", file.display());
    for path in &written {
        println!("  wrote {}", path.display());
    }
    warn_missing_files(&applied);
    let loads = check_loads(&paths);
    if args.root.is_none() && paths.aziot("identityd").is_some() {
        aziot_accounts();
    }
    if let Some((socket, dir)) = paths.aziot("identityd") {
        println!(
            "aziot paths on: the daemons also listen in {}; agents' principal files go in {} \
             (and keyd's, certd's next to it)",
            socket.parent().unwrap_or(&socket).display(),
            dir.display()
        );
    }
    let reloaded = reload_identityd(&paths.socket("identityd"))?;
    Ok(loads && reloaded)
}

/// With aziot's paths on the machine itself: the `aziotid`/`aziotcs`/`aziotks` accounts agents'
/// installers expect (created as root; otherwise a note says how).
fn aziot_accounts() {
    if !rustix::process::geteuid().is_root() {
        println!(
            "note: aziot's groups aziotid, aziotcs and aziotks are created only when this runs as root \
             (`sudo ferrohub config apply --aziot-paths`)"
        );
        return;
    }
    match crate::aziot_users::ensure() {
        Ok(created) if !created.is_empty() => println!(
            "created aziot's system accounts {} (agents' installers add their users to them)",
            created.join(", ")
        ),
        Ok(_) => {}
        Err(e) => eprintln!(
            "warning: aziot's accounts aziotid, aziotcs, aziotks are missing and could not be created: {e}"
        ),
    }
}

/// Preloaded files that do not exist yet: the daemons will fail on them.
fn warn_missing_files(applied: &Applied) {
    // Labelled key or certificate: the two of one id (e.g. [edge_ca] cert and pk) are two causes.
    let keys = (applied.keyd.preloaded_keys.iter()).map(|(id, uri)| ("key", id, uri));
    let certs = applied
        .certd
        .preloaded_certs
        .iter()
        .filter_map(|(id, c)| match c {
            PreloadedCert::Uri(uri) => Some(("certificate", id, uri)),
            PreloadedCert::Ids(_) => None,
        });
    for (what, id, uri) in keys.chain(certs) {
        let path = identity::keyd::uri_path(uri);
        if !path.exists() {
            eprintln!("warning: {what} {id}: {} does not exist", path.display());
        }
    }
}

/// Each daemon's config as the daemon will read it (its own file, then every drop-in).
fn check_loads(paths: &Paths) -> bool {
    let load = |d: &str| (paths.daemon_config(d), paths.dropin_dir(d));
    let results = [
        load_as::<KeydConfig>(load("keyd")),
        load_as::<CertdConfig>(load("certd")),
        load_as::<IdentitydConfig>(load("identityd")),
    ];
    let mut ok = true;
    for e in results.into_iter().filter_map(Result::err) {
        eprintln!("error: {e} (the daemon's own config.toml or a later drop-in conflicts)");
        ok = false;
    }
    ok
}

fn load_as<T: serde::de::DeserializeOwned>(
    (file, dropins): (PathBuf, PathBuf),
) -> Result<(), ferrohub_runtime::config::ConfigError> {
    load_daemon::<T>(&file, &dropins).map(drop)
}

const RESTART: &str = "restart the identity service (ferrohub identity run) to use them";

/// Asks a running identityd to reload; no socket, no daemon: nothing to do but restart later.
fn reload_identityd(socket: &Path) -> Result<bool> {
    if !socket.exists() {
        println!("identityd is not running; {RESTART}.");
        return Ok(true);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = identity::client::UdsClient::new(socket);
    let request = client.send(hyper::Method::POST, "/reload?api-version=2020-09-01", None);
    let answer =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), request).await });
    match answer {
        Ok(Ok((status, _))) if status.is_success() => {
            println!(
                "identityd reloaded its configuration; if keyd or certd settings changed, {RESTART}."
            );
            Ok(true)
        }
        Ok(Ok((hyper::StatusCode::NOT_FOUND, _))) => {
            println!("identityd cannot reload its configuration; {RESTART}.");
            Ok(true)
        }
        Ok(Ok((status, body))) => {
            let message = body["message"].as_str().unwrap_or_default();
            eprintln!("error: identityd refused to reload ({status}): {message}");
            Ok(false)
        }
        Ok(Err(e)) => {
            println!("identityd is not answering ({e}); {RESTART}.");
            Ok(true)
        }
        Err(_) => {
            println!("identityd did not answer within 30 s; {RESTART}.");
            Ok(true)
        }
    }
}

fn run_mp(args: &MpArgs) -> Result<bool> {
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it, or -o FILE to write elsewhere",
            args.out.display()
        );
    }
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(superconfig::machine_hostname);
    let text = manual_config(&hostname, &args.connection_string);
    // Check it exactly as `config apply` will read it.
    let config = SuperConfig::parse(&text, Path::new("the generated super-config"))
        .map_err(|e| anyhow!("{e}"))
        .context("invalid --connection-string or --hostname")?;
    crate::certs::cert_dir::write_all(&[crate::certs::cert_dir::Output {
        path: args.out.clone(),
        contents: text,
        secret: true,
    }])?;
    if let Provisioning::Manual {
        iothub_hostname,
        device_id,
        ..
    } = &config.provisioning
    {
        println!(
            "Wrote {} (device {device_id} of {iothub_hostname}, host name {hostname}).",
            args.out.display()
        );
    }
    let apply = if args.out == Path::new(SUPER_CONFIG) {
        "ferrohub config apply".to_owned()
    } else {
        format!("ferrohub config apply -c {}", args.out.display())
    };
    println!("Next: {apply}");
    Ok(true)
}

/// The super-config `config mp` writes.
fn manual_config(hostname: &str, connection_string: &str) -> String {
    format!(
        "# ferrohub super-config (written by \"ferrohub config mp\").\n\
         # Turn it into the daemon configs with: ferrohub config apply\n\
         hostname = {}\n\
         auto_reprovisioning_mode = \"OnErrorOnly\"\n\n\
         [provisioning]\n\
         source = \"manual\"\n\
         connection_string = {}\n",
        toml_string(hostname),
        toml_string(connection_string)
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const CS: &str = "HostName=hub.example;DeviceId=dev1;SharedAccessKey=c2VjcmV0LWtleQ";

    fn mp(out: &Path, cs: &str, force: bool) -> Result<bool> {
        run_mp(&MpArgs {
            connection_string: cs.into(),
            out: out.into(),
            hostname: Some("my-edge-device".into()),
            force,
        })
    }

    #[test]
    fn mp_writes_a_0600_super_config_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("config.toml");
        assert!(mp(&out, CS, false).unwrap());
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let config = SuperConfig::load(&out).unwrap();
        assert_eq!(config.hostname, "my-edge-device");
        assert_eq!(config.auto_reprovisioning_mode.as_str(), "OnErrorOnly");
        let err = mp(&out, CS, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert!(mp(&out, CS, true).unwrap());
    }

    #[test]
    fn mp_refuses_a_bad_connection_string_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("config.toml");
        let err = mp(&out, "HostName=hub.example;SharedAccessKey=c2VjcmV0", false).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("no DeviceId"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "the key leaked: {err}");
        assert!(!out.exists());
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    #[test]
    fn apply_under_a_root_writes_the_daemon_configs() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("etc/ferrohub/config.toml");
        assert!(mp(&file, CS, false).unwrap());
        let args = ApplyArgs {
            config: None,
            root: Some(root.path().into()),
            aziot_paths: false,
        };
        assert!(
            run_apply(&args).unwrap(),
            "no identityd socket: nothing to reload"
        );
        let paths = Paths::under(root.path());
        for d in apply::DAEMONS {
            assert!(paths.dropin(d).exists(), "{d}");
        }
        assert_eq!(
            std::fs::read(paths.device_key_file()).unwrap(),
            b"secret-key"
        );
        std::fs::write(
            &file,
            "hostname = \"x\"\n[provisioning]\nsource = \"tpm\"\n",
        )
        .unwrap();
        let err = format!("{:#}", run_apply(&args).unwrap_err());
        assert!(
            err.contains("config.toml") && err.contains("line 3"),
            "{err}"
        );
    }
}
