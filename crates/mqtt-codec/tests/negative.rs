#![allow(clippy::unwrap_used)]
//! Malformed input must be refused with an error that names the problem, and never as early as a
//! strict prefix of a valid packet; packets that break the rules must not encode.

use mqtt_codec::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, EncodeError, MAX_REMAINING_LENGTH, Packet,
    Publish, QoS, SubAck, Subscribe, Unsubscribe, Will, decode, encode,
};

const MAX: usize = 64 * 1024;

fn violation(bytes: &[u8]) -> &'static str {
    match decode(bytes, MAX) {
        Err(DecodeError::ProtocolViolation(why)) => why,
        other => panic!("expected a protocol violation for {bytes:02X?}, got {other:?}"),
    }
}

fn connect_with_flags(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3C];
    body.extend_from_slice(payload);
    let mut bytes = vec![0x10, u8::try_from(body.len()).unwrap()];
    bytes.extend(body);
    bytes
}

fn publish(qos: QoS, topic: &str, packet_id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id,
        payload: b"x".to_vec(),
    })
}

// ---- size limits and the fixed header ----------------------------------------------------------

#[test]
fn oversize_publish_rejected_from_the_header_alone() {
    let big = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/dev1/messages/events/".into(),
        packet_id: Some(1),
        payload: vec![0; 1 << 20],
    });
    let mut bytes = Vec::new();
    encode(&big, &mut bytes).unwrap();
    let size = bytes.len();
    assert_eq!(
        &bytes[..4],
        &[0x32, 0xA1, 0x80, 0x40],
        "a 3-byte remaining length"
    );
    for held in [4, 5] {
        assert_eq!(
            decode(&bytes[..held], MAX),
            Err(DecodeError::PacketTooLarge { size, max: MAX }),
            "{held} bytes held"
        );
    }
    // While the length is still incomplete there is nothing to judge yet.
    assert_eq!(decode(&bytes[..3], MAX), Ok(None));
    // The same packet within a larger limit decodes.
    assert_eq!(decode(&bytes, size).unwrap().unwrap(), (big, size));
}

#[test]
fn hub_style_one_mebibyte_header() {
    // What the hub's integration test sends: QoS 1 PUBLISH announcing 1 MiB, nothing more.
    assert_eq!(
        decode(&[0x32, 0x80, 0x80, 0x40], MAX),
        Err(DecodeError::PacketTooLarge {
            size: 4 + (1 << 20),
            max: MAX
        })
    );
}

#[test]
fn limit_counts_the_fixed_header() {
    // PINGREQ is 2 bytes.
    assert_eq!(
        decode(&[0xC0, 0x00], 1),
        Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
    );
    assert_eq!(decode(&[0xC0, 0x00], 2), Ok(Some((Packet::PingReq, 2))));
}

#[test]
fn five_byte_remaining_length_is_malformed() {
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], usize::MAX),
        Err(DecodeError::MalformedRemainingLength)
    );
    // Already known at the 4th length byte, before a 5th arrives.
    assert_eq!(
        decode(&[0x30, 0x80, 0x80, 0x80, 0x80], usize::MAX),
        Err(DecodeError::MalformedRemainingLength)
    );
}

#[test]
fn reserved_packet_types() {
    assert_eq!(decode(&[0x00], MAX), Err(DecodeError::InvalidPacketType(0)));
    assert_eq!(
        decode(&[0xF0, 0x00], MAX),
        Err(DecodeError::InvalidPacketType(15))
    );
}

#[test]
fn reserved_bits_in_fixed_header_flags() {
    let cases: [(u8, u8, u8); 8] = [
        (0x80, 8, 0b0000),  // SUBSCRIBE must be 0b0010
        (0x83, 8, 0b0011),  // SUBSCRIBE
        (0xA0, 10, 0b0000), // UNSUBSCRIBE must be 0b0010
        (0x60, 6, 0b0000),  // PUBREL must be 0b0010
        (0x11, 1, 0b0001),  // CONNECT must be 0
        (0x42, 4, 0b0010),  // PUBACK must be 0
        (0xC8, 12, 0b1000), // PINGREQ must be 0
        (0xE1, 14, 0b0001), // DISCONNECT must be 0
    ];
    for (first, packet_type, flags) in cases {
        // Refused from the first byte alone.
        assert_eq!(
            decode(&[first], MAX),
            Err(DecodeError::InvalidFlags { packet_type, flags }),
            "{first:#04x}"
        );
    }
}

#[test]
fn publish_qos3() {
    assert_eq!(
        decode(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01], MAX),
        Err(DecodeError::InvalidQoS(3))
    );
    assert_eq!(decode(&[0x3F], MAX), Err(DecodeError::InvalidQoS(3)));
}

#[test]
fn publish_qos0_with_dup() {
    assert_eq!(
        violation(&[0x38, 0x03, 0x00, 0x01, b't']),
        "DUP flag set on a QoS 0 PUBLISH"
    );
}

#[test]
fn fixed_size_packets_with_the_wrong_length() {
    let cases: [(&[u8], u8, usize); 5] = [
        (&[0x40, 0x03, 0x00, 0x01, 0x00], 4, 3),
        (&[0x40, 0x01, 0x01], 4, 1),
        (&[0xC0, 0x01, 0x00], 12, 1),
        (&[0x20, 0x03, 0x00, 0x00, 0x00], 2, 3),
        (&[0xE0, 0x7F], 14, 127),
    ];
    for (bytes, packet_type, remaining) in cases {
        // Refused from the header, without waiting for the body.
        let header = &bytes[..2];
        assert_eq!(
            decode(header, MAX),
            Err(DecodeError::InvalidRemainingLength {
                packet_type,
                remaining
            })
        );
    }
}

// ---- fields ------------------------------------------------------------------------------------

#[test]
fn length_prefix_beyond_the_packet() {
    // Topic length 10 in a 3-byte body, even though more bytes follow in the buffer.
    assert_eq!(
        decode(
            &[0x30, 0x03, 0x00, 0x0A, b't', 0xC0, 0x00, 0, 0, 0, 0, 0],
            MAX
        ),
        Err(DecodeError::UnexpectedEof)
    );
    // QoS 1 PUBLISH whose body ends inside the packet id.
    assert_eq!(
        decode(&[0x32, 0x04, 0x00, 0x01, b't', 0x00], MAX),
        Err(DecodeError::UnexpectedEof)
    );
    // SUBSCRIBE whose last filter has no QoS byte.
    assert_eq!(
        decode(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], MAX),
        Err(DecodeError::UnexpectedEof)
    );
}

#[test]
fn publish_topic_with_wildcards() {
    for topic in [b"a/+/b".as_slice(), b"a/#", b"+", b"#"] {
        let mut bytes = vec![
            0x30,
            u8::try_from(topic.len() + 2).unwrap(),
            0x00,
            u8::try_from(topic.len()).unwrap(),
        ];
        bytes.extend_from_slice(topic);
        assert_eq!(
            violation(&bytes),
            "wildcard character in PUBLISH topic name"
        );
    }
}

#[test]
fn publish_empty_topic() {
    assert_eq!(
        violation(&[0x30, 0x02, 0x00, 0x00]),
        "empty PUBLISH topic name"
    );
}

#[test]
fn invalid_utf8_topic() {
    let cases: [&[u8]; 4] = [
        &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],       // bad continuation
        &[0x30, 0x03, 0x00, 0x01, 0xFF],             // never valid
        &[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80], // surrogate U+D800
        &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'], // U+0000
    ];
    for bytes in cases {
        assert_eq!(
            decode(bytes, MAX),
            Err(DecodeError::InvalidUtf8),
            "{bytes:02X?}"
        );
    }
}

#[test]
fn packet_id_zero() {
    assert_eq!(
        violation(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]),
        "packet identifier must be non-zero"
    );
    assert_eq!(
        violation(&[0x40, 0x02, 0x00, 0x00]),
        "packet identifier must be non-zero"
    );
    assert_eq!(
        violation(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
        "packet identifier must be non-zero"
    );
    assert_eq!(
        violation(&[0xB0, 0x02, 0x00, 0x00]),
        "packet identifier must be non-zero"
    );
}

#[test]
fn subscribe_with_zero_filters() {
    assert_eq!(
        violation(&[0x82, 0x02, 0x00, 0x01]),
        "SUBSCRIBE without any topic filter"
    );
}

#[test]
fn unsubscribe_with_zero_filters() {
    assert_eq!(
        violation(&[0xA2, 0x02, 0x00, 0x01]),
        "UNSUBSCRIBE without any topic filter"
    );
}

#[test]
fn empty_topic_filters() {
    assert_eq!(
        violation(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]),
        "empty topic filter"
    );
    assert_eq!(
        violation(&[0xA2, 0x04, 0x00, 0x01, 0x00, 0x00]),
        "empty topic filter"
    );
}

#[test]
fn subscribe_requested_qos_out_of_range() {
    assert_eq!(
        decode(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03], MAX),
        Err(DecodeError::InvalidQoS(3))
    );
    // Reserved upper bits of the requested QoS byte.
    assert_eq!(
        decode(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x41], MAX),
        Err(DecodeError::InvalidQoS(0x41))
    );
}

#[test]
fn suback_bad_return_codes() {
    assert_eq!(
        decode(&[0x90, 0x03, 0x00, 0x01, 0x03], MAX),
        Err(DecodeError::InvalidSubAckReturnCode(3))
    );
    assert_eq!(
        decode(&[0x90, 0x03, 0x00, 0x01, 0x81], MAX),
        Err(DecodeError::InvalidSubAckReturnCode(0x81))
    );
    assert_eq!(
        violation(&[0x90, 0x02, 0x00, 0x01]),
        "SUBACK without any return code"
    );
}

#[test]
fn connack_violations() {
    assert_eq!(
        decode(&[0x20, 0x02, 0x00, 0x06], MAX),
        Err(DecodeError::InvalidConnectReturnCode(6))
    );
    assert_eq!(
        violation(&[0x20, 0x02, 0x02, 0x00]),
        "reserved CONNACK acknowledge flags are set"
    );
    assert_eq!(
        violation(&[0x20, 0x02, 0x01, 0x05]),
        "CONNACK with session present and a refusal code"
    );
}

// ---- CONNECT -----------------------------------------------------------------------------------

#[test]
fn connect_reserved_flag() {
    assert_eq!(
        violation(&connect_with_flags(0x03, &[0x00, 0x00])),
        "reserved CONNECT flag (bit 0) is set"
    );
}

#[test]
fn connect_password_without_username() {
    let bytes = connect_with_flags(0x42, &[0x00, 0x00, 0x00, 0x01, b'p']);
    assert_eq!(
        violation(&bytes),
        "CONNECT password flag set without the user name flag"
    );
}

#[test]
fn connect_will_bits_without_will_flag() {
    for flags in [0x0A, 0x12, 0x22] {
        let bytes = connect_with_flags(flags, &[0x00, 0x00]);
        assert_eq!(
            violation(&bytes),
            "will QoS or will retain set without the will flag",
            "{flags:#04x}"
        );
    }
}

#[test]
fn connect_will_qos3() {
    let bytes = connect_with_flags(0x1E, &[0x00, 0x00, 0x00, 0x01, b't', 0x00, 0x00]);
    assert_eq!(decode(&bytes, MAX), Err(DecodeError::InvalidQoS(3)));
}

#[test]
fn connect_will_topic_with_wildcard() {
    let bytes = connect_with_flags(0x06, &[0x00, 0x00, 0x00, 0x01, b'#', 0x00, 0x00]);
    assert_eq!(violation(&bytes), "will topic is empty or has a wildcard");
}

#[test]
fn connect_invalid_utf8_client_id() {
    assert_eq!(
        decode(&connect_with_flags(0x02, &[0x00, 0x01, 0x80]), MAX),
        Err(DecodeError::InvalidUtf8)
    );
}

#[test]
fn connect_trailing_bytes() {
    let bytes = connect_with_flags(0x02, &[0x00, 0x00, 0xAB, 0xCD]);
    assert_eq!(
        decode(&bytes, MAX),
        Err(DecodeError::TrailingBytes {
            packet_type: 1,
            count: 2
        })
    );
}

#[test]
fn connect_missing_announced_username() {
    assert_eq!(
        decode(&connect_with_flags(0x82, &[0x00, 0x00]), MAX),
        Err(DecodeError::UnexpectedEof)
    );
}

#[test]
fn connect_unknown_protocol_name() {
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'H', b'T', b'T', b'P', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(
        decode(&bytes, MAX),
        Err(DecodeError::InvalidProtocolName("HTTP".into()))
    );
}

#[test]
fn connect_mqtt5_is_decoded_for_the_server_to_refuse() {
    // MQTT 5 CONNECT: properties (session expiry 3600) before the client id "c".
    let bytes = [
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, //
        0x05, 0x11, 0x00, 0x00, 0x0E, 0x10, // properties
        0x00, 0x01, b'c',
    ];
    let expected = Connect {
        protocol_name: "MQTT".into(),
        protocol_level: 5,
        clean_session: true,
        keep_alive: 60,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
    };
    assert_eq!(
        decode(&bytes, MAX),
        Ok(Some((Packet::Connect(Box::new(expected)), bytes.len())))
    );
}

#[test]
fn connect_unknown_level_with_311_layout_keeps_its_fields() {
    let bytes = [
        0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x07, 0x00, 0x00, 0x05, 0x00, 0x03, b'a',
        b'b', b'c',
    ];
    let Ok(Some((Packet::Connect(c), 17))) = decode(&bytes, MAX) else {
        panic!("not decoded")
    };
    assert_eq!(
        (
            c.protocol_level,
            c.client_id.as_str(),
            c.keep_alive,
            c.clean_session
        ),
        (7, "abc", 5, false)
    );
    // The same bytes at level 4 are strict: a reserved flag makes them an error, not a fallback.
    let strict = connect_with_flags(0x01, &[0x00, 0x00]);
    assert!(decode(&strict, MAX).is_err());
}

// ---- error messages ----------------------------------------------------------------------------

#[test]
fn errors_read_well_in_a_log_line() {
    let cases = [
        (
            DecodeError::PacketTooLarge {
                size: 1_048_580,
                max: 65_536,
            },
            "packet of 1048580 bytes exceeds the 65536-byte limit",
        ),
        (
            DecodeError::InvalidFlags {
                packet_type: 8,
                flags: 0,
            },
            "invalid fixed-header flags 0b0000 for SUBSCRIBE (type 8)",
        ),
        (
            DecodeError::InvalidPacketType(15),
            "invalid control packet type 15 (reserved)",
        ),
        (DecodeError::InvalidQoS(3), "invalid QoS value 3"),
        (
            DecodeError::ProtocolViolation("SUBSCRIBE without any topic filter"),
            "protocol violation: SUBSCRIBE without any topic filter",
        ),
        (
            DecodeError::TrailingBytes {
                packet_type: 1,
                count: 2,
            },
            "2 unexpected byte(s) after the last field of CONNECT",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}

#[test]
fn long_unknown_protocol_names_are_cut_in_the_error() {
    let name = "X".repeat(200);
    let mut bytes = vec![0x10, 0xD0, 0x01, 0x00, 200];
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&[0x04, 0x02, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(
        decode(&bytes, MAX),
        Err(DecodeError::InvalidProtocolName("X".repeat(32)))
    );
}

// ---- encoding ----------------------------------------------------------------------------------

fn encode_err(packet: &Packet) -> EncodeError {
    let mut out = vec![0xAA];
    let err = encode(packet, &mut out).unwrap_err();
    assert_eq!(out, [0xAA], "a failed encode must not append anything");
    assert_eq!(packet.encoded_len(), Err(err.clone()));
    err
}

fn connect() -> Connect {
    Connect {
        protocol_name: "MQTT".into(),
        protocol_level: 4,
        clean_session: true,
        keep_alive: 60,
        client_id: "dev1".into(),
        will: None,
        username: None,
        password: None,
    }
}

#[test]
fn encode_publish_packet_id_rules() {
    assert_eq!(
        encode_err(&publish(QoS::AtLeastOnce, "t", None)),
        EncodeError::MissingPacketId(1)
    );
    assert_eq!(
        encode_err(&publish(QoS::ExactlyOnce, "t", None)),
        EncodeError::MissingPacketId(2)
    );
    assert_eq!(
        encode_err(&publish(QoS::AtMostOnce, "t", Some(1))),
        EncodeError::UnexpectedPacketId
    );
    assert_eq!(
        encode_err(&publish(QoS::AtLeastOnce, "t", Some(0))),
        EncodeError::ZeroPacketId("PUBLISH")
    );
    let Packet::Publish(mut dup) = publish(QoS::AtMostOnce, "t", None) else {
        unreachable!()
    };
    dup.dup = true;
    assert!(matches!(
        encode_err(&Packet::Publish(dup)),
        EncodeError::Invalid(_)
    ));
}

#[test]
fn encode_bad_topics_and_strings() {
    assert!(matches!(
        encode_err(&publish(QoS::AtMostOnce, "a/+", None)),
        EncodeError::Invalid(_)
    ));
    assert!(matches!(
        encode_err(&publish(QoS::AtMostOnce, "", None)),
        EncodeError::Invalid(_)
    ));
    assert_eq!(
        encode_err(&publish(QoS::AtMostOnce, "a\0b", None)),
        EncodeError::NulInString("topic")
    );
    let long = "t".repeat(65_536);
    assert_eq!(
        encode_err(&publish(QoS::AtMostOnce, &long, None)),
        EncodeError::FieldTooLong {
            field: "topic",
            len: 65_536
        }
    );
    // 65,535 bytes is the largest string that fits (remaining length 2 + 65,535 + 1 = 65,538).
    let mut out = Vec::new();
    encode(&publish(QoS::AtMostOnce, &long[1..], None), &mut out).unwrap();
    assert_eq!(&out[..6], &[0x30, 0x82, 0x80, 0x04, 0xFF, 0xFF]);
}

#[test]
fn encode_payload_over_the_remaining_length_limit() {
    let Packet::Publish(mut p) = publish(QoS::AtMostOnce, "t", None) else {
        unreachable!()
    };
    p.payload = vec![0; MAX_REMAINING_LENGTH];
    let remaining = MAX_REMAINING_LENGTH + 3;
    assert_eq!(
        encode_err(&Packet::Publish(p)),
        EncodeError::PacketTooLarge { remaining }
    );
}

#[test]
fn encode_zero_packet_ids_and_empty_lists() {
    assert_eq!(
        encode_err(&Packet::PubAck(0)),
        EncodeError::ZeroPacketId("PUBACK")
    );
    assert_eq!(
        encode_err(&Packet::PubRel(0)),
        EncodeError::ZeroPacketId("PUBREL")
    );
    assert_eq!(
        encode_err(&Packet::UnsubAck(0)),
        EncodeError::ZeroPacketId("UNSUBACK")
    );
    let sub = Subscribe {
        packet_id: 0,
        filters: vec![("a".into(), QoS::AtMostOnce)],
    };
    assert_eq!(
        encode_err(&Packet::Subscribe(sub)),
        EncodeError::ZeroPacketId("SUBSCRIBE")
    );
    assert!(matches!(
        encode_err(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![]
        })),
        EncodeError::Invalid(_)
    ));
    let empty_filter = Subscribe {
        packet_id: 1,
        filters: vec![(String::new(), QoS::AtMostOnce)],
    };
    assert!(matches!(
        encode_err(&Packet::Subscribe(empty_filter)),
        EncodeError::Invalid(_)
    ));
    assert!(matches!(
        encode_err(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 1,
            filters: vec![]
        })),
        EncodeError::Invalid(_)
    ));
    assert!(matches!(
        encode_err(&Packet::SubAck(SubAck {
            packet_id: 1,
            return_codes: vec![]
        })),
        EncodeError::Invalid(_)
    ));
}

#[test]
fn encode_connect_violations() {
    let no_user = Connect {
        password: Some(b"p".to_vec()),
        ..connect()
    };
    assert!(matches!(
        encode_err(&Packet::Connect(Box::new(no_user))),
        EncodeError::Invalid(_)
    ));
    let bad_name = Connect {
        protocol_name: "MQTT5".into(),
        ..connect()
    };
    assert!(matches!(
        encode_err(&Packet::Connect(Box::new(bad_name))),
        EncodeError::Invalid(_)
    ));
    let will = Will {
        topic: "a/#".into(),
        payload: vec![],
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let bad_will = Connect {
        will: Some(will),
        ..connect()
    };
    assert!(matches!(
        encode_err(&Packet::Connect(Box::new(bad_will))),
        EncodeError::Invalid(_)
    ));
    let user = Connect {
        username: Some("u".into()),
        password: Some(vec![0; 70_000]),
        ..connect()
    };
    assert_eq!(
        encode_err(&Packet::Connect(Box::new(user))),
        EncodeError::FieldTooLong {
            field: "password",
            len: 70_000
        }
    );
    let nul = Connect {
        client_id: "a\0".into(),
        ..connect()
    };
    assert_eq!(
        encode_err(&Packet::Connect(Box::new(nul))),
        EncodeError::NulInString("client id")
    );
}

#[test]
fn encode_connack_session_present_with_refusal() {
    let ack = ConnAck {
        session_present: true,
        code: ConnectReturnCode::NotAuthorized,
    };
    assert!(matches!(
        encode_err(&Packet::ConnAck(ack)),
        EncodeError::Invalid(_)
    ));
}
