//! The two halves of a client for a caller that reads and writes from different places (the
//! gateway's upstream loop selects over reads, commands and a ping timer), and the read and write
//! steps both halves and the whole client share.

use mqtt_codec::{Packet, PacketReader, ReadError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::ClientError;

/// The next packet from `rd`; the end of the stream is [`ClientError::Closed`].
pub(crate) async fn read<R: AsyncRead + Unpin>(
    rd: &mut R,
    reader: &mut PacketReader,
) -> Result<Packet, ClientError> {
    match reader.next(rd).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) | Err(ReadError::Truncated) => Err(ClientError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Encodes `packets` into `out` and writes them with one flush.
pub(crate) async fn write<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut Vec<u8>,
    packets: &[Packet],
) -> Result<(), ClientError> {
    out.clear();
    for p in packets {
        mqtt_codec::encode(p, out)?;
    }
    wr.write_all(out).await?;
    wr.flush().await?;
    Ok(())
}

/// The read half: packets from the server. [`Incoming::recv`] is cancel safe.
pub struct Incoming<R> {
    pub(crate) rd: R,
    pub(crate) reader: PacketReader,
}

impl<R: AsyncRead + Unpin> Incoming<R> {
    /// The next packet from the server.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the server closed the connection, or a read error.
    pub async fn recv(&mut self) -> Result<Packet, ClientError> {
        read(&mut self.rd, &mut self.reader).await
    }
}

/// The write half: packets to the server.
pub struct Outgoing<W> {
    pub(crate) wr: W,
    pub(crate) out: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Outgoing<W> {
    /// Writes the packets with one flush.
    ///
    /// # Errors
    /// A packet that cannot be encoded, or a write error.
    pub async fn send(&mut self, packets: &[Packet]) -> Result<(), ClientError> {
        write(&mut self.wr, &mut self.out, packets).await
    }

    /// Sends DISCONNECT and shuts the stream down (errors ignored: the session is over).
    pub async fn close(mut self) {
        let _ = self.send(&[Packet::Disconnect]).await;
        let _ = self.wr.shutdown().await;
    }
}
