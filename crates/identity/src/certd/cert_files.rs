//! Where certificates live: `{homedir}/certs/<file_name(id)>.cer`, or the file a preloaded id
//! names; trust bundles are read as the concatenation of their members.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::CertError;
use crate::config::daemons::PreloadedCert;
use crate::keyd::{file_name, uri_path};

/// Where one cert id is kept.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Location<'a> {
    File(PathBuf),
    Bundle(&'a [String]),
}

#[derive(Debug)]
pub(super) struct Store {
    certs_dir: PathBuf,
    preloaded: BTreeMap<String, PreloadedCert>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    pub(super) fn new(homedir: &Path, preloaded: BTreeMap<String, PreloadedCert>) -> Self {
        Self {
            certs_dir: homedir.join("certs"),
            preloaded,
        }
    }

    pub(super) fn location(&self, id: &str) -> Location<'_> {
        match self.preloaded.get(id) {
            Some(PreloadedCert::Uri(uri)) => Location::File(uri_path(uri).to_path_buf()),
            Some(PreloadedCert::Ids(ids)) => Location::Bundle(ids),
            None => Location::File(self.certs_dir.join(file_name(id, "cer"))),
        }
    }

    /// The PEM of `id`, `None` when it does not exist. A bundle skips its missing members and
    /// is missing when all are. (Bundles cannot contain themselves: checked when opening.)
    pub(super) fn read(&self, id: &str) -> Result<Option<String>, CertError> {
        match self.location(id) {
            Location::File(path) => match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_error(&path)(e)),
            },
            Location::Bundle(members) => {
                let mut out = String::new();
                for member in members {
                    if let Some(pem) = self.read(member)? {
                        out.push_str(&pem);
                        if !out.is_empty() && !out.ends_with('\n') {
                            out.push('\n');
                        }
                    }
                }
                Ok((!out.is_empty()).then_some(out))
            }
        }
    }

    /// Replaces `id` with `pem`, atomically: 0600 in certd's private store, 0644 at a preloaded
    /// path (a file the operator named, which other programs may read).
    pub(super) fn write(&self, id: &str, pem: &str) -> Result<(), CertError> {
        match self.location(id) {
            Location::File(path) if path.starts_with(&self.certs_dir) => {
                ferrohub_runtime::fsperm::create_dir(&self.certs_dir)
                    .map_err(io_error(&self.certs_dir))?;
                write_atomic_mode(&path, pem.as_bytes(), ferrohub_runtime::fsperm::FILE_MODE)
                    .map_err(io_error(&path))
            }
            Location::File(path) => write_atomic(&path, pem.as_bytes()).map_err(io_error(&path)),
            Location::Bundle(_) => Err(bundle_is_read_only(id)),
        }
    }

    /// Deletes `id`'s file; a missing one is fine.
    pub(super) fn delete(&self, id: &str) -> Result<(), CertError> {
        match self.location(id) {
            Location::File(path) => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path)(e)),
                _ => Ok(()),
            },
            Location::Bundle(_) => Err(bundle_is_read_only(id)),
        }
    }
}

fn bundle_is_read_only(id: &str) -> CertError {
    CertError::invalid(
        "id",
        format!("{id:?} is a preloaded trust bundle (a list of cert ids) and cannot be changed"),
    )
}

/// Replaces `path` with `bytes` atomically and durably (mode 0644), creating its directory.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file's `mode`, set whatever the process umask.
fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    ferrohub_runtime::atomic::write(path, bytes, mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> PreloadedCert {
        PreloadedCert::Ids(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn stored_preloaded_and_bundled_ids() {
        let dir = tempfile::tempdir().unwrap();
        let pre = dir.path().join("etc/root.pem");
        let mut preloaded = BTreeMap::new();
        preloaded.insert(
            "root".to_owned(),
            PreloadedCert::Uri(format!("file://{}", pre.display())),
        );
        preloaded.insert("bundle".to_owned(), ids(&["root", "missing", "mine"]));
        preloaded.insert("empty".to_owned(), ids(&["missing"]));
        let store = Store::new(dir.path(), preloaded);

        assert_eq!(store.location("root"), Location::File(pre.clone()));
        let mine = store.location("../mine");
        assert!(matches!(&mine, Location::File(p) if p.starts_with(dir.path().join("certs"))));

        assert_eq!(store.read("root").unwrap(), None);
        store.write("root", "ROOT").unwrap();
        assert_eq!(std::fs::read_to_string(&pre).unwrap(), "ROOT");
        store.write("mine", "MINE\n").unwrap();
        assert_eq!(
            store.read("bundle").unwrap().as_deref(),
            Some("ROOT\nMINE\n")
        );
        assert_eq!(store.read("empty").unwrap(), None);
        assert!(matches!(
            store.write("bundle", "x"),
            Err(CertError::InvalidParameter { name: "id", .. })
        ));

        store.delete("mine").unwrap();
        store.delete("mine").unwrap();
        assert_eq!(store.read("mine").unwrap(), None);
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files_and_use_0644() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.cer");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o644 & !0o022);
    }
}
