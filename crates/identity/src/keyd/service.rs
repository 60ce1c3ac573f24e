//! [`Keyd`]: the key operations, on any [`KeyStore`], independent of HTTP.
//!
//! Operations that name a key id are for callers the [`Acl`] allows (checked by the API layer);
//! operations on a handle trust the handle, which only keyd can issue, once the API layer has
//! checked that the caller may use it (the key id's principal, or a derived handle's uid).

use std::sync::Arc;

use super::acl::Acl;
use super::crypto::{self, LoadedKeyPair, Parameter, ParameterValue};
use super::handle::{HANDLE_VALIDATION_KEY, HandleKey, KeyRef};
use super::key_files::FileKeyStore;
use super::{KeyError, KeyKind, KeyStore};
use crate::config::KeydConfig;
use crate::config::daemons::KeydPrincipal;

/// How to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMechanism<'a> {
    /// ECDSA over a digest the caller computed (key pairs); a DER signature.
    Ecdsa { digest: &'a [u8] },
    /// HMAC-SHA256 of a message (symmetric and derived keys).
    HmacSha256 { message: &'a [u8] },
}

/// The key service.
pub struct Keyd {
    store: Arc<dyn KeyStore>,
    acl: Acl,
    handles: HandleKey,
}

impl std::fmt::Debug for Keyd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyd")
            .field("acl", &self.acl)
            .finish_non_exhaustive()
    }
}

fn invalid(name: &'static str, message: impl Into<String>) -> KeyError {
    KeyError::InvalidParameter {
        name,
        message: message.into(),
    }
}

/// Refuses ids no caller may name: empty, or keyd's own handle-validation key.
fn check_id(id: &str) -> Result<(), KeyError> {
    if id.is_empty() {
        Err(invalid("keyId", "empty"))
    } else if id == HANDLE_VALIDATION_KEY {
        Err(invalid("keyId", "reserved for keyd"))
    } else {
        Ok(())
    }
}

fn mechanism() -> KeyError {
    invalid("mechanism", "not supported by this key")
}

impl Keyd {
    /// keyd with a [`FileKeyStore`] in `config.homedir`.
    pub fn open(config: &KeydConfig) -> Result<Arc<Keyd>, KeyError> {
        let store = FileKeyStore::new(&config.homedir, &config.preloaded_keys);
        store.ensure_dir()?;
        Self::new(Arc::new(store), &config.principals)
    }

    /// keyd on `store`; creates the handle-validation key on first use and keeps it in memory.
    pub fn new(
        store: Arc<dyn KeyStore>,
        principals: &[KeydPrincipal],
    ) -> Result<Arc<Keyd>, KeyError> {
        let key = store.symmetric(HANDLE_VALIDATION_KEY, true)?;
        Ok(Arc::new(Self {
            handles: HandleKey::new(&key),
            store,
            acl: Acl::new(principals),
        }))
    }

    pub fn store(&self) -> Arc<dyn KeyStore> {
        self.store.clone()
    }

    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    /// What `handle` refers to, if keyd issued it.
    pub fn resolve(&self, handle: &str) -> Result<KeyRef, KeyError> {
        self.handles.verify(handle)
    }

    /// What `handle` refers to and the uid it was issued to (derived keys' handles), if keyd
    /// issued it.
    pub fn resolve_bound(&self, handle: &str) -> Result<(KeyRef, Option<u32>), KeyError> {
        self.handles.verify_bound(handle)
    }

    /// Creates symmetric key `id` (32 random bytes) unless it exists; its handle.
    pub fn create_key(&self, id: &str) -> Result<String, KeyError> {
        check_id(id)?;
        self.store.symmetric(id, true)?;
        self.handles.issue(&KeyRef::Key(id.to_owned()))
    }

    /// Stores `bytes` as symmetric key `id`, replacing it; its handle.
    pub fn import_key(&self, id: &str, bytes: &[u8]) -> Result<String, KeyError> {
        check_id(id)?;
        self.store.import_symmetric(id, bytes)?;
        self.handles.issue(&KeyRef::Key(id.to_owned()))
    }

    /// The handle of existing symmetric key `id`.
    pub fn key_handle(&self, id: &str) -> Result<String, KeyError> {
        check_id(id)?;
        self.store.symmetric(id, false)?;
        self.handles.issue(&KeyRef::Key(id.to_owned()))
    }

    /// Key pair `id`, generated from `preferences` (`ec-p256:rsa-2048:*`) when missing; its handle.
    pub fn create_key_pair(&self, id: &str, preferences: Option<&str>) -> Result<String, KeyError> {
        check_id(id)?;
        self.store.key_pair(id, Some(preferences.unwrap_or("*")))?;
        self.handles.issue(&KeyRef::KeyPair(id.to_owned()))
    }

    /// The handle of existing key pair `id`.
    pub fn key_pair_handle(&self, id: &str) -> Result<String, KeyError> {
        check_id(id)?;
        self.store.key_pair(id, None)?;
        self.handles.issue(&KeyRef::KeyPair(id.to_owned()))
    }

    /// Renames key pair `from` to `to`.
    pub fn move_key_pair(&self, from: &str, to: &str) -> Result<(), KeyError> {
        check_id(from)?;
        check_id(to)?;
        if from == to {
            return Err(invalid("from", "the key pair cannot be moved onto itself"));
        }
        self.store.move_key_pair(from, to)
    }

    /// Deletes the symmetric key behind `handle`.
    pub fn delete_key(&self, handle: &str) -> Result<(), KeyError> {
        match self.resolve(handle)? {
            KeyRef::Key(id) => self.store.delete(KeyKind::Key, &id),
            _ => Err(invalid("handle", "not a symmetric key")),
        }
    }

    /// Deletes the key pair behind `handle`.
    pub fn delete_key_pair(&self, handle: &str) -> Result<(), KeyError> {
        match self.resolve(handle)? {
            KeyRef::KeyPair(id) => self.store.delete(KeyKind::KeyPair, &id),
            _ => Err(invalid("handle", "not a key pair")),
        }
    }

    /// A public parameter of the key pair behind `handle`.
    pub fn parameter(&self, handle: &str, p: Parameter) -> Result<ParameterValue, KeyError> {
        let KeyRef::KeyPair(id) = self.resolve(handle)? else {
            return Err(invalid("handle", "not a key pair"));
        };
        LoadedKeyPair::load(&self.store.key_pair(&id, None)?)?.parameter(p)
    }

    /// A handle for `HMAC-SHA256(base key, data)` for root; the base must be a symmetric key.
    pub fn derive(&self, base_handle: &str, data: &[u8]) -> Result<String, KeyError> {
        self.derive_for(base_handle, data, 0)
    }

    /// A handle for `HMAC-SHA256(base key, data)` that only `uid` (and root) may use.
    pub fn derive_for(&self, base_handle: &str, data: &[u8], uid: u32) -> Result<String, KeyError> {
        match self.resolve(base_handle)? {
            KeyRef::Key(id) => {
                // The base must exist now, not only when the derived key is used.
                self.store.symmetric(&id, false)?;
            }
            KeyRef::Derived(..) => {
                return Err(invalid(
                    "baseKeyHandle",
                    "nested derived keys are not supported",
                ));
            }
            KeyRef::KeyPair(_) => {
                return Err(invalid("baseKeyHandle", "not a symmetric key"));
            }
        }
        self.handles.issue_to(
            &KeyRef::Derived(base_handle.to_owned(), data.to_vec()),
            Some(uid),
        )
    }

    /// The bytes of the derived key behind `handle`.
    pub fn export_derived(&self, handle: &str) -> Result<Vec<u8>, KeyError> {
        let r = self.resolve(handle)?;
        if !matches!(r, KeyRef::Derived(..)) {
            return Err(invalid("handle", "not a derived key"));
        }
        self.symmetric_bytes(&r)
    }

    /// The bytes of a symmetric or derived key.
    fn symmetric_bytes(&self, r: &KeyRef) -> Result<Vec<u8>, KeyError> {
        match r {
            KeyRef::Key(id) => self.store.symmetric(id, false),
            KeyRef::Derived(base, data) => match self.resolve(base)? {
                KeyRef::Key(id) => Ok(crypto::derive(&self.store.symmetric(&id, false)?, data)),
                _ => Err(invalid("handle", "invalid derived key")),
            },
            KeyRef::KeyPair(_) => Err(mechanism()),
        }
    }

    /// Signs with the key behind `handle`.
    pub fn sign(&self, handle: &str, mechanism: SignMechanism<'_>) -> Result<Vec<u8>, KeyError> {
        let r = self.resolve(handle)?;
        match (mechanism, &r) {
            (SignMechanism::Ecdsa { digest }, KeyRef::KeyPair(id)) => {
                LoadedKeyPair::load(&self.store.key_pair(id, None)?)?.sign_digest(digest)
            }
            (SignMechanism::HmacSha256 { message }, KeyRef::Key(_) | KeyRef::Derived(..)) => {
                let key = self.symmetric_bytes(&r)?;
                Ok(crypto::hmac_sha256(&key, message).as_ref().to_vec())
            }
            _ => Err(self::mechanism()),
        }
    }

    /// AES-256-GCM with the symmetric or derived key behind `handle`.
    pub fn encrypt(
        &self,
        handle: &str,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let key = self.symmetric_bytes(&self.resolve(handle)?)?;
        crypto::aead_encrypt(&key, iv, aad, plaintext)
    }

    /// Opens what [`Keyd::encrypt`] sealed.
    pub fn decrypt(
        &self,
        handle: &str,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, KeyError> {
        let key = self.symmetric_bytes(&self.resolve(handle)?)?;
        crypto::aead_decrypt(&key, iv, aad, ciphertext)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use super::*;

    fn keyd(dir: &std::path::Path) -> Arc<Keyd> {
        Keyd::new(Arc::new(FileKeyStore::new(dir, &BTreeMap::new())), &[]).unwrap()
    }

    #[test]
    fn handles_survive_a_restart_and_a_new_home_rejects_them() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let h = keyd(a.path()).create_key("k").unwrap();
        let again = keyd(a.path());
        assert_eq!(again.resolve(&h).unwrap(), KeyRef::Key("k".into()));
        assert!(keyd(b.path()).resolve(&h).is_err());
    }

    #[test]
    fn the_handle_validation_key_cannot_be_named() {
        let dir = tempfile::tempdir().unwrap();
        let k = keyd(dir.path());
        for r in [
            k.key_handle(HANDLE_VALIDATION_KEY),
            k.create_key(HANDLE_VALIDATION_KEY),
            k.import_key(HANDLE_VALIDATION_KEY, b"x"),
            k.create_key_pair(HANDLE_VALIDATION_KEY, None),
        ] {
            assert!(matches!(
                r,
                Err(KeyError::InvalidParameter { name: "keyId", .. })
            ));
        }
    }

    #[test]
    fn derived_keys_and_mechanisms() {
        let dir = tempfile::tempdir().unwrap();
        let k = keyd(dir.path());
        let base = k.import_key("base", &[5u8; 32]).unwrap();
        let derived = k.derive(&base, b"data").unwrap();
        let expected = crypto::derive(&[5u8; 32], b"data");
        assert_eq!(k.export_derived(&derived).unwrap(), expected);
        assert!(k.export_derived(&base).is_err());
        assert!(matches!(
            k.derive(&derived, b"x"),
            Err(KeyError::InvalidParameter { message, .. }) if message.contains("nested")
        ));
        let sig = k
            .sign(&derived, SignMechanism::HmacSha256 { message: b"m" })
            .unwrap();
        assert_eq!(sig, crypto::hmac_sha256(&expected, b"m").as_ref());
        assert!(matches!(
            k.sign(&base, SignMechanism::Ecdsa { digest: &[1; 32] }),
            Err(KeyError::InvalidParameter {
                name: "mechanism",
                ..
            })
        ));
        let pair = k.create_key_pair("pair", None).unwrap();
        assert!(
            k.sign(&pair, SignMechanism::HmacSha256 { message: b"m" })
                .is_err()
        );
        assert!(k.derive(&pair, b"x").is_err());
        assert!(k.encrypt(&pair, &[0; 12], b"", b"x").is_err());
        k.delete_key(&base).unwrap();
        assert!(matches!(
            k.sign(&derived, SignMechanism::HmacSha256 { message: b"m" }),
            Err(KeyError::NotFound(_))
        ));
    }
}
