//! How a module is started: its environment (what an SDK's `create_from_edge_environment` /
//! `fromEnvironment` reads), its working directory, and for `docker` modules the container CLI
//! command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::warn;

use crate::config::{AgentConfig, Credentials};
use crate::deployment::{ModuleSpec, Runner};
use crate::identities::ModuleIdentity;
use crate::supervisor::Launch;

/// The workload API version modules are told to use.
pub const WORKLOAD_API_VERSION: &str = "2019-01-30";

/// A module's working directory: `{data_dir}/modules/{name}`.
pub fn module_dir(data_dir: &Path, module: &str) -> PathBuf {
    data_dir.join("modules").join(module)
}

/// A module's workload socket: `{data_dir}/workload/{name}.sock`.
pub fn workload_socket(data_dir: &Path, module: &str) -> PathBuf {
    data_dir.join("workload").join(format!("{module}.sock"))
}

/// The first of `docker` and `podman` found on `PATH`.
pub fn container_cli() -> Option<String> {
    let path = std::env::var_os("PATH")?;
    ["docker", "podman"].into_iter().find_map(|cli| {
        std::env::split_paths(&path)
            .any(|dir| dir.join(cli).is_file())
            .then(|| cli.to_owned())
    })
}

/// What every process gets from the agent's own environment.
fn base_env(dir: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }),
    );
    for name in ["LANG", "LC_ALL", "TZ"] {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.into(), v);
        }
    }
    env.insert("HOME".into(), dir.display().to_string());
    env
}

/// The module's environment: the deployment's `env`, then what IoT Edge gives every module
/// (which the deployment cannot override).
pub fn module_env(
    config: &AgentConfig,
    spec: &ModuleSpec,
    identity: &ModuleIdentity,
) -> BTreeMap<String, String> {
    let dir = module_dir(&config.data_dir, &spec.name);
    let mut env = base_env(&dir);
    env.extend(spec.env.clone());
    let mut set = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    set("IOTEDGE_IOTHUBHOSTNAME", config.hub_hostname.clone());
    set("IOTEDGE_DEVICEID", config.edge_id.clone());
    set("IOTEDGE_MODULEID", spec.name.clone());
    set("IOTEDGE_GATEWAYHOSTNAME", config.gateway_hostname.clone());
    set("IOTEDGE_MODULEGENERATIONID", identity.generation_id.clone());
    set("IOTEDGE_AUTHSCHEME", "sasToken".into());
    set(
        "EdgeModuleCACertificateFile",
        config.gateway_ca.display().to_string(),
    );
    match config.module_credentials {
        Credentials::Workload => {
            let sock = workload_socket(&config.data_dir, &spec.name);
            set("IOTEDGE_WORKLOADURI", format!("unix://{}", sock.display()));
            set("IOTEDGE_APIVERSION", WORKLOAD_API_VERSION.into());
        }
        Credentials::ConnectionString => {
            let cs = iot_auth::connection_string::ConnectionString::module(
                &config.hub_hostname,
                &config.edge_id,
                &spec.name,
                &identity.key,
            )
            .with("GatewayHostName", &config.gateway_hostname);
            set("EdgeHubConnectionString", cs.to_string());
        }
    }
    env
}

/// How to start `spec` with `env`; `cli` is the container CLI for `docker` modules.
pub fn launch(
    config: &AgentConfig,
    spec: &ModuleSpec,
    env: BTreeMap<String, String>,
    cli: Option<&str>,
) -> Launch {
    let dir = module_dir(&config.data_dir, &spec.name);
    match &spec.runner {
        Runner::Process {
            command,
            args,
            working_dir,
        } => Launch {
            program: command.clone(),
            args: args.clone(),
            env,
            dir: working_dir.as_ref().map_or(dir, PathBuf::from),
            user: spec.user,
            pre: None,
        },
        Runner::Docker {
            image,
            create_options,
        } => {
            let cli = cli.unwrap_or("docker").to_owned();
            let args = docker_args(config, spec, image, create_options.as_deref(), &env);
            Launch {
                program: cli.clone(),
                args,
                env,
                dir,
                user: None,
                pre: Some((cli, vec!["rm".into(), "-f".into(), spec.name.clone()])),
            }
        }
    }
}

/// `run --rm --name NAME --network host -e VAR... -v SOCKET -v CA [--user] IMAGE [CMD...]`:
/// variables are passed by name (their values come from the CLI's own environment, so keys do
/// not show on a command line). From `createOptions` it maps `Env`, `Cmd`, `Entrypoint`,
/// `User`, `WorkingDir` and `HostConfig.Binds`; other members are ignored with a warning.
fn docker_args(
    config: &AgentConfig,
    spec: &ModuleSpec,
    image: &str,
    create_options: Option<&str>,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--rm", "--name", &spec.name, "--network", "host"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for k in env
        .keys()
        .filter(|k| !matches!(k.as_str(), "PATH" | "HOME"))
    {
        a.extend(["-e".into(), k.clone()]);
    }
    let sock = workload_socket(&config.data_dir, &spec.name);
    let ca = config.gateway_ca.display().to_string();
    a.extend(["-v".into(), format!("{0}:{0}", sock.display())]);
    a.extend(["-v".into(), format!("{ca}:{ca}:ro")]);
    if let Some(u) = spec.user {
        let user = u
            .gid
            .map_or(u.uid.to_string(), |g| format!("{}:{g}", u.uid));
        a.extend(["--user".into(), user]);
    }
    let opts: Value = create_options
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    let mut cmd = Vec::new();
    if let Some(o) = opts.as_object() {
        for (k, v) in o {
            match k.as_str() {
                "Env" => strings(v)
                    .into_iter()
                    .for_each(|e| a.extend(["-e".into(), e])),
                "Cmd" => cmd = strings(v),
                "Entrypoint" => {
                    if let Some(e) = strings(v).first() {
                        a.extend(["--entrypoint".into(), e.clone()]);
                    }
                }
                "User" if spec.user.is_none() => {
                    a.extend(["--user".into(), v.as_str().unwrap_or_default().into()]);
                }
                "WorkingDir" => a.extend(["-w".into(), v.as_str().unwrap_or_default().into()]),
                "HostConfig" => {
                    for b in strings(&v["Binds"]) {
                        a.extend(["-v".into(), b]);
                    }
                }
                other => warn!(module = %spec.name, option = other, "createOptions member ignored"),
            }
        }
    }
    a.push(image.to_owned());
    a.extend(cmd);
    a
}
