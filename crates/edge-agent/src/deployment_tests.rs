use super::*;

/// Seed 000's routes and its `ai_insights` module, in Azure's manifest form.
fn seed_000() -> Value {
    json!({
        "modulesContent": {
            "$edgeAgent": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "runtime": {"type": "docker", "settings": {}},
                    "systemModules": {
                        "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
                        "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                                    "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}
                    },
                    "modules": {
                        "ai_insights": {
                            "type": "process", "status": "running", "restartPolicy": "on-failure",
                            "version": "1.0", "startupOrder": 1,
                            "settings": {"command": "/usr/bin/python3", "args": ["ai.py", "--tag", "x"], "user": "1001:1002"},
                            "env": {"LEVEL": {"value": "debug"}, "N": {"value": 3}, "PLAIN": "yes"}
                        }
                    }
                }
            },
            "$edgeHub": {
                "properties.desired": {
                    "schemaVersion": "1.1",
                    "routes": {
                        "sensorToAIInsightsInput1": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/ai_insights/inputs/input1\")",
                        "AIInsightsToIoTHub": "FROM /messages/modules/ai_insights/outputs/output1 INTO $upstream"
                    },
                    "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}
                }
            },
            "ai_insights": {"properties.desired": {"threshold": 5}}
        }
    })
}

#[test]
fn seed_000_manifest_parses_into_a_typed_deployment() {
    let m = parse_manifest(&seed_000()).unwrap();
    let d = &m.deployment;
    assert_eq!(d.schema_version, "1.1");
    assert_eq!(
        d.edge_hub,
        Some(SystemModule {
            status: DesiredStatus::Running,
            restart_policy: RestartPolicy::Always
        })
    );
    let ai = &d.modules["ai_insights"];
    assert_eq!(
        ai.runner,
        Runner::Process {
            command: "/usr/bin/python3".into(),
            args: vec!["ai.py".into(), "--tag".into(), "x".into()],
            working_dir: None,
        }
    );
    assert_eq!(ai.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(ai.startup_order, 1);
    assert_eq!(ai.version, "1.0");
    assert_eq!(
        ai.user,
        Some(User {
            uid: 1001,
            gid: Some(1002)
        })
    );
    assert_eq!(ai.env["LEVEL"], "debug");
    assert_eq!(ai.env["N"], "3");
    assert_eq!(ai.env["PLAIN"], "yes");
    assert_eq!(m.modules["ai_insights"], json!({"threshold": 5}));
    let hub = check_edge_hub(&m.edge_hub).unwrap().unwrap();
    assert_eq!(hub.routes.len(), 2);
    assert_eq!(hub.store_ttl_secs, Some(7200));
}

#[test]
fn the_nested_properties_form_and_the_az_content_wrapper_are_read_too() {
    let v = json!({"content": {"modulesContent": {
        "$edgeAgent": {"properties": {"desired": {"schemaVersion": "1.0", "modules": {
            "m": {"type": "process", "settings": {"command": "/bin/true"}}
        }}}}
    }}});
    let m = parse_manifest(&v).unwrap();
    assert_eq!(m.deployment.modules["m"].status, DesiredStatus::Running);
    assert_eq!(
        m.deployment.modules["m"].restart_policy,
        RestartPolicy::Always
    );
    assert_eq!(m.deployment.modules["m"].startup_order, u32::MAX);
    // No systemModules given: both are added, so the gateway runs.
    assert!(m.deployment.edge_hub.is_some());
    assert_eq!(m.edge_hub, default_edge_hub());
}

#[test]
fn an_empty_deployment_is_valid_and_yields_the_default_route() {
    for empty in [json!({}), json!({"modulesContent": {}})] {
        let m = parse_manifest(&empty).unwrap();
        assert!(m.deployment.modules.is_empty());
        assert!(m.deployment.edge_hub.is_some());
        let hub = check_edge_hub(&m.edge_hub).unwrap().unwrap();
        assert_eq!(hub.routes.len(), 1);
        assert_eq!(hub.routes[0].name, "route");
        assert_eq!(
            hub.routes[0].sink,
            routes::Sink::Upstream,
            "the default route goes to $upstream"
        );
    }
}

#[test]
fn an_invalid_route_is_refused_with_its_reason() {
    let mut v = seed_000();
    v["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["bad"] =
        json!("FROM /messages/* INTO nowhere");
    let e = parse_manifest(&v).unwrap_err();
    assert!(matches!(e, DeploymentError::EdgeHub(_)), "{e}");
    assert!(e.to_string().contains("bad"), "{e}");
    assert_eq!(e.code(), 400);
}

#[test]
fn an_unknown_module_type_is_refused() {
    let mut v = seed_000();
    v["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["ai_insights"]["type"] =
        json!("wasm");
    let e = parse_manifest(&v).unwrap_err();
    assert_eq!(
        e,
        DeploymentError::UnknownType {
            module: "ai_insights".into(),
            kind: "wasm".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "module ai_insights: unknown module type \"wasm\" (supported: process, docker)"
    );
}

fn agent_with(module: Value) -> Result<Deployment, DeploymentError> {
    parse(&json!({"schemaVersion": "1.1", "modules": {"m": module}}))
}

#[test]
fn module_fields_are_checked() {
    let bad = [
        (json!({"type": "process"}), "settings.command"),
        (
            json!({"type": "process", "settings": {"command": ""}}),
            "settings.command",
        ),
        (
            json!({"type": "process", "settings": {"command": "x", "args": "a b"}}),
            "args",
        ),
        (
            json!({"type": "process", "settings": {"command": "x"}, "restartPolicy": "sometimes"}),
            "restartPolicy",
        ),
        (
            json!({"type": "process", "settings": {"command": "x"}, "status": "paused"}),
            "status",
        ),
        (
            json!({"type": "process", "settings": {"command": "x"}, "startupOrder": -1}),
            "startupOrder",
        ),
        (
            json!({"type": "process", "settings": {"command": "x", "user": "root"}}),
            "user",
        ),
        (
            json!({"type": "process", "settings": {"command": "x"}, "env": {"A=B": "1"}}),
            "env",
        ),
        (
            json!({"type": "process", "settings": {"command": "x"}, "env": {"A": {"value": [1]}}}),
            "env",
        ),
        (json!({"type": "docker", "settings": {}}), "image"),
        (
            json!({"type": "docker", "settings": {"image": "i", "createOptions": "{not json"}}),
            "createOptions",
        ),
        (json!({"settings": {"command": "x"}}), "no type"),
    ];
    for (module, needle) in bad {
        let e = agent_with(module.clone()).unwrap_err();
        assert!(e.to_string().contains(needle), "{module}: {e}");
    }
}

#[test]
fn reserved_and_malformed_module_names_are_refused() {
    for name in ["edgeHub", "EDGEAGENT", "$custom", "has space"] {
        let v = json!({"schemaVersion": "1.1", "modules": {name: {"type": "process", "settings": {"command": "x"}}}});
        assert!(parse(&v).is_err(), "{name}");
    }
}

#[test]
fn schema_versions() {
    assert_eq!(parse(&json!({})).unwrap_err(), DeploymentError::Empty);
    assert_eq!(parse(&json!({"$version": 1})).unwrap_err().code(), 417);
    let e = parse(&json!({"schemaVersion": "2.0"})).unwrap_err();
    assert_eq!(e.code(), 412);
    assert!(parse(&json!({"schemaVersion": "1.0"})).is_ok());
    assert!(parse(&json!({"schemaVersion": "1.1.0"})).is_ok());
    assert!(parse(&json!({"schemaVersion": 1.1})).is_err());
}

#[test]
fn docker_modules_need_a_container_cli() {
    let d = agent_with(json!({"type": "docker", "settings": {
        "image": "example/sensor:1",
        "createOptions": "{\"HostConfig\":",
        "createOptions01": "{\"Binds\":[\"/a:/b\"]}}"
    }}))
    .unwrap();
    assert_eq!(
        d.modules["m"].runner,
        Runner::Docker {
            image: "example/sensor:1".into(),
            create_options: Some("{\"HostConfig\":{\"Binds\":[\"/a:/b\"]}}".into()),
        }
    );
    let e = d.check_runtime(false).unwrap_err();
    assert!(e.to_string().contains("neither is installed"), "{e}");
    assert!(d.check_runtime(true).is_ok());
}

#[test]
fn a_twin_for_a_module_outside_the_deployment_is_refused() {
    let v = json!({"modulesContent": {"ghost": {"properties.desired": {}}}});
    let e = parse_manifest(&v).unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
}

#[test]
fn start_order_is_startup_order_then_name() {
    let d = parse(&json!({"schemaVersion": "1.1", "modules": {
        "z": {"type": "process", "startupOrder": 0, "settings": {"command": "x"}},
        "b": {"type": "process", "settings": {"command": "x"}},
        "a": {"type": "process", "settings": {"command": "x"}}
    }}))
    .unwrap();
    let names: Vec<&str> = d.start_order().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["z", "a", "b"]);
}
