#![allow(clippy::unwrap_used)]
//! Property tests for the files and strings operators and devices hand the services: `hub.toml`,
//! `dps.toml`, `edge.toml`, the identity super-config, and DPS MQTT topics and usernames.
//! Nothing panics; whatever loads is consistent; the checks refuse what they say they refuse.

use std::path::Path;

use identity::config::apply::{Paths, plan};
use identity::config::superconfig::SuperConfig;
use proptest::prelude::*;

const HUB_TOML: &str = r#"hostname = "hub.local"

[listen]
mqtt = "127.0.0.1:8883"
https = "127.0.0.1:8443"

[tls]
cert = "certs/hub.cert.pem"
key = "certs/hub.key.pem"

[storage]
registry = "data/registry.sqlite"
events = "data/events"
fsync = true
retention_hours = 24

[limits]
max_packet_bytes = 4096
max_connections = 10
max_inflight_per_connection = 4
connect_timeout_secs = 5
max_request_bytes = 65536

[[policy]]
name = "iothubowner"
primary_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
secondary_key = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
rights = ["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"]
"#;

const DPS_TOML: &str = r#"hostname = "dps.local"
id_scope = "0ne00000001"
allocation_policy = "hashed"

[listen]
mqtt = "127.0.0.2:8883"
https = "127.0.0.2:8443"

[tls]
cert = "certs/dps.cert.pem"
key = "certs/dps.key.pem"

[storage]
database = "data/dps.sqlite"

[[linked_hub]]
connection_string = "HostName=hub.local;SharedAccessKeyName=iothubowner;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
address = "127.0.0.1:8443"
allocation_weight = 2
"#;

const EDGE_TOML: &str = r#"edge_id = "gw1"
hub_hostname = "hub.local"
hub_mqtt = "127.0.0.1:8883"
hub_https = "127.0.0.1:8443"
hub_ca = "certs/root-ca.cert.pem"
edge_hub_key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
tls_cert = "certs/gw.cert.pem"
tls_key = "certs/gw.key.pem"
data_dir = "data"
routes = ["FROM /messages/* INTO $upstream"]
store_ttl_hours = 2
listen = "127.0.0.4:8883"
store_max_mib = 16
store_full = "drop_oldest"
"#;

/// The super-configs of the identity service's `config apply` tests: real operator files.
const SUPER_CONFIGS: &[&str] = &[
    include_str!("../../identity/tests/apply/dps-symmetric-key/config.toml"),
    include_str!("../../identity/tests/apply/dps-x509/config.toml"),
    include_str!("../../identity/tests/apply/edge-ca-quickstart/config.toml"),
    include_str!("../../identity/tests/apply/local-ca/config.toml"),
    include_str!("../../identity/tests/apply/manual-connection-string/config.toml"),
    include_str!("../../identity/tests/apply/manual-sas-uri/config.toml"),
    include_str!("../../identity/tests/apply/manual-x509/config.toml"),
    include_str!("../../identity/tests/apply/principals/config.toml"),
    include_str!("../../identity/tests/apply/trust-bundle/config.toml"),
];

/// A line-level edit of a real file: delete, duplicate or swap lines, or change one byte.
fn edited(text: &str, kind: u8, at: prop::sample::Index, byte: u8) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = at.index(lines.len());
    match kind % 5 {
        0 => {
            lines.remove(i);
        }
        1 => lines.insert(i, lines[i].clone()),
        2 => {
            let j = (i + 1) % lines.len();
            lines.swap(i, j);
        }
        3 => {
            let mut bytes = lines[i].clone().into_bytes();
            if !bytes.is_empty() {
                let j = at.index(bytes.len());
                bytes[j] = byte;
            }
            lines[i] = String::from_utf8_lossy(&bytes).into_owned();
        }
        _ => lines[i] = String::new(),
    }
    lines.join("\n")
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn hub_limits(packet: usize, connections: usize, inflight: usize, key: &str) -> String {
    HUB_TOML
        .replace(
            "max_packet_bytes = 4096",
            &format!("max_packet_bytes = {packet}"),
        )
        .replace(
            "max_connections = 10",
            &format!("max_connections = {connections}"),
        )
        .replace(
            "max_inflight_per_connection = 4",
            &format!("max_inflight_per_connection = {inflight}"),
        )
        .replace("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", key)
}

#[test]
fn the_seed_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub::config::HubConfig::load(&write(dir.path(), "hub.toml", HUB_TOML)).unwrap();
    assert_eq!(hub.limits.max_inflight_per_connection, 4);
    assert!(
        hub.tls.cert.starts_with(dir.path()),
        "relative paths resolve"
    );
    dps::config::DpsConfig::load(&write(dir.path(), "dps.toml", DPS_TOML)).unwrap();
    edge::EdgeConfig::load(&write(dir.path(), "edge.toml", EDGE_TOML)).unwrap();
    for text in SUPER_CONFIGS {
        let config = SuperConfig::parse(text, Path::new("config.toml")).unwrap();
        let _ = plan(&config, &Paths::under(dir.path()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn edited_config_files_never_panic(
        kind in any::<u8>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        which in 0usize..SUPER_CONFIGS.len(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let hub_text = edited(HUB_TOML, kind, at, byte);
        if let Ok(cfg) = hub::config::HubConfig::load(&write(dir.path(), "hub.toml", &hub_text)) {
            // Whatever loads has passed its own checks, and survives a round trip.
            prop_assert!(cfg.check().is_ok());
            let again = write(dir.path(), "again.toml", &cfg.to_toml().unwrap());
            prop_assert_eq!(hub::config::HubConfig::load(&again).unwrap(), cfg);
        }
        let dps_text = edited(DPS_TOML, kind, at, byte);
        if let Ok(cfg) = dps::config::DpsConfig::load(&write(dir.path(), "dps.toml", &dps_text)) {
            prop_assert!(cfg.check().is_ok());
        }
        let edge_text = edited(EDGE_TOML, kind, at, byte);
        let _ = edge::EdgeConfig::load(&write(dir.path(), "edge.toml", &edge_text));
        let super_text = edited(SUPER_CONFIGS[which], kind, at, byte);
        match SuperConfig::parse(&super_text, Path::new("config.toml")) {
            Ok(config) => {
                let _ = plan(&config, &Paths::under(dir.path()));
            }
            // Errors name the file, so the operator knows which one to fix.
            Err(e) => prop_assert!(e.to_string().contains("config.toml"), "{}", e),
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_config_loaders(text in any::<String>()) {
        let dir = tempfile::tempdir().unwrap();
        let _ = hub::config::HubConfig::load(&write(dir.path(), "hub.toml", &text));
        let _ = dps::config::DpsConfig::load(&write(dir.path(), "dps.toml", &text));
        let _ = edge::EdgeConfig::load(&write(dir.path(), "edge.toml", &text));
        if let Ok(config) = SuperConfig::parse(&text, Path::new("config.toml")) {
            let _ = plan(&config, &Paths::under(dir.path()));
        }
    }

    #[test]
    fn hub_limits_are_checked(
        packet in prop_oneof![0usize..2048, 1024usize..10_000_000],
        connections in 0usize..3,
        inflight in 0usize..3,
        key_len in 0usize..40,
    ) {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD.encode(vec![7u8; key_len]);
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "hub.toml", &hub_limits(packet, connections, inflight, &key));
        let loaded = hub::config::HubConfig::load(&path);
        let valid = packet >= 1024 && connections > 0 && inflight > 0 && key_len >= 16;
        prop_assert_eq!(loaded.is_ok(), valid, "{:?}", loaded.err().map(|e| e.to_string()));
        if let Err(e) = loaded {
            // A refused file is named in the message, never silently defaulted.
            prop_assert!(e.to_string().contains("hub.toml"));
        }
    }

    #[test]
    fn dps_topics_never_panic_and_parse_back(topic in ".*", rid in "[a-zA-Z0-9-]{1,16}", op in "[a-zA-Z0-9.-]{1,40}") {
        let _ = dps::mqtt::parse_topic(&topic);
        prop_assert_eq!(
            dps::mqtt::parse_topic(&format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}")),
            Some(dps::mqtt::DpsTopic::Register { rid: rid.clone() })
        );
        prop_assert_eq!(
            dps::mqtt::parse_topic(&format!(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}"
            )),
            Some(dps::mqtt::DpsTopic::Poll { rid: rid.clone(), operation_id: op })
        );
        // The response topic is never mistaken for a request.
        prop_assert_eq!(dps::mqtt::parse_topic(&dps::mqtt::response_topic(200, &rid, Some(1))), None);
    }

    #[test]
    fn dps_usernames_name_only_their_scope(
        username in ".*",
        scope in "0ne[0-9A-F]{8}",
        other in "0ne[0-9A-F]{8}",
        reg in "[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?",
    ) {
        let _ = dps::mqtt::registration_from_username(&username, &scope);
        let good = format!("{scope}/registrations/{reg}/api-version=2019-03-31&ClientVersion=x");
        prop_assert_eq!(dps::mqtt::registration_from_username(&good, &scope), Ok(reg.as_str()));
        if other != scope {
            prop_assert!(dps::mqtt::registration_from_username(&good, &other).is_err());
        }
    }
}
