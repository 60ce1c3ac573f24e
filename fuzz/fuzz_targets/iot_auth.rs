//! The strings devices send at CONNECT and PUBLISH: SAS tokens, connection strings, MQTT
//! usernames, publish topics, subscription filters and property bags. No input panics, and a
//! token never verifies against a key it was not signed with.
#![no_main]

use iot_auth::sas::{SasToken, compute_signature};
use iot_auth::{
    ConnectionString, PropertyBag, classify_subscription, parse_mqtt_username, parse_publish_topic,
    percent_decode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = SasToken::parse(s) {
        let _ = (token.audience(), token.resource(), token.key_name());
        // A token verifies exactly when its signature is the HMAC of its resource and expiry.
        let key = [0u8; 32];
        let expected = compute_signature(token.raw_resource(), &key, token.expiry());
        let verified = token.verify(&key, token.expiry()).is_ok();
        assert_eq!(verified, token.signature() == expected.as_slice());
        let _ = format!("{token:?}");
    }
    if let Ok(cs) = ConnectionString::parse(s) {
        // Printing puts the known keys first; printing again changes nothing and loses nothing.
        let text = cs.to_string();
        let again = ConnectionString::parse(&text).expect("a printed connection string parses");
        assert_eq!(again.to_string(), text);
        let mut before: Vec<_> = cs.entries().collect();
        let mut after: Vec<_> = again.entries().collect();
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after);
    }
    if let Ok(u) = parse_mqtt_username(s) {
        assert!(!u.api_version.trim().is_empty());
        let _ = u.client_id();
    }
    if let Ok(topic) = parse_publish_topic(s) {
        let _ = (topic.device_id(), topic.module_id(), topic.rid());
    }
    let (filter, ids) = s.split_once('\n').unwrap_or((s, "d"));
    let (device, module) = ids
        .split_once('/')
        .map_or((ids, None), |(d, m)| (d, Some(m)));
    let _ = classify_subscription(filter, device, module);
    if let Ok(bag) = PropertyBag::parse(s) {
        assert_eq!(PropertyBag::parse(&bag.encode()).ok(), Some(bag));
    }
    let _ = percent_decode(s);
});
