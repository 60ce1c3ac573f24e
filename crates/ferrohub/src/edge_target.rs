//! Which gateway `ferrohub edge list|logs|restart|check` look at, from `--config`/`--root`: one
//! run by the edge agent (agent.toml), one run alone from an edge.toml (file mode), or one run
//! alone in identity service mode (the device super-config). The file's kind is read from its
//! content, as `ferrohub edge -c FILE` does.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use edge_agent::AgentConfig;

/// The agent configuration tried first when neither `--config` nor `--root` is given.
pub const DEFAULT_AGENT: &str = "edge/agent.toml";
/// Then the edge.toml of `ferrohub edge init`'s default directory.
pub const DEFAULT_EDGE: &str = "edge/edge.toml";

/// `--config FILE` / `--root DIR` of the commands that look at a gateway.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// The gateway's configuration: agent.toml (run by the edge agent), edge.toml (run alone),
    /// or the device super-config (identity service mode) [default: edge/agent.toml, else
    /// edge/edge.toml, else ROOT/etc/ferrohub/config.toml].
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Identity service mode: prefix of /etc/ferrohub and /var/lib/ferrohub (as the gateway's
    /// --root); the super-config is ROOT/etc/ferrohub/config.toml unless --config names it.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Identity service mode: the gateway's --data-dir, when it was started with one
    /// [default: ROOT/var/lib/ferrohub/edge].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// A gateway and how it runs.
#[derive(Debug)]
pub enum Target {
    /// Run by the edge agent: `list|logs|restart` go to the agent.
    Agent {
        path: PathBuf,
        config: Box<AgentConfig>,
    },
    /// Run alone from an edge.toml.
    File {
        path: PathBuf,
        config: Box<edge::EdgeConfig>,
    },
    /// Run alone in identity service mode.
    Identity {
        path: PathBuf,
        root: PathBuf,
        data_dir: PathBuf,
    },
}

/// What a configuration file is, by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Agent,
    Edge,
    SuperConfig,
}

/// Reads `path` and tells its kind: agent.toml names `edge_agent_key`, edge.toml `edge_id`,
/// anything else is taken as the super-config.
pub fn kind_of(path: &Path) -> Result<Kind> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not TOML", path.display()))?;
    Ok(if table.contains_key("edge_agent_key") {
        Kind::Agent
    } else if table.contains_key("edge_id") {
        Kind::Edge
    } else {
        Kind::SuperConfig
    })
}

impl Target {
    /// The gateway `args` name (see [`TargetArgs`]); an error says what was tried.
    pub fn resolve(args: &TargetArgs) -> Result<Self> {
        let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        let super_config = identity::config::apply::Paths::under(&root)
            .config_root
            .join("config.toml");
        let path = match (&args.config, &args.root) {
            (Some(p), _) => p.clone(),
            (None, Some(_)) => super_config.clone(),
            (None, None) => [
                PathBuf::from(DEFAULT_AGENT),
                PathBuf::from(DEFAULT_EDGE),
                super_config.clone(),
            ]
            .into_iter()
            .find(|p| p.exists())
            .with_context(|| {
                format!(
                    "no gateway configuration found (tried {DEFAULT_AGENT}, {DEFAULT_EDGE} and {}): \
                     pass --config FILE (agent.toml, edge.toml or the super-config) or --root DIR",
                    super_config.display()
                )
            })?,
        };
        // A missing file names the command that creates the kind its name says.
        let expected = match path.file_name().and_then(|n| n.to_str()) {
            Some("agent.toml") => crate::hints::ConfigKind::Agent,
            Some("config.toml") => crate::hints::ConfigKind::SuperConfig,
            _ => crate::hints::ConfigKind::Edge,
        };
        crate::hints::require_config(&path, expected)?;
        let kind = kind_of(&path)?;
        if kind != Kind::SuperConfig && (args.root.is_some() || args.data_dir.is_some()) {
            bail!(
                "{} is not a super-config: --root and --data-dir apply to identity service mode only",
                path.display()
            );
        }
        Ok(match kind {
            Kind::Agent => {
                let config = AgentConfig::load(&path).with_context(|| {
                    "cannot read the agent configuration (create it with `ferrohub edge agent init`)"
                })?;
                Self::Agent {
                    path,
                    config: Box::new(config),
                }
            }
            Kind::Edge => Self::File {
                config: Box::new(edge::EdgeConfig::load(&path)?),
                path,
            },
            Kind::SuperConfig => {
                let data_dir = args.data_dir.clone().unwrap_or_else(|| {
                    identity::config::apply::Paths::under(&root)
                        .state_root
                        .join("edge")
                });
                Self::Identity {
                    path,
                    root,
                    data_dir,
                }
            }
        })
    }

    /// The gateway's data directory, when it runs alone.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Self::Agent { .. } => None,
            Self::File { config, .. } => Some(&config.data_dir),
            Self::Identity { data_dir, .. } => Some(data_dir),
        }
    }

    /// The command that starts what answers `list` and `restart`.
    pub fn start_command(&self) -> String {
        match self {
            Self::Agent { path, .. } => {
                format!("ferrohub edge agent --config {}", path.display())
            }
            Self::File { path, .. } => format!("ferrohub edge -c {}", path.display()),
            Self::Identity { path, root, .. } if root == Path::new("/") => {
                format!("ferrohub edge -c {}", path.display())
            }
            Self::Identity { path, root, .. } => {
                format!(
                    "ferrohub edge -c {} --root {}",
                    path.display(),
                    root.display()
                )
            }
        }
    }

    /// The socket that answers `list` and `restart`: the agent's, or the gateway's own.
    pub fn control_socket(&self) -> PathBuf {
        match self {
            Self::Agent { config, .. } => config.control_socket(),
            Self::File { config, .. } => edge::control::gateway_socket(&config.data_dir),
            Self::Identity { data_dir, .. } => edge::control::gateway_socket(data_dir),
        }
    }

    /// Where `module`'s log is: the agent's log directory, or the gateway's data directory
    /// (only `edgeHub` there).
    pub fn log_path(&self, module: &str) -> Result<PathBuf> {
        match self {
            Self::Agent { config, .. } => Ok(config.log_path(module)),
            _ if module != edge::control::EDGE_HUB => bail!(
                "no module {module} here: without an edge agent the gateway ({}) is the only one \
                 (`ferrohub edge logs {}`)",
                edge::control::EDGE_HUB,
                edge::control::EDGE_HUB
            ),
            other => Ok(edge::control::gateway_log(
                other.data_dir().unwrap_or(Path::new(".")),
            )),
        }
    }
}
