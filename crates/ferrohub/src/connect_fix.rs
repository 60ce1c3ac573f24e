//! What fixes each reason a hub gives for refusing a device (`Refusal::reason()` in
//! `hub::mqtt::auth`), as commands of this CLI: the text `ferrohub system check` prints after a
//! refused CONNECT. Hub-side commands run where the hub's `hub.toml` is (add `--config`).

/// What the fix texts need to know about the device.
pub struct Context<'a> {
    pub device_id: &'a str,
    pub gateway: &'a str,
    pub hub: &'a str,
    /// Provisioned by DPS: registering again is the fix for a device the hub does not know.
    pub dps: bool,
    /// The X.509 chain it presented (leaf first); empty for SAS.
    pub chain: &'a [pki::Certificate],
    pub sas: bool,
}

const REPROVISION: &str = "sudo ferrohub system reprovision";
const INDENT: &str = "\n          ";

fn lines(intro: &str, commands: &[String]) -> String {
    let mut out = intro.to_owned();
    for c in commands {
        out.push_str(INDENT);
        out.push_str(c);
    }
    out
}

/// The verification steps for an uploaded CA (proof of possession).
fn verify_steps(name: &str) -> Vec<String> {
    vec![
        format!("ferrohub hub ca verification-code {name}"),
        "ferrohub certs verification-cert --code CODE --issuer CA   # where the CA's key is".into(),
        format!("ferrohub hub ca verify {name} --cert certs/verification-CODE.cert.pem"),
    ]
}

/// The subject of the CA at the top of the presented chain (what the hub must trust).
fn top_issuer(chain: &[pki::Certificate]) -> String {
    chain
        .last()
        .map(|c| c.issuer())
        .unwrap_or_else(|| "the device certificate's CA".into())
}

/// The fix for `reason`; unknown reasons point to the hub's message and log.
pub fn fix(reason: &str, c: &Context<'_>) -> String {
    let id = c.device_id;
    let thumbprint = c.chain.first().map(pki::Certificate::thumbprint_sha1);
    match reason {
        "unverified_ca" => lines(
            &format!(
                "the device's CA ({}) is uploaded at the hub but not verified; prove possession \
                 of its key (NAME as in `ferrohub hub ca list`, CA the certificate and key you \
                 issued it with):",
                top_issuer(c.chain)
            ),
            &verify_steps("NAME"),
        ),
        "unknown_ca" => {
            let mut steps = vec!["ferrohub hub ca upload NAME --cert CA.cert.pem".to_owned()];
            steps.extend(verify_steps("NAME"));
            let mut text = lines(
                &format!(
                    "the hub trusts no CA that issued this certificate ({}); upload that CA and \
                     verify it:",
                    top_issuer(c.chain)
                ),
                &steps,
            );
            if c.dps {
                text.push_str(&format!(
                    "\n        or, if the provisioning service now assigns it elsewhere: {REPROVISION}"
                ));
            }
            text
        }
        "incomplete_chain" => format!(
            "the device sends its certificate without the intermediate CA: point identity_cert in \
             /etc/ferrohub/config.toml at the full-chain file (its certificate, then the \
             intermediates, e.g. iot-device-{id}-full-chain.cert.pem), run `sudo ferrohub config \
             apply` and restart the identity service"
        ),
        "disabled" => lines(
            "the device is disabled at the hub; enable it:",
            &[format!("ferrohub hub device set-status {id} enabled")],
        ),
        "wrong_thumbprint" if c.dps => lines(
            "the hub holds another certificate's thumbprint for this device; register again so \
             the provisioning service updates it:",
            &[REPROVISION.to_owned()],
        ),
        "wrong_thumbprint" => lines(
            "the hub holds another certificate's thumbprint for this device; register this \
             certificate's:",
            &[
                format!("ferrohub hub device delete {id}"),
                format!(
                    "ferrohub hub device create {id} --auth self-signed --primary-thumbprint {}",
                    thumbprint.as_deref().unwrap_or("THUMBPRINT")
                ),
            ],
        ),
        "unknown_device" | "unknown_module" if c.dps => lines(
            &format!(
                "the hub {} does not know {id} (deleted, or the device moved); register again:",
                c.hub
            ),
            &[REPROVISION.to_owned()],
        ),
        "unknown_device" | "unknown_module" => lines(
            &format!("the hub {} does not know {id}; create it there:", c.hub),
            &[if c.sas {
                format!(
                    "ferrohub hub device create {id} --primary-key KEY   # KEY: SharedAccessKey of \
                     the connection string in /etc/ferrohub/config.toml"
                )
            } else {
                format!(
                    "ferrohub hub device create {id} --auth ca   # with its CA verified at the hub"
                )
            }],
        ),
        "sas_disabled" => lines(
            "the hub refuses SAS tokens for devices; switch them back on (or give the device an \
             X.509 identity):",
            &["ferrohub hub auth device-sas on".to_owned()],
        ),
        "expired_token" | "cert_not_yet_valid" => "the device's clock and the hub's disagree: \
             check both (`timedatectl`) and set them right (NTP)"
            .into(),
        "cert_expired" => format!(
            "the device certificate has expired: issue a new one (`ferrohub certs device {id}`), \
             point identity_cert and identity_pk in /etc/ferrohub/config.toml at it, run `sudo \
             ferrohub config apply` and restart the identity service"
        ),
        "bad_signature" if c.dps => lines(
            "the hub holds another key for this device; register again:",
            &[REPROVISION.to_owned()],
        ),
        "bad_signature" => format!(
            "the device's key is not the hub's: copy the connection string from `ferrohub hub \
             device show {id}` into /etc/ferrohub/config.toml (`sudo ferrohub config mp \
             --connection-string '…'`) and run `sudo ferrohub config apply`"
        ),
        "wrong_auth_type" | "no_client_certificate" if c.dps => lines(
            "the hub registers this device with another kind of authentication; register again:",
            &[REPROVISION.to_owned()],
        ),
        "wrong_auth_type" | "no_client_certificate" => format!(
            "the device and the hub disagree on the kind of authentication (see the message): \
             make them agree, e.g. `ferrohub hub device delete {id}`, then create it with the \
             device's kind (`ferrohub hub device create {id} --help`)"
        ),
        "cn_mismatch" => format!(
            "a CA-signed device certificate must have CN = the device id: issue one for {id} \
             (`ferrohub certs device {id}`) and point identity_cert/identity_pk at it"
        ),
        "wrong_host" => format!(
            "the device names its hub {:?}, which the hub does not answer to: use the hub's \
             host name in /etc/ferrohub/config.toml, or add the name to hostname_aliases in \
             the hub's hub.toml",
            c.hub
        ),
        "accepted_by_hub" => format!(
            "the hub accepts {id}, but {} refused it: a gateway admits only the devices in its \
             scope (`ferrohub hub device set-parent {id} --parent GATEWAY_ID`), see its log",
            c.gateway
        ),
        "unavailable" => "the hub could not decide (its registry is unavailable): see the \
             hub's log and try again"
            .into(),
        _ => "the hub's message says what is wrong; its log has the refusal too (`Refusing \
              connection … code=…`)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dps: bool, sas: bool) -> Context<'static> {
        Context {
            device_id: "dev1",
            gateway: "hub.example",
            hub: "hub.example",
            dps,
            chain: &[],
            sas,
        }
    }

    #[test]
    fn each_reason_names_a_real_command() {
        let manual = ctx(false, false);
        for (reason, part) in [
            ("unverified_ca", "ferrohub hub ca verify NAME --cert"),
            (
                "unverified_ca",
                "ferrohub certs verification-cert --code CODE",
            ),
            ("unknown_ca", "ferrohub hub ca upload NAME --cert"),
            ("incomplete_chain", "full-chain"),
            ("disabled", "ferrohub hub device set-status dev1 enabled"),
            (
                "wrong_thumbprint",
                "--auth self-signed --primary-thumbprint",
            ),
            (
                "unknown_device",
                "ferrohub hub device create dev1 --auth ca",
            ),
            ("sas_disabled", "ferrohub hub auth device-sas on"),
            ("expired_token", "timedatectl"),
            ("cn_mismatch", "ferrohub certs device dev1"),
        ] {
            let text = fix(reason, &manual);
            assert!(text.contains(part), "{reason}: {text}");
        }
        let sas = fix("unknown_device", &ctx(false, true));
        assert!(sas.contains("--primary-key"), "{sas}");
    }

    #[test]
    fn a_dps_device_is_told_to_reprovision() {
        let dps = ctx(true, false);
        for reason in [
            "unknown_device",
            "wrong_thumbprint",
            "bad_signature",
            "unknown_ca",
        ] {
            let text = fix(reason, &dps);
            assert!(
                text.contains("sudo ferrohub system reprovision"),
                "{reason}: {text}"
            );
        }
        assert!(!fix("unknown_device", &ctx(false, false)).contains("reprovision"));
    }
}
