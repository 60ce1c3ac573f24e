//! The one atomic, durable file write every ferrohub component uses to replace a file (keys,
//! certificates, device and module caches, the gateway's forwarding offsets, configs written by
//! `config apply` and `ferrohub certs`).
//!
//! A write goes to a new temporary file in the destination's own directory (so the rename cannot
//! cross a file system), created with the caller's mode and set to it whatever the umask, synced;
//! then renamed over the destination and the directory synced, so after a crash a reader finds the
//! old content or the new, never a part, and a write that returned stays written. A write that
//! fails before the rename leaves the destination as it was and removes its temporary file.
//!
//! * [`write`]: one file;
//! * [`write_all`]: several files, all or none of them replaced (each staged before any rename);
//! * [`Staged`]: a synced temporary file, to [`Staged::commit`] over its destination or
//!   [`Staged::commit_new`] only where none exists yet.
//!
//! The directory is not created here: callers create it with the mode it needs (see
//! [`crate::fsperm`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary names tried before giving up (each one taken by a stale file from an earlier run).
const MAX_TEMP_NAMES: u32 = 64;

/// Numbers this process's temporary files.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically and durably; the file gets `mode` (e.g. 0o600).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    Staged::new(path, bytes, mode)?.commit()
}

/// Replaces every `(path, bytes, mode)` or none: all are staged (written and synced) before the
/// first rename, and if one cannot be staged no destination is touched.
pub fn write_all(files: &[(&Path, &[u8], u32)]) -> Result<(), WriteError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WriteError { path, source }
    };
    let staged = files
        .iter()
        .map(|(path, bytes, mode)| Staged::new(path, bytes, *mode).map_err(failed(path)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for mut s in staged {
        let tmp = s.tmp.take().unwrap_or_default();
        if let Err(e) = fs::rename(&tmp, &s.dest) {
            let _ = fs::remove_file(&tmp);
            return Err(failed(&s.dest)(e));
        }
        let dir = parent(&s.dest).to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.iter().try_for_each(|d| sync_dir(d).map_err(failed(d)))
}

/// A file of [`write_all`] that could not be written (or the directory that could not be synced).
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// A synced temporary file next to its destination; removed when dropped uncommitted.
#[derive(Debug)]
pub struct Staged {
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

impl Staged {
    /// Writes `bytes` to a new temporary file in `dest`'s directory with `mode`, and syncs it.
    pub fn new(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<Self> {
        let (tmp, mut file) = create_temp(dest, mode)?;
        let staged = Self {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        };
        // Set the mode on the open file: `OpenOptions::mode` is narrowed by the umask.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(staged)
    }

    /// Renames the file over the destination and syncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        let tmp = self.tmp.take().unwrap_or_default();
        if let Err(e) = fs::rename(&tmp, &self.dest) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(parent(&self.dest))
    }

    /// Puts the file at the destination only if nothing is there (a hard link, so two writers
    /// cannot both win); `false` when the destination already existed, which is left unchanged.
    pub fn commit_new(mut self) -> io::Result<bool> {
        let tmp = self.tmp.take().unwrap_or_default();
        let linked = fs::hard_link(&tmp, &self.dest);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(parent(&self.dest)).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Makes the renames and links in `dir` durable. A file system that cannot sync a directory
/// (`EINVAL`) is not an error: it has nothing more to make durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A new, hidden file next to `dest`: `.{name}.{pid}.{n}.tmp`, skipping names left by a crash.
fn create_temp(dest: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let name = dest
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let dir = parent(dest);
    let mut last = None;
    for _ in 0..MAX_TEMP_NAMES {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_content_with_the_callers_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        write(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        // A replacement gets its own mode (not the old file's), whatever the umask narrows.
        write(&path, b"two, longer", 0o666).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        assert_eq!(mode(&path), 0o666);
        write(&path, b"3", 0o640).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"3");
        assert_eq!(mode(&path), 0o640);
        assert_eq!(names(dir.path()), ["offset"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("a.pem");
        write(&old, b"old", 0o644).unwrap();
        // The second destination's directory is missing: nothing is replaced.
        let missing = dir.path().join("missing").join("b.pem");
        let err = write_all(&[(&old, b"new", 0o644), (&missing, b"new", 0o600)]).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.path, missing);
        assert_eq!(fs::read(&old).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["a.pem"]);
        // A rename that fails (a directory is in the way) leaves the directory and no temp file.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write(&blocked, b"new", 0o600).is_err());
        assert!(blocked.join("inside").is_file());
        assert_eq!(names(dir.path()), ["a.pem", "blocked"]);
        // A staged file dropped uncommitted changes nothing.
        drop(Staged::new(&old, b"dropped", 0o600).unwrap());
        assert_eq!(fs::read(&old).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["a.pem", "blocked"]);
    }

    #[test]
    fn write_all_replaces_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a, b"old a", 0o600).unwrap();
        write_all(&[(&a, b"new a", 0o644), (&b, b"new b", 0o600)]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"new a");
        assert_eq!(fs::read(&b).unwrap(), b"new b");
        assert_eq!((mode(&a), mode(&b)), (0o644, 0o600));
        assert_eq!(names(dir.path()), ["a", "b"]);
    }

    #[test]
    fn commit_new_never_replaces_and_skips_stale_temp_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        // Temporary files a crashed run with this pid left behind are skipped, not reused.
        let next = COUNTER.load(Ordering::Relaxed);
        let stale: Vec<_> = (next..next + 8)
            .map(|n| {
                let p = dir
                    .path()
                    .join(format!(".key.{}.{n}.tmp", std::process::id()));
                fs::write(&p, b"stale").unwrap();
                p
            })
            .collect();
        assert!(
            Staged::new(&path, b"first", 0o600)
                .unwrap()
                .commit_new()
                .unwrap()
        );
        assert!(
            !Staged::new(&path, b"second", 0o600)
                .unwrap()
                .commit_new()
                .unwrap()
        );
        assert_eq!(fs::read(&path).unwrap(), b"first");
        for p in &stale {
            assert_eq!(fs::read(p).unwrap(), b"stale");
            fs::remove_file(p).unwrap();
        }
        assert_eq!(names(dir.path()), ["key"]);
    }
}
