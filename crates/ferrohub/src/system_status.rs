//! `ferrohub system status|check|logs`, in the spirit of `iotedge system status` and
//! `iotedge check`: what the identity service knows, and what is wrong with a next step.

use anyhow::Result;
use hyper::Method;
use identity::client::UdsClient;
use serde_json::{Value, json};

use crate::identity_cmd::RootArg;

const API: &str = "api-version=2021-12-01";

async fn device(idd: &UdsClient) -> Result<Value, String> {
    idd.call(
        Method::POST,
        &format!("/identities/device?{API}"),
        Some(&json!({"type": "aziot"})),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn cert(certd: &UdsClient, id: &str) -> Option<Vec<pki::Certificate>> {
    let path = format!(
        "/certificates/{}?api-version=2020-09-01",
        iot_auth::percent_encode(id)
    );
    let v = certd.call(Method::GET, &path, None).await.ok()?;
    pki::Certificate::chain_from_pem(v["pem"].as_str()?).ok()
}

fn describe(c: &pki::Certificate) -> String {
    format!(
        "{} (expires {})",
        c.subject(),
        hub::time::rfc3339(c.not_after())
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
    let prov = idd
        .call(
            Method::GET,
            &format!("/identities/provisioning?{API}"),
            None,
        )
        .await;
    match &prov {
        Ok(p) => println!("  provisioning:  {}", p),
        Err(e) => println!(
            "  identityd:     not reachable: {e}\n                 start it: ferrohub identity run"
        ),
    }
    let mut ok = prov.is_ok();
    match device(&idd).await {
        Ok(d) => {
            let s = &d["spec"];
            println!(
                "  device:        {} on hub {}",
                s["deviceId"].as_str().unwrap_or("?"),
                s["hubName"].as_str().unwrap_or("?")
            );
            println!(
                "  gateway host:  {}",
                s["gatewayHost"].as_str().unwrap_or("?")
            );
            println!(
                "  credential:    {}",
                s["auth"]["type"].as_str().unwrap_or("?")
            );
        }
        Err(e) if prov.is_ok() => {
            ok = false;
            println!(
                "  device:        not provisioned: {e}\n                 see `ferrohub system check` and the service's log"
            );
        }
        Err(_) => {}
    }
    for id in ["device-id", "trust-bundle", "aziot-edged-ca"] {
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

struct Checks {
    failed: usize,
}

impl Checks {
    fn report(&mut self, ok: bool, what: &str, next: &str) {
        if ok {
            println!("  ✓ {what}");
        } else {
            self.failed += 1;
            println!("  ✗ {what}\n      → {next}");
        }
    }
}

pub async fn check(root: &RootArg) -> Result<bool> {
    let mut c = Checks { failed: 0 };
    println!("Configuration");
    let (k, ce, i) = (root.load_keyd(), root.load_certd(), root.load_identityd());
    c.report(
        k.is_ok() && ce.is_ok() && i.is_ok(),
        "keyd, certd and identityd configs load",
        "run `ferrohub config apply -c /etc/ferrohub/config.toml`",
    );
    let (Ok(k), Ok(ce), Ok(i)) = (k, ce, i) else {
        return Ok(false);
    };
    println!("Daemons");
    for (name, socket) in [
        ("keyd", &k.socket),
        ("certd", &ce.socket),
        ("identityd", &i.socket),
    ] {
        let alive = UdsClient::new(socket)
            .send(Method::GET, "/", None)
            .await
            .is_ok();
        c.report(
            alive,
            &format!("{name} answers on {}", socket.display()),
            "start the service: ferrohub identity run",
        );
    }
    println!("Provisioning and connectivity");
    let certd = UdsClient::new(&ce.socket);
    let bundle = match &i.trust_bundle {
        Some(id) => cert(&certd, id).await.unwrap_or_default(),
        None => Vec::new(),
    };
    c.report(
        !bundle.is_empty(),
        "a trust bundle for the hub's TLS certificate",
        "set trust_bundle_cert = \"file:///path/to/hub-root-ca.pem\" in the super-config and apply",
    );
    let now = crate::clock::now();
    let soon = bundle
        .iter()
        .chain(cert(&certd, "device-id").await.unwrap_or_default().iter())
        .all(|c| c.not_after() > now + time::Duration::days(7));
    c.report(
        soon,
        "no certificate expires within 7 days",
        "renew the certificate named in `ferrohub system status`",
    );
    let dev = device(&UdsClient::new(&i.socket)).await;
    c.report(
        dev.is_ok(),
        "the device is provisioned",
        "see the service's log; `POST /identities/device/reprovision` retries",
    );
    if let Ok(d) = dev {
        let host = d["spec"]["gatewayHost"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let reachable = crate::tls_probe::reachable(&host, 443, &bundle).await;
        c.report(
            reachable.is_ok(),
            &format!("hub {host}:443 reachable over TLS with the trust bundle"),
            &reachable.err().unwrap_or_default(),
        );
    }
    println!("{} check(s) failed", c.failed);
    Ok(c.failed == 0)
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
