#![allow(clippy::unwrap_used)]
//! Tokens, usernames and topics in the exact shapes the Azure IoT SDKs put on the wire.

use base64::Engine as _;
use iot_auth::sas::{
    Audience, SasError, SasToken, compute_signature, decode_key, generate_sas_token,
};
use iot_auth::{ConnectionString, PublishTopic, parse_mqtt_username, parse_publish_topic};

const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const NOW: u64 = 1_700_000_000;

fn key() -> Vec<u8> {
    decode_key(KEY_B64).unwrap()
}

fn sig_b64(raw_sr: &str, se: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(compute_signature(raw_sr, &key(), se))
}

#[test]
fn python_device_token_test_vector() {
    let token = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=7%2FYBn2%2BOH0PpftIzUioKUatXUTqpkyynUgfn1k7i5pk%3D&se=1700000000";
    let t = SasToken::parse(token).unwrap();
    assert_eq!(t.key_name(), None);
    t.verify(&key(), NOW).unwrap();
    assert_eq!(
        t.audience(),
        Audience::Device {
            host: "localhost".into(),
            device_id: "dev1".into()
        }
    );
    assert_eq!(
        generate_sas_token("localhost/devices/dev1", &key(), None, NOW),
        token
    );
}

#[test]
fn python_reference_values() {
    // Computed with Python's hmac/base64/urllib.parse.quote(safe="").
    assert_eq!(
        generate_sas_token("myhub.local/devices/dev1", &key(), None, NOW),
        "SharedAccessSignature sr=myhub.local%2Fdevices%2Fdev1&sig=Pv4bEKBK99Npe4zictysEgLNwFgPOy8iktq2%2F8ZRNmE%3D&se=1700000000"
    );
    assert_eq!(
        iot_auth::derive_device_key(KEY_B64, "reg-1").unwrap(),
        "YNjE5wCiB/QiFCiTQDa9LbvyCVWcu2EMyrO/zzqr7Ko="
    );
}

#[test]
fn node_device_token_with_raw_sr() {
    let sr = "myhub/devices/dev1";
    let sig = iot_auth_encode(&sig_b64(sr, NOW));
    let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={NOW}");
    let t = SasToken::parse(&token).unwrap();
    assert_eq!(t.raw_resource(), sr);
    t.verify(&key(), NOW).unwrap();
    // Signing the encoded form instead must not verify: the raw sr is what counts.
    let wrong = iot_auth_encode(&sig_b64("myhub%2Fdevices%2Fdev1", NOW));
    let t = SasToken::parse(&format!(
        "SharedAccessSignature sr={sr}&sig={wrong}&se={NOW}"
    ))
    .unwrap();
    assert_eq!(t.verify(&key(), NOW), Err(SasError::BadSignature));
}

#[test]
fn node_module_token_with_skn() {
    let sr = "myhub%2Fdevices%2Fdev1%2Fmodules%2Fmod1";
    let sig = iot_auth_encode(&sig_b64(sr, NOW));
    let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={NOW}&skn=device");
    let t = SasToken::parse(&token).unwrap();
    t.verify(&key(), NOW).unwrap();
    assert_eq!(t.key_name(), Some("device"));
    assert_eq!(
        t.audience(),
        Audience::Module {
            host: "myhub".into(),
            device_id: "dev1".into(),
            module_id: "mod1".into()
        }
    );
}

#[test]
fn service_token_for_host_with_policy() {
    let sig = iot_auth_encode(&sig_b64("myhub.local", NOW));
    let token = format!("SharedAccessSignature sr=myhub.local&sig={sig}&se={NOW}&skn=iothubowner");
    let t = SasToken::parse(&token).unwrap();
    t.verify(&key(), NOW).unwrap();
    assert_eq!(t.key_name(), Some("iothubowner"));
    assert_eq!(
        t.audience(),
        Audience::Host {
            host: "myhub.local".into()
        }
    );
    assert_eq!(
        generate_sas_token("myhub.local", &key(), Some("iothubowner"), NOW),
        token
    );
}

#[test]
fn python_service_token_leaves_slash_unencoded() {
    // urllib.parse.quote with its default safe="/" keeps `/` raw but encodes `+` and `=`.
    let sig = sig_b64("myhub.local", NOW)
        .replace('+', "%2B")
        .replace('=', "%3D");
    let token = format!("SharedAccessSignature sr=myhub.local&sig={sig}&se={NOW}&skn=iothubowner");
    SasToken::parse(&token)
        .unwrap()
        .verify(&key(), NOW)
        .unwrap();
    // The test-vector signature contains `/`, so the raw-slash form is exercised for sure.
    let token = "SharedAccessSignature sr=localhost%2Fdevices%2Fdev1&sig=7/YBn2%2BOH0PpftIzUioKUatXUTqpkyynUgfn1k7i5pk%3D&se=1700000000";
    SasToken::parse(token).unwrap().verify(&key(), NOW).unwrap();
}

#[test]
fn https_prefixed_audience() {
    let token = generate_sas_token("https://myhub.local/devices/dev1", &key(), None, NOW);
    let t = SasToken::parse(&token).unwrap();
    t.verify(&key(), NOW).unwrap();
    assert_eq!(
        t.audience(),
        Audience::Device {
            host: "myhub.local".into(),
            device_id: "dev1".into()
        }
    );
}

#[test]
fn connection_string_key_signs_token() {
    let cs = ConnectionString::parse(&format!(
        "HostName=myhub.local;DeviceId=dev1;SharedAccessKey={KEY_B64}"
    ))
    .unwrap();
    let k = decode_key(cs.shared_access_key().unwrap()).unwrap();
    let uri = format!(
        "{}/devices/{}",
        cs.host_name().unwrap(),
        cs.device_id().unwrap()
    );
    let token = generate_sas_token(&uri, &k, None, NOW + 3600);
    SasToken::parse(&token)
        .unwrap()
        .verify(&key(), NOW)
        .unwrap();
}

#[test]
fn usernames_from_both_sdks() {
    let py = parse_mqtt_username("myhub.local/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0%28cpython%203.12%3BLinux%3Bx86_64%29").unwrap();
    assert_eq!(
        (py.host.as_str(), py.device_id.as_str()),
        ("myhub.local", "dev1")
    );
    assert!(
        py.client_type
            .unwrap()
            .starts_with("azure-iot-device-iothub-py/2.14.0(")
    );
    let node = parse_mqtt_username(
        "myhub.local/dev1/mod1/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4",
    )
    .unwrap();
    assert_eq!(node.client_id(), "dev1/mod1");
    assert_eq!(node.api_version, "2021-04-12");
}

#[test]
fn node_output_event_topic() {
    let t = parse_publish_topic(
        "devices/dev1/modules/mod1/messages/events/%24.on=out1&%24.mid=1&prop=a%2Bb/",
    )
    .unwrap();
    let PublishTopic::Telemetry { properties, .. } = &t else {
        panic!("{t:?}")
    };
    let split = properties.split_system();
    assert_eq!(
        split.system_value(iot_auth::SystemProperty::OutputName),
        Some("out1")
    );
    assert_eq!(split.application.get("prop"), Some("a+b"));
}

/// Percent-encodes with no safe characters except unreserved ones, as the SDKs do for `sig`.
fn iot_auth_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
