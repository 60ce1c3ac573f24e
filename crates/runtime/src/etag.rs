//! Optimistic concurrency as every service API does it: opaque random etags on stored records
//! and the `If-Match` rule for writes (the hub's registry and CA certificates, the provisioning
//! service's enrollments).

use base64::Engine as _;

use crate::error::ApiError;

/// How a write treats an existing record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: create only; an existing record is a conflict.
    Absent,
    /// `*`: create or replace.
    Any,
    /// A quoted etag: replace only that version.
    Etag(String),
}

impl IfMatch {
    /// From an `If-Match` header value (quotes optional: the Node service SDK quotes `*` too).
    pub fn from_header(v: Option<&str>) -> Self {
        match v.map(str::trim) {
            None | Some("") => Self::Absent,
            Some("*" | "\"*\"") => Self::Any,
            Some(e) => Self::Etag(e.trim_matches('"').to_owned()),
        }
    }

    /// The rule for a create-or-replace: no header on an existing record is `conflict`, an etag
    /// must match the existing one.
    pub fn check_write(
        &self,
        existing: Option<&str>,
        what: &str,
        conflict: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        if let (Self::Absent, Some(_)) = (self, existing) {
            return Err(conflict());
        }
        self.check(existing, what)
    }

    /// An etag, when given, must match the existing one (`*` and no header match anything).
    pub fn check(&self, existing: Option<&str>, what: &str) -> Result<(), ApiError> {
        match (self, existing) {
            (Self::Etag(want), Some(have)) if want != have => Err(ApiError::precondition(format!(
                "{what} has etag {have}, not {want}"
            ))),
            (Self::Etag(_), None) => Err(ApiError::precondition(format!("{what} does not exist"))),
            _ => Ok(()),
        }
    }
}

/// Random bytes for identifiers (etags, generation ids). If the system RNG ever failed these would
/// repeat, which breaks no secret; keys are made by a function that fails instead.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if pki::random_fill(&mut b).is_err() {
        tracing::error!("The system random source failed while making an identifier");
    }
    b
}

/// A fresh opaque etag.
pub fn new_etag() -> String {
    base64::engine::general_purpose::STANDARD.encode(random_bytes::<9>())
}

#[cfg(test)]
mod tests {
    use super::IfMatch;

    #[test]
    fn if_match_wildcard_quoted_or_not() {
        assert_eq!(IfMatch::from_header(None), IfMatch::Absent);
        assert_eq!(IfMatch::from_header(Some("*")), IfMatch::Any);
        assert_eq!(IfMatch::from_header(Some("\"*\"")), IfMatch::Any);
        assert_eq!(
            IfMatch::from_header(Some("\"AAE=\"")),
            IfMatch::Etag("AAE=".into())
        );
    }
}
