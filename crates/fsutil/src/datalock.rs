//! One process per data directory: a hub, provisioning service, gateway or identity service holds
//! an exclusive `flock` on `<data dir>/.lock` (which holds its pid) for its whole life, so a second
//! process started on the same directory stops at once and names the first, instead of both
//! writing the same databases and logs.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = ".lock";

/// A held lock; released when dropped (and by the kernel when the process ends, however it ends).
#[derive(Debug)]
pub struct DataLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataLockError {
    #[error(
        "{dir} is in use by another ferrohub process (pid {pid}, lock {lock}): stop that process \
         first, or give this one another data directory"
    )]
    Held {
        dir: String,
        lock: String,
        pid: String,
    },
    #[error("cannot lock {lock}: {source}")]
    Io {
        lock: String,
        source: std::io::Error,
    },
}

impl DataLock {
    /// Takes the lock of `dir` (created, private, when missing) and writes this process's pid.
    pub fn acquire(dir: &Path) -> Result<Self, DataLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source: std::io::Error| DataLockError::Io {
            lock: path.display().to_string(),
            source,
        };
        crate::fsperm::create_dir(dir).map_err(io)?;
        let mut file = crate::fsperm::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e != rustix::io::Errno::WOULDBLOCK {
                return Err(io(e.into()));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(DataLockError::Held {
                dir: dir.display().to_string(),
                lock: path.display().to_string(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.to_owned()
                },
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataLock::acquire(&data).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(held.path()).unwrap().trim(), pid);
        match DataLock::acquire(&data) {
            Err(DataLockError::Held { pid: p, .. }) => assert_eq!(p, pid),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        DataLock::acquire(&data).unwrap();
    }
}
