//! Key handles: opaque to callers, authenticated by keyd, never carrying key bytes.
//!
//! A handle is `sr=<base64(JSON)>&sig=<base64(HMAC-SHA256(JSON))>` where the JSON is
//! `{"key_id": {"Key": "<id>"} | {"KeyPair": "<id>"} | {"Derived": ["<base handle>", [bytes…]]},
//! "nonce": "<base64 of 64 random bytes>"}` and the HMAC key is keyd's own
//! [`HANDLE_VALIDATION_KEY`], which no API call can name.
//!
//! A derived key's handle also carries `"uid": <n>`, the uid it was issued to (ferrohub's
//! addition to aziot's JSON; the handle stays opaque to callers): keyd lets only that uid and root
//! use it. Key and key-pair handles carry no uid: the `[[principal]]` key-id patterns decide who
//! may use them.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::KeyError;

/// The id of the symmetric key that signs handles (reserved: the API refuses it).
pub const HANDLE_VALIDATION_KEY: &str = "handle-validation-key";

/// Random bytes in every handle, so handles of the same key differ.
const NONCE_LEN: usize = 64;

/// What a handle refers to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRef {
    /// A key pair, by id.
    KeyPair(String),
    /// A symmetric key, by id.
    Key(String),
    /// `HMAC-SHA256(base key, data)`: the base key's handle and the derivation data.
    Derived(String, Vec<u8>),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HandleData {
    key_id: KeyRef,
    nonce: String,
    /// The uid the handle was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
}

/// Issues and verifies handles with the handle-validation key.
pub struct HandleKey(hmac::Key);

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(<redacted>)")
    }
}

fn invalid() -> KeyError {
    KeyError::InvalidParameter {
        name: "handle",
        message: "invalid handle".into(),
    }
}

impl HandleKey {
    pub fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// A fresh handle for `key`, bound to no uid.
    pub fn issue(&self, key: &KeyRef) -> Result<String, KeyError> {
        self.issue_to(key, None)
    }

    /// A fresh handle for `key`, bound to `uid` when given.
    pub fn issue_to(&self, key: &KeyRef, uid: Option<u32>) -> Result<String, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| KeyError::Crypto("random source failed".into()))?;
        let data = HandleData {
            key_id: key.clone(),
            nonce: STANDARD.encode(nonce),
            uid,
        };
        let sr = serde_json::to_vec(&data).map_err(|e| KeyError::Crypto(e.to_string()))?;
        let sig = hmac::sign(&self.0, &sr);
        Ok(format!(
            "sr={}&sig={}",
            STANDARD.encode(&sr),
            STANDARD.encode(sig.as_ref())
        ))
    }

    /// What `handle` refers to, if keyd issued it (the HMAC is compared in constant time).
    pub fn verify(&self, handle: &str) -> Result<KeyRef, KeyError> {
        self.verify_bound(handle).map(|(key, _)| key)
    }

    /// What `handle` refers to and the uid it was issued to, if keyd issued it.
    pub fn verify_bound(&self, handle: &str) -> Result<(KeyRef, Option<u32>), KeyError> {
        let (sr, sig) = handle
            .strip_prefix("sr=")
            .and_then(|rest| rest.split_once("&sig="))
            .ok_or_else(invalid)?;
        let sr = STANDARD.decode(sr).map_err(|_| invalid())?;
        let sig = STANDARD.decode(sig).map_err(|_| invalid())?;
        hmac::verify(&self.0, &sr, &sig).map_err(|_| invalid())?;
        let data: HandleData = serde_json::from_slice(&sr).map_err(|_| invalid())?;
        Ok((data.key_id, data.uid))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn is_invalid(r: Result<KeyRef, KeyError>) -> bool {
        matches!(r, Err(KeyError::InvalidParameter { name: "handle", .. }))
    }

    fn parts(h: &str) -> (Vec<u8>, Vec<u8>) {
        let (sr, sig) = h.strip_prefix("sr=").unwrap().split_once("&sig=").unwrap();
        (STANDARD.decode(sr).unwrap(), STANDARD.decode(sig).unwrap())
    }

    fn join(sr: &[u8], sig: &[u8]) -> String {
        format!("sr={}&sig={}", STANDARD.encode(sr), STANDARD.encode(sig))
    }

    #[test]
    fn handles_round_trip() {
        let k = HandleKey::new(b"0123456789abcdef0123456789abcdef");
        for r in [
            KeyRef::Key("device-id".into()),
            KeyRef::KeyPair("ca".into()),
            KeyRef::Derived("sr=x&sig=y".into(), vec![0, 1, 255]),
        ] {
            let h = k.issue(&r).unwrap();
            assert_eq!(k.verify(&h).unwrap(), r);
            assert_ne!(k.issue(&r).unwrap(), h, "a fresh nonce per handle");
        }
    }

    #[test]
    fn handle_json_has_the_aziot_shape() {
        let k = HandleKey::new(b"k");
        let h = k
            .issue(&KeyRef::Derived("base".into(), vec![1, 2]))
            .unwrap();
        let (sr, _) = parts(&h);
        let v: serde_json::Value = serde_json::from_slice(&sr).unwrap();
        assert_eq!(
            v["key_id"],
            serde_json::json!({"Derived": ["base", [1, 2]]})
        );
        let nonce = STANDARD.decode(v["nonce"].as_str().unwrap()).unwrap();
        assert_eq!(nonce.len(), NONCE_LEN);
        let h = k.issue(&KeyRef::Key("id".into())).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&parts(&h).0).unwrap();
        assert_eq!(v["key_id"], serde_json::json!({"Key": "id"}));
    }

    #[test]
    fn a_bound_handle_names_its_uid_and_cannot_be_rebound() {
        let k = HandleKey::new(b"0123456789abcdef0123456789abcdef");
        let r = KeyRef::Derived("base".into(), vec![1]);
        let h = k.issue_to(&r, Some(1001)).unwrap();
        assert_eq!(k.verify_bound(&h).unwrap(), (r.clone(), Some(1001)));
        assert_eq!(k.verify_bound(&k.issue(&r).unwrap()).unwrap().1, None);
        let (sr, sig) = parts(&h);
        let mut v: serde_json::Value = serde_json::from_slice(&sr).unwrap();
        assert_eq!(v["uid"], 1001);
        v["uid"] = serde_json::json!(4242);
        assert!(is_invalid(k.verify(&join(v.to_string().as_bytes(), &sig))));
    }

    #[test]
    fn tampered_handles_are_invalid() {
        let k = HandleKey::new(b"0123456789abcdef0123456789abcdef");
        let h = k.issue(&KeyRef::Key("mine".into())).unwrap();
        let other = k.issue(&KeyRef::Key("yours".into())).unwrap();
        let (sr, sig) = parts(&h);
        let (other_sr, other_sig) = parts(&other);
        for i in [0, sr.len() / 2, sr.len() - 1] {
            let mut bad = sr.clone();
            bad[i] ^= 1;
            assert!(is_invalid(k.verify(&join(&bad, &sig))), "sr byte {i}");
        }
        for i in [0, sig.len() - 1] {
            let mut bad = sig.clone();
            bad[i] ^= 0x80;
            assert!(is_invalid(k.verify(&join(&sr, &bad))), "sig byte {i}");
        }
        assert!(is_invalid(k.verify(&join(&sr, &other_sig))));
        assert!(is_invalid(k.verify(&join(&other_sr, &sig))));
        let forged = br#"{"key_id":{"Key":"yours"},"nonce":""}"#;
        assert!(is_invalid(k.verify(&join(forged, &sig))));
        for garbage in [
            "",
            "sr=",
            "sr=&sig=",
            "garbage",
            "sr=!!&sig=!!",
            &sr.len().to_string(),
        ] {
            assert!(is_invalid(k.verify(garbage)), "{garbage:?}");
        }
        let other_key = HandleKey::new(b"another key");
        assert!(is_invalid(other_key.verify(&h)));
        assert_eq!(k.verify(&h).unwrap(), KeyRef::Key("mine".into()));
    }
}
