//! `$edgeHub` desired properties.

use serde_json::{Value as Json, json};

use super::support::Msg;
use crate::{
    ConfigError, DEFAULT_PRIORITY, DEFAULT_STORE_TTL_SECS, EdgeHubConfig, Sink,
    parse_edgehub_desired, select,
};

fn parse(v: Json) -> EdgeHubConfig {
    match parse_edgehub_desired(&v) {
        Ok(config) => config,
        Err(e) => panic!("{v} was refused: {e}"),
    }
}

fn refuse(v: Json) -> ConfigError {
    match parse_edgehub_desired(&v) {
        Ok(config) => panic!("{v} was accepted: {config:?}"),
        Err(e) => e,
    }
}

/// The seed deployment's `$edgeHub` desired properties.
fn seed() -> Json {
    json!({
        "schemaVersion": "1.1",
        "routes": {
            "upstream": "FROM /messages/* INTO $upstream",
            "toAi": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/ai_insights/inputs/input1\")",
            "aiUp": "FROM /messages/modules/ai_insights/outputs/output1 INTO $upstream"
        },
        "storeAndForwardConfiguration": { "timeToLiveSecs": 7200 }
    })
}

#[test]
fn seed_deployment() {
    let config = parse(seed());
    assert_eq!(config.schema_version, "1.1");
    assert_eq!(config.store_ttl_secs, Some(7200));
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["aiUp", "toAi", "upstream"]);
    assert!(
        config
            .routes
            .iter()
            .all(|r| r.priority == DEFAULT_PRIORITY && r.ttl_secs.is_none())
    );
    let device = Msg::device();
    let chosen: Vec<&Sink> = select(&config.routes, &device.view())
        .iter()
        .map(|r| &r.sink)
        .collect();
    assert_eq!(chosen.len(), 2);
}

#[test]
fn schema_versions_1_0_to_1_3_are_accepted() {
    for version in ["1.0", "1.1", "1.2", "1.3", "1.1.0", "1.3.0.0", " 1.2 "] {
        let config = parse(json!({ "schemaVersion": version }));
        assert_eq!(config.schema_version, version);
        assert!(config.routes.is_empty());
        assert_eq!(config.store_ttl_secs, Some(DEFAULT_STORE_TTL_SECS));
    }
}

#[test]
fn bad_schema_versions_are_refused() {
    assert_eq!(refuse(json!({})), ConfigError::MissingSchemaVersion);
    assert_eq!(
        refuse(json!({ "schemaVersion": null })),
        ConfigError::MissingSchemaVersion
    );
    for version in ["1", "abc", "1.x", "", "1.-1", "1.0.0.0.0"] {
        assert_eq!(
            refuse(json!({ "schemaVersion": version })),
            ConfigError::InvalidSchemaVersion(version.to_owned())
        );
    }
    for version in ["2.0", "0.9", "1.4", "1.10"] {
        assert_eq!(
            refuse(json!({ "schemaVersion": version })),
            ConfigError::UnsupportedSchemaVersion(version.to_owned())
        );
    }
    assert!(matches!(
        refuse(json!({ "schemaVersion": true })),
        ConfigError::InvalidSchemaVersion(_)
    ));
    assert_eq!(refuse(json!([1])), ConfigError::NotAnObject);
}

#[test]
fn schema_1_0_routes_must_be_strings() {
    let err = refuse(json!({
        "schemaVersion": "1.0",
        "routes": { "r": { "route": "FROM /* INTO $upstream", "priority": 0 } }
    }));
    assert!(
        matches!(err, ConfigError::MalformedRoute { ref name, .. } if name == "r"),
        "{err}"
    );
    let config = parse(json!({
        "schemaVersion": "1.0",
        "routes": { "r": "FROM /* INTO $upstream", "blank": "  ", "none": null }
    }));
    assert_eq!(config.routes.len(), 1);
}

#[test]
fn route_objects_from_schema_1_1() {
    let config = parse(json!({
        "schemaVersion": "1.1.0",
        "routes": {
            "secCamAlerts": {
                "route": "FROM /messages/modules/SecCamMod/outputs/P0_Alerts INTO $upstream",
                "priority": 0,
                "timeToLiveSecs": 86400
            },
            "secCamData": {
                "route": "FROM /messages/modules/SecCamMod/outputs/P1_Data INTO $upstream",
                "priority": 1,
                "timeToLiveSecs": 0
            },
            "legacy": "FROM /messages/* INTO $upstream"
        }
    }));
    let by_name = |n: &str| config.routes.iter().find(|r| r.name == n).unwrap();
    assert_eq!(by_name("secCamAlerts").priority, 0);
    assert_eq!(by_name("secCamAlerts").ttl_secs, Some(86400));
    assert_eq!(by_name("secCamData").priority, 1);
    assert_eq!(
        by_name("secCamData").ttl_secs,
        None,
        "0 means the global TTL"
    );
    assert_eq!(by_name("legacy").priority, DEFAULT_PRIORITY);
    assert_eq!(by_name("legacy").ttl_secs, None);

    let alert = Msg::module("SecCamMod", Some("P0_Alerts"));
    let chosen: Vec<&str> = select(&config.routes, &alert.view())
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(chosen, ["secCamAlerts", "legacy"]);
}

#[test]
fn malformed_route_objects_are_refused() {
    for spec in [
        json!({ "priority": 1 }),
        json!({ "route": "" }),
        json!({ "route": 5 }),
        json!({ "route": "FROM /* INTO $upstream", "priority": 10 }),
        json!({ "route": "FROM /* INTO $upstream", "priority": -1 }),
        json!({ "route": "FROM /* INTO $upstream", "priority": "1" }),
        json!({ "route": "FROM /* INTO $upstream", "timeToLiveSecs": -5 }),
        json!({ "route": "FROM /* INTO $upstream", "timeToLiveSecs": 4294967296u64 }),
        json!("   "),
        json!(null),
        json!(7),
    ] {
        let err = refuse(json!({ "schemaVersion": "1.2", "routes": { "r": spec } }));
        assert!(
            matches!(err, ConfigError::MalformedRoute { .. }),
            "{spec}: {err}"
        );
    }
    let ok = parse(json!({
        "schemaVersion": "1.2",
        "routes": { "r": { "route": "FROM /* INTO $upstream", "priority": 9, "timeToLiveSecs": 4294967295u64 } }
    }));
    assert_eq!(ok.routes[0].ttl_secs, Some(4_294_967_295));
}

#[test]
fn route_names_are_validated() {
    for name in ["", "a.b", "$a", "a#", "a b"] {
        let err =
            refuse(json!({ "schemaVersion": "1.1", "routes": { name: "FROM /* INTO $upstream" } }));
        assert_eq!(err, ConfigError::InvalidRouteName(name.to_owned()));
    }
    parse(json!({ "schemaVersion": "1.1", "routes": { "a-b_c:1é": "FROM /* INTO $upstream" } }));
}

#[test]
fn route_parse_errors_name_the_route() {
    let err =
        refuse(json!({ "schemaVersion": "1.3", "routes": { "bad": "FROM /* WHERE x INTO" } }));
    assert_eq!(
        err.to_string(),
        "error parsing route bad - column 21: expected a sink ($upstream or BrokeredEndpoint(\"/modules/<module>/inputs/<input>\")), found end of input"
    );
    assert!(
        matches!(err, ConfigError::Route { ref name, ref error } if name == "bad" && error.column == 21)
    );
}

#[test]
fn routes_must_be_an_object() {
    assert_eq!(
        refuse(json!({ "schemaVersion": "1.1", "routes": [] })),
        ConfigError::RoutesNotAnObject
    );
    assert!(
        parse(json!({ "schemaVersion": "1.1", "routes": null }))
            .routes
            .is_empty()
    );
}

#[test]
fn store_and_forward_ttl() {
    let ttl = |saf: Json| {
        parse(json!({ "schemaVersion": "1.1", "storeAndForwardConfiguration": saf })).store_ttl_secs
    };
    assert_eq!(ttl(json!({ "timeToLiveSecs": 60 })), Some(60));
    assert_eq!(ttl(json!({ "timeToLiveSecs": 0 })), Some(0));
    assert_eq!(
        ttl(json!({ "timeToLiveSecs": -1 })),
        None,
        "negative = infinite"
    );
    assert_eq!(ttl(json!({})), Some(DEFAULT_STORE_TTL_SECS));
    assert_eq!(
        ttl(json!({ "timeToLiveSecs": null })),
        Some(DEFAULT_STORE_TTL_SECS)
    );
    assert_eq!(ttl(Json::Null), Some(DEFAULT_STORE_TTL_SECS));
    for bad in [
        json!({ "timeToLiveSecs": 1.5 }),
        json!({ "timeToLiveSecs": "60" }),
        json!(60),
    ] {
        let err = refuse(json!({ "schemaVersion": "1.1", "storeAndForwardConfiguration": bad }));
        assert!(
            matches!(err, ConfigError::InvalidStoreAndForward(_)),
            "{err}"
        );
    }
}

#[test]
fn other_members_are_ignored() {
    let config = parse(json!({
        "schemaVersion": "1.2",
        "routes": {},
        "mqttBroker": { "bridges": [] },
        "$version": 4
    }));
    assert!(config.routes.is_empty());
}
