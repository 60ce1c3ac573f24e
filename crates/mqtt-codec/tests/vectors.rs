#![allow(clippy::unwrap_used)]
//! Hand-written byte vectors for every packet type: each must decode to the expected packet and
//! the packet must encode back to exactly these bytes.

use mqtt_codec::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, SubAckReturnCode, Subscribe,
    Unsubscribe, Will, decode, encode,
};

const MAX: usize = 4 << 20;

/// Exact bytes and the packet they are.
type Vector = (Vec<u8>, Packet);

const AZURE_PY_USERNAME: &str =
    "myhub.local/dev1/?api-version=2019-10-01&DeviceClientType=azure-iot-device-iothub-py%2F2.14.0";
const AZURE_PY_PASSWORD: &str = "SharedAccessSignature sr=myhub.local%2Fdevices%2Fdev1\
     &sig=Xb0gNHVmJp3kq8l9UZtV0c2xOkzFqKPqkCwC0x5Zy1E%3D&se=1767225600";
const X509_USERNAME: &str =
    "myhub.local/dev2/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.0";
const TELEMETRY_TOPIC: &str = "devices/dev1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8";

/// Decodes `bytes` to `packet` using all of them, and encodes `packet` to exactly `bytes`.
fn assert_vector(name: &str, bytes: &[u8], packet: &Packet) {
    assert_eq!(
        decode(bytes, MAX).unwrap(),
        Some((packet.clone(), bytes.len())),
        "decoding {name}"
    );
    let mut out = Vec::new();
    encode(packet, &mut out).unwrap();
    assert_eq!(out, bytes, "encoding {name}");
    assert_eq!(
        packet.encoded_len().unwrap(),
        bytes.len(),
        "encoded_len of {name}"
    );
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// ---- the vectors -------------------------------------------------------------------------------

/// CONNECT exactly as azure-iot-device (Python SDK, paho-mqtt) sends it with a SAS token.
fn connect_azure_py() -> Vector {
    assert_eq!(AZURE_PY_USERNAME.len(), 0x5D);
    assert_eq!(AZURE_PY_PASSWORD.len(), 0x76);
    let bytes = cat(&[
        // CONNECT, remaining length 231 = 0xE7 0x01.
        &[0x10, 0xE7, 0x01],
        // "MQTT", level 4, flags user name + password (clean session off), keep-alive 60.
        &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC0, 0x00, 0x3C],
        &[0x00, 0x04, b'd', b'e', b'v', b'1'],
        &[0x00, 0x5D],
        AZURE_PY_USERNAME.as_bytes(),
        &[0x00, 0x76],
        AZURE_PY_PASSWORD.as_bytes(),
    ]);
    let packet = Packet::Connect(Box::new(Connect {
        protocol_name: "MQTT".into(),
        protocol_level: 4,
        clean_session: false,
        keep_alive: 60,
        client_id: "dev1".into(),
        will: None,
        username: Some(AZURE_PY_USERNAME.into()),
        password: Some(AZURE_PY_PASSWORD.as_bytes().to_vec()),
    }));
    (bytes, packet)
}

/// X.509 authentication: a user name and no password.
fn connect_x509() -> Vector {
    assert_eq!(X509_USERNAME.len(), 0x53);
    let bytes = cat(&[
        &[0x10, 0x65],
        &[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x80, 0x00, 0xF0],
        &[0x00, 0x04, b'd', b'e', b'v', b'2'],
        &[0x00, 0x53],
        X509_USERNAME.as_bytes(),
    ]);
    let packet = Packet::Connect(Box::new(Connect {
        protocol_name: "MQTT".into(),
        protocol_level: 4,
        clean_session: false,
        keep_alive: 240,
        client_id: "dev2".into(),
        will: None,
        username: Some(X509_USERNAME.into()),
        password: None,
    }));
    (bytes, packet)
}

/// MQTT 3.1 ("MQIsdp", level 3) with a retained QoS 1 will and clean session.
fn connect_mqisdp_will() -> Vector {
    let bytes = vec![
        0x10, 0x1B, // CONNECT, 27 bytes
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, // "MQIsdp" level 3
        0x2E, // will retain | will QoS 1 | will | clean session
        0x00, 0x0A, // keep-alive 10
        0x00, 0x01, b'c', // client id "c"
        0x00, 0x04, b'l', b'w', b'/', b't', // will topic "lw/t"
        0x00, 0x04, b'g', b'o', b'n', b'e', // will payload "gone"
    ];
    let packet = Packet::Connect(Box::new(Connect {
        protocol_name: "MQIsdp".into(),
        protocol_level: 3,
        clean_session: true,
        keep_alive: 10,
        client_id: "c".into(),
        will: Some(Will {
            topic: "lw/t".into(),
            payload: b"gone".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true,
        }),
        username: None,
        password: None,
    }));
    (bytes, packet)
}

/// The smallest CONNECT: empty client id, clean session, keep-alive off.
fn connect_minimal() -> Vector {
    let bytes = vec![
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00,
    ];
    let packet = Packet::Connect(Box::new(Connect {
        protocol_name: "MQTT".into(),
        protocol_level: 4,
        clean_session: true,
        keep_alive: 0,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
    }));
    (bytes, packet)
}

/// A QoS 2 will without retain, user name and binary (non-UTF-8) password.
fn connect_full() -> Vector {
    let bytes = vec![
        0x10, 0x1F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, //
        0xD4, // user name | password | will QoS 2 | will
        0xFF, 0xFF, // keep-alive 65535
        0x00, 0x02, b'i', b'd', // client id
        0x00, 0x02, b'w', b't', // will topic
        0x00, 0x00, // empty will payload
        0x00, 0x04, b'u', 0xC3, 0xA9, b'r', // user name "uér"
        0x00, 0x03, 0x00, 0xFF, 0x80, // password bytes
    ];
    let packet = Packet::Connect(Box::new(Connect {
        protocol_name: "MQTT".into(),
        protocol_level: 4,
        clean_session: false,
        keep_alive: u16::MAX,
        client_id: "id".into(),
        will: Some(Will {
            topic: "wt".into(),
            payload: Vec::new(),
            qos: QoS::ExactlyOnce,
            retain: false,
        }),
        username: Some("uér".into()),
        password: Some(vec![0x00, 0xFF, 0x80]),
    }));
    (bytes, packet)
}

fn connack(session_present: bool, code: ConnectReturnCode) -> Vector {
    let bytes = vec![0x20, 0x02, u8::from(session_present), code.as_u8()];
    (
        bytes,
        Packet::ConnAck(ConnAck {
            session_present,
            code,
        }),
    )
}

fn publish_telemetry_qos1() -> Vector {
    let payload = br#"{"temperature":21.5}"#;
    let bytes = cat(&[
        &[0x32, 0x5B, 0x00, 0x43],
        TELEMETRY_TOPIC.as_bytes(),
        &[0x00, 0x01],
        payload,
    ]);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TELEMETRY_TOPIC.into(),
        packet_id: Some(1),
        payload: payload.to_vec(),
    });
    (bytes, packet)
}

fn publish_qos0() -> Vector {
    let bytes = vec![0x30, 0x05, 0x00, 0x01, b't', b'h', b'i'];
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        payload: b"hi".to_vec(),
    });
    (bytes, packet)
}

/// QoS 2, DUP and RETAIN all set, empty payload.
fn publish_qos2_dup_retain() -> Vector {
    let bytes = vec![0x3D, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0xBE, 0xEF];
    let packet = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: "a/b".into(),
        packet_id: Some(0xBEEF),
        payload: Vec::new(),
    });
    (bytes, packet)
}

/// A 200-byte payload needs a two-byte remaining length: 207 = 0x4F + 1 * 128 -> 0xCF 0x01.
fn publish_two_byte_length() -> Vector {
    let payload = vec![0x5A; 200];
    let bytes = cat(&[&[0x30, 0xCF, 0x01, 0x00, 0x05], b"t/big", &payload]);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t/big".into(),
        packet_id: None,
        payload,
    });
    (bytes, packet)
}

fn subscribe_azure() -> Vector {
    let bytes = cat(&[
        &[0x82, 0x3D, 0x00, 0x02, 0x00, 0x23],
        b"devices/dev1/messages/devicebound/#",
        &[0x01, 0x00, 0x12],
        b"$iothub/twin/res/#",
        &[0x00],
    ]);
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 2,
        filters: vec![
            (
                "devices/dev1/messages/devicebound/#".into(),
                QoS::AtLeastOnce,
            ),
            ("$iothub/twin/res/#".into(), QoS::AtMostOnce),
        ],
    });
    (bytes, packet)
}

fn suback() -> Vector {
    let bytes = vec![0x90, 0x04, 0x00, 0x02, 0x01, 0x80];
    let return_codes = vec![
        SubAckReturnCode::Success(QoS::AtLeastOnce),
        SubAckReturnCode::Failure,
    ];
    (
        bytes,
        Packet::SubAck(SubAck {
            packet_id: 2,
            return_codes,
        }),
    )
}

fn suback_all_qos() -> Vector {
    let bytes = vec![0x90, 0x05, 0xFF, 0xFF, 0x00, 0x01, 0x02];
    let return_codes = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .map(SubAckReturnCode::Success)
        .to_vec();
    (
        bytes,
        Packet::SubAck(SubAck {
            packet_id: u16::MAX,
            return_codes,
        }),
    )
}

fn unsubscribe() -> Vector {
    let bytes = vec![
        0xA2, 0x0B, 0x00, 0x03, 0x00, 0x01, b'#', 0x00, 0x04, b'a', b'/', b'+', b'/',
    ];
    let packet = Packet::Unsubscribe(Unsubscribe {
        packet_id: 3,
        filters: vec!["#".into(), "a/+/".into()],
    });
    (bytes, packet)
}

fn id_only() -> Vec<Vector> {
    vec![
        (vec![0x40, 0x02, 0x00, 0x01], Packet::PubAck(1)),
        (vec![0x50, 0x02, 0x12, 0x34], Packet::PubRec(0x1234)),
        (vec![0x62, 0x02, 0xFF, 0xFF], Packet::PubRel(0xFFFF)),
        (vec![0x70, 0x02, 0x01, 0x00], Packet::PubComp(0x0100)),
        (vec![0xB0, 0x02, 0x00, 0x03], Packet::UnsubAck(3)),
    ]
}

fn no_body() -> Vec<Vector> {
    vec![
        (vec![0xC0, 0x00], Packet::PingReq),
        (vec![0xD0, 0x00], Packet::PingResp),
        (vec![0xE0, 0x00], Packet::Disconnect),
    ]
}

fn all_vectors() -> Vec<Vector> {
    let mut all = vec![
        connect_azure_py(),
        connect_x509(),
        connect_mqisdp_will(),
        connect_minimal(),
        connect_full(),
        connack(false, ConnectReturnCode::Accepted),
        connack(true, ConnectReturnCode::Accepted),
        connack(false, ConnectReturnCode::NotAuthorized),
        publish_telemetry_qos1(),
        publish_qos0(),
        publish_qos2_dup_retain(),
        publish_two_byte_length(),
        subscribe_azure(),
        suback(),
        suback_all_qos(),
        unsubscribe(),
    ];
    all.extend(id_only());
    all.extend(no_body());
    all
}

// ---- one test per packet type ------------------------------------------------------------------

#[test]
fn connect_azure_python_sdk_sas() {
    let (bytes, packet) = connect_azure_py();
    assert_vector("Azure Python SDK CONNECT", &bytes, &packet);
}

#[test]
fn connect_x509_username_without_password() {
    let (bytes, packet) = connect_x509();
    assert_vector("X.509 CONNECT", &bytes, &packet);
}

#[test]
fn connect_mqisdp_level3_with_will() {
    let (bytes, packet) = connect_mqisdp_will();
    assert_vector("MQIsdp CONNECT", &bytes, &packet);
}

#[test]
fn connect_minimal_with_empty_client_id() {
    let (bytes, packet) = connect_minimal();
    assert_vector("minimal CONNECT", &bytes, &packet);
}

#[test]
fn connect_with_qos2_will_username_and_binary_password() {
    let (bytes, packet) = connect_full();
    assert_vector("full CONNECT", &bytes, &packet);
}

#[test]
fn connack_every_return_code() {
    for raw in 0..=5u8 {
        let code = ConnectReturnCode::from_u8(raw).unwrap();
        let (bytes, packet) = connack(false, code);
        assert_vector("CONNACK", &bytes, &packet);
    }
    let (bytes, packet) = connack(true, ConnectReturnCode::Accepted);
    assert_eq!(bytes, [0x20, 0x02, 0x01, 0x00]);
    assert_vector("CONNACK session present", &bytes, &packet);
}

#[test]
fn publish_vectors() {
    for (name, (bytes, packet)) in [
        ("telemetry QoS 1", publish_telemetry_qos1()),
        ("QoS 0", publish_qos0()),
        ("QoS 2 dup retain", publish_qos2_dup_retain()),
        ("two-byte remaining length", publish_two_byte_length()),
    ] {
        assert_vector(name, &bytes, &packet);
    }
}

#[test]
fn publish_with_large_remaining_lengths() {
    // 3-byte (16,384 + ...) and 4-byte (2,097,152 + ...) remaining lengths.
    for (payload_len, header) in [
        (16_384 - 3, &[0x30, 0x80, 0x80, 0x01][..]),
        (2_097_152 - 3, &[0x30, 0x80, 0x80, 0x80, 0x01]),
    ] {
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            payload: vec![7; payload_len],
        });
        let bytes = cat(&[header, &[0x00, 0x01, b't'], &vec![7; payload_len]]);
        assert_vector("large PUBLISH", &bytes, &packet);
    }
}

#[test]
fn puback_pubrec_pubrel_pubcomp_unsuback() {
    for (bytes, packet) in id_only() {
        assert_vector(packet.name(), &bytes, &packet);
    }
}

#[test]
fn subscribe_as_azure_sdks_send_it() {
    let (bytes, packet) = subscribe_azure();
    assert_vector("SUBSCRIBE", &bytes, &packet);
}

#[test]
fn suback_success_and_failure() {
    for (bytes, packet) in [suback(), suback_all_qos()] {
        assert_vector("SUBACK", &bytes, &packet);
    }
}

#[test]
fn unsubscribe_two_filters() {
    let (bytes, packet) = unsubscribe();
    assert_vector("UNSUBSCRIBE", &bytes, &packet);
}

#[test]
fn pingreq_pingresp_disconnect() {
    for (bytes, packet) in no_body() {
        assert_vector(packet.name(), &bytes, &packet);
    }
}

#[test]
fn testdata_files_match_hand_written_vectors() {
    let files: [(&str, &[u8], Vector); 5] = [
        (
            "connect_azure_py_sas.bin",
            include_bytes!("../testdata/connect_azure_py_sas.bin"),
            connect_azure_py(),
        ),
        (
            "connect_x509_no_password.bin",
            include_bytes!("../testdata/connect_x509_no_password.bin"),
            connect_x509(),
        ),
        (
            "publish_telemetry_qos1.bin",
            include_bytes!("../testdata/publish_telemetry_qos1.bin"),
            publish_telemetry_qos1(),
        ),
        (
            "subscribe_azure.bin",
            include_bytes!("../testdata/subscribe_azure.bin"),
            subscribe_azure(),
        ),
        (
            "suback_success_failure.bin",
            include_bytes!("../testdata/suback_success_failure.bin"),
            suback(),
        ),
    ];
    for (name, file, (bytes, packet)) in files {
        assert_eq!(
            file,
            bytes.as_slice(),
            "{name} differs from the hand-written vector"
        );
        assert_vector(name, file, &packet);
    }
}

// ---- streaming ---------------------------------------------------------------------------------

#[test]
fn check_all_prefixes() {
    for (bytes, packet) in all_vectors() {
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut], MAX),
                Ok(None),
                "{} cut to {cut} of {} bytes",
                packet.name(),
                bytes.len()
            );
        }
    }
}

#[test]
fn two_packets_back_to_back() {
    let (publish_bytes, publish) = publish_telemetry_qos1();
    let (connect_bytes, connect) = connect_azure_py();
    let buf = cat(&[&connect_bytes, &publish_bytes]);
    let (first, used) = decode(&buf, MAX).unwrap().unwrap();
    assert_eq!((first, used), (connect, connect_bytes.len()));
    let (second, used2) = decode(&buf[used..], MAX).unwrap().unwrap();
    assert_eq!((second, used2), (publish, publish_bytes.len()));
    assert_eq!(used + used2, buf.len());
    assert_eq!(decode(&buf[used + used2..], MAX), Ok(None));
}

#[test]
fn every_vector_streamed_one_byte_at_a_time() {
    let vectors = all_vectors();
    let stream: Vec<u8> = vectors
        .iter()
        .flat_map(|(bytes, _)| bytes.clone())
        .collect();
    let mut buf = Vec::new();
    let mut decoded = Vec::new();
    for &byte in &stream {
        buf.push(byte);
        while let Some((packet, used)) = decode(&buf, MAX).unwrap() {
            buf.drain(..used);
            decoded.push(packet);
        }
    }
    assert!(buf.is_empty());
    let expected: Vec<Packet> = vectors.into_iter().map(|(_, p)| p).collect();
    assert_eq!(decoded, expected);
}

#[test]
fn non_minimal_remaining_length_decodes_and_reencodes_minimal() {
    // PINGREQ with remaining length 0 written on two bytes.
    assert_eq!(
        decode(&[0xC0, 0x80, 0x00], MAX),
        Ok(Some((Packet::PingReq, 3)))
    );
    let (bytes, packet) = publish_qos0();
    let padded = cat(&[&[0x30, 0x85, 0x80, 0x00], &bytes[2..]]);
    assert_eq!(
        decode(&padded, MAX),
        Ok(Some((packet.clone(), padded.len())))
    );
    let mut out = Vec::new();
    encode(&packet, &mut out).unwrap();
    assert_eq!(out, bytes);
}

#[test]
fn packet_exactly_at_the_limit_is_accepted() {
    let (bytes, packet) = publish_telemetry_qos1();
    assert_eq!(decode(&bytes, bytes.len()), Ok(Some((packet, bytes.len()))));
}
