#![allow(clippy::unwrap_used)] // tests: a panic is a test failure
//! The async packet reader on byte vectors: packets split across reads, several packets in one
//! read, an oversize packet refused from its header, clean and truncated ends, and the idle
//! buffer given back.

use mqtt_codec::{DecodeError, Packet, PacketReader, Publish, QoS, ReadError, encode};
use tokio::io::{AsyncRead, AsyncReadExt as _};

fn publish(id: u16, len: usize) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/d1/messages/events/".into(),
        packet_id: Some(id),
        payload: vec![b'x'; len],
    })
}

fn bytes(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        encode(p, &mut out).unwrap();
    }
    out
}

/// A stream whose reads return at most one of `chunks` each (tokio's `chain` never crosses from
/// one reader to the next within a read).
fn chunked(chunks: Vec<Vec<u8>>) -> Box<dyn AsyncRead + Unpin> {
    chunks.into_iter().fold(
        Box::new(tokio::io::empty()) as Box<dyn AsyncRead + Unpin>,
        |acc, c| Box::new(acc.chain(std::io::Cursor::new(c))),
    )
}

#[tokio::test]
async fn a_packet_split_across_reads_comes_out_whole() {
    let wire = bytes(&[publish(1, 300)]);
    // Split inside the fixed header, then inside the topic, then inside the payload.
    let chunks = vec![
        wire[..1].to_vec(),
        wire[1..10].to_vec(),
        wire[10..200].to_vec(),
        wire[200..].to_vec(),
    ];
    let mut rd = chunked(chunks);
    let mut reader = PacketReader::new(1 << 20);
    assert_eq!(reader.next(&mut rd).await.unwrap(), Some(publish(1, 300)));
    assert_eq!(reader.next(&mut rd).await.unwrap(), None);
}

#[tokio::test]
async fn several_packets_in_one_read_come_out_one_by_one() {
    let packets = [
        publish(1, 10),
        Packet::PingReq,
        publish(2, 5000),
        Packet::PubAck(9),
    ];
    let wire = bytes(&packets);
    for mut reader in [
        PacketReader::new(1 << 20),
        PacketReader::with_capacity(1 << 20, 8192),
    ] {
        let mut rd = std::io::Cursor::new(wire.clone());
        for p in &packets {
            assert_eq!(reader.next(&mut rd).await.unwrap().as_ref(), Some(p));
        }
        assert_eq!(reader.next(&mut rd).await.unwrap(), None);
    }
}

#[tokio::test]
async fn a_batch_is_decoded_after_one_fill() {
    let wire = bytes(&[publish(1, 10), publish(2, 10), publish(3, 10)]);
    // The third packet is cut: the batch ends after two, and the rest waits for the next read.
    let cut = wire.len() - 4;
    let mut rd = chunked(vec![wire[..cut].to_vec(), wire[cut..].to_vec()]);
    let mut reader = PacketReader::with_capacity(1 << 20, 1 << 16);
    assert!(reader.fill(&mut rd).await.unwrap());
    assert_eq!(reader.try_next().unwrap(), Some(publish(1, 10)));
    assert_eq!(reader.try_next().unwrap(), Some(publish(2, 10)));
    assert_eq!(reader.try_next().unwrap(), None);
    assert!(!reader.is_empty());
    assert!(reader.fill(&mut rd).await.unwrap());
    assert_eq!(reader.try_next().unwrap(), Some(publish(3, 10)));
    assert!(reader.is_empty());
    assert!(!reader.fill(&mut rd).await.unwrap());
}

#[tokio::test]
async fn an_oversize_packet_is_refused_from_its_header() {
    let wire = bytes(&[publish(1, 100_000)]);
    // Only the first 64 bytes ever arrive: the refusal must not wait for the body.
    let mut rd = std::io::Cursor::new(wire[..64].to_vec());
    let mut reader = PacketReader::new(1024);
    match reader.next(&mut rd).await {
        Err(ReadError::Decode(DecodeError::PacketTooLarge { max: 1024, size })) => {
            assert_eq!(size, wire.len());
        }
        other => panic!("expected PacketTooLarge, got {other:?}"),
    }
}

#[tokio::test]
async fn an_end_inside_a_packet_is_truncated() {
    let wire = bytes(&[publish(1, 300)]);
    let mut rd = std::io::Cursor::new(wire[..wire.len() - 1].to_vec());
    let mut reader = PacketReader::new(1 << 20);
    assert!(matches!(
        reader.next(&mut rd).await,
        Err(ReadError::Truncated)
    ));
}

#[tokio::test]
async fn an_idle_server_reader_holds_no_buffer_and_a_client_reader_keeps_its_own() {
    let wire = bytes(&[publish(1, 3000), Packet::PingReq]);
    let mut rd = chunked(vec![wire.clone()]);
    let mut reader = PacketReader::new(1 << 20);
    assert_eq!(reader.next(&mut rd).await.unwrap(), Some(publish(1, 3000)));
    assert!(reader.capacity() > 0, "the PINGREQ is still buffered");
    assert_eq!(reader.next(&mut rd).await.unwrap(), Some(Packet::PingReq));
    assert_eq!(reader.capacity(), 0);

    let mut rd = chunked(vec![wire]);
    let mut reader = PacketReader::with_capacity(1 << 20, 8192);
    assert_eq!(reader.next(&mut rd).await.unwrap(), Some(publish(1, 3000)));
    assert_eq!(reader.next(&mut rd).await.unwrap(), Some(Packet::PingReq));
    assert!(reader.capacity() >= 8192);
}

#[tokio::test]
async fn a_malformed_packet_is_an_error() {
    // Packet type 0 is reserved.
    let mut rd = std::io::Cursor::new(vec![0x00, 0x00]);
    let mut reader = PacketReader::new(1 << 20);
    assert!(matches!(
        reader.next(&mut rd).await,
        Err(ReadError::Decode(_))
    ));
}
