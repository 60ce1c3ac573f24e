//! A readable summary of a certificate (`ferrohub certs inspect`).

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::public_key::PublicKey;

use crate::cert::Certificate;

/// Everything an operator checks on a certificate. Serialises to the `--json` form.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Subject alternative names as `DNS:name`, `IP:addr`, `URI:...`, `email:...`.
    pub subject_alt_names: Vec<String>,
    /// Public key type, e.g. `ECDSA P-256` or `RSA 2048`.
    pub key: String,
    /// Signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// basicConstraints pathLen, if set.
    pub path_len: Option<u32>,
    /// keyUsage bits by name.
    pub key_usage: Vec<String>,
    /// extendedKeyUsage purposes by name (or OID).
    pub extended_key_usage: Vec<String>,
    /// Every extension, with its criticality.
    pub extensions: Vec<ExtensionInfo>,
    /// Subject key identifier, upper-case hex.
    pub subject_key_id: Option<String>,
    /// Authority key identifier, upper-case hex.
    pub authority_key_id: Option<String>,
    /// SHA-1 thumbprint, upper-case hex (what IoT Hub calls the thumbprint).
    pub thumbprint_sha1: String,
    /// SHA-256 thumbprint, upper-case hex.
    pub thumbprint_sha256: String,
}

/// One extension's identity and criticality.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ExtensionInfo {
    /// Dotted OID.
    pub oid: String,
    /// Short name when known.
    pub name: String,
    /// Whether it is marked critical.
    pub critical: bool,
}

impl Certificate {
    /// Summarises the certificate.
    pub fn info(&self) -> CertInfo {
        let c = self.parsed();
        let mut info = CertInfo {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            serial: hex::encode_upper(c.raw_serial()),
            not_before: rfc3339(self.not_before()),
            not_after: rfc3339(self.not_after()),
            subject_alt_names: Vec::new(),
            key: key_description(&c),
            signature_algorithm: oid_name(&c.signature_algorithm.algorithm.to_id_string()),
            is_ca: false,
            path_len: None,
            key_usage: Vec::new(),
            extended_key_usage: Vec::new(),
            extensions: Vec::new(),
            subject_key_id: None,
            authority_key_id: None,
            thumbprint_sha1: self.thumbprint_sha1(),
            thumbprint_sha256: self.thumbprint_sha256(),
        };
        for ext in c.extensions() {
            let oid = ext.oid.to_id_string();
            info.extensions.push(ExtensionInfo {
                name: oid_name(&oid),
                oid,
                critical: ext.critical,
            });
            describe_extension(ext.parsed_extension(), &mut info);
        }
        info
    }
}

fn describe_extension(ext: &ParsedExtension<'_>, info: &mut CertInfo) {
    match ext {
        ParsedExtension::BasicConstraints(bc) => {
            info.is_ca = bc.ca;
            info.path_len = bc.path_len_constraint;
        }
        ParsedExtension::KeyUsage(ku) => {
            let names = [
                (ku.digital_signature(), "digitalSignature"),
                (ku.non_repudiation(), "nonRepudiation"),
                (ku.key_encipherment(), "keyEncipherment"),
                (ku.data_encipherment(), "dataEncipherment"),
                (ku.key_agreement(), "keyAgreement"),
                (ku.key_cert_sign(), "keyCertSign"),
                (ku.crl_sign(), "cRLSign"),
                (ku.encipher_only(), "encipherOnly"),
                (ku.decipher_only(), "decipherOnly"),
            ];
            info.key_usage = names
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| (*n).to_owned())
                .collect();
        }
        ParsedExtension::ExtendedKeyUsage(eku) => {
            let known = [
                (eku.any, "anyExtendedKeyUsage"),
                (eku.server_auth, "serverAuth"),
                (eku.client_auth, "clientAuth"),
                (eku.code_signing, "codeSigning"),
                (eku.email_protection, "emailProtection"),
                (eku.time_stamping, "timeStamping"),
                (eku.ocsp_signing, "OCSPSigning"),
            ];
            info.extended_key_usage = known
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| (*n).to_owned())
                .chain(eku.other.iter().map(|o| o.to_id_string()))
                .collect();
        }
        ParsedExtension::SubjectAlternativeName(san) => {
            info.subject_alt_names = san.general_names.iter().map(general_name).collect();
        }
        ParsedExtension::SubjectKeyIdentifier(ki) => {
            info.subject_key_id = Some(hex::encode_upper(ki.0));
        }
        ParsedExtension::AuthorityKeyIdentifier(aki) => {
            info.authority_key_id = aki.key_identifier.as_ref().map(|k| hex::encode_upper(k.0));
        }
        _ => {}
    }
}

fn general_name(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::DNSName(n) => format!("DNS:{n}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => {
                let a: [u8; 4] = [b[0], b[1], b[2], b[3]];
                format!("IP:{}", std::net::Ipv4Addr::from(a))
            }
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                format!("IP:{}", std::net::Ipv6Addr::from(a))
            }
            _ => format!("IP:<{} bytes>", b.len()),
        },
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        other => format!("{other:?}"),
    }
}

fn key_description(c: &x509_parser::certificate::X509Certificate<'_>) -> String {
    let spki = c.public_key();
    match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = crate::verify::ec_curve_oid(spki);
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA P-256".into(),
                Some("1.3.132.0.34") => "ECDSA P-384".into(),
                Some("1.3.132.0.35") => "ECDSA P-521".into(),
                Some(other) => format!("EC {other}"),
                None => "EC (no curve)".into(),
            }
        }
        _ => oid_name(&spki.algorithm.algorithm.to_id_string()),
    }
}

/// Short names for the OIDs ferrohub meets; unknown OIDs are returned as is.
pub(crate) fn oid_name(oid: &str) -> String {
    let name = match oid {
        "2.5.29.14" => "subjectKeyIdentifier",
        "2.5.29.15" => "keyUsage",
        "2.5.29.17" => "subjectAltName",
        "2.5.29.19" => "basicConstraints",
        "2.5.29.30" => "nameConstraints",
        "2.5.29.31" => "cRLDistributionPoints",
        "2.5.29.32" => "certificatePolicies",
        "2.5.29.35" => "authorityKeyIdentifier",
        "2.5.29.37" => "extendedKeyUsage",
        "1.3.6.1.5.5.7.1.1" => "authorityInfoAccess",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.3.101.112" => "Ed25519",
        _ => return oid.to_owned(),
    };
    name.to_owned()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}
