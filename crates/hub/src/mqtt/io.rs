//! Reading whole MQTT packets from a byte stream with the codec, within the packet size limit and
//! the keep-alive; what a read failure is counted and logged as.

use std::time::Duration;

use mqtt_codec::Packet;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use crate::Hub;
use crate::metrics::Metrics;

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
/// as soon as its header is read, so the buffer never grows past the limit. Between packets an
/// idle connection holds no buffer at all: it is released when empty and taken again on the next
/// read.
pub struct PacketReader {
    buf: Vec<u8>,
    max_packet: usize,
}

/// Free space guaranteed for each read (one TLS record's plaintext is at most 16 KiB).
const READ_SIZE: usize = 4096;

impl PacketReader {
    pub fn new(max_packet: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_packet,
        }
    }

    /// [`Self::next`] within `keep_alive` (none: no limit).
    pub async fn next_within<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
        keep_alive: Option<Duration>,
    ) -> Result<Option<Packet>, ReadError> {
        match keep_alive {
            None => self.next(rd).await,
            Some(limit) => tokio::time::timeout(limit, self.next(rd))
                .await
                .unwrap_or(Err(ReadError::KeepAliveExpired(limit))),
        }
    }

    /// The next packet; `None` on a clean end of stream between packets.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some((packet, used)) = mqtt_codec::decode(&self.buf, self.max_packet)? {
                if used == self.buf.len() {
                    // Nothing more buffered: give the memory back while the connection idles.
                    self.buf = Vec::new();
                } else {
                    self.buf.drain(..used);
                }
                return Ok(Some(packet));
            }
            if self.buf.is_empty() {
                // Wait for the next packet without holding a buffer: a small read on the stack
                // first, then a real buffer for the rest.
                let mut first = [0u8; 64];
                let n = rd.read(&mut first).await?;
                if n == 0 {
                    return Ok(None);
                }
                self.buf.extend_from_slice(&first[..n]);
                continue;
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE {
                self.buf.reserve(READ_SIZE.max(self.buf.len()));
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

/// Counts and logs a packet that could not be read; one over `limits.max_packet_bytes` is
/// counted under that limit's name.
pub fn read_failed(hub: &Hub, e: &ReadError, what: &str) {
    if let ReadError::Io(io) = e
        && io.kind() == std::io::ErrorKind::UnexpectedEof
    {
        // The client closed its socket between packets without TLS close_notify, as many SDKs do
        // on disconnect: an ordinary end, not a protocol error.
        info!(error = %e, "{what}");
        return;
    }
    Metrics::inc(&hub.metrics.protocol_errors);
    if let ReadError::Decode(mqtt_codec::DecodeError::PacketTooLarge { size, max }) = e {
        hub.metrics.limit_reached("max_packet_bytes");
        warn!(
            size,
            limit = "limits.max_packet_bytes",
            max,
            "{what}: packet larger than limits.max_packet_bytes = {max}"
        );
    } else {
        warn!(error = %e, "{what}");
    }
}
