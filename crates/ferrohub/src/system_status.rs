//! `ferrohub system status|check|logs`, in the spirit of `iotedge system status` and
//! `iotedge check`: what the identity service knows, and what is wrong with a next step.

use anyhow::Result;
use hyper::Method;
use identity::client::{UdsClient, UdsError};
use identity::wire::certd::PemResponse;
use identity::wire::identityd::{AuthType, Identity, IdentityTypeRequest, ProvisioningInfo};

use crate::checks::Report;
use crate::connect_check::{HubAddrs, Outcome};
use crate::identity_cmd::RootArg;

const API: &str = "api-version=2021-12-01";

async fn device(idd: &UdsClient) -> Result<Identity, String> {
    idd.post(
        &format!("/identities/device?{API}"),
        &IdentityTypeRequest::aziot(),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn provisioning(idd: &UdsClient) -> Result<ProvisioningInfo, UdsError> {
    idd.get(&format!("/identities/provisioning?{API}")).await
}

pub(crate) async fn cert(certd: &UdsClient, id: &str) -> Option<Vec<pki::Certificate>> {
    let path = format!(
        "/certificates/{}?api-version=2020-09-01",
        iot_auth::percent_encode(id)
    );
    let v: PemResponse = certd.get(&path).await.ok()?;
    pki::Certificate::chain_from_pem(&v.pem).ok()
}

fn describe(c: &pki::Certificate) -> String {
    format!(
        "{} (expires {})",
        c.subject(),
        ferrohub_runtime::time::rfc3339(c.not_after())
    )
}

pub async fn status(root: &RootArg) -> Result<bool> {
    let idd_cfg = root.load_identityd()?;
    let certd_cfg = root.load_certd()?;
    let idd = UdsClient::new(&idd_cfg.socket);
    let certd = UdsClient::new(&certd_cfg.socket);
    println!(
        "identity service (config {})",
        root.config_path("identityd").display()
    );
    let prov = provisioning(&idd).await;
    match &prov {
        // Printed as a JSON object with sorted keys.
        Ok(p) => println!(
            "  provisioning:  {}",
            serde_json::to_value(p).unwrap_or_default()
        ),
        Err(e) => println!(
            "  identityd:     not reachable: {e}\n                 start it: ferrohub identity run"
        ),
    }
    let mut ok = prov.is_ok();
    match device(&idd).await {
        Ok(d) => {
            let s = &d.spec;
            println!("  device:        {} on hub {}", s.device_id, s.hub_name);
            println!("  gateway host:  {}", s.gateway_host);
            let credential = match s.auth.as_ref().map(|a| a.auth_type) {
                Some(AuthType::Sas) => "sas",
                Some(AuthType::X509) => "x509",
                None => "?",
            };
            println!("  credential:    {credential}");
        }
        Err(e) if prov.is_ok() => {
            ok = false;
            println!(
                "  device:        not provisioned: {e}\n                 see `ferrohub system check` and the service's log"
            );
        }
        Err(_) => {}
    }
    for id in [
        "device-id",
        "trust-bundle",
        "aziot-edged-ca",
        edge::server_cert::SERVER_CERT_ID,
    ] {
        if let Some(chain) = cert(&certd, id).await {
            let first = chain.first().map(describe).unwrap_or_default();
            println!(
                "  cert {id:<14} {first}{}",
                if chain.len() > 1 {
                    format!(" + {} more", chain.len() - 1)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(ok)
}

pub async fn check(root: &RootArg, addrs: &HubAddrs, json_out: bool) -> Result<bool> {
    let mut c = Report::new("Configuration");
    let (k, ce, i) = (root.load_keyd(), root.load_certd(), root.load_identityd());
    c.add(
        "config",
        k.is_ok() && ce.is_ok() && i.is_ok(),
        "keyd, certd and identityd configs load".into(),
        "run `ferrohub config apply -c /etc/ferrohub/config.toml`".into(),
    );
    let (Ok(k), Ok(ce), Ok(i)) = (k, ce, i) else {
        c.emit(json_out)?;
        return Ok(false);
    };
    c.section = "Daemons";
    for (name, socket) in [
        ("keyd", &k.socket),
        ("certd", &ce.socket),
        ("identityd", &i.socket),
    ] {
        let alive = UdsClient::new(socket)
            .send(Method::GET, "/", None)
            .await
            .is_ok();
        c.add(
            "daemon",
            alive,
            format!("{name} answers on {}", socket.display()),
            "start the service: ferrohub identity run".into(),
        );
    }
    c.section = "Provisioning and connectivity";
    let certd = UdsClient::new(&ce.socket);
    let bundle = match &i.trust_bundle {
        Some(id) => cert(&certd, id).await.unwrap_or_default(),
        None => Vec::new(),
    };
    c.add(
        "trust-bundle",
        !bundle.is_empty(),
        "a trust bundle for the hub's TLS certificate".into(),
        "set trust_bundle_cert = \"file:///path/to/hub-root-ca.pem\" in the super-config and apply"
            .into(),
    );
    let now = crate::clock::now();
    let soon = bundle
        .iter()
        .chain(cert(&certd, "device-id").await.unwrap_or_default().iter())
        .all(|c| c.not_after() > now + time::Duration::days(7));
    c.add(
        "cert-expiry",
        soon,
        "no certificate expires within 7 days".into(),
        "renew the certificate named in `ferrohub system status`".into(),
    );
    let idd = UdsClient::new(&i.socket);
    let dev = device(&idd).await;
    c.add(
        "provisioned",
        dev.is_ok(),
        "the device is provisioned".into(),
        "see the service's log (`ferrohub system logs`); `sudo ferrohub system reprovision` \
         registers again"
            .into(),
    );
    if let Ok(d) = dev {
        let host = d.spec.gateway_host.clone();
        let (addr, label) = match &addrs.https {
            Some(a) => (a.clone(), format!("{host} at {a}")),
            None => (format!("{host}:443"), format!("{host}:443")),
        };
        let reachable = device_client::tls_probe::reachable(&host, &addr, &bundle).await;
        c.add(
            "hub-tls",
            reachable.is_ok(),
            format!("hub {label} reachable over TLS with the trust bundle"),
            reachable.err().unwrap_or_default(),
        );
        let dps = matches!(provisioning(&idd).await, Ok(ProvisioningInfo::Dps { .. }));
        let keyd = UdsClient::new(&k.socket);
        let daemons = (&keyd, &certd);
        match crate::connect_check::check(&d, dps, daemons, &bundle, addrs).await {
            Outcome::Checked(f) => c.finding("hub-accepts", f),
            Outcome::Skipped(why) => c.note(
                "hub-accepts",
                format!("the device's connection was not tested: {why}"),
            ),
        }
    }
    gateway(&mut c, &certd, &i.hostname, &bundle, now).await;
    c.emit(json_out)?;
    Ok(c.failed() == 0)
}

/// The edge gateway's certificate (when `ferrohub edge -c config.toml` issued one through certd):
/// it must name `hostname` and verify against the trust bundle.
async fn gateway(
    c: &mut Report,
    certd: &UdsClient,
    hostname: &str,
    bundle: &[pki::Certificate],
    now: time::OffsetDateTime,
) {
    let edge_ca = cert(certd, edge::server_cert::EDGE_CA_ID).await;
    let Some(chain) = cert(certd, edge::server_cert::SERVER_CERT_ID).await else {
        if edge_ca.is_some() {
            c.section = "Edge gateway";
            c.note(
                "gateway-cert",
                "no gateway certificate yet: `ferrohub edge -c config.toml` issues it at start"
                    .into(),
            );
        }
        return;
    };
    c.section = "Edge gateway";
    for (id, f) in ["cert-hostname", "cert-chain"]
        .into_iter()
        .zip(gateway_findings(&chain, hostname, bundle, now))
    {
        c.finding(id, f);
    }
}

/// One check's outcome: what was checked (or found wrong) and the fix. `warning`: it passes but
/// the reader should act (a quickstart edge CA children do not trust yet, as `iotedge check`'s
/// production-readiness warning).
#[derive(Debug, Default)]
pub(crate) struct Finding {
    pub(crate) ok: bool,
    pub(crate) warning: bool,
    pub(crate) what: String,
    pub(crate) next: String,
}

const CHAIN_FIX: &str = "children trust the root in trust_bundle_cert, so the edge CA must chain to it: \
    `ferrohub certs edge-ca NAME --dir DIR` in the root's certificate directory, then in config.toml \
    [edge_ca] cert = \"file:///DIR/iot-edge-device-ca-NAME-full-chain.cert.pem\" and pk = \
    \"file:///DIR/iot-edge-device-ca-NAME.key.pem\", `ferrohub config apply`, and restart `ferrohub \
    identity run` and `ferrohub edge -c config.toml`. (With a quickstart edge CA — no [edge_ca] — \
    children must trust its certificate instead: /var/lib/ferrohub/edge/tls/edge-ca.cert.pem.)";

/// The gateway checks on its chain (leaf first): seed 001's troubleshooting, with the fix. The
/// name check comes first, then the chain's (`ferrohub edge check` relies on that order).
pub(crate) fn gateway_findings(
    chain: &[pki::Certificate],
    hostname: &str,
    bundle: &[pki::Certificate],
    now: time::OffsetDateTime,
) -> Vec<Finding> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Vec::new();
    };
    let names = leaf.info().subject_alt_names;
    let named = names.iter().any(|n| pki::names::san_covers(n, hostname));
    let names_text = if names.is_empty() {
        "no name".to_owned()
    } else {
        names.join(", ")
    };
    let name_check = Finding {
        ok: named,
        warning: false,
        what: if named {
            format!(
                "the gateway certificate names hostname {hostname} (children use it as GatewayHostName)"
            )
        } else {
            format!("the gateway certificate names {names_text} but hostname is {hostname:?}")
        },
        next: format!(
            "children check GatewayHostName against this certificate, so the name they use, hostname in \
             config.toml and the certificate must agree: set hostname = \"<the name children use, e.g. \
             {hostname}>\" in /etc/ferrohub/config.toml, run `ferrohub config apply`, and restart \
             `ferrohub edge -c /etc/ferrohub/config.toml` (it issues its certificate for hostname at \
             start); make sure children resolve that name to the gateway"
        ),
    };
    let path: Vec<String> = chain.iter().map(pki::Certificate::subject).collect();
    let verified = if bundle.is_empty() {
        Err("the trust bundle is empty".to_owned())
    } else {
        pki::ChainValidator::new(bundle.iter().cloned())
            .and_then(|v| v.verify(leaf, rest, now, pki::Purpose::ServerAuth))
            .map_err(|e| e.to_string())
    };
    let chain_check = match verified {
        Ok(p) => Finding {
            ok: true,
            warning: false,
            what: format!(
                "the gateway chain verifies against the trust bundle (root {})",
                p.anchor().subject()
            ),
            next: String::new(),
        },
        Err(e) => {
            let quickstart = chain
                .last()
                .is_some_and(|ca| ca.subject().starts_with("CN=ferrohub Edge CA"));
            Finding {
                // A quickstart edge CA is how a trial gateway starts (as IoT Edge's automatic
                // development certificates): a warning, not a failure.
                ok: quickstart,
                warning: quickstart,
                what: if quickstart {
                    format!(
                        "the gateway chain ({}) ends in a quickstart edge CA, which is not in the \
                         trust bundle: {e}",
                        path.join(" → ")
                    )
                } else {
                    format!(
                        "the gateway chain ({}) does not verify against the trust bundle: {e}",
                        path.join(" → ")
                    )
                },
                next: CHAIN_FIX.into(),
            }
        }
    };
    vec![name_check, chain_check]
}

/// `ferrohub system reprovision --json`'s answer.
#[derive(Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Reprovisioned {
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hub_name: Option<String>,
    reprovisioned: bool,
}

/// `ferrohub system reprovision`: identityd registers afresh (DPS) or re-reads its manual
/// identity, then the new assignment is printed; a failure is printed with what to do next.
pub async fn reprovision(root: &RootArg, json_out: bool) -> Result<bool> {
    let i = root.load_identityd()?;
    let idd = UdsClient::new(&i.socket);
    let asked = idd
        .call(
            Method::POST,
            &format!("/identities/device/reprovision?{API}"),
            None,
        )
        .await;
    let assigned = match asked {
        Ok(_) => device(&idd).await,
        Err(e) => Err(e.to_string()),
    };
    let answer = match &assigned {
        Ok(d) => Reprovisioned {
            device_id: Some(d.spec.device_id.clone()),
            error: None,
            gateway_host: Some(d.spec.gateway_host.clone()),
            hub_name: Some(d.spec.hub_name.clone()),
            reprovisioned: true,
        },
        Err(e) => Reprovisioned {
            error: Some(e.clone()),
            ..Reprovisioned::default()
        },
    };
    if json_out {
        println!("{}", serde_json::to_string(&answer)?);
        return Ok(assigned.is_ok());
    }
    match &assigned {
        Ok(d) => println!(
            "reprovisioned: device {} on hub {} (gateway host {})",
            d.spec.device_id, d.spec.hub_name, d.spec.gateway_host,
        ),
        Err(e) if e.contains("cannot connect") => println!(
            "reprovisioning failed: {e}\n  → start the identity service: ferrohub identity run"
        ),
        Err(e) => println!(
            "reprovisioning failed: {e}\n  → `ferrohub system check` names what is wrong; the \
             service's log has the details (`ferrohub system logs`); for DPS, `ferrohub dps \
             enrollment list` and `ferrohub dps registration show ID` on the provisioning \
             service side"
        ),
    }
    Ok(assigned.is_ok())
}

pub fn logs() -> Result<bool> {
    println!(
        "The identity service logs to standard error of `ferrohub identity run` (FERROHUB_LOG=debug for more)."
    );
    let journal = std::process::Command::new("journalctl")
        .args(["-u", "ferrohub-identity", "--no-pager", "-n", "100"])
        .status();
    if journal.is_err() {
        println!("Under systemd: journalctl -u ferrohub-identity");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use pki::{CertRequest, Certificate, KeyAlgorithm, PrivateKey, Profile, Signer};

    use super::*;

    fn t0() -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    }

    fn issue(
        profile: Profile,
        cn: &str,
        sans: &[&str],
        by: Option<(&Certificate, &PrivateKey)>,
    ) -> (Certificate, PrivateKey) {
        let key = PrivateKey::generate(KeyAlgorithm::P256).expect("key");
        let mut req = CertRequest::new(profile, cn, t0());
        req.subject_alt_names = sans.iter().map(|s| (*s).to_owned()).collect();
        let signer = by.map(|(cert, key)| Signer { cert, key });
        (pki::issue(&req, &key, signer).expect("issue"), key)
    }

    /// A gateway chain (server → edge CA → root) naming `sans`, and its root.
    fn chain(sans: &[&str]) -> (Vec<Certificate>, Certificate) {
        let (root, root_key) = issue(Profile::RootCa, "root", &[], None);
        let (ca, ca_key) = issue(Profile::EdgeCa, "edge ca", &[], Some((&root, &root_key)));
        let (leaf, _) = issue(Profile::Server, sans[0], sans, Some((&ca, &ca_key)));
        (vec![leaf, ca, root.clone()], root)
    }

    #[test]
    fn a_matching_trusted_gateway_chain_passes() {
        let (chain, root) = chain(&["gw.example", "127.0.0.4"]);
        for host in ["gw.example", "GW.example", "127.0.0.4"] {
            let f = gateway_findings(&chain, host, std::slice::from_ref(&root), t0());
            assert!(f.iter().all(|f| f.ok), "{host}: {f:?}");
        }
    }

    #[test]
    fn a_hostname_mismatch_is_explained_with_the_fix() {
        let (chain, root) = chain(&["gw.example"]);
        let f = gateway_findings(&chain, "edge-box", &[root], t0());
        assert!(!f[0].ok && f[1].ok, "{f:?}");
        assert_eq!(
            f[0].what,
            "the gateway certificate names DNS:gw.example but hostname is \"edge-box\""
        );
        for part in [
            "hostname = ",
            "ferrohub config apply",
            "ferrohub edge -c",
            "GatewayHostName",
        ] {
            assert!(f[0].next.contains(part), "{part}: {}", f[0].next);
        }
    }

    #[test]
    fn an_untrusted_chain_is_explained_with_the_fix() {
        let (chain, _) = chain(&["gw.example"]);
        let (_, other_root) = self::chain(&["x"]);
        let f = gateway_findings(&chain, "gw.example", &[other_root], t0());
        assert!(f[0].ok && !f[1].ok, "{f:?}");
        assert!(
            f[1].what
                .contains("does not verify against the trust bundle"),
            "{}",
            f[1].what
        );
        assert!(
            f[1].what.contains("CN=gw.example → CN=edge ca → CN=root"),
            "{}",
            f[1].what
        );
        for part in [
            "[edge_ca]",
            "ferrohub certs edge-ca",
            "ferrohub config apply",
        ] {
            assert!(f[1].next.contains(part), "{part}: {}", f[1].next);
        }
        let f = gateway_findings(&chain, "gw.example", &[], t0());
        assert!(!f[1].ok && f[1].what.contains("empty"), "{f:?}");
    }

    #[test]
    fn a_quickstart_edge_ca_is_named_as_such() {
        let (ca, ca_key) = issue(Profile::RootCa, "ferrohub Edge CA gw", &[], None);
        let (leaf, _) = issue(Profile::Server, "gw", &["gw"], Some((&ca, &ca_key)));
        let (_, bundle_root) = chain(&["x"]);
        let f = gateway_findings(&[leaf, ca], "gw", &[bundle_root], t0());
        assert!(
            f[1].ok && f[1].warning && f[1].what.contains("quickstart edge CA"),
            "a warning, not a failure: {f:?}"
        );
        assert!(f[1].next.contains("edge-ca.cert.pem"), "{}", f[1].next);
    }

    #[test]
    fn wildcard_and_ip_names() {
        assert!(pki::names::san_covers(
            "DNS:*.example.com",
            "gw.example.com"
        ));
        assert!(!pki::names::san_covers(
            "DNS:*.example.com",
            "a.gw.example.com"
        ));
        assert!(pki::names::san_covers("IP:127.0.0.4", "127.0.0.4"));
        assert!(!pki::names::san_covers("IP:127.0.0.4", "127.0.0.5"));
        assert!(!pki::names::san_covers("URI:x", "x"));
    }
}
