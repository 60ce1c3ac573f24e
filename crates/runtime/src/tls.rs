//! TLS for the device and service endpoints.
//!
//! Client certificates are requested but optional, and any chain is accepted at the handshake:
//! the identity decision (thumbprint, CA chain, SAS) is made afterwards, in one place, where the
//! refusal can name its reason. The handshake signature is still verified, so a client proves it
//! holds the private key of the certificate it presents.

use std::path::Path;
use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A TLS setup problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Accepts any client certificate chain at the handshake (checked later), but verifies the
/// handshake signature with the presented key.
#[derive(Debug)]
struct DeferredClientAuth {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM chain and key.
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let file_err = |p: &Path, m: String| TlsError::File {
        path: p.display().to_string(),
        message: m,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    Ok((chain, key_der))
}

/// The server config for device endpoints (MQTT): TLS 1.2 and 1.3, optional client certificates.
pub fn device_server_config(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (chain, key_der) = load_identity(cert, key)?;
    let config = device_builder()?.with_single_cert(chain, key_der)?;
    Ok(with_alpn(config, alpn))
}

/// TLS 1.2 and 1.3 with client certificates requested and checked after the handshake: what
/// both device server configs start from.
fn device_builder()
-> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(DeferredClientAuth {
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .with_client_cert_verifier(verifier))
}

fn with_alpn(mut config: rustls::ServerConfig, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config trusting exactly the given PEM roots (the CLI, tests, benchmarks).
pub fn client_config(roots_pem: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let file_err = |m: String| TlsError::File {
        path: roots_pem.display().to_string(),
        message: m,
    };
    for c in CertificateDer::pem_file_iter(roots_pem).map_err(|e| file_err(e.to_string()))? {
        roots.add(c.map_err(|e| file_err(e.to_string()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server certificate that can be replaced while the server runs (certificate renewal): new
/// handshakes get the new chain, established connections keep the one they negotiated.
pub struct ReloadableCert {
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("chain_len", &self.chain().len())
            .finish_non_exhaustive()
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    if chain.is_empty() {
        return Err(TlsError::Config(rustls::Error::General(
            "an empty certificate chain".into(),
        )));
    }
    Ok(Arc::new(rustls::sign::CertifiedKey::from_der(
        chain,
        key,
        &provider(),
    )?))
}

impl ReloadableCert {
    /// A chain (leaf first) and its key; fails when the key is not the leaf's.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: std::sync::RwLock::new(certified_key(chain, key)?),
        }))
    }

    /// Reads a PEM chain and key (as [`load_identity`]).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let (chain, key) = load_identity(cert, key)?;
        Self::new(chain, key)
    }

    /// Swaps in a new chain and key for the next handshakes; on error the current one stays.
    pub fn replace(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<(), TlsError> {
        let next = certified_key(chain, key)?;
        if let Ok(mut current) = self.current.write() {
            *current = next;
        }
        Ok(())
    }

    /// The chain new handshakes present, leaf first.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .read()
            .map(|c| c.cert.clone())
            .unwrap_or_default()
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// [`device_server_config`] presenting whatever `cert` holds at each handshake.
pub fn device_server_config_reloadable(
    cert: Arc<ReloadableCert>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(with_alpn(device_builder()?.with_cert_resolver(cert), alpn))
}
