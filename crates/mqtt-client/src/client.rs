//! A client over one established stream: CONNECT/CONNACK, packets ids, publish with PUBACK
//! tracking, subscribe with SUBACK matching, receive, disconnect.

use std::collections::HashSet;

use mqtt_codec::{
    ConnAck, Connect, ConnectReturnCode, EncodeError, Packet, PacketReader, Publish, QoS,
    ReadError, SubAck, Subscribe,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadHalf, WriteHalf};

use crate::split::{Incoming, Outgoing, read, write};

/// The largest packet accepted from the server.
pub const MAX_PACKET: usize = 1 << 20;

/// Why the client could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Read(#[from] ReadError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode a packet: {0}")]
    Encode(#[from] EncodeError),
    #[error("the server closed the connection")]
    Closed,
    #[error("{client_id} was refused: {code:?}")]
    Refused {
        client_id: String,
        code: ConnectReturnCode,
    },
    #[error("expected {expected}, got {got}")]
    Unexpected { expected: String, got: String },
}

fn unexpected(expected: impl Into<String>, got: &Packet) -> ClientError {
    ClientError::Unexpected {
        expected: expected.into(),
        got: format!("{got:?}"),
    }
}

/// What CONNECT says: client id, credentials, keep-alive, session.
#[derive(Debug, Clone)]
pub struct Login {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub keep_alive: u16,
    pub clean_session: bool,
}

impl Login {
    /// `client_id` with no credentials, a 60 s keep-alive and a clean session.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            username: None,
            password: None,
            keep_alive: 60,
            clean_session: true,
        }
    }

    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    #[must_use]
    pub fn password(mut self, password: impl Into<Vec<u8>>) -> Self {
        self.password = Some(password.into());
        self
    }

    #[must_use]
    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.keep_alive = seconds;
        self
    }

    #[must_use]
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    /// The CONNECT this login sends, for a test that alters it (a will, a reserved flag) or
    /// pipelines packets behind it before the CONNACK.
    pub fn packet(&self) -> Packet {
        Packet::Connect(Box::new(Connect {
            protocol_name: "MQTT".into(),
            protocol_level: 4,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive,
            client_id: self.client_id.clone(),
            will: None,
            username: self.username.clone(),
            password: self.password.clone(),
        }))
    }
}

/// An MQTT client over `stream`. Reading is cancel safe ([`Client::recv`] can sit in a
/// `tokio::select!`); an idle client holds no read buffer.
pub struct Client<S> {
    stream: S,
    reader: PacketReader,
    out: Vec<u8>,
    next_id: u16,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// A client on `stream` that has not sent CONNECT yet (see [`Client::login`]).
    pub fn new(stream: S) -> Self {
        Self::with_reader(stream, PacketReader::new(MAX_PACKET))
    }

    /// A client on `stream` reading through `reader` (one made with
    /// [`PacketReader::with_capacity`] keeps its buffer, for a client that reads steadily).
    pub fn with_reader(stream: S, reader: PacketReader) -> Self {
        Self {
            stream,
            reader,
            out: Vec::new(),
            next_id: 1,
        }
    }

    /// CONNECT on `stream`; a CONNACK other than accepted is [`ClientError::Refused`].
    ///
    /// # Errors
    /// The refusal, a stream error, or a first packet that is not a CONNACK.
    pub async fn connect(stream: S, login: &Login) -> Result<Self, ClientError> {
        let mut client = Self::new(stream);
        let ack = client.login(login).await?;
        if ack.code == ConnectReturnCode::Accepted {
            Ok(client)
        } else {
            Err(ClientError::Refused {
                client_id: login.client_id.clone(),
                code: ack.code,
            })
        }
    }

    /// Sends CONNECT and returns the server's CONNACK, whatever its code.
    ///
    /// # Errors
    /// A stream error, or a first packet that is not a CONNACK.
    pub async fn login(&mut self, login: &Login) -> Result<ConnAck, ClientError> {
        self.send(&login.packet()).await?;
        match self.recv().await? {
            Packet::ConnAck(a) => Ok(a),
            other => Err(unexpected("CONNACK", &other)),
        }
    }

    /// The stream (its TLS session, for instance).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, to write bytes that are not packets (tests of malformed input).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Writes one packet and flushes.
    ///
    /// # Errors
    /// A packet that cannot be encoded, or a write error.
    pub async fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.send_all(std::slice::from_ref(packet)).await
    }

    /// Writes the packets with one flush.
    ///
    /// # Errors
    /// A packet that cannot be encoded, or a write error.
    pub async fn send_all(&mut self, packets: &[Packet]) -> Result<(), ClientError> {
        write(&mut self.stream, &mut self.out, packets).await
    }

    /// The next packet from the server.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the server closed the connection, or a read error.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        read(&mut self.stream, &mut self.reader).await
    }

    /// The next packet id (1..=65535, wrapping past 0).
    pub fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).filter(|n| *n != 0).unwrap_or(1);
        id
    }

    /// A PUBLISH at `qos`; returns its packet id (none at QoS 0). Does not wait for a PUBACK.
    ///
    /// # Errors
    /// As [`Client::send`].
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<Option<u16>, ClientError> {
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.to_owned(),
            packet_id,
            payload,
        }))
        .await?;
        Ok(packet_id)
    }

    /// A QoS 1 PUBLISH; waits for its PUBACK, which must be the next packet.
    ///
    /// # Errors
    /// As [`Client::recv`], or another packet first.
    pub async fn publish_acked(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        let id = self.publish(topic, payload, QoS::AtLeastOnce).await?;
        match self.recv().await? {
            Packet::PubAck(got) if Some(got) == id => Ok(()),
            other => Err(unexpected(format!("PUBACK {id:?}"), &other)),
        }
    }

    /// Publishes every message at QoS 1, all in flight at once, and waits for all their PUBACKs
    /// (PUBLISHes and PINGRESPs arriving meanwhile are skipped).
    ///
    /// # Errors
    /// As [`Client::recv`], or a packet other than those.
    pub async fn publish_all_acked(
        &mut self,
        messages: Vec<(String, Vec<u8>)>,
    ) -> Result<(), ClientError> {
        let mut waiting = HashSet::new();
        for (topic, payload) in messages {
            waiting.extend(self.publish(&topic, payload, QoS::AtLeastOnce).await?);
        }
        while !waiting.is_empty() {
            match self.recv().await? {
                Packet::PubAck(id) => {
                    waiting.remove(&id);
                }
                Packet::Publish(_) | Packet::PingResp => {}
                other => return Err(unexpected("PUBACKs", &other)),
            }
        }
        Ok(())
    }

    /// Subscribes to `filters`; waits for the SUBACK, which must be the next packet, and returns
    /// it (its return codes say what was granted).
    ///
    /// # Errors
    /// As [`Client::recv`], or another packet first.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Result<SubAck, ClientError> {
        let packet_id = self.packet_id();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: filters.iter().map(|(f, q)| ((*f).to_owned(), *q)).collect(),
        }))
        .await?;
        match self.recv().await? {
            Packet::SubAck(a) if a.packet_id == packet_id => Ok(a),
            other => Err(unexpected(format!("SUBACK {packet_id}"), &other)),
        }
    }

    /// The next PUBLISH from the server, skipping PINGRESPs and PUBACKs.
    ///
    /// # Errors
    /// As [`Client::recv`], or any other packet.
    pub async fn next_publish(&mut self) -> Result<Publish, ClientError> {
        loop {
            match self.recv().await? {
                Packet::Publish(p) => return Ok(p),
                Packet::PingResp | Packet::PubAck(_) => {}
                other => return Err(unexpected("a PUBLISH", &other)),
            }
        }
    }

    /// Sends DISCONNECT and shuts the stream down (errors ignored: the session is over).
    pub async fn disconnect(mut self) {
        let _ = self.send(&Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }

    /// The stream and its reader (bytes read past the last packet stay in the reader), for a
    /// caller that runs its own read and write loop once connected (the bench's load clients).
    pub fn into_parts(self) -> (S, PacketReader) {
        (self.stream, self.reader)
    }

    /// Separate read and write halves (bytes already read stay with the read half).
    pub fn into_split(self) -> (Incoming<ReadHalf<S>>, Outgoing<WriteHalf<S>>) {
        let (rd, wr) = tokio::io::split(self.stream);
        (
            Incoming {
                rd,
                reader: self.reader,
            },
            Outgoing { wr, out: self.out },
        )
    }
}
