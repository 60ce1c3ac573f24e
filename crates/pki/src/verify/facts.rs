//! The facts about one certificate that path validation needs, read once per certificate.

use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::X509Certificate;

use super::Purpose;
use super::error::Reason;

/// What the extended key usage allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Eku {
    any: bool,
    client: bool,
    server: bool,
    names: Vec<String>,
}

/// The validation-relevant content of one certificate.
#[derive(Clone, Debug)]
pub(crate) struct Facts {
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) issuer_raw: Vec<u8>,
    pub(crate) ski: Option<Vec<u8>>,
    pub(crate) aki: Option<Vec<u8>>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// basicConstraints: `None` when the extension is absent.
    pub(crate) ca: Option<bool>,
    pub(crate) path_len: Option<u32>,
    /// keyUsage bits (x509-parser's flag layout), `None` when absent.
    key_usage: Option<x509_parser::extensions::KeyUsage>,
    eku: Option<Eku>,
    /// The first critical extension the validator does not process.
    unsupported_critical: Option<String>,
    pub(crate) version: u32,
}

impl Facts {
    pub(crate) fn read(c: &X509Certificate<'_>) -> Result<Self, Reason> {
        let mut f = Facts {
            subject_raw: c.subject().as_raw().to_vec(),
            issuer_raw: c.issuer().as_raw().to_vec(),
            ski: None,
            aki: None,
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
            ca: None,
            path_len: None,
            key_usage: None,
            eku: None,
            unsupported_critical: None,
            version: c.version().0,
        };
        for ext in c.extensions() {
            // Extensions the validator processes; any other critical one is refused.
            let mut processed = true;
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    f.ca = Some(bc.ca);
                    f.path_len = bc.path_len_constraint;
                }
                ParsedExtension::KeyUsage(ku) => f.key_usage = Some(*ku),
                ParsedExtension::ExtendedKeyUsage(e) => {
                    let mut names: Vec<String> = e.other.iter().map(|o| o.to_id_string()).collect();
                    for (on, n) in [
                        (e.any, "anyExtendedKeyUsage"),
                        (e.client_auth, "clientAuth"),
                        (e.server_auth, "serverAuth"),
                        (e.code_signing, "codeSigning"),
                        (e.email_protection, "emailProtection"),
                    ] {
                        if on {
                            names.push(n.to_owned());
                        }
                    }
                    f.eku = Some(Eku {
                        any: e.any,
                        client: e.client_auth,
                        server: e.server_auth,
                        names,
                    });
                }
                ParsedExtension::SubjectKeyIdentifier(k) => f.ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    f.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                ParsedExtension::SubjectAlternativeName(_) => {}
                ParsedExtension::ParseError { error } => {
                    let oid = ext.oid.to_id_string();
                    return Err(Reason::Malformed(format!("extension {oid}: {error}")));
                }
                _ => processed = false,
            }
            if ext.critical && !processed && f.unsupported_critical.is_none() {
                let oid = ext.oid.to_id_string();
                f.unsupported_critical = Some(crate::inspect::oid_name(&oid));
            }
        }
        Ok(f)
    }

    pub(crate) fn check_time(&self, at: i64) -> Result<(), Reason> {
        let ts = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        };
        if at < self.not_before {
            return Err(Reason::NotYetValid {
                not_before: ts(self.not_before),
                at: ts(at),
            });
        }
        if at > self.not_after {
            return Err(Reason::Expired {
                not_after: ts(self.not_after),
                at: ts(at),
            });
        }
        Ok(())
    }

    pub(crate) fn check_critical(&self) -> Result<(), Reason> {
        match &self.unsupported_critical {
            Some(name) => Err(Reason::UnsupportedCriticalExtension(name.clone())),
            None => Ok(()),
        }
    }

    /// The EKU check, applied to the leaf and (as OpenSSL does) to CAs that carry an EKU.
    pub(crate) fn check_eku(&self, purpose: Purpose) -> Result<(), Reason> {
        let Some(eku) = &self.eku else { return Ok(()) };
        let (ok, required) = match purpose {
            Purpose::Any => return Ok(()),
            Purpose::ClientAuth => (eku.client || eku.any, "clientAuth"),
            Purpose::ServerAuth => (eku.server || eku.any, "serverAuth"),
        };
        if ok {
            Ok(())
        } else {
            Err(Reason::WrongEku {
                required,
                present: eku.names.clone(),
            })
        }
    }

    /// The leaf's keyUsage must allow a TLS handshake for the purpose (same rule as OpenSSL).
    pub(crate) fn check_leaf_key_usage(&self, purpose: Purpose) -> Result<(), Reason> {
        let Some(ku) = &self.key_usage else {
            return Ok(());
        };
        match purpose {
            Purpose::Any => Ok(()),
            Purpose::ClientAuth if ku.digital_signature() || ku.key_agreement() => Ok(()),
            Purpose::ServerAuth
                if ku.digital_signature() || ku.key_encipherment() || ku.key_agreement() =>
            {
                Ok(())
            }
            Purpose::ClientAuth => Err(Reason::WrongKeyUsage(
                "TLS client authentication (needs digitalSignature)",
            )),
            Purpose::ServerAuth => Err(Reason::WrongKeyUsage(
                "TLS server authentication (needs digitalSignature or keyEncipherment)",
            )),
        }
    }

    /// What an issuer at `cas_below` CA certificates above the leaf must satisfy.
    pub(crate) fn check_as_issuer(
        &self,
        cas_below: usize,
        is_anchor: bool,
        purpose: Purpose,
    ) -> Result<(), Reason> {
        match self.ca {
            Some(true) => {}
            // A version-1 trust anchor predates extensions; OpenSSL accepts it as a CA.
            None if is_anchor && self.version == 0 => {}
            _ => return Err(Reason::NotCa),
        }
        if let Some(ku) = &self.key_usage
            && !ku.key_cert_sign()
        {
            return Err(Reason::MissingKeyCertSign);
        }
        if let Some(path_len) = self.path_len
            && cas_below > path_len as usize
        {
            return Err(Reason::PathLenExceeded {
                path_len,
                cas_below,
            });
        }
        self.check_eku(purpose)?;
        self.check_critical()
    }

    /// Whether `issuer` could have issued `self`: same name, and key ids agree when both exist.
    pub(crate) fn issued_by(&self, issuer_subject: &[u8], issuer_ski: Option<&[u8]>) -> bool {
        if self.issuer_raw != issuer_subject {
            return false;
        }
        match (&self.aki, issuer_ski) {
            (Some(aki), Some(ski)) => aki.as_slice() == ski,
            _ => true,
        }
    }
}
