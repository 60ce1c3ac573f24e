//! Reading whole MQTT packets from a byte stream with the codec, within the packet size limit.

use std::time::Duration;

use mqtt_codec::Packet;
use tokio::io::{AsyncRead, AsyncReadExt};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("malformed packet: {0}")]
    Decode(#[from] mqtt_codec::DecodeError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("keep-alive expired: no packet for {0:?}")]
    KeepAliveExpired(Duration),
    #[error("the connection closed in the middle of a packet")]
    Truncated,
}

/// Buffers bytes until a whole packet is there. The codec refuses a packet larger than the limit
/// as soon as its header is read, so the buffer never grows past the limit.
pub struct PacketReader {
    buf: Vec<u8>,
    max_packet: usize,
}

impl PacketReader {
    pub fn new(max_packet: usize) -> Self {
        Self {
            buf: Vec::with_capacity(8 * 1024),
            max_packet,
        }
    }

    /// The next packet; `None` on a clean end of stream between packets.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some((packet, used)) = mqtt_codec::decode(&self.buf, self.max_packet)? {
                self.buf.drain(..used);
                return Ok(Some(packet));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(8 * 1024);
            }
            let n = rd.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }
}
