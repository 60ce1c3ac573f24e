//! certd: certificates by id, issued from CSRs, imported, preloaded from files, and trust bundles.
//!
//! The HTTP API is aziot certd's, api-version `2020-09-01`, on a Unix socket:
//!
//! | Method and path              | Request                                   | Answer                 | ACL |
//! |------------------------------|-------------------------------------------|------------------------|-----|
//! | `POST /certificates`         | `{"certId", "csr", "issuer"?: {"certId", "privateKeyHandle"}}` | 201 `{"pem"}` | yes |
//! | `PUT /certificates/{id}`     | `{"pem"}`                                 | 201 `{"pem"}`          | yes |
//! | `GET /certificates/{id}`     | –                                         | 200 `{"pem"}`          | no  |
//! | `DELETE /certificates/{id}`  | –                                         | 204 (missing is fine)  | yes |
//!
//! ```text
//!  POST /certificates ─► CSR (self-signature checked) ─┬─ issuer given ─► issuer cert (certd) + key pair "issuer.certId" (key store)
//!                                                      └─ [cert_issuance.<id>] ─┬─ self_signed ─► key pair "<id>"
//!                                                                               └─ local_ca ────► [cert_issuance.local_ca] cert + pk
//!        ─► leaf (+ issuer chain) ─► {homedir}/certs/<file_name(id)>.cer, or the preloaded path of <id>
//! ```
//!
//! * **Issuer keys.** `ferrohub identity run` hosts keyd and certd in one process sharing one
//!   [`KeyStore`], so the issuer key is the key pair whose id is the issuer's cert id.
//!   `privateKeyHandle` is accepted in any form and **not parsed**: the issuer cert id decides.
//!   Because the handle is not the proof that it is in aziot, a caller other than root must also
//!   be authorized (by `[[principal]] certs`) for the issuer's cert id.
//! * **Validity** starts now and lasts `[cert_issuance.<id>] expiry_days` (default 30), never past
//!   the issuer's end. `common_name` there replaces the CSR's CN.
//! * **Preloaded certs** (`[preloaded_certs]`): `id = "file:///path"` is read from (and written
//!   to) that file; `id = ["a", "b"]` is a trust bundle, the concatenation of those certs on read,
//!   and cannot be written.
//! * **ACL**: uid 0 may do everything; create, import and delete need a `[[principal]]` of the
//!   caller's uid with a pattern (`*`, `?`) matching the id, else 401. Reading is open.

mod acl;
mod api;
mod cert_files;
mod issue;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use ferrohub_runtime::time::{SharedClock, SystemClock};
use tracing::{info, warn};

use crate::config::CertdConfig;
use crate::config::daemons::{CertIssuance, PreloadedCert};
use crate::keyd::{KeyError, KeyStore};

pub use acl::Operation;
pub use api::router;

/// The only api-version certd speaks.
pub const API_VERSION: &str = "2020-09-01";

/// Expiry of issued certificates when `[cert_issuance.<id>] expiry_days` does not say.
pub const DEFAULT_EXPIRY_DAYS: u32 = 30;

/// What went wrong in certd. Over HTTP: `InvalidParameter` and `NotFound` are 400,
/// `Unauthorized` 401, the rest 500.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A request parameter is wrong; `name` is the JSON field (`csr`, `issuer`, `pem`, `id`).
    #[error("parameter {name:?} has an invalid value\ncaused by: {message}")]
    InvalidParameter { name: &'static str, message: String },
    /// No certificate with this id.
    #[error("parameter \"id\" has an invalid value\ncaused by: certificate {0:?} not found")]
    NotFound(String),
    /// The caller's uid may not do `op` on the cert.
    #[error("user {uid} is not authorized to {op} the cert {id}")]
    Unauthorized { uid: u32, op: Operation, id: String },
    /// The configuration cannot work (found when opening).
    #[error("certd configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key store: {0}")]
    Key(#[from] KeyError),
    /// Signing failed for a reason that is not the request's fault.
    #[error("certificate generation failed: {0}")]
    Internal(String),
}

impl CertError {
    fn invalid(name: &'static str, message: impl std::fmt::Display) -> Self {
        Self::InvalidParameter {
            name,
            message: message.to_string(),
        }
    }
}

/// The certificate service: storage, issuance and authorization. Cheap to share (`Arc`).
pub struct Certd {
    store: cert_files::Store,
    issuance: CertIssuance,
    acl: acl::Acl,
    keys: Arc<dyn KeyStore>,
    clock: SharedClock,
}

impl std::fmt::Debug for Certd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certd")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Certd {
    /// Opens certd on the system clock. Fails on a configuration that cannot work (a trust
    /// bundle that contains itself, a preloaded URI that is not a file).
    pub fn open(config: &CertdConfig, keys: Arc<dyn KeyStore>) -> Result<Arc<Certd>, CertError> {
        Self::open_with_clock(config, keys, Arc::new(SystemClock))
    }

    /// Like [`Certd::open`] with an injected clock (tests, expiry).
    pub fn open_with_clock(
        config: &CertdConfig,
        keys: Arc<dyn KeyStore>,
        clock: SharedClock,
    ) -> Result<Arc<Certd>, CertError> {
        check_preloaded(config)?;
        check_issuance(&config.cert_issuance);
        // certd's home is its own: 0700, certificate files 0600, looser ones narrowed.
        ferrohub_runtime::fsperm::secure_dir(&config.homedir).map_err(|source| CertError::Io {
            path: config.homedir.clone(),
            source,
        })?;
        Ok(Arc::new(Certd {
            store: cert_files::Store::new(&config.homedir, config.preloaded_certs.clone()),
            issuance: config.cert_issuance.clone(),
            acl: acl::Acl::new(&config.principals),
            keys,
            clock,
        }))
    }

    /// The PEM of cert `id`: a stored or preloaded file, or a trust bundle's concatenation.
    pub fn get_pem(&self, id: &str) -> Result<String, CertError> {
        self.store
            .read(id)?
            .ok_or_else(|| CertError::NotFound(id.to_owned()))
    }

    /// Stores `pem` (one or more certificates) as cert `id`, replacing it; returns what was
    /// stored. No authorization: see [`Certd::authorize`].
    pub fn import_pem(&self, id: &str, pem: &str) -> Result<String, CertError> {
        let certs =
            pki::Certificate::chain_from_pem(pem).map_err(|e| CertError::invalid("pem", e))?;
        let normalized: String = certs.iter().map(pki::Certificate::to_pem).collect();
        self.store.write(id, &normalized)?;
        info!(cert_id = id, "Imported certificate");
        Ok(normalized)
    }

    /// Issues cert `id` from `csr_pem` (see the module docs), stores it and returns the leaf
    /// followed by the issuer's chain. No authorization: see [`Certd::authorize`].
    pub fn create_cert(
        &self,
        id: &str,
        csr_pem: &str,
        issuer_cert_id: Option<&str>,
    ) -> Result<String, CertError> {
        let pem = issue::create(self, id, csr_pem, issuer_cert_id)?;
        self.store.write(id, &pem)?;
        info!(cert_id = id, issuer = issuer_cert_id, "Issued certificate");
        Ok(pem)
    }

    /// Deletes cert `id` (its file, also a preloaded one); a missing cert is not an error.
    pub fn delete(&self, id: &str) -> Result<(), CertError> {
        self.store.delete(id)?;
        info!(cert_id = id, "Deleted certificate");
        Ok(())
    }

    /// Whether `uid` may do `op` on cert `id`: uid 0 always, others by `[[principal]] certs`.
    /// A refusal is logged and is [`CertError::Unauthorized`].
    pub fn authorize(&self, uid: u32, op: Operation, id: &str) -> Result<(), CertError> {
        if self.acl.allows(uid, id) {
            return Ok(());
        }
        warn!(uid, operation = %op, cert_id = id, "Refused: not authorized");
        Err(CertError::Unauthorized {
            uid,
            op,
            id: id.to_owned(),
        })
    }
}

/// Serves certd on `config.socket` until `shutdown` turns true.
pub async fn serve(
    config: CertdConfig,
    keys: Arc<dyn KeyStore>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_on(config, keys, Vec::new(), shutdown).await
}

/// [`serve`], also listening on the sockets in `also` (e.g. `/run/aziot/certd.sock`).
pub async fn serve_on(
    config: CertdConfig,
    keys: Arc<dyn KeyStore>,
    also: Vec<PathBuf>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let certd = Certd::open(&config, keys).map_err(std::io::Error::other)?;
    let listeners = crate::uds::bind_all(&config.socket, &also)?;
    info!(socket = %config.socket.display(), also = ?also, "certd listening");
    crate::uds::serve_many(
        listeners,
        router(certd),
        config.max_requests,
        "certd",
        shutdown,
    )
    .await;
    Ok(())
}

/// Refuses preloaded URIs that are not files and trust bundles that contain themselves.
fn check_preloaded(config: &CertdConfig) -> Result<(), CertError> {
    for (id, cert) in &config.preloaded_certs {
        match cert {
            PreloadedCert::Uri(uri) if uri.contains("://") && !uri.starts_with("file://") => {
                return Err(CertError::Config(format!(
                    "preloaded cert {id:?}: {uri:?} is not a file:// URI"
                )));
            }
            PreloadedCert::Uri(_) => {}
            PreloadedCert::Ids(_) => {
                let mut path = vec![id.as_str()];
                bundle_cycle(config, &mut path, &mut BTreeSet::new())?;
            }
        }
    }
    Ok(())
}

/// Depth-first over a bundle's members; `path` is the chain of bundles being expanded.
fn bundle_cycle<'a>(
    config: &'a CertdConfig,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Result<(), CertError> {
    let Some(&id) = path.last() else {
        return Ok(());
    };
    let Some(PreloadedCert::Ids(members)) = config.preloaded_certs.get(id) else {
        return Ok(());
    };
    for member in members {
        if path.contains(&member.as_str()) {
            return Err(CertError::Config(format!(
                "trust bundle {:?} contains itself ({} -> {member})",
                path[0],
                path.join(" -> ")
            )));
        }
        if done.insert(member.as_str()) {
            path.push(member);
            bundle_cycle(config, path, done)?;
            path.pop();
        }
    }
    Ok(())
}

/// Issuance settings that will fail when used are logged at start (they are 400s then).
fn check_issuance(issuance: &CertIssuance) {
    for (id, opts) in &issuance.certs {
        match opts.method.as_str() {
            "self_signed" => {}
            "local_ca" if issuance.local_ca.is_none() => warn!(
                cert_id = %id,
                "cert_issuance uses local_ca but [cert_issuance.local_ca] is not configured"
            ),
            "local_ca" => {}
            "est" => warn!(cert_id = %id, "cert_issuance method est is not supported"),
            other => warn!(cert_id = %id, method = other, "Unknown cert_issuance method"),
        }
        if opts.expiry_days == Some(0) {
            warn!(cert_id = %id, "cert_issuance expiry_days = 0: issuance will fail");
        }
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! An in-memory key store for the unit tests.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use crate::keyd::{KeyError, KeyKind, KeyStore};

    #[derive(Default)]
    pub struct MemKeys {
        pairs: Mutex<HashMap<String, String>>,
        symmetric: Mutex<HashMap<String, Vec<u8>>>,
    }

    impl MemKeys {
        pub fn insert(&self, id: &str, key: &pki::PrivateKey) {
            self.pairs
                .lock()
                .unwrap()
                .insert(id.to_owned(), key.to_pem());
        }
    }

    impl KeyStore for MemKeys {
        fn symmetric(&self, id: &str, create: bool) -> Result<Vec<u8>, KeyError> {
            let mut map = self.symmetric.lock().unwrap();
            match map.get(id) {
                Some(k) => Ok(k.clone()),
                None if create => Ok(map.entry(id.to_owned()).or_insert(vec![7; 32]).clone()),
                None => Err(KeyError::NotFound(id.to_owned())),
            }
        }
        fn import_symmetric(&self, id: &str, bytes: &[u8]) -> Result<(), KeyError> {
            self.symmetric
                .lock()
                .unwrap()
                .insert(id.to_owned(), bytes.to_vec());
            Ok(())
        }
        fn key_pair(&self, id: &str, create: Option<&str>) -> Result<pki::PrivateKey, KeyError> {
            let mut map = self.pairs.lock().unwrap();
            if !map.contains_key(id) && create.is_some() {
                let key = pki::PrivateKey::generate(pki::KeyAlgorithm::P256).unwrap();
                map.insert(id.to_owned(), key.to_pem());
            }
            let pem = map
                .get(id)
                .ok_or_else(|| KeyError::NotFound(id.to_owned()))?;
            pki::PrivateKey::from_pem(pem).map_err(|e| KeyError::Crypto(e.to_string()))
        }
        fn move_key_pair(&self, from: &str, to: &str) -> Result<(), KeyError> {
            let mut map = self.pairs.lock().unwrap();
            let pem = map
                .remove(from)
                .ok_or_else(|| KeyError::NotFound(from.to_owned()))?;
            map.insert(to.to_owned(), pem);
            Ok(())
        }
        fn delete(&self, kind: KeyKind, id: &str) -> Result<(), KeyError> {
            match kind {
                KeyKind::Key => self.symmetric.lock().unwrap().remove(id).map(drop),
                KeyKind::KeyPair => self.pairs.lock().unwrap().remove(id).map(drop),
            };
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    pub(super) fn config(home: &std::path::Path) -> CertdConfig {
        CertdConfig {
            homedir: home.to_path_buf(),
            socket: home.join("certd.sock"),
            max_requests: 10,
            keyd_homedir: home.join("keyd"),
            cert_issuance: CertIssuance::default(),
            preloaded_certs: BTreeMap::new(),
            principals: Vec::new(),
        }
    }

    #[test]
    fn bundles_that_contain_themselves_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        let ids = |v: &[&str]| PreloadedCert::Ids(v.iter().map(|s| (*s).to_owned()).collect());
        cfg.preloaded_certs.insert("a".into(), ids(&["b", "x"]));
        cfg.preloaded_certs.insert("b".into(), ids(&["c"]));
        cfg.preloaded_certs.insert("c".into(), ids(&["x", "y"]));
        let keys = Arc::new(test_keys::MemKeys::default());
        assert!(Certd::open(&cfg, keys.clone()).is_ok(), "a DAG is fine");
        cfg.preloaded_certs.insert("c".into(), ids(&["a"]));
        let err = Certd::open(&cfg, keys.clone()).unwrap_err().to_string();
        assert!(err.contains("contains itself"), "{err}");
        cfg.preloaded_certs.clear();
        cfg.preloaded_certs
            .insert("u".into(), PreloadedCert::Uri("https://x/ca.pem".into()));
        assert!(matches!(Certd::open(&cfg, keys), Err(CertError::Config(_))));
    }

    #[test]
    fn get_of_a_missing_cert_names_the_id_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let certd =
            Certd::open(&config(dir.path()), Arc::new(test_keys::MemKeys::default())).unwrap();
        let err = certd.get_pem("nope").unwrap_err();
        assert!(matches!(err, CertError::NotFound(_)));
        assert!(err.to_string().starts_with("parameter \"id\""));
        assert!(matches!(
            certd.import_pem("x", "not pem"),
            Err(CertError::InvalidParameter { name: "pem", .. })
        ));
        certd.delete("nope").unwrap();
    }
}
