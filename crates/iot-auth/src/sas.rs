//! Shared access signature (SAS) tokens: parsing, verification and generation.
//!
//! A token looks like
//! `SharedAccessSignature sr={resource}&sig={url-encoded base64 HMAC}&se={expiry}[&skn={policy}]`
//! with the fields in any order. The signature is `HMAC-SHA256(key, sr + "\n" + se)` where `sr`
//! is the resource **exactly as written in the token**: device SDKs percent-encode it
//! (`myhub%2Fdevices%2Fdev1`) while service SDKs put it raw (`myhub`), and both are valid. This
//! module therefore keeps the raw `sr` for signature checks and decodes it once only to find out
//! which identity the token is for ([`SasToken::audience`]).

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::pct;

/// The literal prefix of every SAS token.
pub const SAS_PREFIX: &str = "SharedAccessSignature ";

/// Clock skew tolerated after a token's expiry, in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Standard base64 alphabet that accepts input with or without `=` padding.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors from parsing, verifying or generating SAS tokens and keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// The string does not start with `SharedAccessSignature `.
    #[error("not a SharedAccessSignature token")]
    NotASasToken,
    /// A required field (`sr`, `sig` or `se`) is absent or empty.
    #[error("SAS token has no `{0}` field")]
    MissingField(&'static str),
    /// A field appears more than once.
    #[error("SAS token has more than one `{0}` field")]
    DuplicateField(&'static str),
    /// A `&`-separated segment has no `=`.
    #[error("SAS token contains a segment without `=`")]
    MalformedField,
    /// A field's percent-encoding is invalid or does not decode to UTF-8.
    #[error("SAS token field `{0}` is not valid percent-encoding")]
    BadFieldEncoding(&'static str),
    /// `se` is not an unsigned integer number of seconds.
    #[error("SAS token expiry `se` is not a unix timestamp")]
    BadExpiry,
    /// `sig` is not percent-encoded base64.
    #[error("SAS token signature `sig` is not percent-encoded base64")]
    BadSignatureEncoding,
    /// The token expired (more than the tolerated clock skew ago).
    #[error("SAS token expired at {expiry} (now {now})")]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The time the check was made.
        now: u64,
    },
    /// No key produced the token's signature.
    #[error("SAS token signature does not match")]
    BadSignature,
    /// A key is not valid base64.
    #[error("key is not valid base64")]
    BadKeyEncoding,
    /// The system random number generator failed.
    #[error("random number generator unavailable")]
    RandomUnavailable,
}

/// Who a token was issued for, read from its percent-decoded `sr`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Audience {
    /// `{host}/devices/{device_id}`.
    Device {
        /// Hub (or gateway) host name.
        host: String,
        /// Device id.
        device_id: String,
    },
    /// `{host}/devices/{device_id}/modules/{module_id}`.
    Module {
        /// Hub (or gateway) host name.
        host: String,
        /// Device id.
        device_id: String,
        /// Module id.
        module_id: String,
    },
    /// `{host}`: a hub-level (service policy) token.
    Host {
        /// Hub host name.
        host: String,
    },
    /// Any other resource, e.g. `{host}/devices` (registry scope) or a DPS scope.
    Other(String),
}

impl Audience {
    /// Classifies a percent-decoded resource URI.
    ///
    /// A leading `https://`, `http://` or `amqps://` and a single trailing `/` are ignored.
    /// The literal `devices` / `modules` segments match ASCII case-insensitively.
    pub fn from_resource(resource: &str) -> Self {
        let trimmed = ["https://", "http://", "amqps://"]
            .iter()
            .find_map(|scheme| strip_prefix_ignore_case(resource, scheme))
            .unwrap_or(resource);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let parts: Vec<&str> = trimmed.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Self::Other(resource.to_owned());
        }
        match parts.as_slice() {
            [host] => Self::Host {
                host: (*host).to_owned(),
            },
            [host, devices, device_id] if devices.eq_ignore_ascii_case("devices") => Self::Device {
                host: (*host).to_owned(),
                device_id: (*device_id).to_owned(),
            },
            [host, devices, device_id, modules, module_id]
                if devices.eq_ignore_ascii_case("devices")
                    && modules.eq_ignore_ascii_case("modules") =>
            {
                Self::Module {
                    host: (*host).to_owned(),
                    device_id: (*device_id).to_owned(),
                    module_id: (*module_id).to_owned(),
                }
            }
            _ => Self::Other(resource.to_owned()),
        }
    }

    /// The host name, unless the audience is [`Audience::Other`].
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::Device { host, .. } | Self::Module { host, .. } | Self::Host { host } => {
                Some(host)
            }
            Self::Other(_) => None,
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// A parsed SAS token. `Debug` never prints the signature.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    raw_resource: String,
    resource: String,
    signature: Vec<u8>,
    expiry: u64,
    key_name: Option<String>,
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("raw_resource", &self.raw_resource)
            .field("resource", &self.resource)
            .field("signature", &"<redacted>")
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish()
    }
}

/// The raw (still percent-encoded) field values of a token.
#[derive(Default)]
struct RawFields<'a> {
    sr: Option<&'a str>,
    sig: Option<&'a str>,
    se: Option<&'a str>,
    skn: Option<&'a str>,
}

impl<'a> RawFields<'a> {
    fn split(body: &'a str) -> Result<Self, SasError> {
        let mut fields = Self::default();
        for segment in body.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = segment.split_once('=').ok_or(SasError::MalformedField)?;
            let (slot, name) = match name {
                "sr" => (&mut fields.sr, "sr"),
                "sig" => (&mut fields.sig, "sig"),
                "se" => (&mut fields.se, "se"),
                "skn" => (&mut fields.skn, "skn"),
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasError::DuplicateField(name));
            }
        }
        Ok(fields)
    }
}

fn required<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, SasError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(SasError::MissingField(name))
}

impl SasToken {
    /// Parses `SharedAccessSignature sr=..&sig=..&se=..[&skn=..]` (fields in any order).
    ///
    /// Unknown fields and empty segments are ignored. `sr` is kept raw for signing and also
    /// percent-decoded; `sig` is percent-decoded (a `+` stays a `+`) and base64-decoded.
    pub fn parse(s: &str) -> Result<Self, SasError> {
        let body = s
            .trim()
            .strip_prefix(SAS_PREFIX)
            .ok_or(SasError::NotASasToken)?
            .trim_start();
        let fields = RawFields::split(body)?;
        let raw_sr = required(fields.sr, "sr")?;
        let raw_sig = required(fields.sig, "sig")?;
        let raw_se = required(fields.se, "se")?;
        let resource = pct::decode(raw_sr).map_err(|_| SasError::BadFieldEncoding("sr"))?;
        let sig_b64 = pct::decode(raw_sig).map_err(|_| SasError::BadSignatureEncoding)?;
        let signature = LENIENT_B64
            .decode(sig_b64.as_bytes())
            .map_err(|_| SasError::BadSignatureEncoding)?;
        let se = pct::decode(raw_se).map_err(|_| SasError::BadExpiry)?;
        let expiry = parse_expiry(&se)?;
        let key_name = fields
            .skn
            .map(|v| pct::decode(v).map_err(|_| SasError::BadFieldEncoding("skn")))
            .transpose()?;
        Ok(Self {
            raw_resource: raw_sr.to_owned(),
            resource,
            signature,
            expiry,
            key_name,
        })
    }

    /// The `sr` field exactly as it appeared in the token (what the signature covers).
    pub fn raw_resource(&self) -> &str {
        &self.raw_resource
    }

    /// The `sr` field after one percent-decoding.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The decoded signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The `se` field: expiry in unix seconds.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }

    /// The `skn` field (policy / key name), percent-decoded, if present.
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// The identity the token was issued for.
    pub fn audience(&self) -> Audience {
        Audience::from_resource(&self.resource)
    }

    /// Whether the token is expired at `now`, allowing [`MAX_CLOCK_SKEW_SECS`] of skew.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expiry.saturating_add(MAX_CLOCK_SKEW_SECS) < now
    }

    /// Checks expiry and then the signature against `key` (the decoded shared access key).
    pub fn verify(&self, key: &[u8], now: u64) -> Result<(), SasError> {
        self.verify_any(&[key], now)
    }

    /// Like [`SasToken::verify`], succeeding if any of `keys` (e.g. primary, secondary) signed
    /// the token. Comparison is constant-time per key.
    pub fn verify_any(&self, keys: &[&[u8]], now: u64) -> Result<(), SasError> {
        if self.is_expired(now) {
            return Err(SasError::Expired {
                expiry: self.expiry,
                now,
            });
        }
        let message = string_to_sign(&self.raw_resource, self.expiry);
        let matched = keys.iter().any(|key| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, key);
            hmac::verify(&key, message.as_bytes(), &self.signature).is_ok()
        });
        if matched {
            Ok(())
        } else {
            Err(SasError::BadSignature)
        }
    }
}

fn parse_expiry(se: &str) -> Result<u64, SasError> {
    if se.is_empty() || !se.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SasError::BadExpiry);
    }
    se.parse().map_err(|_| SasError::BadExpiry)
}

fn string_to_sign(raw_resource: &str, expiry: u64) -> String {
    format!("{raw_resource}\n{expiry}")
}

/// `HMAC-SHA256(key, raw_resource + "\n" + expiry)`: the raw signature bytes of a token.
pub fn compute_signature(raw_resource: &str, key: &[u8], expiry: u64) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, string_to_sign(raw_resource, expiry).as_bytes())
        .as_ref()
        .to_vec()
}

/// Builds a token the way the Python device SDK does.
///
/// `resource_uri` (e.g. `myhub/devices/dev1`) is percent-encoded with no safe characters, so
/// `/` becomes `%2F`; the signature and the optional policy name are percent-encoded the same
/// way. `key` is the decoded shared access key and `expiry` is in unix seconds.
pub fn generate_sas_token(
    resource_uri: &str,
    key: &[u8],
    policy: Option<&str>,
    expiry: u64,
) -> String {
    let sr = pct::encode(resource_uri);
    let sig = base64::engine::general_purpose::STANDARD.encode(compute_signature(&sr, key, expiry));
    let mut token = format!("{SAS_PREFIX}sr={sr}&sig={}&se={expiry}", pct::encode(&sig));
    if let Some(policy) = policy {
        token.push_str("&skn=");
        token.push_str(&pct::encode(policy));
    }
    token
}

/// Decodes a base64 shared access key (padding optional).
pub fn decode_key(key_b64: &str) -> Result<Vec<u8>, SasError> {
    LENIENT_B64
        .decode(key_b64.trim().as_bytes())
        .map_err(|_| SasError::BadKeyEncoding)
}

/// Generates a new 256-bit symmetric key (device, module or policy key) as standard base64.
pub fn generate_key() -> Result<String, SasError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| SasError::RandomUnavailable)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Derives a device key from a DPS symmetric-key enrollment-group key:
/// `base64(HMAC-SHA256(base64decode(group_key_b64), registration_id))`.
pub fn derive_device_key(group_key_b64: &str, registration_id: &str) -> Result<String, SasError> {
    let group_key = decode_key(group_key_b64)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &group_key);
    let tag = hmac::sign(&key, registration_id.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const VECTOR_SIG: &str = "7%2FYBn2%2BOH0PpftIzUioKUatXUTqpkyynUgfn1k7i5pk%3D";

    fn key() -> Vec<u8> {
        decode_key(KEY_B64).unwrap()
    }

    #[test]
    fn test_vector_signature() {
        let sig = compute_signature("localhost%2Fdevices%2Fdev1", &key(), 1_700_000_000);
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(sig),
            "7/YBn2+OH0PpftIzUioKUatXUTqpkyynUgfn1k7i5pk="
        );
    }

    #[test]
    fn generate_matches_test_vector() {
        let token = generate_sas_token("localhost/devices/dev1", &key(), None, 1_700_000_000);
        assert_eq!(
            token,
            format!(
                "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig={VECTOR_SIG}&se=1700000000"
            )
        );
    }

    #[test]
    fn parse_fields_any_order() {
        let s = format!(
            "SharedAccessSignature se=1700000000&skn=pol%20icy&sig={VECTOR_SIG}&sr=localhost%2Fdevices%2Fdev1"
        );
        let t = SasToken::parse(&s).unwrap();
        assert_eq!(t.raw_resource(), "localhost%2Fdevices%2Fdev1");
        assert_eq!(t.resource(), "localhost/devices/dev1");
        assert_eq!(t.expiry(), 1_700_000_000);
        assert_eq!(t.key_name(), Some("pol icy"));
        assert_eq!(t.signature().len(), 32);
        t.verify(&key(), 1_700_000_000).unwrap();
    }

    #[test]
    fn parse_errors_are_specific() {
        let p = |s: &str| SasToken::parse(s).unwrap_err();
        assert_eq!(p("Bearer abc"), SasError::NotASasToken);
        assert_eq!(
            p("SharedAccessSignature sig=AA%3D%3D&se=1"),
            SasError::MissingField("sr")
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&se=1"),
            SasError::MissingField("sig")
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sig=AAAA"),
            SasError::MissingField("se")
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sr=h&sig=AAAA&se=1"),
            SasError::DuplicateField("sr")
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sig=AAAA&se=-1"),
            SasError::BadExpiry
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sig=AAAA&se=1x"),
            SasError::BadExpiry
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sig=%zz&se=1"),
            SasError::BadSignatureEncoding
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sig=!!!&se=1"),
            SasError::BadSignatureEncoding
        );
        assert_eq!(
            p("SharedAccessSignature sr=h%zz&sig=AAAA&se=1"),
            SasError::BadFieldEncoding("sr")
        );
        assert_eq!(
            p("SharedAccessSignature sr=h&sig=AAAA&se=1&oops"),
            SasError::MalformedField
        );
    }

    #[test]
    fn plus_in_signature_is_not_a_space() {
        // Raw `+` and `/` (as the Python service SDK leaves `/` unencoded) decode as base64.
        let s =
            "SharedAccessSignature sr=h&sig=7/YBn2+OH0PpftIzUioKUatXUTqpkyynUgfn1k7i5pk%3D&se=1";
        let t = SasToken::parse(s).unwrap();
        let s2 = format!("SharedAccessSignature sr=h&sig={VECTOR_SIG}&se=1");
        assert_eq!(t.signature(), SasToken::parse(&s2).unwrap().signature());
    }

    #[test]
    fn audience_forms() {
        let a = |s: &str| Audience::from_resource(s);
        assert_eq!(
            a("hub/devices/d1"),
            Audience::Device {
                host: "hub".into(),
                device_id: "d1".into()
            }
        );
        assert_eq!(
            a("https://hub/devices/d1/"),
            Audience::Device {
                host: "hub".into(),
                device_id: "d1".into()
            }
        );
        assert_eq!(
            a("hub/devices/d1/modules/m1"),
            Audience::Module {
                host: "hub".into(),
                device_id: "d1".into(),
                module_id: "m1".into()
            }
        );
        assert_eq!(a("hub"), Audience::Host { host: "hub".into() });
        assert_eq!(a("hub/"), Audience::Host { host: "hub".into() });
        assert_eq!(a("hub/devices"), Audience::Other("hub/devices".into()));
        assert_eq!(a("hub//d1"), Audience::Other("hub//d1".into()));
        assert_eq!(a("hub/devices/d1").host(), Some("hub"));
        assert_eq!(a("x/y").host(), None);
    }

    #[test]
    fn expiry_skew_edge() {
        let token = generate_sas_token("hub/devices/d", &key(), None, 1000);
        let t = SasToken::parse(&token).unwrap();
        assert!(t.verify(&key(), 1300).is_ok());
        assert_eq!(
            t.verify(&key(), 1301),
            Err(SasError::Expired {
                expiry: 1000,
                now: 1301
            })
        );
        assert!(!t.is_expired(1300));
        assert!(t.is_expired(1301));
    }

    #[test]
    fn verify_any_tries_every_key() {
        let token = generate_sas_token("hub/devices/d", &key(), None, 1000);
        let t = SasToken::parse(&token).unwrap();
        assert!(t.verify_any(&[b"other", &key()], 0).is_ok());
        assert_eq!(t.verify_any(&[b"other"], 0), Err(SasError::BadSignature));
        assert_eq!(t.verify_any(&[], 0), Err(SasError::BadSignature));
    }

    #[test]
    fn debug_redacts_signature() {
        let token = generate_sas_token("hub/devices/d", &key(), None, 1000);
        let dbg = format!("{:?}", SasToken::parse(&token).unwrap());
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.to_lowercase().contains("sig=") && !dbg.contains("signature: ["));
    }

    #[test]
    fn keys_generate_and_derive() {
        let k = generate_key().unwrap();
        assert_eq!(decode_key(&k).unwrap().len(), 32);
        assert_ne!(k, generate_key().unwrap());
        let d1 = derive_device_key(KEY_B64, "reg-1").unwrap();
        assert_eq!(d1, derive_device_key(KEY_B64, "reg-1").unwrap());
        assert_ne!(d1, derive_device_key(KEY_B64, "reg-2").unwrap());
        assert_eq!(decode_key(&d1).unwrap().len(), 32);
        assert_eq!(
            derive_device_key("not base64!", "r"),
            Err(SasError::BadKeyEncoding)
        );
    }
}
