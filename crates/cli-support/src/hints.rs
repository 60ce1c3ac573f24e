//! Answers to the mistakes newcomers make, in one place, so every command words them alike: a
//! configuration file that does not exist yet (name the command that creates it), a port below
//! 1024 bound without the privilege (name root or CAP_NET_BIND_SERVICE and the `setcap` line for
//! this binary), and an error printed as one line with each cause once.

use std::path::Path;

use anyhow::{Result, anyhow};

/// Which kind of configuration a `--config` file is, so a missing one names its `init` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigKind {
    /// `hub.toml`, from `ferrohub hub init`.
    Hub,
    /// `dps.toml`, from `ferrohub dps init`.
    Dps,
    /// `edge.toml` (or the super-config, in identity service mode), from `ferrohub edge init`.
    Edge,
    /// `agent.toml`, from `ferrohub edge agent init`.
    Agent,
    /// The device super-config, from `ferrohub config mp` or `ferrohub config template`.
    SuperConfig,
}

impl ConfigKind {
    /// The file name the creating command writes.
    fn file_name(self) -> &'static str {
        match self {
            Self::Hub => "hub.toml",
            Self::Dps => "dps.toml",
            Self::Edge => "edge.toml",
            Self::Agent => "agent.toml",
            Self::SuperConfig => "config.toml",
        }
    }

    /// The command that creates `path` (the directory taken from it).
    fn create(self, path: &Path) -> String {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .display();
        let path = path.display();
        match self {
            Self::Hub => format!("`ferrohub hub init --dir {dir} --hostname HOST`"),
            Self::Dps => format!(
                "`ferrohub dps init --dir {dir} --hostname HOST --ca-dir hub/certs --link-hub \
                 \"$(ferrohub hub connection-string --config hub/hub.toml)\"`"
            ),
            Self::Edge => format!(
                "`ferrohub edge init --dir {dir} --edge-id ID --hostname HOST --config hub/hub.toml` \
                 (or, for identity service mode, a super-config: `ferrohub config template`)"
            ),
            Self::Agent => format!(
                "`ferrohub edge agent init --edge-config {dir}/edge.toml --config hub/hub.toml`"
            ),
            Self::SuperConfig => format!(
                "`ferrohub config mp --connection-string CS -o {path}`, or start from \
                 `ferrohub config template > {path}`"
            ),
        }
    }
}

/// Fails naming the command that creates `path` when it does not exist; any other problem
/// (unreadable, invalid) is left to the loader, which names it.
pub fn require_config(path: &Path, kind: ConfigKind) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let writes = match path.file_name() {
                Some(name) if name == kind.file_name() => String::new(),
                _ => format!(" (it writes {}; pass that file)", kind.file_name()),
            };
            Err(anyhow!(
                "{} not found: create it with {}{writes}",
                path.display(),
                kind.create(path)
            ))
        }
        _ => Ok(()),
    }
}

/// Fails naming `ferrohub config apply` when a daemon has neither its config file nor drop-ins
/// (the identity service was never configured under `root`).
pub fn require_daemon_config(file: &Path, dropins: &Path, root: &Path) -> Result<()> {
    if file.exists() || dropins.exists() {
        return Ok(());
    }
    let root = if root == Path::new("/") {
        String::new()
    } else {
        format!(" --root {}", root.display())
    };
    Err(anyhow!(
        "{} not found (nor {}): create it with `ferrohub config apply{root}` from the super-config \
         (`ferrohub config mp` or `ferrohub config template` writes one)",
        file.display(),
        dropins.display()
    ))
}

/// What to do when a port below 1024 is refused: run as root or grant the capability to this
/// binary.
pub fn privileged_port_fix() -> String {
    let exe = std::env::current_exe().unwrap_or_else(|_| "ferrohub".into());
    format!(
        "run as root or grant CAP_NET_BIND_SERVICE (setcap 'cap_net_bind_service=+ep' {})",
        exe.display()
    )
}

/// A failed bind, with [`privileged_port_fix`] added when it was refused for lack of privilege.
pub fn bind_failed(e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    let denied = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
    });
    if denied {
        anyhow!("{}: {}", one_line(&e), privileged_port_fix())
    } else {
        e
    }
}

/// The error and its causes on one line, outermost first, leaving out a cause whose text the
/// line already carries (errors that print their source in their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let e = anyhow::Error::from(ferrohub_runtime::config::ConfigError::Read {
            path: "c.toml".into(),
            source: io,
        })
        .context("outer");
        assert_eq!(one_line(&e), format!("outer: cannot read c.toml: {text}"));
    }

    #[test]
    fn a_missing_config_names_its_init_command() {
        let err = require_config(Path::new("nowhere/hub.toml"), ConfigKind::Hub)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "nowhere/hub.toml not found: create it with `ferrohub hub init --dir nowhere --hostname HOST`"
        );
        let err = require_config(Path::new("my.toml"), ConfigKind::Dps)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dps init --dir . ") && err.contains("it writes dps.toml"),
            "{err}"
        );
    }
}
