//! keyd: keys that never leave the daemon. Callers get opaque, authenticated handles and use them
//! to sign, derive, encrypt and decrypt.
//!
//! ```text
//!  api.rs      HTTP routes (aziot keyd API 2020-09-01 / 2021-05-01), ACL checks, JSON shapes
//!  service.rs  Keyd: the operations, on a KeyStore, with the handle-validation key in memory
//!  handle.rs   handles: sr=<base64 JSON>&sig=<base64 HMAC-SHA256>, verified in constant time
//!  crypto.rs   HMAC-SHA256, key derivation, AES-256-GCM, ECDSA over a digest, key-pair parameters
//!  acl.rs      [[principal]] key-id globs per uid
//!  key_files.rs FileKeyStore: {homedir}/keys/, 0600 files written atomically, preloaded keys
//! ```

use std::path::Path;

mod acl;
mod api;
mod crypto;
mod handle;
mod key_files;
mod service;

pub use acl::{Acl, glob_match};
pub use api::{API_VERSIONS, router, serve, serve_on, serve_with};
pub use crypto::{Parameter, ParameterValue, choose_algorithm};
pub use handle::{HANDLE_VALIDATION_KEY, HandleKey, KeyRef};
pub use key_files::FileKeyStore;
pub use service::{Keyd, SignMechanism};

/// Symmetric key or key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Key,
    KeyPair,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("invalid parameter {name}: {message}")]
    InvalidParameter { name: &'static str, message: String },
    #[error("key store: {0}")]
    Io(#[from] std::io::Error),
    #[error("crypto: {0}")]
    Crypto(String),
}

/// Where keys live. keyd and certd (which signs with issuer key pairs) share one store; a PKCS#11
/// backend can come later behind the same trait.
pub trait KeyStore: Send + Sync {
    /// The bytes of symmetric key `id`; with `create`, 32 random bytes are made when it is missing.
    fn symmetric(&self, id: &str, create: bool) -> Result<Vec<u8>, KeyError>;
    /// Stores `bytes` as symmetric key `id` (overwrites).
    fn import_symmetric(&self, id: &str, bytes: &[u8]) -> Result<(), KeyError>;
    /// Key pair `id`; with `create_with = Some("ec-p256:rsa-2048:*")` it is generated when missing
    /// (the first algorithm of the list that is supported).
    fn key_pair(&self, id: &str, create_with: Option<&str>) -> Result<pki::PrivateKey, KeyError>;
    /// Renames key pair `from` to `to` (replacing `to`).
    fn move_key_pair(&self, from: &str, to: &str) -> Result<(), KeyError>;
    /// Deletes a key or key pair; deleting a missing one is not an error.
    fn delete(&self, kind: KeyKind, id: &str) -> Result<(), KeyError>;
}

/// A file name for an id that cannot escape its directory and stays readable:
/// the id's ASCII letters and digits, `-`, and the SHA-256 of the whole id in hex.
pub fn file_name(id: &str, extension: &str) -> String {
    let alnum: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    format!("{alnum}-{}.{extension}", hex::encode(digest.as_ref()))
}

/// `file:///path` or a plain path → the path.
pub fn uri_path(uri: &str) -> &Path {
    Path::new(uri.strip_prefix("file://").unwrap_or(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        let a = file_name("../../etc/passwd", "key");
        assert!(!a.contains('/') && a.starts_with("etcpasswd-") && a.ends_with(".key"));
        assert_ne!(file_name("a-b", "key"), file_name("ab", "key"));
        assert_eq!(uri_path("file:///var/x"), Path::new("/var/x"));
    }
}
