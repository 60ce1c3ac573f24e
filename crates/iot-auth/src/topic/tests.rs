use super::*;

fn telemetry(topic: &str) -> (String, Option<String>, PropertyBag) {
    match parse_publish_topic(topic).unwrap() {
        PublishTopic::Telemetry {
            device_id,
            module_id,
            properties,
        } => (device_id, module_id, properties),
        other => panic!("not telemetry: {other:?}"),
    }
}

#[test]
fn telemetry_accepts_all_eight_shapes() {
    for prefix in ["devices/dev1", "devices/dev1/modules/mod1"] {
        for suffix in ["/messages/events/a=1/", "/messages/events/a=1"] {
            let (d, m, bag) = telemetry(&format!("{prefix}{suffix}"));
            assert_eq!(d, "dev1");
            assert_eq!(m.is_some(), prefix.contains("modules"));
            assert_eq!(bag.get("a"), Some("1"));
        }
        for suffix in ["/messages/events/", "/messages/events"] {
            let (_, _, bag) = telemetry(&format!("{prefix}{suffix}"));
            assert!(bag.is_empty());
        }
    }
}

#[test]
fn telemetry_python_bag_and_module_output() {
    let (d, m, bag) = telemetry(
        "devices/dev1/messages/events/%24.mid=abc&%24.ct=application%2Fjson&%24.ce=utf-8&temp%20c=21.5",
    );
    assert_eq!((d.as_str(), m), ("dev1", None));
    assert_eq!(bag.get("$.ct"), Some("application/json"));
    assert_eq!(bag.get("temp c"), Some("21.5"));

    let t = parse_publish_topic(
        "devices/TestEdgeDevice/modules/TestModule/messages/events/%24.on=alert/",
    )
    .unwrap();
    assert_eq!(t.device_id(), Some("TestEdgeDevice"));
    assert_eq!(t.module_id(), Some("TestModule"));
    assert_eq!(t.rid(), None);
}

#[test]
fn telemetry_ids_are_literal() {
    let (d, m, _) = telemetry("devices/a%20b$c/modules/m:1/messages/events/");
    assert_eq!(d, "a%20b$c");
    assert_eq!(m.as_deref(), Some("m:1"));
}

#[test]
fn telemetry_to_another_device_is_detectable() {
    let t = parse_publish_topic("devices/other/messages/events/").unwrap();
    assert_ne!(t.device_id(), Some("dev1"));
}

#[test]
fn telemetry_rejects() {
    let e = |t: &str| parse_publish_topic(t).unwrap_err();
    assert_eq!(e("devices/d/messages/eventsx"), TopicError::Unsupported);
    assert_eq!(e("devices/d/messages/events/a/b"), TopicError::Unsupported);
    assert_eq!(
        e("devices/d/messages/devicebound/"),
        TopicError::Unsupported
    );
    assert_eq!(e("devices/d"), TopicError::Unsupported);
    assert_eq!(e("devices//messages/events"), TopicError::EmptyId);
    assert_eq!(e("devices/d/modules//messages/events"), TopicError::EmptyId);
    assert_eq!(
        e("devices/d/messages/events/a=%zz"),
        TopicError::BadEncoding
    );
    assert_eq!(e("foo/bar"), TopicError::Unsupported);
    assert_eq!(e(""), TopicError::Unsupported);
}

#[test]
fn twin_requests() {
    let rid = "2a5c1f6e-0c8a-4b6e-9f3c-1d2e3f4a5b6c";
    assert_eq!(
        parse_publish_topic(&format!("$iothub/twin/GET/?$rid={rid}")).unwrap(),
        PublishTopic::TwinGet { rid: rid.into() }
    );
    assert_eq!(
        parse_publish_topic("$iothub/twin/PATCH/properties/reported/?$rid=7&$version=3").unwrap(),
        PublishTopic::TwinPatchReported { rid: "7".into() }
    );
    assert_eq!(
        parse_publish_topic("$iothub/twin/patch/properties/reported/?%24rid=a%20b").unwrap(),
        PublishTopic::TwinPatchReported {
            rid: "a%20b".into()
        }
    );
    assert_eq!(
        parse_publish_topic("$iothub/twin/GET?$rid=1")
            .unwrap()
            .rid(),
        Some("1")
    );
    assert_eq!(
        parse_publish_topic("$iothub/twin/GET/").unwrap_err(),
        TopicError::MissingRequestId
    );
    assert_eq!(
        parse_publish_topic("$iothub/twin/GET/?$version=1").unwrap_err(),
        TopicError::MissingRequestId
    );
    assert_eq!(
        parse_publish_topic("$iothub/twin/PATCH/properties/desired/?$rid=1").unwrap_err(),
        TopicError::Unsupported
    );
}

#[test]
fn method_responses() {
    assert_eq!(
        parse_publish_topic("$iothub/methods/res/200/?$rid=42").unwrap(),
        PublishTopic::MethodResponse {
            status: 200,
            rid: "42".into()
        }
    );
    let e = |t: &str| parse_publish_topic(t).unwrap_err();
    assert_eq!(e("$iothub/methods/res/abc/?$rid=1"), TopicError::BadStatus);
    assert_eq!(e("$iothub/methods/res/-1/?$rid=1"), TopicError::BadStatus);
    assert_eq!(
        e("$iothub/methods/res/70000/?$rid=1"),
        TopicError::BadStatus
    );
    assert_eq!(e("$iothub/methods/res/200/"), TopicError::MissingRequestId);
    assert_eq!(e("$iothub/methods/POST/x/?$rid=1"), TopicError::Unsupported);
}

#[test]
fn subscriptions_for_devices() {
    let c = |f: &str| classify_subscription(f, "dev1", None);
    assert_eq!(
        c("devices/dev1/messages/devicebound/#"),
        Ok(Subscription::C2d)
    );
    assert_eq!(c("$iothub/twin/res/#"), Ok(Subscription::TwinResponses));
    assert_eq!(
        c("$iothub/twin/PATCH/properties/desired/#"),
        Ok(Subscription::DesiredPatches)
    );
    assert_eq!(c("$iothub/methods/POST/#"), Ok(Subscription::Methods));
    assert_eq!(
        c("devices/dev2/messages/devicebound/#"),
        Err(TopicError::NotOwnTopic)
    );
    assert_eq!(
        c("devices/+/messages/devicebound/#"),
        Err(TopicError::NotOwnTopic)
    );
    assert_eq!(
        c("devices/dev1/modules/m/inputs/#"),
        Err(TopicError::NotOwnTopic)
    );
    assert_eq!(
        c("devices/dev1/messages/events/#"),
        Err(TopicError::Unsupported)
    );
    assert_eq!(c("#"), Err(TopicError::Unsupported));
    assert_eq!(c("$iothub/twin/#"), Err(TopicError::Unsupported));
}

#[test]
fn subscriptions_for_modules() {
    let c = |f: &str| classify_subscription(f, "dev1", Some("mod1"));
    assert_eq!(
        c("devices/dev1/modules/mod1/inputs/#"),
        Ok(Subscription::Inputs)
    );
    assert_eq!(c("devices/dev1/modules/mod1/#"), Ok(Subscription::Inputs));
    assert_eq!(c("$iothub/methods/POST/#"), Ok(Subscription::Methods));
    assert_eq!(
        c("devices/dev1/modules/mod2/inputs/#"),
        Err(TopicError::NotOwnTopic)
    );
    assert_eq!(
        c("devices/dev2/modules/mod1/#"),
        Err(TopicError::NotOwnTopic)
    );
    assert_eq!(
        c("devices/dev1/messages/devicebound/#"),
        Err(TopicError::NotOwnTopic)
    );
    assert_eq!(
        c("devices/dev1/modules/mod1/outputs/#"),
        Err(TopicError::Unsupported)
    );
}

#[test]
fn server_topics() {
    assert_eq!(
        twin_response_topic(200, "r1", None),
        "$iothub/twin/res/200/?$rid=r1"
    );
    assert_eq!(
        twin_response_topic(204, "r2", Some(5)),
        "$iothub/twin/res/204/?$rid=r2&$version=5"
    );
    assert_eq!(
        desired_patch_topic(9),
        "$iothub/twin/PATCH/properties/desired/?$version=9"
    );
    assert_eq!(
        method_request_topic("reboot", "1"),
        "$iothub/methods/POST/reboot/?$rid=1"
    );
    assert_eq!(
        c2d_topic("dev1", &PropertyBag::new()),
        "devices/dev1/messages/devicebound/"
    );
    let bag = PropertyBag::new().with("$.mid", "m").with("color", "red");
    assert_eq!(
        c2d_topic("dev1", &bag),
        "devices/dev1/messages/devicebound/%24.mid=m&color=red"
    );
    assert_eq!(
        module_input_topic("d", "m", "in1", &PropertyBag::new()),
        "devices/d/modules/m/inputs/in1/"
    );
    assert_eq!(
        module_input_topic("d", "m", "in1", &bag),
        "devices/d/modules/m/inputs/in1/%24.mid=m&color=red"
    );
}

#[test]
fn telemetry_builder_round_trips() {
    let bag = PropertyBag::new().with("$.on", "out 1").with("k", "v/w");
    for module in [None, Some("m")] {
        let t = parse_publish_topic(&telemetry_topic("d", module, &bag)).unwrap();
        assert_eq!(
            t,
            PublishTopic::Telemetry {
                device_id: "d".into(),
                module_id: module.map(str::to_owned),
                properties: bag.clone(),
            }
        );
    }
}
