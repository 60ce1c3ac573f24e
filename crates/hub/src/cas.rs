//! CA certificates with proof of possession: upload (unverified), generate a verification code,
//! verify a certificate whose CN is the code and that the CA's key signed. Only verified CAs
//! authenticate `certificateAuthority` devices; a CA deleted or no longer verified ends the live
//! sessions whose chains ended in it.

use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use pki::{Certificate, ChainValidator, ValidatorOptions};
use serde::Serialize;

use crate::device_session::live::Connections;
use crate::device_session::revoke::Revoked;
use crate::error::ApiError;
use crate::registry::{IfMatch, new_etag};
use crate::store::{CaRecord, Registry};
use crate::time::{SharedClock, rfc3339};

/// How long a verification code stays valid.
pub const VERIFICATION_CODE_TTL_SECS: i64 = 3600;

/// The CA service and the validator built from the verified CAs.
pub struct CaService {
    store: Arc<dyn Registry>,
    clock: SharedClock,
    write: Mutex<()>,
    /// Rebuilt whenever the set of verified CAs changes.
    validator: RwLock<Option<Arc<ChainValidator>>>,
    /// The live sessions a withdrawn CA ends (none for the provisioning service).
    sessions: Option<Arc<Connections>>,
}

/// The `CertificateDescription` JSON the API returns.
#[derive(Debug, Serialize)]
pub struct CaDescription {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub etag: String,
    pub properties: CaProperties,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaProperties {
    pub subject: String,
    pub expiry: String,
    pub thumbprint: String,
    pub is_verified: bool,
    pub created: String,
    pub updated: String,
    pub certificate: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification_code: Option<String>,
}

impl From<&CaRecord> for CaDescription {
    fn from(r: &CaRecord) -> Self {
        Self {
            id: format!("/certificates/{}", r.name),
            name: r.name.clone(),
            kind: "Microsoft.Devices/IotHubs/Certificates",
            etag: r.etag.clone(),
            properties: CaProperties {
                subject: r.subject.clone(),
                expiry: r.expiry.clone(),
                thumbprint: r.thumbprint.clone(),
                is_verified: r.is_verified,
                created: r.created.clone(),
                updated: r.updated.clone(),
                certificate: r.certificate.clone(),
                verification_code: None,
            },
        }
    }
}

/// Accepts PEM, or base64 DER as some tools send it.
pub fn parse_certificate(text: &str) -> Result<Certificate, ApiError> {
    if text.contains("-----BEGIN") {
        return Certificate::from_pem(text)
            .map_err(|e| ApiError::bad_request(format!("certificate: {e}")));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| ApiError::bad_request("certificate must be PEM or base64 DER"))?;
    Certificate::from_der(der).map_err(|e| ApiError::bad_request(format!("certificate: {e}")))
}

impl CaService {
    pub fn new(store: Arc<dyn Registry>, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            write: Mutex::new(()),
            validator: RwLock::new(None),
            sessions: None,
        }
    }

    /// A CA withdrawn ends the live sessions in `sessions` whose chains ended in it.
    pub fn ending_sessions(mut self, sessions: Arc<Connections>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// `old` (a record just replaced or deleted) no longer anchors chains unless a verified CA
    /// with its thumbprint remains: the sessions anchored by it end.
    fn withdrawn(&self, old: &CaRecord) {
        let Some(sessions) = &self.sessions else {
            return;
        };
        let still = self.store.list_cas().is_ok_and(|all| {
            all.iter()
                .any(|r| r.is_verified && r.thumbprint == old.thumbprint)
        });
        if !old.is_verified || still {
            return;
        }
        let anchor = crate::mqtt::auth::anchor_key(&old.thumbprint);
        let n = sessions.revoke(&Revoked::Ca { anchor });
        tracing::info!(
            name = %old.name,
            subject = %old.subject,
            sessions = n,
            "CA certificate withdrawn: ending the sessions whose chains ended in it"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Result<CaRecord, ApiError> {
        self.store.get_ca(name)?.ok_or_else(|| {
            ApiError::not_found(
                "CertificateNotFound",
                format!("Certificate {name} not found"),
            )
        })
    }

    pub fn list(&self) -> Result<Vec<CaRecord>, ApiError> {
        Ok(self.store.list_cas()?)
    }

    /// Uploads (or replaces) a CA certificate. `is_verified = true` is self-attestation.
    pub fn upload(
        &self,
        name: &str,
        certificate: &str,
        is_verified: bool,
        if_match: &IfMatch,
    ) -> Result<CaRecord, ApiError> {
        check_name(name)?;
        let cert = parse_certificate(certificate)?;
        if !cert.is_ca() {
            return Err(ApiError::bad_request(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE is required)",
                cert.subject()
            )));
        }
        let _guard = self.lock();
        let existing = self.store.get_ca(name)?;
        // Re-uploading under the same name replaces the certificate (and its verification).
        if_match.check(
            existing.as_ref().map(|e| e.etag.as_str()),
            &format!("certificate {name}"),
        )?;
        let now = rfc3339(self.clock.now());
        let record = CaRecord {
            name: name.to_owned(),
            etag: new_etag(),
            certificate: cert.to_pem(),
            subject: cert.subject(),
            thumbprint: cert.thumbprint_sha1(),
            expiry: rfc3339(cert.not_after()),
            is_verified,
            created: existing
                .as_ref()
                .map_or_else(|| now.clone(), |e| e.created.clone()),
            updated: now,
            verification_code: None,
            verification_code_expiry: None,
        };
        self.store.put_ca(&record)?;
        self.invalidate();
        tracing::info!(name, subject = %record.subject, is_verified, "CA certificate uploaded");
        if let Some(old) = &existing {
            self.withdrawn(old);
        }
        Ok(record)
    }

    /// Creates a fresh verification code; returns the record and the code.
    pub fn generate_verification_code(
        &self,
        name: &str,
        if_match: &IfMatch,
    ) -> Result<(CaRecord, String), ApiError> {
        let _guard = self.lock();
        let mut record = self.get(name)?;
        if_match.check(Some(&record.etag), &format!("certificate {name}"))?;
        let code = pki::pop::new_verification_code().map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "ServerError",
                e.to_string(),
            )
        })?;
        let now = self.clock.now();
        record.verification_code = Some(code.clone());
        record.verification_code_expiry = Some(now.unix_timestamp() + VERIFICATION_CODE_TTL_SECS);
        record.etag = new_etag();
        record.updated = rfc3339(now);
        self.store.put_ca(&record)?;
        Ok((record, code))
    }

    /// Checks a proof-of-possession certificate and marks the CA verified.
    pub fn verify(
        &self,
        name: &str,
        if_match: &IfMatch,
        proof: &str,
    ) -> Result<CaRecord, ApiError> {
        let _guard = self.lock();
        let mut record = self.get(name)?;
        if_match.check(Some(&record.etag), &format!("certificate {name}"))?;
        let now = self.clock.now();
        let code = match (&record.verification_code, record.verification_code_expiry) {
            (Some(c), Some(exp)) if exp >= now.unix_timestamp() => c.clone(),
            (Some(_), _) => {
                return Err(ApiError::bad_request(
                    "the verification code expired; generate a new one",
                ));
            }
            (None, _) => {
                return Err(ApiError::bad_request(
                    "no verification code was generated for this certificate",
                ));
            }
        };
        let ca = Certificate::from_pem(&record.certificate)
            .map_err(|e| ApiError::bad_request(format!("stored certificate: {e}")))?;
        let proof = parse_certificate(proof)?;
        if let Err(e) = pki::pop::verify_possession(&ca, &proof, &code, now) {
            tracing::warn!(name, reason = %e, "Proof of possession refused");
            return Err(ApiError::bad_request(format!("verification failed: {e}")));
        }
        record.is_verified = true;
        record.verification_code = None;
        record.verification_code_expiry = None;
        record.etag = new_etag();
        record.updated = rfc3339(now);
        self.store.put_ca(&record)?;
        self.invalidate();
        tracing::info!(name, subject = %record.subject, "CA certificate verified by proof of possession");
        Ok(record)
    }

    pub fn delete(&self, name: &str, if_match: &IfMatch) -> Result<(), ApiError> {
        let _guard = self.lock();
        let record = self.get(name)?;
        if_match.check(Some(&record.etag), &format!("certificate {name}"))?;
        self.store.delete_ca(name)?;
        self.invalidate();
        self.withdrawn(&record);
        Ok(())
    }

    fn invalidate(&self) {
        if let Ok(mut v) = self.validator.write() {
            *v = None;
        }
    }

    /// A validator whose anchors are the verified CAs (cached until the set changes).
    pub fn verified_validator(&self) -> Result<Arc<ChainValidator>, ApiError> {
        if let Ok(v) = self.validator.read()
            && let Some(v) = v.as_ref()
        {
            return Ok(v.clone());
        }
        let anchors = self
            .store
            .list_cas()?
            .into_iter()
            .filter(|r| r.is_verified)
            .filter_map(|r| Certificate::from_pem(&r.certificate).ok());
        let opts = ValidatorOptions {
            cache_capacity: 256,
            ..Default::default()
        };
        let v = Arc::new(
            ChainValidator::with_options(anchors, opts)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        );
        if let Ok(mut slot) = self.validator.write() {
            *slot = Some(v.clone());
        }
        Ok(v)
    }

    /// Whether a CA with this certificate is registered but not verified (for the refusal reason).
    pub fn is_unverified_issuer(&self, issuer_subject: &str) -> Result<bool, ApiError> {
        Ok(self
            .store
            .list_cas()?
            .iter()
            .any(|r| !r.is_verified && r.subject == issuer_subject))
    }
}

/// The certificate and `isVerified` of an upload body:
/// `{"properties": {"certificate": "<PEM or base64 DER>", "isVerified": false}}` (a top-level
/// `certificate` is accepted too).
pub fn upload_request(v: &serde_json::Value) -> Result<(String, bool), ApiError> {
    let props = v.get("properties").unwrap_or(v);
    let cert = props
        .get("certificate")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| ApiError::bad_request("the body needs properties.certificate (PEM)"))?;
    let verified = props
        .get("isVerified")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok((cert.to_owned(), verified))
}

/// The verification certificate of a verify body: `{"certificate": "<PEM>"}`.
pub fn verify_request(v: &serde_json::Value) -> Result<String, ApiError> {
    v.get("certificate")
        .or_else(|| v.get("properties").and_then(|p| p.get("certificate")))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_request(
                "the body needs certificate (PEM of the verification certificate)",
            )
        })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "certificate names are 1-64 letters, digits, '-', '_' or '.'",
        ))
    }
}
