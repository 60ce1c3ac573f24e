//! The gateway's TLS server certificate in identity mode: issued by certd from the edge CA,
//! presented with the full chain, and renewed (new handshakes get the new certificate, open
//! connections keep theirs) once two thirds of its lifetime have passed.
//!
//! ```text
//!  [edge_ca] cert/pk ──config apply──► certd "aziot-edged-ca" + keyd key pair "aziot-edged-ca"
//!  no [edge_ca] ──► quickstart CA: key pair made in keyd, self-signed there, imported into certd
//!  server key (here) ─CSR: hostname + IPs─► certd POST /certificates (issuer aziot-edged-ca)
//!        ─► leaf + CA chain ─► data/tls/server-chain.pem, server.key.pem (0600) ─► ReloadableCert
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrohub_runtime::time::SharedClock;
use hyper::Method;
use identity::client::{UdsClient, UdsError};
use identity::wire::certd::{CreateCertRequest, ImportCertRequest, IssuerRef, PemResponse};
use identity::wire::keyd::KeyHandleResponse;
use pki::Certificate;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::EdgeError;
use crate::keyd_signer::{self, KeydKeyPair};

/// certd's and keyd's id of the edge CA (as `ferrohub config apply` names it).
pub const EDGE_CA_ID: &str = identity::config::apply::EDGE_CA;
/// certd's id of the gateway's server certificate (aziot-edged's name for `$edgeHub`'s).
pub const SERVER_CERT_ID: &str = "aziot-edged/module/$edgeHub:server";
/// A quickstart edge CA's lifetime when `auto_generated_edge_ca_expiry_days` does not say.
pub const QUICKSTART_CA_DAYS: u32 = 90;

const API: &str = "api-version=2020-09-01";

/// Where the edge CA comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeCaSource {
    /// `[edge_ca] cert, pk`: preloaded into certd and keyd by `config apply`.
    Preloaded,
    /// No `[edge_ca]`, or `auto_generated_edge_ca_expiry_days`: made here, renewed here.
    Quickstart { expiry_days: u32 },
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct CertPlan {
    /// The super-config's `hostname`: the certificate's CN and first SAN.
    pub hostname: String,
    /// More SANs (`--ip`).
    pub ips: Vec<IpAddr>,
    pub edge_ca: EdgeCaSource,
    /// Where the chain and key files go (`{data_dir}/tls`).
    pub dir: PathBuf,
}

/// When a certificate valid from `not_before` to `not_after` is renewed: after 2/3 of it.
pub fn renewal_time(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    not_before + (not_after - not_before) * 2 / 3
}

fn certd_error(what: &str, e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Identity(format!("certd ({what}): {e}"))
}

/// Cert `id` from certd, `None` when certd has none by that id.
async fn get_chain(certd: &UdsClient, id: &str) -> Result<Option<Vec<Certificate>>, EdgeError> {
    let path = format!("/certificates/{}?{API}", iot_auth::percent_encode(id));
    let answer: Result<PemResponse, UdsError> = certd.get(&path).await;
    let v = match answer {
        Ok(v) => v,
        Err(UdsError::Status { .. }) => return Ok(None),
        Err(e) => return Err(certd_error(id, e)),
    };
    let chain = Certificate::chain_from_pem(&v.pem).map_err(|e| certd_error(id, e))?;
    Ok(Some(chain).filter(|c| !c.is_empty()))
}

/// The gateway's server certificate and its renewal.
pub struct ServerCerts {
    certd: UdsClient,
    keyd: UdsClient,
    plan: CertPlan,
    clock: SharedClock,
    tls: Arc<ferrohub_runtime::tls::ReloadableCert>,
    /// The chain in force, leaf first.
    chain: Mutex<Vec<Certificate>>,
    /// Renewals since start.
    pub renewals: AtomicU64,
    renewing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ServerCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCerts")
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl ServerCerts {
    /// Makes sure the edge CA exists, issues a server certificate and writes its files.
    pub async fn open(
        certd: UdsClient,
        keyd: UdsClient,
        plan: CertPlan,
        clock: SharedClock,
    ) -> Result<Arc<Self>, EdgeError> {
        let (ca_handle, _) = edge_ca(&certd, &keyd, &plan, clock.now()).await?;
        let (chain, key) = issue(&certd, &plan, &ca_handle).await?;
        let tls = ferrohub_runtime::tls::ReloadableCert::new(ders(&chain), key)?;
        let certs = Arc::new(Self {
            certd,
            keyd,
            plan,
            clock,
            tls,
            chain: Mutex::new(chain),
            renewals: AtomicU64::new(0),
            renewing: tokio::sync::Mutex::new(()),
        });
        certs.log("Gateway server certificate issued");
        Ok(certs)
    }

    /// What the gateway's TLS listener presents (see [`crate::Gateway::use_server_cert`]).
    pub fn tls(&self) -> Arc<ferrohub_runtime::tls::ReloadableCert> {
        self.tls.clone()
    }

    /// The chain in force, leaf first.
    pub fn chain(&self) -> Vec<Certificate> {
        self.chain.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The leaf's expiry.
    pub fn expiry(&self) -> Option<OffsetDateTime> {
        self.chain().first().map(Certificate::not_after)
    }

    /// When the leaf is due for renewal.
    pub fn renews_at(&self) -> Option<OffsetDateTime> {
        self.chain()
            .first()
            .map(|c| renewal_time(c.not_before(), c.not_after()))
    }

    pub fn chain_path(&self) -> PathBuf {
        self.plan.dir.join("server-chain.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.plan.dir.join("server.key.pem")
    }

    /// The quickstart edge CA's certificate (children trust it), when the CA is a quickstart one.
    pub fn quickstart_ca_path(&self) -> Option<PathBuf> {
        matches!(self.plan.edge_ca, EdgeCaSource::Quickstart { .. })
            .then(|| self.plan.dir.join("edge-ca.cert.pem"))
    }

    fn log(&self, what: &str) {
        let chain = self.chain();
        let Some(leaf) = chain.first() else {
            return;
        };
        info!(
            serial = %leaf.info().serial,
            subject_alt_names = ?leaf.info().subject_alt_names,
            issuer = %leaf.issuer(),
            chain = chain.len(),
            expires = %ferrohub_runtime::time::rfc3339(leaf.not_after()),
            renews_at = %ferrohub_runtime::time::rfc3339(renewal_time(leaf.not_before(), leaf.not_after())),
            file = %self.chain_path().display(),
            "{what}"
        );
    }

    /// Renews the certificate (and a quickstart CA) when due on the injected clock; returns
    /// whether the certificate was replaced.
    pub async fn renew_if_due(&self) -> Result<bool, EdgeError> {
        let _one_at_a_time = self.renewing.lock().await;
        let now = self.clock.now();
        let (handle, ca_renewed) = edge_ca(&self.certd, &self.keyd, &self.plan, now).await?;
        let due = self.renews_at().is_none_or(|at| now >= at);
        if !(due || ca_renewed) {
            return Ok(false);
        }
        self.replace(&handle).await?;
        Ok(true)
    }

    /// Issues a new certificate now and swaps it in.
    pub async fn renew(&self) -> Result<(), EdgeError> {
        let _one_at_a_time = self.renewing.lock().await;
        let (handle, _) = edge_ca(&self.certd, &self.keyd, &self.plan, self.clock.now()).await?;
        self.replace(&handle).await
    }

    async fn replace(&self, ca_handle: &str) -> Result<(), EdgeError> {
        let (chain, key) = issue(&self.certd, &self.plan, ca_handle).await?;
        self.tls.replace(ders(&chain), key)?;
        if let Ok(mut c) = self.chain.lock() {
            *c = chain;
        }
        self.renewals.fetch_add(1, Ordering::Relaxed);
        self.log("Gateway server certificate renewed; new connections get it, open ones stay");
        Ok(())
    }
}

/// Checks `certs` every `every` (the decision is made on the injected clock) until `shutdown`.
pub async fn renewal_loop(
    certs: Arc<ServerCerts>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = certs.renew_if_due().await {
            warn!(error = %e, "Gateway certificate renewal failed; the current one stays, retrying");
        }
    }
}

fn ders(chain: &[Certificate]) -> Vec<CertificateDer<'static>> {
    chain.iter().map(Certificate::to_rustls).collect()
}

/// The edge CA's keyd handle, making or renewing a quickstart CA when needed (then `true`).
async fn edge_ca(
    certd: &UdsClient,
    keyd: &UdsClient,
    plan: &CertPlan,
    now: OffsetDateTime,
) -> Result<(String, bool), EdgeError> {
    match plan.edge_ca {
        EdgeCaSource::Preloaded => {
            let missing = || {
                EdgeError::Identity(format!(
                    "the edge CA ({EDGE_CA_ID}) is not in certd and keyd: put [edge_ca] cert and pk \
                     in config.toml, run `ferrohub config apply` and restart `ferrohub identity run`"
                ))
            };
            get_chain(certd, EDGE_CA_ID).await?.ok_or_else(missing)?;
            let path = format!("/keypair/{}?{API}", iot_auth::percent_encode(EDGE_CA_ID));
            let v: KeyHandleResponse = keyd.get(&path).await.map_err(|_| missing())?;
            Ok((v.key_handle, false))
        }
        EdgeCaSource::Quickstart { expiry_days } => {
            let key = KeydKeyPair::create_or_load(keyd, EDGE_CA_ID).await?;
            let current = get_chain(certd, EDGE_CA_ID).await?;
            let usable = current.as_deref().and_then(<[_]>::first).is_some_and(|ca| {
                ca.public_key_raw() == key.public_point()
                    && now < renewal_time(ca.not_before(), ca.not_after())
            });
            let handle = key.handle().to_owned();
            let ca = if usable {
                current.and_then(|c| c.into_iter().next())
            } else {
                let ca = quickstart_ca(certd, key, &plan.hostname, now, expiry_days).await?;
                info!(subject = %ca.subject(), expires = %ferrohub_runtime::time::rfc3339(ca.not_after()),
                      "Quickstart edge CA made in keyd and stored in certd (children must trust it)");
                Some(ca)
            };
            if let Some(ca) = &ca {
                write_public(&plan.dir.join("edge-ca.cert.pem"), &ca.to_pem())?;
            }
            Ok((handle, !usable))
        }
    }
}

/// A self-signed edge CA (pathLen 0) on keyd's key pair, imported into certd.
async fn quickstart_ca(
    certd: &UdsClient,
    key: KeydKeyPair,
    hostname: &str,
    now: OffsetDateTime,
    days: u32,
) -> Result<Certificate, EdgeError> {
    use rcgen::{BasicConstraints, DnType, IsCa, KeyUsagePurpose};
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("ferrohub Edge CA {hostname}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let start = now.replace_nanosecond(0).unwrap_or(now);
    params.not_before = start;
    params.not_after = start + Duration::days(i64::from(days.max(1)));
    let mut serial = [0u8; 16];
    pki::random_fill(&mut serial).map_err(|e| EdgeError::Identity(e.to_string()))?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let ca = keyd_signer::self_signed(params, key).await?;
    let path = format!(
        "/certificates/{}?{API}",
        iot_auth::percent_encode(EDGE_CA_ID)
    );
    let body = ImportCertRequest { pem: ca.to_pem() };
    certd
        .request::<_, PemResponse>(Method::PUT, &path, Some(&body))
        .await
        .map_err(|e| certd_error("import the quickstart edge CA", e))?;
    Ok(ca)
}

/// A new key here, a CSR for the hostname and IPs, issued by certd from the edge CA; the files
/// are written before the chain is returned.
async fn issue(
    certd: &UdsClient,
    plan: &CertPlan,
    ca_handle: &str,
) -> Result<(Vec<Certificate>, PrivateKeyDer<'static>), EdgeError> {
    let pki_err = |e: pki::PkiError| EdgeError::Identity(format!("server key: {e}"));
    let key = pki::PrivateKey::generate(pki::KeyAlgorithm::P256).map_err(pki_err)?;
    let mut sans = vec![plan.hostname.clone()];
    sans.extend(plan.ips.iter().map(IpAddr::to_string));
    sans.dedup();
    let options = pki::csr::CsrOptions {
        profile: pki::Profile::Server,
        common_name: plan.hostname.clone(),
        subject_alt_names: sans,
    };
    let csr = pki::csr::Csr::create(&key, &options)
        .map_err(|e| EdgeError::Identity(format!("CSR for {}: {e}", plan.hostname)))?;
    let body = CreateCertRequest {
        cert_id: SERVER_CERT_ID.to_owned(),
        csr: csr.to_pem(),
        issuer: Some(IssuerRef {
            cert_id: EDGE_CA_ID.to_owned(),
            private_key_handle: Some(ca_handle.into()),
        }),
    };
    let v: PemResponse = certd
        .post(&format!("/certificates?{API}"), &body)
        .await
        .map_err(|e| certd_error("issue the server certificate", e))?;
    let chain = Certificate::chain_from_pem(&v.pem).map_err(|e| certd_error("issued chain", e))?;
    if chain.first().map(Certificate::public_key_raw) != Some(key.public_key_raw().to_vec()) {
        return Err(certd_error(
            "issued chain",
            "the certificate is not for the key that asked",
        ));
    }
    let dir = &plan.dir;
    let pem: String = chain.iter().map(Certificate::to_pem).collect();
    identity::identityd::write_atomic(&dir.join("server.key.pem"), key.to_pem().as_bytes())
        .map_err(|e| io_error(&dir.join("server.key.pem"), e))?;
    write_public(&dir.join("server-chain.pem"), &pem)?;
    let der = PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes())
        .map_err(|e| EdgeError::Identity(format!("server key: {e}")))?;
    Ok((chain, der))
}

fn io_error(path: &Path, e: std::io::Error) -> EdgeError {
    EdgeError::Config(format!("{}: {e}", path.display()))
}

/// Writes a certificate file atomically. It holds no secret, but it lives in the gateway's
/// private data directory, whose files are all 0600 (see `ferrohub_runtime::fsperm`).
fn write_public(path: &Path, pem: &str) -> Result<(), EdgeError> {
    identity::identityd::write_atomic(path, pem.as_bytes()).map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_after_two_thirds_of_the_lifetime() {
        let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let at = renewal_time(nb, nb + Duration::days(30));
        assert_eq!(at, nb + Duration::days(20));
        let at = renewal_time(nb, nb + Duration::hours(3));
        assert_eq!(at, nb + Duration::hours(2));
        assert_eq!(renewal_time(nb, nb), nb);
    }
}
