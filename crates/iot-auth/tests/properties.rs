#![allow(clippy::unwrap_used)]
//! Property-based tests: round trips hold and no input makes a parser panic.

use iot_auth::sas::{SasError, SasToken, generate_sas_token};
use iot_auth::{ConnectionString, PropertyBag, parse_mqtt_username, parse_publish_topic};
use proptest::prelude::*;

fn bag_entries() -> impl Strategy<Value = Vec<(String, Option<String>)>> {
    prop::collection::vec((".+", prop::option::of(".*")), 0..8)
}

proptest! {
    #[test]
    fn property_bag_round_trip(entries in bag_entries()) {
        let bag: PropertyBag = entries.into_iter().collect();
        let encoded = bag.encode();
        prop_assert!(!encoded.contains('/') && !encoded.contains('+') && !encoded.contains(' '));
        prop_assert_eq!(PropertyBag::parse(&encoded).unwrap(), bag);
    }

    #[test]
    fn property_bag_parse_never_panics(s in ".*") {
        let _ = PropertyBag::parse(&s);
    }

    #[test]
    fn publish_topic_never_panics(s in ".*", tail in "[a-z%$/?&=.#0-9]*") {
        let _ = parse_publish_topic(&s);
        for prefix in ["devices/", "devices/d/messages/events/", "devices/d/modules/m/", "$iothub/twin/", "$iothub/methods/res/"] {
            let _ = parse_publish_topic(&format!("{prefix}{tail}"));
        }
    }

    #[test]
    fn username_never_panics(s in ".*", tail in "[a-z%?&=/-]*") {
        let _ = parse_mqtt_username(&s);
        let _ = parse_mqtt_username(&format!("h/d/{tail}"));
        let _ = parse_mqtt_username(&format!("h/d/?api-version=1{tail}"));
    }

    #[test]
    fn sas_parse_never_panics(s in ".*", tail in "[a-z%&=0-9A-F+/]*") {
        let _ = SasToken::parse(&s);
        if let Ok(t) = SasToken::parse(&format!("SharedAccessSignature {tail}")) {
            let _ = t.verify(b"k", 0);
            let _ = t.audience();
        }
    }

    #[test]
    fn connection_string_never_panics(s in ".*") {
        if let Ok(cs) = ConnectionString::parse(&s) {
            let _ = (cs.to_string(), format!("{cs:?}"), cs.x509());
        }
    }

    #[test]
    fn connection_string_round_trip(host in "[a-z.]{1,20}", dev in "[a-z0-9-]{1,20}", key in "[A-Za-z0-9+/]{4,44}={0,2}") {
        let cs = ConnectionString::device(&host, &dev, &key);
        prop_assert_eq!(ConnectionString::parse(&cs.to_string()).unwrap(), cs);
    }

    #[test]
    fn sas_round_trip(
        resource in "[a-zA-Z0-9./:_ -]{1,60}",
        key in prop::collection::vec(any::<u8>(), 1..64),
        other in prop::collection::vec(any::<u8>(), 1..64),
        policy in prop::option::of("[a-zA-Z0-9 _-]{1,20}"),
        se in 0u64..4_000_000_000,
    ) {
        let token = generate_sas_token(&resource, &key, policy.as_deref(), se);
        let t = SasToken::parse(&token).unwrap();
        prop_assert_eq!(t.resource(), resource.as_str());
        prop_assert_eq!(t.key_name(), policy.as_deref());
        prop_assert_eq!(t.expiry(), se);
        prop_assert!(t.verify(&key, se).is_ok());
        prop_assert!(t.verify(&key, se + 300).is_ok());
        prop_assert_eq!(t.verify(&key, se + 301), Err(SasError::Expired { expiry: se, now: se + 301 }));
        if other != key {
            prop_assert_eq!(t.verify(&other, se), Err(SasError::BadSignature));
            prop_assert!(t.verify_any(&[&other, &key], se).is_ok());
        }
    }
}
