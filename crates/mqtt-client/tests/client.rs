#![allow(clippy::unwrap_used)] // tests: a panic is a test failure
//! The client against a scripted server on an in-memory stream: CONNECT is what the login says,
//! refusals and PUBACK/SUBACK mismatches are errors, the halves keep bytes already read.

use mqtt_client::{Client, ClientError, Login};
use mqtt_codec::{
    ConnAck, ConnectReturnCode, Packet, PacketReader, QoS, SubAck, SubAckReturnCode, encode,
};
use tokio::io::{AsyncWriteExt as _, DuplexStream};

/// The server end: reads the client's packets, writes its own.
struct Server {
    stream: DuplexStream,
    reader: PacketReader,
}

impl Server {
    async fn recv(&mut self) -> Packet {
        self.reader.next(&mut self.stream).await.unwrap().unwrap()
    }

    async fn send(&mut self, packets: &[Packet]) {
        let mut out = Vec::new();
        for p in packets {
            encode(p, &mut out).unwrap();
        }
        self.stream.write_all(&out).await.unwrap();
    }
}

fn pair() -> (DuplexStream, Server) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let reader = PacketReader::new(1 << 20);
    (
        client,
        Server {
            stream: server,
            reader,
        },
    )
}

fn connack(code: ConnectReturnCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        code,
    })
}

#[tokio::test]
async fn connect_sends_the_login_and_a_refusal_is_an_error() {
    let (stream, mut server) = pair();
    let login = Login::new("dev1")
        .username("hub/dev1")
        .password(b"token".to_vec());
    let serve = async {
        let Packet::Connect(c) = server.recv().await else {
            panic!("expected CONNECT")
        };
        assert_eq!(
            (
                c.client_id.as_str(),
                c.username.as_deref(),
                c.password.as_deref()
            ),
            ("dev1", Some("hub/dev1"), Some(&b"token"[..]))
        );
        server
            .send(&[connack(ConnectReturnCode::NotAuthorized)])
            .await;
    };
    let (result, ()) = tokio::join!(Client::connect(stream, &login), serve);
    match result {
        Err(ClientError::Refused { client_id, code }) => {
            assert_eq!(
                (client_id.as_str(), code),
                ("dev1", ConnectReturnCode::NotAuthorized)
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn publish_acked_waits_for_its_own_puback_and_subscribe_for_its_suback() {
    let (stream, mut server) = pair();
    server.send(&[connack(ConnectReturnCode::Accepted)]).await;
    let mut client = Client::connect(stream, &Login::new("dev1")).await.unwrap();
    let _connect = server.recv().await;

    let (sent, ()) = tokio::join!(client.publish_acked("t/1", b"a".to_vec()), async {
        let Packet::Publish(p) = server.recv().await else {
            panic!("expected PUBLISH")
        };
        assert_eq!((p.qos, p.packet_id), (QoS::AtLeastOnce, Some(1)));
        server.send(&[Packet::PubAck(1)]).await;
    });
    sent.unwrap();

    // A PUBACK for another id is a protocol error, not success.
    let (sent, ()) = tokio::join!(client.publish_acked("t/1", b"b".to_vec()), async {
        let _ = server.recv().await;
        server.send(&[Packet::PubAck(99)]).await;
    });
    assert!(matches!(sent, Err(ClientError::Unexpected { .. })));

    let (ack, ()) = tokio::join!(client.subscribe(&[("c2d/#", QoS::AtLeastOnce)]), async {
        let Packet::Subscribe(s) = server.recv().await else {
            panic!("expected SUBSCRIBE")
        };
        server
            .send(&[Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                return_codes: vec![SubAckReturnCode::Success(QoS::AtLeastOnce)],
            })])
            .await;
    });
    assert_eq!(
        ack.unwrap().return_codes,
        [SubAckReturnCode::Success(QoS::AtLeastOnce)]
    );
}

#[tokio::test]
async fn the_read_half_keeps_packets_already_read_and_a_close_is_closed() {
    let (stream, mut server) = pair();
    // CONNACK and a PINGRESP in one write: the PINGRESP is buffered by the time CONNECT returns.
    server
        .send(&[connack(ConnectReturnCode::Accepted), Packet::PingResp])
        .await;
    let client = Client::connect(stream, &Login::new("dev1")).await.unwrap();
    let (mut incoming, mut outgoing) = client.into_split();
    assert_eq!(incoming.recv().await.unwrap(), Packet::PingResp);
    outgoing.send(&[Packet::PingReq]).await.unwrap();
    let _connect = server.recv().await;
    assert_eq!(server.recv().await, Packet::PingReq);
    drop(server);
    assert!(matches!(incoming.recv().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn into_parts_hands_over_the_stream_with_bytes_already_read() {
    let (stream, mut server) = pair();
    let mut client = Client::with_reader(stream, PacketReader::with_capacity(1 << 20, 4096));
    // CONNACK and a PUBLISH in one write: the client's read takes both, decodes one.
    let publish = Packet::Publish(mqtt_codec::Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t".into(),
        packet_id: None,
        payload: b"queued".to_vec(),
    });
    let serve = async {
        assert!(matches!(server.recv().await, Packet::Connect(_)));
        server
            .send(&[connack(ConnectReturnCode::Accepted), publish.clone()])
            .await;
        server
    };
    let login = Login::new("sub");
    let (ack, mut server) = tokio::join!(client.login(&login), serve);
    assert_eq!(ack.unwrap().code, ConnectReturnCode::Accepted);
    let (mut stream, mut reader) = client.into_parts();
    assert!(reader.capacity() >= 4096, "the caller's reader is kept");
    assert_eq!(reader.next(&mut stream).await.unwrap(), Some(publish));
    server.send(&[Packet::PingResp]).await;
    assert_eq!(
        reader.next(&mut stream).await.unwrap(),
        Some(Packet::PingResp)
    );
}
