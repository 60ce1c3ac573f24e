//! Choosing the hub for a device: `hashed` (weighted, deterministic in the registration id),
//! `geoLatency` (every linked hub is equally near here, so hashed), `static` (the enrollment's hub).

/// A candidate hub and its weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub hostname: String,
    pub weight: u32,
}

/// Why no hub could be chosen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("no linked hub is allowed by the enrollment (iotHubs = {0:?})")]
    NoCandidate(Vec<String>),
    #[error("static allocation names {0:?}, which is not a linked hub")]
    StaticNotLinked(String),
    #[error("allocation policy {0:?} is not supported (hashed, geoLatency, static)")]
    Unsupported(String),
}

/// The linked hubs an enrollment allows (`iotHubs`, or all when empty), in linked order.
pub fn candidates(linked: &[Candidate], allowed: &[String]) -> Vec<Candidate> {
    linked
        .iter()
        .filter(|c| {
            allowed.is_empty() || allowed.iter().any(|a| a.eq_ignore_ascii_case(&c.hostname))
        })
        .cloned()
        .collect()
}

/// Picks the hub for `registration_id`.
pub fn choose(
    policy: &str,
    candidates: &[Candidate],
    static_hub: Option<&str>,
    registration_id: &str,
) -> Result<String, AllocationError> {
    if candidates.is_empty() {
        return Err(AllocationError::NoCandidate(Vec::new()));
    }
    match policy {
        "static" => {
            let wanted = static_hub.or_else(|| candidates.first().map(|c| c.hostname.as_str()));
            let wanted = wanted.unwrap_or_default();
            candidates
                .iter()
                .find(|c| c.hostname.eq_ignore_ascii_case(wanted))
                .map(|c| c.hostname.clone())
                .ok_or_else(|| AllocationError::StaticNotLinked(wanted.to_owned()))
        }
        "hashed" | "geoLatency" => Ok(hashed(candidates, registration_id)),
        other => Err(AllocationError::Unsupported(other.to_owned())),
    }
}

/// Weighted choice by a stable hash (FNV-1a of the lowercase registration id).
fn hashed(candidates: &[Candidate], registration_id: &str) -> String {
    let total: u64 = candidates.iter().map(|c| u64::from(c.weight)).sum();
    let fallback = || {
        candidates
            .first()
            .map(|c| c.hostname.clone())
            .unwrap_or_default()
    };
    if total == 0 {
        return fallback();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in registration_id.to_lowercase().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut slot = h % total;
    for c in candidates {
        let w = u64::from(c.weight);
        if slot < w {
            return c.hostname.clone();
        }
        slot -= w;
    }
    fallback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubs(spec: &[(&str, u32)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(h, w)| Candidate {
                hostname: (*h).into(),
                weight: *w,
            })
            .collect()
    }

    #[test]
    fn hashed_is_stable_and_weighted() {
        let c = hubs(&[("a", 1), ("b", 3)]);
        let first = choose("hashed", &c, None, "Dev-1").unwrap();
        assert_eq!(
            choose("hashed", &c, None, "dev-1").unwrap(),
            first,
            "case-insensitive, stable"
        );
        let mut counts = std::collections::HashMap::new();
        for i in 0..4000 {
            *counts
                .entry(choose("geoLatency", &c, None, &format!("d{i}")).unwrap())
                .or_insert(0) += 1;
        }
        let b = counts["b"] as f64 / 4000.0;
        assert!(
            (0.68..0.82).contains(&b),
            "weight 3 of 4 gets about 75 %: {b}"
        );
        let zero = hubs(&[("a", 0), ("b", 1)]);
        assert!((0..100).all(|i| choose("hashed", &zero, None, &format!("d{i}")).unwrap() == "b"));
    }

    #[test]
    fn static_and_candidates() {
        let linked = hubs(&[("a", 1), ("b", 1)]);
        assert_eq!(choose("static", &linked, Some("B"), "x").unwrap(), "b");
        assert!(choose("static", &linked, Some("c"), "x").is_err());
        assert_eq!(candidates(&linked, &["b".into()]), hubs(&[("b", 1)]));
        assert_eq!(candidates(&linked, &[]).len(), 2);
        assert!(choose("hashed", &candidates(&linked, &["z".into()]), None, "x").is_err());
        assert!(choose("custom", &linked, None, "x").is_err());
    }
}
