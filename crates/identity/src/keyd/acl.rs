//! Who may name which key ids: `[[principal]] uid = U, keys = ["id", "pattern*"]`.
//!
//! Root (uid 0) may do everything. Other uids may create, import, load by id and move only the ids
//! one of their patterns matches (`*` any run of characters, `?` one character). Operations on a
//! handle are not checked: the handle is the capability.

use std::collections::HashMap;

use crate::config::daemons::KeydPrincipal;

/// The merged `[[principal]]` entries: uid → key-id patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    patterns: HashMap<u32, Vec<String>>,
}

impl Acl {
    /// Merges entries of the same uid.
    pub fn new(principals: &[KeydPrincipal]) -> Self {
        let mut patterns: HashMap<u32, Vec<String>> = HashMap::new();
        for p in principals {
            patterns
                .entry(p.uid)
                .or_default()
                .extend(p.keys.iter().cloned());
        }
        Self { patterns }
    }

    /// Whether `uid` may name key `id`.
    pub fn allows(&self, uid: u32, id: &str) -> bool {
        uid == 0
            || self
                .patterns
                .get(&uid)
                .is_some_and(|ps| ps.iter().any(|p| glob_match(p, id)))
    }
}

/// Matches `text` against `pattern` with `*` (any run, possibly empty) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and the text position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("abcd", "abc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("module-*", "module-a"));
        assert!(glob_match("module-*", "module-"));
        assert!(!glob_match("module-*", "modul"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*-key-*", "device-key-1"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
        assert!(glob_match("**?", "x"));
        assert!(!glob_match("**?", ""));
        assert!(glob_match("é?", "éü"));
    }

    #[test]
    fn principals_merge_and_root_is_allowed() {
        let acl = Acl::new(&[
            KeydPrincipal {
                uid: 1001,
                keys: vec!["device-id".into()],
            },
            KeydPrincipal {
                uid: 1001,
                keys: vec!["module-*".into()],
            },
        ]);
        assert!(acl.allows(1001, "device-id"));
        assert!(acl.allows(1001, "module-x"));
        assert!(!acl.allows(1001, "other"));
        assert!(!acl.allows(1002, "device-id"));
        assert!(acl.allows(0, "anything"));
    }
}
