//! Configuration: each daemon's own file (`/etc/ferrohub/{keyd,certd,identityd}/config.toml`
//! plus `config.d/*.toml` drop-ins), and the device's super-config that `ferrohub config apply`
//! turns into those files.

pub mod apply;
pub mod aziot;
pub mod daemons;
pub mod superconfig;

use ferrohub_runtime::config::ConfigError;
use std::path::{Path, PathBuf};

pub use daemons::{CertdConfig, IdentitydConfig, KeydConfig};

/// Default locations (each overridable on the command line or by `FERROHUB_<SVC>_CONFIG`).
pub const SUPER_CONFIG: &str = "/etc/ferrohub/config.toml";
pub const CONFIG_ROOT: &str = "/etc/ferrohub";
pub const SOCKET_DIR: &str = "/run/ferrohub";
pub const STATE_ROOT: &str = "/var/lib/ferrohub";
pub const SECRETS_DIR: &str = "/var/secrets/ferrohub";

/// `toml` parse error as one line: `line N, key K: message` when the span is known.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// Reads `file` (missing = empty table) and merges every `*.toml` directly in `dropins`, sorted
/// by name: tables merge recursively, arrays concatenate, other values are replaced. A drop-in
/// may hold one principal in aziot's shapes (see [`aziot::normalize`]).
pub fn load_merged(file: &Path, dropins: &Path) -> Result<toml::Table, ConfigError> {
    let mut base = read_table(file, true)?;
    for f in toml_files(dropins) {
        let t = aziot::normalize(read_table(&f, false)?);
        merge(&mut base, t);
    }
    Ok(base)
}

/// The `*.toml` files directly in `dir`, sorted by name (none when `dir` is missing).
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn read_table(path: &Path, missing_ok: bool) -> Result<toml::Table, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(toml::Table::new());
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.into(),
                source,
            });
        }
    };
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: toml_error(&text, &e),
    })
}

/// The drop-in merge rule.
pub fn merge(base: &mut toml::Table, patch: toml::Table) {
    for (k, v) in patch {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(p)) => merge(b, p),
            (Some(toml::Value::Array(b)), toml::Value::Array(p)) => b.extend(p),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Loads a daemon config of type `T` from its file and drop-ins (and the aziot principal files
/// when `config apply` enabled them).
pub fn load_daemon<T: serde::de::DeserializeOwned>(
    file: &Path,
    dropins: &Path,
) -> Result<T, ConfigError> {
    load_daemon_aziot(file, dropins).map(|(config, _)| config)
}

/// [`load_daemon`], also returning the aziot socket and principal directory it was given.
pub fn load_daemon_aziot<T: serde::de::DeserializeOwned>(
    file: &Path,
    dropins: &Path,
) -> Result<(T, aziot::AziotPaths), ConfigError> {
    let mut table = load_merged(file, dropins)?;
    let paths = aziot::resolve(&mut table, file)?;
    let config = T::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
        path: file.into(),
        message: format!(
            "{} (with the drop-ins in {}{})",
            e.message().trim().replace('\n', " "),
            dropins.display(),
            paths
                .config_dir
                .as_ref()
                .map(|d| format!(" and {}", d.display()))
                .unwrap_or_default()
        ),
    })?;
    Ok((config, paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropins_merge_tables_and_concatenate_arrays() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = dir.path().join("config.toml");
        let d = dir.path().join("config.d");
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&base, "a = 1\n[t]\nx = 1\n[[principal]]\nuid = 1\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            d.join("10-b.toml"),
            "a = 2\n[t]\ny = 2\n[[principal]]\nuid = 2\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("00-a.toml"), "a = 3\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("ignored.txt"), "garbage").unwrap_or_else(|e| panic!("{e}"));
        let t = load_merged(&base, &d).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t["a"].as_integer(),
            Some(2),
            "sorted by name, the last wins"
        );
        assert_eq!(t["t"]["x"].as_integer(), Some(1));
        assert_eq!(t["t"]["y"].as_integer(), Some(2));
        assert_eq!(t["principal"].as_array().map(Vec::len), Some(2));
        std::fs::write(d.join("20-bad.toml"), "a = [\n").unwrap_or_else(|e| panic!("{e}"));
        let err = load_merged(&base, &d)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("20-bad.toml") && err.contains("line"), "{err}");
    }
}
