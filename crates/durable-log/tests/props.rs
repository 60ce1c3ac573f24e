#![allow(clippy::unwrap_used)]
//! Property tests (fsync off for speed: they test framing and recovery, not the disk).

mod common;

use std::fs::OpenOptions;

use durable_log::{Log, LogConfig, Record};
use proptest::prelude::*;

fn config(dir: &std::path::Path, segment_bytes: u64) -> LogConfig {
    LogConfig {
        fsync: false,
        ..common::config(dir, segment_bytes)
    }
}

fn body(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 13 + j) as u8).collect()
}

fn write_log(dir: &std::path::Path, segment_bytes: u64, sizes: &[usize]) -> Vec<Vec<u8>> {
    let (log, _) = Log::open(config(dir, segment_bytes)).unwrap();
    let bodies: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| body(i, len))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(
            log.append_blocking(i as u64 * 10, b.clone()).unwrap(),
            i as u64
        );
    }
    log.close().unwrap();
    bodies
}

fn check(records: &[Record], bodies: &[Vec<u8>]) {
    assert_eq!(records.len(), bodies.len());
    for (i, (r, b)) in records.iter().zip(bodies).enumerate() {
        assert_eq!((r.offset, r.timestamp_ms), (i as u64, i as u64 * 10));
        assert_eq!(&r.payload, b, "payload of offset {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn appended_payloads_read_back_equal(
        sizes in prop::collection::vec(0usize..600, 1..60),
        segment_bytes in 1u64..3000,
        chunk in 1usize..20,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bodies = write_log(dir.path(), segment_bytes, &sizes);
        let (log, report) = Log::open(config(dir.path(), segment_bytes)).unwrap();
        prop_assert_eq!(report.next_offset, sizes.len() as u64);
        prop_assert_eq!(report.truncated_bytes, 0);
        check(&log.read(0, usize::MAX, usize::MAX).unwrap(), &bodies);
        // Paging through with small reads gives the same records.
        let mut paged = Vec::new();
        loop {
            let page = log.read(paged.len() as u64, chunk, 700).unwrap();
            if page.is_empty() {
                break;
            }
            let bytes: usize = page.iter().map(|r| r.payload.len()).sum();
            prop_assert!(page.len() <= chunk);
            prop_assert!(bytes <= 700 || page.len() == 1);
            paged.extend(page);
        }
        check(&paged, &bodies);
    }

    #[test]
    fn any_cut_of_the_last_segment_recovers_a_prefix(
        sizes in prop::collection::vec(0usize..300, 1..40),
        segment_bytes in 200u64..2000,
        cut_fraction in 0.0f64..=1.0,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bodies = write_log(dir.path(), segment_bytes, &sizes);
        let last = common::segments(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&last).unwrap().len();
        let cut_at = ((len as f64) * cut_fraction) as u64;
        OpenOptions::new().write(true).open(&last).unwrap().set_len(cut_at).unwrap();

        let (log, report) = Log::open(config(dir.path(), segment_bytes)).unwrap();
        let n = report.next_offset as usize;
        prop_assert!(n <= bodies.len());
        let records = log.read(0, usize::MAX, usize::MAX).unwrap();
        check(&records, &bodies[..n]);
        // Only the last segment may lose records, and the cut bytes are what was reported.
        let base: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        prop_assert!(n as u64 >= base);
        let kept = std::fs::metadata(&last).unwrap().len();
        prop_assert_eq!(kept + report.truncated_bytes, cut_at);
        let whole: u64 = bodies[base as usize..n].iter().map(|b| 24 + b.len() as u64).sum();
        prop_assert_eq!(kept, whole);
        // A cut on a record boundary loses nothing more than the cut records.
        if report.truncated_bytes == 0 {
            prop_assert_eq!(kept, cut_at);
        }
        // Appends continue right after the surviving prefix.
        prop_assert_eq!(log.append_blocking(7, b"next".to_vec()).unwrap(), n as u64);
        let tail = log.read(n as u64, 10, usize::MAX).unwrap();
        prop_assert_eq!(tail.len(), 1);
        prop_assert_eq!(&tail[0].payload, b"next");
    }
}
