//! `POST /certificates`: which key signs, for how long, and what the answer holds.

use pki::Certificate;
use pki::csr::{Csr, CsrError, CsrSigner, issue_from_csr};
use time::{Duration, OffsetDateTime};

use super::{CertError, Certd, DEFAULT_EXPIRY_DAYS};
use crate::config::daemons::CertIssuanceOptions;
use crate::keyd::KeyError;

/// A CA that signs: its certificate chain (the CA first) and its key.
struct Ca {
    chain: Vec<Certificate>,
    key: pki::PrivateKey,
}

/// Who signs the new certificate.
enum Signing {
    SelfSigned(pki::PrivateKey),
    ByCa(Ca),
}

/// Issues cert `id` from `csr_pem`; returns the leaf's PEM followed by the issuer's chain.
pub(super) fn create(
    certd: &Certd,
    id: &str,
    csr_pem: &str,
    issuer_cert_id: Option<&str>,
) -> Result<String, CertError> {
    let mut csr = Csr::from_pem(csr_pem).map_err(|e| CertError::invalid("csr", e))?;
    let options = certd.issuance.certs.get(id);
    if let Some(cn) = options.and_then(|o| o.common_name.as_deref()) {
        csr.set_common_name(cn)
            .map_err(|e| CertError::Config(format!("[cert_issuance.{id}] common_name: {e}")))?;
    }
    let signing = match issuer_cert_id {
        Some(issuer) => Signing::ByCa(load_ca(certd, issuer, issuer, "issuer")?),
        None => configured_signing(certd, id, options)?,
    };
    let not_before = now(certd);
    let days = options
        .and_then(|o| o.expiry_days)
        .unwrap_or(DEFAULT_EXPIRY_DAYS);
    if days == 0 {
        return Err(CertError::Config(format!(
            "[cert_issuance.{id}] expiry_days must be at least 1"
        )));
    }
    let not_after = not_before
        .checked_add(Duration::days(i64::from(days)))
        .ok_or_else(|| {
            CertError::Config(format!("[cert_issuance.{id}] expiry_days is too large"))
        })?;
    let (cert, chain) = match &signing {
        Signing::SelfSigned(key) => {
            let cert = issue_from_csr(&csr, not_before, not_after, CsrSigner::SelfSigned(key))
                .map_err(|e| csr_error(e, "csr"))?;
            (cert, &[][..])
        }
        Signing::ByCa(ca) => {
            let Some(ca_cert) = ca.chain.first() else {
                return Err(CertError::Internal("empty issuer chain".into()));
            };
            let signer = CsrSigner::Ca(pki::Signer {
                cert: ca_cert,
                key: &ca.key,
            });
            let cert = issue_from_csr(&csr, not_before, not_after, signer)
                .map_err(|e| csr_error(e, "issuer"))?;
            (cert, &ca.chain[..])
        }
    };
    Ok(std::iter::once(&cert)
        .chain(chain)
        .map(Certificate::to_pem)
        .collect())
}

/// No issuer in the request: `[cert_issuance.<id>]` decides.
fn configured_signing(
    certd: &Certd,
    id: &str,
    options: Option<&CertIssuanceOptions>,
) -> Result<Signing, CertError> {
    let Some(options) = options else {
        return Err(CertError::invalid(
            "issuer",
            "issuer is required for locally-issued certs",
        ));
    };
    match options.method.as_str() {
        "self_signed" => {
            let key = key_pair(certd, id, "csr")?;
            Ok(Signing::SelfSigned(key))
        }
        "local_ca" => {
            let Some(local_ca) = &certd.issuance.local_ca else {
                return Err(CertError::invalid(
                    "issuer",
                    format!(
                        "cert {id:?} is to be issued by the local CA, but [cert_issuance.local_ca] is not configured"
                    ),
                ));
            };
            Ok(Signing::ByCa(load_ca(
                certd,
                &local_ca.cert,
                &local_ca.pk,
                "issuer",
            )?))
        }
        "est" => Err(CertError::invalid(
            "issuer",
            format!(
                "cert {id:?} is configured for EST issuance, but EST is not supported by this certd"
            ),
        )),
        other => Err(CertError::invalid(
            "issuer",
            format!("unknown cert_issuance method {other:?} for cert {id:?}"),
        )),
    }
}

/// The CA cert `cert_id` (with the chain stored under it) and key pair `key_id`.
fn load_ca(
    certd: &Certd,
    cert_id: &str,
    key_id: &str,
    param: &'static str,
) -> Result<Ca, CertError> {
    let pem = certd.store.read(cert_id)?.ok_or_else(|| {
        CertError::invalid(param, format!("issuer certificate {cert_id:?} not found"))
    })?;
    let chain = Certificate::chain_from_pem(&pem)
        .map_err(|e| CertError::invalid(param, format!("issuer certificate {cert_id:?}: {e}")))?;
    let key = key_pair(certd, key_id, param)?;
    Ok(Ca { chain, key })
}

/// Key pair `id` from the shared key store; a missing one is the request's fault.
fn key_pair(certd: &Certd, id: &str, param: &'static str) -> Result<pki::PrivateKey, CertError> {
    certd.keys.key_pair(id, None).map_err(|e| match e {
        KeyError::NotFound(_) => {
            CertError::invalid(param, format!("key pair {id:?} not found in the key store"))
        }
        other => CertError::Key(other),
    })
}

/// Signing errors: the signer library failing is internal, the rest is about `param`.
fn csr_error(e: CsrError, param: &'static str) -> CertError {
    match e {
        CsrError::Pki(pki::PkiError::Generate(m)) => CertError::Internal(m),
        CsrError::Pki(pki::PkiError::KeyMismatch) if param == "csr" => CertError::invalid(
            "csr",
            "the CSR's public key is not the key pair of the same id, so it cannot be self-signed",
        ),
        other => CertError::invalid(param, other),
    }
}

/// Now, in whole seconds (X.509 times carry no fractions).
fn now(certd: &Certd) -> OffsetDateTime {
    let t = certd.clock.now();
    t.replace_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ferrohub_runtime::time::FixedClock;
    use pki::csr::CsrOptions;
    use pki::{CertRequest, KeyAlgorithm, PrivateKey, Profile};

    use super::super::test_keys::MemKeys;
    use super::super::tests::config;
    use super::*;
    use crate::config::daemons::LocalCa;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn opts(method: &str, days: Option<u32>, cn: Option<&str>) -> CertIssuanceOptions {
        CertIssuanceOptions {
            method: method.into(),
            expiry_days: days,
            common_name: cn.map(str::to_owned),
        }
    }

    fn csr(key: &PrivateKey, cn: &str) -> String {
        Csr::create(key, &CsrOptions::new(Profile::DeviceClient, cn))
            .unwrap()
            .to_pem()
    }

    #[test]
    fn issuance_methods_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        let c = &mut cfg.cert_issuance;
        c.certs
            .insert("dev".into(), opts("self_signed", Some(10), Some("renamed")));
        c.certs.insert("leaf".into(), opts("local_ca", None, None));
        c.certs.insert("est".into(), opts("est", None, None));
        c.local_ca = Some(LocalCa {
            cert: "ca".into(),
            pk: "ca-key".into(),
        });
        let keys = Arc::new(MemKeys::default());
        let clock = Arc::new(FixedClock(Mutex::new(t0())));
        let certd = Certd::open_with_clock(&cfg, keys.clone(), clock).unwrap();

        let dev_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let err = create(&certd, "dev", &csr(&dev_key, "dev"), None).unwrap_err();
        assert!(
            err.to_string().contains("key pair \"dev\" not found"),
            "{err}"
        );
        keys.insert("dev", &dev_key);
        let pem = create(&certd, "dev", &csr(&dev_key, "dev"), None).unwrap();
        let cert = Certificate::from_pem(&pem).unwrap();
        assert_eq!(cert.common_name().as_deref(), Some("renamed"));
        assert_eq!(cert.not_after(), t0() + Duration::days(10));
        assert!(cert.is_self_issued());

        let other = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let err = create(&certd, "dev", &csr(&other, "dev"), None).unwrap_err();
        assert!(matches!(
            err,
            CertError::InvalidParameter { name: "csr", .. }
        ));

        let err = create(&certd, "leaf", &csr(&other, "leaf"), None).unwrap_err();
        assert!(err.to_string().contains("\"ca\" not found"), "{err}");
        let ca_key = PrivateKey::generate(KeyAlgorithm::P256).unwrap();
        let ca = pki::issue(
            &CertRequest::new(Profile::RootCa, "CA", t0()),
            &ca_key,
            None,
        )
        .unwrap();
        certd.store.write("ca", &ca.to_pem()).unwrap();
        keys.insert("ca-key", &ca_key);
        let pem = create(&certd, "leaf", &csr(&other, "leaf"), None).unwrap();
        let chain = Certificate::chain_from_pem(&pem).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], ca);
        assert_eq!(chain[0].not_after(), t0() + Duration::days(30));

        let err = create(&certd, "est", &csr(&other, "x"), None).unwrap_err();
        assert!(err.to_string().contains("EST is not supported"), "{err}");
        let err = create(&certd, "unconfigured", &csr(&other, "x"), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("issuer is required for locally-issued certs")
        );
        let err = create(&certd, "dev", "garbage", None).unwrap_err();
        assert!(matches!(
            err,
            CertError::InvalidParameter { name: "csr", .. }
        ));
    }
}
