//! Chain validation: path building from a leaf through given intermediates to a trust anchor.
//!
//! ```text
//!  leaf ──signed by──► intermediate(s) ──signed by──► trust anchor
//!   │ time, EKU/KU,      │ time, CA:TRUE, keyCertSign,   │ time, CA:TRUE,
//!   │ critical exts      │ pathLen, EKU, critical exts   │ pathLen
//! ```
//!
//! Each step checks the signature with aws-lc-rs and the certificate's constraints; when several
//! candidate issuers share a name, every candidate is tried and the most informative failure is
//! reported, naming the certificate. Work is bounded by a depth limit and a signature budget.
//!
//! With [`ValidatorOptions::cache_capacity`] > 0 the validator remembers intermediates it has
//! already chained to an anchor (per purpose, with the validity window of that upper path), so a
//! new leaf under a known intermediate costs one signature check instead of two.

mod error;
mod facts;
mod sig;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

pub use error::{ChainError, Reason};
use facts::Facts;
use sig::IssuerKey;
pub(crate) use sig::ec_curve_oid;

use crate::cert::Certificate;

/// What the leaf certificate will be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Purpose {
    /// Any purpose: no EKU or keyUsage requirement on the leaf.
    #[default]
    Any,
    /// TLS client authentication (devices): EKU clientAuth when an EKU is present.
    ClientAuth,
    /// TLS server authentication (hubs, gateways): EKU serverAuth when an EKU is present.
    ServerAuth,
}

impl Purpose {
    fn slot(self) -> usize {
        match self {
            Self::Any => 0,
            Self::ClientAuth => 1,
            Self::ServerAuth => 2,
        }
    }
}

/// Limits and the intermediate cache. Every limit a peer can push against is named here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatorOptions {
    /// Longest accepted path, counting the leaf and the anchor.
    pub max_depth: usize,
    /// Most signature verifications one validation may perform across all candidate paths.
    pub max_signature_checks: usize,
    /// Intermediates remembered as already validated (0 disables the cache).
    pub cache_capacity: usize,
}

impl Default for ValidatorOptions {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_signature_checks: 64,
            cache_capacity: 0,
        }
    }
}

/// A validated path: the leaf first, the trust anchor last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPath {
    /// The certificates of the path, leaf first, anchor last.
    pub certs: Vec<Certificate>,
}

impl VerifiedPath {
    /// The trust anchor the path ends in.
    pub fn anchor(&self) -> &Certificate {
        // Invariant: a path always holds at least the anchor.
        self.certs.last().expect("a verified path is never empty")
    }
}

struct Anchor {
    cert: Certificate,
    facts: Facts,
    key: IssuerKey,
}

/// An intermediate already chained to an anchor for one purpose.
struct Cached {
    /// The intermediate's DER: a hit needs an exact match, the map key is only its tail.
    der: Vec<u8>,
    subject_raw: Vec<u8>,
    ski: Option<Vec<u8>>,
    key: IssuerKey,
    /// Validity window of the intermediate and everything above it (unix seconds).
    window: (i64, i64),
    /// The intermediate and the rest of its path up to the anchor.
    upper: Vec<Certificate>,
}

type CacheSlots = [Option<Arc<Cached>>; 3];

/// Cache key: the last 32 bytes of the DER, which lie in the signature, so they differ between
/// certificates without hashing the whole encoding. Hits are confirmed against the full DER.
type CacheKey = [u8; 32];

fn cache_key(der: &[u8]) -> CacheKey {
    let mut key = [0u8; 32];
    let n = der.len().min(32);
    key[32 - n..].copy_from_slice(&der[der.len() - n..]);
    key
}

/// Validates chains against a fixed set of trust anchors. Cheap to share across threads.
pub struct ChainValidator {
    anchors: Vec<Anchor>,
    opts: ValidatorOptions,
    cache: RwLock<HashMap<CacheKey, CacheSlots>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Intermediate-cache counters, for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Validations answered from the cache (one signature check).
    pub hits: u64,
    /// Validations that had to build the path.
    pub misses: u64,
    /// Intermediates currently remembered.
    pub entries: usize,
}

impl std::fmt::Debug for ChainValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainValidator")
            .field("anchors", &self.anchors.len())
            .field("opts", &self.opts)
            .finish()
    }
}

impl ChainValidator {
    /// A validator with default options (no cache).
    pub fn new(anchors: impl IntoIterator<Item = Certificate>) -> Result<Self, ChainError> {
        Self::with_options(anchors, ValidatorOptions::default())
    }

    /// A validator with explicit limits and cache size.
    pub fn with_options(
        anchors: impl IntoIterator<Item = Certificate>,
        opts: ValidatorOptions,
    ) -> Result<Self, ChainError> {
        let anchors = anchors
            .into_iter()
            .map(|cert| {
                let parsed = cert.parsed();
                let fail = |reason| ChainError {
                    index: 0,
                    subject: cert.subject(),
                    reason,
                };
                let facts = Facts::read(&parsed).map_err(fail)?;
                let key = IssuerKey::from_spki(parsed.public_key(), true).map_err(fail)?;
                drop(parsed);
                Ok(Anchor { cert, facts, key })
            })
            .collect::<Result<Vec<_>, ChainError>>()?;
        Ok(Self {
            anchors,
            opts,
            cache: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Cache counters (all zero when the cache is disabled).
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.cache.read().map_or(0, |c| c.len()),
        }
    }

    /// The trust anchors.
    pub fn anchors(&self) -> impl Iterator<Item = &Certificate> {
        self.anchors.iter().map(|a| &a.cert)
    }

    /// Validates `leaf` at time `at` for `purpose`, building a path through `intermediates`.
    pub fn verify(
        &self,
        leaf: &Certificate,
        intermediates: &[Certificate],
        at: OffsetDateTime,
        purpose: Purpose,
    ) -> Result<VerifiedPath, ChainError> {
        let ders: Vec<&[u8]> = intermediates.iter().map(Certificate::der).collect();
        self.verify_der(leaf.der(), &ders, at, purpose)
    }

    /// Like [`Self::verify`] over raw DER, as a TLS stack hands certificates over.
    pub fn verify_der(
        &self,
        leaf: &[u8],
        intermediates: &[&[u8]],
        at: OffsetDateTime,
        purpose: Purpose,
    ) -> Result<VerifiedPath, ChainError> {
        let at = at.unix_timestamp();
        let leaf_node = Node::parse(leaf, 0)?;
        leaf_node
            .facts
            .check_critical()
            .map_err(|r| leaf_node.fail(0, r))?;
        leaf_node
            .facts
            .check_eku(purpose)
            .map_err(|r| leaf_node.fail(0, r))?;
        leaf_node
            .facts
            .check_leaf_key_usage(purpose)
            .map_err(|r| leaf_node.fail(0, r))?;
        leaf_node
            .facts
            .check_time(at)
            .map_err(|r| leaf_node.fail(0, r))?;
        if let Some(anchor) = self.anchors.iter().find(|a| a.cert.der() == leaf) {
            return Ok(VerifiedPath {
                certs: vec![anchor.cert.clone()],
            });
        }
        let mut budget = self.opts.max_signature_checks;
        if let Some(path) = self.try_cache(&leaf_node, intermediates, at, purpose, &mut budget) {
            return Ok(path);
        }
        let mut search = Search {
            v: self,
            nodes: vec![leaf_node],
            at,
            purpose,
            budget,
            best: None,
        };
        for (i, der) in intermediates.iter().enumerate() {
            search.nodes.push(Node::parse(der, i + 1)?);
        }
        let mut path = vec![0];
        match search.extend(&mut path) {
            Some(anchor) => Ok(self.finish(&search.nodes, &path, anchor, purpose)),
            None => Err(search
                .best
                .unwrap_or_else(|| search.nodes[0].fail(0, Reason::UnknownIssuer))),
        }
    }

    /// Fast path: the leaf's issuer is an intermediate already validated for this purpose.
    fn try_cache(
        &self,
        leaf: &Node<'_>,
        intermediates: &[&[u8]],
        at: i64,
        purpose: Purpose,
        budget: &mut usize,
    ) -> Option<VerifiedPath> {
        if self.opts.cache_capacity == 0 {
            return None;
        }
        let cache = self.cache.read().ok()?;
        for der in intermediates {
            let key: CacheKey = cache_key(der);
            let Some(entry) = cache
                .get(&key)
                .and_then(|slots| slots[purpose.slot()].clone())
            else {
                continue;
            };
            let fits = entry.der == *der
                && leaf
                    .facts
                    .issued_by(&entry.subject_raw, entry.ski.as_deref())
                && (entry.window.0..=entry.window.1).contains(&at);
            if fits && *budget > 0 {
                *budget -= 1;
                if entry.key.verify(&leaf.x).is_ok() {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    let mut certs = vec![Certificate::from_parsed_der(leaf.der)];
                    certs.extend(entry.upper.iter().cloned());
                    return Some(VerifiedPath { certs });
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn finish(
        &self,
        nodes: &[Node<'_>],
        path: &[usize],
        anchor: usize,
        purpose: Purpose,
    ) -> VerifiedPath {
        let mut certs: Vec<Certificate> = path
            .iter()
            .map(|&i| Certificate::from_parsed_der(nodes[i].der))
            .collect();
        let anchor = &self.anchors[anchor];
        certs.push(anchor.cert.clone());
        if self.opts.cache_capacity > 0 && path.len() >= 2 {
            let windows = path[1..]
                .iter()
                .map(|&i| (nodes[i].facts.not_before, nodes[i].facts.not_after))
                .chain(std::iter::once((
                    anchor.facts.not_before,
                    anchor.facts.not_after,
                )));
            let window = windows.fold((i64::MIN, i64::MAX), |w, (a, b)| (w.0.max(a), w.1.min(b)));
            let inter = &nodes[path[1]];
            if let Ok(key) = IssuerKey::from_spki(inter.x.public_key(), true) {
                let entry = Cached {
                    der: inter.der.to_vec(),
                    subject_raw: inter.facts.subject_raw.clone(),
                    ski: inter.facts.ski.clone(),
                    key,
                    window,
                    upper: certs[1..].to_vec(),
                };
                self.remember(inter.der, purpose, entry);
            }
        }
        VerifiedPath { certs }
    }

    fn remember(&self, der: &[u8], purpose: Purpose, entry: Cached) {
        let Ok(mut cache) = self.cache.write() else {
            return;
        };
        let key = cache_key(der);
        if cache.len() >= self.opts.cache_capacity && !cache.contains_key(&key) {
            cache.clear();
        }
        cache.entry(key).or_default()[purpose.slot()] = Some(Arc::new(entry));
    }
}

/// One parsed certificate of the candidate pool.
struct Node<'a> {
    der: &'a [u8],
    x: X509Certificate<'a>,
    facts: Facts,
}

impl<'a> Node<'a> {
    fn parse(der: &'a [u8], index: usize) -> Result<Self, ChainError> {
        let malformed = |e: String| ChainError {
            index,
            subject: "<unparsable>".into(),
            reason: Reason::Malformed(e),
        };
        let (rest, x) = X509Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes".into()));
        }
        if !sig::algorithms_agree(der) {
            return Err(malformed(
                "the outer signatureAlgorithm differs from the one in tbsCertificate".into(),
            ));
        }
        let facts = Facts::read(&x).map_err(|r| ChainError {
            index,
            subject: x.subject().to_string(),
            reason: r,
        })?;
        Ok(Self { der, x, facts })
    }

    fn fail(&self, index: usize, reason: Reason) -> ChainError {
        ChainError {
            index,
            subject: self.x.subject().to_string(),
            reason,
        }
    }
}

/// Depth-first path search over the pool, keeping the most informative failure.
struct Search<'v, 'a> {
    v: &'v ChainValidator,
    nodes: Vec<Node<'a>>,
    at: i64,
    purpose: Purpose,
    budget: usize,
    best: Option<ChainError>,
}

impl Search<'_, '_> {
    fn record(&mut self, e: ChainError) {
        if self.best.as_ref().is_none_or(|b| e.rank() > b.rank()) {
            self.best = Some(e);
        }
    }

    /// Extends `path` (node indices, leaf first) until it reaches an anchor; returns its index.
    fn extend(&mut self, path: &mut Vec<usize>) -> Option<usize> {
        let child = *path.last()?;
        let pos = path.len();
        if pos >= self.v.opts.max_depth {
            let e = self.nodes[child].fail(pos - 1, Reason::DepthExceeded(self.v.opts.max_depth));
            self.record(e);
            return None;
        }
        let mut matched = false;
        for (ai, anchor) in self.v.anchors.iter().enumerate() {
            let child_facts = &self.nodes[child].facts;
            if !child_facts.issued_by(&anchor.facts.subject_raw, anchor.facts.ski.as_deref()) {
                continue;
            }
            matched = true;
            let checked = self.check(child, pos, &anchor.facts, &anchor.key, true);
            match checked {
                Ok(()) => return Some(ai),
                Err((index, reason)) => {
                    let subject = if index == pos {
                        anchor.cert.subject()
                    } else {
                        self.nodes[child].x.subject().to_string()
                    };
                    self.record(ChainError {
                        index,
                        subject,
                        reason,
                    });
                }
            }
        }
        for cand in 1..self.nodes.len() {
            if path.contains(&cand) {
                continue;
            }
            let (cf, child_facts) = (&self.nodes[cand].facts, &self.nodes[child].facts);
            if !child_facts.issued_by(&cf.subject_raw, cf.ski.as_deref()) {
                continue;
            }
            matched = true;
            let key = match IssuerKey::from_spki(self.nodes[cand].x.public_key(), false) {
                Ok(k) => k,
                Err(r) => {
                    let e = self.nodes[cand].fail(pos, r);
                    self.record(e);
                    continue;
                }
            };
            let facts = self.nodes[cand].facts.clone();
            if let Err((index, reason)) = self.check(child, pos, &facts, &key, false) {
                let who = if index == pos { cand } else { child };
                let e = self.nodes[who].fail(index, reason);
                self.record(e);
                continue;
            }
            path.push(cand);
            if let Some(anchor) = self.extend(path) {
                return Some(anchor);
            }
            path.pop();
        }
        if !matched {
            let node = &self.nodes[child];
            let reason = if node.facts.subject_raw == node.facts.issuer_raw {
                Reason::SelfSignedNotTrusted
            } else {
                Reason::UnknownIssuer
            };
            let e = node.fail(pos - 1, reason);
            self.record(e);
        }
        None
    }

    /// Checks a candidate issuer at path position `pos` for the certificate `child`.
    /// Errors carry the position they belong to (`pos` for the issuer, `pos - 1` for the child).
    fn check(
        &mut self,
        child: usize,
        pos: usize,
        issuer: &Facts,
        key: &IssuerKey,
        is_anchor: bool,
    ) -> Result<(), (usize, Reason)> {
        issuer.check_time(self.at).map_err(|r| (pos, r))?;
        issuer
            .check_as_issuer(pos - 1, is_anchor, self.purpose)
            .map_err(|r| (pos, r))?;
        if self.budget == 0 {
            return Err((pos - 1, Reason::BudgetExceeded));
        }
        self.budget -= 1;
        key.verify(&self.nodes[child].x).map_err(|r| (pos - 1, r))
    }
}
