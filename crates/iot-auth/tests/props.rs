#![allow(clippy::unwrap_used)]
//! Property tests that complement `properties.rs`: topics built by the hub's own builders parse
//! back, subscriptions never grant another identity's topics, SAS tokens are bound to their
//! resource and expiry, usernames and percent-encoding round trip.

use iot_auth::sas::{SasError, SasToken, decode_key, derive_device_key, generate_sas_token};
use iot_auth::topic::{c2d_topic, module_input_topic, telemetry_topic};
use iot_auth::{
    Audience, PropertyBag, PublishTopic, Subscription, TopicError, classify_subscription,
    parse_mqtt_username, parse_publish_topic, percent_decode, percent_encode,
};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,16}"
}

fn bag() -> impl Strategy<Value = PropertyBag> {
    prop::collection::vec(
        (
            "[a-zA-Z$.][a-zA-Z0-9$._-]{0,8}",
            prop::option::of(".{0,12}"),
        ),
        0..5,
    )
    .prop_map(|entries| entries.into_iter().collect())
}

fn filter_for(kind: u8, device: &str, module: &str) -> String {
    match kind % 5 {
        0 => format!("devices/{device}/messages/devicebound/#"),
        1 => format!("devices/{device}/modules/{module}/inputs/#"),
        2 => format!("devices/{device}/modules/{module}/#"),
        3 => format!("devices/{device}/#"),
        _ => format!("devices/{device}/modules/{module}/outputs/#"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn telemetry_topics_parse_back(device in id(), module in prop::option::of(id()), props in bag()) {
        let topic = telemetry_topic(&device, module.as_deref(), &props);
        let parsed = parse_publish_topic(&topic).unwrap();
        prop_assert_eq!(parsed.device_id(), Some(device.as_str()));
        prop_assert_eq!(parsed.module_id(), module.as_deref());
        let PublishTopic::Telemetry { properties, .. } = parsed else {
            return Err(TestCaseError::fail("not telemetry"));
        };
        prop_assert_eq!(properties, props);
    }

    #[test]
    fn twin_and_method_topics_parse_back(rid in "[a-zA-Z0-9-]{1,20}", status in any::<u16>()) {
        prop_assert_eq!(
            parse_publish_topic(&format!("$iothub/twin/GET/?$rid={rid}")).unwrap(),
            PublishTopic::TwinGet { rid: rid.clone() }
        );
        prop_assert_eq!(
            parse_publish_topic(&format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}&$version=3")).unwrap(),
            PublishTopic::TwinPatchReported { rid: rid.clone() }
        );
        prop_assert_eq!(
            parse_publish_topic(&format!("$iothub/methods/res/{status}/?$rid={rid}")).unwrap(),
            PublishTopic::MethodResponse { status, rid }
        );
    }

    #[test]
    fn downstream_topics_never_parse_as_publishes(device in id(), module in id(), input in id(), props in bag()) {
        // A device echoing a C2D or module-input topic back must not be taken as telemetry.
        for topic in [c2d_topic(&device, &props), module_input_topic(&device, &module, &input, &props)] {
            prop_assert!(parse_publish_topic(&topic).is_err(), "{}", topic);
        }
    }

    #[test]
    fn subscriptions_never_grant_another_identity(
        kind in any::<u8>(),
        me in id(),
        my_module in prop::option::of(id()),
        other in id(),
        other_module in id(),
    ) {
        let filter = filter_for(kind, &other, &other_module);
        match classify_subscription(&filter, &me, my_module.as_deref()) {
            Ok(Subscription::C2d) => {
                prop_assert_eq!(&other, &me);
                prop_assert!(my_module.is_none());
            }
            Ok(Subscription::Inputs) => {
                prop_assert_eq!(&other, &me);
                prop_assert_eq!(my_module.as_deref(), Some(other_module.as_str()));
            }
            Ok(s) => prop_assert!(false, "{} classified as {:?}", filter, s),
            Err(_) => {}
        }
        // Its own filters are always granted.
        let own = match &my_module {
            None => format!("devices/{me}/messages/devicebound/#"),
            Some(m) => format!("devices/{me}/modules/{m}/inputs/#"),
        };
        prop_assert!(classify_subscription(&own, &me, my_module.as_deref()).is_ok());
        if other != me {
            let theirs = filter_for(kind, &other, my_module.as_deref().unwrap_or("m"));
            prop_assert!(classify_subscription(&theirs, &me, my_module.as_deref()).is_err());
        }
    }

    #[test]
    fn classify_subscription_never_panics(filter in ".*", device in ".*", module in prop::option::of(".*")) {
        if let Err(e) = classify_subscription(&filter, &device, module.as_deref()) {
            prop_assert!(matches!(e, TopicError::NotOwnTopic | TopicError::Unsupported));
        }
    }

    #[test]
    fn sas_tokens_are_bound_to_resource_and_expiry(
        device in id(),
        other in id(),
        key in prop::collection::vec(any::<u8>(), 16..64),
        se in 1_000_000u64..4_000_000_000,
        delta in 1u64..100_000,
    ) {
        let resource = format!("hub.local/devices/{device}");
        let token = generate_sas_token(&resource, &key, None, se);
        let parsed = SasToken::parse(&token).unwrap();
        prop_assert_eq!(
            parsed.audience(),
            Audience::Device { host: "hub.local".into(), device_id: device.clone() }
        );
        // Replayed for another device: the signature no longer matches.
        if other != device {
            let moved = token.replace(
                &format!("devices%2F{}", percent_encode(&device)),
                &format!("devices%2F{}", percent_encode(&other)),
            );
            if let Ok(t) = SasToken::parse(&moved) && t.resource() != resource {
                prop_assert_eq!(t.verify(&key, se), Err(SasError::BadSignature));
            }
        }
        // An extended expiry is a forgery; an old token is refused once expired.
        let extended = token.replace(&format!("se={se}"), &format!("se={}", se + delta));
        prop_assert_eq!(SasToken::parse(&extended).unwrap().verify(&key, se), Err(SasError::BadSignature));
        let expired = matches!(parsed.verify(&key, se + 300 + delta), Err(SasError::Expired { .. }));
        prop_assert!(expired);
        // The Debug output never shows the signature.
        let sig = token.split("sig=").nth(1).unwrap().split('&').next().unwrap();
        let debug = format!("{parsed:?}");
        prop_assert!(!debug.contains(sig));
    }

    #[test]
    fn usernames_round_trip(
        host in "[a-z0-9.-]{1,20}",
        device in id(),
        module in prop::option::of(id()),
        api in "20[0-9]{2}-[0-9]{2}-[0-9]{2}",
        client_type in ".{0,30}",
    ) {
        let ids = match &module {
            Some(m) => format!("{host}/{device}/{m}"),
            None => format!("{host}/{device}"),
        };
        let s = format!("{ids}/?api-version={api}&DeviceClientType={}", percent_encode(&client_type));
        let u = parse_mqtt_username(&s).unwrap();
        prop_assert_eq!(&u.host, &host);
        prop_assert_eq!(&u.device_id, &device);
        prop_assert_eq!(&u.module_id, &module);
        prop_assert_eq!(&u.api_version, &api);
        prop_assert_eq!(u.client_type.as_deref(), Some(client_type.as_str()));
        let client_id = module.map_or(device.clone(), |m| format!("{device}/{m}"));
        prop_assert_eq!(u.client_id(), client_id);
    }

    #[test]
    fn percent_encoding_round_trips(s in ".*") {
        let encoded = percent_encode(&s);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        prop_assert_eq!(percent_decode(&encoded), Some(s));
    }

    #[test]
    fn percent_decode_never_panics(s in "[%0-9a-fA-FgG+ é]{0,20}") {
        if let Some(d) = percent_decode(&s) {
            prop_assert!(d.len() <= s.len() + s.matches('é').count());
        }
    }

    #[test]
    fn derived_device_keys_differ_per_registration(
        group in prop::collection::vec(any::<u8>(), 32),
        a in id(),
        b in id(),
    ) {
        use base64::Engine as _;
        let group_b64 = base64::engine::general_purpose::STANDARD.encode(&group);
        let ka = derive_device_key(&group_b64, &a).unwrap();
        prop_assert_eq!(&derive_device_key(&group_b64, &a).unwrap(), &ka);
        prop_assert_eq!(decode_key(&ka).unwrap().len(), 32);
        if a != b {
            prop_assert_ne!(derive_device_key(&group_b64, &b).unwrap(), ka);
        }
    }
}
