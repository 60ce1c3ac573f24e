//! Reading durable records by offset.

use std::io;
use std::path::PathBuf;

use crate::segment::{FrameReader, HeaderRead};
use crate::state::Shared;
use crate::{LogError, Record};

/// Where to read one segment: a snapshot taken under the segment lock.
struct Span {
    path: PathBuf,
    base: u64,
    /// First offset wanted (at least the segment's base).
    from: u64,
    /// Offset and byte position of the sparse-index entry at or before `from`.
    seek_offset: u64,
    seek_position: u64,
    /// One past the last durable offset of this segment.
    end: u64,
}

/// The read budget and what has been read so far.
struct Batch {
    records: Vec<Record>,
    max_records: usize,
    max_bytes: usize,
    bytes: usize,
    /// A record did not fit in `max_bytes`.
    over_budget: bool,
}

impl Batch {
    fn full(&self) -> bool {
        self.over_budget || self.records.len() >= self.max_records
    }

    /// Whether a payload of `len` bytes fits (the first record always does, so that a record
    /// larger than `max_bytes` cannot block a consumer).
    fn fits(&self, len: usize) -> bool {
        self.records.is_empty() || self.bytes.saturating_add(len) <= self.max_bytes
    }
}

/// Why a segment could not be read.
enum SpanError {
    Io(io::Error),
    /// Bad framing or CRC at this byte position.
    Corrupt(u64),
}

impl From<io::Error> for SpanError {
    fn from(e: io::Error) -> Self {
        SpanError::Io(e)
    }
}

pub(crate) fn read(
    shared: &Shared,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let durable = shared.durable();
    let mut batch = Batch {
        records: Vec::new(),
        max_records,
        max_bytes,
        bytes: 0,
        over_budget: false,
    };
    let mut next = from;
    while !batch.full() && next < durable {
        let Some(span) = locate(shared, next, durable)? else {
            break;
        };
        match read_span(&span, &mut batch) {
            Ok(after) => next = after,
            // Retention removed the file after `locate`: look again from the new start.
            Err(SpanError::Io(e))
                if e.kind() == io::ErrorKind::NotFound && span.base < shared.start() => {}
            Err(SpanError::Io(e)) => {
                return Err(LogError::io(
                    format!("reading segment {}", span.path.display()),
                    e,
                ));
            }
            Err(SpanError::Corrupt(position)) => {
                tracing::error!(segment = %span.path.display(), position, "Durable log record is corrupt");
                return Err(LogError::Corrupt {
                    segment: span.path,
                    position,
                });
            }
        }
    }
    Ok(batch.records)
}

/// Finds the segment holding `next` (or the oldest retained record if `next` is older).
fn locate(shared: &Shared, next: u64, durable: u64) -> Result<Option<Span>, LogError> {
    let segments = shared.segments();
    let Some(first) = segments.first() else {
        return Ok(None);
    };
    let from = next.max(first.base());
    if from >= durable {
        return Ok(None);
    }
    let i = segments
        .partition_point(|s| s.base() <= from)
        .saturating_sub(1);
    let Some(s) = segments.get(i) else {
        return Ok(None);
    };
    let end = s.tail.next_offset.min(durable);
    if from >= end {
        // A hole below the durable head: recovery refuses such a log, so a file went missing
        // or was cut behind the log's back.
        return Err(LogError::Corrupt {
            segment: s.tail.path.clone(),
            position: s.tail.len,
        });
    }
    let (seek_offset, seek_position) = s.seek_point(from);
    Ok(Some(Span {
        path: s.tail.path.clone(),
        base: s.base(),
        from,
        seek_offset,
        seek_position,
        end,
    }))
}

/// Reads records `span.from..span.end` into `batch` until its budget is spent. Returns the
/// offset after the last record taken.
fn read_span(span: &Span, batch: &mut Batch) -> Result<u64, SpanError> {
    let mut r = FrameReader::open(&span.path, span.seek_position)?;
    let mut offset = span.seek_offset;
    let mut payload = Vec::new();
    while offset < span.end && !batch.full() {
        let position = r.position();
        let header = match r.next_header()? {
            HeaderRead::Header(h) if h.offset == offset => h,
            _ => return Err(SpanError::Corrupt(position)),
        };
        if offset < span.from {
            r.skip_payload(&header)?;
        } else if !batch.fits(header.len as usize) {
            batch.over_budget = true;
            break;
        } else {
            match r.read_payload(&header, &mut payload) {
                Ok(()) if header.matches(&payload) => {}
                Ok(()) => return Err(SpanError::Corrupt(position)),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(SpanError::Corrupt(position));
                }
                Err(e) => return Err(e.into()),
            }
            batch.bytes += payload.len();
            let payload = std::mem::take(&mut payload);
            batch.records.push(Record {
                offset,
                timestamp_ms: header.timestamp_ms,
                payload,
            });
        }
        offset += 1;
    }
    Ok(offset.max(span.from))
}
