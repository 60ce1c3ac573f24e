//! The name a child asks for (TLS SNI) against the names in the gateway's server certificate:
//! a child configured with a `GatewayHostName` the certificate does not name fails its own
//! certificate check and only reports a TLS error, so the gateway says it on its side, once per
//! connection, with the names it has, and counts it (`gateway_tls_sni_mismatch_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::warn;

/// Wraps the certificate resolver of `config` with the SNI check.
pub(crate) fn checked(
    config: Arc<rustls::ServerConfig>,
    mismatches: Arc<AtomicU64>,
) -> Arc<rustls::ServerConfig> {
    let mut config = (*config).clone();
    config.cert_resolver = Arc::new(SniCheck {
        inner: config.cert_resolver.clone(),
        mismatches,
    });
    Arc::new(config)
}

#[derive(Debug)]
struct SniCheck {
    inner: Arc<dyn ResolvesServerCert>,
    mismatches: Arc<AtomicU64>,
}

impl ResolvesServerCert for SniCheck {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_owned);
        let key = self.inner.resolve(hello)?;
        // No SNI (e.g. a child connecting by IP address): nothing to compare.
        if let Some(sni) = sni {
            let names = names(&key);
            if !names.iter().any(|n| pki::names::san_covers(n, &sni)) {
                self.mismatches.fetch_add(1, Ordering::Relaxed);
                warn!(
                    sni = %sni,
                    names = ?names,
                    "A child connected asking for {sni} (TLS SNI), which the gateway's server \
                     certificate does not name (it names {}); the child will refuse the \
                     certificate. Fix: set the child's GatewayHostName to one of those names, or \
                     issue the gateway's server certificate for {sni}",
                    names.join(", ")
                );
            }
        }
        Some(key)
    }
}

/// The leaf's subjectAltNames (`DNS:x`, `IP:y`).
fn names(key: &CertifiedKey) -> Vec<String> {
    key.cert
        .first()
        .and_then(|der| pki::Certificate::from_der(der.to_vec()).ok())
        .map(|c| c.info().subject_alt_names)
        .unwrap_or_default()
}
