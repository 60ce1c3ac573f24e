//! Segment files: naming, the in-memory sparse index, and a sequential frame reader.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::format::{HEADER_LEN, Header};

/// Suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".log";
/// Digits of the zero-padded base offset in a segment file name (`u64::MAX` has 20).
const NAME_DIGITS: usize = 20;
/// A sparse index entry is added at least every this many records...
const INDEX_EVERY_RECORDS: u32 = 64;
/// ...or every this many bytes, whichever comes first.
const INDEX_EVERY_BYTES: u64 = 4096;
/// Read buffer of scans and reads.
const READ_BUFFER: usize = 64 * 1024;

/// `00000000000000000042.log` for base offset 42.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:0NAME_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The path of the segment with base offset `base` in `dir`.
pub(crate) fn path_for(dir: &Path, base: u64) -> PathBuf {
    dir.join(file_name(base))
}

/// The base offset named by a segment file name, or `None` for any other file.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One sparse index entry: the record with `offset` starts at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub position: u64,
}

/// Decides which records get a sparse index entry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IndexBuilder {
    started: bool,
    records_since: u32,
    bytes_since: u64,
}

impl IndexBuilder {
    /// Notes a record; returns the entry to add when this record should be indexed.
    pub fn note(&mut self, offset: u64, position: u64, frame_len: u64) -> Option<IndexEntry> {
        let due = !self.started
            || self.records_since >= INDEX_EVERY_RECORDS
            || self.bytes_since >= INDEX_EVERY_BYTES;
        let entry = due.then(|| {
            self.started = true;
            self.records_since = 0;
            self.bytes_since = 0;
            IndexEntry { offset, position }
        });
        self.records_since += 1;
        self.bytes_since += frame_len;
        entry
    }
}

/// The end of a segment as the writer tracks it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentTail {
    pub base: u64,
    pub path: PathBuf,
    /// Bytes of whole records.
    pub len: u64,
    /// Offset the next record of this segment would get.
    pub next_offset: u64,
    /// Newest (largest) record timestamp, `None` while empty.
    pub max_timestamp_ms: Option<u64>,
    pub builder: IndexBuilder,
}

impl SegmentTail {
    /// An empty segment.
    pub fn empty(base: u64, path: PathBuf) -> Self {
        SegmentTail {
            base,
            path,
            len: 0,
            next_offset: base,
            max_timestamp_ms: None,
            builder: IndexBuilder::default(),
        }
    }

    /// Accounts for a record appended at the end; returns its index entry if it gets one.
    pub fn push(&mut self, offset: u64, timestamp_ms: u64, frame_len: u64) -> Option<IndexEntry> {
        let entry = self.builder.note(offset, self.len, frame_len);
        self.len += frame_len;
        self.next_offset = offset + 1;
        self.max_timestamp_ms = Some(
            self.max_timestamp_ms
                .map_or(timestamp_ms, |t| t.max(timestamp_ms)),
        );
        entry
    }
}

/// What readers and retention know about one segment (durable part only).
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub tail: SegmentTail,
    pub index: Vec<IndexEntry>,
}

impl SegmentMeta {
    pub fn base(&self) -> u64 {
        self.tail.base
    }

    /// Number of records in the segment.
    pub fn records(&self) -> u64 {
        self.tail.next_offset - self.tail.base
    }

    /// The indexed record at or before `offset`: `(its offset, its byte position)`.
    pub fn seek_point(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|e| e.offset <= offset);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(e) => (e.offset, e.position),
            None => (self.tail.base, 0),
        }
    }
}

/// Result of reading the next header.
#[derive(Debug)]
pub(crate) enum HeaderRead {
    /// Clean end of file: no byte left.
    End,
    /// Fewer than [`HEADER_LEN`] bytes left (this many).
    Partial(usize),
    Header(Header),
}

/// Reads frames sequentially from a segment file.
pub(crate) struct FrameReader {
    inner: BufReader<File>,
    position: u64,
}

impl FrameReader {
    /// Opens `path` read-only, positioned at byte `position`.
    pub fn open(path: &Path, position: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        if position > 0 {
            file.seek(SeekFrom::Start(position))?;
        }
        Ok(FrameReader {
            inner: BufReader::with_capacity(READ_BUFFER, file),
            position,
        })
    }

    /// Byte position of the next unread byte.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Current length of the file.
    pub fn file_len(&self) -> io::Result<u64> {
        Ok(self.inner.get_ref().metadata()?.len())
    }

    pub fn next_header(&mut self) -> io::Result<HeaderRead> {
        let mut bytes = [0u8; HEADER_LEN];
        let mut filled = 0;
        while filled < HEADER_LEN {
            match self.inner.read(&mut bytes[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.position += filled as u64;
        Ok(match filled {
            0 => HeaderRead::End,
            HEADER_LEN => HeaderRead::Header(Header::parse(&bytes)),
            n => HeaderRead::Partial(n),
        })
    }

    /// Reads the payload of the header just read into `buf` (replacing its contents).
    pub fn read_payload(&mut self, header: &Header, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.clear();
        buf.resize(header.len as usize, 0);
        self.inner.read_exact(buf)?;
        self.position += u64::from(header.len);
        Ok(())
    }

    /// Skips the payload of the header just read.
    pub fn skip_payload(&mut self, header: &Header) -> io::Result<()> {
        self.inner.seek_relative(i64::from(header.len))?;
        self.position += u64::from(header.len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        assert_eq!(file_name(0), "00000000000000000000.log");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.log.tmp"), None);
        assert_eq!(parse_file_name("99999999999999999999.log"), None);
    }

    #[test]
    fn index_is_sparse_and_seek_points_are_at_or_before() {
        let mut meta = SegmentMeta {
            tail: SegmentTail::empty(100, PathBuf::new()),
            index: Vec::new(),
        };
        for i in 0..1000u64 {
            if let Some(e) = meta.tail.push(100 + i, i, 30) {
                meta.index.push(e);
            }
        }
        assert!(
            meta.index.len() > 1 && meta.index.len() <= 1000 / INDEX_EVERY_RECORDS as usize + 1
        );
        assert_eq!(
            meta.index[0],
            IndexEntry {
                offset: 100,
                position: 0
            }
        );
        for target in [100, 101, 163, 164, 165, 700, 1099] {
            let (offset, position) = meta.seek_point(target);
            assert!(offset <= target && target - offset <= u64::from(INDEX_EVERY_RECORDS));
            assert_eq!(position, (offset - 100) * 30);
        }
        assert_eq!(meta.records(), 1000);
        assert_eq!(meta.tail.max_timestamp_ms, Some(999));
    }

    #[test]
    fn big_records_are_indexed_by_bytes() {
        let mut b = IndexBuilder::default();
        let entries = (0..10u64)
            .filter(|i| b.note(*i, i * 5000, 5000).is_some())
            .count();
        assert_eq!(entries, 10);
    }
}
