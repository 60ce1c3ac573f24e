//! A signing key that stays in keyd: the public point comes from `POST /parameters/ec-point`,
//! each signature from `POST /sign` (ECDSA over the SHA-256 digest). The quickstart edge CA is
//! made with it, so its private key never leaves keyd; and a device's X.509 identity key signs
//! TLS client authentication with it ([`tls_client_key`], for `ferrohub system check`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use identity::client::UdsClient;
use identity::wire::keyd::{
    CreateKeyPairRequest, HandleRequest, KeyHandleResponse, ParameterResponse, SignRequest,
    SignResponse,
};

use crate::EdgeError;

const API: &str = "api-version=2020-09-01";

fn keyd_error(what: &str, e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Identity(format!("keyd ({what}): {e}"))
}

/// An ECDSA P-256 key pair held by keyd, usable as an rcgen signing key.
pub struct KeydKeyPair {
    keyd: UdsClient,
    handle: String,
    /// The uncompressed public point.
    public: Vec<u8>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for KeydKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeydKeyPair")
            .field("keyd", &self.keyd.path())
            .finish_non_exhaustive()
    }
}

impl KeydKeyPair {
    /// Key pair `id` in keyd, created (P-256) when it does not exist yet.
    pub async fn create_or_load(keyd: &UdsClient, id: &str) -> Result<Self, EdgeError> {
        let body = CreateKeyPairRequest {
            key_id: id.to_owned(),
            preferred_algorithms: Some("ec-p256".to_owned()),
        };
        let v: KeyHandleResponse = keyd
            .post(&format!("/keypair?{API}"), &body)
            .await
            .map_err(|e| keyd_error("create key pair", e))?;
        let handle = v.key_handle;
        Self::from_handle(keyd, handle).await.map_err(|e| match e {
            EdgeError::Identity(m) => {
                EdgeError::Identity(format!("{m}; key pair {id}: delete it to start over"))
            }
            other => other,
        })
    }

    /// The key pair behind keyd handle `handle` (e.g. a device identity's, as identityd gives it),
    /// which must be ECDSA P-256.
    pub async fn from_handle(keyd: &UdsClient, handle: String) -> Result<Self, EdgeError> {
        let parameter = |name: &'static str| {
            let (keyd, handle) = (keyd.clone(), handle.clone());
            async move {
                let v: ParameterResponse = keyd
                    .post(
                        &format!("/parameters/{name}?{API}"),
                        &HandleRequest::new(&handle),
                    )
                    .await
                    .map_err(|e| keyd_error(name, e))?;
                Ok::<_, EdgeError>(v.value)
            }
        };
        let algorithm = parameter("algorithm").await?;
        let point = STANDARD
            .decode(parameter("ec-point").await.unwrap_or_default())
            .unwrap_or_default();
        // An uncompressed P-256 point: 0x04, then 32 bytes of x and 32 of y.
        if algorithm != "ECDSA" || point.len() != 65 {
            return Err(keyd_error(
                "key pair",
                format!("the key pair is not ECDSA P-256 ({algorithm})"),
            ));
        }
        Ok(Self {
            keyd: keyd.clone(),
            handle,
            public: point,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The uncompressed public point (compare with a certificate's public key).
    pub fn public_point(&self) -> &[u8] {
        &self.public
    }

    /// The keyd handle (what certd's `issuer.privateKeyHandle` names).
    pub fn handle(&self) -> &str {
        &self.handle
    }

    async fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, EdgeError> {
        let v: SignResponse = self
            .keyd
            .post(
                &format!("/sign?{API}"),
                &SignRequest::ecdsa(&self.handle, digest),
            )
            .await
            .map_err(|e| keyd_error("sign", e))?;
        STANDARD
            .decode(v.signature)
            .map_err(|e| keyd_error("sign", e))
    }
}

impl rcgen::PublicKeyData for KeydKeyPair {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for KeydKeyPair {
    /// Blocks on keyd: call only from a blocking thread (see [`self_signed`]).
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, msg);
        self.runtime
            .block_on(self.sign_digest(digest.as_ref()))
            .map_err(|e| {
                tracing::warn!(error = %e, "Signing in keyd failed");
                rcgen::Error::RemoteKeyError
            })
    }
}

/// A self-signed certificate for `params`, signed in keyd (on a blocking thread, since rcgen's
/// signing is synchronous).
pub async fn self_signed(
    params: rcgen::CertificateParams,
    key: KeydKeyPair,
) -> Result<pki::Certificate, EdgeError> {
    let cert = tokio::task::spawn_blocking(move || params.self_signed(&key))
        .await
        .map_err(|e| keyd_error("sign", e))?
        .map_err(|e| keyd_error("self-signed certificate", e))?;
    pki::Certificate::from_der(cert.der().as_ref().to_vec())
        .map_err(|e| keyd_error("self-signed certificate", e))
}

/// A TLS client certificate chain whose private key is `key` in keyd, for a rustls client config
/// (`with_client_cert_resolver`): each handshake's CertificateVerify is signed by keyd.
pub fn tls_client_key(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: KeydKeyPair,
) -> std::sync::Arc<dyn rustls::client::ResolvesClientCert> {
    let signing: std::sync::Arc<dyn rustls::sign::SigningKey> =
        std::sync::Arc::new(TlsKey(std::sync::Arc::new(key)));
    std::sync::Arc::new(ClientCert(std::sync::Arc::new(
        rustls::sign::CertifiedKey::new(chain, signing),
    )))
}

#[derive(Debug)]
struct ClientCert(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        schemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        schemes
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
struct TlsKey(std::sync::Arc<KeydKeyPair>);

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn rustls::sign::Signer>)
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

impl rustls::sign::Signer for TlsKey {
    /// rustls signs synchronously inside the handshake, on a runtime thread; keyd is asked on a
    /// thread of its own with a small runtime, so this works whatever runtime drives the TLS.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let key = self.0.clone();
        let signed = std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| keyd_error("sign", e))?;
                rt.block_on(key.sign_digest(digest.as_ref()))
            })
            .join()
        });
        match signed {
            Ok(Ok(signature)) => Ok(signature),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Signing the TLS handshake in keyd failed");
                Err(rustls::Error::General(e.to_string()))
            }
            Err(_) => Err(rustls::Error::General("keyd signing panicked".into())),
        }
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256
    }
}
