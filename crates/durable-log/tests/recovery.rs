#![allow(clippy::unwrap_used)]
//! Crash recovery: torn tails of the last segment are cut; damage to sealed segments is an error.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{append_range, assert_records, config, payload, read_all, segments};
use durable_log::{Log, LogError};

const HEADER: u64 = 24;

/// A closed log with offsets `0..n` in segments of `segment_bytes`; returns its segment files.
fn closed_log(dir: &Path, segment_bytes: u64, n: u64) -> Vec<PathBuf> {
    let (log, _) = Log::open(config(dir, segment_bytes)).unwrap();
    append_range(&log, 0..n);
    log.close().unwrap();
    segments(dir)
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn frame(i: u64) -> u64 {
    HEADER + payload(i).len() as u64
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Reopens, checks that exactly offsets `0..survivors` remain and that appends continue there.
fn reopen_expecting(dir: &Path, segment_bytes: u64, survivors: u64, truncated: u64) {
    let (log, report) = Log::open(config(dir, segment_bytes)).unwrap();
    assert_eq!(report.truncated_bytes, truncated, "{report:?}");
    assert_eq!(report.next_offset, survivors);
    assert_eq!(log.next_offset(), survivors);
    let on_disk: u64 = segments(dir).iter().map(|f| len(f)).sum();
    assert_eq!(
        log.stats().bytes,
        on_disk,
        "the files hold exactly the surviving records"
    );
    assert_records(&read_all(&log), 0..survivors);
    assert_eq!(
        log.append_blocking(1000 + survivors, payload(survivors))
            .unwrap(),
        survivors
    );
    assert_records(&read_all(&log), 0..survivors + 1);
    log.close().unwrap();
    let (log, report) = Log::open(config(dir, segment_bytes)).unwrap();
    assert_eq!(
        (report.truncated_bytes, report.next_offset),
        (0, survivors + 1)
    );
    assert_records(&read_all(&log), 0..survivors + 1);
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 10);
    let mut f = OpenOptions::new().append(true).open(&files[0]).unwrap();
    f.write_all(&[0xAB; 37]).unwrap();
    drop(f);
    reopen_expecting(dir.path(), 1 << 20, 10, 37);
}

#[test]
fn a_zeroed_preallocated_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 10);
    let before = len(&files[0]);
    OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(before + 4096)
        .unwrap();
    reopen_expecting(dir.path(), 1 << 20, 10, 4096);
}

#[test]
fn a_half_written_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 10);
    let full = len(&files[0]);
    let cut = frame(9) / 2;
    OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(full - cut)
        .unwrap();
    reopen_expecting(dir.path(), 1 << 20, 9, frame(9) - cut);
    assert_eq!(
        len(&files[0]),
        full,
        "record 9 was written again in place of the torn one"
    );
}

#[test]
fn a_cut_inside_the_last_header_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 10);
    let full = len(&files[0]);
    OpenOptions::new()
        .write(true)
        .open(&files[0])
        .unwrap()
        .set_len(full - frame(9) + 10)
        .unwrap();
    reopen_expecting(dir.path(), 1 << 20, 9, 10);
}

#[test]
fn a_flipped_payload_byte_in_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 10);
    let full = len(&files[0]);
    flip_byte(&files[0], full - 3);
    reopen_expecting(dir.path(), 1 << 20, 9, frame(9));
}

#[test]
fn records_after_a_corrupt_one_in_the_last_segment_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 10);
    let full = len(&files[0]);
    let start_of_6: u64 = (0..6).map(frame).sum();
    // The offset field of record 6 no longer matches.
    flip_byte(&files[0], start_of_6 + 8);
    reopen_expecting(dir.path(), 1 << 20, 6, full - start_of_6);
}

#[test]
fn a_torn_tail_after_segment_rolls_keeps_sealed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 200, 30);
    assert!(files.len() > 3);
    let last = files.last().unwrap();
    let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    // Cut the last segment right after its first record's header.
    OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(HEADER)
        .unwrap();
    reopen_expecting(dir.path(), 200, base, HEADER);
}

#[test]
fn a_corrupt_record_in_a_sealed_segment_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 200, 30);
    // Damage the last record of the second segment (its CRC is checked on open).
    let victim = &files[1];
    let before = len(victim);
    flip_byte(victim, before - 1);
    let err = Log::open(config(dir.path(), 200)).unwrap_err();
    match &err {
        LogError::Corrupt { segment, position } => {
            assert_eq!(segment, victim);
            assert!(*position < len(victim));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(
        err.to_string().contains(&victim.display().to_string()),
        "{err}"
    );
    assert_eq!(len(victim), before, "a sealed segment is never truncated");
}

#[test]
fn a_cut_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 200, 30);
    let victim = &files[0];
    let before = len(victim);
    OpenOptions::new()
        .write(true)
        .open(victim)
        .unwrap()
        .set_len(before - 5)
        .unwrap();
    let err = Log::open(config(dir.path(), 200)).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { segment, .. } if segment == victim),
        "{err:?}"
    );
    assert_eq!(
        len(victim),
        before - 5,
        "a sealed segment is never truncated"
    );
}

#[test]
fn a_missing_middle_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 200, 30);
    std::fs::remove_file(&files[1]).unwrap();
    let err = Log::open(config(dir.path(), 200)).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { segment, position: 0 } if segment == &files[2]),
        "{err:?}"
    );
}

#[test]
fn a_corrupt_payload_inside_a_sealed_segment_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1000, 60);
    // Record 1's payload sits in the first segment, which is only header-checked on open.
    flip_byte(&files[0], frame(0) + HEADER + 2);
    let (log, _) = Log::open(config(dir.path(), 1000)).unwrap();
    assert_records(&log.read(0, 1, usize::MAX).unwrap(), 0..1);
    let err = log.read(0, 10, usize::MAX).unwrap_err();
    assert!(
        matches!(&err, LogError::Corrupt { segment, position } if segment == &files[0] && *position == frame(0)),
        "{err:?}"
    );
    assert_records(&log.read(2, 3, usize::MAX).unwrap(), 2..5);
}

/// Collects formatted events (level and fields) on the current thread.
struct Capture(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_truncation_is_logged_with_file_position_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let files = closed_log(dir.path(), 1 << 20, 3);
    let full = len(&files[0]);
    flip_byte(&files[0], full - 1);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (_log, report) = tracing::subscriber::with_default(Capture(lines.clone()), || {
        Log::open(config(dir.path(), 1 << 20)).unwrap()
    });
    assert_eq!(report.truncated_bytes, frame(2));
    let lines = lines.lock().unwrap();
    let warning = lines
        .iter()
        .find(|l| l.starts_with("WARN"))
        .expect("a warning is logged");
    assert!(
        warning.contains(&files[0].display().to_string()),
        "{warning}"
    );
    assert!(
        warning.contains(&format!("position={}", frame(0) + frame(1))),
        "{warning}"
    );
    assert!(warning.contains("reason=CRC mismatch"), "{warning}");
}
