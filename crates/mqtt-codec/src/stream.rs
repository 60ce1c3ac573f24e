//! Reading whole packets from an async byte stream (feature `tokio`): the one buffered "read
//! until a packet decodes" loop that the hub and DPS servers, the gateway's upstream, the device
//! and test clients and the bench all use, so the packet-size limit, the end-of-stream rules and
//! the buffer's memory behaviour are the same everywhere.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::{DecodeError, Packet, decode};

/// Why no packet could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("malformed packet: {0}")]
    Decode(#[from] DecodeError),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("keep-alive expired: no packet for {0:?}")]
    KeepAliveExpired(Duration),
    #[error("the connection closed in the middle of a packet")]
    Truncated,
}

/// Buffers bytes until a whole packet is there. The codec refuses a packet larger than the limit
/// as soon as its header is read, so the buffer never grows past the limit.
///
/// Made with [`PacketReader::new`] (servers), an idle connection holds no buffer at all between
/// packets: it is released when empty and taken again on the next read. Made with
/// [`PacketReader::with_capacity`] (clients reading steadily), the buffer is kept.
///
/// Every `async fn` here is cancel safe: bytes already read stay buffered, so a reader can sit in
/// a `tokio::select!` arm.
#[derive(Debug)]
pub struct PacketReader {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already decoded; dropped before the next read (one move per
    /// read instead of one per packet).
    start: usize,
    max_packet: usize,
    keep: bool,
}

/// Free space guaranteed for each read (one TLS record's plaintext is at most 16 KiB).
const READ_SIZE: usize = 4096;

impl PacketReader {
    /// A reader that gives its buffer back whenever it is empty.
    pub fn new(max_packet: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            max_packet,
            keep: false,
        }
    }

    /// A reader that keeps a buffer of `capacity` bytes (or more) for its whole life.
    pub fn with_capacity(max_packet: usize, capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            start: 0,
            max_packet,
            keep: true,
        }
    }

    /// [`Self::next`] within `keep_alive` (none: no limit).
    ///
    /// # Errors
    /// As [`Self::next`], or [`ReadError::KeepAliveExpired`].
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
    ///
    /// # Errors
    /// A malformed or oversized packet, a network error, or an end of stream inside a packet.
    pub async fn next<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> Result<Option<Packet>, ReadError> {
        loop {
            if let Some(packet) = self.try_next()? {
                return Ok(Some(packet));
            }
            if !self.fill(rd).await? {
                return if self.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// The next packet among the bytes already read, without reading (`None`: more are needed).
    /// A caller that handles a batch of packets per read loops on this after [`Self::fill`].
    ///
    /// # Errors
    /// A malformed packet, or one larger than the limit.
    pub fn try_next(&mut self) -> Result<Option<Packet>, DecodeError> {
        let Some((packet, used)) = decode(&self.buf[self.start..], self.max_packet)? else {
            return Ok(None);
        };
        self.start += used;
        if self.start == self.buf.len() {
            self.start = 0;
            if self.keep {
                self.buf.clear();
            } else {
                // Nothing more buffered: give the memory back while the connection idles.
                self.buf = Vec::new();
            }
        }
        Ok(Some(packet))
    }

    /// Reads once from `rd` into the buffer; `false` at the end of the stream.
    ///
    /// # Errors
    /// The stream's error.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.is_empty() && !self.keep {
            // Wait for the next packet without holding a buffer: a small read on the stack
            // first, then a real buffer for the rest.
            let mut first = [0u8; 64];
            let n = rd.read(&mut first).await?;
            self.buf.extend_from_slice(&first[..n]);
            return Ok(n > 0);
        }
        if self.buf.capacity() - self.buf.len() < READ_SIZE {
            self.buf.reserve(READ_SIZE.max(self.buf.len()));
        }
        Ok(rd.read_buf(&mut self.buf).await? > 0)
    }

    /// Whether no byte of a next packet has been read yet.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// The bytes held for the packets not yet decoded (for tests and accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}
