//! Private files and directories: what ferrohub keeps on disk (databases, log segments, offsets,
//! keys) is for its own uid only — directories 0700, files 0600 — whatever the process umask.
//!
//! This is the one implementation the hub, the provisioning service, the edge gateway, the
//! identity service and the durable log use (the durable log creates its own directory and
//! segment files). Replacing a file's content is [`crate::atomic`]'s.
//!
//! * [`create_dir`] makes a data directory 0700;
//! * [`private_file`] gives `OpenOptions` that create files 0600;
//! * [`tighten`] narrows one existing file or directory that other users could read, write or
//!   enter to its owner's bits, with one log line naming the old and the new mode;
//! * [`secure_dir`] does [`create_dir`] and then [`tighten_tree`] (every path under it): on start,
//!   for a directory that is ferrohub's alone. Symbolic links are not followed, sockets are left
//!   alone.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tracing::warn;

/// The mode of every data directory ferrohub creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every data file ferrohub creates.
pub const FILE_MODE: u32 = 0o600;
/// The bits of group and others.
const OTHERS: u32 = 0o077;

/// One path [`tighten`] narrowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixed {
    /// The file or directory.
    pub path: PathBuf,
    /// Its mode before (permission bits).
    pub old: u32,
    /// Its mode now.
    pub new: u32,
}

/// Creates `dir` with mode 0700 (an existing `dir` is left as it is). Missing parents are made
/// as `create_dir_all` makes them: they may be shared (`/var/lib/ferrohub` holds the identity
/// service's homes, a prefix may also hold the sockets' directory).
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| with_path(parent, e))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other.map_err(|e| with_path(dir, e)),
    }
}

/// `OpenOptions` that create a missing file with mode 0600 (set read/write/create as needed).
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Creates `path` empty with mode 0600 if it does not exist (e.g. before SQLite opens it, so the
/// database and its `-wal`/`-shm`/`-journal` files, which SQLite creates with the database's
/// mode, are private); an existing file is not touched.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    private_file()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|e| with_path(path, e))
}

/// [`create_dir`], then [`tighten_tree`] on it: what a service calls on start for a directory
/// that is its own alone (a log directory, a key store, a gateway's data directory).
pub fn secure_dir(dir: &Path) -> io::Result<Vec<Fixed>> {
    create_dir(dir)?;
    tighten_tree(dir)
}

/// Narrows `path` (a file or a directory, not what is in it) to its owner's bits if group or
/// others have any (0644 → 0600, 0755 → 0700), with a log line naming the old and new mode.
/// Symbolic links are not followed; sockets, FIFOs and devices are left alone; a missing `path`
/// is nothing to do.
pub fn tighten(path: &Path) -> io::Result<Option<Fixed>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(path, e)),
    };
    let kind = meta.file_type();
    let old = meta.permissions().mode() & 0o7777;
    if !(kind.is_dir() || kind.is_file()) || old & OTHERS == 0 {
        return Ok(None);
    }
    let new = old & !OTHERS;
    fs::set_permissions(path, fs::Permissions::from_mode(new)).map_err(|e| with_path(path, e))?;
    warn!(
        path = %path.display(),
        old_mode = format!("{old:04o}"),
        new_mode = format!("{new:04o}"),
        "Tightened the permissions of a data path other local users could reach"
    );
    Ok(Some(Fixed {
        path: path.to_path_buf(),
        old,
        new,
    }))
}

/// [`tighten`] on `dir` and everything under it (not following symbolic links).
pub fn tighten_tree(dir: &Path) -> io::Result<Vec<Fixed>> {
    let mut fixed = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        fixed.extend(tighten(&p)?);
        let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_dir());
        if is_dir {
            for entry in fs::read_dir(&p).map_err(|e| with_path(&p, e))? {
                pending.push(entry.map_err(|e| with_path(&p, e))?.path());
            }
        }
    }
    Ok(fixed)
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_paths_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        create_dir(&data).unwrap();
        let f = data.join("db");
        create_private_file(&f).unwrap();
        fs::write(&f, b"x").unwrap();
        create_private_file(&f).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"x", "an existing file is kept");
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn loose_paths_are_tightened_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::write(data.join("sub/seg.log"), b"x").unwrap();
        fs::write(data.join("key"), b"k").unwrap();
        for (p, m) in [
            (data.clone(), 0o755),
            (data.join("sub"), 0o775),
            (data.join("sub/seg.log"), 0o644),
            (data.join("key"), 0o600),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        }
        let outside = dir.path().join("outside");
        fs::write(&outside, b"o").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
        let mut fixed = secure_dir(&data).unwrap();
        fixed.sort_by(|a, b| a.path.cmp(&b.path));
        let want = [
            (data.clone(), 0o755, 0o700),
            (data.join("sub"), 0o775, 0o700),
            (data.join("sub/seg.log"), 0o644, 0o600),
        ];
        let got: Vec<_> = fixed
            .iter()
            .map(|f| (f.path.clone(), f.old, f.new))
            .collect();
        assert_eq!(got, want);
        assert_eq!(mode(&data.join("key")), 0o600);
        assert_eq!(mode(&outside), 0o644, "links are not followed");
        assert!(
            tighten_tree(&data).unwrap().is_empty(),
            "nothing left to fix"
        );
        assert!(
            tighten_tree(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
        assert_eq!(tighten(&dir.path().join("missing")).unwrap(), None);
    }
}
