//! Who may change which certificates: `[[principal]] uid, certs = ["id", "glob*"]`.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::daemons::CertdPrincipal;

/// What a caller wants to do with a cert id (for authorization and its log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `POST /certificates`: issue from a CSR.
    Create,
    /// `PUT /certificates/{id}`.
    Import,
    /// `DELETE /certificates/{id}`.
    Delete,
    /// Name this cert (and its key pair) as the issuer of a new certificate.
    UseAsIssuer,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create | Self::Import | Self::Delete => "modify",
            Self::UseAsIssuer => "issue certificates with",
        })
    }
}

/// Cert-id patterns per uid (several `[[principal]]` entries of one uid add up).
#[derive(Debug, Default)]
pub(super) struct Acl(BTreeMap<u32, Vec<String>>);

impl Acl {
    pub(super) fn new(principals: &[CertdPrincipal]) -> Self {
        let mut map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for p in principals {
            map.entry(p.uid)
                .or_default()
                .extend(p.certs.iter().cloned());
        }
        Self(map)
    }

    /// uid 0 may do everything; others need a pattern matching `id`.
    pub(super) fn allows(&self, uid: u32, id: &str) -> bool {
        uid == 0
            || self
                .0
                .get(&uid)
                .is_some_and(|patterns| patterns.iter().any(|p| glob_match(p, id)))
    }
}

/// The same globs as keyd's principals.
pub(super) use crate::keyd::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t) in [
            ("*", ""),
            ("*", "anything"),
            ("module-*", "module-a"),
            ("module-*", "module-"),
            ("a?c", "abc"),
            ("*-ca", "edge-ca"),
            ("a*b*c", "aXXbYYc"),
            ("a*b*c", "abbbc"),
            ("exact", "exact"),
        ] {
            assert!(glob_match(p, t), "{p} ~ {t}");
        }
        for (p, t) in [
            ("module-*", "modul"),
            ("a?c", "ac"),
            ("a?c", "abbc"),
            ("*-ca", "edge-cab"),
            ("exact", "exactly"),
            ("a*b*c", "aXXbYY"),
        ] {
            assert!(!glob_match(p, t), "{p} !~ {t}");
        }
    }

    #[test]
    fn root_may_do_everything_others_by_pattern() {
        let acl = Acl::new(&[
            CertdPrincipal {
                uid: 1000,
                certs: vec!["device-id".into()],
            },
            CertdPrincipal {
                uid: 1000,
                certs: vec!["module-*".into()],
            },
        ]);
        assert!(acl.allows(0, "whatever"));
        assert!(acl.allows(1000, "device-id") && acl.allows(1000, "module-x"));
        assert!(!acl.allows(1000, "local-ca"));
        assert!(!acl.allows(1001, "device-id"));
        assert_eq!(Operation::Delete.to_string(), "modify");
    }
}
