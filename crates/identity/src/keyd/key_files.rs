//! [`FileKeyStore`]: keys as files under `{homedir}/keys/`.
//!
//! Symmetric keys are raw bytes in `{file_name(id, "key")}`, key pairs PKCS#8 PEM in
//! `{file_name(id, "keypair.pem")}`; `preloaded_keys` put an id's file elsewhere. Files are mode
//! 0600 in a 0700 directory and every write is atomic: a temporary file in the same directory,
//! fsynced, then renamed over the target (import) or hard-linked to it (creation, which so never
//! replaces a key another process created meanwhile).
//!
//! Symmetric keys are cached in memory with their file's identity (device, inode, size, mtime),
//! which is checked with one `stat` on every use: a key replaced or deleted by anyone, another
//! store on the same directory included, is never served stale.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use super::{KeyError, KeyKind, KeyStore, file_name, uri_path};

/// Extension of symmetric key files.
const KEY_EXT: &str = "key";
/// Extension of key-pair files.
const KEY_PAIR_EXT: &str = "keypair.pem";

/// What identifies one version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// A symmetric key as read from its file.
struct Cached {
    path: PathBuf,
    stamp: Stamp,
    bytes: Arc<[u8]>,
}

/// The file-backed [`KeyStore`].
pub struct FileKeyStore {
    dir: PathBuf,
    preloaded: BTreeMap<String, PathBuf>,
    symmetric: RwLock<HashMap<String, Cached>>,
}

impl std::fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("dir", &self.dir)
            .field("preloaded", &self.preloaded)
            .finish_non_exhaustive()
    }
}

fn random_failed() -> KeyError {
    KeyError::Crypto("random source failed".into())
}

impl FileKeyStore {
    /// A store in `{homedir}/keys/` (created, 0700, on the first write or by
    /// [`FileKeyStore::ensure_dir`]); `preloaded` maps key ids to `file:///path` or plain paths.
    pub fn new(homedir: impl AsRef<Path>, preloaded: &BTreeMap<String, String>) -> Self {
        Self {
            dir: homedir.as_ref().join("keys"),
            preloaded: preloaded
                .iter()
                .map(|(id, uri)| (id.clone(), uri_path(uri).to_path_buf()))
                .collect(),
            symmetric: RwLock::new(HashMap::new()),
        }
    }

    /// The key directory, `{homedir}/keys`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the key directory (0700), or tightens an existing one to 0700; the home directory
    /// around it is keyd's alone: created 0700, and anything looser in it narrowed.
    pub fn ensure_dir(&self) -> Result<(), KeyError> {
        if let Some(home) = self.dir.parent() {
            ferrohub_runtime::fsperm::secure_dir(home)?;
        }
        create_private_dir(&self.dir).map_err(|e| with_path(&self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(&self.dir, e).into())
    }

    /// Where key `id` of `kind` lives.
    pub fn path(&self, kind: KeyKind, id: &str) -> PathBuf {
        if let Some(p) = self.preloaded.get(id) {
            return p.clone();
        }
        let ext = match kind {
            KeyKind::Key => KEY_EXT,
            KeyKind::KeyPair => KEY_PAIR_EXT,
        };
        self.dir.join(file_name(id, ext))
    }

    /// The cached bytes of `id` if its file is still the one they were read from.
    fn cached(&self, id: &str) -> Option<Arc<[u8]>> {
        let cache = self
            .symmetric
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let c = cache.get(id)?;
        let now = fs::metadata(&c.path).ok()?;
        (Stamp::of(&now) == c.stamp).then(|| c.bytes.clone())
    }

    fn load_symmetric(&self, id: &str, create: bool) -> Result<Arc<[u8]>, KeyError> {
        let path = self.path(KeyKind::Key, id);
        let (bytes, stamp) = match read_stamped(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                let mut fresh = [0u8; 32];
                aws_lc_rs::rand::fill(&mut fresh).map_err(|_| random_failed())?;
                if write_new(&path, &fresh)? {
                    tracing::info!(key_id = id, "Created symmetric key");
                }
                // Whoever created it first, the file has the key now.
                read_stamped(&path).map_err(|e| with_path(&path, e))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound(id.to_owned()));
            }
            Err(e) => return Err(with_path(&path, e).into()),
        };
        if bytes.is_empty() {
            return Err(KeyError::Crypto(format!(
                "key file {} is empty",
                path.display()
            )));
        }
        let bytes: Arc<[u8]> = bytes.into();
        let entry = Cached {
            path,
            stamp,
            bytes: bytes.clone(),
        };
        self.symmetric
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), entry);
        Ok(bytes)
    }

    /// Like [`KeyStore::symmetric`], without copying the bytes out of the cache.
    pub fn symmetric_shared(&self, id: &str, create: bool) -> Result<Arc<[u8]>, KeyError> {
        match self.cached(id) {
            Some(k) => Ok(k),
            None => self.load_symmetric(id, create),
        }
    }

    fn forget(&self, id: &str) {
        self.symmetric
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

impl KeyStore for FileKeyStore {
    fn symmetric(&self, id: &str, create: bool) -> Result<Vec<u8>, KeyError> {
        self.symmetric_shared(id, create).map(|k| k.to_vec())
    }

    fn import_symmetric(&self, id: &str, bytes: &[u8]) -> Result<(), KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::InvalidParameter {
                name: "keyBytes",
                message: "an empty key".into(),
            });
        }
        write_atomic(&self.path(KeyKind::Key, id), bytes)?;
        self.forget(id);
        tracing::info!(key_id = id, "Imported symmetric key");
        Ok(())
    }

    fn key_pair(&self, id: &str, create_with: Option<&str>) -> Result<pki::PrivateKey, KeyError> {
        let path = self.path(KeyKind::KeyPair, id);
        match read_key_pair(&path) {
            Err(KeyError::NotFound(_)) => {}
            other => return other,
        }
        let Some(preferences) = create_with else {
            return Err(KeyError::NotFound(id.to_owned()));
        };
        let alg = super::choose_algorithm(preferences);
        let key = pki::PrivateKey::generate(alg).map_err(|e| KeyError::Crypto(e.to_string()))?;
        if write_new(&path, key.to_pem().as_bytes())? {
            tracing::info!(key_id = id, algorithm = %alg, "Created key pair");
            Ok(key)
        } else {
            // Created by someone else meanwhile: theirs is the key.
            read_key_pair(&path)
        }
    }

    fn move_key_pair(&self, from: &str, to: &str) -> Result<(), KeyError> {
        if from == to {
            return Ok(());
        }
        let (src, dst) = (
            self.path(KeyKind::KeyPair, from),
            self.path(KeyKind::KeyPair, to),
        );
        match fs::rename(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::NotFound(from.to_owned()));
            }
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let pem = fs::read(&src).map_err(|e| with_path(&src, e))?;
                write_atomic(&dst, &pem)?;
                fs::remove_file(&src).map_err(|e| with_path(&src, e))?;
            }
            Err(e) => return Err(with_path(&src, e).into()),
        }
        if let Some(dir) = dst.parent() {
            // Best effort: the move is done; this makes it durable.
            let _ = ferrohub_runtime::atomic::sync_dir(dir);
        }
        tracing::info!(from, to, "Moved key pair");
        Ok(())
    }

    fn delete(&self, kind: KeyKind, id: &str) -> Result<(), KeyError> {
        let path = self.path(kind, id);
        let result = fs::remove_file(&path);
        if kind == KeyKind::Key {
            self.forget(id);
        }
        match result {
            Ok(()) => {
                tracing::info!(key_id = id, ?kind, "Deleted key");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(with_path(&path, e).into()),
        }
    }
}

/// The file's bytes and the identity of the very file they were read from.
fn read_stamped(path: &Path) -> io::Result<(Vec<u8>, Stamp)> {
    let mut f = fs::File::open(path)?;
    let meta = f.metadata()?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.read_to_end(&mut bytes)?;
    Ok((bytes, Stamp::of(&meta)))
}

fn read_key_pair(path: &Path) -> Result<pki::PrivateKey, KeyError> {
    match fs::read_to_string(path) {
        Ok(pem) => pki::PrivateKey::from_pem(&pem)
            .map_err(|e| KeyError::Crypto(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(KeyError::NotFound(path.display().to_string()))
        }
        Err(e) => Err(with_path(path, e).into()),
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A fresh, synced 0600 temporary file next to `path` holding `bytes`, in a 0700 directory.
fn stage(path: &Path, bytes: &[u8]) -> Result<ferrohub_runtime::atomic::Staged, KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(|e| with_path(dir, e))?;
    ferrohub_runtime::atomic::Staged::new(path, bytes, 0o600).map_err(|e| with_path(path, e).into())
}

/// Writes `bytes` to `path` (mode 0600), replacing it atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    stage(path, bytes)?
        .commit()
        .map_err(|e| with_path(path, e).into())
}

/// Writes `bytes` to `path` (mode 0600) only if `path` does not exist; whether it did.
fn write_new(path: &Path, bytes: &[u8]) -> Result<bool, KeyError> {
    stage(path, bytes)?
        .commit_new()
        .map_err(|e| with_path(path, e).into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn symmetric_keys_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path(), &BTreeMap::new());
        assert!(matches!(
            store.symmetric("k", false),
            Err(KeyError::NotFound(_))
        ));
        let k = store.symmetric("k", true).unwrap();
        assert_eq!(k.len(), 32);
        assert_eq!(store.symmetric("k", true).unwrap(), k);
        let path = store.path(KeyKind::Key, "k");
        assert_eq!(fs::read(&path).unwrap(), k);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(store.dir()).unwrap().mode() & 0o777, 0o700);
        // A fresh store (restart) reads the same bytes.
        let again = FileKeyStore::new(dir.path(), &BTreeMap::new());
        assert_eq!(again.symmetric("k", false).unwrap(), k);
        store.delete(KeyKind::Key, "k").unwrap();
        store.delete(KeyKind::Key, "k").unwrap();
        assert!(store.symmetric("k", false).is_err());
        let leftovers: Vec<_> = fs::read_dir(store.dir()).unwrap().collect();
        assert!(leftovers.is_empty(), "no temporary files remain");
    }

    #[test]
    fn import_overwrites_and_preloaded_paths_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let pre = dir.path().join("device.key");
        fs::write(&pre, b"preloaded-bytes").unwrap();
        let mut preloaded = BTreeMap::new();
        preloaded.insert("device".to_owned(), format!("file://{}", pre.display()));
        let store = FileKeyStore::new(dir.path(), &preloaded);
        assert_eq!(
            store.symmetric("device", false).unwrap(),
            b"preloaded-bytes"
        );
        store.import_symmetric("device", b"new-bytes").unwrap();
        assert_eq!(fs::read(&pre).unwrap(), b"new-bytes");
        assert_eq!(store.symmetric("device", false).unwrap(), b"new-bytes");
    }

    #[test]
    fn two_stores_on_one_directory_never_serve_stale_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            FileKeyStore::new(dir.path(), &BTreeMap::new()),
            FileKeyStore::new(dir.path(), &BTreeMap::new()),
        );
        let k = a.symmetric("k", true).unwrap();
        assert_eq!(b.symmetric("k", true).unwrap(), k, "b finds a's key");
        b.import_symmetric("k", b"replaced").unwrap();
        assert_eq!(a.symmetric("k", false).unwrap(), b"replaced");
        b.delete(KeyKind::Key, "k").unwrap();
        assert!(matches!(
            a.symmetric("k", false),
            Err(KeyError::NotFound(_))
        ));
    }

    #[test]
    fn concurrent_creations_agree() {
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<_> = (0..4)
            .map(|_| Arc::new(FileKeyStore::new(dir.path(), &BTreeMap::new())))
            .collect();
        let threads: Vec<_> = stores
            .iter()
            .map(|s| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let sym = s.symmetric("shared", true).unwrap();
                    let pair = s.key_pair("pair", Some("*")).unwrap();
                    (sym, pair.public_key_raw().to_vec())
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]), "one key each");
        let on_disk = stores[0].key_pair("pair", None).unwrap();
        assert_eq!(on_disk.public_key_raw(), &results[0].1[..]);
        assert_eq!(
            fs::read_dir(stores[0].dir()).unwrap().count(),
            2,
            "no temporary files"
        );
    }

    #[test]
    fn key_pairs_generate_move_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::new(dir.path(), &BTreeMap::new());
        assert!(matches!(
            store.key_pair("a", None),
            Err(KeyError::NotFound(_))
        ));
        let a = store.key_pair("a", Some("*")).unwrap();
        assert_eq!(a.algorithm_name(), "ECDSA P-256");
        let path = store.path(KeyKind::KeyPair, "a");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        store.move_key_pair("a", "b").unwrap();
        assert!(store.key_pair("a", None).is_err());
        let b = store.key_pair("b", None).unwrap();
        assert_eq!(a.public_key_raw(), b.public_key_raw());
        assert!(matches!(
            store.move_key_pair("a", "c"),
            Err(KeyError::NotFound(id)) if id == "a"
        ));
        store.delete(KeyKind::KeyPair, "b").unwrap();
        assert!(store.key_pair("b", None).is_err());
    }
}
