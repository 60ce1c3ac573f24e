//! Reading whole MQTT packets from a byte stream (the codec's [`PacketReader`], within the packet
//! size limit and the keep-alive); what a read failure is counted and logged as.

use tracing::{info, warn};

use crate::Hub;
use crate::metrics::Metrics;

/// The shared reader (one implementation for servers, clients and the bench).
pub use mqtt_codec::{PacketReader, ReadError};

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
