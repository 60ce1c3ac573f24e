//! `ferrohub config template`: a commented super-config covering every section ferrohub reads,
//! valid as printed (manual provisioning with a placeholder connection string), each alternative
//! and optional section a commented block to uncomment.

/// The template. Lines `## ...` explain; a block of `# key = ...` lines under one of them is a
/// setting or section left out (its default applies), to be uncommented by removing `# `.
pub const TEMPLATE: &str = r###"# ferrohub device super-config, printed by `ferrohub config template` (aziot's
# /etc/aziot/config.toml keys). Save it as /etc/ferrohub/config.toml, edit it, then run
# `sudo ferrohub config apply` (or `ferrohub config apply -c FILE --root DIR` without root).
# As printed it is valid: manual provisioning with a placeholder connection string to replace.
# Lines "## ..." explain; remove "# " from a "# key = ..." block to use it.

## hostname: this device's host name [default: the first line of /etc/hostname].
# hostname = "my-edge-device"

## local_gateway_hostname: the gateway modules connect through (their GatewayHostName);
## manual provisioning only.
# local_gateway_hostname = "gw.example"

## trust_bundle_cert: the CA certificates (PEM) that issued the hub's and DPS's TLS certificates,
## as a file:/// URI or an absolute path. Needed unless a public CA issued them.
# trust_bundle_cert = "file:///etc/ferrohub/hub-root-ca.pem"

## auto_reprovisioning_mode: Dynamic (register again when the hub refuses the device),
## AlwaysOnStartup (register at every start), OnErrorOnly (never again by itself) [default: Dynamic].
# auto_reprovisioning_mode = "Dynamic"

## prefer_module_identity_cache: answer module identity requests from the local cache first.
# prefer_module_identity_cache = false

## [provisioning]: how the device gets its hub identity. Keep exactly one [provisioning] table:
## this one, or one of the alternatives after it.
[provisioning]
source = "manual"
connection_string = "HostName=my-hub.example;DeviceId=my-device;SharedAccessKey=UkVQTEFDRS1NRQ=="

## Alternative: manual provisioning with the device's symmetric key (base64 value, or a file of
## the raw key bytes: device_id_pk = { uri = "file:///var/secrets/device-id.key" }).
# [provisioning]
# source = "manual"
# iothub_hostname = "my-hub.example"
# device_id = "my-device"
# [provisioning.authentication]
# method = "sas"
# device_id_pk = { value = "UkVQTEFDRS1NRQ==" }

## Alternative: manual provisioning with an X.509 device certificate (CN = the device id).
# [provisioning]
# source = "manual"
# iothub_hostname = "my-hub.example"
# device_id = "my-device"
# [provisioning.authentication]
# method = "x509"
# identity_cert = "file:///var/secrets/device.cert.pem"
# identity_pk = "file:///var/secrets/device.key.pem"

## Alternative: DPS with a symmetric key (an individual enrollment's key, or the key derived from
## a group's: `ferrohub dps derive-key`). payload: optional JSON sent with the registration.
# [provisioning]
# source = "dps"
# global_endpoint = "https://my-dps.example"
# id_scope = "0ne00000000"
# payload = { uri = "file:///etc/ferrohub/dps-payload.json" }
# [provisioning.attestation]
# method = "symmetric_key"
# registration_id = "my-device"
# symmetric_key = { value = "UkVQTEFDRS1NRQ==" }

## Alternative: DPS with an X.509 certificate (registration_id defaults to the certificate's CN).
# [provisioning]
# source = "dps"
# global_endpoint = "https://my-dps.example"
# id_scope = "0ne00000000"
# [provisioning.attestation]
# method = "x509"
# registration_id = "my-device"
# identity_cert = "file:///var/secrets/device-full-chain.cert.pem"
# identity_pk = "file:///var/secrets/device.key.pem"

## Alternative: no hub identity (keyd and certd only).
# [provisioning]
# source = "none"

## [aziot_max_requests]: concurrent connections each daemon serves per caller [default: 10].
# [aziot_max_requests]
# keyd = 10
# certd = 10
# identityd = 10

## [cert_issuance.local_ca]: a CA certd issues certificates from (certificate and key files).
# [cert_issuance.local_ca]
# cert = "file:///var/secrets/local-ca.cert.pem"
# pk = "file:///var/secrets/local-ca.key.pem"

## [edge_ca]: the CA an edge gateway (`ferrohub edge -c config.toml`) issues its TLS certificate
## from: a certificate and its key ...
# [edge_ca]
# cert = "file:///var/secrets/edge-ca.cert.pem"
# pk = "file:///var/secrets/edge-ca.key.pem"

## ... or a self-signed quickstart edge CA made in keyd, valid this many days (trials only).
# [edge_ca]
# auto_generated_edge_ca_expiry_days = 90

## [[principal]]: a process allowed to use identityd, by uid (repeat the table for more).
## idtype = ["module"]: it gets a module identity named `name`; ["device"]: it may read the device
## identity; left out: a host daemon, allowed everything.
# [[principal]]
# uid = 1001
# name = "mymodule"
# idtype = ["module"]
"###;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use identity::config::superconfig::{Provisioning, SuperConfig};

    use super::TEMPLATE;

    /// The commented block under the `## ` line containing `header`, uncommented.
    fn block(header: &str) -> String {
        let mut lines = TEMPLATE
            .lines()
            .skip_while(|l| !(l.starts_with("## ") && l.contains(header)));
        let mut out = String::new();
        for l in lines.by_ref().skip_while(|l| l.starts_with("## ")) {
            match l.strip_prefix("# ") {
                Some(setting) => out.push_str(&format!("{setting}\n")),
                None => break,
            }
        }
        assert!(!out.is_empty(), "no block under {header:?}");
        out
    }

    /// Every commented block's header (its first `## ` line).
    fn all_blocks() -> Vec<String> {
        let lines: Vec<&str> = TEMPLATE.lines().collect();
        let mut headers = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let next = lines.get(i + 1).copied().unwrap_or_default();
            if l.starts_with("## ") && !next.starts_with("## ") && next.starts_with("# ") {
                let first = lines[..=i]
                    .iter()
                    .rev()
                    .take_while(|p| p.starts_with("## "))
                    .last()
                    .copied()
                    .unwrap_or(l);
                headers.push(first.trim_start_matches("## ").to_owned());
            }
        }
        headers
    }

    #[test]
    fn the_template_is_valid_as_printed() {
        let config = SuperConfig::parse(TEMPLATE, Path::new("template")).unwrap();
        assert!(matches!(config.provisioning, Provisioning::Manual { .. }));
    }

    #[test]
    fn every_block_parses_once_uncommented() {
        let top = |manual: bool| {
            let mut t = [
                "hostname:",
                "trust_bundle_cert:",
                "auto_reprovisioning_mode:",
                "prefer_module",
            ]
            .map(block)
            .concat();
            if manual {
                t.push_str(&block("local_gateway_hostname:"));
            }
            t
        };
        let sections = |edge_ca: &str, principal: bool| {
            let mut t = ["[aziot_max_requests]", "[cert_issuance.local_ca]", edge_ca]
                .map(block)
                .concat();
            if principal {
                t.push_str(&block("[[principal]]"));
            }
            t
        };
        let preloaded = "[edge_ca]: the CA";
        let quickstart = "self-signed quickstart edge CA";
        let cases = [
            ("symmetric key (base64", true, preloaded, true),
            ("X.509 device certificate", true, quickstart, true),
            ("DPS with a symmetric key", false, preloaded, true),
            ("DPS with an X.509", false, quickstart, true),
            ("no hub identity", false, preloaded, false),
        ];
        let mut used = vec![
            "hostname:",
            "trust_bundle_cert:",
            "auto_reprovisioning_mode:",
            "prefer_module",
            "local_gateway_hostname:",
            "[aziot_max_requests]",
            "[cert_issuance.local_ca]",
            preloaded,
            quickstart,
            "[[principal]]",
        ];
        for (alternative, manual, edge_ca, principal) in cases {
            let doc = format!(
                "{}{}{}",
                top(manual),
                block(alternative),
                sections(edge_ca, principal)
            );
            if let Err(e) = SuperConfig::parse(&doc, Path::new("uncommented")) {
                panic!("{alternative}: {e}\n{doc}");
            }
            used.push(alternative);
        }
        for header in all_blocks() {
            assert!(
                used.iter().any(|u| header.contains(u)),
                "the block {header:?} is not checked"
            );
        }
    }
}
