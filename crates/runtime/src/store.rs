//! What every server's storage shares, whichever backend holds it: the storage failure
//! ([`StoreError`], a full disk told apart so the API answers 507) and, with the `sqlite`
//! feature, the one way the embedded SQLite databases (the hub's registry, the provisioning
//! service's database) are opened: private, WAL, every commit fsync'ed.
//!
//! The store traits themselves live with their owners (`hub::store::Registry`,
//! `dps::store::DpsStore`, [`crate::cas::CaStore`]).

use std::path::{Path, PathBuf};

use axum::http::StatusCode;

use crate::error::ApiError;

/// A storage failure (I/O, corruption, a full disk). The caller answers 500 / CONNACK 3, or 507
/// when the disk is full (the hub's registry and the provisioning service's database alike).
#[derive(Debug, thiserror::Error)]
#[error("registry storage: {message}")]
pub struct StoreError {
    message: String,
    disk_full: bool,
    path: Option<PathBuf>,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            disk_full: false,
            path: None,
        }
    }

    /// Whether the write failed because the disk is full (SQLite's `SQLITE_FULL`, ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        self.disk_full
    }

    /// The database file the failure happened in, when the store named it.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Names the database file (for the operator's message).
    #[must_use]
    pub fn at(mut self, path: &Path) -> Self {
        self.path.get_or_insert_with(|| path.to_owned());
        self
    }

    /// What an API caller and the log are told when the disk is full.
    pub fn disk_full_message(&self) -> String {
        let at = self
            .path
            .as_deref()
            .map_or_else(String::new, |p| format!(" at {}", p.display()));
        format!(
            "disk full{at}: the change was not stored; free space on that disk, or lower \
             storage.retention_mib / retention_hours so the events log sharing it keeps less"
        )
    }
}

#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let disk_full = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
        Self {
            disk_full,
            ..Self::new(e.to_string())
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::new(format!("stored record does not parse: {e}"))
    }
}

/// How a service API answers a storage failure: 507 when the disk is full, else 500 without the
/// detail (which goes to the log).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            let message = e.disk_full_message();
            tracing::error!(error = %e, fix = %message, "Registry write refused: the disk is full");
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InsufficientStorage",
                message,
            );
        }
        // The detail goes to the log, not to the caller.
        tracing::error!(error = %e, "Registry storage failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerError",
            "internal storage error",
        )
    }
}

/// A SQLite connection in WAL mode where every commit is fsync'ed (`synchronous = FULL`): what
/// the hub's registry and the provisioning service's database use. The database is private
/// (see [`secure_sqlite`]).
#[cfg(feature = "sqlite")]
pub fn open_durable(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    secure_sqlite(path).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(e.to_string()),
        )
    })?;
    let conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Makes the SQLite database at `path` private before it is opened: its directory is created
/// 0700 when missing, the file is created 0600 when missing (SQLite gives the `-wal`, `-shm` and
/// `-journal` files the database's mode), and the database and those files are narrowed to 0600
/// when they are looser (logged by [`crate::fsperm::tighten`]).
#[cfg(feature = "sqlite")]
pub fn secure_sqlite(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsperm::create_dir(dir)?;
    }
    crate::fsperm::create_private_file(path)?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        crate::fsperm::tighten(Path::new(&name))?;
    }
    Ok(())
}
