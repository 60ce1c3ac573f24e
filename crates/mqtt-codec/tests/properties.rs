#![allow(clippy::unwrap_used)]
//! Property tests: no input panics the decoder, every packet survives encode then decode, and
//! decoding consumes exactly one packet.

use mqtt_codec::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckReturnCode, Subscribe,
    Unsubscribe, Will, decode, encode,
};
use proptest::collection::vec;
use proptest::prelude::*;

const MAX: usize = 1 << 20;

// ---- strategies --------------------------------------------------------------------------------

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

/// Topic names: no wildcards, no U+0000, some multi-byte characters.
fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/$%=&._ é€😀-]{1,40}"
}

/// Topic filters: any non-empty string without U+0000 (wildcards anywhere).
fn topic_filter() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9/+#$é]{1,30}",
        any::<String>().prop_map(|s| format!("f{}", s.replace('\0', "")))
    ]
}

/// Any UTF-8 string without U+0000.
fn mqtt_string() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| s.replace('\0', ""))
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..16), vec(any::<u8>(), 0..300)]
}

fn will() -> impl Strategy<Value = Will> {
    (topic_name(), bytes(), qos(), any::<bool>()).prop_map(|(topic, payload, qos, retain)| Will {
        topic,
        payload,
        qos,
        retain,
    })
}

fn connect() -> impl Strategy<Value = Connect> {
    let protocol = prop_oneof![
        Just(("MQTT", 4u8)),
        Just(("MQIsdp", 3u8)),
        any::<u8>().prop_map(|level| ("MQTT", level)),
        any::<u8>().prop_map(|level| ("MQIsdp", level)),
    ];
    let credentials = (
        proptest::option::of(mqtt_string()),
        proptest::option::of(bytes()),
    );
    (
        protocol,
        any::<bool>(),
        any::<u16>(),
        mqtt_string(),
        proptest::option::of(will()),
        credentials,
    )
        .prop_map(
            |((name, level), clean_session, keep_alive, client_id, will, (username, password))| {
                Connect {
                    protocol_name: name.into(),
                    protocol_level: level,
                    clean_session,
                    keep_alive,
                    client_id,
                    will,
                    // MQTT 3.1.1: no password without a user name.
                    password: username.as_ref().and(password),
                    username,
                }
            },
        )
}

fn connack() -> impl Strategy<Value = ConnAck> {
    (any::<bool>(), 0..=5u8).prop_map(|(session_present, raw)| {
        let code = ConnectReturnCode::from_u8(raw).unwrap();
        ConnAck {
            session_present: session_present && code == ConnectReturnCode::Accepted,
            code,
        }
    })
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        packet_id(),
        bytes(),
    )
        .prop_map(|(qos, dup, retain, topic, id, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                packet_id: (!qos0).then_some(id),
                payload,
            }
        })
}

fn suback_code() -> impl Strategy<Value = SubAckReturnCode> {
    prop_oneof![
        qos().prop_map(SubAckReturnCode::Success),
        Just(SubAckReturnCode::Failure)
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect().prop_map(|c| Packet::Connect(Box::new(c))),
        connack().prop_map(Packet::ConnAck),
        publish().prop_map(Packet::Publish),
        packet_id().prop_map(Packet::PubAck),
        packet_id().prop_map(Packet::PubRec),
        packet_id().prop_map(Packet::PubRel),
        packet_id().prop_map(Packet::PubComp),
        (packet_id(), vec((topic_filter(), qos()), 1..5))
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters })),
        (packet_id(), vec(suback_code(), 1..5)).prop_map(|(packet_id, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
            })
        }),
        (packet_id(), vec(topic_filter(), 1..5)).prop_map(|(packet_id, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters })
        }),
        packet_id().prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

/// A first byte with a valid type, with correct or random flags.
fn first_byte() -> impl Strategy<Value = u8> {
    let valid =
        (1..=14u8).prop_map(|t| (t << 4) | if matches!(t, 6 | 8 | 10) { 0b0010 } else { 0 });
    prop_oneof![valid, (0x30..=0x3Du8), any::<u8>()]
}

/// A frame whose remaining length matches its random body, so the body parsers are exercised.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (first_byte(), vec(any::<u8>(), 0..200)).prop_map(|(first, body)| {
        let mut frame = vec![first];
        let mut len = body.len();
        loop {
            let low = u8::try_from(len & 0x7F).unwrap();
            len >>= 7;
            frame.push(if len == 0 { low } else { low | 0x80 });
            if len == 0 {
                break;
            }
        }
        frame.extend(body);
        frame
    })
}

fn encoded(packet: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, &mut out).unwrap();
    out
}

/// Whatever the decoder accepts, the encoder accepts too, and it decodes back the same.
fn assert_reencodes(packet: &Packet) {
    let again = encoded(packet);
    assert_eq!(
        decode(&again, usize::MAX).unwrap(),
        Some((packet.clone(), again.len()))
    );
}

// ---- properties --------------------------------------------------------------------------------

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..512), max in 0usize..1024) {
        if let Ok(Some((packet, used))) = decode(&buf, max) {
            prop_assert!(used <= buf.len() && used <= max);
            assert_reencodes(&packet);
        }
    }

    #[test]
    fn framed_garbage_never_panics(frame in framed_garbage()) {
        match decode(&frame, MAX) {
            Ok(Some((packet, used))) => {
                prop_assert_eq!(used, frame.len());
                assert_reencodes(&packet);
            }
            Ok(None) => prop_assert!(false, "a whole frame must decode or fail"),
            Err(_) => {}
        }
    }

    #[test]
    fn encode_then_decode_round_trips(packet in packet()) {
        let bytes = encoded(&packet);
        prop_assert_eq!(packet.encoded_len().unwrap(), bytes.len());
        prop_assert_eq!(decode(&bytes, MAX).unwrap(), Some((packet, bytes.len())));
    }

    #[test]
    fn decode_consumes_exactly_one_packet(packet in packet(), trailing in vec(any::<u8>(), 0..32)) {
        let bytes = encoded(&packet);
        let mut buf = bytes.clone();
        buf.extend(trailing);
        prop_assert_eq!(decode(&buf, MAX).unwrap(), Some((packet, bytes.len())));
    }

    #[test]
    fn strict_prefixes_need_more_bytes(packet in packet()) {
        let bytes = encoded(&packet);
        for cut in 0..bytes.len() {
            prop_assert_eq!(decode(&bytes[..cut], MAX), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn packet_sequences_decode_in_order(packets in vec(packet(), 1..6)) {
        let stream: Vec<u8> = packets.iter().flat_map(encoded).collect();
        let mut rest = stream.as_slice();
        let mut decoded = Vec::new();
        while let Some((packet, used)) = decode(rest, MAX).unwrap() {
            decoded.push(packet);
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn mutated_encodings_never_panic(packet in packet(), index in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encoded(&packet);
        let i = index.index(bytes.len());
        bytes[i] = byte;
        if let Ok(Some((packet, used))) = decode(&bytes, MAX) {
            prop_assert!(used <= bytes.len());
            assert_reencodes(&packet);
        }
    }

    #[test]
    fn size_limit_is_enforced_from_the_header(packet in packet()) {
        let bytes = encoded(&packet);
        let header_len = bytes.iter().skip(1).position(|b| b & 0x80 == 0).unwrap() + 2;
        let max = bytes.len() - 1;
        prop_assert_eq!(
            decode(&bytes[..header_len], max),
            Err(mqtt_codec::DecodeError::PacketTooLarge { size: bytes.len(), max })
        );
    }
}
