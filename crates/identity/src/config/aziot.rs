//! aziot's file shapes and locations for principals, so an agent's installer written for the Azure
//! IoT Identity Service works unchanged:
//!
//! - a drop-in may hold one principal as bare top-level keys (`uid`, `name`, `idtype`, or `uid`
//!   and `keys`/`certs`), a single `[principal]` table, or `[[principal]]` entries;
//! - with `aziot_paths` applied, each daemon also reads principal files from
//!   `/etc/aziot/{keyd,certd,identityd}/config.d` and listens on `/run/aziot/{daemon}.sock`.
//!
//! `ferrohub config apply` records those two locations in the daemon's drop-in as
//! [`SOCKET_KEY`] and [`DIR_KEY`]; [`load`] takes them out again (the daemon config structs do
//! not carry them) and hands them to the caller as [`AziotPaths`].

use std::path::{Path, PathBuf};

use super::ConfigError;

/// aziot's configuration root and socket directory.
pub const CONFIG_ROOT: &str = "/etc/aziot";
pub const SOCKET_DIR: &str = "/run/aziot";

/// Daemon-config key: the extra socket the daemon listens on.
pub const SOCKET_KEY: &str = "aziot_socket";
/// Daemon-config key: the directory of aziot principal files the daemon reads.
pub const DIR_KEY: &str = "aziot_config_dir";

/// Where a daemon also listens and reads principals (both `None` without `aziot_paths`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AziotPaths {
    pub socket: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
}

/// `{root}/run/aziot/{daemon}.sock`.
pub fn socket(root: &Path, daemon: &str) -> PathBuf {
    under(root, SOCKET_DIR).join(format!("{daemon}.sock"))
}

/// `{root}/etc/aziot/{daemon}/config.d`.
pub fn config_dir(root: &Path, daemon: &str) -> PathBuf {
    under(root, CONFIG_ROOT).join(daemon).join("config.d")
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// One drop-in in the shape the merge expects: a bare principal (a top-level `uid`) becomes
/// `principal = [{...}]`, a single `[principal]` table becomes an array of one.
pub fn normalize(mut table: toml::Table) -> toml::Table {
    if table.contains_key("uid") {
        let mut out = toml::Table::new();
        out.insert("principal".into(), toml::Value::Array(vec![table.into()]));
        return out;
    }
    if let Some(toml::Value::Table(one)) = table.get("principal") {
        let one = toml::Value::Table(one.clone());
        table.insert("principal".into(), toml::Value::Array(vec![one]));
    }
    table
}

/// Takes [`SOCKET_KEY`] and [`DIR_KEY`] out of a merged daemon config, merges the principal
/// files of the aziot directory, and checks (then drops) aziot's `localid` options.
pub fn resolve(table: &mut toml::Table, file: &Path) -> Result<AziotPaths, ConfigError> {
    let paths = AziotPaths {
        socket: take_path(table, SOCKET_KEY, file)?,
        config_dir: take_path(table, DIR_KEY, file)?,
    };
    if let Some(dir) = &paths.config_dir {
        for f in super::toml_files(dir) {
            let t = normalize(super::read_table(&f, false)?);
            if let Some(key) = t.keys().find(|k| *k != "principal") {
                return Err(ConfigError::Invalid {
                    path: f,
                    message: format!(
                        "{key}: only principals (uid, name, idtype, keys, certs) are read from \
                         {}; set {key} in the super-config and run `ferrohub config apply`",
                        dir.display()
                    ),
                });
            }
            super::merge(table, t);
        }
    }
    strip_localid(table, file)?;
    Ok(paths)
}

fn take_path(
    table: &mut toml::Table,
    key: &str,
    file: &Path,
) -> Result<Option<PathBuf>, ConfigError> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.into())),
        Some(other) => Err(ConfigError::Invalid {
            path: file.into(),
            message: format!("{key}: expected a path string, found {}", other.type_str()),
        }),
    }
}

/// aziot's per-principal `localid = { type = "x509", attributes = "client" | "server" }` is
/// accepted when well formed; ferrohub does not issue local identities, so it has no effect.
fn strip_localid(table: &mut toml::Table, file: &Path) -> Result<(), ConfigError> {
    let Some(toml::Value::Array(entries)) = table.get_mut("principal") else {
        return Ok(());
    };
    for (i, p) in entries.iter_mut().enumerate() {
        let Some(localid) = p.as_table_mut().and_then(|t| t.remove("localid")) else {
            continue;
        };
        let kind = localid.get("type").and_then(toml::Value::as_str);
        let attributes = localid.get("attributes").and_then(toml::Value::as_str);
        let known = |k: &String| k == "type" || k == "attributes";
        let well_formed = kind == Some("x509")
            && matches!(attributes, None | Some("client" | "server"))
            && localid.as_table().is_some_and(|t| t.keys().all(known));
        if !well_formed {
            return Err(ConfigError::Invalid {
                path: file.into(),
                message: format!(
                    "principal[{i}].localid: expected {{ type = \"x509\", attributes = \
                     \"client\" or \"server\" }}"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn bare_and_single_table_principals_become_arrays() {
        let bare = normalize(table("uid = 7\nname = \"a\"\nidtype = [\"module\"]\n"));
        assert_eq!(bare["principal"][0]["uid"].as_integer(), Some(7));
        let one = normalize(table("[principal]\nuid = 8\nkeys = [\"k\"]\n"));
        assert_eq!(one["principal"][0]["keys"][0].as_str(), Some("k"));
        let many = normalize(table("[[principal]]\nuid = 9\nname = \"b\"\n"));
        assert_eq!(many["principal"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn localid_is_checked_and_dropped() {
        let file = Path::new("x.toml");
        let mut t = table(
            "[[principal]]\nuid = 1\nname = \"a\"\nidtype = [\"local\"]\n\
             localid = { type = \"x509\", attributes = \"server\" }\n",
        );
        assert_eq!(
            resolve(&mut t, file).map_err(|e| e.to_string()),
            Ok(AziotPaths::default())
        );
        assert!(t["principal"][0].get("localid").is_none());
        let mut bad = table("[[principal]]\nuid = 1\nname = \"a\"\nlocalid = { type = \"tpm\" }\n");
        let err = resolve(&mut bad, file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("principal[0].localid"), "{err}");
    }
}
