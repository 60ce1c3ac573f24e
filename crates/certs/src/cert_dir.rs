//! The certificate directory: file names, loading with file-named errors, and all-or-nothing
//! writes (keys 0600, nothing overwritten without `--force`, no partial output on failure).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use pki::{Certificate, PrivateKey};

/// One file to write.
pub struct Output {
    pub path: PathBuf,
    pub contents: String,
    /// Private keys are written 0600, certificates 0644.
    pub secret: bool,
}

impl Output {
    pub fn cert(path: PathBuf, contents: String) -> Self {
        Self {
            path,
            contents,
            secret: false,
        }
    }

    pub fn key(path: PathBuf, key: &PrivateKey) -> Self {
        Self {
            path,
            contents: key.to_pem(),
            secret: true,
        }
    }
}

/// Refuses to go on when any output exists and `force` is off. Call before generating anything.
pub fn check_free(paths: &[PathBuf], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        bail!(
            "{} already exists; pass --force to overwrite it, or choose another --dir",
            existing.display()
        );
    }
    Ok(())
}

/// Writes every output or none: each goes to a temporary file in the target directory first
/// (synced), and only when all are written are they renamed into place (`ferrohub_runtime::atomic`).
pub fn write_all(outputs: &[Output]) -> Result<()> {
    for out in outputs {
        let dir = out.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let files: Vec<(&Path, &[u8], u32)> = outputs
        .iter()
        .map(|o| {
            let mode = if o.secret { 0o600 } else { 0o644 };
            (o.path.as_path(), o.contents.as_bytes(), mode)
        })
        .collect();
    Ok(ferrohub_runtime::atomic::write_all(&files)?)
}

/// Reads a file as UTF-8 text, naming the file in every error.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not a PEM text file", path.display()))
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<Certificate>> {
    let text = read_text(path)?;
    Certificate::chain_from_pem(&text).with_context(|| format!("{}", path.display()))
}

/// The first certificate in a PEM file.
pub fn load_cert(path: &Path) -> Result<Certificate> {
    Ok(load_certs(path)?.swap_remove(0))
}

/// A private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKey> {
    let text = read_text(path)?;
    PrivateKey::from_pem(&text).with_context(|| format!("{}", path.display()))
}

/// A CA that will sign: certificate, key, and the chain to append to full-chain files.
pub struct LoadedIssuer {
    pub cert: Certificate,
    pub key: PrivateKey,
    /// The issuer followed by its own issuers (from `NAME-full-chain.cert.pem` when present).
    pub chain: Vec<Certificate>,
    pub cert_path: PathBuf,
}

impl LoadedIssuer {
    pub fn signer(&self) -> pki::Signer<'_> {
        pki::Signer {
            cert: &self.cert,
            key: &self.key,
        }
    }

    /// Loads an issuer given as a name in `dir` (`root-ca` → `root-ca.cert.pem` + `.key.pem`) or as
    /// a path to a `.cert.pem` file (its key beside it as `.key.pem`, or `key` when given).
    pub fn load(dir: &Path, issuer: &str, key: Option<&Path>) -> Result<Self> {
        let (cert_path, default_key, chain_path) =
            if issuer.contains('/') || issuer.ends_with(".pem") {
                let cert = PathBuf::from(issuer);
                let stem = issuer
                    .strip_suffix(".cert.pem")
                    .unwrap_or(issuer.trim_end_matches(".pem"));
                (
                    cert,
                    PathBuf::from(format!("{stem}.key.pem")),
                    PathBuf::from(format!("{stem}-full-chain.cert.pem")),
                )
            } else {
                (
                    dir.join(format!("{issuer}.cert.pem")),
                    dir.join(format!("{issuer}.key.pem")),
                    dir.join(format!("{issuer}-full-chain.cert.pem")),
                )
            };
        let key_path = key.map_or(default_key, Path::to_path_buf);
        if !cert_path.exists() {
            bail!(
                "issuer certificate {} does not exist; create it first (e.g. `ferrohub certs root-ca --dir {}`) or pass --issuer",
                cert_path.display(),
                dir.display()
            );
        }
        let cert = load_cert(&cert_path)?;
        let key = load_key(&key_path)?;
        key.matches(&cert).with_context(|| {
            format!(
                "issuer key {} does not belong to certificate {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
        let chain = if chain_path.exists() {
            load_certs(&chain_path)?
        } else {
            vec![cert.clone()]
        };
        Ok(Self {
            cert,
            key,
            chain,
            cert_path,
        })
    }
}

/// The default issuer for leaf and edge CA certificates: the intermediate when it exists.
pub fn default_issuer(dir: &Path) -> &'static str {
    if dir.join("intermediate-ca.cert.pem").exists() {
        "intermediate-ca"
    } else {
        "root-ca"
    }
}

/// PEM of a certificate followed by a chain.
pub fn full_chain(leaf: &Certificate, chain: &[Certificate]) -> String {
    std::iter::once(leaf)
        .chain(chain)
        .map(Certificate::to_pem)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_refuses_to_clobber_and_sets_modes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.cert.pem");
        let k = dir.path().join("a.key.pem");
        let key = PrivateKey::generate(pki::KeyAlgorithm::P256).unwrap();
        write_all(&[
            Output::cert(a.clone(), "x".into()),
            Output::key(k.clone(), &key),
        ])
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&k).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(check_free(std::slice::from_ref(&a), false).is_err());
        check_free(&[a], true).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ok.pem");
        let bad = dir.path().join("missing-parent-is-a-file/x.pem");
        fs::write(dir.path().join("missing-parent-is-a-file"), "file").unwrap();
        let err = write_all(&[
            Output::cert(good.clone(), "x".into()),
            Output::cert(bad, "y".into()),
        ]);
        assert!(err.is_err());
        assert!(!good.exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the blocking file remains");
    }
}
